"""The steps the sequence-classification kinds share (``names``: characters, ``textcls``: words).

Both hold out a stratified test split and a validation part of the rest, train a registered
packed-sequence classifier through the run kit (best epoch by validation loss), score the test split, and predict the ``top_k`` classes of new inputs. What differs (reading
the data, encoding it, the model's arguments, the checkpoint's vocabulary) stays in each kind's file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence, TextIO

import torch

from nnlab.data.batches import stratified_split
from nnlab.engine.learner import predict_probs
from nnlab.engine.metrics import ranked, score
from nnlab.errors import DataError
from nnlab.kit.rundir import read_summary
from nnlab.kit.run import RunStart, Spec, Trained, train_model
from nnlab.models import create_model
from nnlab.models.names import MemberLoss, MembersInTraining, NameEnsemble, ensemble_correct


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


def fit(start: RunStart, model_name: str, args: dict[str, Any], train_batches: Any, valid_batches: Iterable | None,
        train_labels: torch.Tensor, n_classes: int, stream: TextIO, epochs: int, saved: dict[str, Any],
        dry_run: bool = False) -> Trained:
    """Train the registered ``model_name`` through the run kit; the model ends at its best epoch
    (by the config's ``monitor``, validation loss by default).

    Checkpoints hold ``model_name``, ``args`` and ``saved`` (the run's classes and vocabulary
    as plain data) beside the training state; initialization and dropout draw from the run's
    seed without touching the caller's global RNG.
    """
    config = start.config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # model initialization, without touching the caller's global RNG
        model = create_model(model_name, **args)
    weight = class_weights(train_labels, n_classes).to(start.device) if config.balance == "weighted-loss" else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    ensemble: dict[str, Any] = {}
    if isinstance(model, NameEnsemble):  # each member learns from its own loss; the ensemble is scored
        ensemble = {"module": MembersInTraining(model), "metric": ensemble_correct,
                    "loss": MemberLoss(weight, config.label_smoothing)}
    spec = Spec(model, train_batches, valid_batches, ensemble.pop("loss", loss_fn),
                saved={"model_name": model_name, "model_args": args, **saved},
                generator=train_batches.generator, epochs=epochs, dry_run=dry_run, dropout_seed=config.seed,
                **ensemble)
    return train_model(start, spec, stream)


def timing(trained: Trained, n_train: int, rate: str) -> dict[str, Any]:
    """The throughput a sequence run reports beside the kit's timing; ``rate`` names it (``names_per_s``)."""
    return {rate: round(n_train * len(trained.history) / trained.train_seconds, 1)}


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
    summary = read_summary(run_dir)
    if summary is not None:
        result["summary_test_accuracy"] = summary.get("test_accuracy")
    return {"run_dir": str(run_dir), "recipe": recipe, "classes": list(classes), **result}


@torch.no_grad()
def top_classes(model: torch.nn.Module, ids: torch.Tensor, inputs: Sequence[str], classes: Sequence[str],
                top_k: int) -> list[dict]:
    """The ``top_k`` most likely classes with probabilities for each input, from its padded ids ``[N, L]``."""
    return ranked(model(ids).softmax(1), classes, inputs, top_k)
