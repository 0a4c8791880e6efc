"""Run configuration: the settings every kind of run shares, ``--set key=value`` overrides, saved with each run.

``RunConfig`` declares the shared fields once (kind, recipe, epochs, lr, seed, device, the
valid/test fractions, ...); each kind of run subclasses it in its own file under
``nnlab/kinds/`` (changing defaults, adding its own fields and its own ``check``). The
``kind`` field is saved in ``config.json``, so ``load_config`` rebuilds the right class: each
config class enters ``CONFIG_CLASSES`` under its ``kind`` when it is defined (its kind's file
is imported before any of its runs is read: ``nnlab.kinds.kind_of_run`` reads the bare name
first with ``config_kind``), so this floor never imports the kinds above it.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path
from typing import Any

from nnlab.engine.choices import DEVICES, OPTIMIZER_CLASSES, SCHEDULES
from nnlab.errors import ConfigError
from nnlab.files import atomic_write


# Every config class by the kind it configures (filled as the classes are defined).
CONFIG_CLASSES: dict[str, type] = {}


@dataclass
class RunConfig:
    """What every run has; a kind's config subclasses it (``config.json`` in the run directory holds it)."""

    kind: str = ""
    recipe: str = ""
    data: str | None = None             # --data PATH: the dataset (file or directory) instead of the default
    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int = 1024
    lr: float = 3e-3
    optimizer: str = "adamw"            # engine.choices.OPTIMIZER_CLASSES: sgd (plain) | momentum | nesterov | adam | ...
    momentum: float = 0.9               # momentum/nesterov SGD; one-cycle cycles it (and Adam's beta1)
    optimizer_args: dict[str, Any] = field(default_factory=dict)  # torch's own: betas, eps, alpha, rho, ...
    weight_decay: float = 0.0           # not applied to biases and norm parameters
    schedule: str = "one-cycle"         # engine.choices.SCHEDULES (nnlab.engine.schedules builds each)
    pct_start: float = 0.25             # one-cycle warm-up fraction
    cycles: int = 3                     # sgdr: number of cosine cycles (a snapshot at the end of each)
    cycle_mult: int = 1                 # sgdr: each cycle this many times longer than the one before
    step_every: int = 1                 # step: multiply the LR by gamma every this many epochs
    gamma: float = 0.7                  # step: the factor
    lr_mult: float = 1.0                # discriminative LRs: each earlier layer group gets lr_mult times the next
    freeze_epochs: int = 1              # fine-tune schedule: epochs that train the head only, before all groups
    clip: float | None = None           # max gradient norm
    label_smoothing: float = 0.0
    patience: int | None = None         # early stopping: epochs without improvement of `monitor`
    monitor: str = "valid_loss"         # picks best.pt and drives early stopping (valid_/train_ loss|acc)
    time_budget: float | None = None    # seconds of training (no epoch limit); the schedule runs on the fraction used
    limit_train_batches: float = 1.0    # each epoch trains on this share of its batches (a quick check; Lightning's)
    valid_fraction: float = 0.1         # held out of the training rows: picks the best epoch
    test_fraction: float = 0.2          # held out for the reported scores (kinds without a test split of their own)
    seed: int = 0
    device: str = "auto"                # engine.choices.DEVICES: auto | cpu | cuda | mps
    precision: str = "fp32"             # auto | bf16 | fp16 | fp32
    compile: bool = False               # torch.compile the model
    threads: int | None = None          # torch intra-op threads (None: torch's default)
    stop_after_epochs: int | None = None  # end the run after N epochs as an interruption would (resumable)
    tensorboard: bool = True            # also write TensorBoard event files into the run directory
    plots: bool = True                  # the run's pictures (curves, lr, confusion, a kind's own) at the end

    # Shared settings a kind has no use for: `--set` refuses them for that kind, as unknown keys.
    unused: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A config class that sets its own ``kind`` default is the config of that kind."""
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if isinstance(kind, str) and kind:
            CONFIG_CLASSES[kind] = cls

    def check(self) -> None:
        """Reject values no run could use, naming the setting; a kind's ``check`` adds its own rules."""
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"lr must be a finite positive number, got {self.lr}")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"--clip must be a positive gradient norm, got {self.clip}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must be in [0, 2**63), got {self.seed}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 < self.limit_train_batches <= 1.0:
            raise ConfigError(f"limit_train_batches must be a share in (0, 1], got {self.limit_train_batches}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(f"--time-budget must be positive seconds, got {self.time_budget}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"--patience must be at least 1, got {self.patience}")
        if self.stop_after_epochs is not None and self.stop_after_epochs < 1:
            raise ConfigError(f"stop_after_epochs must be at least 1, got {self.stop_after_epochs}")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("device", self.device, DEVICES)
        from nnlab.engine.optim import check_optimizer  # torch says which arguments its optimizers take
        check_optimizer(self.optimizer, self.momentum, self.optimizer_args)


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    """A ``ConfigError`` naming ``key`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{key}: expected {' or '.join(choices)}, got {value!r}")


def check_positive(config: Any, *keys: str) -> None:
    """A ``ConfigError`` naming the first of ``keys`` whose value is below 1."""
    for key in keys:
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(config, key)}")


def check_dropout(value: float) -> None:
    """A ``ConfigError`` unless ``value`` is a dropout probability in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {value}")


CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": tuple(OPTIMIZER_CLASSES),  # the engine's tables (torch-free: engine/choices.py)
    "schedule": SCHEDULES,
    "monitor": ("valid_acc", "valid_loss", "train_acc", "train_loss"),
    "device": DEVICES,
    "precision": ("auto", "bf16", "fp16", "fp32"),
    "task": ("classify", "regress"),
    "balance": ("none", "weighted-loss", "sampler"),
}


def _coerce(key: str, raw: Any, hint: Any) -> Any:
    """Convert ``raw`` to the type of field ``key`` (``hint`` is its annotation)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if raw is None and type(None) in args:
        return None
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, raw, inner[0])
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return raw.lower() in ("true", "yes", "1", "on")
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
    elif hint is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    elif hint is float and isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    elif hint is str:
        return str(raw)
    elif origin is tuple:
        items = raw.split(",") if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else None
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):  # `--set percents=10`: a tuple of one
            items = [raw]
        if items is not None:
            items = [str(i).strip() for i in items if str(i).strip()]
            item_type = (typing.get_args(hint) or (str,))[0]
            try:
                return tuple(int(i) if item_type is int else float(i) if item_type is float else i for i in items)
            except ValueError:
                pass
    elif origin is dict and isinstance(raw, dict):
        return raw
    raise ConfigError(f"--set {key}: expected {getattr(hint, '__name__', hint)}, got {raw!r}")


def parse_value(text: str) -> Any:
    """A ``--set`` value as a Python literal where it is one (``3``, ``0.1``, ``[1,2]``), else a string."""
    if text.lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of ``config`` with ``overrides`` applied, each checked against the field's type.

    Keys of the form ``model_args.NAME`` set one model argument. Unknown keys and bad values
    raise ``ConfigError`` naming the key and what was expected.
    """
    hints = {key: hint for key, hint in typing.get_type_hints(type(config)).items()
             if key != "kind" and key not in type(config).unused and typing.get_origin(hint) is not ClassVar}
    changes: dict[str, Any] = {}
    model_args = dict(getattr(config, "model_args", {}))
    optimizer_args = dict(getattr(config, "optimizer_args", {}))
    for key, raw in overrides.items():
        if key.startswith("model_args."):
            model_args[key.split(".", 1)[1]] = raw
            continue
        if key.startswith("optimizer_args.") and "optimizer_args" in hints:
            optimizer_args[key.split(".", 1)[1]] = raw
            continue
        if key not in hints:
            raise ConfigError(f"unknown setting {key!r}; valid keys: {', '.join(sorted(hints))} (or model_args.NAME)")
        value = _coerce(key, raw, hints[key])
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"--set {key}: expected one of {', '.join(CHOICES[key])}, got {value!r}")
        changes[key] = value
    if hasattr(config, "model_args"):
        changes["model_args"] = changes.get("model_args", model_args) if "model_args" in changes else model_args
    elif len(model_args):
        raise ConfigError(f"model_args.NAME settings do not apply to {type(config).__name__}")
    if "optimizer_args" not in changes and optimizer_args != getattr(config, "optimizer_args", {}):
        changes["optimizer_args"] = optimizer_args
    new = dataclasses.replace(config, **changes)
    validate(new)
    return new


def validate(config: Any) -> None:
    """Reject values no run could use, naming the setting (``config.check()``)."""
    config.check()


def parse_set_args(items: list[str]) -> dict[str, Any]:
    """``["lr=0.01", "augment=flip_lr,crop:2"]`` -> ``{"lr": 0.01, "augment": "flip_lr,crop:2"}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        out[key.strip()] = parse_value(value.strip())
    return out


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as JSON (plain types only), atomically."""
    atomic_write(path, (json.dumps(dataclasses.asdict(config), indent=2) + "\n").encode("utf-8"))


def config_kind(path: str | Path) -> str:
    """The ``kind`` a ``config.json`` names (runs written before configs recorded it are image runs)."""
    return str(_read_raw(path).get("kind", "image"))


def _read_raw(path: str | Path) -> dict[str, Any]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: cannot read the run config: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not an nnlab run config (a JSON object of settings)")
    return raw


def load_config(path: str | Path) -> Any:
    """Read a ``config.json`` back into the config class of its ``kind`` (unknown keys are an error)."""
    raw = _read_raw(path)
    kind = raw.get("kind", "image")
    cls = CONFIG_CLASSES.get(kind)
    if cls is None:
        raise ConfigError(f"{path}: unknown run kind {kind!r}; known: {', '.join(sorted(CONFIG_CLASSES))}")
    hints = typing.get_type_hints(cls)
    for key, value in raw.items():  # JSON has lists where the dataclass has tuples
        if isinstance(value, list) and typing.get_origin(hints.get(key)) is tuple:
            raw[key] = tuple(value)
    try:
        return cls(**raw)
    except TypeError as error:
        raise ConfigError(f"{path}: not a valid nnlab config: {error}") from None
