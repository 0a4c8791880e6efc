"""Surname -> language runs: a bidirectional GRU over padded, packed names; predictions for new names.

``train`` folds the names to ASCII, holds out a stratified ``test_fraction`` (its accuracy is
``test_accuracy``) and a validation part of the rest (it picks the best epoch), trains in
batches of padded sequences that the model packs, and writes a run directory like an image
run: ``config.json``, ``metrics.jsonl``, ``best.pt``/``last.pt`` (with the alphabet and the
classes as plain data), ``curves.png``, ``confusion.png`` and ``summary.json`` (accuracy,
macro-F1, per-class precision/recall/F1, confusion matrix). Class imbalance is countered by
``balance``: ``weighted-loss`` (inverse-frequency class weights) or ``sampler`` (batches drawn
with class-balanced probabilities).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch

from nnlab.config import NamesConfig, apply_overrides, save_config
from nnlab.data.batches import stratified_split
from nnlab.data.names import ALPHABET, NameBatches, NamesDataset, encode_names, fold_ascii, load_names
from nnlab.engine.callbacks import CheckpointCallback, MetricsLog, ProgressCallback
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.engine.learner import Learner, predict_probs, resolve_device
from nnlab.engine.optim import create_optimizer
from nnlab.engine.schedules import create_scheduler
from nnlab.errors import CheckpointError, ConfigError, DataError
from nnlab.interpret.plots import plot_confusion, plot_curves
from nnlab.models import create_model
from nnlab.recipes import get_recipe
from nnlab.runs import environment, load_best, new_run_dir, score, write_json


def split_names(data: NamesDataset, config: NamesConfig) -> dict[str, torch.Tensor]:
    """Indices of the test names (stratified), then of validation out of the rest; a pure function of the seed."""
    generator = torch.Generator().manual_seed(config.seed)
    rest, test = stratified_split(data.labels, config.test_fraction, generator)
    train, valid = stratified_split(data.labels[rest], config.valid_fraction, generator)
    if len(test) == 0 or len(train) == 0:
        raise DataError(f"{data.source}: {len(data.names)} names are too few for a training and a test split")
    return {"train": rest[train], "valid": rest[valid], "test": test}


def class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse class frequencies, scaled to average 1 over the samples (``N / (C * count)``)."""
    counts = torch.bincount(labels, minlength=n_classes).clamp(min=1).float()
    return len(labels) / (n_classes * counts)


def batches(data: NamesDataset, rows: torch.Tensor, batch_size: int, device: torch.device,
            **options: Any) -> NameBatches:
    """The names at ``rows`` as padded batches."""
    return NameBatches([data.names[i] for i in rows.tolist()], data.labels[rows], batch_size, device=device, **options)


def model_args(config: NamesConfig, n_classes: int) -> dict[str, Any]:
    """Arguments of the registry's ``name_rnn``."""
    return {"n_classes": n_classes, "n_tokens": len(ALPHABET) + 1, "embed": config.embed,
            "hidden": config.hidden_size, "layers": config.layers, "cell": config.cell, "dropout": config.dropout}


def train(recipe: str = "names-rnn", out: str | Path | None = None, overrides: dict[str, Any] | None = None,
          stream: TextIO | None = None, dry_run: bool = False, resume: str | Path | None = None) -> dict[str, Any]:
    """Train a names recipe into a new run directory; returns the summary (also ``summary.json``).

    ``dry_run`` trains one epoch on a few batches: a smoke test of the whole path.
    """
    if resume is not None:
        raise ConfigError(f"--resume {resume}: names runs cannot be resumed yet; start a new run")
    stream = stream if stream is not None else sys.stderr
    config = apply_overrides(get_recipe(recipe).config, overrides or {})
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    data = load_names(config.data)
    rows = split_names(data, config)
    n_classes = len(data.classes)
    generator = torch.Generator().manual_seed(config.seed + 1)
    train_rows = rows["train"][: 4 * config.batch_size] if dry_run else rows["train"]
    train_labels = data.labels[train_rows]
    options: dict[str, Any] = {"shuffle": True, "generator": generator}
    if config.balance == "sampler":
        options["sample_weights"] = class_weights(train_labels, n_classes)[train_labels]
    train_batches = batches(data, train_rows, config.batch_size, device, **options)
    valid_batches = (batches(data, rows["valid"], config.eval_batch_size, device) if len(rows["valid"]) else None)
    run_dir = new_run_dir(config.recipe, out)
    save_config(config, run_dir / "config.json")

    args = model_args(config, n_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # model initialization, without touching the caller's global RNG
        model = create_model("name_rnn", **args)
    optimizer = create_optimizer("adamw", model, config.lr, config.weight_decay)
    epochs = 1 if dry_run else config.epochs
    scheduler = create_scheduler(config.schedule, optimizer, config.lr, epochs * len(train_batches), config.pct_start)
    weight = class_weights(train_labels, n_classes).to(device) if config.balance == "weighted-loss" else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)

    def state() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "model_name": "name_rnn",
                "model_args": args, "config": dataclasses.asdict(config), "kind": "names",
                "classes": list(data.classes), "alphabet": ALPHABET}

    callbacks = [ProgressCallback(stream), MetricsLog(run_dir / "metrics.jsonl"),
                 CheckpointCallback(run_dir, state, monitor="valid_loss", mode="min")]
    learner = Learner(model, train_batches, valid_batches, loss_fn=loss_fn, optimizer=optimizer,
                      scheduler=scheduler, callbacks=callbacks, device=device, precision="fp32", clip=config.clip)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # dropout masks
        start = time.perf_counter()
        history = learner.fit(epochs)
        train_seconds = time.perf_counter() - start

    best = load_checkpoint(run_dir / "best.pt", map_location=device)
    model.load_state_dict(best["model"])
    probs, targets = predict_probs(model, batches(data, rows["test"], config.eval_batch_size, device), device)
    result = score(probs, targets, data.classes)
    plot_curves(history, run_dir / "curves.png")
    plot_confusion(torch.tensor(result["confusion"]), data.classes, run_dir / "confusion.png")
    summary = {
        "recipe": config.recipe, "run_dir": str(run_dir), "dataset": data.source, "model": "name_rnn",
        "cell": config.cell, "balance": config.balance, "test_accuracy": result.pop("test_accuracy"),
        "test_macro_f1": result["macro"]["f1"], **result,
        "names": {k: len(v) for k, v in rows.items()}, "train_seconds": round(train_seconds, 3),
        "names_per_s": round(len(train_rows) * len(history) / train_seconds, 1), "epochs": len(history),
        "best_epoch": best["best"]["epoch"], "best_valid_loss": best["best"]["score"],
        "classes": list(data.classes), "device": str(device), "dry_run": dry_run, **environment(),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[NamesConfig, torch.nn.Module, dict]:
    """A names run's config, its best model (weights only) in eval mode, and the checkpoint's plain data."""
    config, model, state = load_best(run_dir, "names", device)
    if not isinstance(state.get("alphabet"), str):
        raise CheckpointError(f"{Path(run_dir) / 'best.pt'}: no alphabet saved with the model")
    return config, model, state


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """Reload ``best.pt``, split the names exactly as ``train`` did and score the test names again."""
    run_dir = Path(run_dir)
    device = resolve_device(device_name or "cpu")
    config, model, state = load_run(run_dir, device)
    data = load_names(data_path or config.data, state["alphabet"])
    if data.classes != state["classes"]:
        raise DataError(f"{data.source}: classes {data.classes} are not the run's {state['classes']}")
    rows = split_names(data, config)
    test = NameBatches([data.names[i] for i in rows["test"].tolist()], data.labels[rows["test"]],
                       config.eval_batch_size, alphabet=state["alphabet"], device=device)
    probs, targets = predict_probs(model, test, device)
    result = score(probs, targets, data.classes)
    result["test_macro_f1"] = result["macro"]["f1"]
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        result["summary_test_accuracy"] = json.loads(summary_path.read_text(encoding="utf-8")).get("test_accuracy")
    return {"run_dir": str(run_dir), "recipe": config.recipe, "classes": list(data.classes), **result}


@torch.no_grad()
def predict(run_dir: str | Path, inputs: Sequence[str], top_k: int = 3) -> list[dict]:
    """The ``top_k`` most likely classes (languages) with probabilities for each name in ``inputs``."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if not inputs:
        raise ConfigError("predict: give at least one name")
    _, model, state = load_run(run_dir, "cpu")
    folded = [fold_ascii(name, state["alphabet"]) for name in inputs]
    empty = [name for name, f in zip(inputs, folded) if not f]
    if empty:
        raise DataError(f"no letters the model knows in {', '.join(repr(n) for n in empty)} "
                        f"(expected a name in Latin letters)")
    probs = model(encode_names(folded, state["alphabet"])).softmax(1)
    values, indices = probs.topk(min(top_k, probs.shape[1]), dim=1)
    classes = state["classes"]
    return [{"file": name, "top": [{"class": classes[i], "probability": round(p, 6)}
                                   for p, i in zip(v.tolist(), ix.tolist())]}
            for name, v, ix in zip(inputs, values, indices)]
