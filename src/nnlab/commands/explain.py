"""The inspection commands over a trained run (``nnlab summary``, ``cam``, ``filters``, ``interpret``):
thin shells over the ``Run`` methods of the same names, after the table of kinds says the run's
kind has them. ``model_summary`` also takes a recipe's name: the summary of its fresh model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from nnlab.data.vision import dataset_info
from nnlab.errors import ConfigError
from nnlab.inspection.summary import DATASET_SIZE, summarize
from nnlab.kinds import get_kind, load, require
from nnlab.models import create_model
from nnlab.recipes import get_recipe


def model_summary(target: str, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """Summary of a run directory's model (its input size by default) or of an image recipe's fresh model."""
    if (Path(target) / "config.json").is_file():
        require(target, "summary", "summary")
        return load(target).summary_table(input_shape)
    config = get_recipe(target).config
    kind = get_kind(config.kind)
    if not kind.supports("summary"):
        raise ConfigError(f"summary: recipe {target!r} trains a {kind.what}; summaries cover image models")
    info = dataset_info(config.dataset)
    model = create_model(config.model, n_classes=len(info.classes) or 100, **config.model_args)
    shape = input_shape or (len(info.mean) or 3, DATASET_SIZE.get(config.dataset, 32),
                            DATASET_SIZE.get(config.dataset, 32))
    return {"target": target, "model": config.model, **summarize(model, shape)}


def class_activation(run_dir: str | Path, image: str | Path, class_name: str | None = None,
                     out: str | Path | None = None, layer: str | None = None, invert: str = "auto") -> dict[str, Any]:
    """``nnlab cam``: Grad-CAM of the run's best model on ``image``, written as a heat-map overlay PNG."""
    require(run_dir, "cam", "cam")
    return load(run_dir).cam(image, class_name, out=out, layer=layer, invert=invert)


def layer_filters(run_dir: str | Path, layer: str | None = None, image: str | Path | None = None,
                  out: str | Path | None = None, invert: str = "auto") -> dict[str, Any]:
    """``nnlab filters``: a conv layer's filters (and ``image``'s feature maps there) as PNGs."""
    require(run_dir, "filters", "filters")
    return load(run_dir).filters(image, layer=layer, out=out, invert=invert)


def interpret(run_dir: str | Path, split: str = "valid", top: int = 16, out: str | Path | None = None,
              data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """``nnlab interpret``: confusion, most-confused pairs, per-class report and top losses, as PNGs."""
    require(run_dir, "interpret", "interpret")
    return load(run_dir).interpret(split, top, out=out, data_path=data_path, device_name=device_name)
