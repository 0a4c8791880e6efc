"""Optimizers with the usual hygiene: no weight decay on biases and normalization parameters."""
from __future__ import annotations

import torch
from torch import nn

from nnlab.errors import ConfigError


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (matrices, kernels) with ``weight_decay``; biases and norm scales without.

    Decaying a bias or a batch-norm scale only fights the normalization; every 1-D parameter
    is exempt (the rule AdamW users and nanoGPT apply).
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float,
                     momentum: float = 0.9) -> torch.optim.Optimizer:
    """``adamw`` (decoupled weight decay) or ``sgd`` (Nesterov momentum) over ``parameter_groups``."""
    groups = parameter_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    raise ConfigError(f"unknown optimizer {name!r}; expected adamw or sgd")
