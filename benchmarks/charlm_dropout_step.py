"""The char LSTM's training step with per-character dropout against locked dropout, one process.

Builds the ``shakespeare-lstm`` recipe's model (2x512 LSTM, dropout 0.25) both ways
(``locked_dropout`` off and on), times full training steps (in the precision the recipe's
``precision=auto`` resolves to here, through nnlab's own autocast; AdamW, clipping) on random windows of the recipe's
batch, alternating the two so that a drifting host affects both alike, and prints one JSON
object: characters/s of each round, the medians, their ratio, and the host.

    flock /tmp/nnlab-bench.lock python benchmarks/charlm_dropout_step.py [--rounds 3] [--steps 12]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from nnlab.engine.learner import autocast, resolve_precision
from nnlab.kinds.charlm import model_args
from nnlab.kit.rundir import environment
from nnlab.models import create_model
from nnlab.models.rnn import TruncatedBPTT
from nnlab.recipes import get_recipe


def chars_per_s(locked: bool, steps: int, precision: str) -> float:
    config = get_recipe("shakespeare-lstm").config
    args = {**model_args(config, 65), "locked_dropout": locked}
    torch.manual_seed(0)
    model = TruncatedBPTT(create_model("char_rnn", **args)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    x = torch.randint(0, 65, (config.batch_size, config.bptt))
    y = torch.randint(0, 65, (config.batch_size * config.bptt,))

    def step() -> None:
        with autocast(torch.device("cpu"), precision):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip or 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * x.numel() / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    precision = resolve_precision(get_recipe("shakespeare-lstm").config.precision, torch.device("cpu"))
    load_before = os.getloadavg()
    rounds: dict[str, list[float]] = {"per_character": [], "locked": []}
    for _ in range(args.rounds):
        for name, locked in (("per_character", False), ("locked", True)):
            rounds[name].append(round(chars_per_s(locked, args.steps, precision), 1))
    medians = {name: statistics.median(values) for name, values in rounds.items()}
    print(json.dumps({"command": "python benchmarks/charlm_dropout_step.py " + f"--rounds {args.rounds} --steps {args.steps}",
                      "chars_per_s": rounds, "median": medians,
                      "locked_over_per_character": round(medians["locked"] / medians["per_character"], 3),
                      "precision": precision, "hardware": environment()["hardware"],
                      "load_before": [round(v, 2) for v in load_before],
                      "load_after": [round(v, 2) for v in os.getloadavg()],
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))


if __name__ == "__main__":
    main()
