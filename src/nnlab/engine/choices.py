"""The engine's tables of names a run chooses from: schedules, optimizers and devices.

They live apart from the code that builds them (``schedules.create_scheduler``,
``optim.create_optimizer``, ``learner.resolve_device``, which import them from here and say so)
because this module imports no torch: the command line builds its ``--schedule``,
``--optimizer`` and ``--device`` options, and ``config.py`` checks ``--set`` values, from these
tables without paying torch's seconds of import for ``nnlab --help``.
"""
from __future__ import annotations

# The schedules ``create_scheduler`` builds (see its docstring for each).
SCHEDULES: tuple[str, ...] = ("one-cycle", "sgdr", "cosine", "constant", "step", "fine-tune")

# The schedules a time budget can drive: those that are functions of the fraction of the run done.
CLOCKED: tuple[str, ...] = ("one-cycle", "cosine", "constant")

# Each optimizer name and the ``torch.optim`` class that implements it (``optim.OPTIMIZERS``
# maps the same names to the classes): the SGD family is told apart by its momentum.
OPTIMIZER_CLASSES: dict[str, str] = {
    "adamw": "AdamW", "sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "adam": "Adam",
    "rmsprop": "RMSprop", "adagrad": "Adagrad", "adadelta": "Adadelta",
}

# The devices ``resolve_device`` accepts: ``auto`` picks CUDA, then Apple's MPS, then the CPU.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
