"""Interpretation of an image-classifier run: which classes it mixes up and which images it gets most wrong.

``interpret`` reloads a run's best checkpoint, predicts its validation split (rebuilt exactly
as training drew it: same seed, same stratified split) or its test split, and writes
``confusion.png`` and ``top_losses.png`` (the images with the highest cross-entropy loss, each
with its predicted and true class and their probabilities) into ``RUN/interpret-SPLIT/``. It
returns the confusion matrix, the most-confused class pairs, per-class precision, recall and F1,
and the top losses. Figures use matplotlib's object API, as ``interpret.plots`` explains.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
from matplotlib.figure import Figure

from nnlab.config import load_config
from nnlab.data.batches import TensorBatches, stratified_split
from nnlab.data.vision import ImageDataset, load_image_dataset
from nnlab.engine.checkpoint import atomic_write_bytes
from nnlab.engine.learner import predict_probs, resolve_device, resolve_precision
from nnlab.errors import ConfigError
from nnlab.interpret.plots import DPI, plot_confusion
from nnlab.runs import load_run, score

SPLITS = ("valid", "test")


def split_images(config: Any, data: ImageDataset, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, labels and indices (into the training or test images) of the run's ``split``.

    ``valid`` is the hold-out the run validated on: ``stratified_split`` of the training images
    with the run's seed and ``valid_fraction``, the first draw of the run's generator.
    """
    if split == "test":
        return data.test_images, data.test_labels, torch.arange(len(data.test_labels))
    if split != "valid":
        raise ConfigError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    _, valid_idx = stratified_split(data.train_labels, config.valid_fraction,
                                    torch.Generator().manual_seed(config.seed))
    if not len(valid_idx):
        raise ConfigError("this run has no validation split (valid_fraction 0): use --split test")
    return data.train_images[valid_idx], data.train_labels[valid_idx], valid_idx


def top_losses(probs: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest cross-entropy losses ``-log p(true class)``, largest first, and their positions."""
    losses = -probs[torch.arange(len(targets)), targets].clamp_min(1e-12).log()
    return losses.topk(min(k, len(losses)))


def plot_top_losses(images: torch.Tensor, rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """A grid of uint8 images [K, C, H, W], each titled with its predicted and true class, their
    probabilities and the loss (``rows`` as ``interpret`` returns them); returns ``path``."""
    k = len(rows)
    cols = max(1, math.ceil(math.sqrt(k)))
    lines = max(1, math.ceil(k / cols))
    fig = Figure(figsize=(2.4 * cols, 2.6 * lines), layout="tight")
    axes = fig.subplots(lines, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= k:
            continue
        image = images[i]
        if image.shape[0] == 1:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image.permute(1, 2, 0).numpy())
        r = rows[i]
        ax.set_title(f"pred {r['predicted']} ({r['probability']:.2f})\ntrue {r['true']} ({r['true_probability']:.2f})"
                     f"\nloss {r['loss']:.2f}", fontsize=8)
    fig.suptitle("Highest-loss images: predicted / true (probability)")
    return atomic_write_bytes(Path(path), lambda handle: fig.savefig(handle, format="png", dpi=DPI))


def interpret(run_dir: str | Path, split: str = "valid", top: int = 16, out: str | Path | None = None,
              data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """Confusion matrix, most-confused pairs, per-class report and the ``top`` highest-loss images
    of an image run on its ``split`` (valid or test); the PNGs go to ``out`` (default RUN/interpret-SPLIT)."""
    if top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    run_dir = Path(run_dir)
    kind = load_config(run_dir / "config.json").kind if (run_dir / "config.json").is_file() else "image"
    if kind != "image":
        raise ConfigError(f"interpret: {run_dir} is a {kind} run; interpret explains image classifiers")
    config, model, state = load_run(run_dir, "cpu")
    device = resolve_device(device_name or config.device)
    model.to(device)
    data = load_image_dataset(config.dataset, data_path or config.data)
    images, labels, indices = split_images(config, data, split)
    batches = TensorBatches(images, labels, config.eval_batch_size, mean=state["mean"], std=state["std"],
                            device=device, channels_last=config.channels_last)
    probs, targets = predict_probs(model, batches, device, resolve_precision(config.precision, device), config.tta)
    classes = list(state["classes"])
    result = score(probs, targets, classes, k=10)
    result["accuracy"] = result.pop("test_accuracy")
    losses, order = top_losses(probs, targets, top)
    predicted = probs.argmax(1)
    rows = [{"index": int(indices[i]), "true": classes[int(targets[i])], "predicted": classes[int(predicted[i])],
             "probability": round(probs[i, predicted[i]].item(), 6),
             "true_probability": round(probs[i, targets[i]].item(), 6), "loss": round(loss, 6)}
            for i, loss in zip(order.tolist(), losses.tolist())]
    folder = Path(out) if out else run_dir / f"interpret-{split}"
    folder.mkdir(parents=True, exist_ok=True)
    confusion_png = plot_confusion(torch.tensor(result["confusion"]), classes, folder / "confusion.png")
    losses_png = plot_top_losses(images[order], rows, folder / "top_losses.png")
    return {"run_dir": str(run_dir), "split": split, "images": len(targets), "classes": classes, **result,
            "top_losses": rows, "confusion_png": str(confusion_png), "top_losses_png": str(losses_png)}
