import matplotlib.pyplot as plt
import pytest
import torch
from PIL import Image

from nnlab.inspection.plots import plot_confusion, plot_curves, plot_lr

ROWS = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5 + 0.1 * e, "valid_loss": 1.2 / e,
         "valid_acc": 0.45 + 0.1 * e, "lr": 0.01} for e in range(1, 5)]


def assert_only_png(directory, name, min_size=(200, 200)):
    """The directory holds just ``name`` (no temp files), and it is a PNG of at least ``min_size``."""
    assert [p.name for p in directory.iterdir()] == [name]
    with Image.open(directory / name) as image:
        assert image.format == "PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1]
        assert image.width <= 3000 and image.height <= 3000


def test_plot_curves_writes_a_png_with_two_panels(tmp_path):
    path = plot_curves(ROWS, tmp_path / "curves.png")
    assert path == tmp_path / "curves.png"
    assert_only_png(tmp_path, "curves.png", min_size=(600, 300))
    with Image.open(path) as image:
        assert image.width > image.height  # two panels side by side


def test_plot_curves_accepts_missing_or_none_valid_metrics(tmp_path):
    rows = [{"epoch": 1, "train_loss": 0.9, "train_acc": 0.6, "valid_loss": None, "valid_acc": None},
            {"epoch": 2, "train_loss": 0.7, "train_acc": 0.7}]
    plot_curves(rows, tmp_path / "curves.png")
    assert_only_png(tmp_path, "curves.png")


@pytest.mark.parametrize("normalize", [True, False])
def test_plot_confusion_writes_a_png_including_empty_rows(tmp_path, normalize):
    cm = torch.tensor([[5, 1, 0], [2, 7, 1], [0, 0, 0]])
    plot_confusion(cm, ["t-shirt", "trouser", "ankle boot"], tmp_path / "confusion.png", normalize=normalize)
    assert_only_png(tmp_path, "confusion.png", min_size=(300, 300))


def test_plot_confusion_with_too_many_classes_to_annotate_stays_a_sensible_size(tmp_path):
    cm = torch.randint(0, 50, (30, 30))
    plot_confusion(cm, [f"class{i}" for i in range(30)], tmp_path / "confusion.png")
    assert_only_png(tmp_path, "confusion.png", min_size=(1000, 1000))


def test_plot_lr_writes_a_png(tmp_path):
    lrs = [1e-4 + 1e-3 * min(step, 100 - step) / 50 for step in range(100)]
    plot_lr(lrs, tmp_path / "lr.png")
    assert_only_png(tmp_path, "lr.png")


def test_plot_replaces_an_existing_file(tmp_path):
    path = tmp_path / "lr.png"
    path.write_bytes(b"old")
    plot_lr([0.1, 0.2], path)
    assert_only_png(tmp_path, "lr.png")


def test_plots_leave_no_open_pyplot_figures(tmp_path):
    before = plt.get_fignums()
    plot_curves(ROWS, tmp_path / "c.png")
    plot_confusion(torch.eye(2, dtype=torch.int64), ["a", "b"], tmp_path / "m.png")
    plot_lr([0.1], tmp_path / "l.png")
    assert plt.get_fignums() == before
