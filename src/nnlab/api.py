"""The Python API over recipes and runs: ``nnlab.train`` (a named recipe) and ``nnlab.load`` (any run
directory) return the same ``Run`` object ``nnlab.fit`` (your own model) returns, and
``nnlab.show_batch`` draws a recipe's first training examples.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

from nnlab.kinds import get_kind, load
from nnlab.kit.runs import Run
from nnlab.recipes import recipe_config, train as train_summary

__all__ = ["load", "show_batch", "train"]


def train(recipe: str | None = None, out: str | Path | None = None, overrides: dict[str, Any] | None = None, *,
          stream: TextIO | None = None, dry_run: bool = False, resume: str | Path | None = None,
          force: bool = False, **settings: Any) -> Run:
    """Train the named ``recipe`` (``overrides`` and ``settings`` are config fields, as ``--set`` takes
    them) into ``out`` (default ``runs/RECIPE-<timestamp>``), or continue the interrupted run ``resume``;
    returns the ``Run`` (``run.summary`` is what ``nnlab train --json`` prints)."""
    summary = train_summary(recipe, out=out, overrides={**(overrides or {}), **settings}, stream=stream,
                            dry_run=dry_run, resume=resume, force=force)
    if summary.get("rank", 0) != 0:  # another rank of a torchrun job: rank 0 wrote the run
        return Run(summary.get("run_dir"), get_kind(recipe_config(recipe, {}).kind if recipe else "image"),
                   summary=summary)
    run = load(summary["run_dir"])
    run._summary = summary
    return run


def show_batch(source: str | Run, n: int = 16, **overrides: Any) -> Any:
    """The first ``n`` training examples of a recipe (its name) or of a run, with their labels (a Figure)."""
    if isinstance(source, Run):
        config, kind = source.config, source.kind
    else:
        config = recipe_config(source, overrides)
        kind = get_kind(config.kind)
    if not kind.supports("show"):
        raise kind.lacks("show_batch", source.run_dir if isinstance(source, Run) else None)
    return kind.batch_figure(config, n)
