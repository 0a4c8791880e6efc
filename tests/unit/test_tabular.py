"""Tabular runs on small generated CSVs: preprocessing, scores, the CLI round trip and bad input."""
import csv
import json

import numpy as np
import pytest
import torch

from nnlab.data.tabular import Preprocessor, fit_preprocessor, read_csv
from nnlab.engine.scores import regression_report, roc_auc, roc_auc_ovr
from nnlab.errors import DataError
from conftest import run_cli, write_csv


def admissions_rows(n, seed):
    """gre, gpa (numbers), rank (1-4, a category), city (text) and admit (0/1) from a known rule."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        gre, gpa = rng.normal(600, 80), rng.normal(3.2, 0.4)
        rank, city = int(rng.integers(1, 5)), str(rng.choice(["paris", "lyon", "nice"]))
        score = (gre - 600) / 80 + (gpa - 3.2) / 0.4 + {1: 1.5, 2: 0.5, 3: -0.5, 4: -1.5}[rank]
        score += 1.0 if city == "paris" else 0.0
        rows.append([f"{gre:.0f}", f"{gpa:.2f}", rank, city, int(score + rng.normal(0, 0.3) > 0.3)])
    return rows


HEADER = ["gre", "gpa", "rank", "city", "admit"]


@pytest.fixture
def admissions(tmp_path):
    return write_csv(tmp_path / "admissions.csv", HEADER, admissions_rows(400, seed=0))


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


FAST = ["--epochs", "15", "--set", "lr=0.02"]


def test_train_eval_predict_round_trip(admissions, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "tabular", "--csv", str(admissions), "--target", "admit",
                             "--categorical", "rank,city", "--hidden", "16", "--out", str(run), *FAST, "--json")
    assert code == 0, err
    summary = last_json(out)
    assert summary["test_accuracy"] > 0.85 and summary["classes"] == ["0", "1"]
    assert summary["positive_class"] == "1" and 0.85 < summary["test_roc_auc"] <= 1.0
    assert {"test_precision", "test_recall", "test_f1", "train_seconds", "confusion"} <= summary.keys()
    assert summary["rows"] == {"train": 288, "valid": 32, "test": 80}
    assert summary["n_features"] == 2 + 4 + 3 and summary["hidden"] == [16]
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "curves.png", "confusion.png", "summary.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["kind"] == "tabular"

    code, out, err = run_cli(capsys, "eval", str(run), "--json")
    assert code == 0, err
    again = last_json(out)
    assert again["test_accuracy"] == summary["test_accuracy"]
    assert again["test_roc_auc"] == pytest.approx(summary["test_roc_auc"])
    code, out, err = run_cli(capsys, "eval", str(run))
    assert code == 0 and "test accuracy" in out and "precision" in out

    new = write_csv(tmp_path / "new.csv", HEADER[:-1], [r[:-1] for r in admissions_rows(25, seed=1)])
    code, out, err = run_cli(capsys, "predict", str(run), "--csv", str(new), "-o", str(tmp_path / "p.csv"), "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["rows"] == 25 and sum(result["predicted_counts"].values()) == 25
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 25 and rows[0]["predicted_admit"] in ("0", "1")
    assert float(rows[0]["probability_0"]) + float(rows[0]["probability_1"]) == pytest.approx(1, abs=1e-5)

    code, out, _ = run_cli(capsys, "predict", str(run), str(new))
    assert code == 0 and "25 predictions written to" in out
    assert (tmp_path / "new.predictions.csv").is_file()
    code, _, err = run_cli(capsys, "predict", str(run), "--csv", str(new), "--invert", "no")
    assert code == 2 and "--invert does not apply" in err


def test_logistic_model_trains_and_reloads(admissions, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "tabular", "--csv", str(admissions), "--target", "admit",
                             "--categorical", "rank,city", "--model", "logistic", "--out", str(run), *FAST, "--json")
    assert code == 0, err
    summary = last_json(out)
    assert summary["model"] == "logistic" and summary["test_accuracy"] > 0.85
    code, out, _ = run_cli(capsys, "eval", str(run), "--json")
    assert last_json(out)["test_accuracy"] == summary["test_accuracy"]
    code, _, err = run_cli(capsys, "train", "--resume", str(run))
    assert code == 2 and f"--resume {run}: a tabular run trains in seconds and cannot be resumed" in err and "start a new run" in err


def test_regression_reports_errors_in_target_units(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    price = 1000 + 200 * x[:, 0] - 100 * x[:, 1] + rng.normal(0, 10, size=300)
    path = write_csv(tmp_path / "houses.csv", ["a", "b", "c", "price"], np.column_stack([x, price]).round(4).tolist())
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "tabular", "--csv", str(path), "--target", "price", "--task", "regress",
                             "--model", "logistic", "--out", str(run), "--epochs", "30", "--set", "lr=0.05", "--json")
    assert code == 0, err
    summary = last_json(out)
    assert "test_accuracy" not in summary and summary["test_r2"] > 0.95
    assert summary["test_mae"] < 60 and summary["test_rmse"] == pytest.approx(summary["test_mse"] ** 0.5)
    code, out, err = run_cli(capsys, "eval", str(run))
    assert code == 0 and "test R^2" in out
    code, out, err = run_cli(capsys, "predict", str(run), "--csv", str(path), "-o", str(tmp_path / "p.csv"))
    assert code == 0, err
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    errors = [abs(float(r["predicted_price"]) - float(r["price"])) for r in rows]
    assert np.mean(errors) < 60  # predictions come back in the target's units, not standardized


@pytest.mark.slow  # the whole recipe: ~8 s alone on 2 cores, several times that on a busy machine
def test_bundled_breast_cancer_logistic_reaches_95_percent(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "breast-cancer-logistic", "--out", str(tmp_path / "r"), "--json")
    assert code == 0, err
    summary = last_json(out)
    assert summary["dataset"] == "sklearn:breast-cancer" and summary["classes"] == ["benign", "malignant"]
    assert summary["rows"]["test"] == 113 and summary["test_accuracy"] >= 0.95


def test_preprocessing_statistics_come_from_training_rows_only(tmp_path):
    rows = [[str(v), "a" if v < 5 else "b", str(v % 2)] for v in range(10)]
    table = read_csv(write_csv(tmp_path / "t.csv", ["x", "kind", "y"], rows))
    train_rows = torch.tensor([0, 1, 2, 3])
    pre = fit_preprocessor(table, "y", "classify", ["kind"], train_rows, classes=["0", "1"])
    assert pre.numeric["x"] == pytest.approx((1.5, np.std([0, 1, 2, 3])))
    assert pre.categorical == {"kind": ["a"]}  # "b" occurs only outside the training rows
    x = pre.transform(table)
    assert pre.feature_names == ["x", "kind=a"]
    assert x[:4, 0].mean().item() == pytest.approx(0, abs=1e-6)
    assert x[9].tolist() == pytest.approx([(9 - 1.5) / np.std([0, 1, 2, 3]), 0.0])  # unseen category: zeros
    assert Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre


def test_roc_auc_and_regression_scores_match_scikit_learn():
    from sklearn import metrics  # a dependency: a plain import, never a skip
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (200,), generator=generator).float()  # many ties
    labels = torch.rand(200, generator=generator) < 0.4
    assert roc_auc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels.numpy(), scores.numpy()))
    probs = torch.rand(150, 3, generator=generator).softmax(1)
    targets = torch.arange(150) % 3
    expected = metrics.roc_auc_score(targets.numpy(), probs.numpy(), multi_class="ovr", average="macro")
    assert roc_auc_ovr(probs, targets) == pytest.approx(expected)
    assert roc_auc(scores, torch.ones(200, dtype=torch.bool)) is None
    preds, truth = torch.randn(50, generator=generator), torch.randn(50, generator=generator)
    report = regression_report(preds, truth)
    assert report["r2"] == pytest.approx(metrics.r2_score(truth.numpy(), preds.numpy()))
    assert report["mae"] == pytest.approx(metrics.mean_absolute_error(truth.numpy(), preds.numpy()))


@pytest.mark.parametrize("header,rows,argv,message", [
    (HEADER, admissions_rows(20, 0), ["--target", "admitted"], "no target column 'admitted'; columns are: gre"),
    (HEADER, admissions_rows(20, 0), ["--target", "admit", "--categorical", "rank"],
     "column 'city' is not numeric ('"),
    (HEADER, [], ["--target", "admit"], "no data rows under the header"),
    (["a", "y"], [[i, "yes"] for i in range(20)], ["--target", "y"], "target column 'y' has only one class ('yes')"),
    (["a", "y"], [[i, i % 2] for i in range(20)] + [["oops", 1]], ["--target", "y"],
     "column 'a' is not numeric ('oops' on line 22); declare it with --categorical a"),
    (["a", "y"], [[1, 0], [2, 1, 3]], ["--target", "y"], "line 3 has 3 fields, the header has 2"),
])
def test_bad_csv_is_one_line_naming_the_file_and_exit_2(tmp_path, capsys, header, rows, argv, message):
    path = write_csv(tmp_path / "bad.csv", header, rows)
    code, _, err = run_cli(capsys, "train", "tabular", "--csv", str(path), "--out", str(tmp_path / "r"), *argv)
    assert code == 2
    assert message in err and str(path) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "config.json").exists()  # nothing half-written


def test_empty_file_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = run_cli(capsys, "train", "tabular", "--csv", str(empty), "--target", "y")
    assert code == 2 and f"{empty}: empty CSV" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,message", [
    (["train", "tabular"], "needs --csv FILE --target COLUMN"),
    (["train", "tabular", "--csv", "/nonexistent/x.csv"], "--target: name the column"),
    (["train", "tabular", "--csv", "/nonexistent/x.csv", "--target", "y"], "/nonexistent/x.csv: file not found"),
    (["train", "iris-mlp", "--model", "cnn"], "expected logistic or mlp"),
    (["train", "iris-mlp", "--hidden", "8,x"], "--set hidden: expected tuple"),
    (["train", "iris-mlp", "--hidden", "0"], "layer sizes must be positive"),
    (["train", "iris-mlp", "--task", "regress", "--set", "test_fraction=0"], "test_fraction must be in (0, 1)"),
    (["train", "fashion-mlp", "--csv", "x.csv"], "unknown setting 'csv'"),
])
def test_bad_flags_are_one_line_and_exit_2(argv, message, capsys):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_recipes_listing_shows_tabular_recipes(capsys):
    code, out, _ = run_cli(capsys, "recipes", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["breast-cancer-logistic"]["dataset"] == "breast-cancer"
    assert rows["breast-cancer-logistic"]["model"] == "logistic" and rows["tabular"]["kind"] == "tabular"
    code, out, _ = run_cli(capsys, "recipes")
    line = next(line for line in out.splitlines() if line.startswith("diabetes-regression "))
    assert "diabetes" in line and "mlp" in line and "R^2" in line


def test_dry_run_trains_one_epoch(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "wine-mlp", "--out", str(tmp_path / "r"), "--dry-run", "--json")
    assert code == 0, err
    summary = last_json(out)
    assert summary["dry_run"] is True and summary["epochs"] == 1
