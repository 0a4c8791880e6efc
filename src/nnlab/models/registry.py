"""Model registry: names map to constructors, so recipes and the CLI build models by name.

A model family lives in one file of this package and registers its sizes with
``@register("name")``. Every registered model is a classifier whose ``forward`` returns
logits and which offers ``forward_features``, ``forward_head``, ``reset_classifier`` and
``layer_groups`` (stem, body, head), so that transfer learning, CAM and summaries treat all
families alike.

Each registration also declares a small ``Example`` of its model (the arguments of a small
instance and a function giving ``n`` inputs), so that the tests that run every registered model
(tests/unit/test_models.py, timm's pattern) need no list of models: ``model_example(name)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from nnlab.errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_EXAMPLES: dict[str, Example] = {}


@dataclass(frozen=True)
class Example:
    """A small instance of a registered model and inputs for it: what the registry-wide tests run.

    ``inputs(n)`` gives a batch of ``n`` inputs, the one argument ``forward`` takes; ``args`` are
    the keyword arguments (besides ``n_classes``) that build a small instance; ``classifier``: its
    ``forward`` gives ``[n, n_classes]`` logits and it has the ``Classifier`` interface (False for a
    model with other outputs, such as the encoder-decoder); ``heavy``: it takes seconds to build on
    a CPU (a full-size ImageNet backbone), so the tests mark it slow and skip its backward pass.
    """

    inputs: Callable[[int], Any]
    args: Mapping[str, Any] = field(default_factory=dict)
    classifier: bool = True
    heavy: bool = False


def images(size: int = 28, channels: int = 1) -> Callable[[int], torch.Tensor]:
    """Example inputs: ``n`` random images ``[n, channels, size, size]``."""
    return lambda n: torch.randn(n, channels, size, size)


def tokens(length: int = 5, vocab: int = 5) -> Callable[[int], torch.Tensor]:
    """Example inputs: ``n`` rows of ``length`` token ids in ``1..vocab-1`` (0 is padding)."""
    return lambda n: torch.randint(1, vocab, (n, length))


class Classifier(nn.Module):
    """The interface every family implements, with the parts that are the same everywhere.

    A family defines ``forward_features`` and ``layer_groups`` and sets ``self.head``; it
    overrides ``forward_head`` when pooling or dropout sit before the head, and ``_make_head``
    when its head is more than one linear layer.
    """

    head: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def _make_head(self, n_classes: int) -> nn.Module:
        """A fresh head like the current one with ``n_classes`` outputs (default: one linear layer)."""
        return nn.Linear(self.head.in_features, n_classes)

    def reset_classifier(self, n_classes: int) -> None:
        """Replace the head with a fresh one for ``n_classes`` outputs (transfer learning); the rest stays."""
        self.head = self._make_head(n_classes)


def register(name: str, example: Example | None = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that records a model factory under ``name`` (names are unique) with its small
    ``example`` (every model of nnlab declares one: tests/unit/test_models.py checks)."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        if example is not None:
            _EXAMPLES[name] = example
        return factory

    return wrap


def _require_known(name: str) -> None:
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}")


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build the registered model ``name``; keyword arguments go to its config."""
    _require_known(name)
    try:
        return _MODELS[name](**kwargs)
    except TypeError as error:
        raise ConfigError(f"model {name!r}: bad arguments {kwargs}: {error}") from None


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def model_example(name: str) -> Example:
    """The small example that model ``name`` was registered with; a ``LookupError`` if it declared none."""
    _require_known(name)
    if name not in _EXAMPLES:
        raise LookupError(f"model {name!r} was registered without an example: "
                          f"give it one, @register({name!r}, example=Example(...))")
    return _EXAMPLES[name]
