"""Callbacks shipped with the engine: progress display, metrics log, checkpoints, early stopping,
a time budget, the layer groups' learning rates, and fine-tuning's head-only phase."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TextIO

from tqdm.auto import tqdm

from nnlab.engine.checkpoint import save_checkpoint
from nnlab.engine.distributed import any_rank
from nnlab.engine.learner import Callback, CancelFitException
from nnlab.engine.optim import trainable_groups
from nnlab.files import atomic_write


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def in_notebook() -> bool:
    """True inside a Jupyter kernel, where ``tqdm.auto`` draws a widget instead of a text bar."""
    shell = sys.modules.get("IPython")
    ipython = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ipython is not None and "IPKernelApp" in getattr(ipython, "config", {})


NO_EPOCH_LIMIT = 100_000  # the epochs of a fit that a time budget ends (the progress lines show no total)


def _epoch_label(epoch: int, n_epochs: int) -> str:
    return f"epoch {epoch}" if n_epochs >= NO_EPOCH_LIMIT else f"epoch {epoch}/{n_epochs}"


class ProgressCallback(Callback):
    """A tqdm bar per epoch (loss, accuracy, images/s) on a terminal or in Jupyter (``tqdm.auto``
    picks the notebook widget) when ``stream`` is the terminal or the notebook's output; one plain
    line per epoch otherwise, so a log file gets one line an epoch, not a bar's redraws.

    The bar refreshes every ``every`` batches, because reading the loss is a host-device sync.
    """

    order = 50

    def __init__(self, stream: TextIO | None = None, every: int = 10) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.bar: tqdm | None = None

    def before_epoch(self) -> None:
        self.start = time.perf_counter()
        self.seen = 0
        self.correct = 0
        # a bar where someone watches it: a terminal, or the notebook's own output (a widget, or one text
        # line redrawn in place where ipywidgets is missing); a log file, even in a notebook, gets lines
        if self.stream.isatty() or (in_notebook() and self.stream in (sys.stdout, sys.stderr)):
            total = len(self.learner.train_batches) if hasattr(self.learner.train_batches, "__len__") else None
            self.bar = tqdm(total=total, desc=_epoch_label(self.learner.epoch + 1, self.learner.n_epochs),
                            file=self.stream, leave=False, dynamic_ncols=True)

    def after_batch(self) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if self.learner.batch_index % self.every == 0:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            done = (self.learner.batch_index + 1) * len(self.learner.y)
            logits, y = self.learner.logits, self.learner.y
            postfix = {"loss": f"{self.learner.loss.item():.3f}"}
            if logits.ndim == 2 and len(logits) == len(y) and not y.is_floating_point():  # a row of class scores a target
                postfix["acc"] = f"{(logits.argmax(1) == y).float().mean().item():.3f}"
            self.bar.set_postfix(**postfix, img_s=f"{done / elapsed:.0f}")

    def after_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        m = self.learner.metrics
        print(f"{_epoch_label(m['epoch'], self.learner.n_epochs)}  train_loss {_fmt(m['train_loss'])}  "
              f"train_acc {_fmt(m['train_acc'])}  valid_loss {_fmt(m['valid_loss'])}  "
              f"valid_acc {_fmt(m['valid_acc'])}  lr {m['lr']:.2e}  "
              f"{m['train_images_per_s']:.0f} img/s  {m['seconds']:.1f}s", file=self.stream, flush=True)


class EpochLines(ProgressCallback):
    """The progress line of every ``every``-th epoch and the last: for runs of many short epochs (tabular, series)."""

    def __init__(self, stream: TextIO | None, every: int) -> None:
        super().__init__(stream)
        self.every_epoch = every

    def after_epoch(self) -> None:
        epoch = self.learner.metrics["epoch"]
        if epoch % self.every_epoch == 0 or epoch == self.learner.n_epochs:
            super().after_epoch()
        elif self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsLog(Callback):
    """Appends each epoch's metrics row to ``metrics.jsonl`` (one JSON object per line)."""

    order = 60

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def after_epoch(self) -> None:
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.learner.metrics.items()}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()


class CheckpointCallback(Callback):
    """Saves ``last.pt`` after every epoch and ``best.pt`` whenever ``monitor`` improves.

    ``state_fn`` returns the dict to save (model, optimizer, config, ...); this callback adds
    the epoch, step and best score. Writes are atomic, so an interruption never corrupts a
    previous checkpoint, and ``best.pt`` is written before ``last.pt``: the pair is consistent
    wherever a kill lands (``last.pt`` never names a best epoch that ``best.pt`` does not hold;
    a ``best.pt`` newer than ``last.pt`` is written again, identically, by the resumed epoch).
    """

    order = 70

    def __init__(self, run_dir: str | Path, state_fn: Callable[[], dict[str, Any]],
                 monitor: str = "valid_acc", mode: str = "max") -> None:
        self.run_dir = Path(run_dir)
        self.state_fn = state_fn
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.best: float | None = None
        self.best_epoch: int | None = None

    def _score(self) -> float | None:
        value = self.learner.metrics.get(self.monitor)
        if value is None:  # no validation split: fall back to the training metric
            value = self.learner.metrics.get(self.monitor.replace("valid_", "train_"))
        return value

    def after_epoch(self) -> None:
        score = self._score()
        improved = score is not None and (self.best is None or self.sign * score > self.sign * self.best)
        if improved:
            self.best, self.best_epoch = score, self.learner.metrics["epoch"]
        state = self.state_fn()
        state.update(epoch=self.learner.metrics["epoch"], step=self.learner.step,
                     best={"monitor": self.monitor, "score": self.best, "epoch": self.best_epoch})
        if improved:
            save_checkpoint(self.run_dir / "best.pt", state)
        save_checkpoint(self.run_dir / "last.pt", state)


class EarlyStopping(Callback):
    """Stops training when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    order = 80

    def __init__(self, patience: int, monitor: str = "valid_loss", mode: str = "min", min_delta: float = 0.0) -> None:
        self.patience = patience
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.min_delta = min_delta
        self.best: float | None = None
        self.waited = 0

    def after_epoch(self) -> None:
        value = self.learner.metrics.get(self.monitor)
        if value is None:
            return
        if self.best is None or self.sign * (value - self.best) > self.min_delta:
            self.best, self.waited = value, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            raise CancelFitException()

    def replay(self, history: list[dict[str, Any]]) -> None:
        """Rebuild the state from the epochs a resumed run already did (stops nothing)."""
        for row in history:
            value = row.get(self.monitor)
            if value is None:
                continue
            if self.best is None or self.sign * (value - self.best) > self.min_delta:
                self.best, self.waited = value, 0
            else:
                self.waited += 1


def monitor_mode(monitor: str) -> str:
    """``min`` for a loss, ``max`` for an accuracy: the direction in which ``monitor`` improves."""
    return "min" if monitor.endswith("loss") else "max"


class StopAfterEpochs(Callback):
    """Ends the run after ``epochs`` epochs, after the checkpoint: exactly as an interruption would.

    ``None`` never ends it, so a runner can always attach one and ask ``cut_short`` afterwards.
    """

    order = 90

    def __init__(self, epochs: int | None) -> None:
        self.epochs = epochs
        self.fired = False

    def after_epoch(self) -> None:
        if self.epochs is not None and self.learner.metrics["epoch"] >= self.epochs:
            self.fired = True
            raise CancelFitException()

    def cut_short(self, history: list, epochs: int) -> bool:
        """True when this callback ended a run of ``epochs`` epochs before its end (resumable, not scored)."""
        return self.fired and len(history) < epochs


class LRLog(Callback):
    """Appends the learning rate of every parameter group used at every step to ``lr.csv``.

    Rows are written once per epoch (no file I/O per step); a resumed run keeps the rows of the
    steps before ``start_step`` and continues them.
    """

    order = 60

    def __init__(self, path: str | Path, start_step: int = 0) -> None:
        self.path = Path(path)
        self.rows: list[str] = []
        lines = self.path.read_text(encoding="utf-8").splitlines() if start_step and self.path.is_file() else []
        self.header: str | None = lines[0] if lines else None
        kept = [line for line in lines[1:] if line.split(",")[0].isdigit() and int(line.split(",")[0]) < start_step]
        text = "".join(line + "\n" for line in ([self.header] if self.header else []) + kept).encode("utf-8")
        atomic_write(self.path, text)

    def before_batch(self) -> None:
        lrs = ",".join(f"{group['lr']:.8g}" for group in self.learner.optimizer.param_groups)
        self.rows.append(f"{self.learner.step},{lrs}")

    def after_epoch(self) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            if self.header is None:
                n = len(self.learner.optimizer.param_groups)
                self.header = "step," + ",".join(f"lr_{i}" for i in range(n))
                handle.write(self.header + "\n")
            handle.write("".join(row + "\n" for row in self.rows))
        self.rows = []


class SnapshotCallback(Callback):
    """Saves ``snapshots/cycle-K.pt`` when the optimizer step reaches the end of cycle K (SGDR)."""

    order = 75

    def __init__(self, run_dir: str | Path, state_fn: Callable[[], dict[str, Any]], boundaries: list[int]) -> None:
        self.dir = Path(run_dir) / "snapshots"
        self.state_fn = state_fn
        self.boundaries = list(boundaries)

    def after_step(self) -> None:
        if self.learner.step in self.boundaries:
            cycle = self.boundaries.index(self.learner.step) + 1
            state = self.state_fn()
            state.update(step=self.learner.step, cycle=cycle)
            save_checkpoint(self.dir / f"cycle-{cycle}.pt", state)


class LayerGroupLog(Callback):
    """Adds to each epoch's metrics row the layer groups that trained (``trainable``) and the
    highest learning rate each group of the optimizer used in the epoch (``group_lr``).

    Shows discriminative rates, frozen groups (absent from ``trainable``) and a fine-tune
    run's head-only phase (``body`` at 0) in ``metrics.jsonl``.
    """

    order = 55

    def before_epoch(self) -> None:
        self.peaks: dict[str, float] = {}

    def before_batch(self) -> None:
        for group in self.learner.optimizer.param_groups:
            name = group.get("name", "all")
            self.peaks[name] = max(self.peaks.get(name, 0.0), group["lr"])

    def after_train(self) -> None:
        self.learner.metrics["trainable"] = trainable_groups(self.learner.raw_model)
        self.learner.metrics["group_lr"] = dict(self.peaks)


class FineTune(Callback):
    """fastai's ``fine_tune`` phases: the first ``freeze_epochs`` epochs train only the optimizer's
    parameter groups named ``head``, later epochs every parameter the optimizer holds.

    The other groups stop requiring gradients, so backward stops at the head and the optimizer
    skips them (no update, no weight decay); batch-norm statistics still follow the new data.
    The phase comes from the epoch number, so a resumed run picks the right one. Pair it with
    the ``fine-tune`` schedule, which gives the frozen groups a zero learning rate.
    """

    order = 5

    def __init__(self, freeze_epochs: int) -> None:
        self.freeze_epochs = freeze_epochs

    def before_epoch(self) -> None:
        head_only = self.learner.epoch < self.freeze_epochs
        for group in self.learner.optimizer.param_groups:
            for param in group["params"]:
                param.requires_grad_(not head_only or group.get("name") == "head")


class TimeBudget(Callback):
    """Ends training before ``seconds`` of wall time have passed, with the last epoch validated and saved.

    ``wrap(batches)`` stops yielding batches once the time used plus one validation pass (as
    long as the last one took) reaches the budget, so the epoch ends normally (validation,
    metrics, checkpoints) and ``after_epoch`` then stops the fit. ``progress`` (the share of
    the budget used) is the clock a schedule can run on (``create_scheduler(clock=...)``):
    the budget measures progress, the scheduler alone sets the learning rate (and the one-cycle's
    momentum), on the same curve as a run of counted epochs. ``spent`` starts
    the clock at the seconds an interrupted run had already used.
    """

    order = 90  # after the checkpoint (70): the final epoch is saved before the fit stops

    def __init__(self, seconds: float, spent: float = 0.0) -> None:
        self.seconds = seconds
        self.spent = spent  # seconds of the budget used before this process (a resumed run)
        self.start = time.perf_counter()
        self.valid_seconds = 0.0
        self.out_of_time = False

    def elapsed(self) -> float:
        """Seconds of the budget used so far, those of the interrupted part of a resumed run included."""
        return self.spent + time.perf_counter() - self.start

    def progress(self) -> float:
        """The share of the budget used, in [0, 1]."""
        return min(self.elapsed() / self.seconds, 1.0)

    def wrap(self, batches: Iterable) -> "BudgetedBatches":
        return BudgetedBatches(batches, self)

    def check(self) -> bool:
        """True (and remembered) once no time is left for another batch and a validation.

        Under DDP the ranks vote (every rank calls this at the same batch), so all of them stop
        at the same batch: one that stopped alone would leave the others waiting in a collective."""
        self.out_of_time = self.out_of_time or any_rank(self.elapsed() + self.valid_seconds >= self.seconds)
        return self.out_of_time

    def before_fit(self) -> None:
        self.start = time.perf_counter()

    def after_train(self) -> None:
        self.valid_start = time.perf_counter()

    def after_validate(self) -> None:
        self.valid_seconds = time.perf_counter() - self.valid_start

    def after_epoch(self) -> None:
        if self.check():
            raise CancelFitException()


class BudgetedBatches:
    """``batches``, ending early once ``budget`` says time is up (``generator`` and length kept)."""

    def __init__(self, batches: Any, budget: TimeBudget) -> None:
        self.batches = batches
        self.budget = budget
        self.generator = getattr(batches, "generator", None)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            if self.budget.check():
                return
            yield batch
