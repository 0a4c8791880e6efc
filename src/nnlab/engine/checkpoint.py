"""Checkpoints: atomic writes, and loads that never execute code from the file.

A checkpoint is a plain dict (nanoGPT's layout): ``model`` state_dict, ``optimizer``,
``model_name`` and ``model_args`` to rebuild the model without pickling its class, ``step``,
``epoch``, ``best`` and the run's ``config``. Writes and loads go through ``nnlab.files``:
atomic writes, and ``torch.load(weights_only=True)``, which refuses any pickle that would import
or call code.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnlab.errors import CheckpointError
from nnlab.files import atomic_write, load_weights


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically (temp file + fsync + rename)."""
    return atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict weights-only (``files.load_weights``); any problem is a ``CheckpointError``."""
    state = load_weights(path, map_location)
    if "model" not in state:
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
