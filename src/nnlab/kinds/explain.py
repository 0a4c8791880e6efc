"""Inspection of a trained image run: its model's summary, Grad-CAM, filters and feature maps, and
the interpretation of its predictions (confusion, most-confused pairs, top losses).

The image kind's ``cam``, ``filters``, ``interpret`` and ``summary_table`` (and so ``Run``'s
methods and the CLI commands over them). Each reads the run's best model, converts inputs
exactly as ``nnlab predict`` does, and calls the pure functions of ``nnlab.inspection``, which
know nothing of runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from nnlab.data.batches import TensorBatches, stratified_split
from nnlab.data.vision import ImageDataset, load_image_dataset
from nnlab.engine.learner import predict_probs, resolve_device, resolve_precision
from nnlab.errors import ConfigError
from nnlab.files import save_figure
from nnlab.inspection.cam import cam_figure, grad_cam
from nnlab.inspection.filters import grid_figure, scaled
from nnlab.inspection.report import explain, save_figures
from nnlab.inspection.summary import summarize
from nnlab.kinds.image import pixels_of
from nnlab.kit.rundir import check_output
from nnlab.kit.runs import Result


def load_image_run(run_dir: str | Path, command: str = "") -> tuple[Any, nn.Module, dict]:
    """The config, best model (on the CPU) and checkpoint of the image run in ``run_dir``."""
    from nnlab.kinds.image import load_run
    return load_run(run_dir, "cpu")


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



def run_summary(run_dir: str | Path, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """Per-layer summary of an image run's model, on its own input size unless ``input_shape`` is given."""
    _, model, state = load_image_run(run_dir)
    return {"target": str(run_dir), "model": state["model_name"],
            **summarize(model, input_shape or state["input_shape"])}


def class_activation(run_dir: str | Path, image: Any, class_name: str | None = None,
                     out: str | Path | None = None, layer: str | None = None, invert: str = "auto") -> Result:
    """Grad-CAM of an image run's best model on an image (a file, a PIL image or a uint8 tensor), saved as a
    heat-map overlay PNG (an image in memory: only where ``out`` is given); ``figure`` is the overlay.

    The image is converted to the run's input exactly as ``nnlab predict`` converts it, and the
    probabilities are ``nnlab predict``'s (through the run's test-time flip where it has one).
    ``class_name`` picks the class to explain (default: the predicted one); ``out`` defaults
    to ``IMAGE.cam.png`` beside the input, and is never the input itself.
    """
    config, model, state = load_image_run(run_dir, "cam")
    classes = list(state["classes"])
    channels, height, width = state["input_shape"]
    pixels = pixels_of(image, (height, width), channels, invert)  # uint8 [C, H, W]
    if class_name is not None and class_name not in classes:
        raise ConfigError(f"--class {class_name!r}: not a class of this run; classes: {', '.join(classes)}")
    mean = torch.tensor(state["mean"]).view(-1, 1, 1)
    std = torch.tensor(state["std"]).view(-1, 1, 1)
    x = ((pixels.float() / 255 - mean) / std)[None]  # [1, C, H, W]
    model = model.to(memory_format=torch.contiguous_format)
    heat, probs, target = grad_cam(model, x, classes.index(class_name) if class_name else None, layer,
                                   tta_flip=bool(config.tta))  # the probabilities nnlab predict gives
    on_disk = isinstance(image, (str, Path))
    path = check_output(out or Path(image).with_name(Path(image).stem + ".cam.png"), image) if on_disk else (
        Path(out) if out else None)
    predicted = int(probs.argmax())
    title = (f"{classes[target]} (p={probs[target]:.2f}); predicted {classes[predicted]} "
             f"(p={probs[predicted]:.2f})")
    figure = cam_figure(pixels, heat, title)
    if path is not None:
        save_figure(figure, path)
    return Result({"image": str(image) if on_disk else "<image>", "output": str(path) if path else None,
                   "class": classes[target], "probability": round(float(probs[target]), 6),
                   "predicted": classes[predicted], "layer": layer or "forward_features", "method": "grad-cam"},
                  {"cam": figure})



def layer_filters(run_dir: str | Path, layer: str | None = None, image: Any = None,
                  out: str | Path | None = None, invert: str = "auto") -> Result:
    """Draw a trained image run's conv ``layer`` (default: the first) filters, and its feature maps for
    ``image`` (a file, a PIL image or a uint8 tensor).

    Filters with three input channels are drawn in colour, others as the mean over their
    inputs. Writes ``filters.png`` (and ``featuremaps.png``) into ``out`` (default: the run);
    ``figures`` holds both.
    """
    _, model, state = load_image_run(run_dir, "filters")
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if not convs:
        raise ConfigError(f"{run_dir}: the model has no conv layers")
    name = layer or next(iter(convs))
    if name not in convs:
        raise ConfigError(f"--layer {name!r}: not a conv layer; conv layers: {', '.join(convs)}")
    weight = convs[name].weight.detach().float()  # [K, C, kh, kw]
    panels = [(scaled(w.permute(1, 2, 0)) if w.shape[0] == 3 else scaled(w.mean(0)), str(k))
              for k, w in enumerate(weight[:64])]
    directory = Path(out) if out else Path(run_dir)
    figures = {"filters": grid_figure(panels, 8, f"{name}: {len(weight)} filters")}
    result = {"layer": name, "filters": len(weight), "filter_shape": list(weight.shape[1:]),
              "filters_png": str(save_figure(figures["filters"], directory / "filters.png"))}
    if image is not None:
        channels, height, width = state["input_shape"]
        pixels = pixels_of(image, (height, width), channels, invert)
        mean, std = torch.tensor(state["mean"]).view(-1, 1, 1), torch.tensor(state["std"]).view(-1, 1, 1)
        caught: dict[str, torch.Tensor] = {}
        handle = convs[name].register_forward_hook(lambda m, i, o: caught.__setitem__("maps", o.detach()))
        try:
            with torch.no_grad():
                model(((pixels.float() / 255 - mean) / std)[None].contiguous())
        finally:
            handle.remove()
        maps = caught["maps"][0]  # [K, h, w]
        grid = [(scaled(m), str(k)) for k, m in enumerate(maps[:64])]
        where = Path(image).name if isinstance(image, (str, Path)) else "the image"
        figures["featuremaps"] = grid_figure(grid, 8, f"{name} on {where}")
        result["featuremaps_png"] = str(save_figure(figures["featuremaps"], directory / "featuremaps.png"))
        result["featuremap_shape"] = list(maps.shape)
    return Result(result, figures)



def interpret(run_dir: str | Path, split: str = "valid", top: int = 16, out: str | Path | None = None,
              data_path: str | None = None, device_name: str | None = None) -> Result:
    """Confusion matrix, most-confused pairs, per-class report and the ``top`` highest-loss images
    of an image run on its ``split`` (valid or test); the PNGs go to ``out`` (default RUN/interpret-SPLIT),
    and ``figures`` holds them (``confusion``, ``top_losses``)."""
    if top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    run_dir = Path(run_dir)
    config, model, state = load_image_run(run_dir, "interpret")
    device = resolve_device(device_name or config.device)
    model.to(device)
    data = load_image_dataset(config.dataset, data_path or config.data)
    images, labels, indices = split_images(config, data, split)
    batches = TensorBatches(images, labels, config.eval_batch_size, mean=state["mean"], std=state["std"],
                            device=device, channels_last=config.channels_last)
    probs, targets = predict_probs(model, batches, device, resolve_precision(config.precision, device), config.tta)
    folder = Path(out) if out else run_dir / f"interpret-{split}"
    result = explain(probs, targets, list(state["classes"]), top, None, images, indices)
    figures = result.pop("figures")
    return Result({"run_dir": str(run_dir), "split": split, **result, **save_figures(figures, folder)}, figures)
