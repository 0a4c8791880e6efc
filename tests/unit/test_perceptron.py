"""The perceptron trick and algorithm, the logic gates, XOR, and `nnlab train perceptron`."""
import csv
import json

import numpy as np
import pytest

from nnlab.kinds.perceptron import (classify, gate_data, learn_gates, perceptron_trick, separable_points,
                                    train_perceptron, train_xor_mlp)
from conftest import run_cli, write_csv


def test_trick_moves_the_line_towards_a_misclassified_point_only():
    w, b = np.array([1.0, 0.0]), 0.0
    point = np.array([-2.0, 1.0])  # on the negative side, but labelled 1
    new_w, new_b = perceptron_trick(w, b, point, 1, lr=0.5)
    assert np.allclose(new_w, [0.0, 0.5]) and new_b == 0.5
    assert new_w @ point + new_b > w @ point + b
    same_w, same_b = perceptron_trick(w, b, np.array([2.0, 1.0]), 1, lr=0.5)  # already right
    assert np.array_equal(same_w, w) and same_b == b


def test_algorithm_converges_on_separable_points():
    x, y = separable_points(200, seed=3)
    result = train_perceptron(x, y, epochs=100, lr=0.1, seed=0)
    assert result.converged and result.mistakes[-1] == 0 and result.mistakes[0] > 0
    assert np.array_equal(classify(result.weights, result.bias, x), y)
    assert len(result.history) == len(result.mistakes) < 100


@pytest.mark.parametrize("gate", ["AND", "OR", "NOT"])
def test_perceptron_learns_linearly_separable_gates(gate):
    result = learn_gates()[gate]
    x, y = gate_data(gate)
    assert result.converged
    assert np.array_equal(classify(result.weights, result.bias, x), y)


def test_xor_is_not_linearly_separable_but_an_mlp_solves_it():
    result = train_perceptron(*gate_data("XOR"), epochs=200)
    assert not result.converged and min(result.mistakes) > 0
    _, accuracy = train_xor_mlp(seed=0)
    assert accuracy == 1.0


def test_plots_false_writes_no_picture_of_the_kinds_own_either(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "perceptron", "--out", str(tmp_path / "run"), "--set", "plots=false")
    assert code == 0, err
    assert (tmp_path / "run" / "summary.json").is_file() and not list((tmp_path / "run").glob("*.png"))


def test_train_perceptron_writes_a_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "perceptron", "--out", str(run), "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["converged"] and summary["test_accuracy"] >= 0.95 and summary["classes"] == ["0", "1"]
    assert summary["mistakes"][-1] == 0 and len(summary["mistakes"]) == summary["epochs"]
    assert set(summary["gates"]) == {"AND", "OR", "NOT"}
    assert all(g["outputs"] == g["expected"] for g in summary["gates"].values())
    assert len(summary["gates"]["AND"]["weights"]) == 2 and len(summary["gates"]["NOT"]["weights"]) == 1
    assert summary["xor"]["perceptron_converged"] is False and summary["xor"]["mlp_accuracy"] == 1.0
    assert (run / "boundary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run / "config.json").read_text())["kind"] == "perceptron"

    code, out, err = run_cli(capsys, "eval", str(run), "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["test_accuracy"] == summary["test_accuracy"]


def test_perceptron_on_a_csv_and_predict(tmp_path, capsys):
    x, y = separable_points(60, seed=1)
    path = write_csv(tmp_path / "pts.csv", ["height", "weight", "label"],
                     [[f"{a:.4f}", f"{b:.4f}", "big" if t else "small"] for (a, b), t in zip(x, y)])
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "perceptron", "--csv", str(path), "--target", "label",
                             "--out", str(run), "--epochs", "200", "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["classes"] == ["big", "small"] and summary["features"] == ["height", "weight"]
    assert summary["converged"] and summary["rows"] == {"train": 48, "test": 12}
    code, out, err = run_cli(capsys, "predict", str(run), "--csv", str(path), "-o", str(tmp_path / "p.csv"), "--json")
    assert code == 0, err
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert np.mean([r["predicted"] == r["label"] for r in rows]) >= 0.95


@pytest.mark.parametrize("header,rows,message", [
    (["a", "b", "c", "y"], [[1, 2, 3, i % 2] for i in range(10)], "expected 2 feature columns besides 'y', found 3"),
    (["a", "b", "y"], [[i, i, i % 3] for i in range(12)], "target column 'y' has 3 classes; a perceptron needs 2"),
    (["a", "b", "label"], [[i, i, i % 2] for i in range(12)], "no target column 'y'"),
])
def test_bad_perceptron_csv_is_one_line_and_exit_2(tmp_path, capsys, header, rows, message):
    path = write_csv(tmp_path / "bad.csv", header, rows)
    code, _, err = run_cli(capsys, "train", "perceptron", "--csv", str(path), "--target", "y")
    assert code == 2 and message in err and str(path) in err and len(err.strip().splitlines()) == 1


def test_perceptron_refuses_flags_it_has_no_use_for(capsys):
    code, _, err = run_cli(capsys, "train", "perceptron", "--batch-size", "8")
    assert code == 2 and "unknown setting 'batch_size'" in err
