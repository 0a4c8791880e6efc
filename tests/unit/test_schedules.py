"""The schedules: one one-cycle (LR and momentum as a pure function of progress) checked against
torch's ``OneCycleLR`` step by step, the same cycle under a time budget, exact resume from the
scheduler states of new and old runs, and the engine's tables of schedule, optimizer and device names."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from torch import nn

import nnlab
from nnlab.config import CHOICES, RunConfig, apply_overrides
from nnlab.engine.choices import CLOCKED, DEVICES, OPTIMIZER_CLASSES, SCHEDULES
from nnlab.engine.learner import Callback
from nnlab.engine.optim import OPTIMIZERS, create_optimizer
from nnlab.engine.schedules import ProgressScheduler, create_scheduler, one_cycle, progress_factor
from nnlab.errors import ConfigError
from test_kit import Blobs, fresh_model

# The one-cycle settings the recipes run: torch's defaults (cos, div 25, final div 1e4, momentum
# 0.95 -> 0.85 -> 0.95) at the recipes' warm-up shares (the default 0.25, cifar's 0.2, charlm's 0.1).
PCT_STARTS = (0.25, 0.2, 0.1)


def two_groups(name: str) -> torch.optim.Optimizer:
    """Optimizer ``name`` over two parameter groups with their own peak LRs (discriminative rates)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    groups = [{"params": model[0].parameters(), "lr": 1e-3}, {"params": model[1].parameters(), "lr": 1e-2}]
    kwargs = {"momentum": 0.9, "nesterov": name == "nesterov"} if name in ("momentum", "nesterov") else {}
    return OPTIMIZERS[name](groups, lr=1e-2, **kwargs)


def momentum_of(group: dict) -> float:
    return group["betas"][0] if "betas" in group else group["momentum"]


def torch_one_cycle(opt: torch.optim.Optimizer, total_steps: int, pct_start: float):
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[1e-3, 1e-2], total_steps=total_steps,
                                               pct_start=pct_start, anneal_strategy="cos", div_factor=25.0,
                                               final_div_factor=1e4, base_momentum=0.85, max_momentum=0.95,
                                               cycle_momentum=True)


def assert_same_groups(ours: torch.optim.Optimizer, reference: torch.optim.Optimizer, step: int) -> None:
    """The same LR and momentum in every group, to the last bit (torch's arithmetic, step-counted)."""
    for mine, theirs in zip(ours.param_groups, reference.param_groups):
        assert (mine["lr"], momentum_of(mine)) == (theirs["lr"], momentum_of(theirs)), step


@pytest.mark.parametrize("pct_start", PCT_STARTS)
@pytest.mark.parametrize("total_steps", [40, 137, 400])
@pytest.mark.parametrize("name", ["momentum", "nesterov", "adam", "adamw"])
def test_one_cycle_equals_torch_one_cycle_lr_and_momentum_at_every_step(name, total_steps, pct_start):
    ours, reference = two_groups(name), two_groups(name)
    scheduler = create_scheduler("one-cycle", ours, [1e-3, 1e-2], total_steps, pct_start)
    assert isinstance(scheduler, ProgressScheduler)
    expected = torch_one_cycle(reference, total_steps, pct_start)
    for step in range(total_steps + 1):  # every step's values, and those set after the last step
        assert_same_groups(ours, reference, step)
        if step < total_steps:
            run_steps(ours, scheduler, 1)
            run_steps(reference, expected, 1)
    assert momentum_of(ours.param_groups[0]) == pytest.approx(0.95, abs=1e-3)  # back up at the end
    if "betas" in ours.param_groups[0]:
        assert ours.param_groups[0]["betas"][1] == 0.999  # beta2 is left alone


def test_one_cycle_is_a_pure_function_of_progress_with_the_momentum_moving_against_the_lr():
    lr = [one_cycle(i / 100, 0.25)[0] for i in range(101)]
    momentum = [one_cycle(i / 100, 0.25)[1] for i in range(101)]
    assert lr[0] == pytest.approx(1 / 25) and lr[25] == pytest.approx(1.0) and lr[100] == pytest.approx(1 / 25e4)
    assert momentum[0] == pytest.approx(0.95) and momentum[25] == pytest.approx(0.85)
    assert momentum[100] == pytest.approx(0.95)
    assert all(a < b for a, b in zip(lr[:25], lr[1:26])) and all(a > b for a, b in zip(lr[25:], lr[26:]))
    assert all(a > b for a, b in zip(momentum[:25], momentum[1:26]))
    assert all(a < b for a, b in zip(momentum[25:], momentum[26:]))


@pytest.mark.parametrize("name", ["momentum", "adamw"])
def test_a_time_budget_runs_the_same_one_cycle_momentum_included_on_the_share_of_time_used(name):
    """The clocked path (``create_scheduler(clock=...)``, as a budgeted run builds it) sets the LR
    and the momentum (beta1) from ``one_cycle`` of the clock."""
    ours = two_groups(name)
    now = [0.0]
    scheduler = create_scheduler("one-cycle", ours, [1e-3, 1e-2], 0, 0.25, clock=lambda: now[0])
    positions = [0.0, 0.03, 0.1, 0.25, 0.4, 0.77, 0.98, 1.0]
    for pos in positions:
        now[0] = pos
        ours.step()
        scheduler.step()
        factor, momentum = one_cycle(pos, 0.25)
        for group, peak in zip(ours.param_groups, (1e-3, 1e-2)):
            assert group["lr"] == pytest.approx(peak * factor, rel=1e-12)
            assert momentum_of(group) == pytest.approx(momentum, rel=1e-12)
    # the clocked cycle is the step-counted one at the same share of a long run
    steps = two_groups(name)
    counted = create_scheduler("one-cycle", steps, [1e-3, 1e-2], 2_001, 0.25)
    for _ in range(1_540):
        steps.step()
        counted.step()
    assert momentum_of(steps.param_groups[0]) == pytest.approx(one_cycle(0.77, 0.25)[1], abs=1e-3)
    assert steps.param_groups[1]["lr"] == pytest.approx(1e-2 * one_cycle(0.77, 0.25)[0], rel=1e-2)


def on_the_one_cycle(lr_factor: float, momentum: float) -> bool:
    """Whether an (LR multiplier, momentum) pair is a point of ``one_cycle``: both from one progress."""
    rising = 0.95 - 0.1 * (lr_factor - 1 / 25) / (1 - 1 / 25)    # the warm-up: LR up, momentum down
    falling = 0.85 + 0.1 * (1 - lr_factor) / (1 - 1 / 25e4)     # the rest: LR down, momentum up
    return min(abs(momentum - rising), abs(momentum - falling)) < 1e-9


def test_a_budgeted_run_cycles_the_momentum_with_the_lr(tmp_path):
    """Through the kit: under ``time_budget`` (the clock is the share of the budget used) SGD's
    momentum moves with the LR on the one-cycle, instead of holding the configured 0.9. The
    clock's readings depend on the host's speed, so the test asserts where the points lie, not when."""
    seen: list[tuple[float, float]] = []

    class Momenta(Callback):
        def before_batch(self) -> None:
            group = self.learner.optimizer.param_groups[0]
            seen.append((group["lr"] / 1e-2, group["momentum"]))

    nnlab.fit(fresh_model(), Blobs(200, 0), Blobs(60, 1), out=tmp_path / "run", stream=io.StringIO(),
              callbacks=[Momenta()], lr=1e-2, batch_size=32, optimizer="momentum", time_budget=0.5,
              tensorboard=False, plots=False)
    assert len({momentum for _, momentum in seen}) > 1
    assert all(on_the_one_cycle(factor, momentum) for factor, momentum in seen), seen


def run_steps(opt: torch.optim.Optimizer, scheduler, n: int) -> None:
    for _ in range(n):
        opt.step()
        scheduler.step()


def saved(state: dict, tmp_path) -> dict:
    """``state`` through ``torch.save`` and the weights-only load the checkpoints use."""
    torch.save(state, tmp_path / "state.pt")
    return torch.load(tmp_path / "state.pt", weights_only=True)


@pytest.mark.parametrize("writer", ["nnlab", "torch"])
@pytest.mark.parametrize("name", ["nesterov", "adamw"])
def test_a_one_cycle_resumed_from_a_saved_state_ends_as_the_uninterrupted_one(name, writer, tmp_path):
    """Cut after 23 of 60 steps, saved and loaded as a checkpoint is, then resumed: from this
    scheduler's state, and from the ``OneCycleLR`` state that runs written before saved."""
    whole = two_groups(name)
    run_steps(whole, torch_one_cycle(whole, 60, 0.25), 60)

    first = two_groups(name)
    scheduler = (torch_one_cycle(first, 60, 0.25) if writer == "torch"
                 else create_scheduler("one-cycle", first, [1e-3, 1e-2], 60, 0.25))
    run_steps(first, scheduler, 23)
    state = saved({"optimizer": first.state_dict(), "scheduler": scheduler.state_dict()}, tmp_path)
    second = two_groups(name)
    resumed = create_scheduler("one-cycle", second, [1e-3, 1e-2], 60, 0.25)
    second.load_state_dict(state["optimizer"])
    resumed.load_state_dict(state["scheduler"])
    run_steps(second, resumed, 60 - 23)
    assert_same_groups(second, whole, 60)
    assert resumed.last_epoch == 60


def test_a_budgeted_run_written_before_the_momentum_cycled_resumes_with_its_momentum_fixed(tmp_path):
    """A budgeted run written before saved a ``LambdaLR`` (the clocked one-cycle moved the LR
    alone): it resumes at its step with the LR on the one-cycle and its momentum as it began."""
    old = two_groups("momentum")
    old_scheduler = torch.optim.lr_scheduler.LambdaLR(old, lambda step: progress_factor("one-cycle", 0.3))
    run_steps(old, old_scheduler, 5)
    state = saved({"optimizer": old.state_dict(), "scheduler": old_scheduler.state_dict()}, tmp_path)
    new = two_groups("momentum")
    resumed = create_scheduler("one-cycle", new, [1e-3, 1e-2], 0, 0.25, clock=lambda: 0.6)
    new.load_state_dict(state["optimizer"])
    resumed.load_state_dict(state["scheduler"])
    run_steps(new, resumed, 3)
    assert resumed.last_epoch == 8
    assert new.param_groups[1]["lr"] == pytest.approx(1e-2 * one_cycle(0.6, 0.25)[0])
    assert [group["momentum"] for group in new.param_groups] == [0.9, 0.9]


def test_the_engine_tables_are_the_choices_config_checks_and_the_engine_builds():
    assert CHOICES["schedule"] == SCHEDULES and CHOICES["device"] == DEVICES
    assert CHOICES["optimizer"] == tuple(OPTIMIZER_CLASSES) and set(OPTIMIZERS) == set(OPTIMIZER_CLASSES)
    assert DEVICES == ("auto", "cpu", "cuda", "mps") and set(CLOCKED) <= set(SCHEDULES)
    model = nn.Linear(3, 2)
    for name in SCHEDULES:
        opt = create_optimizer("adamw", model, 1e-2, 0.0)
        create_scheduler(name, opt, [g["lr"] for g in opt.param_groups], 20)
    for name in CLOCKED:
        opt = create_optimizer("adamw", model, 1e-2, 0.0)
        create_scheduler(name, opt, [g["lr"] for g in opt.param_groups], 20, clock=lambda: 0.5)
    with pytest.raises(ConfigError, match="schedule: expected"):
        RunConfig(schedule="triangle").check()
    with pytest.raises(ConfigError, match="device: expected"):
        RunConfig(device="tpu").check()
    with pytest.raises(ConfigError, match="--set schedule: expected one of one-cycle, sgdr"):
        apply_overrides(RunConfig(), {"schedule": "triangle"})


def test_the_tables_and_the_config_import_no_torch():
    """The CLI builds --schedule, --optimizer and --device from these tables: ``nnlab --help`` stays quick."""
    code = "import sys, nnlab.engine.choices, nnlab.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
