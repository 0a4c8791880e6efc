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
    titles = [f"pred {r['predicted']} ({r['probability']:.2f})\ntrue {r['true']} ({r['true_probability']:.2f})"
              f"\nloss {r['loss']:.2f}" for r in rows]
    return image_grid_figure(images[:len(rows)], titles, title="Highest-loss images: predicted / true (probability)",
                             panel=(2.4, 2.6))


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
    return {**out, **save_figures(figures, folder)}


def save_figures(figures: dict[str, Figure], folder: Path) -> dict[str, str]:
    """Each figure written to ``folder/NAME.png``; returns ``{"NAME_png": path}`` for a result."""
    return {f"{name}_png": str(save_figure(fig, folder / f"{name}.png")) for name, fig in figures.items()}



def image_grid_figure(images: torch.Tensor, titles: Sequence[str], colours: Sequence[str] | None = None,
                      title: str = "", panel: tuple[float, float] = (1.6, 1.75)) -> Figure:
    """uint8 images [N, C, H, W] in a grid (at most 8 wide), each with its title (in its colour) in a
    ``panel`` of (width, height) inches: the top losses, ``nnlab.show_batch``'s and ``Run.show_results``'
    pictures of image runs."""
    k = len(images)
    cols = max(1, min(8, math.ceil(math.sqrt(k))))
    lines = max(1, math.ceil(k / cols))
    fig = Figure(figsize=(panel[0] * cols, panel[1] * lines + 0.4), layout="tight")
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
        ax.set_title(titles[i], fontsize=8, color=colours[i] if colours else "black")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def results_figure(images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, classes: Sequence[str]) -> Figure:
    """A grid of uint8 images [N, C, H, W], each titled "true/predicted" (its true class, then the
    model's, from ``probs [N, classes]``), the mistakes in red: ``Run.show_results``' picture."""
    truths = [classes[int(label)] for label in labels]
    guesses = [classes[int(k)] for k in probs.argmax(1)]
    return image_grid_figure(images, [f"{t}/{g}" for t, g in zip(truths, guesses)],
                             ["black" if t == g else "red" for t, g in zip(truths, guesses)],
                             "true/predicted (mistakes in red)")


def text_rows_figure(header: Sequence[str], rows: Sequence[Sequence[str]], colours: Sequence[str] | None = None,
                     title: str = "") -> Figure:
    """A table of text ``rows`` (one line each, in its colour) under ``header``, in a monospaced font:
    the batch and results pictures of names, text and translation runs."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]  # characters per column

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths))
    height = 0.22 * (len(rows) + 2) + (0.3 if title else 0.1)
    chars = max(len(line(header)), 1.2 * len(title))  # the title is larger, in bold
    fig = Figure(figsize=(max(3.0, 0.09 * chars + 0.4), height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    step = 1 / (len(rows) + 2 + (1 if title else 0))
    y = 1 - step
    if title:
        ax.text(0.02, y, title, fontsize=9, weight="bold", va="center")
        y -= step
    ax.text(0.02, y, line(header), family="monospace", fontsize=8, weight="bold", va="center")
    for i, row in enumerate(rows):
        y -= step
        ax.text(0.02, y, line(row), family="monospace", fontsize=8, va="center",
                color=colours[i] if colours else "black")
    return fig
