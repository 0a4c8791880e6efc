"""``nnlab sweep``: grids, random search and TPE over seeds on one Optuna study; workers that share it
(none duplicated, none lost), a sweep killed midway and started again, and bad input as one line."""
import json
import os
import signal
import socket
import subprocess
import sys

import optuna
import pytest

from conftest import run_cli, write_square_fashion
from nnlab.commands.sweep import Axis, make_plan, parse_grid, settings_table, split_values
from nnlab.commands.sweep_workers import Worker, open_storage, open_study
from nnlab.errors import ConfigError


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    return write_square_fashion(tmp_path_factory.mktemp("squares") / "fashion-mnist", n_train=300, n_test=100)


def tiny(squares):
    """Flags that make each fashion-cnn trial a second-long run on the square data."""
    sets = {"data": squares, "device": "cpu", "batch_size": 50, "eval_batch_size": 100, "valid_fraction": 0.2,
            "model_args.widths": "(8,16,16)", "model_args.head_hidden": 32, "threads": 1, "tensorboard": False}
    return ["--epochs", "1"] + [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


def overrides(squares):
    return {"data": str(squares), "device": "cpu", "batch_size": 50, "eval_batch_size": 100, "valid_fraction": 0.2,
            "model_args.widths": (8, 16, 16), "model_args.head_hidden": 32, "threads": 1, "tensorboard": False,
            "epochs": 1}


def trials_of(out, state=optuna.trial.TrialState.COMPLETE):
    study = optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'sweep.db'}")
    return [t for t in study.get_trials(states=(state,))]


def jobs(trials):
    return sorted((tuple(sorted(t.params.items())), t.user_attrs["seed"]) for t in trials)


def test_values_split_at_commas_outside_brackets():
    assert split_values("1e-3, (8,16),[1, 2],adamw") == ["1e-3", "(8,16)", "[1, 2]", "adamw"]
    lr, widths, span = parse_grid(["lr=1e-3,3e-3", "model_args.widths=(8,16),(4,8)", "weight_decay=1e-5..1e-2:log"])
    assert lr.values == [1e-3, 3e-3] and widths.values == [(8, 16), (4, 8)]
    assert (span.low, span.high, span.log, span.is_range) == (1e-5, 1e-2, True, True)
    assert parse_grid(["epochs=1..4"])[0].integer


@pytest.mark.parametrize("argv,message", [
    (["--grid", "lrr=1,2"], "--grid lrr=1: unknown setting 'lrr'"),
    (["--grid", "epochs=1,abc"], "--grid epochs=abc: --set epochs: expected int, got 'abc'"),
    (["--grid", "optimizer=adamw,lamb"], "--grid optimizer=lamb: --set optimizer: expected one of"),
    (["--grid", "lr="], "--grid lr=: no values (an empty grid)"),
    ([], "give at least one --grid"),
    (["--grid", "lr"], "expected KEY=VALUE1,VALUE2"),
    (["--grid", "seed=1,2"], "use --seeds N"),
    (["--grid", "lr=1e-3..1e-2"], "sample it with --search random or tpe"),
    (["--grid", "lr=1e-3,1e-2", "--metric", "test_accuracy"], "rank by a validation metric"),
    (["--grid", "lr=1e-3", "--search", "tpe"], "--search tpe needs --trials N"),
    (["--grid", "lr=1e-3", "--prune-warmup", "2"], "--prune-warmup is a setting of --prune; add --prune"),
    (["--grid", "lr=1e-3", "--prune", "--prune-warmup", "0"], "--prune-warmup >= 1"),
    (["--grid", "lr=1e-3", "--storage", "sqlite:////nonexistent-dir/x/sweep.db"],
     "--storage sqlite:////nonexistent-dir/x/sweep.db: cannot open the study database"),
    (["--grid", "lr=1e-3", "--storage", "postgresql://me:secret@127.0.0.1:9/nnlab"],
     "--storage postgresql://me:***@127.0.0.1:9/nnlab: cannot open the study database"),
])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, capsys, argv, message):
    code, out, err = run_cli(capsys, "sweep", "fashion-cnn", "--out", str(tmp_path / "s"), *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("nnlab: error: ")
    assert message in err, err
    assert "secret" not in err


def test_a_sweep_ranks_settings_over_seeds_and_running_it_again_repeats_nothing(squares, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "fashion-cnn", "--grid", "lr=3e-3,3e-2", "--seeds", "2", "--out", str(out), *tiny(squares)]
    code, stdout, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["trials_done"] == summary["trials_planned"] == 4 and summary["complete"]
    assert [s["n"] for s in summary["settings"]] == [2, 2]
    means = [s["mean"] for s in summary["settings"]]
    assert means == sorted(means, reverse=True)  # valid_acc: higher first
    first = trials_of(out)
    assert len(first) == 4 and len(set(jobs(first))) == 4
    for trial in first:  # each trial is an ordinary run, trained with its own seed and setting
        run = out / trial.user_attrs["run_dir"]
        config = json.loads((run / "config.json").read_text())
        assert config["seed"] == trial.user_attrs["seed"] and config["lr"] == float(trial.params["lr"])
        assert json.loads((run / "summary.json").read_text())["test_accuracy"] == trial.user_attrs["test_value"]
    best = summary["best"]
    tests = [t.user_attrs["test_value"] for t in first if f"lr={t.params['lr']}" == best["setting"]]
    assert best["test_metric"] == "test_accuracy" and best["test_mean"] == pytest.approx(sum(tests) / 2)
    for name in ("results.csv", "trials.csv", "sweep.png", "summary.json"):
        assert (out / name).stat().st_size > 0
    assert len((out / "results.csv").read_text().splitlines()) == 3
    code, _, err = run_cli(capsys, "eval", str(out / first[0].user_attrs["run_dir"]), "--json")
    assert code == 0, err
    code, stdout, _ = run_cli(capsys, *argv)  # the same command again: nothing left to run
    assert code == 0 and "4 of 4 trials" in stdout and "chosen: " in stdout
    assert jobs(trials_of(out)) == jobs(first) and len(trials_of(out, optuna.trial.TrialState.FAIL)) == 0


def test_a_trial_whose_worker_died_is_run_again_once(squares, tmp_path):
    plan = make_plan("fashion-cnn", ["lr=3e-3,3e-2"], seeds=1, out=tmp_path / "s", overrides=overrides(squares))
    plan.out.mkdir(parents=True)
    storage = open_storage(plan.storage)
    study = open_study(plan, storage)
    worker = Worker(plan)
    claimed = worker.claim()  # as if a worker of this host claimed it and was killed
    storage.set_trial_user_attr(claimed, "worker", f"{socket.gethostname()}:{2**22 + 7}")
    worker.run()
    complete = trials_of(plan.out)
    failed = trials_of(plan.out, optuna.trial.TrialState.FAIL)
    assert len(complete) == 2 and len(set(jobs(complete))) == 2 and len(failed) == 1
    assert [t.user_attrs.get("retry_of") for t in complete if "retry_of" in t.user_attrs] == [failed[0].number]
    assert len(study.trials) == 3


def test_another_sweep_in_the_same_study_is_refused(squares, tmp_path):
    plan = make_plan("fashion-cnn", ["lr=3e-3"], out=tmp_path / "s", overrides=overrides(squares))
    plan.out.mkdir(parents=True)
    open_study(plan, open_storage(plan.storage))
    other = make_plan("fashion-cnn", ["lr=1e-2"], out=tmp_path / "s", overrides=overrides(squares))
    with pytest.raises(ConfigError, match="belongs to another sweep"):
        open_study(other, open_storage(other.storage))


@pytest.mark.parametrize("search,slots,seeds", [("random", 1, 2), ("tpe", 2, 1)])
def test_random_search_and_tpe_draw_each_setting_once_and_run_it_with_every_seed(squares, tmp_path, capsys, search,
                                                                                 slots, seeds):
    out = tmp_path / search
    code, stdout, err = run_cli(capsys, "sweep", "fashion-cnn", "--search", search, "--trials", str(slots),
                                "--seeds", str(seeds),
                                "--grid", "lr=1e-3..3e-2:log", "--grid", "optimizer=adamw,nesterov", "--out", str(out),
                                *tiny(squares), "--json")
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    trials = trials_of(out)
    assert summary["trials_planned"] == slots * seeds and len(trials) == slots * seeds
    by_slot = {}
    for trial in trials:
        by_slot.setdefault(trial.user_attrs["slot"], []).append(trial)
    assert sorted(by_slot) == list(range(slots))
    for members in by_slot.values():  # one drawn setting per slot, run with both seeds
        assert sorted(t.user_attrs["seed"] for t in members) == list(range(seeds))
        assert all(m.params == members[0].params for m in members) and 1e-3 <= members[0].params["lr"] <= 3e-2


def test_settings_are_ranked_by_mean_with_sample_std():
    plan = make_plan("fashion-cnn", ["lr=1,2"])
    rows = [{"setting": "a", "params": {}, "value": v, "seed": s, "seconds": 1.0} for s, v in enumerate((0.5, 0.7))]
    rows += [{"setting": "b", "params": {}, "value": 0.8, "seed": 0, "seconds": 3.0}]
    table = settings_table(plan, rows)
    assert [r["setting"] for r in table] == ["b", "a"]
    assert table[1]["mean"] == pytest.approx(0.6) and table[1]["std"] == pytest.approx(0.1414, abs=1e-4)
    minimize = make_plan("fashion-cnn", ["lr=1,2"], metric="valid_loss")
    assert [r["setting"] for r in settings_table(minimize, rows)] == ["a", "b"]
    assert Axis("lr", ["1e-3"], [1e-3]).value("1e-3") == 1e-3


@pytest.mark.slow
def test_two_workers_finish_a_2x2_grid_with_2_seeds_in_exactly_8_trials(squares, tmp_path, capsys):
    out = tmp_path / "two"
    code, stdout, err = run_cli(capsys, "sweep", "fashion-cnn", "--grid", "lr=3e-3,3e-2", "--grid",
                                "optimizer=adamw,sgd", "--seeds", "2", "--workers", "2", "--out", str(out),
                                *tiny(squares), "--json")
    assert code == 0, err
    trials = optuna.load_study(study_name="two", storage=f"sqlite:///{out / 'sweep.db'}").trials
    assert len(trials) == 8 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len(set(jobs(trials))) == 8
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes did some
    assert json.loads(stdout.strip().splitlines()[-1])["trials_done"] == 8
    assert len([p for p in out.iterdir() if (p / "summary.json").is_file()]) == 8
    assert not list(out.glob("*/*.png"))  # trials write no plots of their own (--set plots=true would)


# The sweep of another process (another machine), stopped as it starts its trial number AT (counted
# in that process): "kill" SIGKILLs it there; "wait" writes a line to the pipe TOLD and waits for a
# byte on the pipe GO before training it. The tests keep in step with it by these events, not by clocks.
ELSEWHERE = """
import os, signal, sys
import nnlab.commands.sweep_workers as workers
from nnlab.cli import main
action, at, told, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
real, calls = workers.train_or_continue, []
def train_or_continue(*args, **kwargs):
    calls.append(args)
    if len(calls) == at:
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os.write(told, b"waiting\\n")
        os.read(go, 1)
    return real(*args, **kwargs)
workers.train_or_continue = train_or_continue
sys.exit(main(sys.argv[5:]))
"""


class SweepElsewhere:
    """``nnlab sweep ARGV`` in another process that stops as it starts its trial ``at``: killed there
    (``kill=True``: a machine lost mid-sweep), or waiting there (``waiting()``) until ``go()``."""

    def __init__(self, argv, at, log, kill=False):
        told_read, told_write = os.pipe()
        go_read, self.go_write = os.pipe()
        with open(log, "w") as out:  # a file, not a pipe: nothing blocks on output nobody reads yet
            self.process = subprocess.Popen(
                [sys.executable, "-c", ELSEWHERE, "kill" if kill else "wait", str(at), str(told_write), str(go_read),
                 *argv], stdout=out, stderr=subprocess.STDOUT, pass_fds=(told_write, go_read), env=os.environ.copy())
        os.close(told_write)
        os.close(go_read)
        self.told, self.log = told_read, log

    def waiting(self):
        """True once it waits at its trial ``at``; False if it ended first (the pipe closed)."""
        return os.read(self.told, 64) == b"waiting\n"

    def go(self):
        """Let it train its trial ``at`` (once; nothing if it already ended)."""
        if self.go_write is not None:
            try:
                os.write(self.go_write, b"g")
            except BrokenPipeError:
                pass
            os.close(self.go_write)
            self.go_write = None

    def finish(self):
        """Its exit code (negative: the signal that ended it) and its output; 300 s only against a hang."""
        self.go()
        code = self.process.wait(timeout=300)
        if self.told is not None:
            os.close(self.told)
            self.told = None
        return code, self.log.read_text()


@pytest.mark.slow
def test_a_sweep_killed_midway_and_started_again_ends_with_the_same_8(squares, tmp_path, capsys, monkeypatch):
    out = tmp_path / "killed"
    argv = ["sweep", "fashion-cnn", "--grid", "lr=3e-3,3e-2", "--grid", "optimizer=adamw,sgd", "--seeds", "2",
            "--out", str(out), *tiny(squares)]
    code, log = SweepElsewhere(argv, at=3, log=tmp_path / "killed.log", kill=True).finish()
    assert code == -signal.SIGKILL, log  # killed as it started its third trial
    done_before = trials_of(out)
    assert len(done_before) == 2 and len(trials_of(out, optuna.trial.TrialState.RUNNING)) == 1
    import nnlab.recipes
    trained, real = [], nnlab.recipes.train

    def train(*args, **kwargs):  # each trial this sweep trains (or resumes): its run directory
        trained.append(kwargs.get("out") or kwargs.get("resume"))
        return real(*args, **kwargs)
    monkeypatch.setattr(nnlab.recipes, "train", train)
    code, stdout, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    complete = trials_of(out)
    assert len(complete) == 8 and len(set(jobs(complete))) == 8
    assert len(trained) == 6  # nothing finished before was run again; the killed trial was
    assert {out / t.user_attrs["run_dir"] for t in done_before}.isdisjoint(trained)
    assert json.loads(stdout.strip().splitlines()[-1])["trials_done"] == 8


def test_ablate_lists_every_declared_trick_once_against_the_full_recipe(squares, tmp_path, capsys, monkeypatch):
    from nnlab.recipes import RECIPES, Recipe, recipe_config
    config = recipe_config("fashion-cnn", {**overrides(squares), "label_smoothing": 0.1, "augment": ("flip_lr",)})
    config.recipe = "tiny-squares"
    tricks = {"flip": {"augment": ()}, "label_smoothing": {"label_smoothing": 0.0}}
    monkeypatch.setitem(RECIPES, "tiny-squares", Recipe("tiny-squares", "test", "-", config, tricks=tricks))
    out = tmp_path / "ablate"
    code, stdout, err = run_cli(capsys, "ablate", "tiny-squares", "--seeds", "2", "--out", str(out), "--json")
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    table = summary["ablation"]
    assert sorted(r["trick"] for r in table["tricks"]) == ["flip", "label_smoothing"]
    assert table["full"]["n"] == 2 and all(r["n"] == 2 for r in table["tricks"])
    runs = {t.params["variant"]: t for t in trials_of(out) if t.user_attrs["seed"] == 0}
    assert sorted(runs) == ["flip", "full", "label_smoothing"]
    flip = json.loads((out / runs["flip"].user_attrs["run_dir"] / "config.json").read_text())
    assert flip["augment"] == [] and flip["label_smoothing"] == 0.1  # only its own trick removed
    seed0 = {name: t.value for name, t in runs.items()}
    gain = next(r for r in table["tricks"] if r["trick"] == "flip")
    seed1 = {t.params["variant"]: t.value for t in trials_of(out) if t.user_attrs["seed"] == 1}
    assert gain["valid_gain"] == pytest.approx(((seed0["full"] - seed0["flip"]) + (seed1["full"] - seed1["flip"])) / 2)
    assert (out / "ablation.png").stat().st_size > 0 and (out / "ablation.csv").is_file()
    code, text, _ = run_cli(capsys, "ablate", "tiny-squares", "--seeds", "2", "--out", str(out))
    assert code == 0 and "full recipe: valid_acc" in text and text.count("\nflip ") == 1


def test_ablate_of_a_recipe_without_tricks_is_a_clear_error(capsys):
    code, _, err = run_cli(capsys, "ablate", "iris-mlp")
    assert code == 2 and "declares no tricks" in err


def test_a_trial_claimed_by_a_worker_that_died_before_signing_it_is_taken_over():
    """The kill can land between a worker's claim (WAITING -> RUNNING) and its signing the trial."""
    import datetime
    import types
    from nnlab.commands.sweep_workers import CLAIM_GRACE_SECONDS, is_stale
    now = datetime.datetime.now()
    unsigned = types.SimpleNamespace(user_attrs={}, datetime_start=now)
    assert not is_stale(unsigned)  # its claimer may be signing it right now
    unsigned.datetime_start = now - datetime.timedelta(seconds=CLAIM_GRACE_SECONDS + 1)
    assert is_stale(unsigned)
    gone = types.SimpleNamespace(user_attrs={"worker": f"{socket.gethostname()}:{2**22 + 12345}"}, datetime_start=now)
    assert is_stale(gone)  # no such process on this host
    alive = types.SimpleNamespace(user_attrs={"worker": f"{socket.gethostname()}:{os.getpid()}"}, datetime_start=now)
    assert not is_stale(alive)


def test_median_pruning_stops_a_setting_below_the_median_and_skips_its_other_seeds(squares, tmp_path, capsys):
    """lr 1e-6 learns nothing in its first epoch while lr 3e-2 does: with 2 finished trials to compare
    with, its first seed is pruned after epoch 1 and its second is not trained at all."""
    out = tmp_path / "pruned"
    argv = ["sweep", "fashion-cnn", "--grid", "lr=3e-2,1e-6", "--seeds", "2", "--prune", "--prune-startup", "2",
            "--out", str(out), *tiny(squares), "--epochs", "2", "--set", "schedule=constant"]
    code, stdout, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (summary["trials_done"], summary["trials_pruned"], summary["complete"]) == (4, 2, True)
    good, bad = summary["settings"]
    assert (good["setting"], good["n"], good["pruned"]) == ("lr=3e-2", 2, 0)
    assert (bad["setting"], bad["n"], bad["pruned"], bad["mean"]) == ("lr=1e-6", 0, 2, None)
    assert summary["best"]["setting"] == "lr=3e-2"
    for trial in trials_of(out):  # trained an epoch at a time, every epoch reported, an ordinary run
        run = out / trial.user_attrs["run_dir"]
        assert trial.params["lr"] == "3e-2" and sorted(trial.intermediate_values) == [1, 2]
        assert json.loads((run / "config.json").read_text())["stop_after_epochs"] is None
        assert trial.value == json.loads((run / "summary.json").read_text())["best_valid_acc"]
    pruned = sorted(trials_of(out, optuna.trial.TrialState.PRUNED), key=lambda t: t.user_attrs["seed"])
    assert [(t.params["lr"], t.user_attrs["seed"]) for t in pruned] == [("1e-6", 0), ("1e-6", 1)]
    first, skipped = pruned
    median = sorted(t.intermediate_values[1] for t in trials_of(out))[0]  # the median of 2 is between them
    assert list(first.intermediate_values) == [1] and first.intermediate_values[1] < median
    run = out / first.user_attrs["run_dir"]
    assert (run / "last.pt").is_file() and not (run / "summary.json").exists()  # stopped resumable
    assert skipped.intermediate_values == {} and skipped.user_attrs["skipped"] == "another seed was pruned"
    assert not (out / skipped.user_attrs["run_dir"]).exists()
    trials_csv = (out / "trials.csv").read_text()
    assert trials_csv.startswith("trial,lr,seed,value,seconds,run_dir,pruned,pruned_epoch")
    assert ",True,1\n" in trials_csv  # the pruned seed, after epoch 1
    assert (out / "sweep.png").stat().st_size > 0
    code, text, _ = run_cli(capsys, *argv)  # again: nothing left to run, the same table
    assert code == 0 and "4 of 4 trials, 2 pruned" in text and "0 (+2 pruned)" in text
    assert len(optuna.load_study(study_name="pruned", storage=f"sqlite:///{out / 'sweep.db'}").trials) == 4


def test_pruning_needs_a_kind_that_resumes_after_each_epoch(capsys):
    code, _, err = run_cli(capsys, "sweep", "iris-mlp", "--grid", "lr=1e-3,1e-2", "--prune")
    assert code == 2 and "--prune: recipe 'iris-mlp' trains a" in err and "drop --prune" in err


def test_a_database_whose_tables_another_machine_is_creating_is_opened_once_they_exist(monkeypatch, tmp_path):
    """Machines starting on a new PostgreSQL database at once: all but one collide creating Optuna's
    tables (an IntegrityError); they try again and open it. A database that stays broken is one line."""
    import sqlalchemy
    from nnlab.commands import sweep_workers
    real, calls = optuna.storages.RDBStorage, []

    def racing(url, **kwargs):
        calls.append(url)
        if len(calls) <= 2:
            raise sqlalchemy.exc.IntegrityError("CREATE TYPE studydirection", {}, Exception("duplicate key value"))
        return real(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(sweep_workers.time, "sleep", lambda seconds: None)
    assert open_storage(f"sqlite:///{tmp_path / 'race.db'}") is not None and len(calls) == 3
    calls.clear()
    monkeypatch.setattr(sweep_workers, "SCHEMA_ATTEMPTS", 2)
    with pytest.raises(ConfigError, match="cannot open the study database: .*duplicate key value"):
        open_storage(f"sqlite:///{tmp_path / 'race2.db'}")


def claim_race(url, workers=4, trials=30):
    """``workers`` connections to the study database at ``url`` (as many workers) claim ``trials``
    waiting trials at the same instants; returns the ids claimed (one entry per success) and all ids."""
    import threading
    study = optuna.create_study(storage=open_storage(url), study_name="race")
    for _ in range(trials):
        study.enqueue_trial({})
    storages = [open_storage(url) for _ in range(workers)]
    study_id = storages[0].get_study_id_from_name("race")
    trial_ids = [t._trial_id for t in storages[0].get_all_trials(study_id, deepcopy=False)]
    barrier, wins = threading.Barrier(workers), []

    def claim(storage):
        for trial_id in trial_ids:
            barrier.wait()
            if storage.set_trial_state_values(trial_id, optuna.trial.TrialState.RUNNING):
                wins.append(trial_id)

    threads = [threading.Thread(target=claim, args=(storage,)) for storage in storages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return wins, trial_ids


def test_workers_racing_for_the_same_waiting_trials_on_sqlite_claim_each_once(tmp_path):
    """Each trial goes to exactly one worker (without BEGIN IMMEDIATE, sqlite3 let two workers claim
    the same trial: 12 of 40 in one measurement)."""
    wins, trial_ids = claim_race(f"sqlite:///{tmp_path / 'race.db'}")
    assert sorted(wins) == sorted(trial_ids)
