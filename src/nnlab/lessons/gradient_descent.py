"""Gradient descent on logistic regression, three ways, to the same weights.

1. NumPy with the gradient derived by hand: for ``p = sigmoid(X w + b)`` the mean log-loss
   ``-mean(y log p + (1 - y) log(1 - p))`` has gradient ``X^T (p - y) / n`` for ``w`` and
   ``mean(p - y)`` for ``b``.
2. PyTorch tensors with ``requires_grad=True``: ``loss.backward()`` computes that same
   gradient, the update is written out by hand, and the gradient is zeroed every step
   (``backward`` *adds* into ``.grad``; see ``accumulated_gradient``).
3. ``torch.optim.SGD``, which does the update and the zeroing for us; with ``momentum=0``
   it takes exactly the steps of 1 and 2, with momentum a different path to the same minimum.

Every function starts from ``initial_weights(seed)`` and returns ``[w_1, ..., w_k, b]`` as a
float64 NumPy array, so the three can be compared number for number.
"""
from __future__ import annotations

import numpy as np
import torch


def make_data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping 2-D Gaussian clouds labelled 0 and 1, as X [n, 2] and y [n] (float64).

    They overlap on purpose: on separable data the log-loss has no minimum (the weights grow
    for ever), so "the same result" would have nothing to converge to.
    """
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.float64)
    x = rng.normal(size=(n, 2)) + np.where(y[:, None] == 1, 1.0, -1.0) * np.array([0.8, 0.4])
    return x, y


def initial_weights(n_features: int, seed: int = 0) -> np.ndarray:
    """Small random starting weights and bias ``[w_1, ..., w_k, b]``, the same for all three ways."""
    return np.random.default_rng(seed).normal(scale=0.01, size=n_features + 1)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + e^-z)."""
    return 1.0 / (1.0 + np.exp(-z))


def log_loss(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of ``weights`` ``[w..., b]`` on (x, y)."""
    p = sigmoid(x @ weights[:-1] + weights[-1])
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def gd_numpy(x: np.ndarray, y: np.ndarray, lr: float = 0.5, steps: int = 500, seed: int = 0) -> np.ndarray:
    """Way 1: full-batch gradient descent with the hand-derived gradient of the log-loss."""
    w = initial_weights(x.shape[1], seed)
    for _ in range(steps):
        p = sigmoid(x @ w[:-1] + w[-1])
        grad_w = x.T @ (p - y) / len(y)
        grad_b = np.mean(p - y)
        w = w - lr * np.append(grad_w, grad_b)
    return w


def _tensors(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y) as float64 tensors, and the starting weights and bias as leaves that require grad."""
    start = torch.from_numpy(initial_weights(x.shape[1], seed))
    w = start[:-1].clone().requires_grad_(True)
    b = start[-1:].clone().requires_grad_(True)
    return torch.from_numpy(x), torch.from_numpy(y), w, b


def _loss(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean log-loss from the logits (``binary_cross_entropy_with_logits`` is the stable form)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y)


def gd_autograd(x: np.ndarray, y: np.ndarray, lr: float = 0.5, steps: int = 500, seed: int = 0,
                zero_grad: bool = True) -> np.ndarray:
    """Way 2: autograd computes the gradient; the update and the zeroing are ours.

    ``w.data -= ...`` changes the values without recording the update in the graph (today
    one would write ``with torch.no_grad(): w -= ...``). ``zero_grad=False`` shows the classic
    bug: every step then uses the sum of all gradients so far.
    """
    xt, yt, w, b = _tensors(x, y, seed)
    for _ in range(steps):
        loss = _loss(xt, yt, w, b)
        loss.backward()
        w.data -= lr * w.grad
        b.data -= lr * b.grad
        if zero_grad:
            w.grad.zero_()
            b.grad.zero_()
    return torch.cat([w, b]).detach().numpy()


def gd_sgd(x: np.ndarray, y: np.ndarray, lr: float = 0.5, steps: int = 500, seed: int = 0,
           momentum: float = 0.9) -> np.ndarray:
    """Way 3: ``torch.optim.SGD`` (full batch, so "stochastic" in name only) with ``momentum``."""
    xt, yt, w, b = _tensors(x, y, seed)
    optimizer = torch.optim.SGD([w, b], lr=lr, momentum=momentum)
    for _ in range(steps):
        loss = _loss(xt, yt, w, b)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return torch.cat([w, b]).detach().numpy()


def accumulated_gradient(x: np.ndarray, y: np.ndarray, backward_calls: int, seed: int = 0) -> np.ndarray:
    """The gradient ``[dw..., db]`` held in ``.grad`` after ``backward_calls`` backward passes of the
    same loss without zeroing: ``backward_calls`` times the true gradient, because backward adds."""
    xt, yt, w, b = _tensors(x, y, seed)
    for _ in range(backward_calls):
        _loss(xt, yt, w, b).backward()
    return torch.cat([w.grad, b.grad]).numpy()
