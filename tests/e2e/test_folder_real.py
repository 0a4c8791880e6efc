"""The image-folder path on real files: real Fashion-MNIST test images written as JPEG and PNG files
of mixed sizes and colour modes (and one corrupt file) into DIR/<class>/, then `nnlab train folder`
from a `fashion-transfer` source's pretrained backbone, `nnlab eval` and `nnlab predict` on them."""
import json

import pytest
from PIL import Image

from conftest import run_cli
from test_fashion_real import fashion_dir  # noqa: F401  (the fixture that skips without the data)

pytestmark = pytest.mark.slow

# Fashion-MNIST's target classes of fashion-transfer (5-9), as folder names.
TARGETS = {5: "sandal", 6: "shirt", 7: "sneaker", 8: "bag", 9: "ankle_boot"}
SIZES = ((28, 28), (56, 56), (100, 100), (37, 37), (28, 40), (64, 64))   # (width, height)
MODES = ("L", "RGB", "RGBA", "P", "CMYK", "LA")


def write_folder(root, data, per_class):
    """``per_class`` real test images of each target class as files of varied size, mode and format
    (a non-square size pads the dark background, so the reader's centre crop keeps the article)."""
    count = 0
    for label, name in TARGETS.items():
        (root / name).mkdir(parents=True)
        for j, index in enumerate((data.test_labels == label).nonzero().flatten()[:per_class].tolist()):
            width, height = SIZES[count % len(SIZES)]
            side = min(width, height)
            image = Image.fromarray(data.test_images[index, 0].numpy()).resize((side, side), Image.Resampling.BILINEAR)
            canvas = Image.new("L", (width, height))
            canvas.paste(image, ((width - side) // 2, (height - side) // 2))
            mode = MODES[count % len(MODES)]
            jpeg = mode == "CMYK" or (mode in ("L", "RGB") and count % 2 == 0)  # JPEG has no alpha or palette
            canvas.convert(mode).save(root / name / f"{j:03d}.{'jpg' if jpeg else 'png'}")
            count += 1
    (root / "bag" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return count


def nnlab(capsys, *argv):
    """``nnlab ARGV... --json`` in this process (no second import of torch): its JSON answer."""
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def test_folder_of_real_files_trains_from_a_fashion_transfer_backbone(fashion_dir, tmp_path, capsys,  # noqa: F811
                                                                      monkeypatch):
    from nnlab.data.vision import load_image_dataset
    monkeypatch.setenv("NNLAB_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "source"
    # A tiny source: 600 training images of each of classes 0-4, one epoch (what matters is the path).
    # One thread: these nets are small, and two threads on a shared 2-core machine ran 3-25x slower.
    nnlab(capsys, "train", "fashion-transfer", "--out", str(source), "--data", str(fashion_dir), "--device", "cpu",
          "--threads", "1", "--set", "pretrain_epochs=1", "--set", "pretrain_per_class=600", "--set", "shots=5", "--epochs", "1",
          "--freeze-epochs", "0", "--set", "min_epoch_images=32")
    pretrained = source / "pretrain.pt"

    root = tmp_path / "clothes"
    written = write_folder(root, load_image_dataset("fashion-mnist", fashion_dir), per_class=60)
    run = tmp_path / "folder-run"
    summary = nnlab(capsys, "train", "folder", "--data", str(root), "--out", str(run), "--device", "cpu",
                    "--model", "cnn", "--set", "model_args.widths=16,32,64",
                    "--set", f"model_args.pretrained={pretrained}", "--schedule", "fine-tune", "--freeze-epochs", "2",
                    "--epochs", "5", "--lr-mult", "0.3", "--batch-size", "16", "--threads", "1")
    assert summary["classes"] == sorted(TARGETS.values())
    assert "skipped 1 file that does not decode" in summary["dataset_source"]
    assert str(root / "bag" / "broken.jpg") in summary["dataset_source"]
    assert summary["test_accuracy"] > 0.7, summary["test_accuracy"]  # chance: 0.2
    config = json.loads((run / "config.json").read_text())
    assert config["model_args"]["pretrained"] == str(pretrained) and config["model_args"]["in_channels"] == 3
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["trainable"] == ["head"] and rows[-1]["trainable"] == ["stem", "body", "head"]

    # Decoded once: the cache holds one file for the tree, and eval (which reads the tree again) reuses it.
    cached = list((tmp_path / "cache").rglob("decoded/folder/*.npz"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    pretrained.unlink()  # the run's checkpoint holds every weight: the source is not needed again
    evaluated = nnlab(capsys, "eval", str(run), "--device", "cpu")
    assert evaluated["test_accuracy"] == summary["test_accuracy"]
    assert len(evaluated["confusion"]) == 5 and sum(map(sum, evaluated["confusion"])) == written // 5  # the reader holds out 20% of each class
    assert cached[0].stat().st_mtime_ns == stamp

    predicted = nnlab(capsys, "predict", str(run), str(root / "sneaker"))
    assert len(predicted) == 60  # every size, mode and format decodes for predict too
    assert sum(row["top"][0]["class"] == "sneaker" for row in predicted) >= 30  # chance: 12; measured 37-43
