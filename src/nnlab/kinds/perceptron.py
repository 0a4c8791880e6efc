"""The perceptron: the trick, the algorithm, the logic gates, and why XOR needs a hidden layer.

A perceptron predicts ``1`` when ``w . x + b >= 0``. The *perceptron trick* moves the line
towards a misclassified point (``w += lr * (y - y_hat) * x``); the *algorithm* applies it to
every point of an epoch, in a seeded random order, until an epoch makes no mistake. That
happens in finitely many steps exactly when the classes are linearly separable: AND, OR and
NOT are, XOR is not, and a 2-layer MLP solves XOR. ``train`` (``nnlab train perceptron``)
writes a run directory with ``boundary.png`` (the line after each epoch), ``config.json`` and
``summary.json`` with all the weights; ``evaluate`` and ``predict`` reuse the saved weights.
"""
from __future__ import annotations

import csv as csv_module
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence, TextIO

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nnlab.config import RunConfig, load_config
from nnlab.data.batches import stratified_split
from nnlab.data.tabular import class_names, encode_classes, numeric_column, read_csv
from nnlab.errors import CheckpointError, ConfigError, DataError
from nnlab.files import atomic_write, save_figure
from nnlab.models import create_model
from nnlab.kit.rundir import check_output, environment, write_json
from nnlab.kit.kind import CSV_OPTION, Kind, TARGET_OPTION
from nnlab.kit.run import RunStart

GATES: dict[str, tuple[list[list[float]], list[int]]] = {
    "AND": ([[0, 0], [0, 1], [1, 0], [1, 1]], [0, 0, 0, 1]),
    "OR": ([[0, 0], [0, 1], [1, 0], [1, 1]], [0, 1, 1, 1]),
    "NOT": ([[0], [1]], [1, 0]),
    "XOR": ([[0, 0], [0, 1], [1, 0], [1, 1]], [0, 1, 1, 0]),
}
MAX_PANELS = 12  # boundary.png shows at most this many epochs, evenly spaced, always the last


@dataclass
class PerceptronConfig(RunConfig):
    """A perceptron on 2-D points (generated, or two feature columns of a CSV), plus the logic gates."""

    kind: str = "perceptron"
    csv: str | None = None              # --csv FILE with two numeric feature columns and --target
    target: str | None = None
    n_points: int = 100                 # generated data: points on either side of a line, with a gap
    epochs: int = 50
    lr: float = 0.1
    device: str = "cpu"                 # NumPy: the perceptron algorithm itself, step by step

    # The perceptron algorithm has a learning rate, epochs and a seed; none of the optimizer's settings.
    unused: ClassVar[frozenset[str]] = frozenset((
        "data", "batch_size", "eval_batch_size", "optimizer", "momentum", "weight_decay", "schedule", "pct_start",
        "cycles", "cycle_mult", "step_every", "gamma", "lr_mult", "freeze_epochs", "clip", "label_smoothing",
        "patience", "monitor", "time_budget", "valid_fraction", "device", "precision", "compile", "threads",
        "stop_after_epochs", "optimizer_args", "tensorboard", "limit_train_batches"))

    def check(self) -> None:
        """Reject settings no perceptron run could use, naming the setting."""
        super().check()
        if self.n_points < 4:
            raise ConfigError(f"n_points must be at least 4, got {self.n_points}")


@dataclass
class PerceptronResult:
    """Final weights and bias, the (weights, bias) after each epoch, and the mistakes made in each epoch."""

    weights: np.ndarray
    bias: float
    history: list[tuple[np.ndarray, float]] = field(default_factory=list)
    mistakes: list[int] = field(default_factory=list)
    converged: bool = False


def classify(weights: np.ndarray, bias: float, x: np.ndarray) -> np.ndarray:
    """The step function of ``x @ weights + bias``: 1 on the line's positive side (or on it), else 0."""
    return (x @ weights + bias >= 0).astype(np.int64)


def perceptron_trick(weights: np.ndarray, bias: float, x: np.ndarray, y: int,
                     lr: float) -> tuple[np.ndarray, float]:
    """Move the line towards point ``x`` if it is on the wrong side: add ``lr * x`` to the weights
    (and ``lr`` to the bias) if it should be positive, subtract them if it should be negative.
    A correctly classified point leaves the line where it is.
    """
    error = int(y) - int(classify(weights, bias, x))  # -1, 0 or +1
    return weights + lr * error * x, float(bias + lr * error)


def train_perceptron(x: np.ndarray, y: np.ndarray, epochs: int = 50, lr: float = 0.1,
                     seed: int = 0) -> PerceptronResult:
    """The perceptron algorithm: the trick on every point per epoch, until an epoch makes no mistake.

    Starts from zero weights; ``converged`` says whether a mistake-free epoch came within
    ``epochs`` (guaranteed for linearly separable data given enough epochs, never otherwise).
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    result = PerceptronResult(np.zeros(x.shape[1]), 0.0)
    for _ in range(epochs):
        mistakes = 0
        for i in rng.permutation(len(x)):
            if classify(result.weights, result.bias, x[i]) != y[i]:
                result.weights, result.bias = perceptron_trick(result.weights, result.bias, x[i], y[i], lr)
                mistakes += 1
        result.history.append((result.weights.copy(), float(result.bias)))
        result.mistakes.append(mistakes)
        if mistakes == 0:
            result.converged = True
            break
    return result


def gate_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The truth table of gate ``name`` (AND, OR, NOT, XOR) as inputs [N, k] and outputs [N]."""
    inputs, outputs = GATES[name]
    return np.array(inputs, dtype=np.float64), np.array(outputs, dtype=np.int64)


def learn_gates(epochs: int = 50, lr: float = 0.1, seed: int = 0) -> dict[str, PerceptronResult]:
    """A perceptron trained on each of AND, OR, NOT (separable, so each converges) and XOR (it cannot)."""
    return {name: train_perceptron(*gate_data(name), epochs=epochs, lr=lr, seed=seed) for name in GATES}


def train_xor_mlp(hidden: int = 8, steps: int = 300, lr: float = 0.05, seed: int = 0) -> tuple[torch.nn.Module, float]:
    """A 2-layer MLP (2 -> ``hidden`` ReLU -> 2) trained full-batch on XOR; returns it and its accuracy.

    The hidden layer bends the input space so that the output layer's line can separate what
    no single line could.
    """
    x, y = (torch.from_numpy(a) for a in gate_data("XOR"))
    x = x.float()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = create_model("mlp", in_features=2, hidden=(hidden,), n_classes=2, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        accuracy = (model.eval()(x).argmax(1) == y).float().mean().item()
    return model, accuracy


def separable_points(n: int = 100, seed: int = 0, margin: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random 2-D points labelled by the side of a fixed line, none within ``margin`` of it
    (a guaranteed gap, so the algorithm provably converges)."""
    rng = np.random.default_rng(seed)
    points = np.empty((0, 2))
    while len(points) < n:
        candidates = rng.uniform(-3, 3, size=(2 * n, 2))
        distance = (candidates @ np.array([1.0, 0.5]) - 0.3) / np.hypot(1.0, 0.5)
        points = np.concatenate([points, candidates[np.abs(distance) >= margin]])
    points = points[:n]
    return points, (points @ np.array([1.0, 0.5]) - 0.3 > 0).astype(np.int64)


def read_points(csv_path: str | Path, target: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Two numeric feature columns and a two-class ``target`` from a CSV.

    Returns points [N, 2], labels [N] (0 or 1), the class names and the two feature names.
    """
    table = read_csv(csv_path)
    if target not in table.columns:
        raise DataError(f"{csv_path}: no target column {target!r}; columns are: {', '.join(table.columns)}")
    features = [c for c in table.columns if c != target]
    if len(features) != 2:
        raise DataError(f"{csv_path}: the perceptron plots 2-D data: expected 2 feature columns besides "
                        f"{target!r}, found {len(features)} ({', '.join(features)})")
    classes = class_names(table, target)
    if len(classes) != 2:
        raise DataError(f"{csv_path}: target column {target!r} has {len(classes)} classes; a perceptron needs 2")
    points = np.stack([numeric_column(table, c) for c in features], axis=1)
    return points, encode_classes(table, target, classes).numpy(), classes, features


def _draw_line(ax: Axes, weights: np.ndarray, bias: float, x: np.ndarray) -> None:
    """Shade each side of ``w . x + b = 0`` and draw the line itself over the data's range."""
    pad = 0.5
    (x0, y0), (x1, y1) = x.min(0) - pad, x.max(0) + pad
    grid_x, grid_y = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
    side = classify(weights, bias, np.stack([grid_x.ravel(), grid_y.ravel()], 1)).reshape(grid_x.shape)
    ax.contourf(grid_x, grid_y, side, levels=[-0.5, 0.5, 1.5], colors=["#f4c7c3", "#c6dbef"], alpha=0.6)
    if np.any(weights != 0):
        ax.contour(grid_x, grid_y, grid_x * weights[0] + grid_y * weights[1] + bias, levels=[0], colors="k")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def boundary_figure(x: np.ndarray, y: np.ndarray, result: PerceptronResult) -> Figure:
    """One panel per epoch (at most ``MAX_PANELS``, evenly spaced) with the points and the line
    after that epoch (a run's ``boundary.png``)."""
    epochs = len(result.history)
    shown = sorted(set(np.linspace(0, epochs - 1, min(epochs, MAX_PANELS)).round().astype(int).tolist()))
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    fig = Figure(figsize=(3 * cols, 3 * rows), layout="tight")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, epoch in zip(axes, shown):
        weights, bias = result.history[epoch]
        _draw_line(ax, weights, bias, x)
        ax.scatter(x[:, 0], x[:, 1], c=np.where(y == 1, "#08519c", "#a50f15"), s=12)
        ax.set_title(f"epoch {epoch + 1}: {result.mistakes[epoch]} mistakes", fontsize=9)
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    return fig


def _gate_summary(result: PerceptronResult, name: str) -> dict[str, Any]:
    x, y = gate_data(name)
    return {"weights": result.weights.tolist(), "bias": result.bias, "converged": result.converged,
            "epochs": len(result.history), "outputs": classify(result.weights, result.bias, x).tolist(),
            "expected": y.tolist()}


def load_points(config: PerceptronConfig) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """The run's points, labels, class names and feature names: its CSV, or the generated points."""
    if config.csv is None:
        return (*separable_points(config.n_points, config.seed), ["0", "1"], ["x1", "x2"])
    if not config.target:
        raise ConfigError(f"--target: name the label column of {config.csv}")
    return read_points(config.csv, config.target)


def split(y: np.ndarray, config: PerceptronConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and test points: a stratified split seeded by the run's seed."""
    train_idx, test_idx = stratified_split(torch.from_numpy(y), config.test_fraction,
                                           torch.Generator().manual_seed(config.seed))
    return train_idx.numpy(), test_idx.numpy()


def train(start: RunStart, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
    """Train a perceptron on 2-D points (generated, or ``--csv`` with ``--target``) into the run directory.

    Writes ``boundary.png`` (the line after each epoch, over all points) and ``summary.json``:
    the weights, the mistakes per epoch, the test accuracy on the held-out points, the
    AND/OR/NOT perceptrons' weights, and XOR: the perceptron's failure to converge and a
    2-layer MLP's accuracy on it. ``dry_run`` trains one epoch.
    """
    config, run_dir = start.config, start.run_dir
    x, y, classes, features = load_points(config)
    train_idx, test_idx = split(y, config)
    start.open()
    epochs = 1 if dry_run else config.epochs
    start = time.perf_counter()
    result = train_perceptron(x[train_idx], y[train_idx], epochs, config.lr, config.seed)
    train_seconds = time.perf_counter() - start
    if config.plots:
        save_figure(boundary_figure(x, y, result), run_dir / "boundary.png")
    gates = learn_gates(epochs, config.lr, config.seed)
    _, mlp_accuracy = train_xor_mlp(seed=config.seed)
    summary = {
        "recipe": config.recipe, "kind": config.kind, "run_dir": str(run_dir), "data": config.csv or "generated",
        "classes": classes, "features": features, "weights": result.weights.tolist(), "bias": result.bias,
        "converged": result.converged, "epochs": len(result.history), "mistakes": result.mistakes,
        "train_accuracy": float((classify(result.weights, result.bias, x[train_idx]) == y[train_idx]).mean()),
        "test_accuracy": float((classify(result.weights, result.bias, x[test_idx]) == y[test_idx]).mean()),
        "rows": {"train": len(train_idx), "test": len(test_idx)}, "train_seconds": round(train_seconds, 4),
        "gates": {name: _gate_summary(gates[name], name) for name in ("AND", "OR", "NOT")},
        "xor": {"perceptron_converged": gates["XOR"].converged, "perceptron_epochs": len(gates["XOR"].history),
                "perceptron_mistakes_last_epoch": gates["XOR"].mistakes[-1], "mlp_accuracy": mlp_accuracy},
        "dry_run": dry_run, **environment(),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def load_run(run_dir: str | Path) -> tuple[PerceptronConfig, dict[str, Any]]:
    """A perceptron run's config and summary (which holds the weights)."""
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").is_file():
        raise CheckpointError(f"{run_dir}: no summary.json (the perceptron's weights); was the run finished?")
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        summary["weights"] = [float(w) for w in summary["weights"]]
        summary["bias"] = float(summary["bias"])
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{run_dir / 'summary.json'}: not a perceptron summary: {error}") from None
    return load_config(run_dir / "config.json"), summary


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """Score the saved line on the run's test points again (``data_path``: the CSV, if it moved).

    ``device_name`` is accepted for the runner contract; the perceptron is NumPy on the CPU.
    """
    config, summary = load_run(run_dir)
    if data_path:
        config.csv = data_path
    x, y, classes, _ = load_points(config)
    _, test_idx = split(y, config)
    weights = np.asarray(summary["weights"], dtype=np.float64)
    accuracy = float((classify(weights, float(summary["bias"]), x[test_idx]) == y[test_idx]).mean())
    return {"run_dir": str(run_dir), "recipe": config.recipe, "classes": classes, "test_accuracy": accuracy,
            "summary_test_accuracy": summary.get("test_accuracy")}


def predict(run_dir: str | Path, inputs: Sequence[str | Path] = (), top_k: int = 1, csv: str | Path | None = None,
            output: str | Path | None = None) -> dict[str, Any]:
    """Classify the points of a CSV with the run's two feature columns; write them with a
    ``predicted`` column to ``output`` (default ``NAME.predictions.csv`` beside it), atomically."""
    sources = ([csv] if csv else []) + list(inputs)
    if len(sources) != 1:
        raise ConfigError(f"predict with the perceptron run in {run_dir}: give one CSV file (--csv POINTS.csv)")
    _, summary = load_run(run_dir)
    table = read_csv(sources[0])
    x = np.stack([numeric_column(table, name) for name in summary["features"]], axis=1)
    labels = classify(np.asarray(summary["weights"]), float(summary["bias"]), x)
    buffer = io.StringIO()
    writer = csv_module.writer(buffer, lineterminator="\n")
    writer.writerow([*table.columns, "predicted"])
    for row, label in zip(table.rows, labels.tolist()):
        writer.writerow([*row, summary["classes"][label]])
    data = buffer.getvalue().encode("utf-8")
    out = check_output(output or Path(sources[0]).with_suffix(".predictions.csv"), sources[0])
    atomic_write(out, data)
    counts = np.bincount(labels, minlength=2).tolist()
    return {"run_dir": str(run_dir), "csv": str(sources[0]), "out": str(out), "rows": len(table.rows),
            "predicted_counts": dict(zip(summary["classes"], counts))}


class PerceptronKind(Kind, functions=(train, evaluate, predict)):
    """Rosenblatt's perceptron on two numeric features (a CSV_OPTION or generated points), trained by its trick."""

    name = "perceptron"
    what = "perceptron run"
    config = PerceptronConfig
    predict_options = ("csv", "output")
    options = (CSV_OPTION, TARGET_OPTION)

    def load_run(self, run_dir: str | Path, device: Any = "cpu") -> tuple[Any, Any, dict[str, Any]]:
        """A perceptron is its weights and bias, not a torch model: the model is the state itself."""
        config, state = load_run(run_dir)
        return config, state, state
