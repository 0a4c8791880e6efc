"""Learning-rate schedules, built on ``torch.optim.lr_scheduler`` and stepped once per batch.

``one-cycle``, ``cosine`` and ``step`` are torch's own schedulers; ``sgdr`` (cosine annealing with
warm restarts) is a ``LambdaLR`` over ``sgdr_factor``, a pure function of the step, because
torch's ``CosineAnnealingWarmRestarts`` needs cycle lengths that divide the run exactly, and a
restart in the last few steps of a run would end it at a high learning rate. ``fine-tune``
(fastai's ``fine_tune``) is a ``LambdaLR`` too, one ``fine_tune_factor`` per parameter group:
a one-cycle for the head alone, then a second one-cycle for every layer group.

Every schedule is a function of progress through the run. Progress is usually steps done over
the run's steps; under a time budget it is seconds used over the budget (``clock``), and the
same factors (``progress_factor``) set the learning rate: one owner of the LR either way.
"""
from __future__ import annotations

import bisect
import functools
import math
from typing import Callable, Sequence

import torch

from nnlab.errors import ConfigError

SCHEDULES = ("one-cycle", "sgdr", "cosine", "constant", "step", "fine-tune")


def sgdr_boundaries(total_steps: int, cycles: int, cycle_mult: int = 1) -> list[int]:
    """The step at which each SGDR cycle ends; cycle k is ``cycle_mult**k`` times the first.

    The last boundary is ``total_steps`` exactly (the last cycle absorbs rounding).
    """
    if cycles < 1 or cycle_mult < 1:
        raise ConfigError(f"sgdr needs cycles >= 1 and cycle_mult >= 1, got {cycles} and {cycle_mult}")
    units = sum(cycle_mult ** k for k in range(cycles))
    if total_steps < cycles:
        raise ConfigError(f"sgdr: {cycles} cycles need at least {cycles} steps, the run has {total_steps}")
    first = total_steps / units
    ends, done = [], 0.0
    for k in range(cycles):
        done += first * cycle_mult ** k
        ends.append(max(round(done), (ends[-1] + 1) if ends else 1))
    ends[-1] = total_steps
    return ends


def sgdr_factor(step: int, boundaries: Sequence[int], floor: float = 0.0) -> float:
    """LR multiplier at ``step``: a half cosine from 1 to ``floor`` within each cycle, then a restart."""
    k = min(bisect.bisect_right(boundaries, step), len(boundaries) - 1)
    start = boundaries[k - 1] if k else 0
    pos = (step - start) / max(boundaries[k] - start, 1)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(pos, 1.0)))


def one_cycle_factor(step: float, total_steps: int, pct_start: float = 0.25, div: float = 25.0,
                     final_div: float = 1e4) -> float:
    """LR multiplier at ``step`` of a one-cycle of ``total_steps``: a half cosine from ``1/div`` up to 1
    over the first ``pct_start`` of the steps, then down to ``1/(div*final_div)`` at the last step
    (exactly torch's ``OneCycleLR`` with its defaults, as a pure function)."""
    warm_end = pct_start * total_steps - 1  # the step at the peak (torch's phase boundary)
    if warm_end > 0 and step <= warm_end:
        start, end, t = 1.0 / div, 1.0, step / warm_end
    else:
        start, end = 1.0, 1.0 / (div * final_div)
        t = (step - max(warm_end, 0.0)) / max(total_steps - 1 - max(warm_end, 0.0), 1e-9)
    t = min(max(t, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def fine_tune_factor(step: int, freeze_steps: int, total_steps: int, head: bool, pct_start: float = 0.25) -> float:
    """LR multiplier of one parameter group at ``step`` of a fine-tune run.

    Steps before ``freeze_steps`` are the head-only phase: a one-cycle over them for the head,
    0 for every other group (frozen). Then one one-cycle over the remaining steps for all
    groups, each peaking at its own (discriminative) learning rate.
    """
    if step < freeze_steps:
        return one_cycle_factor(step, freeze_steps, pct_start) if head else 0.0
    return one_cycle_factor(step - freeze_steps, total_steps - freeze_steps, pct_start)


# Schedules a time budget can drive: those that are functions of the fraction of the run done.
CLOCKED = ("one-cycle", "cosine", "constant")


def progress_factor(name: str, pos: float, pct_start: float = 0.25) -> float:
    """LR multiplier of schedule ``name`` (one of ``CLOCKED``) at progress ``pos`` in [0, 1]."""
    pos = min(max(pos, 0.0), 1.0)
    if name == "one-cycle":
        steps = 1_000_000  # fine enough that the curve is continuous
        return one_cycle_factor(pos * (steps - 1), steps, pct_start)
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * pos))
    return 1.0


def create_scheduler(name: str, optimizer: torch.optim.Optimizer, lr: float | list[float], total_steps: int,
                     pct_start: float = 0.25, *, cycles: int = 3, cycle_mult: int = 1,
                     steps_per_epoch: int = 1, step_every: int = 1, gamma: float = 0.7,
                     freeze_steps: int = 0,
                     clock: Callable[[], float] | None = None) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule ``name`` (one of ``SCHEDULES``) over ``total_steps`` optimizer steps.

    ``one-cycle``: warm-up to ``lr`` (one value per parameter group allowed) then cosine
    annealing, momentum cycled inversely; ``sgdr``: ``cycles`` cosine cycles with warm restarts
    (see ``sgdr_boundaries``); ``cosine``: one cosine from the optimizer's LR to 0; ``step``:
    times ``gamma`` every ``step_every`` epochs; ``constant``; ``fine-tune``: the first
    ``freeze_steps`` train the parameter groups named ``head`` alone, then all (``fine_tune_factor``).
    With ``clock`` (progress in [0, 1], e.g. the share of a time budget used) the schedule is
    ``progress_factor`` of the clock, stepped like any other.
    """
    if clock is not None:
        if name not in CLOCKED:
            raise ConfigError(f"schedule {name!r} cannot follow a time budget; use one of {', '.join(CLOCKED)}")
        if not 0.0 < pct_start < 1.0:
            raise ConfigError(f"pct_start must be in (0, 1), got {pct_start}")
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: progress_factor(name, clock(), pct_start))
    if name == "one-cycle":
        if not 0.0 < pct_start < 1.0:
            raise ConfigError(f"pct_start must be in (0, 1), got {pct_start}")
        # OneCycleLR needs at least two steps in each phase; a shorter run (e.g. --dry-run)
        # simply stops early in a schedule of that minimum length.
        shortest = math.ceil(2 / min(pct_start, 1 - pct_start)) + 1
        # momentum is cycled where the optimizer has one (SGD with momentum, Adam's beta1, RMSprop's)
        cycle = "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0.0) > 0
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, shortest),
                                                   pct_start=pct_start, cycle_momentum=cycle)
    if name == "sgdr":
        boundaries = sgdr_boundaries(total_steps, cycles, cycle_mult)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: sgdr_factor(step, boundaries))
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if name == "step":
        if step_every < 1 or not 0.0 < gamma <= 1.0:
            raise ConfigError(f"step schedule needs step_every >= 1 and 0 < gamma <= 1, got {step_every}, {gamma}")
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_every * max(steps_per_epoch, 1), gamma=gamma)
    if name == "fine-tune":
        if not 0.0 < pct_start < 1.0:
            raise ConfigError(f"pct_start must be in (0, 1), got {pct_start}")
        if not 0 <= freeze_steps <= total_steps:
            raise ConfigError(f"fine-tune: the head-only phase ({freeze_steps} steps) must fit in the run "
                              f"({total_steps} steps); lower freeze_epochs")
        heads = [group.get("name") == "head" for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, [
            functools.partial(fine_tune_factor, freeze_steps=freeze_steps, total_steps=total_steps, head=head,
                              pct_start=pct_start) for head in heads])
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise ConfigError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
