"""Time-series runs: an RNN forecasts the next value(s) of a series from a window of past values.

``train`` takes generated noisy sine waves (``sine-rnn``) or one column of a CSV (``series
--csv FILE --column NAME``), keeps the tail as validation, standardizes with the training
part's mean and std (saved in the checkpoint), trains ``series_rnn`` with the mean squared
error and writes ``config.json``, ``metrics.jsonl``, ``best.pt``/``last.pt``, ``curves.png``,
``forecast.png`` (true vs predicted next value over the validation tail) and ``summary.json``
with MSE and MAE in the series' units next to those of the naive last-value forecast.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from nnlab.config import RunConfig, check_choice, check_positive
from nnlab.data.series import make_windows, read_series, sine_waves
from nnlab.data.tabular import FeatureBatches
from nnlab.engine.callbacks import EpochLines
from nnlab.engine.learner import resolve_device
from nnlab.errors import ConfigError
from nnlab.files import save_figure
from nnlab.kit.rundir import load_best, read_summary
from nnlab.kit.kind import CSV_OPTION, Kind, Option
from nnlab.kit.run import RunStart, Spec, stopped_summary, summarize, train_model
from nnlab.models import create_model


@dataclass
class SeriesConfig(RunConfig):
    """Forecasting a univariate series (generated noisy sines, or ``--csv FILE --column NAME``) with an RNN."""

    kind: str = "series"
    csv: str | None = None              # --csv FILE: forecast its --column instead of generated sines
    column: str | None = None
    length: int = 3000                  # generated series: number of values
    noise: float = 0.1                  # generated series: noise std (the sines' amplitude is ~1)
    window: int = 32                    # past values the model sees
    horizon: int = 1                    # future values it predicts
    cell: str = "lstm"                  # lstm | gru
    layers: int = 1
    hidden_size: int = 32
    epochs: int = 15
    lr: float = 1e-2
    clip: float | None = 1.0
    valid_fraction: float = 0.2         # the series' tail
    device: str = "cpu"                 # small models: the CPU beats a GPU's launch overhead

    def check(self) -> None:
        """Reject settings no series run could use, naming the setting."""
        super().check()
        check_choice("cell", self.cell, ("lstm", "gru"))
        check_positive(self, "window", "horizon", "layers", "hidden_size", "length")
        if self.valid_fraction == 0.0:
            raise ConfigError(f"valid_fraction must be in (0, 1) for a series, got {self.valid_fraction}")


def load_series(config: SeriesConfig, csv_path: str | None = None) -> tuple[torch.Tensor, str]:
    """The run's series and where it came from: ``--csv``'s column, else generated sines."""
    path = csv_path or config.csv
    if path:
        return read_series(path, config.column), f"{path}:{config.column}"
    generated = sine_waves(config.length, config.noise, config.seed)
    return generated, f"sine waves ({config.length} values, noise {config.noise})"


def split_windows(series: torch.Tensor, config: SeriesConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Raw-unit windows of the training head and of the validation tail (whose windows start in the tail)."""
    cut = int(len(series) * (1 - config.valid_fraction))
    return {"train": make_windows(series[:cut], config.window, config.horizon),
            "valid": make_windows(series[cut - config.window:], config.window, config.horizon)}


def mse_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every forecast value."""
    return F.mse_loss(outputs, targets)


def scores(pred: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """MSE and MAE of ``pred`` and of the naive forecast (the window's last value, repeated), in raw units."""
    naive = x[:, -1:].expand_as(y)
    mse, naive_mse = F.mse_loss(pred, y).item(), F.mse_loss(naive, y).item()
    return {"valid_mse": mse, "valid_mae": F.l1_loss(pred, y).item(), "naive_mse": naive_mse,
            "naive_mae": F.l1_loss(naive, y).item(), "skill": 1 - mse / naive_mse if naive_mse > 0 else None}


@torch.no_grad()
def forecast(model: torch.nn.Module, x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The model's forecasts for raw-unit windows ``x``, in raw units."""
    return model.eval()((x - mean) / std).float() * std + mean


def forecast_figure(y: torch.Tensor, pred: torch.Tensor) -> Figure:
    """True and predicted next value over the validation tail (a run's ``forecast.png``)."""
    fig = Figure(figsize=(10, 3.5))
    ax = fig.subplots()
    ax.plot(y[:, 0].tolist(), label="true", linewidth=1)
    ax.plot(pred[:, 0].tolist(), label="predicted", linewidth=1)
    ax.set_xlabel("validation step")
    ax.legend()
    fig.tight_layout()
    return fig


def train(start: RunStart, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
    """Train the series run ``start`` describes; returns the summary (also ``summary.json``)."""
    config, device, run_dir = start.config, start.device, start.run_dir
    if config.recipe == "series" and not config.csv:
        raise ConfigError("the series recipe needs --csv FILE --column NAME (or train sine-rnn)")
    series, source = load_series(config)
    windows = split_windows(series, config)
    (x, y), (vx, vy) = windows["train"], windows["valid"]
    mean, std = x.mean().item(), x.std().item() or 1.0
    if dry_run:
        x, y = x[: 4 * config.batch_size], y[: 4 * config.batch_size]
    generator = torch.Generator().manual_seed(config.seed)
    train_batches = FeatureBatches((x - mean) / std, (y - mean) / std, config.batch_size, shuffle=True,
                                   generator=generator, device=device)
    valid_batches = FeatureBatches((vx - mean) / std, (vy - mean) / std, 1024, device=device)

    args = {"n_classes": config.horizon, "hidden": config.hidden_size, "layers": config.layers, "cell": config.cell}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # initialization, without touching the caller's global RNG
        model = create_model("series_rnn", **args)
    epochs = 1 if dry_run else config.epochs
    spec = Spec(model, train_batches, valid_batches, mse_loss, metric=None, generator=generator, epochs=epochs,
                saved={"model_name": "series_rnn", "model_args": args, "mean": mean, "std": std}, dry_run=dry_run,
                progress=EpochLines(stream, max(1, epochs // 5)))
    trained = train_model(start, spec, stream)
    if trained.stopped:
        return stopped_summary(start, trained)
    pred = forecast(model, vx.to(device), mean, std).cpu()
    if config.plots:
        save_figure(forecast_figure(vy, pred), run_dir / "forecast.png")
    return summarize(start, trained, {
        "dataset": source, "model": "series_rnn", **scores(pred, vx, vy),
        "windows": {"train": len(x), "valid": len(vx)}, "window": config.window, "horizon": config.horizon},
        dry_run)


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """Reload ``best.pt`` and score the validation tail again (``data_path``: another CSV with the same column)."""
    device = resolve_device(device_name or "cpu")
    config, model, state = load_best(run_dir, "series", device)
    series, source = load_series(config, data_path)
    vx, vy = split_windows(series, config)["valid"]
    result = {"run_dir": str(run_dir), "recipe": config.recipe, "dataset": source,
              **scores(forecast(model, vx.to(device), state["mean"], state["std"]).cpu(), vx, vy)}
    summary = read_summary(run_dir)
    if summary is not None:
        result["summary_valid_mse"] = summary.get("valid_mse")
    return result


def predict(run_dir: str | Path, inputs: Sequence[str], top_k: int = 3) -> list[dict]:
    """Series runs forecast their validation tail (``forecast.png``); single inputs are not supported."""
    raise ConfigError(f"predict: a series run ({run_dir}) has no per-input predictions; see its forecast.png "
                      "and `nnlab eval`")


class SeriesKind(Kind, functions=(train, evaluate, predict)):
    """Time-series forecasting with an RNN, scored against the naive last-value forecast."""

    name = "series"
    what = "series run"
    config = SeriesConfig
    capabilities = frozenset({"resume"})
    metrics = ("valid_mse",)
    options = (CSV_OPTION, Option("--column", "column", "series runs: the CSV_OPTION column to forecast"))

    def load_run(self, run_dir: str | Path, device: Any = "cpu") -> tuple[Any, Any, dict[str, Any]]:
        return load_best(run_dir, "series", device)
