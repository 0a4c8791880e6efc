"""Seconds per step of ``nnlab stylize`` (LBFGS and Adam) at 256 and 512 px, in one process.

For each size the content and style are square images of that size (the worst case of
``--size N``: a photo's shorter side is smaller) and VGG19 runs up to conv5_1, as with the
default layers. Weights are random: a step costs the same with ImageNet weights, which cannot be
downloaded here. The baseline, measured first at each size, is one bare forward + backward of
the truncated VGG19 in the plain NCHW layout; then the same in the channels-last layout that
``vgg19_features`` chooses (the floor of any step), then each optimizer's step, all as ratios to
the baseline and as GFLOP/s from the FLOPs torch counts for one step on the meta device. One
warm-up step precedes the timed ones. The last stdout line is JSON.

    .venv/bin/python benchmarks/stylize_speed.py [--sizes 256,512] [--steps 5] [--optimizers lbfgs,adam]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from nnlab.kit.rundir import environment
from nnlab.workflows.stylize import (CONTENT_LAYER, CONTENT_WEIGHT, STYLE_LAYERS, STYLE_WEIGHT, StyleLoss, optimize,
                                 parse_style_layers, vgg19_features)


def make_loss(size: int, device: str = "cpu") -> tuple[StyleLoss, torch.Tensor]:
    """The default loss (layers and weights) between two seeded random square images of ``size`` px."""
    generator = torch.Generator().manual_seed(0)
    content, style = (torch.rand(1, 3, size, size, generator=generator).to(device) for _ in range(2))
    features = vgg19_features("conv5_1", "random", device=device)
    loss = StyleLoss(features, content, style, CONTENT_LAYER, parse_style_layers(STYLE_LAYERS), CONTENT_WEIGHT,
                     STYLE_WEIGHT)
    return loss, content


def step_gflop(size: int) -> float:
    """FLOPs of one loss evaluation + backward at ``size`` px, counted on the meta device (nothing computed)."""
    loss, _ = make_loss(size, "meta")
    image = torch.empty(1, 3, size, size, device="meta", requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        loss(image)["total"].backward()
    return counter.get_total_flops() / 1e9


def time_bare(loss: StyleLoss, image: torch.Tensor, steps: int, bf16: bool = False) -> float:
    """Seconds per forward + backward of the truncated VGG19 alone (no losses, no optimizer), after a warm-up.

    ``bf16``: under CPU bf16 autocast (not used by ``nnlab stylize``; measured to see what it would gain).
    """
    x = image.clone().requires_grad_(True)
    wanted = {loss.content_layer, *loss.style_layers}

    def once() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            acts = loss.features(x, wanted)
        sum(a.float().sum() for a in acts.values()).backward()
        x.grad = None

    once()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        once()
    return (time.perf_counter() - start) / steps


def time_optimizer(loss: StyleLoss, content: torch.Tensor, optimizer: str, steps: int) -> float:
    """Seconds per ``nnlab stylize`` step after one warm-up step (the optimizer's state carries over)."""
    image = content.clone().requires_grad_(True)
    marks: list[float] = []
    optimize(image, loss, steps + 1, optimizer, on_step=lambda step, terms: marks.append(time.perf_counter()))
    return (marks[-1] - marks[0]) / steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--optimizers", default="lbfgs,adam")
    args = parser.parse_args(argv)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        loss, content = make_loss(size)
        gflop = step_gflop(size)
        loss.features.layers.to(memory_format=torch.contiguous_format)
        bare = time_bare(loss, content, args.steps)
        loss.features.layers.to(memory_format=torch.channels_last)
        timings = [("VGG19 forward+backward, NCHW", bare),
                   ("VGG19 forward+backward, channels-last", time_bare(loss, content, args.steps))]
        if content.device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            timings.append(("VGG19 forward+backward, channels-last, bf16 autocast",
                            time_bare(loss, content, args.steps, bf16=True)))
        for optimizer in args.optimizers.split(","):
            timings.append((f"stylize step, {optimizer}", time_optimizer(loss, content, optimizer, args.steps)))
            print(json.dumps({"size": size, "variant": timings[-1][0], "seconds": timings[-1][1]}), file=sys.stderr,
                  flush=True)
        rows += [{"size": size, "variant": name, "seconds_per_step": round(seconds, 3),
                  "ratio_to_nchw_forward_backward": round(seconds / bare, 3), "gflop_per_step": round(gflop, 1),
                  "gflop_per_s": round(gflop / seconds, 1)} for name, seconds in timings]
    result = {"command": "benchmarks/stylize_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "steps": args.steps, "layers": {"content": CONTENT_LAYER, "style": list(STYLE_LAYERS)},
              "rows": rows, "hardware": environment()["hardware"]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
