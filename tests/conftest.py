"""Shared fixtures: small generated datasets in the exact upstream formats."""
from __future__ import annotations

import csv
import importlib
import json
import os
from types import ModuleType

import pytest
import torch

from nnlab.cli import main
from nnlab.errors import DataError
from prerequisites import NEEDS, locate_dataset

# The suite runs in parallel (pytest-xdist, one worker per core): each worker, and every process a
# test starts, gets its share of the cores, so that workers do not oversubscribe them.
THREADS = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
torch.set_num_threads(THREADS)
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))


def pytest_collection_modifyitems(items):
    """The slow end-to-end tests first: the workers start the long runs early and fill in with the short
    tests, so the suite ends when the work does, not when a long test that started last does."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def require(found: object, need: str) -> None:
    """Go on where ``found`` is truthy; else skip the test, saying what is missing and how to get it
    (``prerequisites.NEEDS[need]``, the words ``make test`` uses), or under ``NNLAB_REQUIRE_ALL=1``
    (CI, and ``make test`` without ``PARTIAL=1``) fail it: a suite that skipped did not pass.

    ``found`` may be the exception a lookup raised: its message (where it looked) ends the line.
    """
    if found and not isinstance(found, BaseException):
        return
    item = NEEDS[need]
    message = f"missing {item.what}: {item.how}" + (f" [{found}]" if isinstance(found, BaseException) else "")
    if os.environ.get("NNLAB_REQUIRE_ALL") == "1":
        pytest.fail(f"NNLAB_REQUIRE_ALL=1: {message}", pytrace=False)
    pytest.skip(message)


def require_module(name: str, need: str) -> ModuleType:
    """The module ``name``, imported; where it cannot be, ``require`` skips or fails the test for ``need``."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        require(error, need)


def real_dataset(name: str):
    """The directory of the real dataset ``name`` (``fashion-mnist`` or ``text``), found without a
    download; where it is nowhere, ``require`` skips or fails the test, saying where it looked."""
    try:
        return locate_dataset(name)
    except DataError as error:
        require(error, name)


def run_cli(capsys, *argv):
    """Run ``nnlab ARGV...`` in this process: its exit code, stdout and stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_csv(path, header, rows):
    """Write ``header`` and ``rows`` to the CSV file ``path``; returns ``path``."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def metric_rows(run_dir, timing=("seconds", "train_images_per_s")):
    """The run's ``metrics.jsonl`` rows without the keys that measure time (they differ run to run)."""
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(cut, whole, checkpoint="last.pt"):
    """The stopped-and-resumed run ``cut`` wrote the uninterrupted run ``whole``'s metrics rows
    and, in ``checkpoint``, bitwise its weights."""
    assert metric_rows(cut) == metric_rows(whole)
    a = torch.load(cut / checkpoint, weights_only=True)["model"]
    b = torch.load(whole / checkpoint, weights_only=True)["model"]
    assert [key for key, tensor in a.items() if not torch.equal(tensor, b[key])] == []


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own nnlab cache, so nothing reads or writes ~/.cache/nnlab."""
    monkeypatch.setenv("NNLAB_CACHE", str(tmp_path_factory.mktemp("nnlab-cache")))


def write_square_fashion(root, n_train=600, n_test=200, seed=0):
    """A small 'fashion-mnist' in the upstream IDX layout under ``root``: class k is a bright square at spot k."""
    import numpy as np

    from nnlab.data.idx import write_idx
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
        for i, k in enumerate(labels):
            r, c = divmod(int(k), 5)
            images[i, 4 + 10 * r:12 + 10 * r, 1 + 5 * c:6 + 5 * c] = 220
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="session")
def squares(tmp_path_factory):
    """The small square 'fashion-mnist' (400 training, 100 test images), for tests that train on it;
    a test file may define its own ``squares`` of another size."""
    return write_square_fashion(tmp_path_factory.mktemp("squares") / "fashion-mnist", n_train=400, n_test=100)


def stem_maker(seed: int, length: int):
    """``stems(n)``: ``n`` random capitalized consonant stems of ``length`` letters (one seeded stream
    across calls), from which tests build names of made-up languages told apart by their endings."""
    gen = torch.Generator().manual_seed(seed)
    letters = "bcdfghklmnprstvz"

    def stems(n: int) -> list[str]:
        idx = torch.randint(len(letters), (n, length), generator=gen).tolist()
        return ["".join(letters[i] for i in row).capitalize() for row in idx]
    return stems


def tiny_image(squares, **extra):
    """Overrides that make an image recipe a second-long run on ``squares``: a tiny conv net, one thread,
    no plots (``plots=True`` where a test reads them: they were a sixth of the suite's time)."""
    return {"data": str(squares), "device": "cpu", "batch_size": 50, "eval_batch_size": 100, "epochs": 1,
            "model_args.widths": (8, 16, 16), "model_args.head_hidden": 32, "threads": 1, "valid_fraction": 0.2,
            "plots": False, **extra}


@pytest.fixture(scope="session")
def image_run(tmp_path_factory):
    """A trained image run (small conv net, 2 epochs on the square data, ~2 s), shared by the tests that only read it.

    Tests that change files in it must copy it first (``shutil.copytree``).
    """
    import io

    from nnlab.recipes import train
    base = tmp_path_factory.mktemp("image-run")
    data = write_square_fashion(base / "fashion-mnist")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NNLAB_CACHE", str(base / "cache"))
        train("fashion-cnn", out=base / "squares", stream=io.StringIO(),
              overrides={"data": str(data), "epochs": 2, "device": "cpu", "batch_size": 50, "eval_batch_size": 100,
                         "model_args.widths": (8, 16, 16), "model_args.head_hidden": 32})
    return base / "squares"


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: faster than two, and steadier on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TickingClock:
    """Stands in for the ``time`` module where a time budget reads it: every ``perf_counter()`` moves
    the clock ``tick`` seconds on, so a budget ends a run after a count of readings (a few per batch and
    per epoch), the same on an idle host and a loaded one. Other attributes are the real module's."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now

    def __getattr__(self, name: str):
        import time
        return getattr(time, name)


@pytest.fixture
def ticking_clock(monkeypatch):
    """The clock of time budgets (``nnlab.engine.callbacks``' ``time``) as a ``TickingClock`` of 10 ms a
    reading: a test of a budget asserts counts of batches and epochs, never seconds."""
    from nnlab.engine import callbacks
    clock = TickingClock(0.01)
    monkeypatch.setattr(callbacks, "time", clock)
    return clock
