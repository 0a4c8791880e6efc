"""The table of kinds: every kind of run nnlab trains, the file that holds it, and what it supports.

A kind is one file in this folder: its config (a subclass of ``nnlab.config.RunConfig``) and
its runner, ``train(start, stream, dry_run) -> summary``, ``evaluate(run_dir, data_path,
device_name, **options) -> dict`` and ``predict(run_dir, inputs, top_k, **options)`` (plus
``encode_inputs(state, strings)`` where the inputs are strings a server can take). The CLI,
serve, export and the inspection commands ask this table what a run can do; nothing else
lists kinds. Adding a kind is one file, one ``Kind`` line below (or ``register`` from
anywhere) and its recipes in ``nnlab.recipes``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from nnlab.errors import CheckpointError, ConfigError

# What a kind can offer beyond train/evaluate/predict; commands refuse a run whose kind lacks theirs.
FEATURES = ("resume", "serve", "export", "interpret", "cam", "sample", "lr-find", "translate")


@dataclass(frozen=True)
class Kind:
    """One kind of run: its name in ``config.json``, the module (or its dotted path) holding its
    config class and runner, what it supports, the options its ``evaluate``/``predict`` take,
    and the noun for one of its runs in messages."""

    name: str
    module: str | ModuleType
    config: str                               # the config class's name in the module
    what: str                                 # "image run", "names run", ... for messages
    features: frozenset[str] = frozenset()
    eval_options: tuple[str, ...] = ()        # `nnlab eval` options beyond --data/--device
    predict_options: tuple[str, ...] = ()     # `nnlab predict` options beyond inputs and --top-k

    def runner(self) -> ModuleType:
        """The module with this kind's config class, ``train``, ``evaluate`` and ``predict``."""
        return importlib.import_module(self.module) if isinstance(self.module, str) else self.module

    def config_class(self) -> type:
        return getattr(self.runner(), self.config)

    def supports(self, feature: str) -> bool:
        return feature in self.features


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Add ``kind`` to the table (a later entry of the same name replaces the earlier one)."""
    unknown = set(kind.features) - set(FEATURES)
    if unknown:
        raise ValueError(f"kind {kind.name!r}: unknown features {sorted(unknown)}; known: {', '.join(FEATURES)}")
    KINDS[kind.name] = kind
    return kind


def _features(*names: str) -> frozenset[str]:
    return frozenset(names)


register(Kind("image", "nnlab.kinds.image", "ImageConfig", "image run",
              _features("resume", "serve", "export", "interpret", "cam", "lr-find"),
              eval_options=("ensemble",), predict_options=("invert", "csv")))
register(Kind("tabular", "nnlab.kinds.tabular", "TabularConfig", "tabular run",
              predict_options=("csv", "output")))
register(Kind("perceptron", "nnlab.kinds.perceptron", "PerceptronConfig", "perceptron run",
              predict_options=("csv", "output")))
register(Kind("text", "nnlab.kinds.charlm", "CharLMConfig", "char-RNN run", _features("resume", "sample")))
register(Kind("names", "nnlab.kinds.names", "NamesConfig", "names run", _features("resume", "serve")))
register(Kind("namegen", "nnlab.kinds.namegen", "NameGenConfig", "name-generation run", _features("resume", "sample"),
              eval_options=("classifier", "temperature", "top_k")))
register(Kind("series", "nnlab.kinds.series", "SeriesConfig", "series run", _features("resume")))
register(Kind("textcls", "nnlab.kinds.textcls", "TextClassifyConfig", "text-classification run",
              _features("resume", "serve"), predict_options=("csv", "output", "explain")))
register(Kind("transfer", "nnlab.kinds.transfer", "TransferConfig", "digits-transfer run"))
register(Kind("fashion-transfer", "nnlab.kinds.fashion_transfer", "FashionTransferConfig", "fashion-transfer run"))
register(Kind("translate", "nnlab.kinds.translate", "TranslateConfig", "translation run", _features("resume", "translate")))
register(Kind("custom", "nnlab.kit.api", "CustomConfig", "run of your own model (nnlab.fit)", _features("resume")))


def get_kind(name: str) -> Kind:
    """The kind called ``name``, or a ``ConfigError`` listing the known ones."""
    if name not in KINDS:
        raise ConfigError(f"unknown kind of run {name!r}; known kinds: {', '.join(KINDS)}")
    return KINDS[name]


def config_class(name: str, source: str | Path = "config") -> type:
    """The config class of kind ``name`` (``source`` names the file in the error for an unknown kind)."""
    if name not in KINDS:
        raise ConfigError(f"{source}: unknown run kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name].config_class()


def kind_of_run(run_dir: str | Path) -> Kind:
    """The kind of the run in ``run_dir``, read from its ``config.json``."""
    from nnlab.config import load_config
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not an nnlab run directory (no config.json)")
    return get_kind(load_config(path).kind)


def require(run_dir: str | Path, feature: str, command: str) -> Kind:
    """The kind of the run in ``run_dir`` if it supports ``feature``; else a ``ConfigError`` saying
    which kinds ``command`` takes."""
    kind = kind_of_run(run_dir)
    if not kind.supports(feature):
        takers = [k.what for k in KINDS.values() if k.supports(feature)]
        raise ConfigError(f"{command}: {run_dir} is a {kind.what}; {command} takes: {', '.join(takers) or 'none'}")
    return kind


def options_of(kind: Kind, given: dict[str, Any], allowed: tuple[str, ...], run_dir: str | Path) -> dict[str, Any]:
    """``given`` options that are set, each checked against ``allowed`` (a ``ConfigError`` naming the flag)."""
    chosen = {name: value for name, value in given.items() if value is not None}
    for name in chosen:
        if name not in allowed:
            raise ConfigError(f"--{name.replace('_', '-')} does not apply to the {kind.what} in {run_dir}")
    return chosen
