"""Threads and OpenMP's wait policy: a small LSTM and the fashion-cnn step (bf16 autocast) at 1 and 2
torch threads, with OpenMP's default (ACTIVE: idle threads spin) and PASSIVE (idle threads sleep), each
in a fresh process (the policy is read when OpenMP starts), interleaved, ``--repeats`` times.

Run it alone and again beside a CPU-heavy process (``--load N`` starts N busy-looping processes for its
duration) to see both sides: a spinning thread that shares its core with another process stalls the
other thread at every parallel region. Prints one JSON line per measurement and a summary, with the
host, the load and the command.

    python benchmarks/omp_wait_policy.py --repeats 3 [--load 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

STEP = r'''
import json, sys, time, torch
sys.path.insert(0, {src!r})
torch.set_num_threads({threads})
torch.manual_seed(0)
if {model!r} == "lstm":
    from torch import nn
    emb, rnn, head = nn.Embedding(65, 32), nn.LSTM(32, 64, batch_first=True), nn.Linear(64, 65)
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
    x = torch.randint(0, 65, (32, 65))
    def loss():
        out, _ = rnn(emb(x[:, :-1]))
        return nn.functional.cross_entropy(head(out).reshape(-1, 65), x[:, 1:].reshape(-1))
    unit, per_step = "chars_per_s", 32 * 64
else:
    from nnlab.models import create_model
    model = create_model("cnn", n_classes=10, in_channels=1, widths=(32, 64, 128)).to(memory_format=torch.channels_last)
    params = list(model.parameters())
    x = torch.randn(128, 1, 28, 28).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    def loss():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.nn.functional.cross_entropy(model(x), y)
    unit, per_step = "images_per_s", 128
opt = torch.optim.AdamW(params, 1e-3)
def step():
    opt.zero_grad(set_to_none=True)
    loss().backward()
    opt.step()
for _ in range(5):
    step()
begin = time.perf_counter()
for _ in range({steps}):
    step()
print(json.dumps({{unit: round({steps} * per_step / (time.perf_counter() - begin))}}))
'''


def host() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    flags = open("/proc/cpuinfo").read()
    return {"cpu": model, "cores": os.cpu_count(), "amx": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags}


def measure(model: str, threads: int, policy: str | None, steps: int) -> float:
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    src = str(Path(__file__).resolve().parents[1] / "src")
    code = STEP.format(src=src, threads=threads, model=model, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    return next(iter(json.loads(out.strip().splitlines()[-1]).values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, help="busy-looping processes beside the measurement")
    args = parser.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        time.sleep(1 if hogs else 0)
        load_before = os.getloadavg()
        results: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for model, steps in (("lstm", 40), ("cnn", 30)):
                for threads in (1, 2):
                    for policy in (None, "PASSIVE"):
                        value = measure(model, threads, policy, steps)
                        key = f"{model} threads={threads} {policy or 'default'}"
                        results.setdefault(key, []).append(value)
                        print(json.dumps({"case": key, "rate": value}), flush=True)
    finally:
        for hog in hogs:
            hog.kill()
    summary = {key: {"median": statistics.median(values), "runs": values} for key, values in results.items()}
    print(json.dumps({"command": " ".join(sys.argv), "host": host(), "busy_processes": args.load,
                      "load_before": load_before, "load_after": os.getloadavg(),
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": summary}))


if __name__ == "__main__":
    main()
