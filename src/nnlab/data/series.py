"""Univariate time series: generated noisy sine waves or one numeric column of a CSV, cut into windows.

A series is a float tensor in time order. ``make_windows`` turns it into inputs of ``window``
past values and targets of the next ``horizon`` values; the validation part is the series'
tail, so the model is always scored on a future it has not seen.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from nnlab.errors import DataError


def sine_waves(length: int, noise: float, seed: int) -> torch.Tensor:
    """Two sines (periods 50 and 13 steps) plus Gaussian noise of std ``noise``: ``length`` values."""
    t = torch.arange(length, dtype=torch.float32)
    clean = torch.sin(2 * math.pi * t / 50) + 0.5 * torch.sin(2 * math.pi * t / 13)
    return clean + noise * torch.randn(length, generator=torch.Generator().manual_seed(seed))


def read_series(path: str | Path, column: str | None) -> torch.Tensor:
    """Column ``column`` of the CSV at ``path`` as float32, in file order; a ``DataError`` names what is wrong."""
    path = Path(path)
    if not column:
        raise DataError(f"{path}: name the column to forecast with --column NAME")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise DataError(f"{path}: no column {column!r}; columns are: {', '.join(reader.fieldnames or [])}")
            raw = [row[column] for row in reader]
    except OSError as error:
        raise DataError(f"{path}: cannot read the CSV: {error.strerror}") from None
    values = []
    for line, text in enumerate(raw, start=2):
        try:
            values.append(float(text))
        except (TypeError, ValueError):
            raise DataError(f"{path}: line {line}: column {column!r} holds {text!r}, not a number") from None
    return torch.tensor(values, dtype=torch.float32)


def make_windows(series: torch.Tensor, window: int, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[N, window]`` (values t-window..t-1) and targets ``[N, horizon]`` (values t..t+horizon-1).

    With the series ``0 1 2 3 4 5``, window 3 and horizon 1: x = [0 1 2], [1 2 3], [2 3 4] and
    y = [3], [4], [5].
    """
    n = len(series) - window - horizon + 1
    if n < 1:
        raise DataError(f"series of {len(series)} values is too short for windows of {window} + {horizon}")
    frames = series.unfold(0, window + horizon, 1)   # [N, window + horizon]
    return frames[:, :window], frames[:, window:]
