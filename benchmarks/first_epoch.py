"""Where fashion-cnn's first epoch spends the time its later epochs do not: counted, then timed.

Runs the real training path (the image kind's ``prepare``, ``build_model``, the kit's
``train_model`` with its progress, metrics and checkpoint callbacks) in a fresh child process, so
that torch's lazy imports, oneDNN's kernel JIT and the allocator all start cold, as they do for
``nnlab train``. A callback records every training step's wall and CPU time, the page faults
(``ru_minflt``: memory the allocator took from the kernel), the modules imported and the
validation pass of each epoch. A second child runs the same with ``ONEDNN_VERBOSE=profile``
and counts oneDNN's primitive creations per step (``cache_miss``: a new kernel generated;
``cache_hit``: a descriptor built again and found in oneDNN's cache) and its weight reorders.

The parent prints one JSON object: per epoch, the first step, steps 2-10 and the rest (mean ms
per step), validation, and the excess of epoch 1 over epoch 2 split into those parts, for the
new path (``Learner.fit``'s ``hold_freed_memory``) and the old (glibc's default thresholds) in
turn, ``--repeats`` times; ``brief`` gives their means.

    flock /tmp/nnlab-bench.lock .venv/bin/python benchmarks/first_epoch.py [--share 0.3] [--threads 1] [--repeats 3]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

MARK = "=== nnlab-first-epoch"


def child(args: argparse.Namespace) -> None:
    """The training run, instrumented; prints one JSON line of per-step records (and markers for ONEDNN_VERBOSE)."""
    started = time.perf_counter()
    modules_before = len(sys.modules)
    import torch

    from nnlab.engine.learner import Callback
    from nnlab.kinds import image
    from nnlab.kit.run import Spec, start_run, train_model
    from nnlab.recipes import get_recipe
    import_s = time.perf_counter() - started
    import_modules = len(sys.modules) - modules_before

    config = get_recipe(args.recipe).config
    config.epochs, config.time_budget, config.threads = args.epochs, None, args.threads
    config.limit_train_batches, config.tensorboard, config.plots = args.share, False, False
    if args.variant:
        for item in args.variant.split(";"):
            key, _, value = item.partition("=")
            setattr(config, key, json.loads(value))
    if args.malloc == "glibc":  # the old path: glibc's own thresholds
        import nnlab.engine.learner
        nnlab.engine.learner.hold_freed_memory = lambda: False
    marks = os.environ.get("ONEDNN_VERBOSE") is not None

    def mark(label: str) -> None:
        if marks:
            print(f"{MARK} {label}", flush=True)

    class StepClock(Callback):
        order = -100

        def __init__(self) -> None:
            self.rows: list[dict] = []

        def _now(self) -> tuple[float, float, int, int]:
            return (time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt,
                    len(sys.modules))

        def before_batch(self) -> None:
            self.t = self._now()
            mark(f"step {self.learner.epoch} {self.learner.batch_index}")

        def after_batch(self) -> None:
            self._record("step", self.t, batch=self.learner.batch_index)

        def after_train(self) -> None:
            self.t = self._now()
            mark(f"valid {self.learner.epoch}")

        def after_validate(self) -> None:
            self._record("valid", self.t)
            mark(f"after {self.learner.epoch}")

        def after_epoch(self) -> None:
            mark(f"next {self.learner.epoch}")

        def _record(self, what: str, since: tuple, **extra) -> None:
            now = self._now()
            self.rows.append({"what": what, "epoch": self.learner.epoch, "wall": now[0] - since[0],
                              "cpu": now[1] - since[1], "faults": now[2] - since[2], "modules": now[3] - since[3],
                              **extra})

    with tempfile.TemporaryDirectory() as out:
        start = start_run(config, out=os.path.join(out, "run"), force=True)
        t0 = time.perf_counter()
        prepared = image.prepare(config, device=start.device)
        model, _ = image.build_model(config, len(prepared.data.classes))
        clock = StepClock()
        spec = Spec(model, prepared.train, prepared.valid,
                    torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
                    saved=image.saved(config, prepared.data), generator=prepared.generator, epochs=config.epochs,
                    channels_last=config.channels_last, callbacks=[clock])
        prepare_s = time.perf_counter() - t0
        with open(os.devnull, "w") as devnull:
            trained = train_model(start, spec, devnull)
        start.close()
    print(json.dumps({"import_s": import_s, "import_modules": import_modules, "prepare_s": prepare_s,
                      "epochs": [row["seconds"] for row in trained.history], "rows": clock.rows,
                      "threads": torch.get_num_threads(),
                      "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}), flush=True)


def run_child(args: argparse.Namespace, verbose: bool, malloc: str) -> tuple[dict, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ONEDNN_", "MALLOC_"))}
    if verbose:
        env["ONEDNN_VERBOSE"] = "profile"
    command = [sys.executable, __file__, "--child", "--recipe", args.recipe, "--epochs", str(args.epochs),
               "--share", str(args.share), "--threads", str(args.threads), "--malloc", malloc] + (["--variant", args.variant] if args.variant else [])
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    last = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
    return json.loads(last), done.stdout


def onednn_counts(stdout: str) -> dict:
    """Creations (miss / hit) and executions of oneDNN primitives per phase: the first step, each later
    step of epoch 1 and of epoch 2 (mean), each validation; plus the distinct shapes that missed."""
    phase = "setup"
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    steps: collections.Counter = collections.Counter()
    missed: dict[str, list[str]] = collections.defaultdict(list)
    for line in stdout.splitlines():
        if line.startswith(MARK):
            words = line.split()[2:]
            if words[0] == "step":
                epoch, batch = int(words[1]), int(words[2])
                phase = f"epoch {epoch + 1} step 1" if batch == 0 else f"epoch {epoch + 1} later steps"
                steps[phase] += 1
            elif words[0] == "valid":
                phase = f"epoch {int(words[1]) + 1} validation"
            else:
                phase = "between epochs"
            continue
        parts = line.split(",")
        if len(parts) > 6 and parts[0] == "onednn_verbose" and parts[2] == "primitive":
            event = parts[3]
            counts[phase][f"{event}"] += 1
            if event == "exec" and parts[5] == "reorder":
                counts[phase]["reorder exec"] += 1
            if event == "create:cache_miss":
                missed[phase].append(f"{parts[5]} {parts[-2]}")
    result = {}
    for phase, counter in counts.items():
        n = max(steps.get(phase, 1), 1)
        result[phase] = {k: round(v / n, 2) for k, v in counter.items()}
        if steps.get(phase, 0) > 1:
            result[phase]["per"] = f"mean of {n} steps"
        if missed.get(phase):
            result[phase]["missed"] = collections.Counter(missed[phase]).most_common(12)
    return result


def summarize(record: dict) -> dict:
    """Per epoch: first step, steps 2-10, the rest (ms per step, wall and CPU), validation, end of epoch."""
    out: dict = {}
    by_epoch: dict[int, list[dict]] = collections.defaultdict(list)
    for row in record["rows"]:
        by_epoch[row["epoch"]].append(row)
    for epoch, rows in sorted(by_epoch.items()):
        steps = [r for r in rows if r["what"] == "step"]
        parts = {"step 1": steps[:1], "steps 2-10": steps[1:10], "steps 11+": steps[10:]}
        summary = {}
        for name, chosen in parts.items():
            if chosen:
                summary[name] = {"n": len(chosen),
                                 "wall_ms": round(1000 * sum(r["wall"] for r in chosen) / len(chosen), 2),
                                 "cpu_ms": round(1000 * sum(r["cpu"] for r in chosen) / len(chosen), 2),
                                 "faults": round(sum(r["faults"] for r in chosen) / len(chosen), 1),
                                 "modules_imported": sum(r["modules"] for r in chosen)}
        quarter = max(len(steps) // 4, 1)
        summary["quarters_wall_ms"] = [round(1000 * sum(r["wall"] for r in steps[i:i + quarter]) / len(steps[i:i + quarter]), 1)
                                       for i in range(0, quarter * 4, quarter) if steps[i:i + quarter]]
        steps_cpu = sum(r["cpu"] for r in steps)
        summary["train_cpu_s"] = round(steps_cpu, 3)
        summary["train_wall_s"] = round(sum(r["wall"] for r in steps), 3)
        for r in rows:
            if r["what"] == "valid":
                summary[r["what"]] = {"wall_ms": round(1000 * r["wall"], 1), "cpu_ms": round(1000 * r["cpu"], 1),
                                      "faults": r["faults"], "modules_imported": r["modules"]}
        summary["epoch_seconds"] = round(record["epochs"][epoch], 3)
        out[f"epoch {epoch + 1}"] = summary
    first, second = out.get("epoch 1"), out.get("epoch 2")
    if first and second:
        later = second["steps 11+"]["cpu_ms"]
        excess = {
            "step 1": first["step 1"]["cpu_ms"] - later,
            "steps 2-10": first["steps 2-10"]["n"] * (first["steps 2-10"]["cpu_ms"] - later),
            "steps 11+": first["steps 11+"]["n"] * (first["steps 11+"]["cpu_ms"] - later),
            "validation": first["valid"]["cpu_ms"] - second["valid"]["cpu_ms"],
        }
        out["excess_cpu_ms_epoch1_over_epoch2"] = {k: round(v, 1) for k, v in excess.items()}
        out["excess_cpu_ms_epoch1_over_epoch2"]["total"] = round(sum(excess.values()), 1)
    return out


def brief(timed: list[dict]) -> dict:
    """Per malloc path, the mean over repeats: each epoch's training CPU s, later-step CPU ms and page
    faults, validation CPU ms, and epoch 1's excess over epoch 2."""
    out = {}
    for malloc in dict.fromkeys(t["malloc"] for t in timed):
        runs = [t for t in timed if t["malloc"] == malloc]

        def mean(get) -> float:
            return round(sum(get(t) for t in runs) / len(runs), 2)
        row = {"runs": len(runs)}
        for epoch in ("epoch 1", "epoch 2"):
            row[epoch] = {"train_cpu_s": mean(lambda t: t[epoch]["train_cpu_s"]),
                          "step_cpu_ms (11+)": mean(lambda t: t[epoch]["steps 11+"]["cpu_ms"]),
                          "faults_per_step (11+)": mean(lambda t: t[epoch]["steps 11+"]["faults"]),
                          "valid_cpu_ms": mean(lambda t: t[epoch]["valid"]["cpu_ms"]),
                          "valid_faults": mean(lambda t: t[epoch]["valid"]["faults"])}
        row["excess_cpu_ms"] = mean(lambda t: t["excess_cpu_ms_epoch1_over_epoch2"]["total"])
        out[malloc] = row
    return out


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fashion-cnn")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--share", type=float, default=0.3, help="limit_train_batches (0.3: 136 steps an epoch)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="timed children (the oneDNN count runs once)")
    parser.add_argument("--variant", help="config changes, key=JSON;key=JSON")
    parser.add_argument("--malloc", default="held,glibc",
                        help="held (Learner.fit's hold_freed_memory), glibc (its default thresholds), or both, "
                             "interleaved")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    before = load()
    timed = []
    paths = args.malloc.split(",")
    for repeat in range(args.repeats):
        for malloc in paths:  # interleaved: old and new path in turn
            record, _ = run_child(args, False, malloc)
            timed.append({"malloc": malloc, "repeat": repeat, "load": load(),
                          "import_s": round(record["import_s"], 3), "import_modules": record["import_modules"],
                          "prepare_s": round(record["prepare_s"], 3), "max_rss_mib": record["max_rss_mib"],
                          **summarize(record)})
    onednn = {malloc: onednn_counts(run_child(args, True, malloc)[1]) for malloc in paths[:1]}
    import torch
    print(json.dumps({"command": "benchmarks/first_epoch.py " + " ".join(sys.argv[1:]),
                      "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "host": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t"),
                      "cores": os.cpu_count(), "torch": torch.__version__, "load_before": before, "load_after": load(),
                      "brief": brief(timed), "timed": timed, "onednn": onednn}, indent=1))


if __name__ == "__main__":
    main()
