"""Model registry: names map to constructors, so recipes and the CLI build models by name.

A model family lives in one file of this package and registers its sizes with
``@register("name")``. Every registered model is a classifier whose ``forward`` returns
logits and which offers ``forward_features``, ``forward_head``, ``reset_classifier`` and
``layer_groups`` (stem, body, head), so that transfer learning, CAM and summaries treat all
families alike.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from nnlab.errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


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


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that records a model factory under ``name`` (names are unique)."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        return factory

    return wrap


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build the registered model ``name``; keyword arguments go to its config."""
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}")
    try:
        return _MODELS[name](**kwargs)
    except TypeError as error:
        raise ConfigError(f"model {name!r}: bad arguments {kwargs}: {error}") from None


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)
