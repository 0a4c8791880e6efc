"""Checkpoints: atomic writes, and loads that never execute code from the file.

A checkpoint is a plain dict (nanoGPT's layout): ``model`` state_dict, ``optimizer``,
``model_name`` and ``model_args`` to rebuild the model without pickling its class, ``step``,
``epoch``, ``best`` and the run's ``config``. Loading uses ``torch.load(weights_only=True)``,
which refuses any pickle that would import or call code.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from nnlab.errors import CheckpointError


def atomic_write_bytes(path: Path, write: Any) -> Path:
    """Call ``write(file)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never a torn mix.
    """
    path = Path(path)
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
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint: {error}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not an nnlab checkpoint (expected a dict with a 'model' entry)")
    return state
