"""A run SIGKILLed at each of its writes (half-way through it, or just after it) leaves a directory
that resumes to the uninterrupted result or is refused with one clear line: never a torn file read
as valid, never a row twice.

The killed run is a real process: a fork of this one whose writes (``files.atomic_write`` wherever
it was imported, the appends of ``metrics.jsonl`` and ``lr.csv``) count themselves and send the
process SIGKILL at the chosen one. The parent then reads what was left and resumes or restarts it.
"""
from __future__ import annotations

import io
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import nnlab
import nnlab.inspection.report  # noqa: F401  (the writers' modules, imported before any patching: see Writes.install)
import nnlab.kit.api  # noqa: F401
from nnlab import files
from nnlab.engine import callbacks, checkpoint
from nnlab.errors import CheckpointError, ConfigError
from nnlab.kinds import all_kinds
from nnlab.recipes import train
from conftest import assert_same_run
from test_kit import Blobs, TwoLayer, fresh_model

SETTINGS = {"epochs": 2, "lr": 1e-2, "batch_size": 32, "tensorboard": False, "monitor": "train_loss"}

# Every write of a two-epoch run, in order: (file, epoch it belongs to; 0 before the first, 3 after the last).
WRITES = [("config.json", 0), ("lr.csv", 0),
          ("metrics.jsonl", 1), ("lr.csv", 1), ("best.pt", 1), ("last.pt", 1),
          ("metrics.jsonl", 2), ("lr.csv", 2), ("best.pt", 2), ("last.pt", 2),
          ("curves.png", 3), ("lr.png", 3), ("summary.json", 3)]
KILL_POINTS = [(n, phase) for n in range(len(WRITES)) for phase in ("torn", "after")]


@pytest.fixture(autouse=True, scope="module")
def quick_plots():
    """The run's two plots written as they are (atomically, through the plots module) but without
    matplotlib's second of drawing: a kill point is where a file is written, whatever its pixels."""
    def plot(_, path):
        return files.atomic_write(path, b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("nnlab.kit.run.plot_curves", plot)
        patch.setattr("nnlab.kit.run.plot_lr_csv", plot)
        yield


def fit(out=None, resume=None):
    model = TwoLayer() if resume else fresh_model()
    return nnlab.fit(model, Blobs(200, 0), Blobs(60, 1), out=out, resume=resume, stream=io.StringIO(),
                     **({} if resume else SETTINGS))


class Writes:
    """Counts the run's file writes; at write ``kill_at`` SIGKILLs this process half-way through it
    (``torn``: half its bytes on disk, flushed) or just after it (``after``). ``kill_at=None`` only records."""

    def __init__(self, kill_at: int | None = None, phase: str = "after") -> None:
        self.kill_at, self.phase, self.names = kill_at, phase, []
        self.real_atomic, self.real_open = files.atomic_write, open

    def _next(self, path) -> bool:
        self.names.append(Path(path).name)
        return len(self.names) - 1 == self.kill_at

    def _die(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def atomic_write(self, path, content):
        if not self._next(path):
            return self.real_atomic(path, content)
        if self.phase == "torn":
            buffer = io.BytesIO()
            if callable(content):
                content(buffer)
            else:
                buffer.write(content)
            whole = buffer.getvalue()

            def half(handle):
                handle.write(whole[: len(whole) // 2])
                handle.flush()
                self._die()
            return self.real_atomic(path, half)
        result = self.real_atomic(path, content)
        self._die()
        return result

    def open(self, path, mode="r", *args, **kwargs):
        handle = self.real_open(path, mode, *args, **kwargs)
        if "a" not in mode or not self._next(path):
            return handle
        writes = self

        class Dying:  # the append's file: torn in its first write, or killed once it is closed
            def __enter__(self):
                return self

            def write(self, text):
                if writes.phase == "torn":
                    handle.write(text[: len(text) // 2])
                    handle.flush()
                    writes._die()
                return handle.write(text)

            def flush(self):
                handle.flush()

            def __exit__(self, *exc):
                handle.close()
                writes._die()
        return Dying()

    def install(self, patch: pytest.MonkeyPatch) -> None:
        # Every module that imported the atomic writer by name. One first imported while a recording
        # Writes was installed keeps that one (it only counts, then writes): it is replaced too.
        for module in [m for name, m in list(sys.modules.items())
                       if name.startswith("nnlab") and "atomic_write" in getattr(m, "__dict__", {})]:
            current = module.atomic_write
            assert current is self.real_atomic or isinstance(getattr(current, "__self__", None), Writes), module
            patch.setattr(module, "atomic_write", self.atomic_write)
        patch.setattr(callbacks, "open", self.open, raising=False)  # MetricsLog's and LRLog's appends


def killed_run(train: Callable[[], Any], kill_at: int, phase: str) -> None:
    """Call ``train`` in a forked process SIGKILLed at write ``kill_at``; checks that it died so."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            torch.set_num_threads(1)
            with pytest.MonkeyPatch.context() as patch:
                Writes(kill_at, phase).install(patch)
                train()
        finally:
            os._exit(3)  # only reached if the kill never came
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run, and the writes it made."""
    out = tmp_path_factory.mktemp("whole") / "run"
    writes = Writes()
    with pytest.MonkeyPatch.context() as patch:
        writes.install(patch)
        fit(out)
    return out, writes.names


def test_the_kill_points_are_every_write_of_the_run(whole):
    _, names = whole
    assert names == [name for name, _ in WRITES]


def assert_nothing_torn_reads_as_valid(run_dir: Path) -> None:
    """Each run file the kill left is whole (checkpoints load, JSON parses) or absent; of the
    appended logs only the last line may be torn (their readers drop it)."""
    for name in ("best.pt", "last.pt"):
        if (run_dir / name).exists():
            checkpoint.load_checkpoint(run_dir / name)
    for name in ("config.json", "summary.json"):
        if (run_dir / name).exists():
            json.loads((run_dir / name).read_text())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").exists() else []
    for line in lines[:-1]:
        json.loads(line)


@pytest.mark.parametrize("kill_at, phase", KILL_POINTS, ids=[f"{n}-{WRITES[n][0]}-e{WRITES[n][1]}-{phase}"
                                                            for n, phase in KILL_POINTS])
def test_a_run_killed_at_any_write_resumes_to_the_same_result_or_is_refused(whole, tmp_path, kill_at, phase):
    reference, _ = whole
    run_dir = tmp_path / "run"
    killed_run(lambda: fit(run_dir), kill_at, phase)
    assert_nothing_torn_reads_as_valid(run_dir)
    name, epoch = WRITES[kill_at]
    finished = name == "summary.json" and phase == "after"
    no_epoch = epoch == 0 or (epoch == 1 and (name != "last.pt" or phase == "torn"))
    if finished:  # nothing left to do: refused, and the run reads as the whole one
        with pytest.raises(ConfigError, match="already finished"):
            fit(resume=run_dir)
    elif no_epoch:  # killed before its first last.pt: nothing to resume, and the same --out starts again
        with pytest.raises(CheckpointError, match="no last.pt|not an interrupted run"):
            fit(resume=run_dir)
        fit(out=run_dir)
    else:
        fit(resume=run_dir)
    assert_same_run(run_dir, reference)
    assert_same_run(run_dir, reference, checkpoint="best.pt")
    assert (run_dir / "lr.csv").read_text() == (reference / "lr.csv").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_epoch"] == json.loads((reference / "summary.json").read_text())["best_epoch"]
    assert not list(run_dir.glob(".*.tmp"))


def names_folder(root: Path) -> dict:
    from conftest import stem_maker
    stems = stem_maker(0, 4)
    root.mkdir()
    for language, ending in (("Alpha", "ov"), ("Beta", "ini")):
        (root / f"{language}.txt").write_text("\n".join(s + ending for s in stems(120)) + "\n", encoding="utf-8")
    return {"data": str(root)}


def char_corpus(root: Path) -> dict:
    words = ["to be", "or not", "the king", "ROMEO:", "and thou"]
    picks = torch.randint(len(words), (600,), generator=torch.Generator().manual_seed(0)).tolist()
    root.mkdir()
    (root / "corpus.txt").write_text("\n".join(words[i] for i in picks), encoding="utf-8")
    return {"data": str(root / "corpus.txt"), "hidden_size": 16, "embed": 8, "layers": 1, "batch_size": 8,
            "bptt": 16, "eval_batch_size": 4}


def reviews(root: Path) -> dict:
    from test_textcls import write_reviews
    root.mkdir()
    return {"csv": str(write_reviews(root / "reviews.csv", n=160)), "text_column": "review",
            "label_column": "sentiment", "hidden_size": 16, "embed": 16, "batch_size": 32}


def squares(root: Path) -> dict:
    from conftest import tiny_image, write_square_fashion
    return tiny_image(write_square_fashion(root / "fashion-mnist", n_train=200, n_test=50), plots=True)


# A tiny run of every kind that resumes (the custom kind is the test above): recipe, its data and settings.
# Checked against the table of kinds: a resumable kind missing here fails below, naming itself.
KINDS = {
    "image": ("fashion-cnn", squares),
    "names": ("names-rnn", lambda root: {**names_folder(root), "hidden_size": 16, "embed": 8, "batch_size": 64}),
    "namegen": ("names-generate", lambda root: {**names_folder(root), "hidden_size": 16, "embed": 8,
                                                "category_embed": 4, "batch_size": 64, "samples": 20}),
    "text": ("shakespeare-lstm", char_corpus),
    "series": ("sine-rnn", lambda root: {"length": 300, "hidden_size": 8}),
    "textcls": ("text-classify", reviews),
    "translate": ("translate-dates", lambda root: {"pairs": 120, "hidden_size": 16, "embed": 8, "batch_size": 32,
                                                   "eval_batch_size": 64, "time_budget": None}),
}


# The resumable kinds of the table (nnlab.kinds), the custom kind (nnlab.fit) aside: it has the tests above.
RESUMABLE = [kind.name for kind in all_kinds() if kind.supports("resume") and kind.name != "custom"]


def test_every_resumable_kind_of_the_table_has_a_tiny_run_here():
    assert sorted(set(RESUMABLE) - set(KINDS)) == [], "resumable kinds with no tiny run in KINDS: add one"
    assert sorted(set(KINDS) - set(RESUMABLE)) == [], "KINDS names kinds that are not resumable kinds of the table"


def train_kind(recipe: str, out: Path, overrides: dict) -> dict:
    return train(recipe, out=out, overrides=overrides, stream=io.StringIO())


@pytest.mark.slow  # 7 kinds x 5 tiny runs: about 20 s of CPU
@pytest.mark.parametrize("kind", RESUMABLE)
def test_every_resumable_kind_killed_in_its_last_checkpoint_write_resumes_to_the_same_result(kind, tmp_path):
    """SIGKILL half-way through the final epoch's last.pt (after its best.pt: the window that once
    changed results), and just before summary.json (every other file written): the resumed run ends
    as the uninterrupted one, files and scores."""
    assert kind in KINDS, f"resumable kind {kind!r} has no tiny run in KINDS: add one"
    recipe, data = KINDS[kind]
    overrides = {**data(tmp_path / "data"), "epochs": 2, "threads": 1, "device": "cpu", "tensorboard": False}
    writes = Writes()
    with pytest.MonkeyPatch.context() as patch:
        writes.install(patch)
        whole = train_kind(recipe, tmp_path / "whole", overrides)
    # the run's own writes: the dataset's decoded cache (written once, by the first run) comes before them
    names = writes.names[writes.names.index("config.json"):]
    last_checkpoint = len(names) - 1 - names[::-1].index("last.pt")
    before_summary = names.index("summary.json") - 1
    for kill_at, phase in ((last_checkpoint, "torn"), (before_summary, "after")):
        run_dir = tmp_path / f"cut-{kill_at}"
        killed_run(lambda: train_kind(recipe, run_dir, overrides), kill_at, phase)
        assert_nothing_torn_reads_as_valid(run_dir)
        resumed = train(resume=run_dir, stream=io.StringIO())
        assert_same_run(run_dir, tmp_path / "whole")
        assert_same_run(run_dir, tmp_path / "whole", checkpoint="best.pt")
        scores = {k: v for k, v in whole.items() if k.startswith(("test_", "valid_", "best_"))}
        assert {k: resumed.get(k) for k in scores} == scores, (kill_at, names[kill_at])
