"""Images/s of a recipe's training step under each speed switch, against this machine's matmul rates.

Each variant trains the recipe's model (fashion-cnn's or fashion-resnet's; random init, seeded)
on a fixed set of real-shaped batches for ``--steps`` timed steps after ``--warmup`` steps, in
the order given, with the plain fp32 eager channels-last step measured first *and last* (its
two runs bound the machine's drift). Each row gives the step's achieved GFLOP/s (FLOPs counted
by torch's FlopCounterMode for that batch size) and its fraction of this machine's measured
fp32 and bf16 matmul rates (bf16 matmul runs on AMX tiles where the CPU has them: ``onednn``
says which kernels oneDNN picked). ``--profile`` adds where the bf16 step's time goes: phases
(data, forward, backward, optimizer) and torch.profiler's self time by kind of operation.
The last stdout line is JSON.

    .venv/bin/python benchmarks/engine_speed.py [--recipe fashion-resnet] [--steps 60] [--variants fp32,bf16,...]
    .venv/bin/python benchmarks/engine_speed.py --recipe fashion-cnn --variants bf16 --profile
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from nnlab.data.batches import TensorBatches, make_augment
from nnlab.engine.learner import autocast
from nnlab.engine.optim import create_optimizer
from nnlab.kit.rundir import environment
from nnlab.models import create_model
from nnlab.recipes import get_recipe

RECIPES = ("fashion-cnn", "fashion-resnet")
# time.perf_counter (wall) by default; ``--clock cpu`` (one thread only) times by this process's CPU
# time, so that other processes on a shared machine, which take the core away now and then, do not
# count. With two threads and other load, wall time measures OpenMP threads waiting for each other.
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


@dataclass(frozen=True)
class Variant:
    """One way to run the step: precision, memory format, compile, threads, optimizer arguments, batch."""

    precision: str = "bf16"
    channels_last: bool = True
    compile: bool = False
    threads: int | None = None
    optimizer_args: tuple[tuple[str, object], ...] = ()  # foreach / fused for torch's AdamW
    batch_mult: int = 1                                   # times the recipe's batch size


VARIANTS = {
    "fp32": Variant("fp32"),
    "fp32-contiguous": Variant("fp32", channels_last=False),
    "bf16": Variant(),
    "bf16-contiguous": Variant(channels_last=False),
    "fp16": Variant("fp16"),
    "compile": Variant("fp32", compile=True),
    "bf16-compile": Variant(compile=True),
    "threads-1": Variant("fp32", threads=1),
    "bf16-foreach": Variant(optimizer_args=(("foreach", True),)),
    "bf16-fused": Variant(optimizer_args=(("fused", True),)),
    "bf16-batch256": Variant(batch_mult=2),
    "bf16-batch512": Variant(batch_mult=4),
}


def make_step(recipe: str, variant: Variant, batch: int):
    """A closure running one training step of the recipe's model on its own batches, and the model."""
    config = get_recipe(recipe).config
    torch.manual_seed(0)
    model = create_model(config.model, n_classes=10, **config.model_args)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    runner = torch.compile(model) if variant.compile else model
    optimizer = create_optimizer(config.optimizer, model, config.lr, config.weight_decay, config.momentum,
                                 args=dict(variant.optimizer_args))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    scaler = torch.amp.GradScaler("cpu", enabled=variant.precision == "fp16")
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, 1, 28, 28, generator=gen) for _ in range(8)]
    if variant.channels_last:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    ys = [torch.randint(0, 10, (batch,), generator=gen) for _ in range(8)]
    device = torch.device("cpu")

    def step(i: int) -> None:
        with autocast(device, variant.precision):
            loss = loss_fn(runner(xs[i % 8]).float(), ys[i % 8])
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return step, model


def images_per_s(recipe: str, name: str, steps: int, warmup: int, batch: int) -> dict:
    variant = VARIANTS[name]
    before = torch.get_num_threads()
    if variant.threads:
        torch.set_num_threads(variant.threads)
    batch = batch * variant.batch_mult
    steps = max(1, steps // variant.batch_mult)  # the same images per variant
    try:
        step, _ = make_step(recipe, variant, batch)
        start = clock()
        for i in range(warmup):
            step(i)
        warm_s = clock() - start
        start = clock()
        for i in range(steps):
            step(i)
        seconds = clock() - start
    finally:
        torch.set_num_threads(before)
    return {"variant": name, "batch": batch, "images_per_s": round(steps * batch / seconds, 1),
            "warmup_s": round(warm_s, 2)}


def step_flops(recipe: str, batch: int) -> int:
    """FLOPs of one fp32 training step (forward + backward) at ``batch``, counted by torch."""
    step, _ = make_step(recipe, Variant("fp32", channels_last=False), batch)
    with FlopCounterMode(display=False) as counter:
        step(0)
    return counter.get_total_flops()


def matmul_gflops(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """This machine's square-matmul throughput in ``dtype`` (the practical peak for dense work)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = clock()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (clock() - start) / 1e9


def yardsticks() -> dict[str, float]:
    """fp32 and bf16 matmul GFLOP/s; the best of two sizes, since AMX bf16 peaks only on large products."""
    out = {"fp32_n2048": matmul_gflops(2048), "bf16_n2048": matmul_gflops(2048, dtype=torch.bfloat16),
           "bf16_n4096": matmul_gflops(4096, repeats=4, dtype=torch.bfloat16)}
    out["fp32"] = out["fp32_n2048"]
    out["bf16"] = max(out["bf16_n2048"], out["bf16_n4096"])
    return {k: round(v, 1) for k, v in out.items()}


# Kinds of operation, matched in the outermost profiled op's name (lower case, "_" removed);
# forward ops and their autograd nodes (ConvolutionBackward0, ...) land in the same kind.
KINDS = (("optimizer", ("optimizer.step", "optimizer.zerograd")), ("convolution", ("conv",)),
         ("batch norm", ("batchnorm",)), ("pooling", ("pool",)), ("activation", ("relu", "threshold")),
         ("linear", ("addmm", "linear", "mmbackward", "aten::mm", "tbackward", "aten::t")),
         ("loss", ("crossentropy", "logsoftmax", "nllloss")), ("dtype casts", ("tocopy", "aten::to", "copy")),
         ("gradient accumulation", ("accumulategrad",)), ("residual add", ("aten::add", "addbackward")))


def kind_of(name: str) -> str:
    key = name.lower().replace("_", "")
    return next((kind for kind, marks in KINDS if any(m.replace("_", "") in key for m in marks)), "other")


def profile(recipe: str, name: str, batch: int, steps: int = 20) -> dict:
    """Where a step's time goes: phase seconds per step (data, forward, backward, optimizer) and
    torch.profiler's self CPU time by kind of operation (each op counted in its outermost op's kind)."""
    variant = VARIANTS[name]
    config = get_recipe(recipe).config
    step, model = make_step(recipe, variant, batch)
    for i in range(5):
        step(i)
    images = torch.randint(0, 256, (8192, 1, 28, 28), dtype=torch.uint8)
    data = TensorBatches(images, torch.zeros(8192, dtype=torch.long), batch, mean=(0.286,), std=(0.353,),
                         shuffle=True, drop_last=True, augment=make_augment(config.augment),
                         channels_last=variant.channels_last)
    optimizer = create_optimizer(config.optimizer, model, config.lr, config.weight_decay, config.momentum,
                                 args=dict(variant.optimizer_args))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    phases: dict[str, float] = collections.defaultdict(float)
    seen = 0
    batches = iter(data)
    while seen < steps:
        mark = clock()
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(data)
            continue
        t1 = clock()
        with autocast(torch.device("cpu"), variant.precision):
            loss = loss_fn(model(x).float(), y)
        t2 = clock()
        loss.backward()
        t3 = clock()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t4 = clock()
        for phase, seconds in (("data", t1 - mark), ("forward", t2 - t1), ("backward", t3 - t2), ("optimizer", t4 - t3)):
            phases[phase] += seconds
        seen += 1
    total = sum(phases.values())
    from torch.profiler import ProfilerActivity, profile as torch_profile
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(i)
    kinds: dict[str, float] = collections.defaultdict(float)
    for event in prof.events():
        top = event
        while top.cpu_parent is not None:
            top = top.cpu_parent
        kinds[kind_of(top.name)] += event.self_cpu_time_total
    all_us = sum(kinds.values())
    return {"variant": name, "batch": batch, "steps": steps,
            "phase_ms_per_step": {k: round(1000 * v / steps, 3) for k, v in phases.items()},
            "phase_share": {k: round(v / total, 3) for k, v in phases.items()},
            "op_share": {k: round(v / all_us, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top_ops": [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 3)}
                        for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]]}


def onednn_kernels(recipe: str) -> dict:
    """The oneDNN kernels a bf16 matmul and the recipe's bf16 training step run (AMX or not),
    read from ONEDNN_VERBOSE in a child process: {primitive: {kernel: calls}}."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    done = subprocess.run([sys.executable, __file__, "--onednn-probe", "--recipe", recipe], capture_output=True,
                          text=True, env=env, timeout=300)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in done.stdout.splitlines():
        parts = line.split(",")
        if len(parts) > 7 and parts[2] == "primitive" and parts[3] == "exec":
            counts[parts[5]][f"{parts[6]} ({parts[7]})"] += 1
    return {kind: dict(c) for kind, c in counts.items()}


def probe(recipe: str) -> None:
    a = torch.randn(1024, 1024, dtype=torch.bfloat16)
    a @ a
    step, _ = make_step(recipe, Variant(), 128)
    for i in range(2):
        step(i)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fashion-cnn", choices=RECIPES)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, help="default: the recipe's batch size")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--profile", action="store_true", help="also profile the bf16 and fp32 steps, and list oneDNN's kernels")
    parser.add_argument("--threads", type=int, help="torch threads for everything (default: torch's)")
    parser.add_argument("--clock", default="wall", choices=list(CLOCK), help="cpu: CPU time, with --threads 1 only")
    parser.add_argument("--onednn-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global clock
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (with more threads, CPU time counts threads waiting)")
    clock = CLOCK[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.onednn_probe:
        probe(args.recipe)
        return {}
    batch = args.batch or get_recipe(args.recipe).config.batch_size
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    peaks = yardsticks()
    flops = {b: step_flops(args.recipe, b) for b in sorted({batch * VARIANTS[n].batch_mult for n in names} | {batch})}
    rows = [images_per_s(args.recipe, "fp32", args.steps, args.warmup, batch)]
    for name in names:
        if name != "fp32":
            rows.append(images_per_s(args.recipe, name, args.steps, args.warmup, batch))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    rows.append({**images_per_s(args.recipe, "fp32", args.steps, args.warmup, batch), "variant": "fp32 (again)"})
    base = (rows[0]["images_per_s"] + rows[-1]["images_per_s"]) / 2
    for row in rows:
        gflops = row["images_per_s"] / row["batch"] * flops[row["batch"]] / 1e9
        row.update(ratio_to_fp32=round(row["images_per_s"] / base, 3), gflop_per_s=round(gflops, 1),
                   of_fp32_matmul=round(gflops / peaks["fp32"], 3), of_bf16_matmul=round(gflops / peaks["bf16"], 3))
    result = {"command": "benchmarks/engine_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "recipe": args.recipe, "batch": batch, "clock": args.clock, "threads": torch.get_num_threads(), "step_gflop": round(flops[batch] / 1e9, 3),
              "matmul_gflop_per_s": peaks, "rows": rows, "hardware": environment()["hardware"],
              "amx": "amx_tile" in open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else None}
    if args.profile:
        result["onednn_kernels"] = onednn_kernels(args.recipe)
        result["profiles"] = [profile(args.recipe, name, batch) for name in ("bf16", "fp32")]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
