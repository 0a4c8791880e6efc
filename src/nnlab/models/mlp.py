"""Multi-layer perceptron on flattened inputs (the curriculum's first deep model)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnlab.models.registry import Classifier, Example, images, register


@dataclass
class MLPConfig:
    in_features: int = 784
    hidden: tuple[int, ...] = (256, 128, 64)
    n_classes: int = 10
    dropout: float = 0.2


class MLP(Classifier):
    """Flatten -> [Linear -> ReLU -> Dropout] per hidden size -> Linear head."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Flatten()]
        width = config.in_features
        for size in config.hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(config.dropout)]
            width = size
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, config.n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def layer_groups(self) -> list[nn.Module]:
        """Stem (first hidden layer), body (the other hidden layers), head; without hidden layers
        (``logistic``) stem and body are empty and the head is the whole model."""
        linears = [m for m in self.features if isinstance(m, nn.Linear)]
        stem = nn.ModuleList(linears[:1])
        body = nn.ModuleList(linears[1:])
        return [stem, body, self.head]


@register("mlp", example=Example(images()))
def mlp(in_features: int = 784, hidden: tuple[int, ...] = (256, 128, 64), n_classes: int = 10,
        dropout: float = 0.2) -> MLP:
    """784-256-128-64-10 MLP with ReLU and dropout by default."""
    return MLP(MLPConfig(in_features, tuple(hidden), n_classes, dropout))
