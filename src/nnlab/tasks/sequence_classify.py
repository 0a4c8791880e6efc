"""The steps the sequence-classification runners share (``names``: characters, ``textcls``: words).

Both hold out a stratified test split and a validation part of the rest, train a registered
packed-sequence classifier with AdamW, a schedule and a best-by-validation-loss checkpoint,
score the test split, and predict the ``top_k`` classes of new inputs. What differs (reading
the data, encoding it, the model's arguments, the checkpoint's vocabulary) stays in each runner.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence, TextIO

import torch

from nnlab.data.batches import stratified_split
from nnlab.engine.callbacks import CheckpointCallback, MetricsLog, ProgressCallback, StopAfterEpochs
from nnlab.engine.checkpoint import load_checkpoint, rng_state
from nnlab.engine.learner import Learner, predict_probs
from nnlab.engine.optim import create_optimizer
from nnlab.engine.schedules import create_scheduler
from nnlab.errors import DataError
from nnlab.interpret.plots import plot_curves
from nnlab.models import create_model
from nnlab.runs import RunStart, ranked, score


def split_stratified(labels: torch.Tensor, config: Any, source: str, noun: str) -> dict[str, torch.Tensor]:
    """Indices of the test rows (stratified), then of validation out of the rest; a pure function of the seed.

    Too few rows for a training and a test split is a ``DataError`` naming ``source`` and
    counting the rows as ``noun`` ("names", "rows").
    """
    generator = torch.Generator().manual_seed(config.seed)
    rest, test = stratified_split(labels, config.test_fraction, generator)
    train, valid = stratified_split(labels[rest], config.valid_fraction, generator)
    if len(test) == 0 or len(train) == 0:
        raise DataError(f"{source}: {len(labels)} {noun} are too few for a training and a test split")
    return {"train": rest[train], "valid": rest[valid], "test": test}


def class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse class frequencies, scaled to average 1 over the samples (``N / (C * count)``)."""
    counts = torch.bincount(labels, minlength=n_classes).clamp(min=1).float()
    return len(labels) / (n_classes * counts)


def train_options(config: Any, train_labels: torch.Tensor, n_classes: int) -> dict[str, Any]:
    """Batcher options of the training rows: shuffled by the run's seed + 1, drawn class-balanced
    (inverse-frequency weights) where ``balance`` is ``sampler``."""
    options: dict[str, Any] = {"shuffle": True, "generator": torch.Generator().manual_seed(config.seed + 1)}
    if config.balance == "sampler":
        options["sample_weights"] = class_weights(train_labels, n_classes)[train_labels]
    return options


@dataclass
class Fitted:
    """A trained model reloaded at its best epoch, with its training history and time.

    ``stopped`` is set when ``stop_after_epochs`` ended the run early (resumable, not scored).
    """

    model: torch.nn.Module
    history: list[dict[str, Any]]
    best: dict[str, Any]        # the best checkpoint
    train_seconds: float
    stopped: bool = False

    def timing(self, n_train: int, rate: str) -> dict[str, Any]:
        """The summary's training numbers; ``rate`` names the throughput (``names_per_s``)."""
        return {"train_seconds": round(self.train_seconds, 3),
                rate: round(n_train * len(self.history) / self.train_seconds, 1), "epochs": len(self.history),
                "best_epoch": self.best["best"]["epoch"], "best_valid_loss": self.best["best"]["score"]}


def fit(start: RunStart, model_name: str, args: dict[str, Any], train_batches: Any, valid_batches: Iterable | None,
        train_labels: torch.Tensor, n_classes: int, stream: TextIO, epochs: int, saved: dict[str, Any]) -> Fitted:
    """Train the registered ``model_name`` for ``epochs``, keep the best epoch by validation loss, reload it.

    Checkpoints hold the model, optimizer and schedule state, the random states (the data
    order of ``train_batches.generator`` and dropout's), ``model_name``, ``args``, the config
    and ``saved`` (the run's kind, classes and vocabulary as plain data); ``curves.png`` is
    drawn. A ``start`` with a checkpoint continues that run where it stopped and ends as the
    uninterrupted run would have. Initialization and dropout draw from the run's seed without
    touching the caller's global RNG.
    """
    config, run_dir, device = start.config, start.run_dir, start.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # model initialization, without touching the caller's global RNG
        model = create_model(model_name, **args)
    optimizer = create_optimizer("adamw", model, config.lr, config.weight_decay)
    scheduler = create_scheduler(config.schedule, optimizer, config.lr, epochs * len(train_batches), config.pct_start)
    weight = class_weights(train_labels, n_classes).to(device) if config.balance == "weighted-loss" else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    generator = train_batches.generator

    def state() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng_state(generator), "model_name": model_name, "model_args": args,
                "config": dataclasses.asdict(config), **saved}

    saver = CheckpointCallback(run_dir, state, monitor="valid_loss", mode="min")
    interrupt = StopAfterEpochs(config.stop_after_epochs)
    callbacks = [ProgressCallback(stream), MetricsLog(run_dir / "metrics.jsonl"), saver, interrupt]
    learner = Learner(model, train_batches, valid_batches, loss_fn=loss_fn, optimizer=optimizer,
                      scheduler=scheduler, callbacks=callbacks, device=device, precision="fp32", clip=config.clip)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # dropout masks
        start.restore(model, learner, saver, generator)  # a resumed run: where it stopped
        history = learner.fit(epochs, start_epoch=start.start_epoch)
    train_seconds = sum(row["seconds"] for row in history)

    best = load_checkpoint(run_dir / "best.pt", map_location=device)
    model.load_state_dict(best["model"])
    plot_curves(history, run_dir / "curves.png")
    return Fitted(model, history, best, train_seconds, stopped=interrupt.cut_short(history, epochs))


def test_scores(model: torch.nn.Module, test_batches: Iterable, classes: Sequence[str],
                device: torch.device) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix on ``test_batches``."""
    probs, targets = predict_probs(model, test_batches, device)
    return score(probs, targets, classes)


def check_classes(source: str, classes: Sequence[str], state: dict[str, Any]) -> None:
    """A ``DataError`` unless the data's classes are the run's, in the same order."""
    if classes != state["classes"]:
        raise DataError(f"{source}: classes {classes} are not the run's {state['classes']}")


def rescore(run_dir: Path, recipe: str, model: torch.nn.Module, test_batches: Iterable, classes: Sequence[str],
            device: torch.device) -> dict[str, Any]:
    """``evaluate``'s answer: the test scores again, beside the accuracy ``train`` wrote in ``summary.json``."""
    result = test_scores(model, test_batches, classes, device)
    result["test_macro_f1"] = result["macro"]["f1"]
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        result["summary_test_accuracy"] = json.loads(summary_path.read_text(encoding="utf-8")).get("test_accuracy")
    return {"run_dir": str(run_dir), "recipe": recipe, "classes": list(classes), **result}


@torch.no_grad()
def top_classes(model: torch.nn.Module, ids: torch.Tensor, inputs: Sequence[str], classes: Sequence[str],
                top_k: int) -> list[dict]:
    """The ``top_k`` most likely classes with probabilities for each input, from its padded ids ``[N, L]``."""
    return ranked(model(ids).softmax(1), classes, inputs, top_k)
