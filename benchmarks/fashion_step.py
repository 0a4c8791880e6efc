"""fashion-cnn's training step, old path against each change, interleaved in one process.

Every variant is a Learner (the real loop: augmentation, normalization, autocast, backward,
AdamW, the running loss and accuracy sums) over the same random uint8 images, with the recipe's
model, optimizer, precision and batch size. Rounds run each variant for ``--block`` steps in turn
(the order rotated every round), so that a shared host's drift reaches all of them alike; a bf16
matmul yardstick (n = 2048) is timed in every round too. One thread and CPU time by default
(``--clock cpu``): what the core worked for this process, which other processes' load moves least.

Per variant: the median ms per step over the rounds, the median of its per-round ratio to
``shipped`` (the code before issue 32 part 3), the page faults per step and the step's GFLOP/s
(torch's FlopCounterMode) as a share of the yardstick. ``memory-given-back`` hands the heap's free
memory back to the kernel after every step (``malloc_trim``), as glibc's thresholds did through
fashion-cnn's first epoch before ``Learner.fit`` held it: what those page faults cost, in one process.
The last stdout line is JSON.

    flock /tmp/nnlab-bench.lock .venv/bin/python benchmarks/fashion_step.py [--rounds 12] [--block 10]
        [--variants shipped,now,adamw-fused] [--threads 1] [--clock cpu|wall]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import sys
import time
import types
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from nnlab.data.batches import TensorBatches, make_augment
from nnlab.engine.learner import Callback, Learner
from nnlab.engine.optim import create_optimizer
from nnlab.kit.rundir import environment
from nnlab.models import create_model
from nnlab.recipes import get_recipe

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def old_forward_head(self, features: torch.Tensor) -> torch.Tensor:
    """The cnn's head before issue 32 part 3: the adaptive max-pool runs even where it is the identity."""
    return self.head(self.pool(features))


@dataclass(frozen=True)
class Variant:
    """One way to run the step: a change to the model, the optimizer's own arguments."""

    patch: Callable[[torch.nn.Module], None] | None = None
    optimizer_args: dict = field(default_factory=dict)
    give_back: bool = False


class GiveBack(Callback):
    """glibc's ``malloc_trim(0)`` after every step: the heap's free memory goes back to the kernel, as glibc's
    own thresholds did in fashion-cnn's first epoch (before ``hold_freed_memory``); its page faults are counted."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None)

    def after_step(self) -> None:
        self.libc.malloc_trim(0)


def shipped(model: torch.nn.Module) -> None:
    model.forward_head = types.MethodType(old_forward_head, model)


VARIANTS = {
    "shipped": Variant(shipped),
    "now": Variant(),
    "adamw-foreach": Variant(optimizer_args={"foreach": True}),
    "adamw-fused": Variant(optimizer_args={"fused": True}),
    "shipped+adamw-fused": Variant(shipped, optimizer_args={"fused": True}),
    "memory-given-back": Variant(give_back=True),
}


def make_learner(recipe: str, variant: Variant, block: int) -> Learner:
    """The recipe's model (seed 0) and optimizer, training on ``block`` batches of random images per fit."""
    config = get_recipe(recipe).config
    torch.manual_seed(0)
    model = create_model(config.model, n_classes=10, **config.model_args)
    if variant.patch is not None:
        variant.patch(model)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (block * config.batch_size, 1, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (len(images),), generator=generator)
    batches = TensorBatches(images, labels, config.batch_size, mean=(0.286,), std=(0.353,), shuffle=True,
                            drop_last=True, generator=generator, augment=make_augment(config.augment),
                            channels_last=config.channels_last)
    optimizer = create_optimizer(config.optimizer, model, config.lr, config.weight_decay, config.momentum,
                                 args={**(config.optimizer_args or {}), **variant.optimizer_args})
    return Learner(model, batches, None, loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
                   optimizer=optimizer, precision="bf16", channels_last=config.channels_last,
                   callbacks=[GiveBack()] if variant.give_back else [])


def step_flops(learner: Learner) -> int:
    """FLOPs of one training step (forward and backward) of ``learner``'s model, counted by torch."""
    x, y = next(iter(learner.train_batches))
    with FlopCounterMode(display=False) as counter:
        with learner.autocast():
            loss = learner.loss_fn(learner.model(x), y)
        loss.backward()
    learner.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def bf16_matmul_gflops(clock: Callable[[], float], n: int = 2048, repeats: int = 4) -> float:
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    start = clock()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (clock() - start) / 1e9


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fashion-cnn")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--block", type=int, default=10, help="steps of each variant per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu")
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (with more threads, CPU time counts threads waiting)")
    names = [name for name in args.variants.split(",") if name]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if "shipped" not in names:
        names.insert(0, "shipped")
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    before, started = load(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    learners = {name: make_learner(args.recipe, VARIANTS[name], args.block) for name in names}
    flops = {name: step_flops(learner) for name, learner in learners.items()}
    for learner in learners.values():  # warm-up: kernels generated, the allocator at its working size
        learner.fit(1)
    ms: dict[str, list[float]] = {name: [] for name in names}
    faults = {name: 0 for name in names}
    yardstick = []
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            minflt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = clock()
            learners[name].fit(1)
            ms[name].append(1000 * (clock() - start) / args.block)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - minflt
        yardstick.append(bf16_matmul_gflops(clock))
    peak = statistics.median(yardstick)
    batch = get_recipe(args.recipe).config.batch_size
    rows = []
    for name in names:
        step_ms = statistics.median(ms[name])
        ratio = statistics.median(s / o for s, o in zip(ms["shipped"], ms[name]))
        gflops = flops[name] / step_ms / 1e6
        rows.append({"variant": name, "ms_per_step": round(step_ms, 2),
                     "ms_range": [round(min(ms[name]), 2), round(max(ms[name]), 2)],
                     "images_per_s": round(1000 * batch / step_ms), "speed_vs_shipped": round(ratio, 3),
                     "page_faults_per_step": round(faults[name] / (args.rounds * args.block), 1),
                     "step_gflop": round(flops[name] / 1e9, 3), "gflop_per_s": round(gflops, 1),
                     "of_bf16_matmul": round(gflops / peak, 3)})
    result = {"command": "benchmarks/fashion_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": started, "host": environment()["hardware"]["cpu"], "cores": os.cpu_count(),
              "torch": torch.__version__, "threads": args.threads, "clock": args.clock, "rounds": args.rounds,
              "block": args.block, "load_before": before, "load_after": load(),
              "bf16_matmul_gflop_per_s": {"median": round(peak, 1), "range": [round(min(yardstick), 1),
                                                                               round(max(yardstick), 1)]},
              "rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
