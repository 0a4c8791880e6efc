"""The runs a user has: ``nnlab runs`` (one row per run directory, with its status) and ``nnlab compare``
(the config differences of a few runs as a table, their curves overlaid in one PNG).

A run directory is any folder holding ``config.json``, ``metrics.jsonl`` or a checkpoint;
folders around them (``runs/``, a sweep's folder with its own ``summary.json``) are searched,
never the inside of a run. Status: *finished* (``summary.json``), *interrupted* (a ``last.pt`` that
``nnlab train --resume`` continues) or *broken*, with why (no config, an unreadable file, a
torn ``metrics.jsonl`` and no checkpoint to go back to...).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from nnlab.errors import CheckpointError, ConfigError, NnlabError
from nnlab.files import save_figure

RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt")


def is_run_dir(path: Path) -> bool:
    return any((path / name).exists() for name in RUN_FILES)


def find_runs(root: str | Path) -> list[Path]:
    """Every run directory at or under ``root`` (a run's own subfolders, e.g. snapshots, are not searched)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"runs: {root} is not a directory")
    if is_run_dir(root):
        return [root]
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        found += find_runs(child)
    return found


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The complete JSON rows of a ``metrics.jsonl`` and whether a torn (unparsable) line followed them."""
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows, False
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            return rows, True
    return rows, False


def headline(summary: dict[str, Any]) -> tuple[str, float] | None:
    """The metric a finished run is known by: its kind's (``Kind.headline_metric``), or ``None``."""
    from nnlab.kinds import get_kind
    try:
        kind = get_kind(summary.get("kind") or "image")
    except NnlabError:
        return None
    return kind.headline_metric(summary)


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, ValueError) as error:
        return None, f"{path.name} unreadable ({str(error).splitlines()[0]})"


def _best(rows: list[dict[str, Any]], monitor: str) -> float | None:
    values = [row[monitor] for row in rows if isinstance(row.get(monitor), (int, float))]
    if not values:
        return None
    return min(values) if monitor.endswith("loss") else max(values)


def run_status(run_dir: Path) -> dict[str, Any]:
    """Status (finished / interrupted / broken), why, recipe, kind, epochs done, the metric and seconds of one run."""
    config, problem = _read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else (None, None)
    rows, torn = read_metrics(run_dir / "metrics.jsonl")
    out: dict[str, Any] = {"recipe": (config or {}).get("recipe"), "kind": (config or {}).get("kind"),
                           "epochs": len(rows), "metric": None, "value": None,
                           "seconds": round(sum(row.get("seconds") or 0.0 for row in rows), 1)}
    summary, summary_problem = (_read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file()
                                else (None, None))
    if config is None:
        return {**out, "status": "broken", "why": problem or "no config.json"}
    if summary_problem:
        return {**out, "status": "broken", "why": summary_problem}
    if summary is not None:
        metric = headline(summary)
        out.update(epochs=summary.get("epochs", len(rows)), seconds=summary.get("train_seconds", out["seconds"]))
        if metric:
            out.update(metric=metric[0], value=metric[1])
        return {**out, "status": "finished", "why": ""}
    monitor = config.get("monitor") or "valid_loss"
    out.update(metric=f"best {monitor}", value=_best(rows, monitor))
    if not (run_dir / "last.pt").is_file():
        why = "no checkpoint (stopped before its first epoch ended)"
        if torn:
            why = f"metrics.jsonl ends in a torn line after {len(rows)} rows and there is no checkpoint"
        return {**out, "status": "broken", "why": why}
    from nnlab.kinds import get_kind
    try:
        kind = get_kind(out["kind"] or "image")
    except NnlabError as error:
        return {**out, "status": "broken", "why": str(error)}
    if not kind.supports("resume"):
        return {**out, "status": "broken", "why": f"stopped; a {kind.what} cannot be resumed"}
    return {**out, "status": "interrupted", "why": f"resumable: nnlab train --resume {run_dir}"}


def started(run_dir: Path) -> float:
    """When the run began, as near as its files tell: the oldest modification time among them."""
    times = [p.stat().st_mtime for p in run_dir.iterdir()]
    return min(times) if times else run_dir.stat().st_mtime


def list_runs(root: str | Path = "runs") -> list[dict[str, Any]]:
    """One row per run directory under ``root``, oldest first: name, recipe, kind, started, status
    (with why), epochs done, the headline metric and training seconds."""
    root = Path(root)
    rows = []
    for run_dir in find_runs(root):
        name = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
        begun = started(run_dir)
        rows.append({"name": name, "run_dir": str(run_dir), **run_status(run_dir), "started_at": begun,
                     "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(begun))})
    rows.sort(key=lambda row: row["started_at"])
    return rows


def format_runs(rows: list[dict[str, Any]]) -> str:
    """The runs table as text (``why`` indented under the runs that are not finished)."""
    head = ("name", "recipe", "kind", "started", "status", "epochs", "metric", "seconds")
    table = [head] + [(r["name"], r["recipe"] or "-", r["kind"] or "-", r["started"], r["status"], str(r["epochs"]),
                       f"{r['metric']} {r['value']:.4f}" if r["value"] is not None else "-",
                       f"{r['seconds']:.1f}" if r["seconds"] is not None else "-") for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    lines = []
    for line, row in zip(table, [None, *rows]):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        if row is not None and row["why"] and row["status"] != "finished":
            lines.append(f"    {row['why']}")
    return "\n".join(lines)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model_args": {"widths": [8]}}`` -> ``{"model_args.widths": [8]}``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def compare_figure(curves: dict[str, list[dict[str, Any]]]) -> Figure:
    """Loss and accuracy against epoch for each run (``curves``: its label -> its metrics.jsonl rows;
    valid solid, train dashed, one colour per run): ``nnlab compare``'s picture."""
    fig = Figure(figsize=(11, 4.2), layout="tight")
    axes = fig.subplots(1, 2)
    for k, (label, rows) in enumerate(curves.items()):
        colour = f"C{k % 10}"
        for ax, metric in zip(axes, ("loss", "acc")):
            for split, style in (("valid", "-"), ("train", "--")):
                points = [(r["epoch"], r[f"{split}_{metric}"]) for r in rows
                          if isinstance(r.get(f"{split}_{metric}"), (int, float))]
                if points:
                    ax.plot(*zip(*points), style, color=colour, marker="o", markersize=3,
                            label=f"{label} ({split})")
    for ax, title in zip(axes, ("loss", "accuracy")):
        ax.set_title(f"{title} (valid solid, train dashed)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return fig


def compare(run_dirs: list[str | Path], out: str | Path = "compare.png") -> dict[str, Any]:
    """The config keys on which ``run_dirs`` differ (one value per run), each run's status and metric,
    and their curves overlaid in ``out``."""
    if len(run_dirs) < 2:
        raise ConfigError("compare: give at least two run directories")
    configs, curves, results = {}, {}, {}
    for run_dir in run_dirs:
        label = str(run_dir)
        path = Path(run_dir) / "config.json"
        if not path.is_file():
            raise CheckpointError(f"compare: {run_dir} is not an nnlab run directory (no config.json)")
        config, problem = _read_json(path)
        if config is None:
            raise CheckpointError(f"compare: {run_dir}: {problem}")
        configs[label] = flatten(config)
        curves[label] = read_metrics(Path(run_dir) / "metrics.jsonl")[0]
        results[label] = run_status(Path(run_dir))
    keys = sorted(set().union(*configs.values()))
    missing = object()
    differences = {key: [configs[label].get(key, missing) for label in configs] for key in keys}
    differences = {key: [None if v is missing else v for v in values] for key, values in differences.items()
                   if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1}
    plot = save_figure(compare_figure(curves), out)
    return {"runs": list(configs), "differences": differences, "results": results, "plot": str(plot)}


def format_compare(result: dict[str, Any]) -> str:
    """The differences table: one row per differing key, one column per run; then each run's metric."""
    labels = result["runs"]
    short = [Path(label).name or label for label in labels]

    def cell(value: Any) -> str:
        if isinstance(value, float) and not math.isnan(value):
            return f"{value:.6g}"
        return "-" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)

    table = [("setting", *short)] + [(key, *map(cell, values)) for key, values in result["differences"].items()]
    metric = [r["metric"] for r in result["results"].values() if r["metric"]]
    table.append(("status", *(r["status"] for r in result["results"].values())))
    table.append(("epochs", *(str(r["epochs"]) for r in result["results"].values())))
    if metric:
        table.append((metric[0], *(cell(r["value"]) for r in result["results"].values())))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    if not result["differences"]:
        lines.insert(1, "(the configs are identical)")
    return "\n".join(lines + [f"curves: {result['plot']}"])
