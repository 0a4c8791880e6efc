"""Learning-rate schedules, stepped once per batch.

Every schedule is a function of progress through the run. ``one-cycle`` is ``one_cycle``, a pure
function of progress in [0, 1] that gives the LR multiplier and the momentum (SGD's momentum,
the Adam family's beta1), run by ``ProgressScheduler``. Progress is the share of the run done:
the step over the last step (counted in steps, torch's arithmetic: ``step_progress``), or under
a time budget the share of the budget used (``clock``). A budgeted run and a run of counted
epochs follow the same curve, momentum included, and the step-counted one equals torch's
``OneCycleLR`` to the last bit. ``cosine`` and ``constant`` follow a clock the same
way; without one, ``cosine`` and ``step`` are torch's own schedulers. ``sgdr`` (cosine
annealing with warm restarts) is a ``LambdaLR`` over ``sgdr_factor``, a pure function of the
step, because torch's ``CosineAnnealingWarmRestarts`` needs cycle lengths that divide the run
exactly, and a restart in the last few steps of a run would end it at a high learning rate.
``fine-tune`` (fastai's ``fine_tune``) is a ``LambdaLR`` too, one ``fine_tune_factor`` per
parameter group: a one-cycle for the head alone, then a second one-cycle for every layer group.

The names are the engine's table ``SCHEDULES`` (kept in ``engine.choices``, which imports no torch).
"""
from __future__ import annotations

import bisect
import functools
import math
from typing import Any, Callable, Sequence

import torch

from nnlab.engine.choices import CLOCKED, SCHEDULES
from nnlab.errors import ConfigError

# torch's OneCycleLR defaults, which every recipe runs: the LR starts at peak/DIV and ends at
# peak/(DIV*FINAL_DIV); the momentum (beta1) falls from MOMENTA[0] to MOMENTA[1] at the peak LR
# and rises back.
DIV = 25.0
FINAL_DIV = 1e4
MOMENTA = (0.95, 0.85)

# A schedule as a function of progress: (position, peak LR) -> (LR, momentum or None to leave it).
Shape = Callable[[float, float], "tuple[float, float | None]"]


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


def cos_anneal(start: float, end: float, t: float) -> float:
    """A half cosine from ``start`` (at ``t`` = 0) to ``end`` (at ``t`` = 1), in torch's arithmetic."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * t) + 1)


def one_cycle(pos: float, pct_start: float = 0.25, *, end: float = 1.0, peak: float = 1.0, div: float = DIV,
              final_div: float = FINAL_DIV, momenta: tuple[float, float] = MOMENTA) -> tuple[float, float]:
    """The one-cycle at progress ``pos``: ``(LR, momentum)``, the LR as a multiplier of ``peak``.

    Up to ``pct_start`` the LR rises on a half cosine from ``peak/div`` to ``peak`` while the
    momentum falls from ``momenta[0]`` to ``momenta[1]``; then the LR falls to
    ``peak/div/final_div`` at ``end`` while the momentum rises back (Smith's one-cycle; torch's
    ``OneCycleLR`` with ``anneal_strategy="cos"``). ``pos`` and ``pct_start`` are shares of the
    run (``end`` = 1); a step-counted run gives them in steps instead (``step_progress``),
    which is ``OneCycleLR``'s own arithmetic, so its values to the last bit. A ``pct_start`` of
    0 or less starts at the peak; ``pos`` past ``end`` continues the last half cosine, as torch
    does on the step after its last (an LR no step uses, but the last epoch's row shows).
    """
    pos = max(pos, 0.0)
    high, low = momenta
    if pct_start > 0.0 and pos <= pct_start:
        t = pos / pct_start
        return cos_anneal(peak / div, peak, t), cos_anneal(high, low, t)
    warm = max(pct_start, 0.0)
    t = (pos - warm) / max(end - warm, 1e-12)
    return cos_anneal(peak, peak / div / final_div, t), cos_anneal(low, high, t)


def step_progress(total_steps: int, pct_start: float) -> tuple[float, float]:
    """Where a one-cycle of ``total_steps`` peaks and ends, in steps, in torch's convention.

    ``OneCycleLR`` ends the cycle at its last step, ``total_steps - 1``, and peaks at step
    ``pct_start * total_steps - 1``: as shares, step k is at ``k / (total_steps - 1)`` and the
    peak at ``(pct_start * total_steps - 1) / (total_steps - 1)``, which tends to ``pct_start``
    (a clocked run's peak) as runs get longer. Returns ``(peak step, last step)`` for
    ``one_cycle(step, peak, end=last)``.
    """
    return pct_start * total_steps - 1, total_steps - 1


def one_cycle_factor(step: float, total_steps: int, pct_start: float = 0.25, div: float = DIV,
                     final_div: float = FINAL_DIV) -> float:
    """LR multiplier at ``step`` of a one-cycle of ``total_steps`` (``one_cycle`` counted in
    steps: ``step_progress``), held at its end after the last step."""
    warm, last = step_progress(total_steps, pct_start)
    if step > max(last, 0):  # after the last step: held at the end
        return 1.0 / div / final_div
    return one_cycle(step, warm, end=last, div=div, final_div=final_div)[0]


def fine_tune_factor(step: int, freeze_steps: int, total_steps: int, head: bool, pct_start: float = 0.25) -> float:
    """LR multiplier of one parameter group at ``step`` of a fine-tune run.

    Steps before ``freeze_steps`` are the head-only phase: a one-cycle over them for the head,
    0 for every other group (frozen). Then one one-cycle over the remaining steps for all
    groups, each peaking at its own (discriminative) learning rate.
    """
    if step < freeze_steps:
        return one_cycle_factor(step, freeze_steps, pct_start) if head else 0.0
    return one_cycle_factor(step - freeze_steps, total_steps - freeze_steps, pct_start)


def shape_of(name: str, pct_start: float = 0.25, end: float = 1.0) -> Shape:
    """Schedule ``name`` (one of ``CLOCKED``) as a function of progress: ``(pos, peak LR) ->
    (LR, momentum or None)``, the cycle ending at ``end``; only the one-cycle moves the momentum."""
    if name == "one-cycle":
        return lambda pos, peak: one_cycle(pos, pct_start, end=end, peak=peak)
    if name == "cosine":
        return lambda pos, peak: (peak * cos_anneal(1.0, 0.0, min(pos / end, 1.0)), None)
    return lambda pos, peak: (peak, None)


def progress_factor(name: str, pos: float, pct_start: float = 0.25) -> float:
    """LR multiplier of schedule ``name`` (one of ``CLOCKED``) at progress ``pos`` in [0, 1]."""
    return shape_of(name, pct_start)(min(max(pos, 0.0), 1.0), 1.0)[0]


def has_momentum(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a one-cycle moves ``optimizer``'s momentum: Adam's beta1, SGD's or RMSprop's where set.

    Plain SGD, Adagrad and Adadelta have none and keep theirs (torch's ``OneCycleLR`` rule)."""
    return "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0.0) > 0


class ProgressScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Sets every parameter group's LR, and where the schedule moves it the momentum (SGD,
    RMSprop) or beta1 (the Adam family), from a pure function of progress.

    Each step, ``progress(step)`` gives the position in the run (the step itself, or a clock
    such as the share of a time budget used) and ``shape(position, peak)`` gives group k's
    ``(LR, momentum or None)`` for its peak LR ``peak_lrs[k]``. With ``cycle_momentum`` false
    the optimizer keeps its momentum. The state is the step count, so a resumed run continues
    the curve exactly; ``load_state_dict`` also reads the states that the torch schedulers of
    runs written before this class saved (``OneCycleLR``; ``LambdaLR`` under a time budget).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, peak_lrs: Sequence[float], shape: Shape,
                 progress: Callable[[int], float], cycle_momentum: bool = True) -> None:
        if len(peak_lrs) != len(optimizer.param_groups):
            raise ConfigError(f"{len(peak_lrs)} learning rates for {len(optimizer.param_groups)} parameter groups")
        self.peak_lrs = [float(lr) for lr in peak_lrs]
        self.shape = shape
        self.progress = progress
        self.cycle_momentum = cycle_momentum
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        """Each group's LR at the current step; sets the momentum as it goes (as ``OneCycleLR`` does)."""
        pos = self.progress(self.last_epoch)
        lrs = []
        for group, peak in zip(self.optimizer.param_groups, self.peak_lrs):
            lr, momentum = self.shape(pos, peak)
            lrs.append(lr)
            if self.cycle_momentum and momentum is not None:
                if "betas" in group:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """The step count, the last LRs and whether the momentum cycles: plain values, no functions."""
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count, "_last_lr": list(self._last_lr),
                "cycle_momentum": self.cycle_momentum}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue at the saved step (the optimizer's own state holds the LR and momentum in use).

        A state without ``cycle_momentum`` is the ``LambdaLR`` of a budgeted run written when
        the clocked one-cycle left the momentum alone: that run goes on as it began, momentum fixed.
        """
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        self._last_lr = list(state_dict.get("_last_lr", self._last_lr))
        self.cycle_momentum = self.cycle_momentum and bool(state_dict.get("cycle_momentum", False))


def create_scheduler(name: str, optimizer: torch.optim.Optimizer, lr: float | list[float], total_steps: int,
                     pct_start: float = 0.25, *, cycles: int = 3, cycle_mult: int = 1,
                     steps_per_epoch: int = 1, step_every: int = 1, gamma: float = 0.7,
                     freeze_steps: int = 0,
                     clock: Callable[[], float] | None = None) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule ``name`` (one of ``SCHEDULES``) over ``total_steps`` optimizer steps.

    ``one-cycle``: ``one_cycle`` up to ``lr`` (one value per parameter group allowed) and down,
    the momentum (beta1) moved inversely where the optimizer has one; ``sgdr``: ``cycles``
    cosine cycles with warm restarts (see ``sgdr_boundaries``); ``cosine``: one cosine from the
    optimizer's LR to 0; ``step``: times ``gamma`` every ``step_every`` epochs; ``constant``;
    ``fine-tune``: the first ``freeze_steps`` train the parameter groups named ``head`` alone,
    then all (``fine_tune_factor``). With ``clock`` (progress in [0, 1], e.g. the share of a
    time budget used) the schedule is ``shape_of`` the clock: the same one-cycle, momentum
    included, peaking at ``pct_start`` of the clock.
    """
    if clock is not None and name not in CLOCKED:
        raise ConfigError(f"schedule {name!r} cannot follow a time budget; use one of {', '.join(CLOCKED)}")
    if clock is not None or name == "one-cycle":
        if not 0.0 < pct_start < 1.0:
            raise ConfigError(f"pct_start must be in (0, 1), got {pct_start}")
        peaks = list(lr) if isinstance(lr, (list, tuple)) else [lr] * len(optimizer.param_groups)
        if clock is not None:
            progress, shape = (lambda step: clock()), shape_of(name, pct_start)
        else:
            # torch's OneCycleLR needed at least two steps in each phase; a shorter run (e.g.
            # --dry-run) still stops early in a cycle of that length, so short runs keep their numbers.
            shortest = math.ceil(2 / min(pct_start, 1 - pct_start)) + 1
            progress, shape = float, shape_of(name, *step_progress(max(total_steps, shortest), pct_start))
        return ProgressScheduler(optimizer, peaks, shape, progress, has_momentum(optimizer))
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
