"""Pictures of a run: training curves, confusion matrix and learning-rate schedule.

Each ``*_figure`` function returns a matplotlib ``Figure`` (Jupyter shows it inline); each
``plot_*`` function saves that figure to a PNG through ``files.save_figure`` (atomically) and
returns the path, as the run directory's ``curves.png``, ``lr.png``, ``confusion.png`` are written.
Figures are built with matplotlib's object API (``matplotlib.figure.Figure``) instead of pyplot:
saving to PNG then renders with the Agg backend whatever backend the user's session has chosen,
works on headless machines, and never registers a figure in pyplot's global list, so nothing
needs closing and nothing leaks, even when a plot fails half way.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nnlab.files import save_figure

# Text at matplotlib's default 10 pt is about this wide per character (DejaVu Sans, on average).
CHAR_IN = 0.085
# Beyond this many classes the per-cell numbers overlap and make the plot unreadable; colour alone
# still shows the structure.
MAX_ANNOTATED_CLASSES = 20


def _margins(fig: Figure, left: float, bottom: float, right: float = 0.2, top: float = 0.4,
             gap: float | None = None) -> None:
    """Fixed margins, in inches, for a figure whose texts are known in advance (``gap``: between panels).

    This is what ``layout="tight"`` would find, without it measuring the extent of every text on
    every save: that measuring was about 45% of each plot's time, and every run writes its plots.
    """
    width, height = fig.get_size_inches()
    columns = len(fig.axes) or 1  # panels side by side
    panel = (width - left - right - (columns - 1) * (gap or 0.0)) / columns  # each panel's width, inches
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=None if gap is None else gap / max(panel, 0.1))  # wspace: a share of a panel


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """Epochs and values of ``key`` over ``rows``, skipping rows where it is missing or None."""
    points = [(row["epoch"], row[key]) for row in rows if row.get(key) is not None]
    return [epoch for epoch, _ in points], [value for _, value in points]


def _plot_panel(ax: Axes, rows: Sequence[dict[str, Any]], metric: str, label: str) -> None:
    """Draw the train and valid lines of ``metric`` (the key suffix, e.g. "acc") against epoch on ``ax``."""
    for split in ("train", "valid"):
        epochs, values = _series(rows, f"{split}_{metric}")
        if values:
            ax.plot(epochs, values, marker="o", markersize=3, label=split)
    ax.set_title(label.capitalize())
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()


def curves_figure(rows: Sequence[dict[str, Any]]) -> Figure:
    """Loss and accuracy against epoch, train and valid, from metrics.jsonl rows.

    Rows need ``epoch`` and may lack any of ``train_loss``, ``train_acc``, ``valid_loss`` and
    ``valid_acc`` (or hold None, as runs without a validation split do); missing points are skipped.
    """
    fig = Figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    _plot_panel(loss_ax, rows, "loss", "loss")
    _plot_panel(acc_ax, rows, "acc", "accuracy")
    _margins(fig, left=0.8, bottom=0.55, gap=0.85)
    return fig


def plot_curves(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """``curves_figure(rows)`` written to ``path`` as PNG (a run's ``curves.png``); returns ``path``."""
    return save_figure(curves_figure(rows), path)


def _row_normalised(cm: torch.Tensor) -> torch.Tensor:
    """Each row of ``cm`` divided by its sum (the fraction of each true class), 0.0 for empty rows."""
    cm = cm.to(torch.float64)
    totals = cm.sum(dim=1, keepdim=True)
    return cm / totals.clamp(min=1)


def _annotate(ax: Axes, values: torch.Tensor, normalize: bool) -> None:
    """Write each cell's value in it, light text on dark cells so it stays readable."""
    threshold = values.max().item() / 2
    for i, row in enumerate(values.tolist()):
        for j, value in enumerate(row):
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")


def confusion_figure(cm: torch.Tensor, classes: Sequence[str], normalize: bool = True) -> Figure:
    """The confusion matrix ``cm`` (rows true, columns predicted) as a heat map.

    With ``normalize`` each row shows the fraction of that true class given each prediction, which
    makes classes of different sizes comparable; otherwise cells show raw counts.
    """
    n = len(classes)
    values = _row_normalised(cm.detach().cpu()) if normalize else cm.detach().cpu().to(torch.float64)
    side = min(4 + 0.5 * n, 20)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.subplots()
    longest = max((len(name) for name in classes), default=1) * CHAR_IN  # the class names' width
    _margins(fig, left=0.45 + longest, bottom=0.5 + 0.72 * longest, right=0.3)  # x labels at 45 degrees
    image = ax.imshow(values.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, label="fraction of true class" if normalize else "count")
    ax.set_xticks(range(n), labels=classes, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (row-normalised)" if normalize else "Confusion matrix (counts)")
    if n <= MAX_ANNOTATED_CLASSES:
        _annotate(ax, values, normalize)
    return fig


def plot_confusion(cm: torch.Tensor, classes: Sequence[str], path: str | Path, normalize: bool = True) -> Path:
    """``confusion_figure`` written to ``path`` as PNG (a run's ``confusion.png``); returns ``path``."""
    return save_figure(confusion_figure(cm, classes, normalize), path)


def lr_figure(lrs: Sequence[float]) -> Figure:
    """The learning rate of every optimizer step, to check a schedule's shape."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(range(len(lrs)), list(lrs))
    ax.set_title("Learning rate schedule")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    _margins(fig, left=0.85, bottom=0.55)
    return fig


def plot_lr(lrs: Sequence[float], path: str | Path) -> Path:
    """``lr_figure(lrs)`` written to ``path`` as PNG; returns ``path``."""
    return save_figure(lr_figure(lrs), path)


def read_lr_csv(csv_path: str | Path) -> tuple[list[float], dict[str, list[float]]]:
    """The steps of a run's ``lr.csv`` and each parameter group's rate at them (by the header's
    names); no steps where the file is absent or holds only its header."""
    lines = Path(csv_path).read_text(encoding="utf-8").splitlines() if Path(csv_path).is_file() else []
    if len(lines) < 2:
        return [], {}
    header = lines[0].split(",")
    table = [[float(v) for v in line.split(",")] for line in lines[1:]]
    return [row[0] for row in table], {name: [row[i] for row in table] for i, name in enumerate(header[1:], start=1)}


def lr_figure_from_csv(csv_path: str | Path) -> Figure | None:
    """The learning rate of each parameter group at every step of a run's ``lr.csv``, or ``None``
    where it recorded no step."""
    steps, groups = read_lr_csv(csv_path)
    if not steps:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, lrs in groups.items():
        ax.plot(steps, lrs, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    if len(groups) > 1:
        ax.legend()
    _margins(fig, left=0.85, bottom=0.55, top=0.25)
    return fig


def plot_lr_csv(csv_path: str | Path, path: str | Path) -> Path | None:
    """``lr_figure_from_csv`` written to ``path`` as PNG (a run's ``lr.png``); ``None``, and no file,
    where ``lr.csv`` recorded no step."""
    fig = lr_figure_from_csv(csv_path)
    return None if fig is None else save_figure(fig, path)


def lr_find_figure(lrs: Sequence[float], losses: Sequence[float], marks: dict[str, float]) -> Figure:
    """Smoothed loss against learning rate (log scale) from an LR sweep, with the suggestions marked."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed loss")
    for name, lr in marks.items():
        ax.axvline(lr, linestyle="--", color="C1" if "steep" in name else "C2", label=f"{name} {lr:.2g}")
    ax.legend()
    _margins(fig, left=0.7, bottom=0.55, top=0.25)
    return fig


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], marks: dict[str, float], path: str | Path) -> Path:
    """``lr_find_figure`` written to ``path`` as PNG (``lr_find.png``); returns ``path``."""
    return save_figure(lr_find_figure(lrs, losses, marks), path)
