"""``nnlab speedrun``: how long each lesson takes to a target on held-out data, seed by seed, and
against the tutorial code a learner would copy.

A task is a dataset, a metric on held-out data, a target and a fixed protocol: its speedrun recipe
(``nnlab.recipes``: fixed length, chosen beforehand on validation). The recipe never stops when the
test metric crosses the target: that would choose on test data. Each seed trains the recipe once, and
the time is the run's ``train_seconds``: first training batch to the final weights, the validation
passes the recipe uses to pick its epoch included; data loading (``load_seconds``) and the final test
pass (``scoring_seconds``) are reported apart. ``--baselines`` also trains, in the same process and
threads, the task's tutorial loop (``nnlab.commands.speedrun_baselines``) until the target or its
cap, and gives the ratio of the two measured times: baseline seconds / nnlab's mean seconds.

The table goes to the terminal (``--json``: one JSON object), and ``OUT/speedrun.json`` keeps it with
the host (CPU model, cores, bf16/AMX flags), torch, the load before and after, the date and the
command; the runs themselves are ``OUT/TASK/seed-S``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from nnlab.engine.choices import DEVICES
from nnlab.errors import ConfigError, DataError

HELP = ("train each task's speedrun recipe with each seed and report its time to the target on held-out data "
        "(mean and spread); --baselines: against the tutorial code, in the same process")


@dataclass(frozen=True)
class Baseline:
    """The tutorial loop of a task: ``function`` names one of ``nnlab.commands.speedrun_baselines``; it
    trains until the target, ``max_epochs`` (the tutorial's own length) or ``cap_s`` seconds of training."""

    name: str
    about: str
    function: str
    cap_s: float
    max_epochs: int


@dataclass(frozen=True)
class Task:
    """A dataset, the summary's ``metric`` on held-out data, its ``target``, and the recipe that is the
    protocol. ``missing(config)`` says why the recipe's data is absent (``None``: present)."""

    name: str
    recipe: str
    metric: str
    target: float
    about: str
    missing: Callable[[Any], str | None]
    baseline: Baseline | None = None
    lower_is_better: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


def image_data_missing(config: Any) -> str | None:
    """Why the image dataset of ``config`` is not here (it is not downloaded for a speedrun), or None."""
    from nnlab.data.sources import locate
    from nnlab.data.vision import dataset_info
    try:
        locate(dataset_info(config.dataset).spec, config.data, download=False)
    except DataError as error:
        return str(error)
    return None


def names_data_missing(config: Any) -> str | None:
    """Why the surnames are not here, or None."""
    from nnlab.data.names import load_names
    try:
        load_names(config.data)
    except DataError as error:
        return str(error)
    return None


def text_data_missing(config: Any) -> str | None:
    """Why the text (Tiny Shakespeare, or the config's file) is not here, or None."""
    from nnlab.data.sources import locate
    from nnlab.data.text import SHAKESPEARE
    if config.data is not None:
        return None if Path(config.data).is_file() else f"--data {config.data}: no such text file"
    try:
        locate(SHAKESPEARE, download=False)
    except DataError as error:
        return str(error)
    return None


def generated(config: Any) -> str | None:
    """Generated data is always here."""
    return None


EXAMPLES = Baseline("examples-mnist", "pytorch/examples mnist/main.py: torchvision dataset, DataLoader of 64, two convs, "
                    "Adadelta lr 1.0, StepLR 0.7 (14 epochs)", "examples_mnist", cap_s=900.0, max_epochs=14)
NAMES = Baseline("names-tutorial", "PyTorch names tutorial: one-hot letters, nn.RNN of 128, a name at a time, SGD lr "
                 "0.15 over 64-name batches (27 epochs)", "names_tutorial", cap_s=600.0, max_epochs=27)
WORD_LM = Baseline("word-lm", "pytorch/examples word_language_model on characters: 2x200 LSTM, 20 x 35 windows, SGD "
                   "lr 20 / 4 on a plateau, clip 0.25 (40 epochs)", "word_language_model", cap_s=1200.0, max_epochs=40)
SEQ2SEQ = Baseline("seq2seq-tutorial", "PyTorch seq2seq tutorial: GRU encoder and Bahdanau-attention decoder of 128, "
                   "batches of 32, Adam 1e-3 (80 epochs)", "seq2seq_tutorial", cap_s=900.0, max_epochs=80)

TASKS: dict[str, Task] = {}


def add_task(task: Task) -> Task:
    """Register ``task`` under its name (a later one of the same name replaces it)."""
    TASKS[task.name] = task
    return task


add_task(Task("fashion-92", "fashion-cnn-92", "test_accuracy", 0.92,
              "Fashion-MNIST, accuracy on the 10,000 test images", image_data_missing, EXAMPLES))
add_task(Task("fashion-94", "fashion-cnn-94", "test_accuracy", 0.94,
              "Fashion-MNIST, accuracy on the 10,000 test images", image_data_missing, EXAMPLES))
add_task(Task("mnist-99", "mnist-cnn-99", "test_accuracy", 0.99,
              "MNIST digits, accuracy on the 10,000 test images", image_data_missing, EXAMPLES))
add_task(Task("names-84", "names-cnn-84", "test_accuracy", 0.84,
              "surnames -> 18 languages, leak-free split (the seed draws it), test accuracy", names_data_missing, NAMES))
add_task(Task("shakespeare-1.50", "shakespeare-lstm-150", "valid_loss", 1.50,
              "Tiny Shakespeare characters, validation nats/char (the last 10%, char-rnn's split)",
              text_data_missing, WORD_LM, lower_is_better=True))
add_task(Task("shakespeare-1.40", "shakespeare-lstm-140", "valid_loss", 1.40,
              "Tiny Shakespeare characters, validation nats/char (the last 10%, char-rnn's split)",
              text_data_missing, WORD_LM, lower_is_better=True))
add_task(Task("translate-dates-99", "translate-dates-99", "test_exact_match", 0.99,
              "human-written dates -> ISO 8601, exact match on the held-out dates", generated, SEQ2SEQ))
add_task(Task("cifar10-94", "cifar10-resnet-94", "test_accuracy", 0.94,
              "CIFAR-10, accuracy on the 10,000 test images", image_data_missing))


def pick_tasks(names: Sequence[str]) -> list[Task]:
    """The tasks called ``names`` (all of them when none is named); an unknown name is a ``ConfigError``."""
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise ConfigError(f"speedrun: unknown task {unknown[0]!r}; the tasks are {', '.join(TASKS)}")
    return [TASKS[name] for name in dict.fromkeys(names)] if names else list(TASKS.values())


def cpu_flags() -> dict[str, Any]:
    """The CPU's model name (lscpu's, else /proc/cpuinfo's), its cores and its bf16/AMX flags."""
    model, flags = None, set()
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in listing.splitlines()
                      if line.startswith("Model name")), None)
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name") and model is None:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(),
            "bf16_amx_flags": sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"))}


def mean_spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), least and most of ``values``."""
    from nnlab.commands.sweep import mean_std
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "min": min(values), "max": max(values)}


def run_task(task: Task, seeds: int, baselines: bool, out: Path, overrides: dict[str, Any], baseline_cap: float | None,
             threads: int, stream: TextIO) -> dict[str, Any]:
    """Train ``task``'s recipe with each seed (into ``OUT/TASK/seed-S``), then its baseline where asked;
    the task's row of the table."""
    import torch

    from nnlab.commands import speedrun_baselines
    from nnlab.recipes import recipe_config, train
    first_seed = recipe_config(task.recipe, {**task.overrides, **overrides}).seed
    runs = []
    for seed in range(first_seed, first_seed + seeds):
        torch.set_num_threads(threads)  # a recipe may set its own; each run starts from the process's
        begin = time.perf_counter()
        summary = train(task.recipe, out=out / task.name / f"seed-{seed}", stream=stream, force=True,
                        overrides={**task.overrides, **overrides, "seed": seed})
        metric = summary[task.metric]
        runs.append({"seed": seed, "seconds": summary["train_seconds"], "load_seconds": summary["load_seconds"],
                     "scoring_seconds": summary["scoring_seconds"],
                     "wall_seconds": round(time.perf_counter() - begin, 3),
                     "metric": metric, "reached": speedrun_baselines.reached(metric, task.target, task.lower_is_better),
                     "epochs": summary["epochs"], "device": summary["device"], "run_dir": summary["run_dir"]})
        print(f"speedrun: {task.name} seed {seed}: {task.metric} {metric:.4f} after {summary['train_seconds']:.1f} s "
              "of training", file=sys.stderr, flush=True)
    seconds = mean_spread([run["seconds"] for run in runs])
    row: dict[str, Any] = {
        "task": task.name, "recipe": task.recipe, "about": task.about, "metric": task.metric, "target": task.target,
        "lower_is_better": task.lower_is_better, "seeds": seeds, "reached": sum(run["reached"] for run in runs),
        "seconds": seconds, "metric_value": mean_spread([run["metric"] for run in runs]),
        "load_seconds": mean_spread([run["load_seconds"] for run in runs]),
        "scoring_seconds": mean_spread([run["scoring_seconds"] for run in runs]), "runs": runs, "baseline": None,
        "ratio": None}
    if baselines and task.baseline is not None:
        base = task.baseline
        cap = base.cap_s if baseline_cap is None else baseline_cap
        config = recipe_config(task.recipe, {**task.overrides, **overrides, "seed": first_seed})
        torch.set_num_threads(threads)
        result = getattr(speedrun_baselines, base.function)(config, task.target, task.lower_is_better, cap,
                                                            base.max_epochs, torch.device(runs[0]["device"]))
        row["baseline"] = {"name": base.name, "about": base.about, "cap_s": cap, "max_epochs": base.max_epochs,
                           "threads": torch.get_num_threads(), **result}
        row["ratio"] = result["seconds"] / seconds["mean"] if seconds["mean"] > 0 else None
        # a baseline that stopped short of the target would have needed longer: its ratio is a floor
        row["ratio_is"] = "measured" if result["reached"] else f"a lower bound (stopped by its {result['stop']})"
        if row["reached"] < seeds:  # nnlab's time is then to its final metric, short of the target on some seeds
            row["ratio_is"] += f"; nnlab reached the target on {row['reached']} of {seeds} seeds"
        metric = "none" if result["metric"] is None else f"{result['metric']:.4f}"
        print(f"speedrun: {task.name} baseline {base.name}: {task.metric} {metric} after "
              f"{result['seconds']:.1f} s of training ({result['epochs']} epochs, stopped by its {result['stop']})",
              file=sys.stderr, flush=True)
    torch.set_num_threads(threads)
    return row


def speedrun(tasks: Sequence[str] = (), seeds: int = 3, baselines: bool = False, out: str | Path | None = None,
             device: str | None = None, baseline_cap: float | None = None, threads: int | None = None,
             stream: TextIO | None = None, command: str | None = None) -> dict[str, Any]:
    """Run ``tasks`` (default: every task), each recipe with ``seeds`` seeds and, with ``baselines``, its
    tutorial loop; write ``OUT/speedrun.json`` (default ``runs/speedrun-<timestamp>``) and return it.

    ``threads``: torch's threads for the whole speedrun, recipes and baselines alike (default: torch's
    own); a recipe that sets its own (translate-dates-99: 1) keeps it for its runs.

    An unknown task or ``seeds`` below 1 is a ``ConfigError`` before anything trains. A task whose
    data is absent is skipped with one line on stderr saying why and how to get it; when no task
    can run, that is a ``DataError``.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if baseline_cap is not None and baseline_cap < 0:
        raise ConfigError(f"--baseline-cap must be at least 0 seconds, got {baseline_cap:g}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    chosen = pick_tasks(tasks)
    from nnlab.recipes import recipe_config
    overrides: dict[str, Any] = {"plots": False, "tensorboard": False}  # outputs, not training
    if device is not None:
        overrides["device"] = device
    runnable, skipped = [], []
    for task in chosen:
        reason = task.missing(recipe_config(task.recipe, {**task.overrides, **overrides}))
        if reason is None:
            runnable.append(task)
        else:
            skipped.append({"task": task.name, "reason": reason})
    if not runnable:
        raise DataError("speedrun: nothing can run: " + "; ".join(f"{s['task']} skipped: {s['reason']}"
                                                                  for s in skipped))
    for s in skipped:
        print(f"nnlab speedrun: skipping {s['task']}: {s['reason']}", file=sys.stderr, flush=True)

    import torch

    from nnlab.kit.rundir import environment, write_json
    out = Path(out) if out is not None else Path("runs") / f"speedrun-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    before = torch.get_num_threads()
    threads = threads or before
    result: dict[str, Any] = {
        "command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "host": {**cpu_flags(), "torch_threads": threads}, "torch": torch.__version__,
        "load_before": [round(x, 2) for x in os.getloadavg()], "seeds": seeds, "baselines": baselines,
        "out": str(out), "tasks": [], "skipped": skipped}
    stream = stream if stream is not None else sys.stderr
    try:
        for task in runnable:
            result["tasks"].append(run_task(task, seeds, baselines, out, overrides, baseline_cap, threads, stream))
            write_json(out / "speedrun.json", result)  # what finished survives a long run cut short
    finally:
        torch.set_num_threads(before)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["environment"] = environment()
    write_json(out / "speedrun.json", result)
    return result


def _spread(stats: dict[str, float], digits: int) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """The speedrun as a terminal table: one line per task, then the host and where the results are."""
    host = result["host"]
    header = ("task", "recipe", "target", "reached", "metric", "train s", "load s", "scoring s", "baseline",
              "baseline s", "its metric", "ratio")
    lines = [header]
    for row in result["tasks"]:
        sign = "<=" if row["lower_is_better"] else ">="
        base = row["baseline"]
        ratio = "-" if row["ratio"] is None else f"{'>' if base and not base['reached'] else ''}{row['ratio']:.2f}x"
        lines.append((row["task"], row["recipe"], f"{sign} {row['target']:g}", f"{row['reached']}/{row['seeds']}",
                      _spread(row["metric_value"], 4), _spread(row["seconds"], 1),
                      f"{row['load_seconds']['mean']:.1f}", f"{row['scoring_seconds']['mean']:.1f}",
                      base["name"] if base else "-", f"{base['seconds']:.1f}" if base else "-",
                      f"{base['metric']:.4f}" if base and base["metric"] is not None else "-", ratio))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    text += [f"skipped {s['task']}: {s['reason']}" for s in result["skipped"]]
    flags = ", ".join(host["bf16_amx_flags"]) or "no bf16/AMX flags"
    text.append(f"host: {host['cpu']}, {host['cores']} cores ({flags}), torch {result['torch']}, "
                f"torch threads {host['torch_threads']}; load {result['load_before'][0]:.2f} -> "
                f"{result.get('load_after', ['?'])[0]}; {result['date']}")
    text.append(f"train s: first training batch to the final weights (validation included), mean ± std over "
                f"seeds; ratio: baseline s / nnlab's mean ('>': the baseline stopped short of the target). "
                f"Results: {Path(result['out']) / 'speedrun.json'}")
    return "\n".join(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``nnlab speedrun``'s arguments (``--json`` comes with every command)."""
    parser.add_argument("tasks", nargs="*", metavar="TASK", help=f"tasks to run (default: all): {', '.join(TASKS)}")
    parser.add_argument("--seeds", type=int, default=3, help="runs of each recipe, seeds S..S+N-1 from the recipe's seed S (default 3)")
    parser.add_argument("--baselines", action="store_true", help="also train each task's tutorial code, in this "
                        "process, until the target or its cap, and give the ratio of the times")
    parser.add_argument("--baseline-cap", type=float, metavar="S", dest="baseline_cap",
                        help="seconds of baseline training at most (default: each baseline's own, 600-1200)")
    parser.add_argument("--out", help="folder of the runs and speedrun.json (default runs/speedrun-<timestamp>)")
    parser.add_argument("--device", choices=DEVICES, help="where the recipes and baselines train")
    parser.add_argument("--threads", type=int, help="torch threads for the recipes and the baselines alike (default: "
                        "torch's; a recipe that sets its own keeps it)")


def cmd_speedrun(args: argparse.Namespace) -> None:
    """The ``nnlab speedrun`` command: run, then print the table (or the JSON object)."""
    result = speedrun(args.tasks, seeds=args.seeds, baselines=args.baselines, out=args.out, device=args.device,
                      baseline_cap=args.baseline_cap, threads=args.threads,
                      command="nnlab " + shlex.join(getattr(args, "argv", [])))
    print(json.dumps(result) if args.json else format_table(result), flush=True)

