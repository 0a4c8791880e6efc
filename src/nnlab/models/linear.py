"""Logistic regression: one linear layer on flattened inputs, trained with the cross-entropy loss.

With C outputs and a softmax this is multinomial logistic regression; with two outputs it is
the binary model (the softmax of two logits is the sigmoid of their difference). It is the
MLP without hidden layers, built as one, and registered under its own name so that recipes
and checkpoints name it (its parameters are the MLP head's: ``head.weight``, ``head.bias``).
"""
from __future__ import annotations

from nnlab.models.mlp import MLP, MLPConfig
from nnlab.models.registry import Example, images, register


@register("logistic", example=Example(images()))
def logistic(in_features: int = 784, n_classes: int = 2) -> MLP:
    """Logistic regression on ``in_features`` inputs with ``n_classes`` outputs: an MLP without hidden layers."""
    return MLP(MLPConfig(in_features, hidden=(), n_classes=n_classes, dropout=0.0))
