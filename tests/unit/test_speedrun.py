"""`nnlab speedrun`: the table of a tiny generated task with its baseline, the protocol's rule that test
data is read once after the last epoch, each tutorial baseline on tiny data, and bad input."""
import json
from pathlib import Path

import pytest

from conftest import run_cli, stem_maker, tiny_image
from nnlab.commands import speedrun as sr
from nnlab.commands import speedrun_baselines
from nnlab.engine.learner import Learner
from nnlab.recipes import get_recipe, recipe_config
from nnlab.recipes import train as train_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_BASELINE = sr.Baseline("examples-mnist", "pytorch/examples on the squares", "examples_mnist", cap_s=60.0,
                            max_epochs=1)


@pytest.fixture
def squares_task(squares, monkeypatch):
    """A speedrun task on the small square 'fashion-mnist': fashion-cnn-92's protocol at a tiny size."""
    task = sr.Task("squares-50", "fashion-cnn-92", "test_accuracy", 0.5, "squares, test accuracy",
                   sr.image_data_missing, TINY_BASELINE, overrides=tiny_image(squares))
    monkeypatch.setitem(sr.TASKS, task.name, task)
    return task


@pytest.fixture(scope="module")
def names_dir(tmp_path_factory):
    """Two 'languages' told apart by their endings."""
    root = tmp_path_factory.mktemp("names")
    stems = stem_maker(1, 4)
    (root / "Alpha.txt").write_text("\n".join(s + "ov" for s in stems(120)) + "\n", encoding="utf-8")
    (root / "Beta.txt").write_text("\n".join(s + "ini" for s in stems(120)) + "\n", encoding="utf-8")
    return root


def test_speedrun_of_a_tiny_task_reports_each_seed_and_the_ratio_of_the_measured_times(squares_task, tmp_path,
                                                                                      capsys):
    out = tmp_path / "speedrun"
    code, stdout, err = run_cli(capsys, "speedrun", "squares-50", "--seeds", "2", "--baselines", "--json",
                                "--out", str(out))
    assert code == 0, err
    result = json.loads(stdout.strip().splitlines()[-1])
    assert json.loads((out / "speedrun.json").read_text()) == result
    assert result["command"] == "nnlab speedrun squares-50 --seeds 2 --baselines --json --out " + str(out)
    assert {"cpu", "cores", "bf16_amx_flags", "torch_threads"} <= result["host"].keys()
    assert len(result["load_before"]) == 3 and len(result["load_after"]) == 3 and result["torch"]
    (row,) = result["tasks"]
    assert (row["task"], row["recipe"], row["seeds"], row["metric"]) == ("squares-50", "fashion-cnn-92", 2,
                                                                         "test_accuracy")
    assert [run["seed"] for run in row["runs"]] == [0, 1]
    summaries = [json.loads((out / "squares-50" / f"seed-{seed}" / "summary.json").read_text()) for seed in (0, 1)]
    # the time is each run's own train_seconds; loading and the test pass are reported apart
    assert [run["seconds"] for run in row["runs"]] == [s["train_seconds"] for s in summaries]
    assert [run["load_seconds"] for run in row["runs"]] == [s["load_seconds"] for s in summaries]
    assert [run["scoring_seconds"] for run in row["runs"]] == [s["scoring_seconds"] for s in summaries]
    assert [run["metric"] for run in row["runs"]] == [s["test_accuracy"] for s in summaries]
    assert row["reached"] == sum(s["test_accuracy"] >= 0.5 for s in summaries)
    mean = sum(s["train_seconds"] for s in summaries) / 2
    assert row["seconds"]["mean"] == pytest.approx(mean)
    assert row["seconds"]["min"] == min(s["train_seconds"] for s in summaries)
    baseline = row["baseline"]
    assert (baseline["name"], baseline["epochs"], baseline["max_epochs"]) == ("examples-mnist", 1, 1)
    assert len(baseline["curve"]) == 1 and baseline["curve"][0][0] == pytest.approx(baseline["seconds"], abs=1e-3)
    assert baseline["reached"] == (baseline["metric"] >= 0.5)
    assert row["ratio"] == pytest.approx(baseline["seconds"] / mean)
    assert row["ratio_is"].startswith("measured" if baseline["reached"] else "a lower bound (stopped by its epochs)")
    assert row["ratio_is"].endswith("" if row["reached"] == 2 else f"; nnlab reached the target on {row['reached']} "
                                    "of 2 seeds")

    table = sr.format_table(result).splitlines()
    assert table[0].split() == ["task", "recipe", "target", "reached", "metric", "train", "s", "load", "s",
                                "scoring", "s", "baseline", "baseline", "s", "its", "metric", "ratio"]
    cells = table[1].split()
    assert cells[:5] == ["squares-50", "fashion-cnn-92", ">=", "0.5", f"{row['reached']}/2"]
    assert cells[-1] == f"{'' if baseline['reached'] else '>'}{row['ratio']:.2f}x"
    assert "examples-mnist" in cells and table[-2].startswith("host: ")


class Watched:
    """An image dataset that logs every read of its test split."""

    def __init__(self, data, events):
        self._data, self._events = data, events

    def __getattr__(self, name):
        if name.startswith("test_"):
            self._events.append("test")
        return getattr(self._data, name)


@pytest.fixture
def epochs_logged(monkeypatch):
    """The events of a run: "epoch" as each training epoch starts (the kit's Learner)."""
    events = []
    one_epoch = Learner.one_epoch

    def logged(self):
        events.append("epoch")
        return one_epoch(self)
    monkeypatch.setattr(Learner, "one_epoch", logged)
    return events


def test_an_image_speedrun_recipe_reads_the_test_split_once_after_its_last_epoch(squares, tmp_path, monkeypatch,
                                                                                 epochs_logged):
    from nnlab.kinds import image
    load = image.load_image_dataset
    monkeypatch.setattr(image, "load_image_dataset", lambda *a, **k: Watched(load(*a, **k), epochs_logged))
    train_recipe("fashion-cnn-92", out=tmp_path / "run", overrides=tiny_image(squares, epochs=3))
    reads = [i for i, event in enumerate(epochs_logged) if event == "test"]
    assert epochs_logged.count("epoch") == 3
    # the test images and labels, read together once, after the third epoch
    assert epochs_logged[:3] == ["epoch"] * 3 and reads == [3, 4]


def test_a_names_speedrun_recipe_scores_its_test_names_once_after_its_last_epoch(names_dir, tmp_path, monkeypatch,
                                                                                 epochs_logged):
    from nnlab.kinds import names
    scores = names.test_scores

    def logged(*args, **kwargs):
        epochs_logged.append("test")
        return scores(*args, **kwargs)
    monkeypatch.setattr(names, "test_scores", logged)
    train_recipe("names-cnn-84", out=tmp_path / "run", overrides={
        "data": str(names_dir), "epochs": 2, "filters": 16, "embed": 8, "threads": 1, "plots": False,
        "tensorboard": False, "precision": "fp32"})
    assert epochs_logged == ["epoch", "epoch", "test"]


def test_every_task_trains_a_fixed_length_recipe():
    for task in sr.TASKS.values():
        config = get_recipe(task.recipe).config
        assert config.time_budget is None and not config.patience and config.epochs >= 1, task.name
        assert config.stop_after_epochs is None and config.limit_train_batches == 1.0, task.name


def test_each_tutorial_baseline_trains_an_epoch_on_tiny_data_and_measures_the_task_metric(names_dir, tmp_path):
    import torch
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 120, encoding="utf-8")
    cases = [("names_tutorial", recipe_config("names-cnn-84", {"data": str(names_dir)}), 0.84, False),
             ("word_language_model", recipe_config("shakespeare-lstm-150", {"data": str(text)}), 1.5, True),
             ("seq2seq_tutorial", recipe_config("translate-dates-99", {"pairs": 200}), 0.99, False)]
    for function, config, target, lower in cases:
        result = getattr(speedrun_baselines, function)(config, target, lower, 60.0, 1, torch.device("cpu"))
        assert result["epochs"] == 1 and len(result["curve"]) == 1, function
        assert result["stop"] == ("target" if result["reached"] else "epochs"), function
        assert result["reached"] == speedrun_baselines.reached(result["metric"], target, lower), function
        assert result["metric"] >= 0 and (lower or result["metric"] <= 1), function


def test_until_target_stops_at_the_target_and_counts_only_training():
    metrics = iter([0.3, 0.6, 0.9])
    trained = []
    result = speedrun_baselines.until_target(lambda: trained.append(1), lambda: next(metrics), 0.5, False,
                                             cap_s=60.0, max_epochs=10)
    assert (len(trained), result["epochs"], result["metric"], result["stop"], result["reached"]) == (
        2, 2, 0.6, "target", True)
    capped = speedrun_baselines.until_target(lambda: None, lambda: 0.1, 0.5, False, cap_s=0.0, max_epochs=10)
    assert (capped["epochs"], capped["metric"], capped["stop"], capped["reached"]) == (0, None, "cap", False)


def test_an_unknown_task_names_it_and_the_tasks_and_trains_nothing(tmp_path, capsys):
    code, out, err = run_cli(capsys, "speedrun", "fashion-92", "fashon-94", "--out", str(tmp_path / "o"))
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"nnlab: error: speedrun: unknown task 'fashon-94'; the tasks are {', '.join(sr.TASKS)}"]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, message", [(("--seeds", "0"), "--seeds must be at least 1, got 0"),
                                            (("--threads", "0"), "--threads must be at least 1, got 0"),
                                            (("--baseline-cap", "-1"), "--baseline-cap must be at least 0 seconds, "
                                                                       "got -1")])
def test_seeds_threads_or_a_cap_below_their_least_is_refused(flags, message, tmp_path, capsys):
    code, _, err = run_cli(capsys, "speedrun", "fashion-92", *flags, "--out", str(tmp_path / "o"))
    assert code == 2 and err.strip() == f"nnlab: error: {message}"
    assert not (tmp_path / "o").exists()


@pytest.fixture
def absent_task(tmp_path, monkeypatch):
    """A task whose images are in a folder that does not exist."""
    task = sr.Task("absent-90", "fashion-cnn-92", "test_accuracy", 0.9, "nothing", sr.image_data_missing,
                   overrides={"data": str(tmp_path / "nowhere")})
    monkeypatch.setitem(sr.TASKS, task.name, task)
    return task


def test_a_task_without_its_data_is_skipped_with_one_line_and_the_others_run(squares_task, absent_task, tmp_path,
                                                                             capsys):
    code, out, err = run_cli(capsys, "speedrun", "absent-90", "squares-50", "--seeds", "1", "--json",
                             "--out", str(tmp_path / "o"))
    assert code == 0, err
    skips = [line for line in err.splitlines() if "absent-90" in line]
    assert skips == [(f"nnlab speedrun: skipping absent-90: --data {tmp_path / 'nowhere'}: no such directory; "
                      "expected the fashion-mnist files there: train-images-idx3-ubyte.gz, "
                      "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz")]
    result = json.loads(out.strip().splitlines()[-1])
    assert [row["task"] for row in result["tasks"]] == ["squares-50"]
    assert [s["task"] for s in result["skipped"]] == ["absent-90"]


def test_nothing_to_run_is_one_line_and_exit_2(absent_task, tmp_path, capsys):
    code, out, err = run_cli(capsys, "speedrun", "absent-90", "--out", str(tmp_path / "o"))
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("nnlab: error: speedrun: nothing can run: absent-90 skipped: --data ")
    assert not Path(tmp_path / "o").exists()
