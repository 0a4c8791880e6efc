"""The char LSTM against the char transformer on Tiny Shakespeare, same data, same time budget, one process.

Issue 16's target: the better of the two reaches <= 1.40 nats/char on the validation split (the
text's last 10%) in 600 s of training on the 2-core CPU. Trains the ``shakespeare-lstm`` and
``shakespeare-transformer`` recipes one after the other with the same ``--time-budget`` and
prints one JSON object: per model the best validation loss (nats/char, as training measured it,
and again in fp32 from ``best.pt``), bits/char, characters per second, steps, epochs, the
validation curve (elapsed seconds, loss), a short sample; which model won and whether the
target is met; the host's CPU, whether it has AMX/AVX512-BF16, and the load average before and
after. ``--lstm-set``/``--transformer-set`` pass overrides (tuning runs).

    flock /tmp/nnlab-bench.lock python benchmarks/charlm_lstm_vs_transformer.py [--budget 600]
        [--only lstm|transformer] [--lstm-set KEY=VALUE ...] [--transformer-set KEY=VALUE ...] [--keep DIR]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from nnlab.config import parse_set_args
from nnlab.kinds import charlm
from nnlab.recipes import train

RECIPES = {"lstm": "shakespeare-lstm", "transformer": "shakespeare-transformer"}
TARGET = 1.40


def cpu_flags() -> dict[str, bool]:
    """Whether the CPU computes bf16 natively (what bf16 autocast's speed depends on)."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo", encoding="utf-8")
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    return {"amx_tile": "amx_tile" in flags, "avx512_bf16": "avx512_bf16" in flags}


def measure(name: str, budget: float, overrides: dict[str, object], run_dir: Path) -> dict[str, object]:
    """Train ``RECIPES[name]`` for ``budget`` seconds into ``run_dir``; its numbers."""
    log = io.StringIO()
    summary = train(RECIPES[name], out=run_dir, overrides={"time_budget": budget, **overrides}, stream=log)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    elapsed, curve = 0.0, []
    for row in rows:
        elapsed += row["seconds"]
        curve.append([round(elapsed, 1), round(row["valid_loss"], 4)])
    fp32 = charlm.evaluate(run_dir, precision="fp32")["valid_loss"]
    text = charlm.sample(run_dir, prime="ROMEO:", length=200, temperature=0.8, seed=1)["text"]
    return {"recipe": RECIPES[name], "overrides": overrides, "valid_loss": round(summary["valid_loss"], 4),
            "valid_loss_fp32": round(fp32, 4), "valid_bpc": round(summary["valid_bpc"], 4),
            "valid_acc": round(summary["valid_acc"], 4), "chars_per_s": summary["chars_per_s"],
            "steps": summary["steps"], "epochs": summary["epochs"], "train_seconds": summary["train_seconds"],
            "parameters": summary["parameters"], "precision": summary["precision"], "curve": curve,
            "sample": text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of training per model (default 600)")
    parser.add_argument("--only", choices=list(RECIPES), help="train one of the two (tuning)")
    parser.add_argument("--lstm-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--transformer-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep", metavar="DIR", help="keep the run directories here (default: a temp dir)")
    args = parser.parse_args()
    overrides = {"lstm": parse_set_args(args.lstm_set), "transformer": parse_set_args(args.transformer_set)}
    names = [args.only] if args.only else list(RECIPES)
    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for name in names:
            results[name] = measure(name, args.budget, overrides[name], root / f"{name}-{stamp}")
    best = min(results, key=lambda n: results[n]["valid_loss"])
    out = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "budget_s": args.budget, **results,
           "better": best, "best_valid_loss": results[best]["valid_loss"], "target": TARGET,
           "target_met": results[best]["valid_loss"] <= TARGET, "cpu": _cpu_name(), **cpu_flags(),
           "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if len(results) == 2:
        out["speed_ratio_transformer_to_lstm"] = round(results["transformer"]["chars_per_s"]
                                                       / results["lstm"]["chars_per_s"], 3)
    print(json.dumps(out, indent=1))


def _cpu_name() -> str:
    from nnlab.kit.rundir import environment
    return environment()["hardware"]["cpu"]


if __name__ == "__main__":
    main()
