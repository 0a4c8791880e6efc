"""End to end on the real Fashion-MNIST: train briefly, reproduce the score, predict a real image."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import real_dataset, run_cli
from nnlab.data.vision import load_image_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fashion_dir():
    """The real Fashion-MNIST's directory (Debian's package, ``$NNLAB_DATA`` or the cache), never downloaded."""
    return real_dataset("fashion-mnist")


def nnlab(*argv, env=None):
    """Run the installed ``nnlab`` console script; its finished process (exit code 0 asserted)."""
    exe = Path(sys.executable).with_name("nnlab")
    proc = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_fashion_cnn_one_epoch_on_real_data(fashion_dir, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    run = tmp_path / "run"
    # Training through the installed `nnlab` script, as a user runs it; eval and predict then run in
    # this process (the same CLI, without two more interpreter and torch start-ups), on the same cache.
    # One epoch over 30% of the training batches: 87.2% on the idle 2-core machine (90.6% for a whole epoch).
    proc = nnlab("train", "fashion-cnn", "--data", str(fashion_dir), "--out", str(run), "--epochs", "1",
                 "--set", "limit_train_batches=0.3", "--json", env={**os.environ, "NNLAB_CACHE": str(cache)})
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["test_accuracy"] > 0.86, summary["test_accuracy"]
    assert summary["dataset_source"] and summary["per_class"]["Trouser"]["recall"] > 0.9

    monkeypatch.setenv("NNLAB_CACHE", str(cache))
    code, out, err = run_cli(capsys, "eval", str(run), "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["test_accuracy"] == summary["test_accuracy"]

    # A real test image, saved as an RGB PNG at another size, must come back as its class.
    from PIL import Image
    data = load_image_dataset("fashion-mnist", fashion_dir)
    index = int((data.test_labels == 1).nonzero()[0])  # a trouser: the easiest class
    image = Image.fromarray(data.test_images[index, 0].numpy()).convert("RGB").resize((112, 112))
    image.save(tmp_path / "trouser.png")
    code, out, err = run_cli(capsys, "predict", str(run), str(tmp_path / "trouser.png"), "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])[0]["top"][0]["class"] == "Trouser"
