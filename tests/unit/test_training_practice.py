"""Training practice on the image runner: exact resume, reproducibility, schedules and snapshots,
LR finder, discriminative LRs and freezing, early stopping (small generated data, CPU)."""
import io
import json
import math

import pytest
import torch

from conftest import assert_same_run, metric_rows as rows, write_square_fashion
from nnlab.cli import main
from nnlab.engine.callbacks import EarlyStopping
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.engine.optim import create_optimizer, freeze
from nnlab.engine.schedules import create_scheduler, sgdr_boundaries, sgdr_factor
from nnlab.errors import ConfigError
from nnlab.models import create_model
from nnlab.kinds.image import evaluate
from nnlab.recipes import lr_find, train

@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    return write_square_fashion(tmp_path_factory.mktemp("squares") / "fashion-mnist")


def small(squares, **extra):
    """Overrides for a seconds-long run: tiny net (with dropout, so torch's RNG matters), flips; no plots
    (``plots=True`` where a test reads them)."""
    return {"data": str(squares), "device": "cpu", "batch_size": 50, "eval_batch_size": 100, "epochs": 3,
            "model_args.widths": (8, 16, 16), "model_args.head_hidden": 32, "model_args.dropout": 0.2,
            "threads": 1, "plots": False, **extra}


def test_resumed_run_ends_bitwise_equal_to_uninterrupted_run(squares, tmp_path):
    whole = tmp_path / "whole"
    full = train("fashion-cnn", out=whole, overrides=small(squares), stream=io.StringIO())
    cut = tmp_path / "cut"
    stopped = train("fashion-cnn", out=cut, overrides=small(squares, stop_after_epochs=1), stream=io.StringIO())
    assert stopped["stopped_after_epochs"] == 1 and not (cut / "summary.json").exists()
    assert len(rows(cut)) == 1
    resumed = train(None, resume=cut, stream=io.StringIO())
    assert_same_run(cut, whole)
    assert len(rows(whole)) == 3
    assert resumed["test_accuracy"] == full["test_accuracy"]
    assert (cut / "lr.csv").read_text() == (whole / "lr.csv").read_text()


def test_resume_drops_a_torn_metrics_line_and_rows_after_the_checkpoint(squares, tmp_path):
    cut = tmp_path / "cut"
    train("fashion-cnn", out=cut, overrides=small(squares, stop_after_epochs=1, epochs=2), stream=io.StringIO())
    with open(cut / "metrics.jsonl", "a") as handle:  # as if killed while writing epoch 2's row
        handle.write('{"epoch": 2, "train_lo')
    train(None, resume=cut, stream=io.StringIO())
    assert [r["epoch"] for r in rows(cut)] == [1, 2]


def test_same_seed_gives_identical_metrics(squares, tmp_path):
    train("fashion-cnn", out=tmp_path / "a", overrides=small(squares, epochs=2), stream=io.StringIO())
    train("fashion-cnn", out=tmp_path / "b", overrides=small(squares, epochs=2), stream=io.StringIO())
    assert rows(tmp_path / "a") == rows(tmp_path / "b")


def test_resume_of_a_finished_run_is_refused(squares, tmp_path, capsys):
    train("fashion-cnn", out=tmp_path / "done", overrides=small(squares, epochs=1), stream=io.StringIO())
    assert main(["train", "--resume", str(tmp_path / "done")]) == 2
    assert "already finished" in capsys.readouterr().err
    assert main(["train", "fashion-cnn", "--resume", str(tmp_path / "done")]) == 2


def test_cli_stop_then_resume(squares, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--data", str(squares), "--batch-size", "50", "--epochs", "2", "--set", "model_args.widths=(8,16,16)",
            "--set", "model_args.head_hidden=32", "--set", "eval_batch_size=100"]
    assert main(["train", "fashion-cnn", "--out", str(run), *args, "--set", "stop_after_epochs=1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["stopped_after_epochs"] == 1 and "--resume" in out["resume"]
    assert main(["train", "--resume", str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 2 and summary["test_accuracy"] > 0.5


def test_sgdr_factor_matches_torch_warm_restarts():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    reference = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=2)
    bounds = sgdr_boundaries(70, cycles=3, cycle_mult=2)
    assert bounds == [10, 30, 70]
    for step in range(70):
        assert sgdr_factor(step, bounds) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-9), step
        opt.step()
        reference.step()


def test_sgdr_boundaries_end_exactly_at_the_last_step():
    assert sgdr_boundaries(100, cycles=3)[-1] == 100
    assert sgdr_boundaries(7, cycles=3, cycle_mult=2) == [1, 3, 7]
    with pytest.raises(ConfigError):
        sgdr_boundaries(2, cycles=3)


def test_sgdr_run_saves_a_snapshot_per_cycle_and_ensembles_them(squares, tmp_path):
    run = tmp_path / "sgdr"
    train("fashion-cnn", out=run, overrides=small(squares, schedule="sgdr", cycles=3, epochs=3, plots=True),
          stream=io.StringIO())
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["cycle-1.pt", "cycle-2.pt", "cycle-3.pt"]
    result = evaluate(run, ensemble="snapshots")
    snapshots = result["snapshot_accuracy"]
    assert set(snapshots) == {"cycle-1", "cycle-2", "cycle-3"}
    assert result["test_accuracy"] >= min(snapshots.values())  # the average is no worse than its worst member
    lines = (run / "lr.csv").read_text().splitlines()
    lrs = [float(line.split(",")[1]) for line in lines[1:]]
    steps_per_cycle = len(lrs) // 3
    assert lrs[0] == pytest.approx(lrs[steps_per_cycle]) == pytest.approx(max(lrs))  # a warm restart
    assert lrs[steps_per_cycle - 1] < 0.1 * max(lrs)
    assert (run / "lr.png").is_file()


@pytest.mark.parametrize("name", ["cosine", "step", "constant", "one-cycle"])
def test_every_schedule_trains(name, squares, tmp_path):
    summary = train("fashion-cnn", out=tmp_path / name, overrides=small(squares, schedule=name, epochs=2),
                    stream=io.StringIO())
    assert summary["schedule"] == name and summary["test_accuracy"] > 0.2


def test_lr_find_restores_the_model_and_suggests_rates(squares, tmp_path, monkeypatch):
    import nnlab.engine.lr_finder as finder
    seen = {}
    original = finder.lr_find

    def spy(learner, **kwargs):
        before = {k: v.clone() for k, v in learner.raw_model.state_dict().items()}
        result = original(learner, **kwargs)
        seen["same"] = all(torch.equal(v, learner.raw_model.state_dict()[k]) for k, v in before.items())
        seen["optimizer_empty"] = not learner.optimizer.state
        return result

    monkeypatch.setattr(finder, "lr_find", spy)
    found = lr_find("fashion-cnn", out=tmp_path / "lr", overrides=small(squares), steps=60, start_lr=1e-5, end_lr=10)
    assert seen == {"same": True, "optimizer_empty": True}
    assert 1e-5 < found["min_over_10_lr"] < 10 and 1e-5 < found["steepest_lr"] < 10
    assert found["suggested_lr"] == found["min_over_10_lr"]
    assert (tmp_path / "lr" / "lr_find.png").is_file()


def test_lr_find_cli_prints_json(squares, tmp_path, capsys):
    code = main(["lr-find", "fashion-cnn", "--out", str(tmp_path / "lr"), "--data", str(squares), "--steps", "40",
                 "--batch-size", "50", "--set", "model_args.widths=(8,16,16)", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"suggested_lr", "steepest_lr", "min_over_10_lr"} <= out.keys()
    assert all(math.isfinite(out[k]) and out[k] > 0 for k in ("suggested_lr", "steepest_lr", "min_over_10_lr"))


def test_lr_mult_gives_earlier_layer_groups_smaller_rates():
    model = create_model("cnn", n_classes=10, widths=(8, 16), head_hidden=0)
    opt = create_optimizer("adamw", model, 1e-2, 0.1, lr_mult=0.1)
    by_param = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    stem, body, head = model.layer_groups()
    for group, lr in ((stem, 1e-4), (body, 1e-3), (head, 1e-2)):
        assert all(by_param[id(p)] == pytest.approx(lr) for p in group.parameters())
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert all(p.ndim > 1 for p in model.parameters() if id(p) in decay)  # no decay on biases and norms
    scheduler = create_scheduler("one-cycle", opt, [g["lr"] for g in opt.param_groups], 100)
    for _ in range(25):
        opt.step()
        scheduler.step()
    peaks = sorted({round(g["lr"], 8) for g in opt.param_groups})
    assert peaks == pytest.approx([1e-4, 1e-3, 1e-2], rel=0.05)  # each group peaks at its own rate


def test_freeze_body_trains_only_the_head(squares, tmp_path):
    model = create_model("cnn", n_classes=10, widths=(8, 16), head_hidden=0)
    assert freeze(model, ["body"]) == ["stem", "body"]
    stem, body, head = model.layer_groups()
    assert not any(p.requires_grad for p in [*stem.parameters(), *body.parameters()])
    assert all(p.requires_grad for p in head.parameters())
    with pytest.raises(ConfigError, match="layer groups are stem, body, head"):
        freeze(model, ["neck"])
    run = tmp_path / "frozen"
    summary = train("fashion-cnn", out=run, overrides=small(squares, freeze="body", epochs=1), stream=io.StringIO())
    assert summary["frozen"] == ["stem", "body"]
    torch.manual_seed(0)
    initial = create_model("cnn", n_classes=10, widths=(8, 16, 16), head_hidden=32, dropout=0.2)
    trained = load_checkpoint(run / "last.pt")["model"]
    assert torch.equal(trained["stem.0.weight"], initial.state_dict()["stem.0.weight"])
    assert not torch.equal(trained["head.1.weight"], initial.state_dict()["head.1.weight"])


def test_early_stopping_stops_and_the_best_weights_are_scored(squares, tmp_path):
    summary = train("fashion-cnn", out=tmp_path / "es",
                    overrides=small(squares, patience=1, monitor="valid_loss", epochs=30, schedule="constant",
                                    lr=0.3), stream=io.StringIO())
    assert summary["epochs"] < 30
    assert summary["monitor"] == "valid_loss"
    losses = [r["valid_loss"] for r in rows(tmp_path / "es")]
    assert summary["best_epoch"] == 1 + losses.index(min(losses))


def test_early_stopping_replay_rebuilds_its_state():
    stopper = EarlyStopping(patience=3, monitor="valid_loss", mode="min")
    stopper.replay([{"valid_loss": 1.0}, {"valid_loss": 0.5}, {"valid_loss": 0.7}, {"valid_loss": 0.6}])
    assert stopper.best == 0.5 and stopper.waited == 2


def train_two_processes(squares, out, *flags, timeout=300):
    """``nnlab train fashion-cnn --nproc 2`` of a tiny net on ``squares`` into ``out``: its summary."""
    import subprocess
    import sys
    args = ["fashion-cnn", "--data", str(squares), "--device", "cpu", "--set", "model_args.widths=(8,16,16)",
            "--set", "model_args.head_hidden=32", "--set", "eval_batch_size=100", "--set", "threads=1", *flags,
            "--out", str(out), "--nproc", "2", "--json"]
    done = subprocess.run([sys.executable, "-m", "nnlab", "train", *args], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(squares, tmp_path):
    single = train("fashion-cnn", out=tmp_path / "one", stream=io.StringIO(),
                   overrides={"data": str(squares), "batch_size": 50, "epochs": 2, "device": "cpu",
                              "model_args.widths": (8, 16, 16), "model_args.head_hidden": 32, "augment": (),
                              "eval_batch_size": 100, "threads": 1})
    two = train_two_processes(squares, tmp_path / "two", "--batch-size", "50", "--epochs", "2", "--set", "augment=()")
    one_rows, two_rows = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert len(two_rows) == 2
    for a, b in zip(one_rows, two_rows):  # same samples per step; only batch-norm statistics differ
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.1)
        assert b["valid_loss"] == pytest.approx(a["valid_loss"], rel=0.1)
    assert 0.0 <= two["test_accuracy"] <= 1.0 and two["epochs"] == single["epochs"] == 2
    assert (tmp_path / "two" / "summary.json").is_file() and (tmp_path / "two" / "best.pt").is_file()


def test_a_time_budget_lifts_the_epoch_limit_and_the_progress_lines_say_no_total(squares, tmp_path, ticking_clock):
    """On a clock that ticks 10 ms a reading, a 0.6 s budget is a count of batches (2 epochs and a part)."""
    log = io.StringIO()
    summary = train("fashion-cnn", out=tmp_path / "budget", overrides=small(squares, epochs=1, time_budget=0.6),
                    stream=log)
    lines = log.getvalue().splitlines()
    assert summary["epochs"] == len(rows(tmp_path / "budget")) > 1  # the budget, not epochs=1, ended it
    spent = load_checkpoint(tmp_path / "budget" / "last.pt")["budget_spent"]
    assert spent == pytest.approx(0.6, abs=0.05)  # it ended as the budget ran out, to a few readings
    assert lines[0].startswith("epoch 1  train_loss") and lines[1].startswith("epoch 2  train_loss")


@pytest.mark.slow
def test_two_process_ddp_under_a_time_budget_stops_every_rank_at_the_same_batch(squares, tmp_path):
    """Each rank has its own clock; without a vote one rank would stop mid-epoch and leave the
    other waiting in its next gradient all-reduce (the run would hang until the timeout)."""
    summary = train_two_processes(squares, tmp_path / "two", "--batch-size", "10", "--time-budget", "3",
                                  "--set", "plots=false", timeout=120)
    assert summary["epochs"] == len(rows(tmp_path / "two")) >= 1  # finished (a rank left waiting: a timeout)
