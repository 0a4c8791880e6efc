"""The run kit for your own model: ``nnlab.fit``, ``nnlab.lr_find`` and ``nnlab.interpret``.

``fit`` takes any ``nn.Module`` and training data (a ``torch.utils.data.Dataset``, a
``DataLoader`` or any iterable of ``(x, y)`` batches) and trains it exactly as a recipe trains
its model, through the same ``train_model``: the run directory (``config.json``,
``metrics.jsonl``, ``best.pt``/``last.pt``, ``curves.png``, ``lr.png``, ``summary.json``),
validation, best-epoch selection, schedules, early stopping, clipping, mixed precision, a time
budget, and exact resume (``fit(model, data, resume=RUN_DIR)``). It returns a ``Run`` with the
history, the model at its best epoch, ``evaluate(data)`` and ``predict(x)``.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TextIO

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nnlab.config import RunConfig, apply_overrides, load_config
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.engine.learner import autocast, count_correct, resolve_device, resolve_precision
from nnlab.errors import CheckpointError, ConfigError
from nnlab.inspection.report import explain
from nnlab.kit.kind import Kind
from nnlab.kit.runs import Run
from nnlab.kit.run import RunStart, Spec, find_lr, start_run, stopped_summary, summarize, train_model


@dataclass
class CustomConfig(RunConfig):
    """A run of your own model through ``nnlab.fit``: the shared settings, and the model's class name."""

    kind: str = "custom"
    model: str = ""                     # the model's class name (a record: the model itself comes from you)


class DeviceBatches:
    """``(x, y)`` batches of ``source`` moved to ``device`` (non-blocking where the memory is pinned).

    ``generator`` is the ``DataLoader``'s shuffling generator where there is one, so a run's
    checkpoints save and restore the data order.
    """

    def __init__(self, source: Iterable, device: torch.device) -> None:
        self.source = source
        self.device = device
        self.generator = getattr(source, "generator", None)
        # a DataLoader over a sized map-style Dataset says how many samples a batch draws from
        dataset, self.batch_size = getattr(source, "dataset", None), getattr(source, "batch_size", None)
        sized = isinstance(dataset, Dataset) and not isinstance(dataset, torch.utils.data.IterableDataset)
        self.samples = len(dataset) if sized and hasattr(dataset, "__len__") else None  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.source:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def batches_of(data: Any, batch_size: int, device: torch.device, shuffle: bool, seed: int) -> DeviceBatches:
    """``data`` as sized batches on ``device``: a ``Dataset`` goes into a ``DataLoader`` (shuffled by a
    generator seeded with ``seed`` when ``shuffle``); a ``DataLoader`` or a list of batches is used as is."""
    if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        data = DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)
    if not hasattr(data, "__len__"):
        raise ConfigError("fit: the data must be a Dataset, a DataLoader or a sized iterable of (x, y) batches "
                          f"(got {type(data).__name__} without a length)")
    return DeviceBatches(data, device)


def pass_over(run: Run, data: Any, batch_size: int | None = None,
              keep_inputs: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One pass of ``run``'s model over ``data`` (as ``fit`` takes it): outputs, targets and
    (``keep_inputs``) the inputs, on the CPU, in order."""
    model = run.model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    precision = resolve_precision(run.config.precision, device)
    outs, targets, inputs = [], [], []
    with torch.no_grad():
        for x, y in batches_of(data, batch_size or run.config.eval_batch_size, device, False, 0):
            with autocast(device, precision):
                outs.append(model(x).float().cpu())
            targets.append(y.cpu())
            if keep_inputs:
                inputs.append(x.cpu())
    return torch.cat(outs), torch.cat(targets), torch.cat(inputs) if keep_inputs else None


def evaluate_on(run: Run, data: Any, batch_size: int | None = None) -> dict[str, Any]:
    """Mean loss of ``run``'s model over ``data`` and, for a classifier (2-D outputs, integer targets),
    its accuracy; the loss is the run's own (cross-entropy where the run does not say)."""
    outputs, targets, _ = pass_over(run, data, batch_size)
    loss = run.loss if run.loss is not None else nn.CrossEntropyLoss()
    result: dict[str, Any] = {"loss": float(loss(outputs, targets)), "n": len(targets)}
    if outputs.ndim == 2 and not targets.is_floating_point():
        result["accuracy"] = (outputs.argmax(1) == targets).float().mean().item()
    return result


def _run_dir(model: nn.Module, out: str | Path | None, suffix: str = "") -> Path:
    return Path(out) if out else Path("runs") / f"{type(model).__name__.lower()}{suffix}-{time.strftime('%Y%m%d-%H%M%S')}"


def fit(model: nn.Module, train: Any, valid: Any = None, *, loss: Callable | None = None,
        metric: Callable | None = count_correct, epochs: int | None = None, lr: float | None = None,
        schedule: str | None = None, batch_size: int | None = None, out: str | Path | None = None,
        resume: str | Path | None = None, callbacks: Sequence[Any] = (), stream: TextIO | None = None,
        **settings: Any) -> Run:
    """Train your ``model`` on ``train`` (validated on ``valid``) as a recipe is trained; returns the ``Run``.

    ``train``/``valid``: a ``Dataset`` (batched by ``batch_size``, the training data shuffled by
    a generator seeded with ``seed``), a ``DataLoader``, or a sized iterable of ``(x, y)``
    batches. ``loss`` defaults to cross-entropy; ``metric`` counts correct predictions for the
    ``acc`` columns (``None`` for regression). ``settings`` are any of the run config's fields
    (``nnlab.config.RunConfig``: ``weight_decay``, ``optimizer``, ``clip``, ``patience``,
    ``monitor``, ``precision``, ``device``, ``seed``, ``time_budget``, ``stop_after_epochs``,
    ``lr_mult``, ``freeze_epochs``, ...). The run directory is ``out`` (default
    ``runs/<model class>-<timestamp>``); ``resume=RUN_DIR`` continues an interrupted run of the
    same model and data (settings given here override its saved ones) and ends exactly as the
    uninterrupted run would have. ``callbacks`` are extra ``nnlab.Callback``s.
    """
    overrides = {key: value for key, value in {"epochs": epochs, "lr": lr, "schedule": schedule,
                                               "batch_size": batch_size, **settings}.items() if value is not None}
    if resume is not None:
        path = Path(resume) / "config.json"
        if path.is_file() and load_config(path).kind != "custom":
            raise CheckpointError(f"resume={resume}: a recipe's run; continue it with nnlab train --resume {resume}")
        start = start_run(None, overrides=overrides, resume=resume, kind=CustomKind())
    else:
        config = apply_overrides(CustomConfig(model=type(model).__name__), overrides)
        start = start_run(config, _run_dir(model, out))
    config = start.config
    train_batches = batches_of(train, config.batch_size, start.device, True, config.seed)
    valid_batches = batches_of(valid, config.eval_batch_size, start.device, False, 0) if valid is not None else None
    loss = loss if loss is not None else nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    spec = Spec(model, train_batches, valid_batches, loss, metric=metric, generator=train_batches.generator,
                saved={"model_class": f"{type(model).__module__}.{type(model).__qualname__}"},
                callbacks=list(callbacks))
    with start:  # the run directory is locked while it trains
        trained = train_model(start, spec, stream if stream is not None else sys.stderr)
        if trained.stopped:
            summary = stopped_summary(start, trained)
        else:
            best_row = trained.history[trained.best["best"]["epoch"] - 1] if trained.best else trained.history[-1]
            summary = summarize(start, trained, {
                "model": config.model, "parameters": sum(p.numel() for p in model.parameters()),
                **{key: best_row.get(key) for key in ("valid_loss", "valid_acc", "train_loss", "train_acc")}})
    return Run(start.run_dir, CustomKind(), config=config, model=model.eval(), summary=summary,
               history=trained.history, loss=loss, device=start.device)


def lr_find(model: nn.Module, train: Any, *, loss: Callable | None = None, out: str | Path | None = None,
            steps: int = 200, start_lr: float = 1e-7, end_lr: float = 10.0, batch_size: int | None = None,
            **settings: Any) -> dict[str, Any]:
    """Sweep the learning rate of your ``model`` on ``train`` (Smith's LR range test, fastai's
    ``lr_find``); the model's weights are put back afterwards. Writes ``lr_find.png`` and
    ``lr_find.json`` to ``out`` (default ``runs/<model class>-lrfind-<timestamp>``); returns the
    suggestions (``suggested_lr``: the loss minimum's LR over 10)."""
    overrides = {key: value for key, value in {"batch_size": batch_size, **settings}.items() if value is not None}
    config = apply_overrides(CustomConfig(model=type(model).__name__), overrides)
    device = resolve_device(config.device)
    spec = Spec(model, batches_of(train, config.batch_size, device, True, config.seed), None,
                loss if loss is not None else nn.CrossEntropyLoss())
    return find_lr(config, spec, device, _run_dir(model, out, "-lrfind"), {"model": config.model}, steps,
                   start_lr, end_lr)


def interpret(run: Run, data: Any, classes: Sequence[str] | None = None, top: int = 16,
              out: str | Path | None = None) -> dict[str, Any]:
    """Confusion matrix, most-confused pairs, per-class precision/recall/F1 and the ``top``
    highest-loss examples of a classifier ``run`` on ``data``; writes ``confusion.png`` (and, for
    image inputs, ``top_losses.png``) to ``out`` (default ``RUN/interpret``)."""
    logits, targets, inputs = pass_over(run, data, keep_inputs=True)
    if logits.ndim != 2 or targets.is_floating_point():
        raise ConfigError("interpret: explains classifiers (outputs [N, classes], integer targets)")
    names = list(classes) if classes is not None else [str(i) for i in range(logits.shape[1])]
    if len(names) != logits.shape[1]:
        raise ConfigError(f"interpret: {len(names)} class names for a model of {logits.shape[1]} outputs")
    images = _images(inputs)
    folder = Path(out) if out else (run.run_dir or Path(".")) / "interpret"
    return explain(logits.softmax(1), targets, names, top, folder, images)


def _images(x: torch.Tensor) -> torch.Tensor | None:
    """Inputs ``x`` as uint8 images [N, C, H, W] (each stretched to 0..255) when they are images of
    one or three channels, else ``None``."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        return None
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x - low) / (high - low).clamp_min(1e-12) * 255).round().to(torch.uint8)


def _from_python(run_dir: Any) -> ConfigError:
    return ConfigError(f"{run_dir} is a run of your own model (nnlab.fit): nnlab cannot rebuild that model; "
                       f"open it with nnlab.load({str(run_dir)!r}, model=YourModel()) (run.evaluate(data), "
                       f"run.predict(x)), or continue it with nnlab.fit(model, data, resume={str(run_dir)!r})")


class CustomKind(Kind):
    """Runs of your own ``nn.Module`` through ``nnlab.fit``. The model's code is yours, so nnlab never
    rebuilds it: ``nnlab.load(RUN, model=YourModel())`` puts the best weights (a state dict, no
    pickled code) into a fresh instance you give, whatever module its class lives in."""

    name = "custom"
    what = "run of your own model (nnlab.fit)"
    config = CustomConfig
    capabilities = frozenset({"resume"})
    metrics = ("valid_acc", "valid_loss")

    def scores(self, result: dict[str, Any]) -> list[str]:
        parts = [f"{key.replace('_', ' ')} {result[key]:.4f}" for key in ("valid_acc", "valid_loss")
                 if isinstance(result.get(key), float)]
        return parts

    def train(self, start: RunStart, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
        raise _from_python(start.run_dir)

    def evaluate(self, run_dir: str | Path, data_path: str | None = None, device_name: str | None = None,
                 **options: Any) -> dict[str, Any]:
        raise _from_python(run_dir)

    def predict(self, run_dir: str | Path, inputs: Sequence[Any], top_k: int = 3, **options: Any) -> Any:
        raise _from_python(run_dir)

    def load_run(self, run_dir: str | Path, device: Any = "cpu") -> tuple[Any, Any, dict[str, Any]]:
        raise _from_python(run_dir)

    def load_weights(self, run_dir: str | Path, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        """``model`` with the run's best weights (``best.pt``, weights only), in eval mode."""
        path = Path(run_dir) / "best.pt"
        state = load_checkpoint(path, map_location="cpu")
        try:
            model.load_state_dict(state["model"])
        except (KeyError, RuntimeError) as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            # torch's first line only says "Error(s) in loading state_dict for Net:"; the next names a tensor
            raise CheckpointError(f"{path}: the weights do not fit the model given ({type(model).__name__}): "
                                  f"{lines[1] if len(lines) > 1 else lines[0]}") from None
        return model.eval(), {key: value for key, value in state.items() if key in ("model_class", "epoch", "kind")}

    def predict_run(self, run: Run, inputs: Any, top_k: int = 3, batch_size: int | None = None,
                    **options: Any) -> torch.Tensor:
        """The model's outputs for a tensor of inputs ``inputs`` (or for the inputs of its batches)."""
        if not isinstance(inputs, torch.Tensor):
            return pass_over(run, inputs, batch_size)[0]
        model = run.model.eval()
        device = next(model.parameters(), torch.empty(0)).device
        precision = resolve_precision(run.config.precision, device)
        outs = []
        with torch.no_grad():
            for chunk in inputs.split(batch_size or run.config.eval_batch_size):
                with autocast(device, precision):
                    outs.append(model(chunk.to(device)).float().cpu())
        return torch.cat(outs)

    def resume(self, run_dir: str | Path, overrides: dict[str, Any] | None = None,
               stream: TextIO | None = None) -> dict[str, Any]:
        raise ConfigError(f"{run_dir}: a run of your own model continues with its model and data: "
                          f"nnlab.fit(model, data, resume={str(run_dir)!r})")
