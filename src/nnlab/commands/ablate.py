"""``nnlab ablate``: the measured value of each trick of a recipe.

A recipe declares its tricks (``Recipe.tricks``: a name -> the overrides that remove it). Ablate
trains the full recipe and the recipe with each trick removed, with every seed, as one sweep
(``nnlab.commands.sweep``: the same study, workers, resumption and run directories), and reports
each trick's *gain*, full minus without, paired by seed, for the validation metric and the test
metric (mean ± std over seeds; positive: the trick helps), as a table and ``ablation.png``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from nnlab.commands.sweep import Axis, execute, mean_std, metric_direction, new_plan, trial_rows
from nnlab.errors import ConfigError
from nnlab.files import save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FULL = "full"


def ablation_plan(recipe: str, seeds: int = 3, metric: str | None = None, out: str | Path | None = None,
                  storage: str | None = None, study: str | None = None,
                  overrides: dict[str, Any] | None = None) -> Any:
    """The sweep over the variants ``full`` and one per declared trick, each checked against the config."""
    from nnlab.recipes import get_recipe, recipe_config
    fixed = dict(overrides or {})
    base = recipe_config(recipe, fixed)
    tricks = get_recipe(recipe).tricks
    if not tricks:
        raise ConfigError(f"ablate: recipe {recipe!r} declares no tricks (Recipe.tricks in nnlab/recipes.py)")
    if FULL in tricks:
        raise ConfigError(f"ablate: recipe {recipe!r} names a trick {FULL!r}, the reference's name")
    for name, removal in tricks.items():
        try:
            recipe_config(recipe, {**fixed, **removal})
        except ConfigError as error:
            raise ConfigError(f"ablate: trick {name!r} of {recipe}: {error}") from None
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    variants = {FULL: {}, **{name: dict(removal) for name, removal in tricks.items()}}
    axis = Axis("variant", list(variants), list(variants))
    return new_plan(recipe, [axis], seeds, "grid", None, metric or base.monitor, fixed, base.seed, out, storage, study,
                 variants=variants, kind="ablate")


def gains(rows: list[dict[str, Any]], key: str, direction: str) -> dict[str, list[float]]:
    """Per trick, the gain of keeping it on each seed both runs finished: full - without (maximize)."""
    sign = 1.0 if direction == "maximize" else -1.0
    full = {r["seed"]: r[key] for r in rows if r["params"]["variant"] == FULL and r[key] is not None}
    out: dict[str, list[float]] = {}
    for r in rows:
        name = r["params"]["variant"]
        if name != FULL and r[key] is not None and r["seed"] in full:
            out.setdefault(name, []).append(sign * (full[r["seed"]] - r[key]))
    return out


def ablation_table(plan: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The full recipe's metrics and each trick's gains (validation and test), best trick first."""
    test_metric = next((r["test_metric"] for r in rows if r["test_metric"]), None)
    valid = gains(rows, "value", plan.direction)
    test = gains(rows, "test_value", metric_direction(test_metric or "test_accuracy"))
    full_rows = [r for r in rows if r["params"]["variant"] == FULL]
    reference = {"n": len(full_rows)}
    if full_rows:
        reference.update(zip(("valid_mean", "valid_std"), mean_std([r["value"] for r in full_rows])))
        tests = [r["test_value"] for r in full_rows if r["test_value"] is not None]
        if tests:
            reference.update(zip(("test_mean", "test_std"), mean_std(tests)))
    tricks = []
    for name in plan.variants:
        if name == FULL:
            continue
        row: dict[str, Any] = {"trick": name, "removed_by": plan.variants[name], "n": len(valid.get(name, []))}
        if valid.get(name):
            row.update(zip(("valid_gain", "valid_gain_std"), mean_std(valid[name])))
        if test.get(name):
            row.update(zip(("test_gain", "test_gain_std"), mean_std(test[name])))
        tricks.append(row)
    tricks.sort(key=lambda r: -r.get("valid_gain", float("-inf")))
    return {"metric": plan.metric, "test_metric": test_metric, "full": reference, "tricks": tricks}


def ablation_figure(recipe: str, table: dict[str, Any]) -> Figure:
    """Each trick's gain (validation and test, ±1 std over seeds) as horizontal bars (``ablation.png``)."""
    from matplotlib.figure import Figure  # here, not at the top: most commands draw nothing
    rows = [r for r in table["tricks"] if "valid_gain" in r]
    fig = Figure(figsize=(7.5, 1.2 + 0.55 * max(len(rows), 1)), layout="tight")
    ax = fig.subplots()
    ys = list(range(len(rows)))
    for offset, key, label in ((-0.18, "valid", table["metric"]), (0.18, "test", table["test_metric"] or "test")):
        ax.barh([y + offset for y in ys], [r.get(f"{key}_gain", 0.0) for r in rows], height=0.34,
                xerr=[r.get(f"{key}_gain_std", 0.0) for r in rows], capsize=3, label=f"{label} gain")
    ax.set_yticks(ys, [r["trick"] for r in rows])
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("full recipe - recipe without the trick (positive: the trick helps); ±1 std over seeds")
    ax.set_title(f"ablation of {recipe}: {table['full']['n']} seeds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return fig


def ablate(recipe: str, seeds: int = 3, metric: str | None = None, out: str | Path | None = None,
           storage: str | None = None, study: str | None = None, workers: int = 1,
           overrides: dict[str, Any] | None = None, stream: TextIO | None = None) -> dict[str, Any]:
    """Train ``recipe`` in full and without each trick, ``seeds`` times each; returns the sweep's report
    with the ablation table (also in ``summary.json``, ``ablation.csv`` and ``ablation.png``)."""
    from nnlab.commands.sweep import write_csv
    from nnlab.commands.sweep_workers import open_storage, open_study
    from nnlab.kit.rundir import write_json
    plan = ablation_plan(recipe, seeds, metric, out, storage, study, overrides)
    summary = execute(plan, workers, stream)
    table = ablation_table(plan, trial_rows(plan, open_study(plan, open_storage(plan.storage))))
    columns = ["trick", "valid_gain", "valid_gain_std", "test_gain", "test_gain_std", "n"]
    summary["files"]["ablation"] = str(write_csv(plan.out / "ablation.csv", table["tricks"], columns))
    if any("valid_gain" in r for r in table["tricks"]):
        summary["files"]["ablation_plot"] = str(save_figure(ablation_figure(recipe, table), plan.out / "ablation.png"))
    summary["ablation"] = table
    write_json(plan.out / "summary.json", summary)
    return summary


def format_ablation(summary: dict[str, Any]) -> str:
    """The terminal table: the full recipe, then per trick its validation and test gain, mean ± std."""
    table = summary["ablation"]
    full, metric, test = table["full"], table["metric"], table["test_metric"] or "test"

    def pm(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:+.4f} ± {row[key + '_std']:.4f}" if key in row else "-"

    lines = [f"ablation of {summary['recipe']}: {summary['trials_done']} of {summary['trials_planned']} runs, "
             f"seeds {', '.join(map(str, summary['seeds']))}"]
    if "valid_mean" in full:
        lines.append(f"full recipe: {metric} {full['valid_mean']:.4f} ± {full['valid_std']:.4f}"
                     + (f", {test} {full['test_mean']:.4f} ± {full['test_std']:.4f}" if "test_mean" in full else ""))
    head = ("trick", f"{metric} gain", f"{test} gain", "n")
    cells = [head] + [(r["trick"], pm(r, "valid_gain"), pm(r, "test_gain"), str(r["n"])) for r in table["tricks"]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.append("gain = full recipe - recipe without the trick, paired by seed (positive: the trick helps)")
    if not summary["complete"]:
        lines.append("not finished: run the same command again to continue")
    lines.append("files: " + ", ".join(summary["files"].values()))
    return "\n".join(lines)
