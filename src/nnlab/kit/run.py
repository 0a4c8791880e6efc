"""Start, train and finish a run: the one place a ``Learner`` is built.

``start_run`` turns a config (or an interrupted run's directory) into a ``RunStart``: the
config, device, run directory and the checkpoint to continue from. A kind then builds its
data and model and hands them over as a ``Spec``; ``train_model`` builds the optimizer, the
schedule and the standard callbacks (progress, metrics log, LR log, best/last checkpoints with
the resume state, SGDR snapshots, fine-tuning, early stopping, time budget, stop-after-N),
restores an interrupted run exactly, fits, and reloads the best epoch. ``summarize`` writes
``summary.json`` with what every run reports (timing, best epoch, device, environment).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TextIO

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nnlab.config import RunConfig, apply_overrides, load_config, save_config
from nnlab.engine.callbacks import (NO_EPOCH_LIMIT, CheckpointCallback, EarlyStopping, FineTune, LayerGroupLog, LRLog,
                                    MetricsLog, ProgressCallback, SnapshotCallback, StopAfterEpochs, TimeBudget,
                                    monitor_mode)
from nnlab.engine.checkpoint import load_checkpoint, restore_rng, rng_state
from nnlab.engine.distributed import (broadcast_from_main, init_from_env, is_main, launched_rank, launched_world_size,
                                      local_device, rank, shutdown, world_size)
from nnlab.engine.ema import WeightEMA, resume_weights
from nnlab.engine.learner import Callback, Learner, count_correct, resolve_device
from nnlab.engine.optim import create_optimizer
from nnlab.engine.schedules import create_scheduler, sgdr_boundaries
from nnlab.errors import CheckpointError, ConfigError
from nnlab.inspection.plots import plot_confusion, plot_curves, plot_lr_csv
from nnlab.kit.kind import Kind
from nnlab.kit.rundir import (RunLock, environment, new_run_dir, read_rows, remove_orphans, remove_run_files,
                              write_jsonl)

# What a checkpoint needs to continue a run exactly.
RESUME_KEYS = ("model", "optimizer", "scheduler", "rng", "epoch", "step", "best")


@dataclass
class RunStart:
    """Where a run starts: its config, device and directory (``None``: kept in memory), and the
    checkpoint it continues from (``None`` for a new run). ``joined``: this process joined a torchrun
    job's process group for the run (``start_run``) and leaves it when the run closes."""

    config: RunConfig
    device: torch.device
    run_dir: Path | None
    checkpoint: dict[str, Any] | None = None
    lock: RunLock | None = None
    clock: float = field(default_factory=time.perf_counter)  # when it started: its load_seconds count from here
    joined: bool = False

    @property
    def start_epoch(self) -> int:
        return self.checkpoint["epoch"] if self.checkpoint is not None else 0

    def open(self) -> Path | None:
        """Create the run directory, lock it (one writer at a time), clear what a killed start left
        (temp files; a new run's leftover rows) and write ``config.json``: rank 0 of a torchrun
        job, once the kind has read its data, so a run that fails on bad input leaves nothing."""
        if self.run_dir is None or launched_rank() != 0 or self.lock is not None:
            return self.run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lock = RunLock(self.run_dir)
        remove_orphans(self.run_dir)
        if self.checkpoint is None:  # a new run: what a start killed before its first checkpoint (or a run
            remove_run_files(self.run_dir)  # that --force replaces) left would be read as this run's
        save_config(self.config, self.run_dir / "config.json")
        return self.run_dir

    def close(self, finished: bool = False) -> None:
        """Release the run directory's lock, and leave the process group the run joined (``finished``:
        once every rank has finished; after an error, at once, since the others may never get there)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.joined:
            shutdown(wait=finished)
            self.joined = False

    def __enter__(self) -> "RunStart":
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self.close(finished=kind is None)


def interrupted_run(run_dir: str | Path, overrides: dict[str, Any] | None,
                    kind: Kind) -> tuple[RunConfig, dict[str, Any]]:
    """The config (``overrides`` applied, ``stop_after_epochs`` cleared) and ``last.pt`` of the
    interrupted run of ``kind`` in ``run_dir``; a finished run, a kind that cannot resume, or a run
    that never finished an epoch is refused, naming the directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"--resume {run_dir}: not an interrupted run (no usable config.json)")
    base = load_config(run_dir / "config.json")
    if not kind.supports("resume"):
        raise ConfigError(f"--resume {run_dir}: a {kind.what} trains in seconds and cannot be resumed; "
                          "start a new run")
    if (run_dir / "summary.json").exists():
        raise ConfigError(f"--resume {run_dir}: this run already finished (summary.json exists)")
    if not (run_dir / "last.pt").is_file():
        raise CheckpointError(f"--resume {run_dir}: no last.pt (stopped before its first epoch ended); "
                              "start a new run")
    config = apply_overrides(dataclasses.replace(base, stop_after_epochs=None), overrides or {})
    return config, resume_state(run_dir / "last.pt")


def resume_state(path: Path) -> dict[str, Any]:
    """The checkpoint ``path`` if it holds what continuing a run needs (``RESUME_KEYS``); else a
    ``CheckpointError`` naming the file and what it lacks (a file of weights alone, say)."""
    checkpoint = load_checkpoint(path)
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"--resume: {path} lacks {', '.join(missing)}, the training state a resume "
                              "continues from (a file of weights alone cannot be resumed); start a new run")
    return checkpoint


def start_run(config: RunConfig | None, out: str | Path | None = None, overrides: dict[str, Any] | None = None,
              resume: str | Path | None = None, force: bool = False, kind: Kind | None = None) -> RunStart:
    """A new run of ``config`` in ``out`` (default ``runs/RECIPE-<timestamp>``), or the interrupted
    run ``resume`` (``overrides`` applied to its config); torch's threads are set from the config.
    ``force``: ``out`` may hold a run (replaced) or other files (see ``new_run_dir``).
    The directory is created (and the config saved) by ``RunStart.open``, which ``train_model`` calls.
    ``kind`` (the run's ``Kind``) says whether ``resume`` can be continued.

    Under torchrun (``nnlab train --nproc N``) the process joins the job's process group here, for a
    kind that declares ``ddp`` (any other is refused: each process would train its own copy into one
    directory); ``RunStart.close`` leaves it. The other ranks keep no run directory of a new run:
    rank 0 alone writes it."""
    checkpoint = None
    main = launched_rank() == 0
    if launched_world_size() > 1 and (kind is None or not kind.supports("ddp")):
        what = f"a {kind.what}" if kind is not None else "this run"
        raise ConfigError(f"torchrun: {what} cannot be split over processes (its kind declares no 'ddp'); "
                          "run it in one process (`nnlab train --nproc` names the kinds that can)")
    if resume is not None:
        if kind is None:
            raise ConfigError(f"--resume {resume}: the kind of the run is needed to continue it")
        config, checkpoint = interrupted_run(resume, overrides, kind)
        run_dir = Path(resume)
    else:
        if config is None:
            raise ConfigError("train: give a recipe name (see `nnlab recipes`) or --resume RUN_DIR")
        run_dir = new_run_dir(config.recipe or config.kind, out, create=False, force=force) if main else None
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    joined = launched_world_size() > 1 and world_size() == 1 and init_from_env(device)  # not a group of the caller's
    return RunStart(config, local_device(device), run_dir, checkpoint, joined=joined)


@dataclass
class Spec:
    """What a kind hands the kit to train: the model and its data, the loss, and what the
    checkpoints must hold besides the training state (``saved``: the kind's model name and
    arguments, classes, vocabulary... as plain data, so a weights-only load rebuilds the model).

    ``module`` is what the Learner runs when it is not ``model`` itself (a wrapper such as
    ``TruncatedBPTT``; checkpoints hold ``model``'s weights). ``generator`` draws the training
    data's order (saved and restored with a run). ``dropout_seed``: train under a forked RNG
    seeded so (the caller's global RNG untouched); ``None`` uses the global one.
    """

    model: nn.Module
    train: Iterable
    valid: Iterable | None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    saved: dict[str, Any] = field(default_factory=dict)
    metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = count_correct
    module: nn.Module | None = None
    generator: torch.Generator | None = None
    epochs: int | None = None               # default: the config's
    dry_run: bool = False
    progress: Callback | None = None        # replaces the standard progress display
    callbacks: list[Callback] = field(default_factory=list)
    dropout_seed: int | None = None
    channels_last: bool = False
    ema: float = 0.0                        # decay of the weights' moving average (0: none); checkpoints hold it


@dataclass
class Trained:
    """A finished (or stopped) fit: the model at its best epoch, the learner, the history, the best
    checkpoint (``None`` for a run kept in memory), the training time and whether
    ``stop_after_epochs`` cut it short (resumable, not scored)."""

    model: nn.Module
    learner: Learner
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    train_seconds: float
    stopped: bool
    epochs: int
    freeze_epochs: int = 0
    fit_started: float = math.nan   # perf_counter before the first training batch
    fit_ended: float = math.nan     # ... and once the final weights are in the model
    main: bool = True               # False on the other ranks of a torchrun job: rank 0 scores and writes

    def timing(self) -> dict[str, Any]:
        """What every summary says of the training: seconds, epochs, the best epoch and its score."""
        out: dict[str, Any] = {"train_seconds": round(self.train_seconds, 3), "epochs": len(self.history),
                               "steps": self.learner.step}
        if self.best is not None:
            best = self.best["best"]
            out.update(best_epoch=best["epoch"], monitor=best["monitor"], **{f"best_{best['monitor']}": best["score"]})
        return out


def restore(start: RunStart, checkpoint: dict[str, Any], spec: Spec, learner: Learner, generator: torch.Generator,
            saver: CheckpointCallback | None) -> None:
    """Put ``spec.model``, ``learner`` (optimizer, schedule, step, finished epochs' rows) and the random
    states (``generator``'s data order, torch's dropout) back where ``checkpoint`` (``resume_state``) left them."""
    check_pair(start.run_dir, checkpoint)
    try:
        spec.model.load_state_dict(checkpoint["model"])
        learner.optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{start.run_dir / 'last.pt'}: does not fit this run's model or optimizer: "
                              f"{str(error).splitlines()[0]}") from None
    if learner.scheduler is not None and checkpoint["scheduler"] is not None:
        learner.scheduler.load_state_dict(checkpoint["scheduler"])
    learner.step = checkpoint["step"]
    restore_rng(checkpoint["rng"], generator)
    learner.history = read_rows(start.run_dir / "metrics.jsonl", start.start_epoch)
    if is_main():  # a torn line or rows written after the checkpoint go
        write_jsonl(start.run_dir / "metrics.jsonl", learner.history)
    if saver is not None:
        saver.best, saver.best_epoch = checkpoint["best"]["score"], checkpoint["best"]["epoch"]


def check_pair(run_dir: Path, checkpoint: dict[str, Any]) -> None:
    """A ``CheckpointError`` unless ``best.pt`` holds the best epoch ``last.pt`` records (or a later
    one, written just before a kill, which the resumed epoch writes again identically)."""
    best_epoch = checkpoint["best"]["epoch"]
    if best_epoch is None:
        return
    path = run_dir / "best.pt"
    held = load_checkpoint(path).get("epoch") if path.is_file() else None
    if held is None or held < best_epoch:
        raise CheckpointError(f"{path}: holds epoch {held}, but last.pt records epoch {best_epoch} as the best; "
                              "the pair is inconsistent (start a new run)")


class FirstBatches:
    """The first ``count`` batches of each pass over ``batches`` (``--set limit_train_batches=SHARE``): each
    epoch draws its order as usual and trains on the start of it; ``generator`` is kept for checkpoints."""

    def __init__(self, batches: Any, count: int) -> None:
        self.batches, self.count = batches, count
        self.generator = getattr(batches, "generator", None)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.batches), self.count)


def plot_run_confusion(start: RunStart, confusion: list[list[int]], classes: list[str]) -> None:
    """``RUN/confusion.png`` of a classifier's test confusion matrix, unless the run's ``plots`` is off
    (or this is not rank 0 of a torchrun job)."""
    if start.config.plots and start.run_dir is not None and is_main():
        plot_confusion(torch.tensor(confusion), classes, start.run_dir / "confusion.png")


def shard(batches: Any) -> Any:
    """This rank's share of ``batches`` under torchrun (``batches.shard(rank, world_size)``: a disjoint
    part of every epoch, the same number of batches on every rank, the global batch kept), else
    ``batches``. Training data that cannot be split is a ``ConfigError``: a kind that declares
    ``ddp`` trains on a batcher with ``shard``."""
    if world_size() == 1:
        return batches
    if not callable(getattr(batches, "shard", None)):
        raise ConfigError(f"--nproc: the training batches ({type(batches).__name__}) cannot be split over "
                          "processes; train in one process")
    return batches.shard(rank(), world_size())


class SameValidation(Callback):
    """Under torchrun every rank validates the whole validation split; this gives every rank rank 0's
    scores, so that what is decided on them (early stopping, the best epoch) is decided alike
    everywhere: a rank that stopped alone would leave the others waiting in their next all-reduce.
    One broadcast per epoch; nothing in a world of one."""

    def after_validate(self) -> None:
        metrics = self.learner.metrics
        keys = [key for key in ("valid_loss", "valid_acc") if metrics.get(key) is not None]
        metrics.update(zip(keys, broadcast_from_main([metrics[key] for key in keys])))


class BatchTrace(Callback):
    """Keeps the first epoch's training batches ``(x, y)`` as this rank saw them and saves them to
    ``<prefix>-rank<R>.pt`` (``$NNLAB_TRACE_BATCHES=PREFIX``, outside the run directory): how a test
    sees that the ranks of a torchrun job trained on disjoint shares of the data."""

    def __init__(self, prefix: str) -> None:
        self.path, self.batches = Path(f"{prefix}-rank{rank()}.pt"), []

    def before_batch(self) -> None:
        if self.learner.epoch == 0:
            self.batches.append((self.learner.x.detach().cpu(), self.learner.y.detach().cpu()))

    def after_fit(self) -> None:
        torch.save(self.batches, self.path)


def check_batch_size(batches: Any, batch_size: int) -> None:
    """A ``ConfigError`` naming ``--batch-size`` when a batch is larger than the training split (its
    batcher's ``samples``, where it says) or an epoch has no step at all (batches that drop an
    incomplete last batch): such a run would train full-batch, or not at all, without saying so."""
    samples, size = getattr(batches, "samples", None), getattr(batches, "batch_size", None)
    if samples is not None and size is not None and size > samples:
        most = batch_size * samples // size  # as --batch-size counts (the global batch under torchrun)
        raise ConfigError(f"--batch-size {batch_size}: larger than the training split ({samples * world_size()} "
                          f"samples); give at most {most}")
    if len(batches) == 0:
        raise ConfigError(f"--batch-size {batch_size}: larger than the training split, so an epoch has no step; "
                          "lower it")


def train_model(start: RunStart, spec: Spec, stream: TextIO | None = None) -> Trained:
    """Fit ``spec.model`` as ``start.config`` says, into ``start.run_dir``; the model ends at its best epoch.

    Only rank 0 of a torchrun job prints and writes files; with several processes the model is
    wrapped in ``DistributedDataParallel`` (gradients averaged during backward).
    """
    config, checkpoint = start.config, start.checkpoint
    sharded = shard(spec.train)
    check_batch_size(sharded, config.batch_size)
    run_dir = start.open()
    stream = stream if stream is not None else sys.stderr
    writes = run_dir is not None and is_main()
    epochs = spec.epochs or config.epochs
    fine_tune = config.schedule == "fine-tune"
    if fine_tune and world_size() > 1:  # DDP reduces a fixed set of gradients; fine-tune changes it
        raise ConfigError("--schedule fine-tune trains in one process; drop --nproc")
    budget = None
    train_batches = sharded
    if config.limit_train_batches < 1.0:
        train_batches = FirstBatches(train_batches, math.ceil(len(sharded) * config.limit_train_batches))
    if config.time_budget is not None and not spec.dry_run:
        budget = TimeBudget(config.time_budget, spent=(checkpoint or {}).get("budget_spent") or 0.0)
        train_batches = budget.wrap(train_batches)
        epochs = NO_EPOCH_LIMIT  # the budget ends the run
    optimizer = create_optimizer(config.optimizer, spec.model, config.lr, config.weight_decay, config.momentum,
                                 config.lr_mult, split=fine_tune, args=config.optimizer_args)
    # fine-tune: epochs that train the head alone (a dry run's single epoch is one of them)
    freeze_epochs = (min(config.freeze_epochs, epochs) if spec.dry_run else config.freeze_epochs) if fine_tune else 0
    steps_per_epoch = len(train_batches)
    total_steps = epochs * steps_per_epoch
    scheduler = create_scheduler(config.schedule, optimizer, [group["lr"] for group in optimizer.param_groups],
                                 total_steps, config.pct_start, cycles=config.cycles, cycle_mult=config.cycle_mult,
                                 steps_per_epoch=steps_per_epoch, step_every=config.step_every, gamma=config.gamma,
                                 freeze_steps=freeze_epochs * steps_per_epoch,
                                 clock=budget.progress if budget is not None else None)
    generator = spec.generator if spec.generator is not None else torch.Generator()
    ema = WeightEMA(spec.model, spec.ema) if spec.ema else None  # validated and saved as the model

    def state() -> dict[str, Any]:
        return {"model": spec.model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng_state(generator),
                "budget_spent": budget.elapsed() if budget is not None else None,
                "config": dataclasses.asdict(config), "kind": config.kind, **spec.saved,
                **(ema.state() if ema is not None else {})}

    mode = monitor_mode(config.monitor)
    callbacks: list[Callback] = [LayerGroupLog(), *spec.callbacks, *([ema] if ema is not None else [])]
    if world_size() > 1:
        callbacks.append(SameValidation())
    if os.environ.get("NNLAB_TRACE_BATCHES"):
        callbacks.append(BatchTrace(os.environ["NNLAB_TRACE_BATCHES"]))
    saver = None
    if writes:
        saver = CheckpointCallback(run_dir, state, monitor=config.monitor, mode=mode)
        callbacks += [spec.progress or ProgressCallback(stream), MetricsLog(run_dir / "metrics.jsonl"), saver,
                      LRLog(run_dir / "lr.csv", checkpoint["step"] if checkpoint else 0)]
        if config.tensorboard:  # event files beside metrics.jsonl: `tensorboard --logdir runs`
            from nnlab.engine.tensorboard import TensorBoardLog
            callbacks.append(TensorBoardLog(run_dir, dataclasses.asdict(config)))
        if config.schedule == "sgdr":
            callbacks.append(SnapshotCallback(run_dir, state, sgdr_boundaries(total_steps, config.cycles,
                                                                              config.cycle_mult)))
    if fine_tune:
        callbacks.append(FineTune(freeze_epochs))
    stopper = EarlyStopping(config.patience, monitor=config.monitor, mode=mode) if config.patience else None
    interrupt = StopAfterEpochs(config.stop_after_epochs)
    callbacks += [cb for cb in (stopper, budget, interrupt) if cb is not None]
    learner = build_learner(config, spec, start.device, optimizer, scheduler, callbacks, train_batches)
    forked = torch.random.fork_rng(devices=[]) if spec.dropout_seed is not None else contextlib.nullcontext()
    with forked:
        if spec.dropout_seed is not None:
            torch.manual_seed(spec.dropout_seed)  # dropout masks, without touching the caller's global RNG
        if checkpoint is not None:  # a resumed run: exactly where it stopped
            restore(start, checkpoint, spec, learner, generator, saver)
            resume_weights(spec.model, checkpoint, ema)
            if stopper is not None:
                stopper.replay(learner.history)
        if budget is not None and budget.check():  # the interrupted run had used its whole budget
            epochs = start.start_epoch
        fit_started = time.perf_counter()
        history = learner.fit(epochs, start_epoch=start.start_epoch)
    train_seconds = sum(row["seconds"] for row in history)
    stopped = interrupt.cut_short(history, epochs)
    best = None
    if writes and not stopped:
        best = load_checkpoint(run_dir / "best.pt", map_location=start.device)
        spec.model.load_state_dict(best["model"])  # early stopping and last epochs: the best weights win
    fit_ended = time.perf_counter()
    if best is not None and config.plots:
        plot_curves(history, run_dir / "curves.png")
        plot_lr_csv(run_dir / "lr.csv", run_dir / "lr.png")
    return Trained(spec.model, learner, history, best, train_seconds, stopped, epochs, freeze_epochs, fit_started,
                   fit_ended, main=is_main())


def build_learner(config: RunConfig, spec: Spec, device: torch.device, optimizer: torch.optim.Optimizer,
                  scheduler: Any = None, callbacks: Iterable[Callback] = (), train: Iterable | None = None) -> Learner:
    """The ``Learner`` of ``spec`` (on ``train`` instead of ``spec.train`` where given), wrapped in
    ``DistributedDataParallel`` under torchrun: the only place nnlab builds one."""
    compile_model = getattr(config, "compile", False)
    learner = Learner(spec.module or spec.model, spec.train if train is None else train, spec.valid,
                      loss_fn=spec.loss, optimizer=optimizer, scheduler=scheduler, callbacks=list(callbacks),
                      device=device, precision=config.precision, clip=config.clip,
                      channels_last=spec.channels_last, metric=spec.metric, compile=compile_model)
    if world_size() > 1:  # gradients averaged over ranks during backward
        device_ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(learner.raw_model, device_ids=device_ids)
        learner.model = torch.compile(ddp) if compile_model else ddp
    return learner


def find_lr(config: RunConfig, spec: Spec, device: torch.device, out: Path, about: dict[str, Any],
            steps: int = 200, start_lr: float = 1e-7, end_lr: float = 10.0) -> dict[str, Any]:
    """Sweep the learning rate of ``spec``'s model exponentially (model and optimizer put back after),
    draw ``out/lr_find.png``, write ``out/lr_find.json``; returns ``about`` with the suggestions."""
    from nnlab.engine.lr_finder import lr_find as sweep
    from nnlab.inspection.plots import plot_lr_find
    from nnlab.kit.rundir import write_json
    out.mkdir(parents=True, exist_ok=True)
    optimizer = create_optimizer(config.optimizer, spec.model, config.lr, config.weight_decay, config.momentum,
                                 args=config.optimizer_args)
    learner = build_learner(config, dataclasses.replace(spec, valid=None), device, optimizer)
    result = sweep(learner, start_lr=start_lr, end_lr=end_lr, steps=steps)
    marks = {"steepest": result.steepest_lr, "min/10": result.min_over_10_lr}
    plot_lr_find(result.lrs, result.smoothed, marks, out / "lr_find.png")
    found = {**about, "suggested_lr": result.suggested_lr, "steepest_lr": result.steepest_lr,
             "min_over_10_lr": result.min_over_10_lr, "steps": len(result.lrs), "run_dir": str(out),
             "plot": str(out / "lr_find.png")}
    write_json(out / "lr_find.json", {**found, "lrs": result.lrs, "losses": result.losses,
                                       "smoothed": result.smoothed})
    return found


def other_rank(start: RunStart, trained: Trained) -> dict[str, Any]:
    """What a rank other than 0 of a torchrun job returns once training ends (``not trained.main``):
    rank 0 scores the run and writes its directory; the CLI prints rank 0's summary alone."""
    return {"recipe": start.config.recipe, "kind": start.config.kind, "rank": rank(), "epochs": len(trained.history),
            "steps": trained.learner.step}


def stopped_summary(start: RunStart, trained: Trained) -> dict[str, Any]:
    """What a run ended by ``stop_after_epochs`` returns instead of scores."""
    return {"recipe": start.config.recipe, "run_dir": str(start.run_dir), "stopped_after_epochs": len(trained.history),
            "resume": f"nnlab train --resume {start.run_dir}"}


def summarize(start: RunStart, trained: Trained, result: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    """Write ``summary.json``: the kind's ``result`` (scores, data description) with what every run
    reports (recipe, kind, timing, best epoch, device, precision, environment); returns it.

    Besides ``train_seconds`` (the epochs: first training batch to the final weights, validation
    included), the timing has ``load_seconds`` (the run's start to its first training batch: reading
    the data, building the model) and ``scoring_seconds`` (the final weights to this summary: the test
    pass and what the kind reports), so a time-to-accuracy can count training alone."""
    from nnlab.kit.rundir import write_json
    config = start.config
    summary = {"recipe": config.recipe, "kind": config.kind, "run_dir": str(start.run_dir), **result,
               **trained.timing(), "load_seconds": round(trained.fit_started - start.clock, 3),
               "scoring_seconds": round(time.perf_counter() - trained.fit_ended, 3), "device": str(start.device),
               "precision": trained.learner.precision,
               "dry_run": dry_run, **environment()}
    if start.run_dir is not None and is_main():
        write_json(start.run_dir / "summary.json", summary)
    return summary
