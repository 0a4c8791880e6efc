"""The serve backends' model time alone: ``ServedModel.probabilities`` in PyTorch and in onnxruntime.

What ``nnlab serve`` runs per micro-batch of uint8 images, without the HTTP layer or the clients
(``benchmarks/serve_load.py`` measures the whole server). For each backend and batch size: CPU
time per call (``time.process_time``) and wall time per call, after 20 warm-up calls, over
``--images`` images; one torch/onnxruntime thread by default (``--threads``). Prints JSON with
the command, host, load average and the onnx/torch ratios.

    python benchmarks/serve_backends.py --run runs/f1     # or no --run: trains fashion-cnn for 1 epoch first
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from nnlab.commands.serve import ServedModel


def cpu_model() -> str:
    """The CPU's model name as lscpu prints it (``/proc/cpuinfo``), else the machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="image run (default: train fashion-cnn for 1 epoch)")
    parser.add_argument("--batches", default="1,10,64", help="batch sizes, comma-separated")
    parser.add_argument("--images", type=int, default=2000, help="images per measurement")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out: dict = {"command": "python " + " ".join(sys.argv), "threads": args.threads, "cpu": cpu_model(),
                 "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run
        if run is None:
            from nnlab.recipes import train
            run = Path(scratch) / "fashion-cnn"
            train("fashion-cnn", out=run, overrides={"epochs": 1}, stream=io.StringIO())
        generator = torch.Generator().manual_seed(0)
        for backend in ("torch", "onnx"):
            served = ServedModel(run, torch.device("cpu"), "cpu", backend)
            shape = served.current.state["input_shape"]
            for n in map(int, args.batches.split(",")):
                x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=generator)
                for _ in range(20):
                    served.probabilities(x)
                calls = max(args.images // n, 1)
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(calls):
                    served.probabilities(x)
                out[f"{backend}_batch{n}_cpu_ms"] = round((time.process_time() - cpu) / calls * 1000, 3)
                out[f"{backend}_batch{n}_wall_ms"] = round((time.perf_counter() - wall) / calls * 1000, 3)
    for n in map(int, args.batches.split(",")):
        out[f"onnx_to_torch_batch{n}"] = round(out[f"onnx_batch{n}_cpu_ms"] / out[f"torch_batch{n}_cpu_ms"], 2)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
