"""The run kit as the public API: ``nnlab.fit`` on a user's own ``nn.Module`` and ``Dataset``, and a
kind added from a test file alone, trained and evaluated through the CLI."""
from __future__ import annotations

import io
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import nnlab
from nnlab.errors import CheckpointError, ConfigError
from conftest import assert_same_run, run_cli


class Blobs(Dataset):
    """Three Gaussian blobs in 2-D, one class each: a user's own ``Dataset``."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
        self.x = centres[self.y] + 0.6 * torch.randn(n, 2, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


class TwoLayer(nn.Module):
    """A model nnlab has never heard of (not in its registry), with dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def fresh_model() -> nn.Module:
    torch.manual_seed(0)
    return TwoLayer()


def test_fit_trains_a_users_module_on_a_dataset_into_a_run_directory(tmp_path):
    train, valid = Blobs(600, 0), Blobs(200, 1)
    run = nnlab.fit(fresh_model(), train, valid, epochs=4, lr=1e-2, batch_size=32, out=tmp_path / "run",
                    stream=io.StringIO())
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "curves.png", "lr.png", "summary.json"):
        assert (tmp_path / "run" / name).is_file(), name
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4] and len(run.history) == 4
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["kind"] == "custom" and summary["model"] == "TwoLayer" and summary["epochs"] == 4
    assert summary["best_epoch"] == min(rows, key=lambda r: r["valid_loss"])["epoch"]  # best by valid_loss
    scores = run.evaluate(valid)
    assert scores["accuracy"] > 0.9 and scores["n"] == 200
    assert scores["loss"] == pytest.approx(summary["best_valid_loss"], rel=1e-4)  # the best epoch's weights
    probs = run.predict(valid.x[:5]).softmax(1)
    assert probs.shape == (5, 3) and torch.allclose(probs.sum(1), torch.ones(5))


def test_fit_stopped_and_resumed_ends_as_the_uninterrupted_run(tmp_path):
    train, valid = Blobs(300, 0), Blobs(100, 1)
    settings = {"epochs": 4, "lr": 1e-2, "batch_size": 32, "stream": io.StringIO()}
    whole = nnlab.fit(fresh_model(), train, valid, out=tmp_path / "whole", **settings)
    cut = nnlab.fit(fresh_model(), train, valid, out=tmp_path / "cut", stop_after_epochs=2, **settings)
    assert cut.summary["stopped_after_epochs"] == 2 and not (tmp_path / "cut" / "summary.json").exists()
    # a fresh process would build the model anew: different weights, which resume must replace
    resumed = nnlab.fit(TwoLayer(), train, valid, resume=tmp_path / "cut", stream=io.StringIO())
    assert_same_run(tmp_path / "cut", tmp_path / "whole")
    assert resumed.summary["best_epoch"] == whole.summary["best_epoch"]
    assert resumed.evaluate(valid)["loss"] == pytest.approx(whole.evaluate(valid)["loss"], abs=1e-7)


def test_fit_takes_batches_a_regression_loss_and_no_metric(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    model = nn.Linear(3, 1)
    run = nnlab.fit(model, batches, batches[:2], loss=lambda out, t: nn.functional.mse_loss(out.squeeze(1), t),
                    metric=None, epochs=30, lr=5e-2, out=tmp_path / "reg", stream=io.StringIO())
    assert run.history[-1]["train_acc"] is None
    assert run.history[-1]["train_loss"] < 0.01 * run.history[0]["train_loss"]
    assert torch.allclose(model.weight.detach(), torch.tensor([[1.0, -2.0, 0.5]]), atol=0.05)


def test_lr_find_and_interpret_on_a_users_model(tmp_path):
    train = Blobs(600, 0)
    model = fresh_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = nnlab.lr_find(model, train, out=tmp_path / "lr", steps=60, batch_size=32)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # put back
    assert 1e-7 < found["suggested_lr"] < 10 and (tmp_path / "lr" / "lr_find.png").is_file()
    run = nnlab.fit(model, train, Blobs(150, 1), epochs=3, lr=1e-2, batch_size=32, out=tmp_path / "run",
                    stream=io.StringIO())
    report = nnlab.interpret(run, Blobs(150, 1), classes=["east", "north-west", "south-west"], top=4)
    assert sum(map(sum, report["confusion"])) == 150 and len(report["top_losses"]) == 4
    assert report["top_losses"][0]["loss"] >= report["top_losses"][-1]["loss"]
    assert set(report["per_class"]) == {"east", "north-west", "south-west"}
    assert Path(report["confusion_png"]).is_file() and "top_losses_png" not in report  # not images


def test_fit_refuses_what_it_cannot_use(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown setting 'lrr'"):
        nnlab.fit(fresh_model(), Blobs(10, 0), lrr=1.0, out=tmp_path / "a")
    with pytest.raises(ConfigError, match="sized iterable"):
        nnlab.fit(fresh_model(), iter([(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))]), out=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b" / "config.json").exists()
    nnlab.fit(fresh_model(), Blobs(64, 0), epochs=1, batch_size=32, out=tmp_path / "mine", stream=io.StringIO())
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "mine"))
    assert code == 2 and "run of your own model" in err and "nnlab.fit(model, data, resume=" in err


# A kind from this file alone: config, kind class, one table line, one recipe.
def make_toy_kind() -> types.ModuleType:
    """A module holding a toy kind: y = 3x - 1 regression with a registered linear model."""
    from nnlab.config import RunConfig
    from nnlab.data.tabular import FeatureBatches
    from nnlab.kit.kind import Kind, Option
    from nnlab.kit.rundir import load_best
    from nnlab.kit.run import Spec, stopped_summary, summarize, train_model
    from nnlab.models import create_model

    toy = types.ModuleType("toy_kind")

    @dataclass
    class ToyConfig(RunConfig):
        kind: str = "toy"
        points: int = 512
        epochs: int = 20
        batch_size: int = 32
        lr: float = 0.1
        device: str = "cpu"

    def data(config):
        g = torch.Generator().manual_seed(config.seed)
        x = torch.rand(config.points, 1, generator=g)
        return x, 3 * x - 1

    def loss(out, y):
        return nn.functional.mse_loss(out, y)

    def train(start, stream, dry_run=False):
        config = start.config
        x, y = data(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = create_model("logistic", in_features=1, n_classes=1)
        batches = FeatureBatches(x, y, config.batch_size, shuffle=True,
                                 generator=torch.Generator().manual_seed(config.seed))
        spec = Spec(model, batches, FeatureBatches(x, y, 1024), loss, metric=None, generator=batches.generator,
                    saved={"model_name": "logistic", "model_args": {"in_features": 1, "n_classes": 1}})
        trained = train_model(start, spec, stream)
        if trained.stopped:
            return stopped_summary(start, trained)
        with torch.no_grad():
            return summarize(start, trained, {"test_mse": float(loss(model(x), y))})

    def evaluate(run_dir, data_path=None, device_name=None):
        config, model, _ = load_best(run_dir, "toy")
        x, y = data(config)
        with torch.no_grad():
            return {"run_dir": str(run_dir), "test_mse": float(loss(model(x), y))}

    def predict(run_dir, inputs, top_k=3):
        raise ConfigError("toy runs predict nothing")

    class ToyKind(Kind):
        name = "toy"
        what = "toy run"
        config = ToyConfig
        capabilities = frozenset({"resume"})
        metrics = ("test_mse",)
        options = (Option("--points", "points", "toy runs: how many points to fit", type=int),)

        def load_run(self, run_dir, device="cpu"):
            return load_best(run_dir, "toy", device)

    ToyKind.train = staticmethod(train)
    ToyKind.evaluate = staticmethod(evaluate)
    ToyKind.predict = staticmethod(predict)
    for name, value in {"ToyConfig": ToyConfig, "ToyKind": ToyKind}.items():
        setattr(toy, name, value)
    return toy


@pytest.fixture
def toy_kind():
    from nnlab import recipes
    from nnlab.kinds import KINDS, register
    toy = make_toy_kind()
    sys.modules["toy_kind"] = toy
    register("toy", "toy_kind:ToyKind")
    recipes.add(recipes.Recipe("toy-line", "y = 3x - 1 by gradient descent", "test MSE ~0", toy.ToyConfig()))
    yield toy
    KINDS.pop("toy")
    recipes.RECIPES.pop("toy-line")
    sys.modules.pop("toy_kind")


def test_a_kind_from_one_file_trains_evaluates_and_resumes_through_the_cli(toy_kind, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "toy-line", "--out", str(tmp_path / "toy"), "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["kind"] == "toy" and summary["test_mse"] < 0.01 and summary["epochs"] == 20
    code, out, err = run_cli(capsys, "eval", str(tmp_path / "toy"), "--json")
    assert code == 0, err
    assert json.loads(out)["test_mse"] == pytest.approx(summary["test_mse"], rel=1e-5)
    code, out, err = run_cli(capsys, "train", "toy-line", "--out", str(tmp_path / "cut"), "--set", "stop_after_epochs=3")
    assert code == 0 and f"continue with: nnlab train --resume {tmp_path / 'cut'}" in out
    code, out, err = run_cli(capsys, "train", "--resume", str(tmp_path / "cut"), "--json")
    assert code == 0, err
    assert_same_run(tmp_path / "cut", tmp_path / "toy")
    code, _, err = run_cli(capsys, "export", str(tmp_path / "toy"), "--format", "onnx")
    assert code == 2 and "is a toy run; export takes: image run" in err
    # the kind's own flag in `nnlab train --help`, and its option reaches the config
    with pytest.raises(SystemExit):
        run_cli(capsys, "train", "--help")
    assert "toy runs (toy)" in capsys.readouterr().out
    code, out, err = run_cli(capsys, "train", "toy-line", "--points", "64", "--epochs", "1", "--out",
                             str(tmp_path / "few"), "--json")
    assert code == 0, err
    assert json.loads((tmp_path / "few" / "config.json").read_text())["points"] == 64
    # `nnlab runs` knows its headline metric, and nnlab.load opens it with the kind's methods
    code, out, err = run_cli(capsys, "runs", str(tmp_path), "--json")
    rows = {row["name"]: row for row in json.loads(out)["runs"]}
    assert rows["toy"]["metric"] == "test_mse" and rows["toy"]["value"] == pytest.approx(summary["test_mse"])
    run = nnlab.load(tmp_path / "toy")
    assert run.kind.name == "toy" and run.evaluate()["test_mse"] == pytest.approx(summary["test_mse"], rel=1e-5)
    with pytest.raises(ConfigError, match="toy run .* has no cam; its methods: evaluate, predict"):
        run.cam("x.png")


def test_old_image_checkpoints_without_kind_still_load(image_run, tmp_path):
    """Runs written before checkpoints recorded their kind (or a class count in model_args) load as before."""
    import shutil
    from nnlab.kinds.image import evaluate, load_run
    old = tmp_path / "old"
    shutil.copytree(image_run, old)
    state = torch.load(old / "best.pt", weights_only=True)
    state.pop("kind")
    state["model_args"].pop("n_classes", None)
    torch.save(state, old / "best.pt")
    _, model, loaded = load_run(old)
    assert loaded["model_name"] == state["model_name"]
    assert evaluate(old)["test_accuracy"] == evaluate(image_run)["test_accuracy"]
    with pytest.raises(CheckpointError, match="not a checkpoint of a names run"):
        from nnlab.kit.rundir import load_best
        load_best(old, "names")


def test_the_floors_import_only_downwards():
    """Every floor imports only the floors below it (lazy imports inside functions included): files
    (floor 0) nothing of nnlab; data, models, engine and inspection no run, kind or command; config
    nothing above the engine; the kit no kind's file; the kinds no recipe; the recipes no API; the
    API no command; the commands no CLI."""
    import ast
    root = Path(nnlab.__file__).parent
    above_engine = ("nnlab.config", "nnlab.kit", "nnlab.kinds", "nnlab.recipes", "nnlab.api", "nnlab.commands",
                    "nnlab.cli", "nnlab.workflows", "nnlab.lessons")
    rules = {"files.py": ("nnlab.",), "data": above_engine, "models": above_engine, "engine": above_engine,
             "inspection": above_engine, "config.py": above_engine[1:],
             "workflows": above_engine[1:], "lessons": above_engine[1:],
             "kit": ("nnlab.kinds", "nnlab.recipes", "nnlab.api", "nnlab.commands", "nnlab.cli", "nnlab.workflows"),
             "kinds": ("nnlab.recipes", "nnlab.api", "nnlab.commands", "nnlab.cli"),
             "recipes.py": ("nnlab.api", "nnlab.commands", "nnlab.cli"),
             "api.py": ("nnlab.commands", "nnlab.cli"),
             "commands": ("nnlab.cli",)}
    allowed = {"files.py": ("nnlab.errors",)}
    found = []
    for floor, banned in rules.items():
        paths = [root / floor] if floor.endswith(".py") else sorted((root / floor).rglob("*.py"))
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                         else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                found += [f"{path.relative_to(root)} imports {n}" for n in names
                          if n not in allowed.get(floor, ())
                          and any(n == b.rstrip(".") or n.startswith(b.rstrip(".") + ".") for b in banned)]
    assert found == []


def test_learners_are_built_in_one_place_and_backward_runs_only_where_it_is_read():
    root = Path(nnlab.__file__).parent
    builders = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "Learner(" in p.read_text()
                      and p.name != "learner.py")
    assert builders == ["kit/run.py"]
    backward = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if ".backward()" in p.read_text())
    # the Learner; the lessons and the perceptron's XOR demonstration (loops to be read); stylize's
    # pixels; Grad-CAM's gradients; fashion-transfer's linear probe (an L-BFGS fit of a closed problem)
    assert backward == ["engine/learner.py", "inspection/cam.py", "kinds/fashion_transfer.py", "kinds/perceptron.py",
                        "lessons/gradient_descent.py", "lessons/tutorials.py", "workflows/stylize.py"]


def test_limit_train_batches_trains_each_epoch_on_the_start_of_a_fresh_order(tmp_path):
    from nnlab.engine.learner import Callback

    class Seen(Callback):
        def __init__(self) -> None:
            self.labels: list[list[int]] = []

        def before_epoch(self) -> None:
            self.labels.append([])

        def after_batch(self) -> None:
            self.labels[-1].extend(self.learner.y.tolist())

    seen = Seen()
    run = nnlab.fit(fresh_model(), Blobs(320, 0), Blobs(64, 1), epochs=3, batch_size=32, out=tmp_path / "run",
                    limit_train_batches=0.25, callbacks=[seen], stream=io.StringIO())
    assert [len(epoch) for epoch in seen.labels] == [96, 96, 96]  # ceil(10 * 0.25) = 3 batches of 32
    assert seen.labels[0] != seen.labels[1]                       # each epoch a new order
    steps = (tmp_path / "run" / "lr.csv").read_text().strip().splitlines()[1:]
    assert len(steps) == 9 and run.config.limit_train_batches == 0.25
    with pytest.raises(ConfigError, match=r"limit_train_batches must be a share in \(0, 1\], got 0.0"):
        nnlab.fit(fresh_model(), Blobs(64, 0), epochs=1, limit_train_batches=0.0)
