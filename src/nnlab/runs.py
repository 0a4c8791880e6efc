"""A run is a directory: train a recipe into one, evaluate it again, predict with it.

``train`` resolves the recipe's config, fits a Learner with the standard callbacks and
writes ``config.json``, ``metrics.jsonl``, ``best.pt``/``last.pt``, ``curves.png``,
``confusion.png`` and ``summary.json``. ``evaluate`` and ``predict`` rebuild the model from
``config.json`` and the best checkpoint (weights only, never pickled code).
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np
import torch
import torchvision
from torch.nn.parallel import DistributedDataParallel

from nnlab import __version__
from nnlab.config import TrainConfig, apply_overrides, load_config, save_config
from nnlab.data.batches import TensorBatches, make_augment, stratified_split
from nnlab.data.images import load_image
from nnlab.data.vision import ImageDataset, load_image_dataset
from nnlab.engine.callbacks import (CheckpointCallback, EarlyStopping, FineTune, LayerGroupLog, LRLog, MetricsLog,
                                    ProgressCallback, SnapshotCallback, StopAfterEpochs, monitor_mode)
from nnlab.engine.checkpoint import atomic_write_bytes, load_checkpoint, restore_rng, rng_state
from nnlab.engine.distributed import init_from_env, is_main, local_device, rank, shutdown, world_size
from nnlab.engine.lr_finder import lr_find as find_lr
from nnlab.engine.learner import Learner, predict_probs, resolve_device, resolve_precision
from nnlab.engine.metrics import confusion_matrix, most_confused, per_class_report
from nnlab.engine.optim import create_optimizer, freeze
from nnlab.engine.schedules import create_scheduler, sgdr_boundaries
from nnlab.errors import CheckpointError, ConfigError
from nnlab.interpret.plots import plot_confusion, plot_curves, plot_lr_csv, plot_lr_find
from nnlab.models import create_model
from nnlab.recipes import get_recipe


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    data = (json.dumps(obj, indent=2) + "\n").encode("utf-8")
    return atomic_write_bytes(path, lambda handle: handle.write(data))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines atomically."""
    data = "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")
    return atomic_write_bytes(path, lambda handle: handle.write(data))


def environment() -> dict[str, Any]:
    """Library versions and hardware, recorded in every summary so numbers can be compared."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "versions": {"nnlab": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": np.__version__},
        "hardware": {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                     "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
    }


def build_model(config: TrainConfig, n_classes: int) -> torch.nn.Module:
    """The recipe's model with ``n_classes`` outputs."""
    return create_model(config.model, n_classes=n_classes, **config.model_args)


def rebuild_args(model_args: dict[str, Any]) -> dict[str, Any]:
    """``model_args`` that rebuild a trained model: without ``pretrained``, since the checkpoint holds
    every weight (loading ImageNet weights again would be wasted work, or fail where the file is gone)."""
    return {key: value for key, value in model_args.items() if key != "pretrained"}


# Recipe model arguments that describe the data rather than the recipe's architecture: kept when
# --model swaps in another model.
DATA_MODEL_ARGS = ("in_channels",)


def recipe_config(recipe: str, overrides: dict[str, Any]) -> TrainConfig:
    """The config of image recipe ``recipe`` with ``overrides`` applied.

    When ``overrides`` change the model, the recipe's ``model_args`` (widths, head, dropout of its
    own model) are dropped except those in ``DATA_MODEL_ARGS``; ``model_args.NAME`` overrides
    still apply, to the new model.
    """
    base = get_recipe(recipe).config
    if overrides.get("model", base.model) != base.model:
        kept = {key: value for key, value in base.model_args.items() if key in DATA_MODEL_ARGS}
        base = dataclasses.replace(base, model_args=kept)
    return apply_overrides(base, overrides)


def test_batches(config: TrainConfig, data: ImageDataset, device: torch.device) -> TensorBatches:
    """The test split in fixed order, batched as every evaluation of the run batches it."""
    return TensorBatches(data.test_images, data.test_labels, config.eval_batch_size, mean=data.mean,
                         std=data.std, device=device, channels_last=config.channels_last)


def score(probs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str], k: int = 5) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, confusion matrix and the ``k`` most-confused pairs."""
    preds = probs.argmax(1)
    cm = confusion_matrix(preds, targets, len(classes))
    report = per_class_report(cm, classes)
    return {
        "test_accuracy": (preds == targets).sum().item() / len(targets),
        "per_class": report["per_class"],
        "macro": report["macro"],
        "confusion": cm.tolist(),
        "most_confused": [list(t) for t in most_confused(cm, classes, k=k)],
    }


def runner_config(recipe: str, overrides: dict[str, Any] | None, resume: str | Path | None,
                  what: str) -> tuple[Any, torch.device]:
    """The start of a runner that cannot resume (``what`` names its runs in the refusal): the
    recipe's config with ``overrides`` applied, torch's threads set from it, and its device."""
    if resume is not None:
        raise ConfigError(f"--resume {resume}: {what} cannot be resumed yet; start a new run")
    config = apply_overrides(get_recipe(recipe).config, overrides or {})
    if config.threads:
        torch.set_num_threads(config.threads)
    return config, resolve_device(config.device)


def interrupted_run(run_dir: str | Path, kind: str, what: str,
                    overrides: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """The config (``overrides`` applied, ``stop_after_epochs`` cleared) and ``last.pt`` of the
    interrupted run of ``kind`` in ``run_dir``; a finished run, another kind's run or a run that
    never finished an epoch is refused, naming the directory (``what`` names the kind's runs)."""
    run_dir = Path(run_dir)
    if (run_dir / "summary.json").exists():
        raise ConfigError(f"--resume {run_dir}: this run already finished (summary.json exists)")
    base = load_config(run_dir / "config.json") if (run_dir / "config.json").is_file() else None
    if base is None or base.kind != kind:
        raise CheckpointError(f"--resume {run_dir}: not an interrupted {what} (no usable config.json)")
    if not (run_dir / "last.pt").is_file():
        raise CheckpointError(f"--resume {run_dir}: no last.pt (stopped before its first epoch ended); "
                              "start a new run")
    config = apply_overrides(dataclasses.replace(base, stop_after_epochs=None), overrides or {})
    return config, load_checkpoint(run_dir / "last.pt")


def stopped_summary(recipe: str, run_dir: Path, epochs: int) -> dict[str, Any]:
    """What a run ended by ``stop_after_epochs`` after ``epochs`` epochs returns instead of scores."""
    return {"recipe": recipe, "run_dir": str(run_dir), "stopped_after_epochs": epochs,
            "resume": f"nnlab train --resume {run_dir}"}


@dataclasses.dataclass
class RunStart:
    """Where a resumable runner starts: its config, device and directory, and the checkpoint it
    continues from (``None`` for a new run)."""

    config: Any
    device: torch.device
    run_dir: Path
    checkpoint: dict[str, Any] | None = None

    @property
    def start_epoch(self) -> int:
        return self.checkpoint["epoch"] if self.checkpoint is not None else 0

    def restore(self, model: torch.nn.Module, learner: Learner, saver: CheckpointCallback,
                generator: torch.Generator) -> None:
        """Put ``model`` and ``learner`` back where the checkpoint left them (``restore_training``),
        with the metrics rows of the finished epochs and the best score so far. Nothing to do
        for a new run."""
        checkpoint = self.checkpoint
        if checkpoint is None:
            return
        missing = [key for key in ("model", "optimizer", "scheduler", "rng", "step", "best") if key not in checkpoint]
        if missing:
            raise CheckpointError(f"--resume {self.run_dir}: last.pt lacks {', '.join(missing)} (written by an "
                                  "nnlab that could not resume this kind of run); start a new run")
        restore_training(checkpoint, model, learner, generator)
        learner.history = resumed_rows(self.run_dir, self.start_epoch)
        saver.best, saver.best_epoch = checkpoint["best"]["score"], checkpoint["best"]["epoch"]


def restore_training(checkpoint: dict[str, Any], model: torch.nn.Module, learner: Learner,
                     generator: torch.Generator) -> None:
    """Load a ``last.pt``'s weights into ``model`` and its optimizer, schedule, step and random
    states (``generator``'s data order, torch's dropout) into ``learner``."""
    model.load_state_dict(checkpoint["model"])
    learner.optimizer.load_state_dict(checkpoint["optimizer"])
    if learner.scheduler is not None:
        learner.scheduler.load_state_dict(checkpoint["scheduler"])
    learner.step = checkpoint["step"]
    restore_rng(checkpoint["rng"], generator)


def resumed_rows(run_dir: Path, epochs: int, rewrite: bool = True) -> list[dict[str, Any]]:
    """The metrics rows of the ``epochs`` finished epochs; ``rewrite`` cuts ``metrics.jsonl`` to them
    (a torn line or rows written after the checkpoint go)."""
    rows = read_rows(run_dir / "metrics.jsonl", epochs)
    if rewrite:
        write_jsonl(run_dir / "metrics.jsonl", rows)
    return rows


def start_run(recipe: str | None, out: str | Path | None, overrides: dict[str, Any] | None,
              resume: str | Path | None, kind: str, what: str) -> RunStart:
    """A new run of ``recipe`` in ``out`` (config saved there), or the interrupted run ``resume``
    of ``kind``; torch's threads set from the config."""
    if resume is not None:
        config, checkpoint = interrupted_run(resume, kind, what, overrides)
        run_dir = Path(resume)
    else:
        if recipe is None:
            raise ConfigError("train: give a recipe name (see `nnlab recipes`) or --resume RUN_DIR")
        config, checkpoint = apply_overrides(get_recipe(recipe).config, overrides or {}), None
        run_dir = new_run_dir(config.recipe, out)
        save_config(config, run_dir / "config.json")
    if config.threads:
        torch.set_num_threads(config.threads)
    return RunStart(config, resolve_device(config.device), run_dir, checkpoint)


def new_run_dir(recipe: str, out: str | Path | None) -> Path:
    """``out``, or ``runs/RECIPE-<timestamp>``; refuses a directory that already holds a run."""
    run_dir = Path(out) if out else Path("runs") / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (run_dir / "last.pt").exists() or (run_dir / "summary.json").exists():
        raise ConfigError(f"--out {run_dir}: already holds a run; choose another directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


class Setup:
    """Everything a run builds from its config before training: data, batches, model, optimizer.

    Built the same way for a new run, a resumed one and an LR sweep, so that a resumed run
    draws exactly the numbers the uninterrupted run would have drawn.
    """

    def __init__(self, config: TrainConfig, dry_run: bool = False) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        self.config = config
        self.distributed = init_from_env(resolve_device(config.device))
        self.device = local_device(resolve_device(config.device))
        world = world_size()
        if config.batch_size % world:
            raise ConfigError(f"batch_size {config.batch_size} must divide evenly over {world} processes")
        self.data = data = load_image_dataset(config.dataset, config.data)
        self.generator = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)  # model initialization and dropout
        train_idx, valid_idx = stratified_split(data.train_labels, config.valid_fraction, self.generator)
        if dry_run:
            train_idx, valid_idx = train_idx[: 4 * config.batch_size], valid_idx[: config.eval_batch_size]
        common = {"mean": data.mean, "std": data.std, "device": self.device, "channels_last": config.channels_last}
        self.train_batches = TensorBatches(data.train_images[train_idx], data.train_labels[train_idx],
                                           config.batch_size // world, shuffle=True, drop_last=True,
                                           generator=self.generator, augment=make_augment(config.augment),
                                           rank=rank(), world_size=world, **common)
        self.valid_batches = (TensorBatches(data.train_images[valid_idx], data.train_labels[valid_idx],
                                            config.eval_batch_size, **common) if len(valid_idx) else None)
        self.model = build_model(config, len(data.classes))
        self.frozen = freeze(self.model, config.freeze)
        fine_tune = config.schedule == "fine-tune"
        if fine_tune and self.distributed:  # DDP reduces a fixed set of gradients; fine-tune changes it
            raise ConfigError("--schedule fine-tune trains in one process; drop --nproc")
        self.optimizer = create_optimizer(config.optimizer, self.model, config.lr, config.weight_decay,
                                          config.momentum, config.lr_mult, split=fine_tune)
        self.epochs = 1 if dry_run else config.epochs
        # fine-tune: epochs that train the head alone (a dry run's single epoch is one of them)
        self.freeze_epochs = (min(config.freeze_epochs, self.epochs) if dry_run else config.freeze_epochs) \
            if fine_tune else 0
        self.total_steps = self.epochs * len(self.train_batches)
        self.scheduler = create_scheduler(
            config.schedule, self.optimizer, [group["lr"] for group in self.optimizer.param_groups],
            self.total_steps, config.pct_start, cycles=config.cycles, cycle_mult=config.cycle_mult,
            steps_per_epoch=len(self.train_batches), step_every=config.step_every, gamma=config.gamma,
            freeze_steps=self.freeze_epochs * len(self.train_batches))
        self.learner = Learner(
            self.model, self.train_batches, self.valid_batches,
            loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
            optimizer=self.optimizer, scheduler=self.scheduler, device=self.device, precision=config.precision,
            clip=config.clip, channels_last=config.channels_last, compile=config.compile)
        if self.distributed:  # gradients averaged over ranks during backward
            ddp = DistributedDataParallel(self.learner.raw_model,
                                          device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self.learner.model = torch.compile(ddp) if config.compile else ddp

    def state(self) -> dict[str, Any]:
        """The checkpoint: weights, optimizer, schedule, RNG states and what rebuilds the model."""
        config, data = self.config, self.data
        return {"model": self.learner.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(self.generator),
                "model_name": config.model, "model_args": rebuild_args(config.model_args),
                "config": dataclasses.asdict(config), "classes": list(data.classes), "mean": list(data.mean),
                "std": list(data.std), "input_shape": list(data.train_images.shape[1:])}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a ``last.pt`` written by ``state`` (with epoch and step added)."""
        restore_training(state, self.learner.raw_model, self.learner, self.generator)


def read_rows(path: Path, keep: int) -> list[dict[str, Any]]:
    """The first ``keep`` complete JSON rows of ``path`` (a torn last line from a kill is dropped)."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines()[:keep]:
            try:
                rows.append(json.loads(line))
            except ValueError:
                break
    return rows


def train(recipe: str | None = None, out: str | Path | None = None, overrides: dict[str, Any] | None = None,
          stream: TextIO | None = None, dry_run: bool = False, resume: str | Path | None = None) -> dict[str, Any]:
    """Train ``recipe`` (with ``overrides`` applied) into a new run directory; returns the summary.

    ``resume`` continues the interrupted run in that directory from its ``last.pt``: model,
    optimizer, schedule, step, RNG states (data order included) and metrics rows, so that it
    ends as the uninterrupted run would have. ``dry_run`` trains and validates on a few
    batches only: a smoke test of the whole path. With ``stop_after_epochs`` the run ends
    after that many epochs, resumable, and the result says so instead of scoring.
    """
    stream = stream if stream is not None else sys.stderr
    checkpoint = None
    if resume is not None:
        run_dir = Path(resume)
        config, checkpoint = interrupted_run(run_dir, "image", "image run", overrides)
        recipe = config.recipe
    else:
        if recipe is None:
            raise ConfigError("train: give a recipe name (see `nnlab recipes`) or --resume RUN_DIR")
        config = recipe_config(recipe, overrides or {})
        run_dir = new_run_dir(recipe, out) if int(os.environ.get("RANK", "0")) == 0 else Path(out or ".")
    try:
        setup = Setup(config, dry_run)
        return _train(setup, run_dir, recipe, checkpoint, stream, dry_run)
    finally:
        shutdown()


def _train(setup: Setup, run_dir: Path, recipe: str, checkpoint: dict[str, Any] | None, stream: TextIO,
           dry_run: bool) -> dict[str, Any]:
    """The body of ``train`` once the run is set up: callbacks, fit, then the summary (rank 0)."""
    config, main = setup.config, is_main()
    if main:
        save_config(config, run_dir / "config.json")
    start_epoch, history = 0, []
    if checkpoint is not None:
        setup.restore(checkpoint)
        start_epoch = checkpoint["epoch"]
        history = resumed_rows(run_dir, start_epoch, rewrite=main)

    mode = monitor_mode(config.monitor)
    callbacks: list = []
    if main:  # only rank 0 prints and writes files
        saver = CheckpointCallback(run_dir, setup.state, monitor=config.monitor, mode=mode)
        callbacks += [ProgressCallback(stream), MetricsLog(run_dir / "metrics.jsonl"), saver,
                      LRLog(run_dir / "lr.csv", setup.learner.step), LayerGroupLog()]
        if checkpoint is not None:
            saver.best, saver.best_epoch = checkpoint["best"]["score"], checkpoint["best"]["epoch"]
    if config.schedule == "sgdr" and main:
        callbacks.append(SnapshotCallback(run_dir, setup.state,
                                          sgdr_boundaries(setup.total_steps, config.cycles, config.cycle_mult)))
    if config.schedule == "fine-tune":
        callbacks.append(FineTune(setup.freeze_epochs))
    if config.patience:
        stopper = EarlyStopping(config.patience, monitor=config.monitor, mode=mode)
        stopper.replay(history)
        callbacks.append(stopper)
    interrupt = StopAfterEpochs(config.stop_after_epochs)
    callbacks.append(interrupt)
    learner = setup.learner
    learner.add_callbacks(callbacks)
    learner.history = history
    history = learner.fit(setup.epochs, start_epoch=start_epoch)
    if not main:
        return {"recipe": recipe, "rank": rank(), "epochs": len(history)}
    if interrupt.cut_short(history, setup.epochs):
        return stopped_summary(recipe, run_dir, len(history))
    train_seconds = sum(row["seconds"] for row in history)
    return finish(setup, run_dir, recipe, history, train_seconds, dry_run)


def lr_find(recipe: str, out: str | Path | None = None, overrides: dict[str, Any] | None = None,
            steps: int = 200, start_lr: float = 1e-7, end_lr: float = 10.0) -> dict[str, Any]:
    """Run an LR sweep on ``recipe``'s model and data; writes ``lr_find.png`` (and ``lr_find.json``)
    into ``out`` (default ``runs/RECIPE-lrfind-<timestamp>``) and returns the suggestions."""
    config = recipe_config(recipe, overrides or {})
    run_dir = Path(out) if out else Path("runs") / f"{recipe}-lrfind-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    setup = Setup(config)
    result = find_lr(setup.learner, start_lr=start_lr, end_lr=end_lr, steps=steps)
    marks = {"steepest": result.steepest_lr, "min/10": result.min_over_10_lr}
    plot_lr_find(result.lrs, result.smoothed, marks, run_dir / "lr_find.png")
    found = {"recipe": recipe, "suggested_lr": result.suggested_lr, "steepest_lr": result.steepest_lr,
             "min_over_10_lr": result.min_over_10_lr, "steps": len(result.lrs), "run_dir": str(run_dir),
             "plot": str(run_dir / "lr_find.png")}
    write_json(run_dir / "lr_find.json", {**found, "lrs": result.lrs, "losses": result.losses,
                                           "smoothed": result.smoothed})
    return found


def finish(setup: Setup, run_dir: Path, recipe: str, history: list[dict[str, Any]], train_seconds: float,
           dry_run: bool) -> dict[str, Any]:
    """Score the best checkpoint on the test split, draw the plots and write ``summary.json``."""
    config, data, learner = setup.config, setup.data, setup.learner
    best = load_checkpoint(run_dir / "best.pt")
    learner.raw_model.load_state_dict(best["model"])  # early stopping and last epochs: the best weights win
    probs, targets = learner.predict(test_batches(config, data, setup.device), tta_flip=config.tta)
    result = score(probs, targets, data.classes)
    plot_curves(history, run_dir / "curves.png")
    plot_confusion(torch.tensor(result["confusion"]), data.classes, run_dir / "confusion.png")
    plot_lr_csv(run_dir / "lr.csv", run_dir / "lr.png")
    images_seen = len(setup.train_batches) * config.batch_size * len(history)
    summary = {
        "recipe": recipe, "run_dir": str(run_dir), "dataset": config.dataset, "dataset_source": data.source,
        "model": config.model, **result, "train_seconds": round(train_seconds, 3),
        "images_per_s": round(images_seen / train_seconds, 1) if train_seconds else None,
        "epochs": len(history), "best_epoch": best["best"]["epoch"], "best_valid_acc": best["best"]["score"],
        "monitor": config.monitor, "schedule": config.schedule, "frozen": setup.frozen,
        **({"freeze_epochs": setup.freeze_epochs, "lr_mult": config.lr_mult} if config.schedule == "fine-tune" else {}),
        "classes": list(data.classes), "device": str(setup.device), "precision": learner.precision,
        "tta": config.tta, "dry_run": dry_run, **environment(),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[TrainConfig, torch.nn.Module, dict]:
    """Rebuild a run's model from ``config.json`` and ``best.pt`` (weights only) in eval mode."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir}: not an nnlab run directory (no config.json)")
    config = load_config(run_dir / "config.json")
    state = load_checkpoint(run_dir / "best.pt", map_location=device)
    state["model_args"] = rebuild_args(state["model_args"])  # runs saved before pretrained was left out
    model = create_model(state["model_name"], n_classes=len(state["classes"]), **state["model_args"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{run_dir / 'best.pt'}: weights do not fit model {state['model_name']!r}: "
                              f"{str(error).splitlines()[0]}") from None
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return config, model.eval(), state


def load_best(run_dir: str | Path, kind: str, device: torch.device | str = "cpu") -> tuple[Any, torch.nn.Module, dict]:
    """A run's config, its model rebuilt from ``best.pt`` (weights only) in eval mode, and the checkpoint.

    For runners whose checkpoint records ``kind`` and every argument of the model in
    ``model_args``; a checkpoint of another kind, or weights that do not fit, are a
    ``CheckpointError`` naming the file.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir}: not an nnlab run directory (no config.json)")
    config = load_config(run_dir / "config.json")
    path = run_dir / "best.pt"
    state = load_checkpoint(path, map_location=device)
    if state.get("kind") != kind:
        raise CheckpointError(f"{path}: not a checkpoint of a {kind} run (its kind: {state.get('kind')!r})")
    model = create_model(state["model_name"], **state["model_args"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit model {state['model_name']!r}: "
                              f"{str(error).splitlines()[0]}") from None
    return config, model.to(device).eval(), state


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None,
             ensemble: str | None = None) -> dict[str, Any]:
    """Reload the best checkpoint and score it on the test split, exactly as ``train`` did.

    ``ensemble="snapshots"`` scores the average of the class probabilities of every SGDR
    snapshot (``snapshots/cycle-K.pt``) instead, and reports each snapshot's own accuracy.
    """
    run_dir = Path(run_dir)
    probe = load_config(run_dir / "config.json") if (run_dir / "config.json").is_file() else None
    device = resolve_device(device_name or (probe.device if probe else "auto"))
    config, model, state = load_run(run_dir, device)
    data = load_image_dataset(config.dataset, data_path or config.data)
    precision = resolve_precision(config.precision, device)
    batches = test_batches(config, data, device)
    members: dict[str, float] = {}
    if ensemble == "snapshots":
        paths = sorted((run_dir / "snapshots").glob("cycle-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
        if not paths:
            raise CheckpointError(f"{run_dir / 'snapshots'}: no snapshots (train with --schedule sgdr to get them)")
        probs = None
        for path in paths:
            model.load_state_dict(load_checkpoint(path, map_location=device)["model"])
            member, targets = predict_probs(model, batches, device, precision, config.tta)
            members[path.stem] = (member.argmax(1) == targets).sum().item() / len(targets)
            probs = member if probs is None else probs + member
        probs = probs / len(paths)
    elif ensemble is not None:
        raise ConfigError(f"--ensemble {ensemble!r}: expected snapshots")
    else:
        probs, targets = predict_probs(model, batches, device, precision, config.tta)
    result = score(probs, targets, data.classes)
    if members:
        result["snapshot_accuracy"] = members
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        result["summary_test_accuracy"] = json.loads(summary_path.read_text(encoding="utf-8")).get("test_accuracy")
    return {"run_dir": str(run_dir), "recipe": config.recipe, "classes": list(data.classes), **result}


def check_predict_args(inputs: Sequence[Any], top_k: int, noun: str) -> None:
    """A ``ConfigError`` for ``top_k`` below 1 or no inputs (``noun`` names one: "image file", "name")."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if not inputs:
        raise ConfigError(f"predict: give at least one {noun}")


def ranked(probs: torch.Tensor, classes: Sequence[str], inputs: Sequence[Any], top_k: int) -> list[dict]:
    """For each input (a row of ``probs [N, K]``) its ``top_k`` classes with probabilities:
    ``{"file": input, "top": [{"class", "probability"}, ...]}``, likeliest first."""
    values, indices = probs.topk(min(top_k, probs.shape[1]), dim=1)
    return [{"file": str(name), "top": [{"class": classes[i], "probability": round(p, 6)}
                                        for p, i in zip(v.tolist(), ix.tolist())]}
            for name, v, ix in zip(inputs, values, indices)]


def predict(run_dir: str | Path, files: Sequence[str | Path], top_k: int = 3, invert: str = "auto") -> list[dict]:
    """Top-k classes with probabilities for each image file, converted to the model's input."""
    check_predict_args(files, top_k, "image file")
    config, model, state = load_run(run_dir, "cpu")
    channels, height, width = state["input_shape"]
    images = torch.stack([load_image(f, (height, width), channels, invert=invert) for f in files])
    batches = TensorBatches(images, torch.zeros(len(images), dtype=torch.long), config.eval_batch_size,
                            mean=state["mean"], std=state["std"], channels_last=config.channels_last)
    probs, _ = predict_probs(model, batches, torch.device("cpu"), "fp32", config.tta)
    return ranked(probs, state["classes"], files, top_k)
