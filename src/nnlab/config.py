"""Run configuration: one dataclass per kind of run, ``--set key=value`` overrides, saved with each run.

Each kind of run (``image`` classification, ``tabular``, ...) has its config dataclass here,
registered with ``@config_kind``; the class's ``kind`` field is saved in ``config.json`` so
that ``load_config`` rebuilds the right class and the CLI finds the module that runs it
(``nnlab.recipes.runner``).
"""
from __future__ import annotations

import ast
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnlab.errors import ConfigError

CONFIG_KINDS: dict[str, type] = {}


def config_kind(name: str) -> Any:
    """Class decorator: register a run-config dataclass under its ``kind`` name."""
    def decorate(cls: type) -> type:
        CONFIG_KINDS[name] = cls
        return cls
    return decorate


@config_kind("image")
@dataclass
class TrainConfig:
    """Everything that defines an image-classification run; ``config.json`` in the run directory holds it."""

    kind: str = "image"
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
    schedule: str = "one-cycle"         # one-cycle | sgdr | cosine | constant | step
    pct_start: float = 0.25             # one-cycle warm-up fraction
    cycles: int = 3                     # sgdr: number of cosine cycles (a snapshot at the end of each)
    cycle_mult: int = 1                 # sgdr: each cycle this many times longer than the one before
    step_every: int = 1                 # step: multiply the LR by gamma every this many epochs
    gamma: float = 0.7                  # step: the factor
    lr_mult: float = 1.0                # discriminative LRs: each earlier layer group gets lr_mult times the next
    freeze: tuple[str, ...] = ()        # layer groups not trained: stem, body (everything but the head), head
    freeze_epochs: int = 1              # fine-tune schedule: epochs that train the head only, before all groups
    label_smoothing: float = 0.0
    clip: float | None = None           # max gradient norm
    patience: int | None = None         # early stopping: epochs without improvement of `monitor`
    monitor: str = "valid_acc"          # picks best.pt and drives early stopping (valid_/train_ loss|acc)
    stop_after_epochs: int | None = None  # end the run after N epochs as an interruption would (resumable)
    compile: bool = False               # torch.compile the model
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


@config_kind("tabular")
@dataclass
class TabularConfig:
    """A tabular run: logistic regression or an MLP on a CSV or one of scikit-learn's bundled tables."""

    kind: str = "tabular"
    recipe: str = ""
    dataset: str | None = None          # a bundled scikit-learn table (breast-cancer, wine, iris, diabetes)
    csv: str | None = None              # --csv FILE: used instead of the bundled table when given
    target: str | None = None           # --target COLUMN
    task: str = "classify"              # classify | regress
    model: str = "mlp"                  # logistic | mlp
    hidden: tuple[int, ...] = (64, 32)  # mlp only
    categorical: tuple[str, ...] = ()   # columns to one-hot even though they hold numbers (say, a rank)
    dropout: float = 0.1                # mlp only
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-2
    weight_decay: float = 1e-4
    schedule: str = "one-cycle"         # one-cycle | constant
    test_fraction: float = 0.2          # stratified hold-out for the reported scores
    valid_fraction: float = 0.1         # of the remaining rows: picks the best epoch (lowest valid_loss)
    seed: int = 0
    device: str = "cpu"                 # a few hundred rows train faster on the CPU than a GPU launches kernels

    def check(self) -> None:
        """Reject settings no tabular run could use, naming the flag."""
        if self.model not in ("logistic", "mlp"):
            raise ConfigError(f"--model: expected logistic or mlp for a tabular run, got {self.model!r}")
        if any(size < 1 for size in self.hidden):
            raise ConfigError(f"--hidden: layer sizes must be positive, got {','.join(map(str, self.hidden))}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


@config_kind("perceptron")
@dataclass
class PerceptronConfig:
    """A perceptron on 2-D points (generated, or two feature columns of a CSV), plus the logic gates."""

    kind: str = "perceptron"
    recipe: str = ""
    csv: str | None = None              # --csv FILE with two numeric feature columns and --target
    target: str | None = None
    n_points: int = 100                 # generated data: points on either side of a line, with a gap
    epochs: int = 50
    lr: float = 0.1
    test_fraction: float = 0.2          # stratified hold-out for test_accuracy
    seed: int = 0

    def check(self) -> None:
        """Reject settings no perceptron run could use, naming the setting."""
        if self.n_points < 4:
            raise ConfigError(f"n_points must be at least 4, got {self.n_points}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")


@config_kind("text")
@dataclass
class CharLMConfig:
    """A character-level language model (char-RNN) on a UTF-8 text file, trained with truncated BPTT."""

    kind: str = "text"
    recipe: str = ""
    data: str | None = None             # --data FILE: any UTF-8 text (default: Tiny Shakespeare)
    cell: str = "lstm"                  # lstm | gru
    layers: int = 2
    hidden_size: int = 256
    embed: int = 64                     # character embedding width (= hidden_size to tie weights)
    dropout: float = 0.2
    tie_weights: bool = False
    batch_size: int = 64                # parallel streams
    bptt: int = 128                     # window length T: gradients flow back at most this far
    epochs: int = 10                    # passes over the training text (under a time budget the budget ends the run)
    time_budget: float | None = None    # seconds of training; the schedule is stretched to fit it
    lr: float = 3e-3
    weight_decay: float = 0.0
    schedule: str = "one-cycle"         # one-cycle | constant
    pct_start: float = 0.1
    clip: float | None = 1.0            # gradient clipping, on by default for RNNs
    valid_fraction: float = 0.1         # the text's tail, contiguous
    eval_batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"             # bf16 is slower than fp32 for LSTMs on CPUs without native bf16
    threads: int | None = None
    stop_after_epochs: int | None = None  # end the run after N epochs as an interruption would (resumable)

    def check(self) -> None:
        """Reject settings no char-RNN run could use, naming the setting."""
        if self.cell not in ("lstm", "gru"):
            raise ConfigError(f"cell: expected lstm or gru, got {self.cell!r}")
        for key in ("layers", "hidden_size", "embed", "bptt"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.tie_weights and self.embed != self.hidden_size:
            raise ConfigError(f"tie_weights needs embed == hidden_size, got {self.embed} and {self.hidden_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(f"valid_fraction must be in (0, 1) for a language model, got {self.valid_fraction}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(f"--time-budget must be positive seconds, got {self.time_budget}")


@config_kind("names")
@dataclass
class NamesConfig:
    """A classifier of short sequences (surname -> language): a folder of ``<Class>.txt`` files, one item a line."""

    kind: str = "names"
    recipe: str = ""
    data: str | None = None             # --data DIR (default: $NNLAB_DATA/names, then the cache)
    model: str = "rnn"                  # rnn: name_rnn (bidirectional GRU/LSTM) | cnn: name_cnn (character CNN)
    cell: str = "gru"                   # gru | lstm, bidirectional (model rnn)
    filters: int = 256                  # model cnn: filters per kernel width
    widths: tuple[int, ...] = (2, 3, 4, 5)  # model cnn: kernel widths, in characters
    layers: int = 1
    hidden_size: int = 128
    embed: int = 32
    dropout: float = 0.1
    balance: str = "none"               # none | weighted-loss | sampler: counter class imbalance
    epochs: int = 12
    batch_size: int = 64
    lr: float = 5e-3
    weight_decay: float = 1e-4
    schedule: str = "one-cycle"
    pct_start: float = 0.25
    clip: float | None = 1.0
    label_smoothing: float = 0.0
    test_fraction: float = 0.1          # stratified held-out names: test_accuracy
    valid_fraction: float = 0.1         # of the rest: picks the best epoch
    eval_batch_size: int = 1024
    seed: int = 0
    device: str = "cpu"                 # tiny batches of short sequences: the CPU beats a GPU's launch overhead
    threads: int | None = None
    stop_after_epochs: int | None = None  # end the run after N epochs as an interruption would (resumable)

    def check(self) -> None:
        """Reject settings no names run could use, naming the setting."""
        if self.model not in ("rnn", "cnn"):
            raise ConfigError(f"model: expected rnn or cnn, got {self.model!r}")
        if self.filters < 1 or not self.widths or any(w < 1 for w in self.widths):
            raise ConfigError(f"filters and widths must be at least 1, got {self.filters} and {self.widths}")
        if self.cell not in ("lstm", "gru"):
            raise ConfigError(f"cell: expected lstm or gru, got {self.cell!r}")
        for key in ("layers", "hidden_size", "embed"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


@config_kind("series")
@dataclass
class SeriesConfig:
    """Forecasting a univariate series (generated noisy sines, or ``--csv FILE --column NAME``) with an RNN."""

    kind: str = "series"
    recipe: str = ""
    csv: str | None = None              # --csv FILE: forecast its --column instead of generated sines
    column: str | None = None
    length: int = 3000                  # generated series: number of values
    noise: float = 0.1                  # generated series: noise std (the sines' amplitude is ~1)
    window: int = 32                    # past values the model sees
    horizon: int = 1                    # future values it predicts
    cell: str = "lstm"                  # lstm | gru
    layers: int = 1
    hidden_size: int = 32
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 0.0
    schedule: str = "one-cycle"
    clip: float | None = 1.0
    valid_fraction: float = 0.2         # the series' tail
    seed: int = 0
    device: str = "cpu"                 # small models: the CPU beats a GPU's launch overhead
    threads: int | None = None
    stop_after_epochs: int | None = None  # end the run after N epochs as an interruption would (resumable)

    def check(self) -> None:
        """Reject settings no series run could use, naming the setting."""
        if self.cell not in ("lstm", "gru"):
            raise ConfigError(f"cell: expected lstm or gru, got {self.cell!r}")
        for key in ("window", "horizon", "layers", "hidden_size", "length"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(f"valid_fraction must be in (0, 1) for a series, got {self.valid_fraction}")


@config_kind("textcls")
@dataclass
class TextClassifyConfig:
    """Word-level text classification (say, review sentiment): ``--csv FILE --text-column C --label-column L``."""

    kind: str = "textcls"
    recipe: str = ""
    csv: str | None = None              # --csv FILE with a header row
    text_column: str | None = None      # --text-column NAME
    label_column: str | None = None     # --label-column NAME
    max_vocab: int = 20000              # vocabulary size, <pad> and <unk> included (from the training rows)
    min_freq: int = 2                   # rarer tokens are <unk>
    max_length: int = 256               # tokens kept from the start of each text
    cell: str = "lstm"                  # lstm | gru
    bidirectional: bool = True
    layers: int = 1
    hidden_size: int = 128
    embed: int = 100
    dropout: float = 0.3
    balance: str = "none"               # none | weighted-loss | sampler: counter class imbalance
    epochs: int = 6
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: str = "one-cycle"
    pct_start: float = 0.25
    clip: float | None = 1.0
    label_smoothing: float = 0.0
    test_fraction: float = 0.2          # stratified held-out rows: test_accuracy
    valid_fraction: float = 0.1         # of the rest: picks the best epoch
    eval_batch_size: int = 512
    seed: int = 0
    device: str = "auto"                # long texts: a GPU pays off, unlike for names
    threads: int | None = None
    stop_after_epochs: int | None = None  # end the run after N epochs as an interruption would (resumable)

    def check(self) -> None:
        """Reject settings no text-classification run could use, naming the setting."""
        if self.cell not in ("lstm", "gru"):
            raise ConfigError(f"cell: expected lstm or gru, got {self.cell!r}")
        for key in ("layers", "hidden_size", "embed", "max_length", "min_freq"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.max_vocab < 3:
            raise ConfigError(f"max_vocab must be at least 3 (<pad>, <unk> and one word), got {self.max_vocab}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


@config_kind("transfer")
@dataclass
class TransferConfig:
    """Transfer learning, measured: a conv net pretrained on Fashion-MNIST (or ``--from RUN_DIR``)
    fine-tuned on scikit-learn's 8x8 digits upscaled to 28x28, against the same net from scratch."""

    kind: str = "transfer"
    recipe: str = ""
    source_recipe: str = "fashion-cnn"  # the image recipe pretrained first (unless from_run)
    from_run: str | None = None         # --from RUN_DIR: an image run on 28x28 grey images to start from
    pretrain_epochs: int = 2            # epochs of source_recipe (its schedule squeezed into them)
    data: str | None = None             # --data DIR: Fashion-MNIST, for pretraining
    percents: tuple[int, ...] = (10, 25, 100)  # shares of the digits' training split, each trained twice
    test_fraction: float = 0.2          # stratified held-out digits: the accuracy reported
    epochs: int = 10                    # per digits run, transfer and scratch alike
    freeze_epochs: int = 2              # transfer: head-only epochs (fine-tune schedule)
    batch_size: int = 32
    lr: float = 3e-3                    # transfer's peak learning rate (the head's)
    scratch_lr: float = 1e-2            # scratch's: the best of 3e-3 and 1e-2 measured from scratch
    lr_mult: float = 0.3                # transfer: each earlier layer group trains at this times the next
    augment: tuple[str, ...] = ()       # batched augmentations of the digits, both runs alike
    repeats: int = 1                    # splits (seed, seed + 1, ...) each share is compared on; accuracies averaged
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "cpu"                 # 1,797 small images: the CPU is quick enough
    threads: int | None = None

    def check(self) -> None:
        """Reject settings no transfer run could use, naming the setting."""
        if not self.percents or any(not 0 < p <= 100 for p in self.percents):
            raise ConfigError(f"percents must be in (0, 100], got {self.percents}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0 <= self.freeze_epochs < self.epochs:
            raise ConfigError(f"freeze_epochs must be in [0, epochs), got {self.freeze_epochs}")
        if self.pretrain_epochs < 1:
            raise ConfigError(f"pretrain_epochs must be at least 1, got {self.pretrain_epochs}")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be at least 1, got {self.repeats}")


CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("adamw", "sgd"),
    "schedule": ("one-cycle", "sgdr", "cosine", "constant", "step", "fine-tune"),
    "monitor": ("valid_acc", "valid_loss", "train_acc", "train_loss"),
    "device": ("auto", "cpu", "cuda", "mps"),
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
        if isinstance(raw, int) and not isinstance(raw, bool):  # `--set percents=10`: a tuple of one
            items = [raw]
        if items is not None:
            items = [str(i).strip() for i in items if str(i).strip()]
            item_type = (typing.get_args(hint) or (str,))[0]
            try:
                return tuple(int(i) if item_type is int else i for i in items)
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
    hints = typing.get_type_hints(type(config))
    hints.pop("kind", None)
    changes: dict[str, Any] = {}
    model_args = dict(getattr(config, "model_args", {}))
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
    if hasattr(config, "model_args"):
        changes["model_args"] = changes.get("model_args", model_args) if "model_args" in changes else model_args
    elif len(model_args):
        raise ConfigError(f"model_args.NAME settings do not apply to {type(config).__name__}")
    new = dataclasses.replace(config, **changes)
    validate(new)
    return new


def validate(config: Any) -> None:
    """Reject values no run could use, naming the setting (checks the fields a config has)."""
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if hasattr(config, key) and getattr(config, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(config, key)}")
    if getattr(config, "lr", 1.0) <= 0:
        raise ConfigError(f"lr must be positive, got {config.lr}")
    if not 0.0 <= getattr(config, "valid_fraction", 0.0) < 1.0:
        raise ConfigError(f"valid_fraction must be in [0, 1), got {config.valid_fraction}")
    if not 0.0 <= getattr(config, "label_smoothing", 0.0) < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}")
    if hasattr(config, "check"):  # a kind's own rules (see TabularConfig.check)
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
    """Write the resolved config as JSON (plain types only)."""
    Path(path).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n", encoding="utf-8")


def load_config(path: str | Path) -> Any:
    """Read a ``config.json`` back into the config class of its ``kind`` (unknown keys are an error)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: cannot read the run config: {error}") from None
    cls = CONFIG_KINDS.get(raw.get("kind", "image"))
    if cls is None:
        raise ConfigError(f"{path}: unknown run kind {raw.get('kind')!r}; known: {', '.join(CONFIG_KINDS)}")
    hints = typing.get_type_hints(cls)
    for key, value in raw.items():  # JSON has lists where the dataclass has tuples
        if isinstance(value, list) and typing.get_origin(hints.get(key)) is tuple:
            raw[key] = tuple(value)
    try:
        return cls(**raw)
    except TypeError as error:
        raise ConfigError(f"{path}: not a valid nnlab config: {error}") from None
