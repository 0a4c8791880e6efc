"""Time-series runs: an RNN forecasts the next value(s) of a series from a window of past values.

``train`` takes generated noisy sine waves (``sine-rnn``) or one column of a CSV (``series
--csv FILE --column NAME``), keeps the tail as validation, standardizes with the training
part's mean and std (saved in the checkpoint), trains ``series_rnn`` with the mean squared
error and writes ``config.json``, ``metrics.jsonl``, ``best.pt``/``last.pt``, ``curves.png``,
``forecast.png`` (true vs predicted next value over the validation tail) and ``summary.json``
with MSE and MAE in the series' units next to those of the naive last-value forecast.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from nnlab.config import SeriesConfig
from nnlab.data.series import make_windows, read_series, sine_waves
from nnlab.data.tabular import FeatureBatches
from nnlab.engine.callbacks import CheckpointCallback, MetricsLog, StopAfterEpochs
from nnlab.engine.checkpoint import atomic_write_bytes, load_checkpoint, rng_state
from nnlab.engine.learner import Learner, resolve_device
from nnlab.engine.optim import create_optimizer
from nnlab.engine.schedules import create_scheduler
from nnlab.errors import ConfigError
from nnlab.interpret.plots import plot_curves
from nnlab.models import create_model
from nnlab.runs import environment, load_best, start_run, stopped_summary, write_json
from nnlab.tasks.tabular import EpochLines


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


def plot_forecast(y: torch.Tensor, pred: torch.Tensor, path: Path) -> Path:
    """True and predicted next value over the validation tail, as a PNG."""
    fig = Figure(figsize=(10, 3.5))
    ax = fig.subplots()
    ax.plot(y[:, 0].tolist(), label="true", linewidth=1)
    ax.plot(pred[:, 0].tolist(), label="predicted", linewidth=1)
    ax.set_xlabel("validation step")
    ax.legend()
    fig.tight_layout()
    return atomic_write_bytes(path, lambda handle: fig.savefig(handle, format="png", dpi=100))


def train(recipe: str = "sine-rnn", out: str | Path | None = None, overrides: dict[str, Any] | None = None,
          stream: TextIO | None = None, dry_run: bool = False, resume: str | Path | None = None) -> dict[str, Any]:
    """Train a series recipe into a new run directory; returns the summary (also ``summary.json``).

    ``resume`` continues the interrupted run in that directory from its ``last.pt`` and ends as
    the uninterrupted run would have; ``stop_after_epochs`` ends a run early, resumable.
    """
    stream = stream if stream is not None else sys.stderr
    if resume is None and recipe == "series" and not (overrides or {}).get("csv"):
        raise ConfigError("the series recipe needs --csv FILE --column NAME (or train sine-rnn)")
    start = start_run(recipe, out, overrides, resume, "series", "series run")
    config, device, run_dir = start.config, start.device, start.run_dir
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
    optimizer = create_optimizer("adamw", model, config.lr, config.weight_decay)
    epochs = 1 if dry_run else config.epochs
    scheduler = create_scheduler(config.schedule, optimizer, config.lr, epochs * len(train_batches))

    def state() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng_state(generator), "model_name": "series_rnn", "model_args": args,
                "config": dataclasses.asdict(config), "kind": "series", "mean": mean, "std": std}

    saver = CheckpointCallback(run_dir, state, monitor="valid_loss", mode="min")
    interrupt = StopAfterEpochs(config.stop_after_epochs)
    callbacks = [EpochLines(stream, max(1, epochs // 5)), MetricsLog(run_dir / "metrics.jsonl"), saver,
                 interrupt]
    learner = Learner(model, train_batches, valid_batches, loss_fn=mse_loss, optimizer=optimizer,
                      scheduler=scheduler, callbacks=callbacks, device=device, precision="fp32",
                      clip=config.clip, metric=None)
    start.restore(model, learner, saver, generator)  # a resumed run: where it stopped
    history = learner.fit(epochs, start_epoch=start.start_epoch)
    train_seconds = sum(row["seconds"] for row in history)
    if interrupt.cut_short(history, epochs):
        return stopped_summary(config.recipe, run_dir, len(history))

    best = load_checkpoint(run_dir / "best.pt", map_location=device)
    model.load_state_dict(best["model"])
    pred = forecast(model, vx.to(device), mean, std).cpu()
    plot_curves(history, run_dir / "curves.png")
    plot_forecast(vy, pred, run_dir / "forecast.png")
    summary = {"recipe": config.recipe, "run_dir": str(run_dir), "dataset": source, "model": "series_rnn",
               **scores(pred, vx, vy), "windows": {"train": len(x), "valid": len(vx)},
               "window": config.window, "horizon": config.horizon, "train_seconds": round(train_seconds, 3),
               "epochs": len(history), "best_epoch": best["best"]["epoch"], "device": str(device),
               "dry_run": dry_run, **environment()}
    write_json(run_dir / "summary.json", summary)
    return summary


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """Reload ``best.pt`` and score the validation tail again (``data_path``: another CSV with the same column)."""
    device = resolve_device(device_name or "cpu")
    config, model, state = load_best(run_dir, "series", device)
    series, source = load_series(config, data_path)
    vx, vy = split_windows(series, config)["valid"]
    result = {"run_dir": str(run_dir), "recipe": config.recipe, "dataset": source,
              **scores(forecast(model, vx.to(device), state["mean"], state["std"]).cpu(), vx, vy)}
    summary_path = Path(run_dir) / "summary.json"
    if summary_path.is_file():
        result["summary_valid_mse"] = json.loads(summary_path.read_text(encoding="utf-8")).get("valid_mse")
    return result


def predict(run_dir: str | Path, inputs: Sequence[str], top_k: int = 3) -> list[dict]:
    """Series runs forecast their validation tail (``forecast.png``); single inputs are not supported."""
    raise ConfigError(f"predict: a series run ({run_dir}) has no per-input predictions; see its forecast.png "
                      "and `nnlab eval`")
