"""Images/s of fashion-cnn's training step under each speed switch, in one process.

Each variant trains the recipe's model (random init, seeded) on a fixed set of real-shaped
batches for ``--steps`` timed steps after ``--warmup`` steps, in the order given, with the
plain fp32 eager channels-last step measured first *and last* (its two runs bound the
machine's drift). It also counts the step's FLOPs with torch's FlopCounterMode and measures
this machine's fp32 matmul GFLOP/s, so the table says how far from the hardware limit the
step runs. The last stdout line is JSON.

    .venv/bin/python benchmarks/engine_speed.py [--steps 60] [--variants fp32,bf16,...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from nnlab.engine.learner import autocast
from nnlab.engine.optim import create_optimizer
from nnlab.models import create_model
from nnlab.recipes import get_recipe
from nnlab.kit.rundir import environment

VARIANTS = {  # name: (precision, channels_last, compile, threads)
    "fp32": ("fp32", True, False, None),
    "fp32-contiguous": ("fp32", False, False, None),
    "bf16": ("bf16", True, False, None),
    "fp16": ("fp16", True, False, None),
    "compile": ("fp32", True, True, None),
    "bf16-compile": ("bf16", True, True, None),
    "bf16-contiguous": ("bf16", False, False, None),
    "threads-1": ("fp32", True, False, 1),
}


def make_step(precision: str, channels_last: bool, compile_model: bool, batch: int):
    """A closure running one training step of the recipe's model, and its batches."""
    config = get_recipe("fashion-cnn").config
    torch.manual_seed(0)
    model = create_model(config.model, n_classes=10, **config.model_args)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    runner = torch.compile(model) if compile_model else model
    optimizer = create_optimizer(config.optimizer, model, config.lr, config.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    scaler = torch.amp.GradScaler("cpu", enabled=precision == "fp16")
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, 1, 28, 28, generator=gen) for _ in range(8)]
    if channels_last:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    ys = [torch.randint(0, 10, (batch,), generator=gen) for _ in range(8)]
    device = torch.device("cpu")

    def step(i: int) -> None:
        with autocast(device, precision):
            loss = loss_fn(runner(xs[i % 8]).float(), ys[i % 8])
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return step, model


def images_per_s(name: str, steps: int, warmup: int, batch: int) -> dict:
    precision, channels_last, compile_model, threads = VARIANTS[name]
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        step, _ = make_step(precision, channels_last, compile_model, batch)
        start = time.perf_counter()
        for i in range(warmup):
            step(i)
        warm_s = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(steps):
            step(i)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    return {"variant": name, "images_per_s": round(steps * batch / seconds, 1), "warmup_s": round(warm_s, 2)}


def step_flops(batch: int) -> int:
    """FLOPs of one fp32 training step (forward + backward), counted by torch."""
    step, _ = make_step("fp32", False, False, batch)
    with FlopCounterMode(display=False) as counter:
        step(0)
    return counter.get_total_flops()


def matmul_gflops(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """This machine's matmul throughput in ``dtype`` (the practical peak for dense work).

    n = 2048: big enough to reach the cores' steady rate (1024 was borderline).
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=get_recipe("fashion-cnn").config.batch_size)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    flops = step_flops(args.batch)
    peak = matmul_gflops()
    peak_bf16 = matmul_gflops(dtype=torch.bfloat16)
    rows = [images_per_s("fp32", args.steps, args.warmup, args.batch)]
    for name in names:
        if name != "fp32":
            rows.append(images_per_s(name, args.steps, args.warmup, args.batch))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    rows.append({**images_per_s("fp32", args.steps, args.warmup, args.batch), "variant": "fp32 (again)"})
    base = (rows[0]["images_per_s"] + rows[-1]["images_per_s"]) / 2
    for row in rows:
        row["ratio_to_fp32"] = round(row["images_per_s"] / base, 3)
        row["gflop_per_s"] = round(row["images_per_s"] / args.batch * flops / 1e9, 1)
    result = {"command": "benchmarks/engine_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "batch": args.batch, "step_gflop": round(flops / 1e9, 3), "matmul_gflop_per_s": round(peak, 1),
              "bf16_matmul_gflop_per_s": round(peak_bf16, 1),
              "rows": rows, "hardware": environment()["hardware"]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
