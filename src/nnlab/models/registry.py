"""Model registry: names map to constructors, so recipes and the CLI build models by name.

A model family lives in one file of this package and registers its sizes with
``@register("name")``. Every registered model is a classifier whose ``forward`` returns
logits and which offers ``forward_features``, ``forward_head``, ``reset_classifier`` and
``layer_groups`` (stem, body, head), so that transfer learning, CAM and summaries treat all
families alike.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from nnlab.errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


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
