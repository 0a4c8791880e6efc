"""Image classification runs: a registered model on an in-memory image dataset (Fashion-MNIST,
MNIST, CIFAR-10, an image folder), batched and augmented as whole tensors.

``train`` holds out a stratified validation split of the training images (it picks
``best.pt``), trains through the run kit and scores the best epoch on the dataset's test
split: ``config.json``, ``metrics.jsonl``, ``best.pt``/``last.pt``, ``curves.png``, ``lr.png``,
``confusion.png`` and ``summary.json``. ``evaluate`` and ``predict`` rebuild the model from the
best checkpoint (weights only, never pickled code); ``lr_find`` sweeps the learning rate.
"""
from __future__ import annotations

import io
from csv import writer as csv_writer
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence, TextIO

import torch

from nnlab.config import RunConfig
from nnlab.data.batches import TensorBatches, make_augment, stratified_split
from nnlab.data.images import load_image
from nnlab.data.vision import ImageDataset, load_image_dataset
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.engine.ema import check_decay
from nnlab.engine.learner import predict_probs, resolve_device, resolve_precision
from nnlab.engine.metrics import check_predict_args, ranked, score
from nnlab.engine.optim import freeze
from nnlab.errors import CheckpointError, ConfigError, DataError
from nnlab.files import atomic_write
from nnlab.kit.kind import Kind, Option
from nnlab.kit.rundir import check_output, load_best, read_summary, rebuild_args
from nnlab.kit.run import (RunStart, Spec, find_lr, other_rank, plot_run_confusion, stopped_summary, summarize,
                           train_model)
from nnlab.models import create_model


@dataclass
class ImageConfig(RunConfig):
    """Everything that defines an image-classification run; ``config.json`` in the run directory holds it."""

    kind: str = "image"
    dataset: str = "fashion-mnist"
    model: str = "cnn"
    model_args: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 256
    eval_batch_size: int = 1000
    weight_decay: float = 5e-4
    monitor: str = "valid_acc"
    precision: str = "auto"
    freeze: tuple[str, ...] = ()        # layer groups not trained: stem, body (everything but the head), head
    augment: tuple[str, ...] = ()       # batched augmentations, see nnlab.data.batches.make_augment
    tta: bool = False                   # average predictions with the mirrored image at test time
    channels_last: bool = True
    ema: float = 0.0                    # decay of a moving average of the weights (0: none), see nnlab.engine.ema

    def check(self) -> None:
        """Reject settings no image run could use, naming the setting."""
        super().check()
        check_decay(self.ema)


def test_batches(config: ImageConfig, data: ImageDataset, device: torch.device) -> TensorBatches:
    """The test split in fixed order, batched as every evaluation of the run batches it."""
    return TensorBatches(data.test_images, data.test_labels, config.eval_batch_size, mean=data.mean,
                         std=data.std, device=device, channels_last=config.channels_last)


@dataclass
class ImageData:
    """A run's data as training draws it: the dataset, the seeded split's batches and the generator."""

    data: ImageDataset
    train: TensorBatches
    valid: TensorBatches | None
    generator: torch.Generator
    device: torch.device


def prepare(config: ImageConfig, dry_run: bool = False, device: torch.device | None = None) -> ImageData:
    """Load the dataset and batch the seeded split, the same way for a new run, a resumed one and an
    LR sweep, so that a resumed run draws exactly the numbers the uninterrupted run would have drawn.
    ``device``: the run's (``RunStart.device``, a rank's own GPU under torchrun); default the config's."""
    device = device if device is not None else resolve_device(config.device)
    data = load_image_dataset(config.dataset, config.data)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # model initialization and dropout
    train_idx, valid_idx = stratified_split(data.train_labels, config.valid_fraction, generator)
    if dry_run:
        train_idx, valid_idx = train_idx[: 4 * config.batch_size], valid_idx[: config.eval_batch_size]
    common = {"mean": data.mean, "std": data.std, "device": device, "channels_last": config.channels_last}
    train = TensorBatches(data.train_images[train_idx], data.train_labels[train_idx], config.batch_size,
                          shuffle=True, drop_last=True, generator=generator, augment=make_augment(config.augment),
                          **common)
    valid = (TensorBatches(data.train_images[valid_idx], data.train_labels[valid_idx], config.eval_batch_size,
                           **common) if len(valid_idx) else None)
    return ImageData(data, train, valid, generator, device)


def build_model(config: ImageConfig, n_classes: int) -> tuple[torch.nn.Module, list[str]]:
    """The recipe's model with ``n_classes`` outputs, and the layer groups ``freeze`` stopped training."""
    model = create_model(config.model, n_classes=n_classes, **config.model_args)
    return model, freeze(model, config.freeze)


def saved(config: ImageConfig, data: ImageDataset) -> dict[str, Any]:
    """What an image checkpoint holds besides the training state: what rebuilds the model and its input."""
    return {"model_name": config.model, "model_args": rebuild_args(config.model_args), "classes": list(data.classes),
            "mean": list(data.mean), "std": list(data.std), "input_shape": list(data.train_images.shape[1:])}


def train(start: RunStart, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
    """Train the image run ``start`` describes; returns the summary (rank 0 of a torchrun job) or
    ``{"rank": R, ...}`` (the other ranks: the kit splits the batches and joins the processes)."""
    config = start.config
    prepared = prepare(config, dry_run, start.device)
    model, frozen = build_model(config, len(prepared.data.classes))
    spec = Spec(model, prepared.train, prepared.valid, torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
                saved=saved(config, prepared.data), generator=prepared.generator,
                epochs=1 if dry_run else config.epochs, dry_run=dry_run, channels_last=config.channels_last,
                ema=config.ema)
    trained = train_model(start, spec, stream)
    if not trained.main:  # rank 0 scores and writes the run
        return other_rank(start, trained)
    if trained.stopped:
        return stopped_summary(start, trained)
    data = prepared.data
    probs, targets = trained.learner.predict(test_batches(config, data, prepared.device), tta_flip=config.tta)
    result = score(probs, targets, data.classes)
    plot_run_confusion(start, result["confusion"], data.classes)
    images_seen = trained.learner.step * config.batch_size  # steps taken (a share of each epoch, a budget)
    return summarize(start, trained, {
        "dataset": config.dataset, "dataset_source": data.source, "model": config.model, **result,
        "images_per_s": round(images_seen / trained.train_seconds, 1) if trained.train_seconds else None,
        "schedule": config.schedule, "frozen": frozen,
        **({"freeze_epochs": trained.freeze_epochs, "lr_mult": config.lr_mult}
           if config.schedule == "fine-tune" else {}),
        "classes": list(data.classes), "tta": config.tta}, dry_run)


def lr_find(config: ImageConfig, out: Path, steps: int = 200, start_lr: float = 1e-7,
            end_lr: float = 10.0) -> dict[str, Any]:
    """Sweep the learning rate on the run ``config`` describes (its model and training batches);
    writes ``out/lr_find.png`` and ``out/lr_find.json``, returns the suggestions."""
    prepared = prepare(config)
    model, _ = build_model(config, len(prepared.data.classes))
    spec = Spec(model, prepared.train, None, torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
                channels_last=config.channels_last)
    return find_lr(config, spec, prepared.device, out, {"recipe": config.recipe}, steps, start_lr, end_lr)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[ImageConfig, torch.nn.Module, dict]:
    """Rebuild an image run's model from ``config.json`` and ``best.pt`` (weights only) in eval mode."""
    config, model, state = load_best(run_dir, "image", device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return config, model, state


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None,
             ensemble: str | None = None) -> dict[str, Any]:
    """Reload the best checkpoint and score it on the test split, exactly as ``train`` did.

    ``ensemble="snapshots"`` scores the average of the class probabilities of every SGDR
    snapshot (``snapshots/cycle-K.pt``) instead, and reports each snapshot's own accuracy.
    """
    run_dir = Path(run_dir)
    from nnlab.config import load_config
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
    summary = read_summary(run_dir)
    if summary is not None:
        result["summary_test_accuracy"] = summary.get("test_accuracy")
    return {"run_dir": str(run_dir), "recipe": config.recipe, "classes": list(data.classes), **result}


def predict(run_dir: str | Path, files: Sequence[str | Path], top_k: int = 3, invert: str = "auto",
            csv: str | Path | None = None) -> list[dict] | dict[str, Any]:
    """Top-k classes with probabilities for each image file, converted to the model's input; a folder
    among ``files`` stands for the images under it (sorted, subfolders included).

    Images are decoded and predicted ``eval_batch_size`` at a time, so a folder of any size fits
    in memory. With ``csv`` (the output file) every image's row goes there instead: ``file``,
    ``predicted`` and one ``probability_CLASS`` column per class, written atomically; the result
    says how many rows and how many of each predicted class.
    """
    check_predict_args(files, top_k, "image file or folder")
    paths = image_files(files)
    config, model, state = load_run(run_dir, "cpu")
    batches = predicted_batches(config, model, state, paths, invert)
    if csv is None:
        return [row for names, probs in batches for row in ranked(probs, state["classes"], names, top_k)]
    return write_predictions(check_output(csv, *paths), state["classes"], batches)


def image_files(inputs: Sequence[str | Path]) -> list[str | Path]:
    """The image files ``inputs`` name: a file as given, a folder as the images under it (sorted)."""
    from nnlab.data.folder import EXTENSIONS
    files: list[str | Path] = []
    for given in inputs:
        if not Path(given).is_dir():
            files.append(given)
            continue
        found = sorted(p for p in Path(given).rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        if not found:
            raise DataError(f"{given}: a folder with no image files ({', '.join(EXTENSIONS)}) in it")
        files.extend(found)
    return files


def predicted_batches(config: ImageConfig, model: torch.nn.Module, state: dict, files: Sequence[str | Path],
                      invert: str) -> Iterator[tuple[Sequence[str | Path], torch.Tensor]]:
    """Each ``eval_batch_size`` of ``files`` decoded and predicted: the files and their class probabilities.

    Decoding takes two thirds of the time for 28x28 PNGs (docs/benchmarks.md); decoding the next
    batch in a helper thread meanwhile measured no clear gain on 2 cores, so this stays one loop.
    """
    channels, height, width = state["input_shape"]
    for first in range(0, len(files), config.eval_batch_size):
        chunk = files[first:first + config.eval_batch_size]
        images = torch.stack([load_image(f, (height, width), channels, invert=invert) for f in chunk])
        batch = TensorBatches(images, torch.zeros(len(images), dtype=torch.long), len(images), mean=state["mean"],
                              std=state["std"], channels_last=config.channels_last)
        probs, _ = predict_probs(model, batch, torch.device("cpu"), "fp32", config.tta)
        yield chunk, probs


def write_predictions(out: Path, classes: Sequence[str], batches: Iterator[tuple[Sequence, torch.Tensor]]) -> dict:
    """Write each batch's rows (``file``, ``predicted``, ``probability_CLASS``...) to ``out`` as they come,
    atomically (the file appears whole at the end, or not at all)."""
    counts = torch.zeros(len(classes), dtype=torch.long)

    def write(handle: Any) -> None:
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        writer = csv_writer(text, lineterminator="\n")
        writer.writerow(["file", "predicted", *(f"probability_{c}" for c in classes)])
        for names, probs in batches:
            best = probs.argmax(1)
            counts.add_(torch.bincount(best, minlength=len(classes)))
            writer.writerows([str(name), classes[i], *(f"{v:.6f}" for v in p)]
                             for name, i, p in zip(names, best.tolist(), probs.tolist()))
        text.flush()
        text.detach()  # the handle stays open for atomic_write to fsync and close

    atomic_write(out, write)
    return {"out": str(out), "rows": int(counts.sum()), "predicted_counts": dict(zip(classes, counts.tolist()))}


class ImageKind(Kind, functions=(train, evaluate, predict, load_run)):
    """Image classifiers: any registered model on an in-memory image dataset (Fashion-MNIST, MNIST,
    CIFAR, a folder of images); the one kind that can be exported, served through ONNX and inspected."""

    name = "image"
    what = "image run"
    config = ImageConfig
    capabilities = frozenset({"resume", "ddp", "serve", "export", "interpret", "cam", "filters", "summary",
                              "lr-find", "show"})
    eval_options = ("ensemble",)
    predict_options = ("invert", "csv")
    options = (Option("--augment", "augment", "batched augmentations, comma-separated (flip, crop, ...)",
                      metavar="NAMES"),)

    def lr_find(self, config: Any, out: Path, steps: int = 200, start_lr: float = 1e-7,
                end_lr: float = 10.0) -> dict[str, Any]:
        return lr_find(config, out, steps=steps, start_lr=start_lr, end_lr=end_lr)

    def predict_run(self, run: Any, inputs: Any, top_k: int = 3, invert: str = "auto", **options: Any) -> Any:
        """Image files or folders as ``nnlab predict`` takes them, and also PIL images and uint8
        tensors [C, H, W] in memory (named ``<image N>`` in the result)."""
        from nnlab.kit.runs import as_list
        items = as_list(inputs)
        if all(isinstance(item, (str, Path)) for item in items):
            return predict(run.run_dir, items, top_k=top_k, invert=invert, **options)
        config, model, state = load_run(run.run_dir, "cpu")
        channels, height, width = state["input_shape"]
        images = torch.stack([pixels_of(item, (height, width), channels, invert) for item in items])
        batch = TensorBatches(images, torch.zeros(len(images), dtype=torch.long), len(images), mean=state["mean"],
                              std=state["std"], channels_last=config.channels_last)
        probs, _ = predict_probs(model, batch, torch.device("cpu"), "fp32", config.tta)
        return ranked(probs, state["classes"], [f"<image {i}>" for i in range(len(items))], top_k)

    def cam(self, run_dir: str | Path, image: Any, **options: Any) -> dict[str, Any]:
        from nnlab.kinds.explain import class_activation
        return class_activation(run_dir, image, **options)

    def filters(self, run_dir: str | Path, **options: Any) -> dict[str, Any]:
        from nnlab.kinds.explain import layer_filters
        return layer_filters(run_dir, **options)

    def interpret(self, run_dir: str | Path, **options: Any) -> dict[str, Any]:
        from nnlab.kinds.explain import interpret
        return interpret(run_dir, **options)

    def summary_table(self, run_dir: str | Path, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
        from nnlab.kinds.explain import run_summary
        return run_summary(run_dir, input_shape)

    def export(self, run_dir: str | Path, fmt: str, out: str | Path | None = None, **options: Any) -> dict[str, Any]:
        from nnlab.kinds.export import export
        return export(run_dir, fmt, out=out, **options)

    def batch_figure(self, config: Any, n: int = 16) -> Any:
        """The first ``n`` images of the run's training split (the seeded split of ``prepare``), with their classes."""
        from nnlab.inspection.report import image_grid_figure
        data = load_image_dataset(config.dataset, config.data)
        train_idx, _ = stratified_split(data.train_labels, config.valid_fraction,
                                        torch.Generator().manual_seed(config.seed))
        rows = train_idx[:n]
        return image_grid_figure(data.train_images[rows], [data.classes[int(k)] for k in data.train_labels[rows]],
                                 title=f"{config.dataset}: the first {len(rows)} training images")

    def results(self, run: Any, n: int = 16) -> Any:
        """The first ``n`` test images with their true and predicted classes, mistakes in red."""
        from nnlab.inspection.report import results_figure
        config, model, state = load_run(run.run_dir, "cpu")
        data = load_image_dataset(config.dataset, config.data)
        images, labels = data.test_images[:n], data.test_labels[:n]
        batch = TensorBatches(images, labels, len(images), mean=data.mean, std=data.std,
                              channels_last=config.channels_last)
        probs, _ = predict_probs(model, batch, torch.device("cpu"), "fp32", config.tta)
        return results_figure(images, labels, probs, list(data.classes))

def pixels_of(item: Any, size: tuple[int, int], channels: int, invert: str) -> torch.Tensor:
    """``item`` (a file, a PIL image or a uint8 tensor [C, H, W]) as the model's uint8 input [C, H, W]."""
    from PIL import Image

    from nnlab.data.images import load_pil_image
    if isinstance(item, (str, Path)):
        return load_image(item, size, channels, invert=invert)
    if isinstance(item, Image.Image):
        return load_pil_image(item, size, channels, invert=invert)
    if isinstance(item, torch.Tensor) and item.dtype == torch.uint8 and tuple(item.shape) == (channels, *size):
        return item
    raise DataError(f"predict: expected image files, PIL images or uint8 tensors of shape "
                    f"{[channels, *size]}; got {type(item).__name__}"
                    + (f" {item.dtype} {list(item.shape)}" if isinstance(item, torch.Tensor) else ""))
