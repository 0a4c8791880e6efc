"""Interpretation of a classifier's predictions: which classes it mixes up and which inputs it gets most wrong.

``explain`` takes class probabilities and targets (and, for images, the images) and draws
the confusion matrix and the top losses (the inputs with the highest cross-entropy loss, each
with its predicted and true class and their probabilities, ``top_losses_figure``): as
``confusion.png`` and ``top_losses.png`` in a folder, or as matplotlib Figures. It returns the
confusion matrix, the most-confused class pairs, per-class precision, recall and F1, and the top losses.
``nnlab interpret RUN`` (the image kind, ``nnlab.kinds.explain``) and ``nnlab.interpret(run, data)`` call it.
Figures use matplotlib's object API, as ``inspection.plots`` explains.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
from matplotlib.figure import Figure

from nnlab.engine.metrics import score
from nnlab.errors import ConfigError
from nnlab.files import save_figure
from nnlab.inspection.plots import confusion_figure


def top_losses(probs: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest cross-entropy losses ``-log p(true class)``, largest first, and their positions."""
    losses = -probs[torch.arange(len(targets)), targets].clamp_min(1e-12).log()
    return losses.topk(min(k, len(losses)))


def top_losses_figure(images: torch.Tensor, rows: Sequence[dict[str, Any]]) -> Figure:
    """A grid of uint8 images [K, C, H, W], each titled with its predicted and true class, their
    probabilities and the loss (``rows`` as ``explain`` returns them)."""
    k = len(rows)
    cols = max(1, math.ceil(math.sqrt(k)))
    lines = max(1, math.ceil(k / cols))
    fig = Figure(figsize=(2.4 * cols, 2.6 * lines), layout="tight")
    axes = fig.subplots(lines, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= k:
            continue
        image = images[i]
        if image.shape[0] == 1:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image.permute(1, 2, 0).numpy())
        r = rows[i]
        ax.set_title(f"pred {r['predicted']} ({r['probability']:.2f})\ntrue {r['true']} ({r['true_probability']:.2f})"
                     f"\nloss {r['loss']:.2f}", fontsize=8)
    fig.suptitle("Highest-loss images: predicted / true (probability)")
    return fig


def explain(probs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str], top: int, folder: Path | None,
            images: torch.Tensor | None = None, indices: torch.Tensor | None = None) -> dict[str, Any]:
    """Confusion matrix, most-confused pairs, per-class report and the ``top`` highest-loss inputs of
    a classifier's ``probs [N, C]`` against ``targets [N]``; ``folder`` gets ``confusion.png`` and,
    given the uint8 ``images [N, C, H, W]``, ``top_losses.png`` (``folder`` None: the result's
    ``figures`` holds them as matplotlib Figures, ``confusion`` and ``top_losses``, and nothing is
    written). ``indices`` name each input (default: its position)."""
    if top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    indices = indices if indices is not None else torch.arange(len(targets))
    result = score(probs, targets, classes, k=10)
    result["accuracy"] = result.pop("test_accuracy")
    losses, order = top_losses(probs, targets, top)
    predicted = probs.argmax(1)
    rows = [{"index": int(indices[i]), "true": classes[int(targets[i])], "predicted": classes[int(predicted[i])],
             "probability": round(probs[i, predicted[i]].item(), 6),
             "true_probability": round(probs[i, targets[i]].item(), 6), "loss": round(loss, 6)}
            for i, loss in zip(order.tolist(), losses.tolist())]
    figures = {"confusion": confusion_figure(torch.tensor(result["confusion"]), classes)}
    if images is not None:
        figures["top_losses"] = top_losses_figure(images[order], rows)
    out: dict[str, Any] = {"images": len(targets), "classes": list(classes), **result, "top_losses": rows}
    if folder is None:
        return {**out, "figures": figures}
    for name, fig in figures.items():
        out[f"{name}_png"] = str(save_figure(fig, folder / f"{name}.png"))
    return out
