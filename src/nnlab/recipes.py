"""The named runs: one registry of small entries (data + model + schedule + expected result).

A recipe is a ``TrainConfig`` with a name, a one-line description and the result it is
expected to reach; ``nnlab train NAME`` runs it, and every field can be overridden from the
command line. Hyperparameters sit here together, each justified by a measured run
(see docs/benchmarks.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from nnlab.config import TrainConfig
from nnlab.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """A named, documented training configuration."""

    name: str
    description: str
    expected: str
    config: TrainConfig


def _mlp(dataset: str) -> TrainConfig:
    return TrainConfig(dataset=dataset, model="mlp",
                       model_args={"in_features": 784, "hidden": (256, 128, 64), "dropout": 0.2},
                       epochs=10, batch_size=128, lr=2e-3, weight_decay=1e-4, label_smoothing=0.0,
                       channels_last=False)


def _cnn(dataset: str, **changes: object) -> TrainConfig:
    # Each choice measured on Fashion-MNIST, 2-core CPU, 4 epochs (docs/benchmarks.md):
    # hidden head 256 (+0.6 points), batch 128 (+0.2), lr 6e-3 (+0.4), flip augmentation (+1.4).
    config = TrainConfig(dataset=dataset, model="cnn",
                         model_args={"widths": (24, 48, 96), "head_hidden": 256, "dropout": 0.1},
                         epochs=4, batch_size=128, lr=6e-3, weight_decay=5e-4, label_smoothing=0.1,
                         valid_fraction=5000 / 60000)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


RECIPES: dict[str, Recipe] = {}


def _add(recipe: Recipe) -> None:
    recipe.config.recipe = recipe.name
    RECIPES[recipe.name] = recipe


_add(Recipe("fashion-cnn", "conv net with batch norm on Fashion-MNIST (the default recipe)",
            "see docs/benchmarks.md", _cnn("fashion-mnist", augment=("flip_lr",), tta=True)))
_add(Recipe("fashion-mlp", "784-256-128-64-10 MLP, ReLU, dropout on Fashion-MNIST",
            "~89% test accuracy", _mlp("fashion-mnist")))
_add(Recipe("mnist-cnn", "conv net with batch norm on MNIST digits", "~99.3% test accuracy",
            _cnn("mnist", augment=("crop:2",))))
_add(Recipe("mnist-mlp", "784-256-128-64-10 MLP, ReLU, dropout on MNIST digits", "~98% test accuracy",
            _mlp("mnist")))

DEFAULT_RECIPE = "fashion-cnn"


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``, or a ``ConfigError`` listing the known ones."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}")
    return RECIPES[name]
