"""Run configuration: one dataclass of every knob, ``--set key=value`` overrides, saved with each run."""
from __future__ import annotations

import ast
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnlab.errors import ConfigError


@dataclass
class TrainConfig:
    """Everything that defines a training run; ``config.json`` in the run directory holds it."""

    recipe: str = ""
    dataset: str = "fashion-mnist"
    model: str = "fashion_cnn"
    model_args: dict[str, Any] = field(default_factory=dict)
    epochs: int = 5
    batch_size: int = 256
    lr: float = 3e-3
    optimizer: str = "adamw"            # adamw | sgd
    momentum: float = 0.9               # SGD momentum (nesterov); AdamW's beta1 is cycled by one-cycle
    weight_decay: float = 5e-4          # not applied to biases and norm parameters
    schedule: str = "one-cycle"         # one-cycle | constant
    pct_start: float = 0.25             # one-cycle warm-up fraction
    label_smoothing: float = 0.0
    clip: float | None = None           # max gradient norm
    patience: int | None = None         # early stopping on valid_loss
    valid_fraction: float = 0.1         # stratified, seeded hold-out taken from the training split
    augment: tuple[str, ...] = ()       # batched augmentations, see nnlab.data.batches.make_augment
    tta: bool = False                   # average predictions with the mirrored image at test time
    eval_batch_size: int = 1000
    seed: int = 0
    device: str = "auto"                # auto | cpu | cuda | mps
    precision: str = "auto"             # auto | bf16 | fp16 | fp32
    channels_last: bool = True
    threads: int | None = None          # torch intra-op threads (None: torch's default)
    data: str | None = None             # --data PATH


CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("adamw", "sgd"),
    "schedule": ("one-cycle", "constant"),
    "device": ("auto", "cpu", "cuda", "mps"),
    "precision": ("auto", "bf16", "fp16", "fp32"),
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
        if items is not None:
            return tuple(str(i).strip() for i in items if str(i).strip())
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


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with ``overrides`` applied, each checked against the field's type.

    Keys of the form ``model_args.NAME`` set one model argument. Unknown keys and bad values
    raise ``ConfigError`` naming the key and what was expected.
    """
    hints = typing.get_type_hints(TrainConfig)
    changes: dict[str, Any] = {}
    model_args = dict(config.model_args)
    for key, raw in overrides.items():
        if key.startswith("model_args."):
            model_args[key.split(".", 1)[1]] = raw
            continue
        if key not in hints:
            raise ConfigError(f"unknown setting {key!r}; valid keys: {', '.join(sorted(hints))} (or model_args.NAME)")
        value = _coerce(key, raw, hints[key])
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"--set {key}: expected one of {', '.join(CHOICES[key])}, got {value!r}")
        changes[key] = value
    changes["model_args"] = changes.get("model_args", model_args) if "model_args" in changes else model_args
    new = dataclasses.replace(config, **changes)
    validate(new)
    return new


def validate(config: TrainConfig) -> None:
    """Reject values no run could use, naming the setting."""
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(config, key)}")
    if config.lr <= 0:
        raise ConfigError(f"lr must be positive, got {config.lr}")
    if not 0.0 <= config.valid_fraction < 1.0:
        raise ConfigError(f"valid_fraction must be in [0, 1), got {config.valid_fraction}")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}")


def parse_set_args(items: list[str]) -> dict[str, Any]:
    """``["lr=0.01", "augment=flip_lr,crop:2"]`` -> ``{"lr": 0.01, "augment": "flip_lr,crop:2"}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        out[key.strip()] = parse_value(value.strip())
    return out


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as JSON (plain types only)."""
    Path(path).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n", encoding="utf-8")


def load_config(path: str | Path) -> TrainConfig:
    """Read a ``config.json`` back into a ``TrainConfig`` (unknown keys are an error)."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    raw["augment"] = tuple(raw.get("augment", ()))
    try:
        return TrainConfig(**raw)
    except TypeError as error:
        raise ConfigError(f"{path}: not a valid nnlab config: {error}") from None
