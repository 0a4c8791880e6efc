"""digits-transfer at 10% of the digits, over several seeds: is transfer's gain more than noise?

One seed's gain (``nnlab train digits-transfer``'s ``transfer_gain_points``) moves by a point or
more with the split: the held-out set is 360 images (0.28 points each) and 10% of the training
split is 143 images. This script takes a pretrained source run (``--from RUN_DIR``, e.g. a
``fashion-cnn`` or ``fashion-resnet`` run), then for each seed (a different test split and
10% sample) trains scratch and transfer exactly as the recipe does (``fit_digits``), with each
setting given as ``init,key=value,...`` (TransferConfig fields), and prints one JSON line per
setting: the accuracies per seed and their mean.

    python benchmarks/digits_transfer_seeds.py --from runs/fashion-cnn-... \
        scratch scratch,epochs=20 transfer transfer,epochs=20 transfer,lr_mult=1.0
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from nnlab.kinds.transfer import TransferConfig
from nnlab.kinds.image import load_run
from nnlab.kinds.transfer import fit_digits, held_out_accuracy, share, split_digits

INTS = {"epochs", "freeze_epochs", "batch_size"}


def setting(spec: str) -> tuple[str, dict]:
    """``"transfer,lr=0.01,augment=flip+translate:2"`` -> ``("transfer", {...})``."""
    init, *pairs = spec.split(",")
    if init not in ("scratch", "transfer"):
        raise SystemExit(f"{spec!r}: start with scratch or transfer")
    values: dict = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        values[key] = tuple(value.split("+")) if key == "augment" else int(value) if key in INTS else float(value)
    return init, values


def accuracy(state: dict, init: str, seed: int, percent: int, **values) -> float:
    config = dataclasses.replace(TransferConfig(), seed=seed, **values)
    images, labels, train_idx, test_idx = split_digits(config)
    chosen = train_idx[share(labels[train_idx], percent, torch.Generator().manual_seed(seed))]
    model, _ = fit_digits(config, state, init, images[chosen], labels[chosen], torch.device("cpu"), config.epochs,
                          config.freeze_epochs if init == "transfer" else 0)
    return held_out_accuracy(model, images[test_idx], labels[test_idx], state, torch.device("cpu"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", required=True, help="the pretrained image run (28x28 grey)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--percent", type=int, default=10)
    p.add_argument("settings", nargs="+", help="init[,key=value...]: scratch or transfer, TransferConfig fields")
    args = p.parse_args()
    _, _, state = load_run(args.source)
    for spec in args.settings:
        init, values = setting(spec)
        accs = [accuracy(state, init, seed, args.percent, **values) for seed in range(args.seeds)]
        print(json.dumps({"setting": spec, "source": args.source, "percent": args.percent,
                          "accuracy_per_seed": [round(100 * a, 2) for a in accs],
                          "mean_accuracy": round(100 * sum(accs) / len(accs), 2)}), flush=True)


if __name__ == "__main__":
    main()
