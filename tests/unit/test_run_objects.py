"""Every kind of run as a Python object (issue 30): a tiny run of each kind in the table, trained through
``nnlab.train`` on generated data and opened with ``nnlab.load``, answers each method its kind declares
exactly as the matching CLI command does (the same top-k, sample, translation, test metric, export
metadata and summary rows), and every method it does not declare with one error naming the kind.

A kind added to the table without a case below fails here until it gets one (as timm's model tests
cover every registered model). The kinds that do not name their own data take the generated data of
their own tests, made smaller.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

import nnlab
from conftest import run_cli, stem_maker, tiny_image, write_csv
from nnlab.data.series import sine_waves
from nnlab.data.vision import load_image_dataset
from nnlab.errors import ConfigError, DataError
from nnlab.inspection.report import results_figure
from nnlab.kinds import KINDS, get_kind
from nnlab.kit.kind import CAPABILITY_METHODS
from nnlab.kit.runs import Result, Run

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class Case:
    """How to train a tiny run of one kind, and what to ask of it."""

    recipe: str
    settings: dict[str, Any]
    predict: list[Any] = field(default_factory=list)   # nnlab predict's positional inputs (strings)
    predict_flags: list[str] = field(default_factory=list)  # its options (--csv FILE ...)
    sample: dict[str, Any] = field(default_factory=dict)   # Run.sample's arguments
    translate: str = ""
    predicts: bool = True                                  # False: nnlab predict refuses (a measurement)


# --- generated data (each kind's own tests' data, made smaller) -------------------------------------------


def names_folder(root: Path, languages: dict[str, tuple[str, int]], seed: int = 0) -> Path:
    """A folder of made-up 'languages' told apart by their endings: ``{Language: (ending, count)}``."""
    root.mkdir(parents=True, exist_ok=True)
    stems = stem_maker(seed, 4)
    for language, (ending, count) in languages.items():
        (root / f"{language}.txt").write_text("\n".join(s + ending for s in stems(count)) + "\n", encoding="utf-8")
    return root


def corpus(path: Path) -> Path:
    """A 4,000-character text of a handful of words in a seeded order."""
    words = ["to be", "or not", "the king", "ROMEO:", "and thou"]
    picks = torch.randint(len(words), (600,), generator=torch.Generator().manual_seed(0)).tolist()
    path.write_text("\n".join(words[i] for i in picks), encoding="utf-8")
    return path


def admissions(path: Path, n: int = 200) -> Path:
    """gre, gpa, rank (a category), city (text) and admit (0/1) from a known rule (test_tabular's table)."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n):
        gre, gpa, rank = rng.normal(600, 80), rng.normal(3.2, 0.4), int(rng.integers(1, 5))
        city = str(rng.choice(["paris", "lyon", "nice"]))
        score = (gre - 600) / 80 + (gpa - 3.2) / 0.4 + (2.5 - rank) + (1.0 if city == "paris" else 0.0)
        rows.append([f"{gre:.0f}", f"{gpa:.2f}", rank, city, int(score + rng.normal(0, 0.3) > 0.3)])
    return write_csv(path, ["gre", "gpa", "rank", "city", "admit"], rows)


def points(path: Path, n: int = 60) -> Path:
    """Two linearly separable clouds of 2-D points labelled big/small (test_perceptron's)."""
    rng = np.random.default_rng(1)
    label = rng.integers(0, 2, n)
    xy = rng.normal(0, 1, (n, 2)) + np.where(label[:, None] == 1, 2.5, -2.5)
    return write_csv(path, ["height", "weight", "label"],
                     [[f"{a:.4f}", f"{b:.4f}", "big" if t else "small"] for (a, b), t in zip(xy, label)])


def reviews(path: Path, n: int = 160) -> Path:
    """Short 'reviews' whose one sentiment word decides the label (test_textcls's, smaller)."""
    gen = torch.Generator().manual_seed(0)
    positive, negative = ["great", "superb", "lovely"], ["awful", "boring", "dull"]
    noise = "the a film movie plot actor scene story it was".split()
    rows = []
    for i in range(n):
        words = [noise[int(k)] for k in torch.randint(len(noise), (6,), generator=gen)]
        pool = positive if i % 2 == 0 else negative
        words.insert(int(torch.randint(7, (1,), generator=gen)), pool[int(torch.randint(3, (1,), generator=gen))])
        rows.append([i, " ".join(words).capitalize() + ".", "pos" if i % 2 == 0 else "neg"])
    return write_csv(path, ["id", "review", "sentiment"], rows)


LEXICON = {"un": "one", "deux": "two", "trois": "three", "quatre": "four"}


def word_pairs(path: Path, n: int = 160) -> Path:
    """``FRENCH<TAB>ENGLISH`` lines of 1-3 number words (test_translate's task)."""
    gen = torch.Generator().manual_seed(0)
    words = list(LEXICON)
    lines = []
    for _ in range(n):
        chosen = [words[int(i)] for i in torch.randint(len(words), (int(torch.randint(1, 4, (1,), generator=gen)),),
                                                       generator=gen)]
        lines.append(f"{' '.join(chosen).capitalize()} !\t{' '.join(LEXICON[w] for w in chosen)} !")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def series_csv(path: Path) -> Path:
    values = sine_waves(300, 0.05, 1).tolist()
    path.write_text("t,v\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    return path


def square_images(squares: Path, folder: Path, n: int = 3) -> list[str]:
    """The first ``n`` test images of the square data as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    images = load_image_dataset("fashion-mnist", str(squares)).test_images[:n]
    paths = []
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy()).save(folder / f"square{i}.png")
        paths.append(str(folder / f"square{i}.png"))
    return paths


TRANSFER = {"pretrain_epochs": 1, "epochs": 2, "freeze_epochs": 1, "threads": 1, "plots": False}

# kind -> its tiny case, built from the data folder, the square images and a trained image run
CASES: dict[str, Callable[[Path, Path, Path], Case]] = {
    "image": lambda data, squares, image_run: Case("fashion-cnn", tiny_image(squares),
                                                   square_images(squares, data / "images")),
    "tabular": lambda data, squares, image_run: Case(
        "tabular", {"csv": str(admissions(data / "admissions.csv")), "target": "admit", "categorical": "rank,city",
                    "hidden": "16", "epochs": 3, "lr": 0.02, "plots": False},
        predict_flags=["--csv", str(data / "admissions.csv")]),
    "perceptron": lambda data, squares, image_run: Case(
        "perceptron", {"csv": str(points(data / "points.csv")), "target": "label", "epochs": 50, "plots": False},
        predict_flags=["--csv", str(data / "points.csv")]),
    "text": lambda data, squares, image_run: Case(
        "shakespeare-lstm", {"data": str(corpus(data / "corpus.txt")), "epochs": 1, "lr": 1e-2, "hidden_size": 16,
                             "embed": 8, "layers": 1, "batch_size": 8, "bptt": 16, "eval_batch_size": 4,
                             "device": "cpu", "plots": False},
        predict=["ROMEO", "the k"], sample={"prime": "to", "length": 20, "top_k": 3}),
    "names": lambda data, squares, image_run: Case(
        "names-cnn", {"data": str(names_folder(data / "names", {"Alpha": ("ov", 80), "Beta": ("ini", 80)})),
                      "epochs": 2, "filters": 8, "embed": 8, "batch_size": 32, "plots": False},
        predict=["Brokov", "Tamini"]),
    "namegen": lambda data, squares, image_run: Case(
        "names-generate", {"data": str(names_folder(data / "gen", {"Alpha": ("ov", 60), "Beta": ("ini", 60)}, 1)),
                           "epochs": 1, "hidden_size": 16, "embed": 8, "category_embed": 8, "batch_size": 32,
                           "samples": 10, "plots": False},
        predict=["Bkrtov", "Zmpdini"], sample={"category": "Alpha", "count": 3, "start": "B"}),
    "series": lambda data, squares, image_run: Case(
        "series", {"csv": str(series_csv(data / "series.csv")), "column": "v", "epochs": 2, "hidden_size": 4,
                   "plots": False},
        predict=["0.5"], predicts=False),
    "textcls": lambda data, squares, image_run: Case(
        "text-classify", {"csv": str(reviews(data / "reviews.csv")), "text_column": "review",
                          "label_column": "sentiment", "epochs": 2, "batch_size": 32, "hidden_size": 8, "embed": 8,
                          "threads": 1, "plots": False},
        predict=["The plot was superb.", "A dull film."]),
    "transfer": lambda data, squares, image_run: Case(
        "digits-transfer", {**TRANSFER, "from_run": str(image_run), "percents": (10,), "batch_size": 32},
        predict=["x.png"], predicts=False),
    "fashion-transfer": lambda data, squares, image_run: Case(
        "fashion-transfer", {**TRANSFER, "data": str(squares), "model_args.widths": (8, 16, 16),
                             "model_args.head_hidden": 32, "pretrain_batch_size": 50, "shots": (2,),
                             "batch_size": 16, "min_epoch_images": 32, "valid_per_class": 4,
                             "scratch_lrs": (3e-2,)},
        predict=["x.png"], predicts=False),
    "translate": lambda data, squares, image_run: Case(
        "translate", {"data": str(word_pairs(data / "pairs.tsv")), "source_column": 0, "target_column": 1,
                      "epochs": 1, "lr": 1e-2, "hidden_size": 16, "embed": 8, "batch_size": 32,
                      "eval_batch_size": 64, "threads": 1, "plots": False},
        predict=["Deux trois !"], translate="Un quatre !"),
}


def last_json(out: str) -> Any:
    return json.loads(out.strip().splitlines()[-1])


def plain(value: Any) -> Any:
    """``value`` as the CLI's JSON gives it back (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(value))


def without(result: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in plain(result).items() if key not in keys}


def cli_error(capsys, *argv: str) -> str:
    """The one line a refused command prints (its exit code must be 2)."""
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    return err.strip().removeprefix("nnlab: error: ")


# --- what each method must give: the CLI's answer ----------------------------------------------------------


def check_evaluate(run: Run, case: Case, capsys, tmp: Path) -> None:
    code, out, err = run_cli(capsys, "eval", str(run.run_dir), "--json")
    assert code == 0, err
    assert plain({**run.evaluate(), "kind": run.kind.name}) == last_json(out)


def check_predict(run: Run, case: Case, capsys, tmp: Path) -> None:
    argv = ["predict", str(run.run_dir), *case.predict, *case.predict_flags, "--top-k", "2"]
    if not case.predicts:  # measurements: nothing to predict
        with pytest.raises(ConfigError) as refused:
            run.predict(case.predict, top_k=2)
        assert cli_error(capsys, *argv) == str(refused.value)
        return
    if case.predict_flags:  # a CSV in, a CSV of predictions out
        code, out, err = run_cli(capsys, *argv, "-o", str(tmp / "cli.csv"), "--json")
        assert code == 0, err
        api = run.predict(case.predict_flags[1], top_k=2, output=tmp / "api.csv")
        assert without(api, "out") == without(last_json(out), "out")
        assert (tmp / "api.csv").read_text() == (tmp / "cli.csv").read_text()
        if run.kind.name == "tabular":  # rows in memory: the classes and probabilities of the CSV's
            with open(tmp / "cli.csv", newline="") as handle:
                written = list(csv.DictReader(handle))[:3]
            rows = run.predict([{k: v for k, v in row.items() if k in ("gre", "gpa", "rank", "city")}
                                for row in written], top_k=2)
            assert [row["top"][0]["class"] for row in rows] == [row["predicted_admit"] for row in written]
            assert [row["top"][0]["probability"] for row in rows] == pytest.approx(
                [float(row[f"probability_{row['predicted_admit']}"]) for row in written], abs=1e-6)
        return
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    api = run.predict(case.predict, top_k=2)
    assert plain(api) == last_json(out) and len(api) == len(case.predict)
    assert run.kind.name == "translate" or all(len(row["top"]) == 2 for row in api)


def check_sample(run: Run, case: Case, capsys, tmp: Path) -> None:
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in case.sample.items()]
    code, out, err = run_cli(capsys, "sample", str(run.run_dir), *flags, "--seed", "5", "--json")
    assert code == 0, err
    api = run.sample(**case.sample, seed=5)
    assert plain(api) == last_json(out) and api["text"]
    assert run.sample(**case.sample, seed=5)["text"] == api["text"]  # the same seed, the same sample


def check_translate(run: Run, case: Case, capsys, tmp: Path) -> None:
    code, out, err = run_cli(capsys, "translate", str(run.run_dir), case.translate, "--beam", "2", "--json")
    assert code == 0, err
    api = run.translate(case.translate, beam=2)
    assert plain(api) == last_json(out) and api[0]["source"] == case.translate


def check_summary_table(run: Run, case: Case, capsys, tmp: Path) -> None:
    code, out, err = run_cli(capsys, "summary", str(run.run_dir), "--json")
    assert code == 0, err
    api = run.summary_table()
    assert plain(api) == last_json(out) and api["layers"] and api["total_params"] > 0


def check_export(run: Run, case: Case, capsys, tmp: Path) -> None:
    code, out, err = run_cli(capsys, "export", str(run.run_dir), "--format", "safetensors",
                             "-o", str(tmp / "cli.safetensors"), "--json")
    assert code == 0, err
    api = run.export("safetensors", tmp / "api.safetensors")
    # the paths differ, and so may the hash: safetensors writes its header's keys in no fixed order
    paths = [key for key, value in api.items() if isinstance(value, str) and str(tmp) in value]
    assert without(api, *paths, "sha256") == without(last_json(out), *paths, "sha256")
    assert api["check"]["top1_agreement"] == 1.0 and api["bytes"] == (tmp / "cli.safetensors").stat().st_size


def check_interpret(run: Run, case: Case, capsys, tmp: Path) -> None:
    code, out, err = run_cli(capsys, "interpret", str(run.run_dir), "--top", "4", "--out", str(tmp / "cli"), "--json")
    assert code == 0, err
    api = run.interpret(top=4, out=tmp / "api")
    assert without(api, "confusion_png", "top_losses_png") == without(last_json(out), "confusion_png", "top_losses_png")
    assert isinstance(api, Result) and set(api["figures"]) == {"confusion", "top_losses"}
    assert all(isinstance(fig, Figure) for fig in api.figures.values()) and (tmp / "api" / "confusion.png").is_file()


def check_cam(run: Run, case: Case, capsys, tmp: Path) -> None:
    image = case.predict[0]
    code, out, err = run_cli(capsys, "cam", str(run.run_dir), image, "-o", str(tmp / "cli.png"), "--json")
    assert code == 0, err
    api = run.cam(image, out=tmp / "api.png")
    assert without(api, "output") == without(last_json(out), "output") and isinstance(api["figure"], Figure)
    in_memory = run.cam(Image.open(image))  # a PIL image: the same map, no file
    assert in_memory["output"] is None and in_memory["probability"] == api["probability"]


def check_filters(run: Run, case: Case, capsys, tmp: Path) -> None:
    image = case.predict[0]
    code, out, err = run_cli(capsys, "filters", str(run.run_dir), "--image", image, "--out", str(tmp / "cli"), "--json")
    assert code == 0, err
    api = run.filters(image, out=tmp / "api")
    assert without(api, "filters_png", "featuremaps_png") == without(last_json(out), "filters_png", "featuremaps_png")
    assert set(api.figures) == {"filters", "featuremaps"}


def check_resume(run: Run, case: Case, capsys, tmp: Path) -> None:
    with pytest.raises(ConfigError) as refused:  # a finished run: nothing to continue
        run.resume()
    assert cli_error(capsys, "train", "--resume", str(run.run_dir)) == str(refused.value)


def check_plot_curves(run: Run, case: Case, capsys, tmp: Path) -> None:
    fig = run.plot_curves()
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert sum(len(ax.lines) for ax in fig.axes) >= (1 if run.history else 0)


def check_show_results(run: Run, case: Case, capsys, tmp: Path) -> None:
    fig = run.show_results(4)
    assert isinstance(fig, Figure) and len(fig.axes) >= 1


def check_plot_lr(run: Run, case: Case, capsys, tmp: Path) -> None:
    lr_csv = run.run_dir / "lr.csv"
    recorded = lr_csv.is_file() and len(lr_csv.read_text().splitlines()) > 1
    fig = run.plot_lr()
    assert isinstance(fig, Figure) if recorded else fig is None


CHECKS = {"evaluate": check_evaluate, "predict": check_predict, "sample": check_sample,
          "translate": check_translate, "summary_table": check_summary_table, "export": check_export,
          "interpret": check_interpret, "cam": check_cam, "filters": check_filters, "resume": check_resume,
          "plot_curves": check_plot_curves, "plot_lr": check_plot_lr, "show_results": check_show_results}

# What each by-capability method is called with when the kind lacks it (it must refuse before using them).
ANY_ARGS = {"interpret": (), "cam": ("x.png",), "filters": (), "sample": (), "translate": ("x",),
            "export": ("onnx",), "summary_table": (), "resume": (), "show_results": (4,)}



@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tmp_path_factory.mktemp("kinds-data")


@pytest.mark.parametrize("name", [name for name in KINDS if name != "custom"])  # custom: test_kit's nnlab.fit tests
def test_every_method_of_each_kind_answers_as_its_command_does(name, data, squares, image_run, tmp_path, capsys):
    assert name in CASES, f"kind {name!r} has no tiny case in CASES: add one"
    kind = get_kind(name)
    case = CASES[name](data, squares, image_run)
    trained = nnlab.train(case.recipe, out=tmp_path / "run", stream=io.StringIO(), **case.settings)
    assert isinstance(trained, Run) and trained.kind is kind
    run = nnlab.load(tmp_path / "run")
    assert run.kind is kind and run.summary == trained.summary and run.config == trained.config
    assert kind.headline(run.summary) == run.headline() and run.name == "run"
    assert set(CHECKS) >= set(kind.methods()), f"no check for {set(kind.methods()) - set(CHECKS)}"
    for method in kind.methods():
        CHECKS[method](run, case, capsys, tmp_path)
    for method in sorted(set(ANY_ARGS) - set(kind.methods())):
        with pytest.raises(ConfigError) as refused:
            getattr(run, method)(*ANY_ARGS[method])
        message = str(refused.value)
        assert f"(kind {name!r})" in message and f"its methods: {', '.join(kind.methods())}" in message, message
    assert set(CAPABILITY_METHODS.values()) <= set(ANY_ARGS) | set(CHECKS)
    if kind.supports("show"):  # show_results is checked with the methods; show_batch goes with it
        assert isinstance(nnlab.show_batch(run, 4), Figure)
    else:
        with pytest.raises(ConfigError, match=f"kind {name!r}"):
            nnlab.show_batch(run, 4)
    assert "<table>" in run._repr_html_()


def test_an_image_run_predicts_files_pil_images_and_uint8_tensors_alike(image_run, squares, tmp_path):
    run = nnlab.load(image_run)
    files = square_images(squares, tmp_path, n=2)
    by_file = run.predict(files, top_k=2)
    pictures = [Image.open(path) for path in files]
    tensors = [torch.from_numpy(np.array(picture))[None] for picture in pictures]  # uint8 [1, 28, 28]
    for inputs in (pictures, tensors):
        rows = run.predict(inputs, top_k=2)
        assert [row["file"] for row in rows] == ["<image 0>", "<image 1>"]
        assert [row["top"] for row in rows] == [row["top"] for row in by_file]
    assert run.predict(files[0])[0]["top"][0] == by_file[0]["top"][0]  # one input, not a list
    with pytest.raises(DataError, match=r"uint8 tensors of shape \[1, 28, 28\]; got Tensor torch.float32"):
        run.predict(tensors[0].float())


def test_show_batch_draws_a_recipes_first_training_examples_and_show_results_its_test_results(image_run, squares):
    classes = load_image_dataset("fashion-mnist", str(squares)).classes
    fig = nnlab.show_batch("fashion-cnn", 6, data=str(squares))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert isinstance(fig, Figure) and len(titles) == 6 and set(titles) <= set(classes)
    shown = nnlab.load(image_run).show_results(5)
    marks = [(ax.get_title(), ax.title.get_color()) for ax in shown.axes if ax.get_title()]
    right = {f"{name}/{name}" for name in classes}  # "true/predicted" of a right answer
    assert len(marks) == 5 and all((colour == "red") == (title not in right) for title, colour in marks)
    drawn = results_figure(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]),
                           torch.tensor([[0.9, 0.1], [0.8, 0.2]]), ["cat", "dog"])
    assert [(ax.get_title(), ax.title.get_color()) for ax in drawn.axes] == [("cat/cat", "black"), ("dog/cat", "red")]
