"""``nnlab sweep``: every setting of a grid (or N drawn by random search or TPE) trained with each seed,
ranked by the mean validation metric, on an Optuna study that many processes share.

One Optuna trial is one (setting, seed) run: an ordinary run directory made by
``nnlab.recipes.train`` under the sweep's folder (so ``eval``, ``predict`` and ``compare`` work on
it). The study lives in ``DIR/sweep.db`` (SQLite) or any database URL Optuna takes; every worker
(``--workers K`` local processes, or the same command on other machines) claims trials from it
(``nnlab.commands.sweep_workers``):

- the process that creates the study *plans* it: it enqueues every (setting, seed) of a grid, or
  one seed-0 *slot* per random/TPE trial; whoever claims a slot draws its setting from the sampler
  and enqueues that setting's other seeds. Every job carries ``slot`` and ``seed`` user attributes;
- a worker claims a waiting trial by moving it to RUNNING, which the database does for one
  worker only (``set_trial_state_values``: a row lock in PostgreSQL and MySQL, every transaction
  ``BEGIN IMMEDIATE`` in SQLite), so no trial runs twice;
- a trial whose worker died (its pid gone on this host, or no heartbeat for ``STALE_SECONDS``)
  is failed and enqueued again, by one worker only (a failed trial cannot fail twice): running
  the same command again finishes an interrupted sweep, none repeated, none lost. The new attempt
  resumes the killed run's directory from ``last.pt`` where it can.

With ``--prune`` (Optuna's ``MedianPruner``) a trial trains one epoch at a time: the run kit stops
it resumably after each epoch (``stop_after_epochs``), the worker reports that epoch's metric from
``metrics.jsonl`` to the study, and resumes it from ``last.pt`` unless its best value so far is
worse than the median of the finished trials at that epoch; a pruned trial stays an interrupted,
resumable run directory, and the other seeds of its setting are marked pruned without training.
A setting with a pruned seed is listed as pruned, after every setting that ran in full.

The report (``results.csv``, ``trials.csv``, ``sweep.png``, ``summary.json``) is built from the
study alone, so it is the same on every machine that shares it.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from nnlab.commands.sweep_workers import hide_password, open_storage, open_study, run_workers
from nnlab.config import parse_value
from nnlab.errors import ConfigError
from nnlab.files import atomic_write, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SEARCHES = ("grid", "random", "tpe")
HIGHER_IS_BETTER = ("acc", "accuracy", "f1", "r2", "auc")


@dataclass
class Axis:
    """One swept setting: a list of values (``texts`` as given, parsed into ``values``), or for random
    search and TPE a range ``low..high`` (``log`` for a log-uniform draw; ints when both ends are)."""

    key: str
    texts: list[str] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None

    def suggest(self, trial: Any) -> Any:
        """The Optuna parameter of this axis for ``trial`` (an enqueued value, or the sampler's draw)."""
        if not self.is_range:
            return trial.suggest_categorical(self.key, self.texts)
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def value(self, param: Any) -> Any:
        """The config value of Optuna parameter ``param``."""
        return self.values[self.texts.index(param)] if not self.is_range else param

    def text(self, param: Any) -> str:
        return f"{param:.4g}" if isinstance(param, float) else str(param)

    def describe(self) -> dict[str, Any]:
        return ({"key": self.key, "values": self.texts} if not self.is_range else
                {"key": self.key, "low": self.low, "high": self.high, "log": self.log, "int": self.integer})


def split_values(text: str) -> list[str]:
    """``"1e-3,(8,16),adamw"`` -> ``["1e-3", "(8,16)", "adamw"]``: commas inside brackets stay."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    items.append(current.strip())
    return [item for item in items if item]


def _number(text: str, item: str) -> float | int:
    value = parse_value(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"--grid {item}: range ends must be numbers, got {text!r}")
    return value


def parse_grid(items: list[str]) -> list[Axis]:
    """``--grid`` items (``KEY=V1,V2,...`` or ``KEY=LOW..HIGH[:log]``) as axes; a missing ``=``, no
    values, a repeated key or ``seed`` (use ``--seeds``) is a ``ConfigError``."""
    if not items:
        raise ConfigError("sweep: give at least one --grid KEY=VALUE1,VALUE2,...")
    axes: list[Axis] = []
    for item in items:
        key, sep, rest = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid {item!r}: expected KEY=VALUE1,VALUE2,... or KEY=LOW..HIGH")
        if key == "seed":
            raise ConfigError("--grid seed=...: every setting runs with each seed; use --seeds N")
        if any(axis.key == key for axis in axes):
            raise ConfigError(f"--grid {key}: given twice; list all its values in one --grid {key}=A,B,...")
        rest = rest.strip()
        span = re.fullmatch(r"(.+?)\.\.(.+?)(:log)?", rest)
        if span and "," not in rest:
            low, high = _number(span.group(1), item), _number(span.group(2), item)
            if not low < high or (span.group(3) and low <= 0):
                raise ConfigError(f"--grid {item}: a range needs LOW < HIGH (and LOW > 0 with :log)")
            axes.append(Axis(key, low=float(low), high=float(high), log=bool(span.group(3)),
                             integer=isinstance(low, int) and isinstance(high, int)))
            continue
        texts = split_values(rest)
        if not texts:
            raise ConfigError(f"--grid {key}=: no values (an empty grid); give {key}=VALUE1,VALUE2,...")
        if len(set(texts)) != len(texts):
            raise ConfigError(f"--grid {item}: a value is listed twice")
        axes.append(Axis(key, texts, [parse_value(text) for text in texts]))
    return axes


def metric_direction(metric: str) -> str:
    """``maximize`` for accuracies, F1, R^2, AUC; ``minimize`` for losses and errors."""
    return "maximize" if metric.rsplit("_", 1)[-1] in HIGHER_IS_BETTER else "minimize"


@dataclass
class Plan:
    """What a sweep runs (the same on every worker): the recipe, its axes (or ablation variants),
    seeds, search, trials, the metric, the overrides every trial shares, where runs and study live."""

    recipe: str
    axes: list[Axis]
    seeds: list[int]
    search: str
    trials: int | None
    metric: str
    fixed: dict[str, Any]
    out: Path
    storage: str
    study: str
    variants: dict[str, dict[str, Any]] | None = None   # nnlab ablate: variant name -> its overrides
    kind: str = "sweep"
    prune: dict[str, Any] | None = None   # median pruning: {"pruner": "median", "startup": N, "warmup": E}

    def signature(self) -> dict[str, Any]:
        """What makes two commands the same sweep (stored in the study; a different one is refused)."""
        signature = {"kind": self.kind, "recipe": self.recipe, "axes": [axis.describe() for axis in self.axes],
                     "seeds": self.seeds, "search": self.search, "trials": self.trials, "metric": self.metric,
                     "fixed": self.fixed, "variants": self.variants}
        if self.prune is not None:  # only then: the studies of sweeps made before pruning existed still match
            signature["prune"] = self.prune
        return json.loads(json.dumps(signature, default=str))  # as the study stores it (tuples as lists)

    @property
    def direction(self) -> str:
        return metric_direction(self.metric)

    def planned(self) -> int:
        settings = math.prod(len(axis.texts) for axis in self.axes) if self.search == "grid" else self.trials
        return settings * len(self.seeds)

    def overrides(self, params: dict[str, Any], seed: int) -> dict[str, Any]:
        """The overrides of one trial: the shared ones, its setting's, its seed."""
        axes = {axis.key: axis for axis in self.axes}
        if self.variants is not None:
            setting = dict(self.variants[params["variant"]])
        else:
            setting = {key: axes[key].value(param) for key, param in params.items()}
        # a trial writes no PNGs of its own (the sweep plots them side by side; --set plots=true for them)
        return {"plots": False, **self.fixed, **setting, "seed": seed}

    def label(self, params: dict[str, Any]) -> str:
        axes = {axis.key: axis for axis in self.axes}
        return " ".join(f"{key}={axes[key].text(params[key])}" for key in axes if key in params)

    def run_name(self, params: dict[str, Any], seed: int) -> str:
        axes = {axis.key: axis for axis in self.axes}
        name = "_".join(f"{key}-{axes[key].text(params[key])}" for key in axes if key in params)
        return re.sub(r"[^A-Za-z0-9.+-]+", "-", name).strip("-")[:150] + f"_seed-{seed}"


def make_plan(recipe: str, grid: list[str], seeds: int = 1, search: str = "grid", trials: int | None = None,
              metric: str | None = None, out: str | Path | None = None, storage: str | None = None,
              study: str | None = None, overrides: dict[str, Any] | None = None, prune: bool = False,
              prune_startup: int | None = None, prune_warmup: int | None = None) -> Plan:
    """A checked ``Plan``: every key and value of ``grid`` is applied to ``recipe``'s config once, so an
    unknown key or a value that does not parse for its field is a ``ConfigError`` before anything runs."""
    from nnlab.recipes import recipe_config
    fixed = dict(overrides or {})
    base = recipe_config(recipe, fixed)
    if search not in SEARCHES:
        raise ConfigError(f"--search {search!r}: expected one of {', '.join(SEARCHES)}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    axes = parse_grid(grid)
    for axis in axes:
        probes = [(text, value) for text, value in zip(axis.texts, axis.values)] if not axis.is_range else [
            (str(end), int(end) if axis.integer else end) for end in (axis.low, axis.high)]
        for text, value in probes:
            try:
                recipe_config(recipe, {**fixed, axis.key: value})
            except ConfigError as error:
                raise ConfigError(f"--grid {axis.key}={text}: {error}") from None
    if search == "grid":
        if any(axis.is_range for axis in axes):
            raise ConfigError("--grid KEY=LOW..HIGH is a range: sample it with --search random or tpe")
        if trials is not None:
            raise ConfigError("--trials is for --search random or tpe (a grid runs every setting)")
    elif trials is None or trials < 1:
        raise ConfigError(f"--search {search} needs --trials N (N >= 1)")
    return new_plan(recipe, axes, seeds, search, trials, metric or base.monitor, fixed, base.seed, out, storage,
                    study, prune=pruning(base, prune, prune_startup, prune_warmup))


def pruning(config: Any, prune: bool, startup: int | None, warmup: int | None) -> dict[str, Any] | None:
    """The median pruner's settings (``None`` without ``--prune``): finished trials before any is pruned
    (default 5, Optuna's), epochs every trial trains before it can be (default 1). The recipe's kind
    must resume, since a pruned trial trains one resumable epoch at a time."""
    from nnlab.kinds import get_kind
    if not prune:
        for flag, value in (("--prune-startup", startup), ("--prune-warmup", warmup)):
            if value is not None:
                raise ConfigError(f"{flag} is a setting of --prune; add --prune")
        return None
    kind = get_kind(config.kind)
    if not kind.supports("resume"):
        raise ConfigError(f"--prune: recipe {config.recipe!r} trains a {kind.what}, which trains in seconds and "
                          "cannot stop and resume after each epoch; drop --prune")
    startup = 5 if startup is None else startup
    warmup = 1 if warmup is None else warmup
    if startup < 0 or warmup < 1:
        raise ConfigError(f"--prune-startup must be >= 0 and --prune-warmup >= 1 (epochs), got {startup} and "
                          f"{warmup}")
    return {"pruner": "median", "startup": startup, "warmup": warmup}


def new_plan(recipe: str, axes: list[Axis], seeds: int, search: str, trials: int | None, metric: str,
          fixed: dict[str, Any], first_seed: int, out: str | Path | None, storage: str | None, study: str | None,
          variants: dict[str, dict[str, Any]] | None = None, kind: str = "sweep",
          prune: dict[str, Any] | None = None) -> Plan:
    if not metric.startswith(("valid_", "train_")):
        raise ConfigError(f"--metric {metric}: rank by a validation metric (valid_acc, valid_loss, ...); "
                          "the test metric is reported for the chosen setting only")
    plan = Plan(recipe, axes, list(range(first_seed, first_seed + seeds)), search, trials, metric, fixed,
                Path("."), "", "", variants, kind, prune)
    digest = hashlib.sha1(json.dumps(plan.signature(), sort_keys=True).encode()).hexdigest()[:8]
    plan.out = Path(out) if out else Path("runs") / f"{kind}-{recipe}-{digest}"
    plan.storage = storage or f"sqlite:///{(plan.out / 'sweep.db').resolve()}"
    plan.study = study or plan.out.name
    return plan


# --- the report -------------------------------------------------------------------------------------

def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def trial_rows(plan: Plan, study: Any) -> list[dict[str, Any]]:
    """One row per finished job (slot, seed), from the study alone: trained in full, or pruned (its
    ``value`` then the last epoch's, ``pruned_epoch`` that epoch; ``None`` for a seed skipped untrained)."""
    import optuna
    rows, seen = [], set()
    states = optuna.trial.TrialState
    for trial in study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED)):
        job = (trial.user_attrs.get("slot"), trial.user_attrs.get("seed"))
        if job in seen:
            continue
        seen.add(job)
        rows.append({"trial": trial.number, "setting": plan.label(trial.params), "params": dict(trial.params),
                     "seed": trial.user_attrs.get("seed"), "value": trial.value,
                     "seconds": trial.user_attrs.get("seconds"), "test_metric": trial.user_attrs.get("test_metric"),
                     "test_value": trial.user_attrs.get("test_value"), "run_dir": trial.user_attrs.get("run_dir"),
                     "pruned": trial.state == states.PRUNED,
                     "pruned_epoch": trial.last_step if trial.state == states.PRUNED else None})
    return rows


def settings_table(plan: Plan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The settings ranked by their mean metric over the seeds trained in full (best first); a setting
    with a pruned seed comes after all the others (``pruned``: how many seeds were)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["setting"], []).append(row)
    table = []
    for label, members in groups.items():
        full = [m for m in members if not m.get("pruned")]
        mean, std = mean_std([m["value"] for m in full]) if full else (None, None)
        seconds = [m["seconds"] for m in members if m["seconds"] is not None]
        table.append({"setting": label, "params": members[0]["params"], "mean": mean, "std": std, "n": len(full),
                      "seeds": sorted(m["seed"] for m in full), "pruned": len(members) - len(full),
                      "seconds": sum(seconds) / len(seconds) if seconds else None})
    sign = -1.0 if plan.direction == "maximize" else 1.0
    table.sort(key=lambda r: (r["pruned"] > 0, r["mean"] is None, sign * (r["mean"] or 0.0)))
    return table


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> Path:
    import csv
    import io
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, text.getvalue().encode("utf-8"))


def settings_figure(plan: Plan, table: list[dict[str, Any]], rows: list[dict[str, Any]]) -> Figure:
    """The metric per setting (mean with a ±1 std error bar, each seed a dot; a pruned seed a cross at its
    last epoch's value), best first (a sweep's ``sweep.png``)."""
    from matplotlib.figure import Figure  # here, not at the top: most commands draw nothing
    fig = Figure(figsize=(max(6.0, 0.9 * len(table) + 2), 4.5), layout="tight")
    ax = fig.subplots()
    for x, setting in enumerate(table):
        if setting["mean"] is not None:
            ax.errorbar([x], [setting["mean"]], yerr=[setting["std"]], fmt="o", color="C0", capsize=4)
        members = [r for r in rows if r["setting"] == setting["setting"] and r["value"] is not None]
        for pruned, marker, color in ((False, ".", "C1"), (True, "x", "C3")):
            values = [r["value"] for r in members if bool(r.get("pruned")) == pruned]
            ax.plot([x] * len(values), values, marker, color=color, alpha=0.6)
    ax.set_xticks(range(len(table)), [s["setting"].replace(" ", "\n") + ("\n(pruned)" if s["pruned"] else "")
                                      for s in table], fontsize=7)
    ax.set_ylabel(f"{plan.metric} (mean ± std over seeds; dots: seeds)" + ("; x: pruned" if plan.prune else ""))
    ax.set_title(f"{plan.kind} {plan.recipe}: {len(table)} settings x {len(plan.seeds)} seeds")
    ax.grid(alpha=0.3, axis="y")
    return fig


def report(plan: Plan, study: Any) -> dict[str, Any]:
    """Rank the finished settings; write ``results.csv``, ``trials.csv``, ``sweep.png``, ``summary.json``."""
    from nnlab.kit.rundir import write_json
    rows = trial_rows(plan, study)
    table = settings_table(plan, rows)
    keys = [axis.key for axis in plan.axes]
    flat = [{**{k: s["params"].get(k) for k in keys}, **{k: v for k, v in s.items() if k != "params"}}
            for s in table]
    pruned = ["pruned"] if plan.prune else []
    files = {"results": str(write_csv(plan.out / "results.csv", flat, keys + ["setting", "mean", "std", "n",
                                                                             *pruned, "seconds"])),
             "trials": str(write_csv(plan.out / "trials.csv", [{**r["params"], **r} for r in rows],
                                     ["trial"] + keys + ["seed", "value", "seconds", "run_dir"]
                                     + (["pruned", "pruned_epoch"] if plan.prune else [])))}
    if table:
        files["plot"] = str(save_figure(settings_figure(plan, table, rows), plan.out / "sweep.png"))
    best = None
    if table and table[0]["mean"] is not None and not table[0]["pruned"]:
        top = table[0]
        tests = [r["test_value"] for r in rows if r["setting"] == top["setting"] and r["test_value"] is not None]
        test_metric = next((r["test_metric"] for r in rows if r["test_metric"]), None)
        best = {**top, "test_metric": test_metric,
                **(dict(zip(("test_mean", "test_std"), mean_std(tests))) if tests else {}), "test_n": len(tests)}
    summary = {"recipe": plan.recipe, "search": plan.search, "metric": plan.metric, "direction": plan.direction,
               "seeds": plan.seeds, "grid": [axis.describe() for axis in plan.axes], "overrides": plan.fixed,
               "out": str(plan.out), "storage": hide_password(plan.storage), "study": plan.study,
               "trials_done": len(rows), "trials_planned": plan.planned(), "complete": len(rows) >= plan.planned(),
               "settings": table, "best": best, "files": files}
    if plan.prune:
        summary.update(prune=plan.prune, trials_pruned=sum(1 for r in rows if r["pruned"]))
    summary["files"]["summary"] = str(plan.out / "summary.json")
    write_json(plan.out / "summary.json", summary)
    return summary


def sweep(recipe: str, grid: list[str], seeds: int = 1, search: str = "grid", trials: int | None = None,
          metric: str | None = None, out: str | Path | None = None, storage: str | None = None,
          study: str | None = None, workers: int = 1, overrides: dict[str, Any] | None = None,
          stream: TextIO | None = None, prune: bool = False, prune_startup: int | None = None,
          prune_warmup: int | None = None) -> dict[str, Any]:
    """Run (or continue) the sweep of ``recipe`` over ``grid`` with ``seeds`` seeds (median pruning with
    ``prune``); returns the report."""
    plan = make_plan(recipe, grid, seeds, search, trials, metric, out, storage, study, overrides, prune,
                     prune_startup, prune_warmup)
    return execute(plan, workers, stream)


def execute(plan: Plan, workers: int = 1, stream: TextIO | None = None) -> dict[str, Any]:
    """Open (or create and plan) the study, work on it with ``workers`` processes, report."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    plan.out.mkdir(parents=True, exist_ok=True)
    study = open_study(plan, open_storage(plan.storage))
    run_workers(plan, workers, stream)
    return report(plan, study)


def format_report(summary: dict[str, Any]) -> str:
    """The terminal table: rank, setting, metric mean ± std, n, seconds; then the chosen setting's test metric."""
    metric = summary["metric"]
    head = ("rank", "setting", f"{metric} (mean ± std)", "n", "seconds")
    table = [head] + [(str(i), s["setting"], f"{s['mean']:.4f} ± {s['std']:.4f}" if s["mean"] is not None else "-",
                       str(s["n"]) + (f" (+{s['pruned']} pruned)" if s.get("pruned") else ""),
                       f"{s['seconds']:.1f}" if s["seconds"] is not None else "-")
                      for i, s in enumerate(summary["settings"], 1)]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    pruned = f", {summary['trials_pruned']} pruned" if summary.get("prune") else ""
    lines = [f"{summary['recipe']}: {summary['trials_done']} of {summary['trials_planned']} trials{pruned} "
             f"({summary['search']}, seeds {', '.join(map(str, summary['seeds']))}), ranked by {metric}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    best = summary["best"]
    if best and best.get("test_metric") and "test_mean" in best:
        lines.append(f"chosen: {best['setting']}: {best['test_metric']} {best['test_mean']:.4f} ± "
                     f"{best['test_std']:.4f} over {best['test_n']} seeds")
    if not summary["complete"]:
        lines.append(f"not finished: run the same command again to continue ({summary['storage']}, "
                     f"study {summary['study']})")
    lines.append("files: " + ", ".join(summary["files"].values()))
    return "\n".join(lines)
