"""Classification metrics on tensors: accuracy, top-k accuracy, confusion matrix and the report built from it.

Everything is computed from predictions and integer targets alone, so the engine stays ignorant of
datasets and models. The confusion matrix is the one summary worth keeping: precision, recall, F1 and
the most-confused pairs all derive from it, and it accumulates across batches by plain addition.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _as_preds(logits_or_preds: Tensor) -> Tensor:
    """Predicted class indices [N] from logits [N, C], or the indices themselves if already [N]."""
    if logits_or_preds.ndim == 2:
        return logits_or_preds.argmax(dim=1)
    return logits_or_preds


def accuracy(logits_or_preds: Tensor, targets: Tensor) -> float:
    """Fraction of samples whose predicted class equals the target; 0.0 for an empty batch.

    Accepts logits [N, C] or predicted indices [N], so callers need not argmax first.
    """
    if targets.numel() == 0:
        return 0.0
    preds = _as_preds(logits_or_preds)
    return (preds == targets).float().mean().item()


def topk_accuracy(logits: Tensor, targets: Tensor, k: int) -> float:
    """Fraction of samples whose target is among the ``k`` highest logits; 0.0 for an empty batch.

    ``k`` larger than the number of classes counts every sample as a hit (as scikit-learn does),
    rather than failing inside ``topk``.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if targets.numel() == 0:
        return 0.0
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices  # [N, k]
    return (top == targets.unsqueeze(1)).any(dim=1).float().mean().item()


def confusion_matrix(preds: Tensor, targets: Tensor, n_classes: int) -> Tensor:
    """Counts of (true, predicted) pairs as int64 [n_classes, n_classes]: rows true, columns predicted.

    One ``bincount`` over ``true * n_classes + predicted`` builds it without a Python loop, on the
    inputs' device; matrices from several batches add up to the matrix of their union.
    """
    preds = preds.reshape(-1).long()
    targets = targets.reshape(-1).long()
    if preds.shape != targets.shape:
        raise ValueError(f"preds and targets differ in length: {preds.numel()} vs {targets.numel()}")
    for name, values in (("preds", preds), ("targets", targets)):
        if values.numel() and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} hold class indices outside [0, {n_classes})")
    flat = torch.bincount(targets * n_classes + preds, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """Element-wise ``numerator / denominator`` with 0.0 where the denominator is 0 (no NaN)."""
    zero = denominator == 0
    return torch.where(zero, torch.zeros_like(numerator), numerator / torch.where(zero, 1.0, denominator))


def per_class_report(cm: Tensor, classes: Sequence[str]) -> dict:
    """Precision, recall, F1 and support per class, their macro and weighted means, and accuracy.

    Built from a confusion matrix (rows true, columns predicted). Undefined ratios (a class never
    predicted, or absent from the targets) are 0.0, so every value is a finite float that
    ``json.dumps(..., allow_nan=False)`` accepts; the means match scikit-learn's
    ``classification_report`` with ``zero_division=0``.
    """
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(classes):
        raise ValueError(f"confusion matrix of shape {tuple(cm.shape)} does not match {len(classes)} classes")
    cm = cm.detach().to("cpu", torch.float64)
    true_positives = cm.diagonal()
    support = cm.sum(dim=1)
    precision = _safe_divide(true_positives, cm.sum(dim=0))
    recall = _safe_divide(true_positives, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    total = support.sum()
    weights = _safe_divide(support, total.expand_as(support))
    per_class = {
        name: {"precision": p, "recall": r, "f1": f, "support": int(s)}
        for name, p, r, f, s in zip(classes, precision.tolist(), recall.tolist(), f1.tolist(), support.tolist())
    }
    return {
        "per_class": per_class,
        "macro": {"precision": precision.mean().item(), "recall": recall.mean().item(), "f1": f1.mean().item()},
        "weighted": {"precision": (precision * weights).sum().item(), "recall": (recall * weights).sum().item(),
                     "f1": (f1 * weights).sum().item()},
        "accuracy": _safe_divide(true_positives.sum(), total).item(),
    }


def most_confused(cm: Tensor, classes: Sequence[str], k: int = 5) -> list[tuple[str, str, int]]:
    """The ``k`` largest off-diagonal cells as (true class, predicted class, count), largest first.

    Cells with a zero count are left out, so a perfect classifier yields an empty list. Ties keep
    row-major order (a stable sort), which makes the output deterministic.
    """
    off_diagonal = cm.detach().to("cpu", torch.int64).clone()
    off_diagonal.fill_diagonal_(0)
    counts, order = off_diagonal.reshape(-1).sort(descending=True, stable=True)
    n = cm.shape[1]
    return [(classes[i // n], classes[i % n], c)
            for c, i in zip(counts[:k].tolist(), order[:k].tolist()) if c > 0]


def score(probs: Tensor, targets: Tensor, classes: Sequence[str], k: int = 5) -> dict:
    """Accuracy, per-class precision/recall/F1, macro averages, confusion matrix and the ``k``
    most-confused pairs of class probabilities ``probs [N, C]`` against ``targets [N]``."""
    preds = probs.argmax(1)
    cm = confusion_matrix(preds, targets, len(classes))
    report = per_class_report(cm, classes)
    return {
        "test_accuracy": (preds == targets).sum().item() / max(len(targets), 1),
        "per_class": report["per_class"],
        "macro": report["macro"],
        "confusion": cm.tolist(),
        "most_confused": [list(t) for t in most_confused(cm, classes, k=k)],
    }


def ranked(probs: Tensor, classes: Sequence[str], inputs: Sequence, top_k: int) -> list[dict]:
    """For each input (a row of ``probs [N, K]``) its ``top_k`` classes with probabilities:
    ``{"file": input, "top": [{"class", "probability"}, ...]}``, likeliest first."""
    values, indices = probs.topk(min(top_k, probs.shape[1]), dim=1)
    return [{"file": str(name), "top": [{"class": classes[i], "probability": round(p, 6)}
                                        for p, i in zip(v.tolist(), ix.tolist())]}
            for name, v, ix in zip(inputs, values, indices)]


def check_predict_args(inputs: Sequence, top_k: int, noun: str) -> None:
    """A ``ConfigError`` for ``top_k`` below 1 or no inputs (``noun`` names one: "image file", "name")."""
    from nnlab.errors import ConfigError
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if not inputs:
        raise ConfigError(f"predict: give at least one {noun}")
