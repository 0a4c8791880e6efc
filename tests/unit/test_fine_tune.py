"""The fine-tune schedule: head-only epochs, then every layer group at discriminative rates; its
phases in metrics.jsonl; exact resume across the phase change (small generated data, CPU)."""
import io
import json

import pytest
import torch

from nnlab.cli import main
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.engine.optim import create_optimizer
from nnlab.engine.schedules import create_scheduler, fine_tune_factor, one_cycle_factor
from nnlab.errors import ConfigError
from nnlab.models import create_model
from nnlab.recipes import train


def fine_tune(squares, **extra):
    """Overrides for a seconds-long fine-tune run: tiny net, 1 head-only epoch of 3, lr_mult 0.1."""
    return {"data": str(squares), "device": "cpu", "batch_size": 50, "eval_batch_size": 100, "epochs": 3,
            "model_args.widths": (8, 16, 16), "model_args.head_hidden": 32, "model_args.dropout": 0.2,
            "threads": 1, "schedule": "fine-tune", "freeze_epochs": 1, "lr_mult": 0.1, "plots": False, **extra}


def initial_weights():
    torch.manual_seed(0)  # what the run's Setup draws for seed 0
    return create_model("cnn", n_classes=10, widths=(8, 16, 16), head_hidden=32, dropout=0.2).state_dict()


def rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_one_cycle_factor_matches_torch_one_cycle():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    reference = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=101, pct_start=0.25,
                                                    cycle_momentum=False)
    for step in range(101):
        assert one_cycle_factor(step, 101, 0.25) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6, abs=1e-9)
        opt.step()
        reference.step()


def test_fine_tune_factor_holds_the_body_at_zero_then_cycles_every_group():
    head = [fine_tune_factor(s, 10, 30, head=True) for s in range(30)]
    body = [fine_tune_factor(s, 10, 30, head=False) for s in range(30)]
    assert body[:10] == [0.0] * 10 and max(head[:10]) == pytest.approx(1.0, rel=0.05)
    assert head[10:] == body[10:] and max(body[10:]) == pytest.approx(1.0, rel=0.05)
    assert body[-1] < 1e-3 and head[9] < 1e-3  # each phase anneals to ~0


def test_fine_tune_schedule_gives_each_layer_group_its_rate_after_the_head_only_phase():
    model = create_model("cnn", n_classes=10, widths=(8, 16), head_hidden=0)
    opt = create_optimizer("adamw", model, 1e-2, 0.0, lr_mult=0.1, split=True)
    scheduler = create_scheduler("fine-tune", opt, [g["lr"] for g in opt.param_groups], 40, freeze_steps=20)
    peaks: dict[str, float] = {}
    for step in range(40):
        for group in opt.param_groups:
            key = (group["name"], step < 20)
            peaks[key] = max(peaks.get(key, 0.0), group["lr"])
        opt.step()
        scheduler.step()
    assert peaks[("stem", True)] == peaks[("body", True)] == 0.0
    assert peaks[("head", True)] == pytest.approx(1e-2, rel=0.05)
    for name, lr in (("stem", 1e-4), ("body", 1e-3), ("head", 1e-2)):
        assert peaks[(name, False)] == pytest.approx(lr, rel=0.05)
    with pytest.raises(ConfigError, match="freeze_epochs"):
        create_scheduler("fine-tune", opt, [g["lr"] for g in opt.param_groups], 10, freeze_steps=20)


def test_head_only_phase_changes_only_the_head_then_the_body_trains_and_resume_is_exact(squares, tmp_path):
    cut = tmp_path / "cut"
    stopped = train("fashion-cnn", out=cut, overrides=fine_tune(squares, stop_after_epochs=1), stream=io.StringIO())
    assert stopped["stopped_after_epochs"] == 1
    start, after_head = initial_weights(), load_checkpoint(cut / "last.pt")["model"]
    params = {name for name, _ in create_model("cnn", widths=(8, 16, 16), head_hidden=32).named_parameters()}
    for name in params:
        same = torch.equal(after_head[name], start[name])
        assert same != name.startswith("head."), name  # the body's weights untouched, every head weight moved
    train(None, resume=cut, stream=io.StringIO())
    after_all = load_checkpoint(cut / "last.pt")["model"]
    for name in ("stem.0.weight", "body.0.0.weight", "body.1.0.weight", "head.1.weight"):
        assert not torch.equal(after_all[name], start[name]), name
    whole = tmp_path / "whole"
    summary = train("fashion-cnn", out=whole, overrides=fine_tune(squares), stream=io.StringIO())
    uninterrupted = load_checkpoint(whole / "last.pt")["model"]
    assert all(torch.equal(uninterrupted[k], v) for k, v in after_all.items())
    assert summary["schedule"] == "fine-tune" and summary["freeze_epochs"] == 1 and summary["lr_mult"] == 0.1
    timing = {"seconds", "train_images_per_s"}
    strip = [{k: v for k, v in r.items() if k not in timing} for r in rows(cut)]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in rows(whole)]


def test_metrics_show_the_trained_groups_and_their_rates(squares, tmp_path, capsys):
    run = tmp_path / "cli"
    code = main(["train", "fashion-cnn", "--out", str(run), "--data", str(squares), "--epochs", "2",
                 "--batch-size", "50", "--schedule", "fine-tune", "--freeze-epochs", "1", "--lr-mult", "0.1",
                 "--lr", "0.01", "--set", "model_args.widths=(8,16,16)", "--set", "model_args.head_hidden=32",
                 "--set", "eval_batch_size=100", "--threads", "1", "--device", "cpu", "--json"])
    assert code == 0
    first, second = rows(run)
    assert first["trainable"] == ["head"] and second["trainable"] == ["stem", "body", "head"]
    assert first["group_lr"]["stem"] == first["group_lr"]["body"] == 0.0
    assert first["group_lr"]["head"] == pytest.approx(0.01, rel=0.05)
    lrs = second["group_lr"]
    assert lrs["stem"] == pytest.approx(0.1 * lrs["body"]) and lrs["body"] == pytest.approx(0.1 * lrs["head"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["freeze_epochs"] == 1


def test_a_head_only_phase_longer_than_the_run_is_refused(squares, tmp_path):
    with pytest.raises(ConfigError, match="freeze_epochs"):
        train("fashion-cnn", out=tmp_path / "long", overrides=fine_tune(squares, freeze_epochs=5),
              stream=io.StringIO())
