"""The table of kinds: every kind of run nnlab trains, one line each, and how to open a run.

A kind is one file in this folder holding its config (a ``nnlab.config.RunConfig`` subclass) and
its class (a ``nnlab.kit.kind.Kind`` subclass: train, evaluate, predict, headline, options,
capabilities, server hooks). Adding a kind is that file, one ``register`` line below (or a
``register`` call from anywhere, with the class itself) and its recipes in ``nnlab.recipes``.
The CLI, the server, ``nnlab runs`` and the sweeps iterate over this table; nothing else lists
kinds. Entries are dotted paths, imported on first use, so ``nnlab --help`` does not import torch.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Iterator, TextIO

from nnlab.config import config_kind
from nnlab.errors import CheckpointError, ConfigError
from nnlab.kit.kind import CAPABILITIES, Kind

__all__ = ["CAPABILITIES", "KINDS", "Kind", "all_kinds", "get_kind", "kind_of_run", "load", "options_of",
           "register", "require", "train_config"]

# name -> "module:Class" until first used, then the kind itself
KINDS: dict[str, str | Kind] = {}


def register(name: str, kind: str | type[Kind] | Kind) -> None:
    """Add a kind to the table under ``name``: its class, an instance, or ``"module:Class"`` (a later
    entry of the same name replaces the earlier one)."""
    KINDS[name] = kind() if isinstance(kind, type) else kind


register("image", "nnlab.kinds.image:ImageKind")
register("tabular", "nnlab.kinds.tabular:TabularKind")
register("perceptron", "nnlab.kinds.perceptron:PerceptronKind")
register("text", "nnlab.kinds.charlm:CharLMKind")
register("names", "nnlab.kinds.names:NamesKind")
register("namegen", "nnlab.kinds.namegen:NameGenKind")
register("series", "nnlab.kinds.series:SeriesKind")
register("textcls", "nnlab.kinds.textcls:TextClassifyKind")
register("transfer", "nnlab.kinds.transfer:TransferKind")
register("fashion-transfer", "nnlab.kinds.fashion_transfer:FashionTransferKind")
register("translate", "nnlab.kinds.translate:TranslateKind")
register("custom", "nnlab.kit.api:CustomKind")


def get_kind(name: str) -> Kind:
    """The kind called ``name``, or a ``ConfigError`` listing the known ones."""
    entry = KINDS.get(name)
    if entry is None:
        raise ConfigError(f"unknown kind of run {name!r}; known kinds: {', '.join(KINDS)}")
    if isinstance(entry, str):
        module, _, cls = entry.partition(":")
        entry = KINDS[name] = getattr(importlib.import_module(module), cls)()
    return entry


def all_kinds() -> Iterator[Kind]:
    """Every kind in the table, in its order."""
    for name in list(KINDS):
        yield get_kind(name)


def kind_of_run(run_dir: str | Path) -> Kind:
    """The kind of the run in ``run_dir``, read from its ``config.json``."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not an nnlab run directory (no config.json)")
    return get_kind(config_kind(path))


def require(run_dir: str | Path, capability: str, command: str) -> Kind:
    """The kind of the run in ``run_dir`` if it has ``capability``; else a ``ConfigError`` saying which
    kinds ``command`` takes."""
    kind = kind_of_run(run_dir)
    if not kind.supports(capability):
        takers = [k.what for k in all_kinds() if k.supports(capability)]
        raise ConfigError(f"{command}: {run_dir} is a {kind.what}; {command} takes: {', '.join(takers) or 'none'}")
    return kind


def takers(capability: str) -> list[str]:
    """The names of the kinds with ``capability``."""
    return [kind.name for kind in all_kinds() if kind.supports(capability)]


def options_of(kind: Kind, given: dict[str, Any], allowed: tuple[str, ...], run_dir: str | Path) -> dict[str, Any]:
    """``given`` options that are set, each checked against ``allowed`` (a ``ConfigError`` naming the flag)."""
    chosen = {name: value for name, value in given.items() if value is not None}
    for name in chosen:
        if name not in allowed:
            raise ConfigError(f"--{name.replace('_', '-')} does not apply to the {kind.what} in {run_dir}")
    return chosen


def train_config(config: Any = None, out: str | Path | None = None, stream: TextIO | None = None,
                 dry_run: bool = False, resume: str | Path | None = None, force: bool = False,
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``config`` into a new run directory ``out``, or continue the interrupted run ``resume``
    (``overrides`` applied to its config), with its kind; returns the summary (also ``summary.json``)."""
    from nnlab.kit.run import start_run
    if resume is None and config is None:
        raise ConfigError("train: give a recipe name (see `nnlab recipes`) or --resume RUN_DIR")
    kind = get_kind(config.kind) if resume is None else kind_of_run(resume)
    with start_run(config, out, overrides, resume, force, kind=kind) as start:  # locked while it trains
        return kind.train(start, stream if stream is not None else sys.stderr, dry_run)


def load(run_dir: str | Path, model: Any = None) -> Any:
    """Open the run in ``run_dir`` as a ``Run`` (``nnlab.load``): its config, summary, history, the model
    at its best epoch, and the methods its kind has. A run of your own model (``nnlab.fit``) needs
    ``model``, a fresh instance of its class: the checkpoint holds weights only, never pickled code."""
    from nnlab.kit.runs import Run
    kind = kind_of_run(run_dir)
    return Run.open(run_dir, kind, model=model)
