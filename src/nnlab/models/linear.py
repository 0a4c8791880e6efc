"""Logistic regression: one linear layer on flattened inputs, trained with the cross-entropy loss.

With C outputs and a softmax this is multinomial logistic regression; with two outputs it is
the binary model (the softmax of two logits is the sigmoid of their difference). It is the
MLP without hidden layers, kept as its own family so that recipes and checkpoints name it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnlab.models.registry import register


@dataclass
class LogisticConfig:
    in_features: int = 784
    n_classes: int = 2


class Logistic(nn.Module):
    """Flatten -> Linear head: the logits of a (multinomial) logistic regression."""

    def __init__(self, config: LogisticConfig) -> None:
        super().__init__()
        self.config = config
        self.features = nn.Flatten()
        self.head = nn.Linear(config.in_features, config.n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, n_classes: int) -> None:
        """Replace the linear layer with a fresh one for ``n_classes`` outputs."""
        self.head = nn.Linear(self.head.in_features, n_classes)

    def layer_groups(self) -> list[nn.Module]:
        """Stem and body are empty (no hidden layers); the head is the whole model."""
        return [nn.ModuleList(), nn.ModuleList(), self.head]


@register("logistic")
def logistic(in_features: int = 784, n_classes: int = 2) -> Logistic:
    """Logistic regression on ``in_features`` inputs with ``n_classes`` outputs."""
    return Logistic(LogisticConfig(in_features, n_classes))
