"""Learning-rate schedules, built on ``torch.optim.lr_scheduler`` and stepped once per batch."""
from __future__ import annotations

import torch

from nnlab.errors import ConfigError


def create_scheduler(name: str, optimizer: torch.optim.Optimizer, lr: float, total_steps: int,
                     pct_start: float = 0.25) -> torch.optim.lr_scheduler.LRScheduler:
    """``one-cycle`` (warm-up to ``lr`` then cosine annealing, momentum cycled inversely) or ``constant``."""
    if name == "one-cycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 1),
                                                   pct_start=pct_start)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise ConfigError(f"unknown schedule {name!r}; expected one-cycle or constant")
