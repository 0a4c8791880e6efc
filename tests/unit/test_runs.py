"""``nnlab runs`` (the table of runs and their status) and ``nnlab compare`` (config differences, curves overlaid)."""
import io
import json
import shutil

import pytest

from conftest import run_cli, write_square_fashion
from nnlab.commands.runs import flatten, list_runs, run_status
from nnlab.recipes import train


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """runs/ with a finished run, an interrupted one, a broken one (torn metrics.jsonl, no checkpoint) and a
    finished one at another learning rate inside a sweep-like subfolder."""
    base = tmp_path_factory.mktemp("runs-folder")
    data = write_square_fashion(base / "fashion-mnist", n_train=300, n_test=100)
    tiny = {"data": str(data), "device": "cpu", "batch_size": 50, "eval_batch_size": 100, "epochs": 2,
            "model_args.widths": (8, 16, 16), "model_args.head_hidden": 32, "threads": 1, "valid_fraction": 0.2,
            "tensorboard": False, "plots": False}
    runs = base / "runs"
    train("fashion-cnn", out=runs / "finished", overrides=tiny, stream=io.StringIO())
    train("fashion-cnn", out=runs / "sweep" / "lr-0.03", overrides={**tiny, "lr": 0.03}, stream=io.StringIO())
    train("fashion-cnn", out=runs / "interrupted", overrides={**tiny, "stop_after_epochs": 1}, stream=io.StringIO())
    broken = runs / "broken"
    broken.mkdir()
    shutil.copy(runs / "finished" / "config.json", broken / "config.json")
    first = (runs / "finished" / "metrics.jsonl").read_text().splitlines()[0]
    (broken / "metrics.jsonl").write_text(first + "\n" + '{"epoch": 2, "train_lo')
    (runs / "not-a-run").mkdir()  # an empty folder is neither listed nor an error
    (runs / "sweep" / "summary.json").write_text('{"trials_done": 1}')  # a sweep's report: a folder of runs
    return runs


def test_runs_shows_finished_interrupted_and_broken_and_exits_0(folder, capsys):
    code, out, err = run_cli(capsys, "runs", str(folder))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["name", "recipe", "kind", "started", "status", "epochs", "metric", "seconds"]
    status = {line.split()[0]: line.split()[5] for line in lines[1:] if not line.startswith("    ")}
    assert status == {"finished": "finished", "sweep/lr-0.03": "finished", "interrupted": "interrupted",
                      "broken": "broken"}
    assert f"resumable: nnlab train --resume {folder / 'interrupted'}" in out
    assert "metrics.jsonl ends in a torn line after 1 rows and there is no checkpoint" in out


def test_runs_json_rows_have_epochs_metric_and_seconds(folder, capsys):
    code, out, _ = run_cli(capsys, "runs", str(folder), "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out.strip().splitlines()[-1])["runs"]}
    finished = rows["finished"]
    summary = json.loads((folder / "finished" / "summary.json").read_text())
    assert finished["metric"] == "test_accuracy" and finished["value"] == summary["test_accuracy"]
    assert finished["epochs"] == 2 and finished["seconds"] == summary["train_seconds"]
    assert rows["interrupted"]["epochs"] == 1 and rows["interrupted"]["metric"] == "best valid_acc"
    assert rows["broken"]["epochs"] == 1 and rows["broken"]["kind"] == "image"


def test_a_directory_without_config_is_broken_and_one_with_a_bad_summary_too(folder, tmp_path):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert run_status(lonely)["status"] == "broken" and run_status(lonely)["why"] == "no config.json"
    bad = tmp_path / "bad"
    shutil.copytree(folder / "finished", bad)
    (bad / "summary.json").write_text("{")
    assert run_status(bad)["status"] == "broken" and "summary.json unreadable" in run_status(bad)["why"]


def test_runs_of_a_missing_folder_is_one_clear_line_and_exit_2(tmp_path, capsys):
    code, out, err = run_cli(capsys, "runs", str(tmp_path / "nowhere"))
    assert code == 2 and err.strip() == f"nnlab: error: runs: {tmp_path / 'nowhere'} is not a directory"


def test_an_empty_folder_has_no_runs(tmp_path, capsys):
    assert list_runs(tmp_path) == []
    code, out, _ = run_cli(capsys, "runs", str(tmp_path))
    assert code == 0 and out.strip() == f"no runs under {tmp_path}"


def test_compare_tables_the_differing_settings_and_overlays_the_curves(folder, tmp_path, capsys):
    a, b = folder / "finished", folder / "sweep" / "lr-0.03"
    png = tmp_path / "cmp.png"
    code, out, err = run_cli(capsys, "compare", str(a), str(b), "-o", str(png), "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["differences"]["lr"] == [0.01, 0.03]
    assert "epochs" not in result["differences"] and "model_args.widths" not in result["differences"]
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run_cli(capsys, "compare", str(a), str(b), "-o", str(png))
    lr_row = next(line for line in out.splitlines() if line.startswith("lr "))
    assert lr_row.split() == ["lr", "0.01", "0.03"]
    assert any(line.startswith("test_accuracy") for line in out.splitlines())


def test_compare_needs_two_runs_and_real_run_directories(folder, tmp_path, capsys):
    code, _, err = run_cli(capsys, "compare", str(folder / "finished"))
    assert code == 2 and "at least two" in err
    code, _, err = run_cli(capsys, "compare", str(folder / "finished"), str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "no config.json" in err


def test_flatten_names_nested_keys_with_dots():
    assert flatten({"a": 1, "model_args": {"widths": [8], "x": {"y": 2}}, "e": {}}) == {
        "a": 1, "model_args.widths": [8], "model_args.x.y": 2, "e": {}}
