"""Tabular runs: logistic regression or an MLP on a CSV or a bundled data set, and predictions on new rows.

``train`` splits the rows (stratified by class; test, then validation out of the rest), fits
the preprocessing on the training rows only, trains with the ``Learner`` and writes a run
directory like an image run: ``config.json``, ``metrics.jsonl``, ``best.pt``/``last.pt``
(with the preprocessing as plain data), ``curves.png``, ``confusion.png`` (classification)
and ``summary.json``. ``evaluate`` re-splits the same rows and scores ``best.pt`` again;
``predict`` writes a CSV of predictions for new rows.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch
import torch.nn.functional as F

from nnlab.config import RunConfig, check_dropout, load_config
from nnlab.data.batches import stratified_split
from nnlab.data.tabular import (SKLEARN_DATASETS, FeatureBatches, Preprocessor, Table, class_names,
                                encode_classes, fit_preprocessor, load_sklearn_table, read_csv)
from nnlab.engine.callbacks import EpochLines
from nnlab.engine.learner import count_correct, resolve_device
from nnlab.engine.metrics import score
from nnlab.engine.scores import regression_report, roc_auc_ovr
from nnlab.errors import ConfigError, DataError
from nnlab.files import atomic_write
from nnlab.kit.rundir import check_output, load_best, read_summary
from nnlab.kit.kind import CSV_OPTION, Kind, Option, TARGET_OPTION
from nnlab.kit.run import RunStart, Spec, plot_run_confusion, summarize, train_model
from nnlab.models import create_model


@dataclass
class TabularConfig(RunConfig):
    """A tabular run: logistic regression or an MLP on a CSV or one of scikit-learn's bundled tables."""

    kind: str = "tabular"
    dataset: str | None = None          # a bundled scikit-learn table (breast-cancer, wine, iris, diabetes)
    csv: str | None = None              # --csv FILE: used instead of the bundled table when given
    target: str | None = None           # --target COLUMN
    task: str = "classify"              # classify | regress
    model: str = "mlp"                  # logistic | mlp
    hidden: tuple[int, ...] = (64, 32)  # mlp only
    categorical: tuple[str, ...] = ()   # columns to one-hot even though they hold numbers (say, a rank)
    dropout: float = 0.1                # mlp only
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-2
    weight_decay: float = 1e-4
    device: str = "cpu"                 # a few hundred rows train faster on the CPU than a GPU launches kernels

    def check(self) -> None:
        """Reject settings no tabular run could use, naming the flag."""
        super().check()
        if self.model not in ("logistic", "mlp"):
            raise ConfigError(f"--model: expected logistic or mlp for a tabular run, got {self.model!r}")
        if any(size < 1 for size in self.hidden):
            raise ConfigError(f"--hidden: layer sizes must be positive, got {','.join(map(str, self.hidden))}")
        check_dropout(self.dropout)


def load_table(config: TabularConfig, csv_path: str | Path | None = None) -> Table:
    """The run's rows: ``csv_path``, else the config's CSV, else its bundled scikit-learn table."""
    path = csv_path or config.csv
    if not path and not config.dataset:
        raise ConfigError("a tabular run needs --csv FILE --target COLUMN "
                          f"(or a recipe on a bundled table: {', '.join(SKLEARN_DATASETS)})")
    if not config.target:
        raise ConfigError(f"--target: name the column of {path or config.dataset} to predict")
    return read_csv(path) if path else load_sklearn_table(config.dataset)


@dataclass
class TabularSplits:
    """The fitted preprocessing and the model-ready tensors of each split (row indices kept)."""

    pre: Preprocessor
    rows: dict[str, torch.Tensor]    # split name -> row indices into the table
    x: dict[str, torch.Tensor]       # split name -> float32 [n, features]
    y: dict[str, torch.Tensor]       # split name -> int64 classes or float32 standardized targets


def split_rows(table: Table, config: TabularConfig, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Row indices of the test split, then of validation out of the rest, and the class names.

    Classification keeps every class's share in each split; regression splits at random.
    The split is a pure function of the rows and the generator's seed, so ``evaluate`` finds
    the same test rows again.
    """
    if config.target not in table.columns:
        raise DataError(f"{table.source}: no target column {config.target!r}; columns are: {', '.join(table.columns)}")
    if config.task == "classify":
        classes = class_names(table, config.target)
        strata = encode_classes(table, config.target, classes)
    else:
        classes, strata = [], torch.zeros(len(table.rows), dtype=torch.long)  # one stratum: a random split
    rest, test = stratified_split(strata, config.test_fraction, generator)
    train, valid = stratified_split(strata[rest], config.valid_fraction, generator)
    rows = {"train": rest[train], "valid": rest[valid], "test": test}
    if len(rows["train"]) == 0 or len(rows["test"]) == 0:
        raise DataError(f"{table.source}: {len(table.rows)} rows are too few for a training and a test split")
    return rows, classes


def to_tensors(table: Table, pre: Preprocessor, rows: dict[str, torch.Tensor]) -> TabularSplits:
    """Every split's inputs and targets, transformed by ``pre``."""
    x, y = pre.transform(table), pre.encode_target(table)
    return TabularSplits(pre, rows, {k: x[v] for k, v in rows.items()}, {k: y[v] for k, v in rows.items()})


def prepare(table: Table, config: TabularConfig, generator: torch.Generator) -> TabularSplits:
    """Split ``table``'s rows and fit the preprocessing on the training rows only."""
    rows, classes = split_rows(table, config, generator)
    pre = fit_preprocessor(table, config.target, config.task, config.categorical, rows["train"], classes)
    return to_tensors(table, pre, rows)


def model_args(config: TabularConfig, in_features: int, n_outputs: int) -> dict[str, Any]:
    """Arguments of the registry's ``logistic`` or ``mlp`` for ``in_features`` inputs."""
    if config.model == "logistic":
        return {"in_features": in_features, "n_classes": n_outputs}
    return {"in_features": in_features, "hidden": tuple(config.hidden), "n_classes": n_outputs,
            "dropout": config.dropout}


def mse_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of a one-output model's [N, 1] outputs against [N] targets."""
    return F.mse_loss(outputs.squeeze(1), targets)


@torch.no_grad()
def model_outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's raw outputs for ``x`` in eval mode."""
    return model.eval()(x).float().cpu()


def score_outputs(outputs: torch.Tensor, splits: TabularSplits) -> dict[str, Any]:
    """Classification: accuracy, precision/recall/F1 (of class 1 when binary, else macro), ROC-AUC,
    per-class report and confusion matrix. Regression: MSE, RMSE, MAE, R^2 in the target's units.
    """
    pre, targets = splits.pre, splits.y["test"]
    if pre.task == "regress":
        report = regression_report(pre.decode_target(outputs.squeeze(1)), pre.decode_target(targets))
        return {f"test_{k}": v for k, v in report.items()}
    probs = outputs.softmax(1)
    result = score(probs, targets, pre.classes)
    binary = len(pre.classes) == 2
    headline = result["per_class"][pre.classes[1]] if binary else result["macro"]
    return {"test_accuracy": result.pop("test_accuracy"), "average": "binary" if binary else "macro",
            "positive_class": pre.classes[1] if binary else None,
            **{f"test_{k}": headline[k] for k in ("precision", "recall", "f1")},
            "test_roc_auc": roc_auc_ovr(probs, targets), **result}


def train(start: RunStart, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
    """Train the tabular run ``start`` describes; returns the summary (also written to ``summary.json``).

    ``dry_run`` trains one epoch on a few batches: a smoke test of the whole path.
    """
    config, device = start.config, start.device
    table = load_table(config)
    generator = torch.Generator().manual_seed(config.seed)
    splits = prepare(table, config, generator)
    classify = config.task == "classify"
    args = model_args(config, splits.x["train"].shape[1], len(splits.pre.classes) if classify else 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # model initialization, without touching the caller's global RNG
        model = create_model(config.model, **args)
    n_train = 4 * config.batch_size if dry_run else len(splits.x["train"])
    train_batches = FeatureBatches(splits.x["train"][:n_train], splits.y["train"][:n_train], config.batch_size,
                                   shuffle=True, generator=generator, device=device)
    valid_batches = (FeatureBatches(splits.x["valid"], splits.y["valid"], 1024, device=device)
                     if len(splits.x["valid"]) else None)
    epochs = 1 if dry_run else config.epochs
    # The validation loss picks the best epoch (the config's monitor): on a few dozen rows, accuracy ties too often.
    spec = Spec(model, train_batches, valid_batches, torch.nn.CrossEntropyLoss() if classify else mse_loss,
                saved={"model_name": config.model, "model_args": args, "classes": list(splits.pre.classes),
                       "preprocessing": splits.pre.to_dict()},
                metric=count_correct if classify else None, generator=generator, epochs=epochs, dry_run=dry_run,
                progress=EpochLines(stream, max(1, epochs // 10)))
    trained = train_model(start, spec, stream)
    result = score_outputs(model_outputs(model, splits.x["test"].to(device)), splits)
    if classify:
        plot_run_confusion(start, result["confusion"], splits.pre.classes)
    return summarize(start, trained, {
        "dataset": table.source, "task": config.task, "model": config.model, "hidden": list(args.get("hidden", ())),
        **result, "rows": {k: len(v) for k, v in splits.rows.items()}, "n_features": len(splits.pre.feature_names),
        "classes": list(splits.pre.classes)}, dry_run)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[TabularConfig, torch.nn.Module, Preprocessor]:
    """A tabular run's config, its best model (weights only) in eval mode, and its preprocessing."""
    config, model, state = load_best(run_dir, "tabular", device)
    return config, model, Preprocessor.from_dict(state["preprocessing"])


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """Reload ``best.pt``, split the rows exactly as ``train`` did and score the test rows again.

    ``data_path`` replaces the run's CSV (it must hold the same rows for the split to match).
    """
    run_dir = Path(run_dir)
    probe = load_config(run_dir / "config.json") if (run_dir / "config.json").is_file() else None
    device = resolve_device(device_name or (probe.device if probe else "cpu"))
    config, model, pre = load_run(run_dir, device)
    table = load_table(config, data_path)
    rows, classes = split_rows(table, config, torch.Generator().manual_seed(config.seed))
    if classes != pre.classes:
        raise DataError(f"{table.source}: the target's classes {classes} are not the run's {pre.classes}")
    splits = to_tensors(table, pre, rows)
    result = score_outputs(model_outputs(model, splits.x["test"].to(device)), splits)
    summary = read_summary(run_dir)
    if summary is not None and "test_accuracy" in result:
        result["summary_test_accuracy"] = summary.get("test_accuracy")
    return {"run_dir": str(run_dir), "recipe": config.recipe, "task": config.task,
            "classes": list(pre.classes), **result}


def class_predictions_csv(table: Table, target: str, classes: Sequence[str], probs: torch.Tensor) -> bytes:
    """``table``'s rows with ``predicted_TARGET`` (the likeliest of ``classes``) and one
    ``probability_CLASS`` column per class, from ``probs [rows, classes]``, as CSV bytes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*table.columns, f"predicted_{target}", *(f"probability_{c}" for c in classes)])
    for row, index, p in zip(table.rows, probs.argmax(1).tolist(), probs.tolist()):
        writer.writerow([*row, classes[index], *(f"{v:.6f}" for v in p)])
    return buffer.getvalue().encode("utf-8")


def predictions_csv(table: Table, pre: Preprocessor, outputs: torch.Tensor) -> bytes:
    """The input rows with ``predicted_TARGET`` and, for classification, one probability column per class."""
    if pre.task == "classify":
        return class_predictions_csv(table, pre.target, pre.classes, outputs.softmax(1))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*table.columns, f"predicted_{pre.target}"])
    for row, value in zip(table.rows, pre.decode_target(outputs.squeeze(1)).tolist()):
        writer.writerow([*row, repr(value)])
    return buffer.getvalue().encode("utf-8")


def predict(run_dir: str | Path, inputs: Sequence[str | Path] = (), top_k: int = 3, csv: str | Path | None = None,
            output: str | Path | None = None) -> dict[str, Any]:
    """Predict every row of a CSV (``csv``, or the one file in ``inputs``) and write them as a CSV.

    ``output`` defaults to ``NAME.predictions.csv`` beside the input; it is written atomically.
    The target column may be present (kept, not used) or absent; every feature column must be
    there. The CSV holds every class's probability, so ``top_k`` is not used.
    """
    sources = ([csv] if csv else []) + list(inputs)
    if len(sources) != 1:
        raise ConfigError(f"predict with the tabular run in {run_dir}: give one CSV file (--csv NEW.csv), "
                          f"got {len(sources)}")
    csv_in = Path(sources[0])
    _, model, pre = load_run(run_dir, "cpu")
    table = read_csv(csv_in)
    outputs = model_outputs(model, pre.transform(table))
    out = check_output(output or csv_in.with_suffix(".predictions.csv"), csv_in)
    data = predictions_csv(table, pre, outputs)
    atomic_write(out, data)
    result: dict[str, Any] = {"run_dir": str(run_dir), "csv": str(csv_in), "out": str(out), "rows": len(table.rows),
                              "task": pre.task}
    if pre.task == "classify":
        counts = torch.bincount(outputs.argmax(1), minlength=len(pre.classes)).tolist()
        result["predicted_counts"] = dict(zip(pre.classes, counts))
    return result


class TabularKind(Kind, functions=(train, evaluate, predict, load_run)):
    """Logistic regression and MLPs on a table (a bundled scikit-learn table or any CSV_OPTION): classify or regress."""

    name = "tabular"
    what = "tabular run"
    config = TabularConfig
    predict_options = ("csv", "output")
    metrics = ("test_accuracy", "test_r2")
    options = (CSV_OPTION, TARGET_OPTION,
               Option("--task", "task", "tabular runs (default classify)", choices=("classify", "regress")),
               Option("--hidden", "hidden", "tabular mlp: hidden layer sizes, e.g. 64,32"),
               Option("--categorical", "categorical", "tabular runs: comma-separated columns to one-hot encode "
                      "(text columns must be named here)", metavar="COLUMNS"))

    def scores(self, result: dict[str, Any]) -> list[str]:
        if result.get("test_r2") is not None:
            return [f"test R^2 {result['test_r2']:.4f}  MAE {result['test_mae']:.4g}"]
        return super().scores(result)

    def predict_run(self, run: Any, inputs: Any, top_k: int = 3, **options: Any) -> Any:
        """A CSV file as ``nnlab predict`` takes it (its predictions written beside it), or rows in memory,
        each a dict of column -> value: a classifier's ``top_k`` classes of each (named ``<row N>``), a
        regression's ``predicted`` value."""
        from nnlab.engine.metrics import ranked
        from nnlab.kit.runs import as_list
        rows = as_list(inputs)
        if not rows or not all(isinstance(row, dict) for row in rows):
            return predict(run.run_dir, rows, top_k=top_k, **options)
        columns = list(dict.fromkeys(key for row in rows for key in row))
        missing = [(i, name) for i, row in enumerate(rows) for name in columns if name not in row]
        if missing:
            raise DataError(f"predict: row {missing[0][0]} has no {missing[0][1]!r} (rows need the same columns)")
        table = Table("<rows>", columns, [[str(row[name]) for name in columns] for row in rows], list(range(len(rows))))
        _, model, pre = load_run(run.run_dir, "cpu")
        outputs = model_outputs(model, pre.transform(table))
        names = [f"<row {i}>" for i in range(len(rows))]
        if pre.task == "classify":
            return ranked(outputs.softmax(1), pre.classes, names, top_k)
        values = pre.decode_target(outputs.squeeze(1)).tolist()
        return [{"file": name, "predicted": value} for name, value in zip(names, values)]
