"""Learning-rate finder (Smith 2015, fastai's ``lr_find``): an exponential LR sweep over a few
hundred batches, stopped when the loss diverges, with the model and optimizer restored after.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

from nnlab.engine.learner import Callback, CancelFitException, Learner
from nnlab.errors import ConfigError


@dataclass
class LRFindResult:
    """The sweep: learning rates, raw and smoothed losses, and the two suggestions."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    steepest_lr: float = math.nan
    min_over_10_lr: float = math.nan

    @property
    def suggested_lr(self) -> float:
        """The minimum of the smoothed loss over 10: fastai's rule for the peak LR of one-cycle,
        which sits safely below where the loss turns up (the steepest point is often too timid
        for one-cycle, which anneals from its peak)."""
        return self.min_over_10_lr


class LRSweep(Callback):
    """Sets an exponentially growing LR before each batch and records the loss after each step.

    Stops when the smoothed loss exceeds ``diverge`` times its minimum (or is not finite) or
    after ``steps`` steps. Each parameter group keeps its ratio to the first group's LR.
    """

    order = 5

    def __init__(self, start_lr: float, end_lr: float, steps: int, diverge: float = 4.0, beta: float = 0.98) -> None:
        self.start_lr, self.end_lr, self.steps = start_lr, end_lr, steps
        self.diverge, self.beta = diverge, beta
        self.result = LRFindResult()
        self._avg = 0.0
        self._ratios: list[float] = []

    def before_fit(self) -> None:
        base = self.learner.optimizer.param_groups[0]["lr"] or 1.0
        self._ratios = [group["lr"] / base for group in self.learner.optimizer.param_groups]

    def before_batch(self) -> None:
        i = len(self.result.lrs)
        lr = self.start_lr * (self.end_lr / self.start_lr) ** (i / max(self.steps - 1, 1))
        for group, ratio in zip(self.learner.optimizer.param_groups, self._ratios):
            group["lr"] = lr * ratio
        self.result.lrs.append(lr)

    def after_step(self) -> None:
        loss = self.learner.loss.item()  # host sync every step: fine for a short sweep
        n = len(self.result.losses) + 1
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smooth = self._avg / (1 - self.beta ** n)  # bias-corrected moving average
        self.result.losses.append(loss)
        self.result.smoothed.append(smooth)
        best = min(self.result.smoothed)
        if not math.isfinite(smooth) or (n > 10 and smooth > self.diverge * best) or n >= self.steps:
            raise CancelFitException()


def suggestions(lrs: list[float], smoothed: list[float], skip_start: int = 10, skip_end: int = 5) -> tuple[float, float]:
    """(steepest, min/10): the LR where the smoothed loss falls fastest per log-LR, and the LR of
    its minimum divided by 10. The first and last few points (warm-up noise, divergence) are skipped."""
    lo, hi = min(skip_start, len(lrs) // 4), max(len(lrs) - skip_end, 2)
    xs, ys = [math.log(lr) for lr in lrs[lo:hi]], smoothed[lo:hi]
    if len(xs) < 3:
        raise ConfigError(f"lr-find: only {len(lrs)} steps before the loss diverged; lower the start LR or "
                          f"raise the number of steps")
    slopes = [(ys[i + 1] - ys[i - 1]) / (xs[i + 1] - xs[i - 1]) for i in range(1, len(xs) - 1)]
    steepest = math.exp(xs[1 + min(range(len(slopes)), key=slopes.__getitem__)])
    minimum = math.exp(xs[min(range(len(ys)), key=ys.__getitem__)])
    return steepest, minimum / 10


def lr_find(learner: Learner, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 200,
            diverge: float = 4.0) -> LRFindResult:
    """Sweep the LR from ``start_lr`` to ``end_lr`` over up to ``steps`` batches on ``learner``.

    The learner's model weights, optimizer state, scheduler, callbacks and counters are put back
    afterwards, so a real run can follow on the same learner.
    """
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr-find: need 0 < start LR < end LR, got {start_lr} and {end_lr}")
    saved_model = copy.deepcopy(learner.raw_model.state_dict())
    saved_optimizer = copy.deepcopy(learner.optimizer.state_dict())
    saved = (learner.scheduler, learner.callbacks, learner.step, learner.history, learner.valid_batches)
    sweep = LRSweep(start_lr, end_lr, steps, diverge)
    learner.scheduler, learner.callbacks, learner.history, learner.valid_batches = None, [], [], None
    learner.add_callbacks([sweep])
    try:
        learner.fit(math.ceil(steps / max(len(learner.train_batches), 1)))
    finally:
        learner.raw_model.load_state_dict(saved_model)
        learner.optimizer.load_state_dict(saved_optimizer)
        learner.scheduler, learner.callbacks, learner.step, learner.history, learner.valid_batches = saved
    result = sweep.result
    result.lrs = result.lrs[: len(result.losses)]
    result.steepest_lr, result.min_over_10_lr = suggestions(result.lrs, result.smoothed)
    return result
