"""Checkpoints: atomic writes, and loads that never execute code from the file.

A checkpoint is a plain dict (nanoGPT's layout): ``model`` state_dict, ``optimizer``,
``model_name`` and ``model_args`` to rebuild the model without pickling its class, ``step``,
``epoch``, ``best`` and the run's ``config``. Loading uses ``torch.load(weights_only=True)``,
which refuses any pickle that would import or call code.
"""
from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnlab.errors import CheckpointError


def atomic_write_bytes(path: Path, write: Any) -> Path:
    """Call ``write(file)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never a torn mix. A
    filesystem error (no such folder, read-only, no space left) is an ``OSError`` naming ``path``,
    not the temp file.
    """
    path = Path(path)
    try:
        return _atomic_write(path, write)
    except OSError as error:
        if error.filename is not None and Path(error.filename).parent != path.parent:
            raise  # about another path (a folder mkdir could not make): let it name itself
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None


def _atomic_write(path: Path, write: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically (temp file + fsync + rename)."""
    return atomic_write_bytes(Path(path), lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``; any problem is a ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unsupported content"
        raise CheckpointError(f"{path}: refused to load: the file holds more than weights and plain data "
                              f"(loading it could run code): {first}") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint: {error}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not an nnlab checkpoint (expected a dict with a 'model' entry)")
    return state


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from, as plain data a weights-only load accepts.

    ``generator`` is the run's data generator (split, shuffling, augmentation); torch's global
    generator drives dropout and initialization; Python's and NumPy's are saved too, for code
    that reaches them.
    """
    version, mt_keys, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"data": generator.get_state(), "torch": torch.get_rng_state(),
             "python": [version, list(mt_keys), gauss],
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Put back the random states saved by ``rng_state``."""
    generator.set_state(state["data"])
    torch.set_rng_state(state["torch"])
    version, mt_keys, gauss = state["python"]
    random.setstate((version, tuple(mt_keys), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
