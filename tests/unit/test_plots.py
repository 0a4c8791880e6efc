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


def _figures(tmp_path):
    """Each picture nnlab draws, by the name of its ``*_figure`` function, drawn on a few made-up values."""
    import numpy as np
    from types import SimpleNamespace

    from nnlab.commands.ablate import ablation_figure
    from nnlab.commands.runs import compare_figure
    from nnlab.commands.sweep import settings_figure
    from nnlab.inspection.cam import cam_figure
    from nnlab.inspection.filters import grid_figure
    from nnlab.inspection.plots import confusion_figure, curves_figure, lr_figure, lr_figure_from_csv, lr_find_figure
    from nnlab.inspection.report import image_grid_figure, results_figure, text_rows_figure, top_losses_figure
    from nnlab.kinds.fashion_transfer import transfer_figure
    from nnlab.kinds.perceptron import PerceptronResult, boundary_figure
    from nnlab.kinds.series import forecast_figure
    from nnlab.kinds.textcls import word_weights_figure
    from nnlab.kinds.translate import attention_figure

    (tmp_path / "lr.csv").write_text("step,body,head\n0,0.1,0.2\n1,0.05,0.1\n")
    top = [{"predicted": "a", "probability": 0.9, "true": "b", "true_probability": 0.1, "loss": 2.3}] * 2
    transfer = [{"shots": k, "repeats": 2, "transfer_accuracy": 0.8, "transfer_spread": 0.01,
                 "scratch_accuracy": 0.6, "scratch_spread": 0.02} for k in (1, 5)]
    plan = SimpleNamespace(metric="valid_acc", prune=None, kind="sweep", recipe="iris-mlp", seeds=[0, 1])
    settings = [{"setting": "lr=0.1", "mean": 0.9, "std": 0.01, "pruned": 0}]
    trials = [{"setting": "lr=0.1", "value": 0.9, "pruned": False}]
    ablation = {"metric": "valid_acc", "test_metric": "test_acc", "full": {"n": 2},
                "tricks": [{"trick": "label_smoothing", "valid_gain": 0.01, "valid_gain_std": 0.005,
                            "test_gain": 0.02, "test_gain_std": 0.01, "n": 2}]}
    points = np.array([[0.0, 1.0], [1.0, 0.0]])
    return {
        "curves_figure": lambda: curves_figure(ROWS),
        "confusion_figure": lambda: confusion_figure(torch.tensor([[3, 1], [0, 4]]), ["a", "b"]),
        "lr_figure": lambda: lr_figure([0.1, 0.2, 0.1]),
        "lr_figure_from_csv": lambda: lr_figure_from_csv(tmp_path / "lr.csv"),
        "lr_find_figure": lambda: lr_find_figure([1e-4, 1e-3, 1e-2], [2.0, 1.5, 3.0], {"steepest": 1e-3}),
        "top_losses_figure": lambda: top_losses_figure(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), top),
        "cam_figure": lambda: cam_figure(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.rand(8, 8), "a (p=0.90)"),
        "grid_figure": lambda: grid_figure([(np.zeros((4, 4)), "filter 0"), (np.ones((4, 4)), "filter 1")], 2,
                                           "conv1"),
        "forecast_figure": lambda: forecast_figure(torch.rand(10, 1), torch.rand(10, 1)),
        "boundary_figure": lambda: boundary_figure(points, np.array([0, 1]), PerceptronResult(
            np.array([1.0, -1.0]), 0.0, [(np.array([1.0, -1.0]), 0.0)], [1])),
        "attention_figure": lambda: attention_figure(["le", "chat"], ["the", "cat", "<eos>"], torch.rand(3, 2)),
        "transfer_figure": lambda: transfer_figure(transfer),
        "word_weights_figure": lambda: word_weights_figure([[("good", 0.7), ("film", 0.3)]], ["pos"]),
        "settings_figure": lambda: settings_figure(plan, settings, trials),
        "ablation_figure": lambda: ablation_figure("fashion-cnn", ablation),
        "compare_figure": lambda: compare_figure({"run-a": ROWS, "run-b": ROWS[:2]}),
        "image_grid_figure": lambda: image_grid_figure(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), ["a", "b"]),
        "results_figure": lambda: results_figure(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]),
                                                 torch.tensor([[0.9, 0.1], [0.8, 0.2]]), ["a", "b"]),
        "text_rows_figure": lambda: text_rows_figure(["name", "language"], [["Petrov", "Russian"]]),
    }


FIGURES = ["curves_figure", "confusion_figure", "lr_figure", "lr_figure_from_csv", "lr_find_figure",
           "top_losses_figure", "cam_figure", "grid_figure", "forecast_figure", "boundary_figure", "attention_figure",
           "transfer_figure", "word_weights_figure", "settings_figure", "ablation_figure", "compare_figure",
           "image_grid_figure", "results_figure", "text_rows_figure"]


@pytest.mark.parametrize("name", FIGURES)
def test_every_picture_is_a_matplotlib_figure_outside_pyplot(tmp_path, name):
    from matplotlib.figure import Figure
    before = plt.get_fignums()
    fig = _figures(tmp_path)[name]()
    assert isinstance(fig, Figure) and fig.axes
    assert plt.get_fignums() == before  # nothing to close: Jupyter shows it, and it is collected after


def test_every_figure_function_of_nnlab_is_in_the_list_above(tmp_path):
    """A new ``*_figure`` function (module level, anywhere in nnlab) joins the parametrised test."""
    import ast
    from pathlib import Path

    import nnlab
    defined = {node.name for path in Path(nnlab.__file__).parent.rglob("*.py")
               for node in ast.parse(path.read_text()).body
               if isinstance(node, ast.FunctionDef) and node.name.endswith("_figure")} - {"save_figure"}
    assert sorted(_figures(tmp_path)) == sorted(FIGURES) and defined - set(FIGURES) == set()


def test_lr_figure_from_csv_is_none_without_steps(tmp_path):
    from nnlab.inspection.plots import lr_figure_from_csv, plot_lr_csv
    (tmp_path / "lr.csv").write_text("step,lr\n")
    assert lr_figure_from_csv(tmp_path / "lr.csv") is None and lr_figure_from_csv(tmp_path / "absent.csv") is None
    assert plot_lr_csv(tmp_path / "lr.csv", tmp_path / "lr.png") is None and not (tmp_path / "lr.png").exists()
