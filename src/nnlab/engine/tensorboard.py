"""TensorBoard event files for a run, written with torch's own ``SummaryWriter``.

``TensorBoardLog`` writes into the run directory itself, so ``tensorboard --logdir runs`` shows
every run side by side under its directory's name: each epoch's metrics under the keys of
``metrics.jsonl`` (``train_loss``, ``valid_acc``, ``seconds``, ...; step = epoch), the learning
rate of every parameter group at every step under the columns of ``lr.csv`` (``lr_0``, ...;
step = optimizer step), and the config as hparams (the HParams tab compares runs by setting).
A resumed run appends a new event file beside the first (TensorBoard reads them in order); a new
run removes the event files a killed start left in its directory.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from nnlab.engine.learner import Callback

# The metrics the HParams tab shows next to each run's settings.
HPARAM_METRICS = ("valid_acc", "valid_loss", "train_loss")


def hparam_values(config: dict[str, Any]) -> dict[str, int | float | str | bool]:
    """``config`` as TensorBoard hparams: nested keys flattened with dots, anything not a number, string
    or bool written as JSON text (tuples, None)."""
    out: dict[str, int | float | str | bool] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update({f"{key}.{k}": v for k, v in hparam_values(value).items()})
        elif isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = json.dumps(value)
    return out


def wait_for_a_later_second(log_dir: Path) -> None:
    """Sleep (under a second) until the clock is past the second the newest event file in ``log_dir`` was made.

    TensorBoard reads a folder's event files in name order, and a name is
    ``events.out.tfevents.<second>.<host>.<pid>.<writer count>``: a resumed run's file made in the
    same second as the last one could sort before it (count 10 before 9) and its epochs be read first.
    """
    seconds = [int(part) for part in (p.name.split(".")[3] for p in log_dir.glob("events.out.tfevents.*"))
               if part.isdigit()]
    if seconds:
        time.sleep(max(0.0, max(seconds) + 1 - time.time()))


class TensorBoardLog(Callback):
    """Writes the run's metrics, per-step learning rates and config as TensorBoard events into ``log_dir``."""

    order = 65  # after the metrics row is complete (MetricsLog is 60)

    def __init__(self, log_dir: str | Path, config: dict[str, Any]) -> None:
        self.log_dir = Path(log_dir)
        self.config = config
        self.writer: Any = None

    def before_fit(self) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams
        if not self.learner.history:  # a new run: events a killed start left here would be read as this run's
            for old in self.log_dir.glob("events.out.tfevents.*"):
                old.unlink()
        else:
            wait_for_a_later_second(self.log_dir)
        self.writer = SummaryWriter(str(self.log_dir))
        experiment, start, end = hparams(hparam_values(self.config), {name: 0.0 for name in HPARAM_METRICS})
        for summary in (experiment, start, end):
            self.writer.file_writer.add_summary(summary)

    def before_batch(self) -> None:
        step = self.learner.step
        for i, group in enumerate(self.learner.optimizer.param_groups):
            self.writer.add_scalar(f"lr_{i}", group["lr"], step)

    def after_epoch(self) -> None:
        metrics = self.learner.metrics
        for key, value in metrics.items():
            if key not in ("epoch", "lr") and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and not math.isnan(value):
                self.writer.add_scalar(key, value, metrics["epoch"])
        self.writer.flush()  # an interrupted run keeps every finished epoch

    def after_fit(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
