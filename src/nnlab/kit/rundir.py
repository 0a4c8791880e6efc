"""A run is a directory: ``config.json``, ``metrics.jsonl``, ``best.pt``/``last.pt``, plots, ``summary.json``.

This module reads and writes those files: JSON written atomically, the environment recorded
in every summary, a fresh run directory, the metrics rows of finished epochs, and a run's best
model rebuilt from ``best.pt`` (weights only, never pickled code) by its registered name.
"""
from __future__ import annotations

import importlib.metadata
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnlab import __version__
from nnlab.config import load_config
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.errors import CheckpointError, ConfigError
from nnlab.files import atomic_write
from nnlab.models import create_model


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines atomically."""
    return atomic_write(path, "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8"))


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``summary.json``, or ``None`` where the run has none (yet)."""
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_rows(path: Path, keep: int) -> list[dict[str, Any]]:
    """The first ``keep`` complete JSON rows of ``path`` (a torn last line from a kill is dropped)."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines()[:keep]:
            try:
                rows.append(json.loads(line))
            except ValueError:
                break
    return rows


def environment() -> dict[str, Any]:
    """Library versions and hardware, recorded in every summary so numbers can be compared."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "versions": {"nnlab": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": importlib.metadata.version("torchvision"), "numpy": np.__version__},
        "hardware": {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                     "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
    }


# The files a run's kit reads back (resume, eval, the table of runs): a fresh start in a directory
# that held a run removes them, so nothing of the old run is read as the new one's.
RUN_FILES = ("metrics.jsonl", "lr.csv", "best.pt", "last.pt", "summary.json")


# What a start that stopped before its first checkpoint can have left beside its config.json and
# hidden files (the lock, temp files): the kit's logs and first best.pt, TensorBoard's event files,
# and the transfer kinds' pretraining and compared models, which come before any checkpoint of theirs.
# A run started again there replaces them; anything else there was not written by that start.
LEFT_BY_A_START = ("config.json", "metrics.jsonl", "lr.csv", "best.pt", "pretrain.pt", "pretrain", "models")


def is_run_config(path: Path) -> bool:
    """Whether ``path`` is an nnlab run's ``config.json``, judged by its content: a JSON object naming a
    ``kind`` and holding every setting all runs share (``RunConfig``'s fields); where that kind's config
    class is known here, ``load_config`` must read it back too."""
    from nnlab.config import CONFIG_CLASSES, RunConfig
    from nnlab.errors import NnlabError
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
        return False
    if not {f.name for f in dataclasses.fields(RunConfig)} <= raw.keys():
        return False
    if raw["kind"] in CONFIG_CLASSES:
        try:
            load_config(path)
        except NnlabError:
            return False
    return True


def foreign_files(run_dir: Path) -> list[str]:
    """The names in ``run_dir`` that are not an nnlab run's, judged by content and not by name: every
    (non-hidden) file when its ``config.json`` is not an nnlab config (``is_run_config``), else what a
    start stopped before its first checkpoint cannot have written (``LEFT_BY_A_START``, event files).
    A finished or checkpointed run is not asked: ``new_run_dir`` refuses it as a run."""
    if not run_dir.is_dir():
        return []
    names = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    if not is_run_config(run_dir / "config.json"):
        return names
    return [name for name in names if name not in LEFT_BY_A_START and not name.startswith("events.out.tfevents.")]


def new_run_dir(recipe: str, out: str | Path | None, create: bool = True, force: bool = False) -> Path:
    """``out``, or ``runs/RECIPE-<timestamp>`` (created unless ``create`` is false); refuses a path
    that is a file, a directory that already holds a run, and a directory holding files that are not
    an nnlab run's (``foreign_files``: they would be overwritten). A run that failed before its first
    checkpoint (an nnlab ``config.json``, no ``last.pt``) may be started again there. ``force`` accepts
    the last two: the new run replaces the old one (``remove_run_files``, once the directory is locked)
    or writes its files beside the ones that are not a run's, overwriting those of the same names."""
    run_dir = Path(out) if out else Path("runs") / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir}: is a file, not a directory")
    ours = is_run_config(run_dir / "config.json")
    if not force and ours and ((run_dir / "last.pt").exists() or (run_dir / "summary.json").exists()):
        raise ConfigError(f"--out {run_dir}: already holds a run; choose another directory "
                          "(or --force to replace it)")
    foreign = [] if force else foreign_files(run_dir)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(f"--out {run_dir}: holds files that are not an nnlab run's ({shown}); choose an empty "
                          "or new directory (or --force to write the run among them, replacing those of its names)")
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def remove_run_files(run_dir: Path) -> None:
    """Delete what a previous run in ``run_dir`` left that the kit would read as the new run's
    (``RUN_FILES`` and its SGDR ``snapshots/``)."""
    import shutil
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    if (run_dir / "snapshots").is_dir():
        shutil.rmtree(run_dir / "snapshots")


class RunLock:
    """An exclusive lock on a run directory (``RUN/.lock``, holding the owner's PID): one writer at a
    time. The OS releases it when the process dies, so a killed run never stays locked."""

    def __init__(self, run_dir: Path) -> None:
        import fcntl
        self.path = run_dir / ".lock"
        self.handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            owner = self.handle.read().strip() or "another process"
            self.handle.close()
            raise ConfigError(f"{run_dir}: in use by PID {owner} (a training or resume writing this run); "
                              "wait for it to end or choose another --out") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()

    def release(self) -> None:
        if not self.handle.closed:
            self.handle.close()


def remove_orphans(run_dir: Path) -> list[Path]:
    """Delete the temp files that killed atomic writes left (``.NAME.*.tmp``); returns them."""
    orphans = [*run_dir.glob(".*.tmp"), *run_dir.glob("snapshots/.*.tmp")]
    for path in orphans:
        path.unlink(missing_ok=True)
    return orphans


def check_output(out: str | Path, *inputs: str | Path, what: str = "the input file") -> Path:
    """``out`` as a path, unless it is one of ``inputs`` (a ``ConfigError`` saying it is ``what``:
    outputs never overwrite inputs)."""
    out = Path(out)
    for given in inputs:
        if Path(given).resolve() == out.resolve():
            raise ConfigError(f"-o {out}: is {what}; choose another output")
    return out


def run_files(run_dir: Path) -> list[Path]:
    """The files that are the run in ``run_dir`` (config, logs, checkpoints, SGDR snapshots, pictures,
    summary), existing or not: what commands read back, so no command's output may replace them."""
    names = ("config.json", *RUN_FILES, "curves.png", "lr.png", "confusion.png")
    return [run_dir / name for name in names] + sorted((run_dir / "snapshots").glob("*.pt"))


def rebuild_args(model_args: dict[str, Any]) -> dict[str, Any]:
    """``model_args`` that rebuild a trained model: without ``pretrained``, since the checkpoint holds
    every weight (loading ImageNet weights again would be wasted work, or fail where the file is gone)."""
    return {key: value for key, value in model_args.items() if key != "pretrained"}


def model_from_state(state: dict[str, Any], path: Path) -> torch.nn.Module:
    """The registered model a checkpoint names (``model_name``, ``model_args``) with its weights.

    Image checkpoints keep the class count in ``classes`` rather than ``model_args``; a missing
    or malformed entry, or weights that do not fit, are a ``CheckpointError`` naming the file.
    """
    problems = [f"{key} is not {kind.__name__}" for key, kind in
                (("model_name", str), ("model_args", dict), ("model", dict)) if not isinstance(state.get(key), kind)]
    if "classes" in state and not (isinstance(state["classes"], list)
                                   and all(isinstance(c, str) for c in state["classes"])):
        problems.append("classes is not a list of names")
    if problems:
        raise CheckpointError(f"{path}: not a usable nnlab checkpoint: {'; '.join(problems)}")
    args = rebuild_args(state["model_args"])
    if "n_classes" not in args and "classes" in state:
        args["n_classes"] = len(state["classes"])
    try:
        model = create_model(state["model_name"], **args)
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: weights do not fit model {state['model_name']!r}: "
                              f"{str(error).splitlines()[0]}") from None
    return model


def load_best(run_dir: str | Path, kind: str, device: torch.device | str = "cpu") -> tuple[Any, torch.nn.Module, dict]:
    """A run's config, its model rebuilt from ``best.pt`` (weights only) in eval mode, and the checkpoint.

    A run or checkpoint of another kind (checkpoints written before they recorded their kind
    are image runs) is a ``CheckpointError`` naming the file.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir}: not an nnlab run directory (no config.json)")
    config = load_config(run_dir / "config.json")
    path = run_dir / "best.pt"
    state = load_checkpoint(path, map_location=device)
    if state.get("kind", "image") != kind or config.kind != kind:
        raise CheckpointError(f"{path}: not a checkpoint of a {kind} run (its kind: {state.get('kind', 'image')!r})")
    model = model_from_state(state, path)
    state["model_args"] = rebuild_args(state["model_args"])  # runs saved before pretrained was left out
    return config, model.to(device).eval(), state
