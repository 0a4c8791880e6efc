"""The command line on a small generated dataset in the exact IDX layout (fast, no real data)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from nnlab.data.idx import write_idx
from nnlab.data.images import save_image
from conftest import run_cli


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch):
    """A 600/200-image 'fashion-mnist' under $NNLAB_DATA: class k is a bright square at position k."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data" / "fashion-mnist"
    root.mkdir(parents=True)

    def split(n):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
        for i, k in enumerate(labels):
            r, c = divmod(int(k), 5)
            images[i, 4 + 10 * r:12 + 10 * r, 1 + 5 * c:6 + 5 * c] = 220
        return images, labels

    for prefix, n in (("train", 600), ("t10k", 200)):
        images, labels = split(n)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("NNLAB_DATA", str(tmp_path / "data"))
    return root


FAST = ["--set", "model_args.widths=(8,16,16)", "--set", "model_args.head_hidden=32", "--batch-size", "50",
        "--set", "eval_batch_size=100"]


def test_train_eval_predict_round_trip(tiny_fashion, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "fashion-cnn", "--out", str(run), "--epochs", "3", *FAST, "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert {"test_accuracy", "train_seconds", "classes"} <= summary.keys()
    assert summary["test_accuracy"] > 0.5 and summary["classes"][0] == "T-shirt/top"
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "curves.png", "confusion.png", "summary.json"):
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {"train_loss", "train_acc", "valid_loss", "valid_acc", "lr", "seconds"} <= rows[0].keys()

    code, out, err = run_cli(capsys, "eval", str(run), "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["test_accuracy"] == summary["test_accuracy"]

    square = torch.full((1, 90, 60), 30, dtype=torch.uint8)
    square[:, 13:39, 3:20] = 230  # class 0's square, in a larger, odd-sized canvas
    rgb = tmp_path / "odd.png"
    save_image(square.expand(3, -1, -1).contiguous(), rgb)
    code, out, err = run_cli(capsys, "predict", str(run), str(rgb), "--top-k", "2", "--json", "--invert", "no")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert len(result[0]["top"]) == 2 and 0 < result[0]["top"][0]["probability"] <= 1


def test_dry_run_trains_a_few_batches(tiny_fashion, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "fashion-mlp", "--out", str(tmp_path / "r"), "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["dry_run"] is True


def test_plain_progress_lines_when_not_a_tty(tiny_fashion, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "fashion-cnn", "--out", str(tmp_path / "r"), "--epochs", "2", *FAST)
    assert code == 0
    assert "epoch 1/2" in err and "epoch 2/2" in err and "img/s" in err
    assert "test accuracy" in out


def test_refuses_to_overwrite_a_run(tiny_fashion, tmp_path, capsys):
    run = tmp_path / "r"
    assert run_cli(capsys, "train", "fashion-mlp", "--out", str(run), "--dry-run")[0] == 0
    code, _, err = run_cli(capsys, "train", "fashion-mlp", "--out", str(run), "--dry-run")
    assert code == 2 and "already holds a run" in err


@pytest.mark.parametrize("argv,message", [
    (["train", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
    (["train", "fashion-cnn", "--set", "wings=2"], "unknown setting 'wings'"),
    (["train", "fashion-cnn", "--set", "epochs=two"], "epochs: expected int"),
    (["eval", "/nonexistent/run"], "not an nnlab run directory"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_dataset_says_where_it_looked(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "mnist-cnn", "--data", str(tmp_path / "empty"))
    assert code == 2 and str(tmp_path / "empty") in err and len(err.strip().splitlines()) == 1


def test_corrupt_idx_file_is_named(tiny_fashion, tmp_path, capsys):
    bad = tiny_fashion / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    code, _, err = run_cli(capsys, "train", "fashion-cnn", "--out", str(tmp_path / "r"), "--dry-run")
    assert code == 2 and "train-images-idx3-ubyte" in err and len(err.strip().splitlines()) == 1


def test_predict_on_non_image_is_a_clear_error(tiny_fashion, tmp_path, capsys):
    run = tmp_path / "r"
    assert run_cli(capsys, "train", "fashion-mlp", "--out", str(run), "--dry-run")[0] == 0
    fake = tmp_path / "x.png"
    fake.write_text("not an image")
    code, _, err = run_cli(capsys, "predict", str(run), str(fake))
    assert code == 2 and str(fake) in err


def test_recipes_and_datasets_listings(tiny_fashion, capsys):
    code, out, _ = run_cli(capsys, "recipes", "--json")
    names = {r["name"] for r in json.loads(out)}
    assert {"fashion-cnn", "fashion-mlp", "mnist-cnn", "mnist-mlp"} <= names
    code, out, _ = run_cli(capsys, "datasets", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert "NNLAB_DATA" in rows["fashion-mnist"]["location"]


def test_python_dash_m_entry_point_shows_help():
    proc = subprocess.run([sys.executable, "-m", "nnlab", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "train" in proc.stdout and "predict" in proc.stdout
