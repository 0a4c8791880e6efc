"""nnlab: a PyTorch deep-learning workbench.

The public API: build models by name, load datasets into memory, batch them fast, and train
with the Learner; ``nnlab.runs`` turns a named recipe into a run directory. Names are
imported on first use, so ``nnlab --help`` does not pay for importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Callback": "nnlab.engine.learner",
    "Learner": "nnlab.engine.learner",
    "TensorBatches": "nnlab.data.batches",
    "stratified_split": "nnlab.data.batches",
    "load_image_dataset": "nnlab.data.vision",
    "create_model": "nnlab.models",
    "list_models": "nnlab.models",
    "register": "nnlab.models",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nnlab' has no attribute {name!r}")
