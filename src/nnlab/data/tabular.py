"""Tables from CSV files or scikit-learn's bundled data sets, turned into model inputs.

A ``Table`` keeps every cell as the string the file held, so a CSV and a bundled data set go
through the same path: the ``Preprocessor`` types the columns (numeric, or categorical when
declared or when the user says so), one-hot encodes the categorical ones and standardizes the
numeric ones with statistics of the training rows only, then is saved as plain JSON-able data
so that prediction applies exactly the same transform to new rows. Errors name the file, the
column and, where there is one, the line.
"""
from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from nnlab.errors import DataError

TASKS = ("classify", "regress")
# scikit-learn ships these with its wheel, so they work offline; the loader names are its API.
SKLEARN_DATASETS = {"breast-cancer": "load_breast_cancer", "wine": "load_wine", "iris": "load_iris",
                    "diabetes": "load_diabetes"}


@dataclass
class Table:
    """Named columns of string cells; ``source`` (a path, or ``sklearn:NAME``) is named in every error."""

    source: str
    columns: list[str]
    rows: list[list[str]]
    lines: list[int]  # the file line each row came from

    def column(self, name: str) -> list[str]:
        """The cells of column ``name``; a ``DataError`` listing the columns if there is none."""
        if name not in self.columns:
            raise DataError(f"{self.source}: no column {name!r}; columns are: {', '.join(self.columns)}")
        index = self.columns.index(name)
        return [row[index] for row in self.rows]


def read_csv(path: str | Path) -> Table:
    """Read a CSV with a header row (csv module, UTF-8, an Excel BOM tolerated); blank lines are skipped."""
    path = Path(path)
    header: list[str] | None = None
    rows, lines = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            try:
                header = next(reader, None)
                for row in reader:
                    if not any(cell.strip() for cell in row):
                        continue
                    if len(row) != len(header):
                        raise DataError(f"{path}: line {reader.line_num} has {len(row)} fields, "
                                        f"the header has {len(header)}")
                    rows.append([cell.strip() for cell in row])
                    lines.append(reader.line_num)
            except csv.Error as error:
                raise DataError(f"{path}: line {reader.line_num}: not valid CSV: {error}") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (is it a CSV file?)") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror}") from None
    if header is None or not any(name.strip() for name in header):
        raise DataError(f"{path}: empty CSV (no header row)")
    columns = [name.strip() for name in header]
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise DataError(f"{path}: duplicate column names: {', '.join(duplicates)}")
    if not rows:
        raise DataError(f"{path}: no data rows under the header")
    return Table(str(path), columns, rows, lines)


def load_sklearn_table(name: str) -> Table:
    """One of scikit-learn's bundled data sets as a ``Table`` whose last column is ``target``.

    Classification targets hold the class names (``setosa``, ``malignant``); the regression
    target of ``diabetes`` holds numbers. scikit-learn is imported only here, on first use.
    """
    if name not in SKLEARN_DATASETS:
        raise DataError(f"unknown bundled data set {name!r}; known: {', '.join(SKLEARN_DATASETS)}")
    try:
        import sklearn.datasets
    except ImportError:
        raise DataError(f"the bundled data set {name!r} comes with scikit-learn, which is not installed: "
                        f"pip install scikit-learn, or train on a CSV with --csv FILE --target COLUMN") from None
    bunch = getattr(sklearn.datasets, SKLEARN_DATASETS[name])()
    names = bunch.get("target_names")
    targets = [str(names[t]) if names is not None else repr(float(t)) for t in bunch.target]
    rows = [[repr(float(v)) for v in features] + [t] for features, t in zip(bunch.data, targets)]
    columns = [str(c) for c in bunch.feature_names] + ["target"]
    return Table(f"sklearn:{name}", columns, rows, list(range(1, len(rows) + 1)))


def numeric_column(table: Table, name: str, hint: str = "") -> np.ndarray:
    """Column ``name`` as float64; a cell that is not a finite number is a ``DataError`` naming it."""
    values = np.empty(len(table.rows))
    for i, cell in enumerate(table.column(name)):
        try:
            values[i] = float(cell)
        except ValueError:
            values[i] = math.nan
        if not math.isfinite(values[i]):
            shown = repr(cell) if cell else "an empty cell"
            raise DataError(f"{table.source}: column {name!r} is not numeric ({shown} on line "
                            f"{table.lines[i]}){hint}")
    return values


def class_names(table: Table, target: str) -> list[str]:
    """The distinct values of ``target`` in class-index order (numeric order if all are numbers); a
    row without a label is a ``DataError`` naming its line."""
    for value, line in zip(table.column(target), table.lines):
        if not value.strip():
            raise DataError(f"{table.source}: line {line}: empty {target!r} (every row needs a label)")
    values = sorted(set(table.column(target)))
    try:
        values.sort(key=float)
    except ValueError:
        pass
    if len(values) < 2:
        raise DataError(f"{table.source}: target column {target!r} has only one class ({values[0]!r}); "
                        f"classification needs at least two")
    return values


def encode_classes(table: Table, target: str, classes: Sequence[str]) -> torch.Tensor:
    """The class index of every row's ``target`` value, as int64 [N]."""
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index[value] for value in table.column(target)], dtype=torch.long)


@dataclass
class Preprocessor:
    """The fitted transform from table rows to model inputs, stored with the model as plain data.

    ``numeric`` maps a column to its training (mean, std); ``categorical`` to its training
    categories, one input each (a category unseen in training encodes as all zeros).
    ``classes`` (classification) or ``target_stats`` (regression: the target is standardized
    too, which makes the loss scale-free and the optimizer's defaults work) describe the output.
    """

    target: str
    task: str
    features: list[str]
    numeric: dict[str, tuple[float, float]] = field(default_factory=dict)
    categorical: dict[str, list[str]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    target_stats: tuple[float, float] = (0.0, 1.0)

    @property
    def feature_names(self) -> list[str]:
        """One name per model input: the numeric column, or ``column=category`` for each one-hot input."""
        return [name for column in self.features for name in
                ([f"{column}={c}" for c in self.categorical[column]] if column in self.categorical else [column])]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, strings and floats: safe in a weights-only checkpoint and in JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessor":
        """The inverse of ``to_dict``."""
        return cls(target=data["target"], task=data["task"], features=list(data["features"]),
                   numeric={k: (float(m), float(s)) for k, (m, s) in data["numeric"].items()},
                   categorical={k: list(v) for k, v in data["categorical"].items()},
                   classes=list(data["classes"]), target_stats=tuple(data["target_stats"]))

    def transform(self, table: Table) -> torch.Tensor:
        """Standardized numeric and one-hot categorical inputs, float32 [N, len(feature_names)]."""
        parts = []
        for column in self.features:
            if column in self.categorical:
                index = {c: i for i, c in enumerate(self.categorical[column])}
                onehot = np.zeros((len(table.rows), len(index)))
                for row, cell in enumerate(table.column(column)):
                    if cell in index:
                        onehot[row, index[cell]] = 1.0
                parts.append(onehot)
            else:
                mean, std = self.numeric[column]
                hint = "; the model was trained on it as a number"
                parts.append(((numeric_column(table, column, hint) - mean) / std)[:, None])
        return torch.from_numpy(np.concatenate(parts, axis=1)).float()

    def encode_target(self, table: Table) -> torch.Tensor:
        """Class indices (int64 [N]) or the standardized target (float32 [N])."""
        if self.task == "classify":
            return encode_classes(table, self.target, self.classes)
        mean, std = self.target_stats
        return torch.from_numpy((numeric_column(table, self.target) - mean) / std).float()

    def decode_target(self, outputs: torch.Tensor) -> torch.Tensor:
        """Regression outputs [N] back in the target's units."""
        mean, std = self.target_stats
        return outputs * std + mean


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and population std; a constant column gets std 1 so it encodes as zeros, not NaN."""
    std = float(values.std())
    return float(values.mean()), std if std > 0 else 1.0


def fit_preprocessor(table: Table, target: str, task: str, categorical: Sequence[str],
                     train_rows: torch.Tensor, classes: Sequence[str] = ()) -> Preprocessor:
    """Type the columns of ``table`` and fit their statistics on ``train_rows`` only.

    A column is categorical when named in ``categorical`` (say, an integer "rank"), else it
    must be numeric in every row; a text column that is not declared is a ``DataError`` that
    suggests ``--categorical``. Validation and test rows never influence the statistics.
    """
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    table.column(target)
    for name in categorical:
        table.column(name)
        if name == target:
            raise DataError(f"{table.source}: {name!r} is the target; it cannot also be --categorical")
    features = [c for c in table.columns if c != target]
    if not features:
        raise DataError(f"{table.source}: no feature columns besides the target {target!r}")
    rows = train_rows.numpy()
    pre = Preprocessor(target, task, features, classes=list(classes))
    for column in features:
        if column in categorical:
            cells = table.column(column)
            pre.categorical[column] = sorted({cells[i] for i in rows})
        else:
            hint = f"; declare it with --categorical {column} if it is a category"
            pre.numeric[column] = _mean_std(numeric_column(table, column, hint)[rows])
    if task == "regress":
        pre.target_stats = _mean_std(numeric_column(table, target, "; a regression target must be a number")[rows])
    return pre


class FeatureBatches:
    """(features, targets) batches over in-memory tensors; each pass shuffled by a seeded generator.

    The tabular counterpart of ``TensorBatches``: the inputs are already float features, so a
    batch is one slice of one permutation and nothing else. The tensors move to ``device`` once.
    """

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, batch_size: int, *,
                 shuffle: bool = False, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> None:
        if len(features) != len(targets):
            raise ValueError(f"{len(features)} rows of features but {len(targets)} targets")
        self.features = features.to(device)
        self.targets = targets.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    @property
    def samples(self) -> int:
        return len(self.features)

    def __len__(self) -> int:
        return math.ceil(len(self.features) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.features)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for lo in range(0, n, self.batch_size):
            index = order[lo:lo + self.batch_size].to(self.features.device)
            yield self.features[index], self.targets[index]
