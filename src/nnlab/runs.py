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

from nnlab import __version__
from nnlab.config import TrainConfig, apply_overrides, load_config, save_config
from nnlab.data.batches import TensorBatches, make_augment, stratified_split
from nnlab.data.images import load_image
from nnlab.data.vision import ImageDataset, load_image_dataset
from nnlab.engine.callbacks import CheckpointCallback, EarlyStopping, MetricsLog, ProgressCallback
from nnlab.engine.checkpoint import atomic_write_bytes, load_checkpoint
from nnlab.engine.learner import Learner, predict_probs, resolve_device, resolve_precision
from nnlab.engine.metrics import confusion_matrix, most_confused, per_class_report
from nnlab.engine.optim import create_optimizer
from nnlab.engine.schedules import create_scheduler
from nnlab.errors import CheckpointError, ConfigError
from nnlab.interpret.plots import plot_confusion, plot_curves
from nnlab.models import create_model
from nnlab.recipes import get_recipe


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    data = (json.dumps(obj, indent=2) + "\n").encode("utf-8")
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


def test_batches(config: TrainConfig, data: ImageDataset, device: torch.device) -> TensorBatches:
    """The test split in fixed order, batched as every evaluation of the run batches it."""
    return TensorBatches(data.test_images, data.test_labels, config.eval_batch_size, mean=data.mean,
                         std=data.std, device=device, channels_last=config.channels_last)


def score(probs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, confusion matrix and most-confused pairs."""
    preds = probs.argmax(1)
    cm = confusion_matrix(preds, targets, len(classes))
    report = per_class_report(cm, classes)
    return {
        "test_accuracy": (preds == targets).sum().item() / len(targets),
        "per_class": report["per_class"],
        "macro": report["macro"],
        "confusion": cm.tolist(),
        "most_confused": [list(t) for t in most_confused(cm, classes, k=5)],
    }


def new_run_dir(recipe: str, out: str | Path | None) -> Path:
    """``out``, or ``runs/RECIPE-<timestamp>``; refuses a directory that already holds a run."""
    run_dir = Path(out) if out else Path("runs") / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (run_dir / "last.pt").exists() or (run_dir / "summary.json").exists():
        raise ConfigError(f"--out {run_dir}: already holds a run; choose another directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def train(recipe: str, out: str | Path | None = None, overrides: dict[str, Any] | None = None,
          stream: TextIO | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Train ``recipe`` (with ``overrides`` applied) into a new run directory; returns the summary.

    ``dry_run`` trains and validates on a few batches only: a smoke test of the whole path.
    """
    stream = stream if stream is not None else sys.stderr
    config = apply_overrides(get_recipe(recipe).config, overrides or {})
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    data = load_image_dataset(config.dataset, config.data)
    run_dir = new_run_dir(recipe, out)
    save_config(config, run_dir / "config.json")

    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # model initialization
    train_idx, valid_idx = stratified_split(data.train_labels, config.valid_fraction, generator)
    if dry_run:
        train_idx, valid_idx = train_idx[: 4 * config.batch_size], valid_idx[: config.eval_batch_size]
    common = {"mean": data.mean, "std": data.std, "device": device, "channels_last": config.channels_last}
    train_batches = TensorBatches(data.train_images[train_idx], data.train_labels[train_idx], config.batch_size,
                                  shuffle=True, drop_last=True, generator=generator,
                                  augment=make_augment(config.augment), **common)
    valid_batches = (TensorBatches(data.train_images[valid_idx], data.train_labels[valid_idx],
                                   config.eval_batch_size, **common) if len(valid_idx) else None)

    model = build_model(config, len(data.classes))
    optimizer = create_optimizer(config.optimizer, model, config.lr, config.weight_decay, config.momentum)
    epochs = 1 if dry_run else config.epochs
    scheduler = create_scheduler(config.schedule, optimizer, config.lr, epochs * len(train_batches), config.pct_start)

    def state() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "model_name": config.model,
                "model_args": dict(config.model_args), "config": dataclasses.asdict(config),
                "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std),
                "input_shape": list(data.train_images.shape[1:])}

    callbacks = [ProgressCallback(stream), MetricsLog(run_dir / "metrics.jsonl"), CheckpointCallback(run_dir, state)]
    if config.patience:
        callbacks.append(EarlyStopping(config.patience))
    learner = Learner(model, train_batches, valid_batches, loss_fn=torch.nn.CrossEntropyLoss(
                          label_smoothing=config.label_smoothing),
                      optimizer=optimizer, scheduler=scheduler, callbacks=callbacks, device=device,
                      precision=config.precision, clip=config.clip, channels_last=config.channels_last)
    start = time.perf_counter()
    history = learner.fit(epochs)
    train_seconds = time.perf_counter() - start

    best = load_checkpoint(run_dir / "best.pt")
    model.load_state_dict(best["model"])
    probs, targets = learner.predict(test_batches(config, data, device), tta_flip=config.tta)
    result = score(probs, targets, data.classes)
    plot_curves(history, run_dir / "curves.png")
    plot_confusion(torch.tensor(result["confusion"]), data.classes, run_dir / "confusion.png")
    images_seen = len(train_batches) * config.batch_size * len(history)
    summary = {
        "recipe": recipe, "run_dir": str(run_dir), "dataset": config.dataset, "dataset_source": data.source,
        "model": config.model, **result, "train_seconds": round(train_seconds, 3),
        "images_per_s": round(images_seen / train_seconds, 1), "epochs": len(history),
        "best_epoch": best["best"]["epoch"], "best_valid_acc": best["best"]["score"],
        "classes": list(data.classes), "device": str(device), "precision": learner.precision,
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


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """Reload the best checkpoint and score it on the test split, exactly as ``train`` did."""
    run_dir = Path(run_dir)
    probe = load_config(run_dir / "config.json") if (run_dir / "config.json").is_file() else None
    device = resolve_device(device_name or (probe.device if probe else "auto"))
    config, model, state = load_run(run_dir, device)
    data = load_image_dataset(config.dataset, data_path or config.data)
    precision = resolve_precision(config.precision, device)
    probs, targets = predict_probs(model, test_batches(config, data, device), device, precision, config.tta)
    result = score(probs, targets, data.classes)
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        result["summary_test_accuracy"] = json.loads(summary_path.read_text(encoding="utf-8")).get("test_accuracy")
    return {"run_dir": str(run_dir), "recipe": config.recipe, "classes": list(data.classes), **result}


def predict(run_dir: str | Path, files: Sequence[str | Path], top_k: int = 3, invert: str = "auto") -> list[dict]:
    """Top-k classes with probabilities for each image file, converted to the model's input."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    config, model, state = load_run(run_dir, "cpu")
    channels, height, width = state["input_shape"]
    images = torch.stack([load_image(f, (height, width), channels, invert=invert) for f in files])
    batches = TensorBatches(images, torch.zeros(len(images), dtype=torch.long), config.eval_batch_size,
                            mean=state["mean"], std=state["std"], channels_last=config.channels_last)
    probs, _ = predict_probs(model, batches, torch.device("cpu"), "fp32", config.tta)
    values, indices = probs.topk(min(top_k, probs.shape[1]), dim=1)
    classes = state["classes"]
    return [{"file": str(f), "top": [{"class": classes[i], "probability": round(p, 6)}
                                     for p, i in zip(v.tolist(), ix.tolist())]}
            for f, v, ix in zip(files, values, indices)]
