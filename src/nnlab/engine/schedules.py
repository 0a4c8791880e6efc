"""Learning-rate schedules, built on ``torch.optim.lr_scheduler`` and stepped once per batch."""
from __future__ import annotations

import math

import torch

from nnlab.errors import ConfigError


def create_scheduler(name: str, optimizer: torch.optim.Optimizer, lr: float, total_steps: int,
                     pct_start: float = 0.25) -> torch.optim.lr_scheduler.LRScheduler:
    """``one-cycle`` (warm-up to ``lr`` then cosine annealing, momentum cycled inversely) or ``constant``."""
    if name == "one-cycle":
        if not 0.0 < pct_start < 1.0:
            raise ConfigError(f"pct_start must be in (0, 1), got {pct_start}")
        # OneCycleLR needs at least two steps in each phase; a shorter run (e.g. --dry-run)
        # simply stops early in a schedule of that minimum length.
        shortest = math.ceil(2 / min(pct_start, 1 - pct_start)) + 1
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, shortest),
                                                   pct_start=pct_start)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise ConfigError(f"unknown schedule {name!r}; expected one-cycle or constant")
