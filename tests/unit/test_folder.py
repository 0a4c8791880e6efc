"""Image folders: both layouts, decode-once cache, corrupt files, and a dry-run through `nnlab train folder`."""
import json

import numpy as np
import pytest
from PIL import Image

from nnlab.cli import main
from nnlab.data.folder import decode, read_image_folder
from nnlab.errors import DataError

COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}


def make_tree(root, per_class=5, size=(20, 30)):
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.zeros((*size, 3), np.uint8) + np.array(colour, np.uint8)
            ext = "png" if i % 2 else "jpg"
            Image.fromarray(pixels).save(root / name / f"{i}.{ext}")
    return root


def test_class_folders_decode_to_the_size_and_split_per_class(tmp_path):
    data = read_image_folder(make_tree(tmp_path / "imgs"), size=(16, 16), valid_fraction=0.2)
    assert data.classes == ("blue", "green", "red")
    assert data.train_images.shape == (12, 3, 16, 16) and data.test_images.shape == (3, 3, 16, 16)
    assert sorted(data.test_labels.tolist()) == [0, 1, 2]
    red = data.train_images[data.train_labels == 2][0]
    assert red[0].float().mean() > 200 and red[2].float().mean() < 50


def test_train_and_valid_subfolders_are_the_splits(tmp_path):
    make_tree(tmp_path / "d" / "train", per_class=4)
    make_tree(tmp_path / "d" / "valid", per_class=2)
    data = read_image_folder(tmp_path / "d", size=(8, 8))
    assert len(data.train_labels) == 12 and len(data.test_labels) == 6


def test_second_read_comes_from_the_cache(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "imgs")
    first = read_image_folder(root, size=(8, 8))
    monkeypatch.setattr("nnlab.data.folder.decode", lambda *a: pytest.fail("decoded again"))
    again = read_image_folder(root, size=(8, 8))
    assert (again.train_images == first.train_images).all()


def test_corrupt_image_fails_naming_it_or_is_skipped(tmp_path):
    root = make_tree(tmp_path / "imgs")
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match=r"red/broken.jpg: corrupt or unreadable image.*on_error='skip'"):
        read_image_folder(root, size=(8, 8))
    data = read_image_folder(root, size=(8, 8), on_error="skip")
    assert len(data.skipped) == 1 and "broken.jpg" in data.skipped[0]
    assert len(data.train_labels) + len(data.test_labels) == 15


def test_a_tree_without_classes_is_a_data_error(tmp_path):
    (tmp_path / "only").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "only" / "a.png")
    with pytest.raises(DataError, match="at least two class folders"):
        read_image_folder(tmp_path)


def test_decode_resizes_the_short_side_and_centre_crops(tmp_path):
    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, 10:20] = 255  # a white middle third
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    out = decode(tmp_path / "wide.png", (10, 10), 3)
    assert out.shape == (3, 10, 10) and out.min() > 200


def test_train_folder_dry_run(tmp_path, capsys):
    root = make_tree(tmp_path / "imgs", per_class=8)
    assert main(["train", "folder", "--data", str(root), "--dry-run", "--out", str(tmp_path / "run"),
                 "--set", "model_args.widths=8,16", "--batch-size", "8", "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["classes"] == ["blue", "green", "red"] and summary["dataset"] == "folder"
