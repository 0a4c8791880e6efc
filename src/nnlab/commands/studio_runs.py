"""The studio's runs: the ``nnlab runs`` table of a folder, one run's files, a few runs compared.

``GET /runs`` answers ``commands.runs.list_runs`` of the folder (``--runs DIR``, default
``runs/``): name, recipe, kind, status (finished, interrupted, broken) and why, epochs, the
headline metric and seconds, and the served model's name where a run is also served.
``GET /runs/{name}`` answers one run's status, ``config.json``, ``summary.json`` (the scores:
confusion matrix, per-class precision/recall, ...) and ``metrics.jsonl`` rows (the curves).
``GET /compare?run=A&run=B`` answers the curves of 2 to ``MAX_COMPARE`` runs and the settings
they differ on, as ``nnlab compare`` computes them.

Runs are named as ``nnlab runs`` names them (their path under the folder, such as
``sweep-x/trial-0003``) and looked up among the run directories found there when the request
comes: the name in the request is a key of that table, never joined to a path; only the run's
own JSON files are read, never written.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query

from nnlab.commands.runs import find_runs, flatten, list_runs, read_metrics, run_status
from nnlab.commands.served import ServedModel, UploadRejected
from nnlab.errors import ConfigError

DEFAULT_RUNS = "runs"
MAX_COMPARE = 8
MAX_ROWS = 10_000  # metrics rows returned per run (the last ones): an epoch a row, far more than any run has


def runs_folder(runs_root: str | Path | None, required: bool) -> Path | None:
    """The folder of runs to browse: ``runs_root`` (a ``ConfigError`` if it is not a directory), else
    ``runs/`` where it exists; with ``required`` (no run to serve either) a missing one is an error."""
    if runs_root is not None:
        if not Path(runs_root).is_dir():
            raise ConfigError(f"--runs {runs_root}: not a directory (expected a folder of run directories)")
        return Path(runs_root)
    if Path(DEFAULT_RUNS).is_dir():
        return Path(DEFAULT_RUNS)
    if required:
        raise ConfigError(f"serve: give run directories to serve, or --runs DIR of runs to browse "
                          f"(there is no {DEFAULT_RUNS}/ here)")
    return None


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (a diverged loss) as ``None``, so it is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


def read_json_file(path: Path) -> Any:
    """The JSON in ``path``, or ``None`` where it is missing or unreadable (the run's status says why)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def add_runs_routes(app: FastAPI, root: Path | None, models: dict[str, ServedModel]) -> None:
    """``GET /runs``, ``GET /runs/{name}`` and ``GET /compare`` on ``app``, over the runs under ``root``."""
    served = {model.run_dir.resolve(): name for name, model in models.items()}

    def table() -> dict[str, Path]:
        if root is None:
            raise UploadRejected(404, "no folder of runs is served: start nnlab serve with --runs DIR")
        try:
            return {(str(path.relative_to(root)) if path != root else path.name): path for path in find_runs(root)}
        except (ConfigError, OSError) as error:
            raise UploadRejected(404, f"runs folder {root}: {error}") from None

    def lookup(name: str, runs: dict[str, Path]) -> Path:
        if name not in runs:
            raise UploadRejected(404, f"no run named {name!r} under {root}; runs: {', '.join(list(runs)[:20]) or 'none'}")
        return runs[name]

    @app.get("/runs")
    def runs() -> dict[str, Any]:
        """The runs under the folder, oldest first, as ``nnlab runs`` lists them; ``model`` names the
        served model where the run is also served."""
        if root is None:
            return {"root": None, "runs": []}
        try:
            rows = list_runs(root)
        except (ConfigError, OSError) as error:
            raise UploadRejected(404, f"runs folder {root}: {error}") from None
        return finite({"root": str(root),
                       "runs": [{**row, "model": served.get(Path(row["run_dir"]).resolve())} for row in rows]})

    @app.get("/runs/{name:path}")
    def run(name: str) -> dict[str, Any]:
        """One run: its status, config, summary (scores, confusion matrix, per-class report) and metrics rows."""
        path = lookup(name, table())
        rows, torn = read_metrics(path / "metrics.jsonl")
        return finite({"name": name, **run_status(path), "model": served.get(path.resolve()),
                       "config": read_json_file(path / "config.json"),
                       "summary": read_json_file(path / "summary.json"),
                       "metrics": rows[-MAX_ROWS:], "metrics_torn": torn})

    @app.get("/compare")
    def compare(run: list[str] = Query(..., description=f"the names of 2 to {MAX_COMPARE} runs")) -> dict[str, Any]:
        """The runs' curves (metrics rows), statuses, and the config settings on which they differ."""
        if not 2 <= len(set(run)) <= MAX_COMPARE or len(set(run)) != len(run):
            raise UploadRejected(422, f"run: give 2 to {MAX_COMPARE} different run names, got {len(run)}")
        runs = table()
        paths = {name: lookup(name, runs) for name in run}
        configs = {name: read_json_file(path / "config.json") for name, path in paths.items()}
        configs = {name: flatten(config) if isinstance(config, dict) else {} for name, config in configs.items()}
        keys = sorted(set().union(*configs.values()))
        differences = {key: [configs[name].get(key) for name in run] for key in keys}
        differences = {key: values for key, values in differences.items()
                       if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1}
        return finite({"runs": run, "differences": differences,
                       "results": {name: run_status(path) for name, path in paths.items()},
                       "metrics": {name: read_metrics(path / "metrics.jsonl")[0][-MAX_ROWS:]
                                   for name, path in paths.items()}})
