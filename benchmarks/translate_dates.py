"""Dates -> ISO 8601 (issue 16's target: >= 99% exact match on held-out dates in <= 2 minutes of training).

Trains the ``translate-dates`` recipe (or ``--recipe translate-eng-fra-5k``, or ``--attention luong``
for the other score) in this process and prints one JSON object: held-out exact match, BLEU and
chrF (greedy, and beam search where the recipe scores it), training seconds, pairs per second,
the host's CPU and its load average before and after, so the numbers can be compared.

    python benchmarks/translate_dates.py [--recipe translate-dates] [--attention bahdanau|luong] [--threads N]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time

from nnlab.config import parse_set_args
from nnlab.recipes import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="translate-dates")
    parser.add_argument("--attention", choices=["bahdanau", "luong"])
    parser.add_argument("--threads", type=int, help="torch threads (default: the recipe's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides")
    args = parser.parse_args()
    overrides: dict[str, object] = parse_set_args(args.set)
    for key in ("attention", "threads"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    load_before = os.getloadavg()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        summary = train(args.recipe, out=f"{out}/run", overrides=overrides, stream=io.StringIO())
    keys = [k for k in summary if k.startswith("test_")] + ["beam", "train_seconds", "epochs", "steps",
                                                              "pairs_per_s", "pairs", "attention", "dataset"]
    print(json.dumps({"recipe": args.recipe, "overrides": overrides, **{k: summary.get(k) for k in keys},
                      "examples": summary["examples"][:4], "wall_seconds": round(time.perf_counter() - start, 1),
                      "cpu": summary["hardware"]["cpu"], "torch_threads": summary["hardware"]["torch_threads"],
                      "load_before": [round(x, 2) for x in load_before],
                      "load_after": [round(x, 2) for x in os.getloadavg()],
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))


if __name__ == "__main__":
    main()
