"""nnlab: a PyTorch deep-learning workbench.

The public API: ``train`` runs a named recipe, ``fit`` trains any ``nn.Module`` into a run directory
(checkpoints, resume, curves, summary) and ``load`` opens any run directory; all three give a
``Run`` (config, summary, history, model, and its kind's methods: evaluate, predict, interpret,
cam, sample, translate, export, ...). ``lr_find`` sweeps a model's learning rate, ``interpret``
explains its predictions and ``show_batch`` draws a recipe's first training examples;
``create_model`` builds registered models by name, ``load_image_dataset`` loads datasets into
memory and ``TensorBatches`` batches them fast; ``Learner`` and ``Callback`` are the engine
underneath. Names are imported on first use, so ``nnlab --help`` does not pay for importing torch.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

# OpenMP threads that wait for work sleep instead of spinning (unless the user chose): with torch's
# default of a thread per core, a spinning thread that shares its core with any other process stalls
# its partner at every parallel region. Measured (benchmarks/omp_wait_policy.py, docs/benchmarks.md):
# a small LSTM at 2 threads beside other work ran 17-50x faster, fashion-cnn's step 1.6-6.5x. It must
# be set before torch starts OpenMP, so it is set when nnlab is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_EXPORTS = {
    "fit": "nnlab.kit.api",
    "lr_find": "nnlab.kit.api",
    "interpret": "nnlab.kit.api",
    "Run": "nnlab.kit.runs",
    "train": "nnlab.api",
    "load": "nnlab.api",
    "show_batch": "nnlab.api",
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
