"""Surname -> language: nnlab's batched, packed names-rnn against the tutorial's one-name-at-a-time loop.

Both train the same bidirectional GRU (``name_rnn``, the recipe's sizes) on the same split.
The batched side is ``nnlab train names-rnn`` itself; the loop side feeds one name per step
(the PyTorch tutorial's way, AdamW at the recipe's learning rate, constant) for the same wall
time, then both are scored on the same held-out names. Prints one JSON object: accuracy,
training seconds and names per second of each, and their ratios.

    NNLAB_DATA=../shared/data python benchmarks/names_batched_vs_loop.py [--epochs N]
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
import time

import torch

from nnlab.data.names import encode_names, load_names
from nnlab.models import create_model
from nnlab.recipes import get_recipe
from nnlab.kinds import names as names_task
from nnlab.recipes import train as train_recipe


def loop_train(data, rows, config, seconds: float) -> tuple[torch.nn.Module, int]:
    """The tutorial's loop: one name, one forward, one backward, one step, until ``seconds`` pass."""
    torch.manual_seed(config.seed)
    name, args = names_task.model_args(config, len(data.classes))
    model = create_model(name, **args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr / 10, weight_decay=config.weight_decay)
    order = rows["train"][torch.randperm(len(rows["train"]), generator=torch.Generator().manual_seed(0))].tolist()
    loss_fn = torch.nn.CrossEntropyLoss()
    start, seen = time.perf_counter(), 0
    model.train()
    while time.perf_counter() - start < seconds:
        i = order[seen % len(order)]
        x = encode_names([data.names[i]])                      # [1, L]
        loss = loss_fn(model(x), data.labels[i: i + 1])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seen += 1
    return model, seen


@torch.no_grad()
def accuracy(model: torch.nn.Module, data, rows) -> float:
    """Accuracy on the held-out names."""
    test = rows["test"]
    x = encode_names([data.names[i] for i in test.tolist()])
    return (model.eval()(x).argmax(1) == data.labels[test]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    args = parser.parse_args()
    overrides = {"epochs": args.epochs} if args.epochs else {}
    config = get_recipe("names-rnn").config
    split = names_task.split_names(load_names(config.data), config)
    data, rows = split.data, split.rows
    with tempfile.TemporaryDirectory() as tmp:
        batched = train_recipe("names-rnn", out=f"{tmp}/run", overrides=overrides, stream=io.StringIO())
    seconds = batched["train_seconds"]
    model, seen = loop_train(data, rows, config, seconds)
    loop_acc = accuracy(model, data, rows)
    batched_rate = batched["names_per_s"]
    print(json.dumps({
        "batched": {"test_accuracy": batched["test_accuracy"], "test_macro_f1": batched["test_macro_f1"],
                    "train_seconds": seconds, "names_per_s": batched_rate, "epochs": batched["epochs"]},
        "one_at_a_time": {"test_accuracy": loop_acc, "train_seconds": round(seconds, 3),
                          "names_per_s": round(seen / seconds, 1), "names_seen": seen},
        "throughput_ratio": round(batched_rate / (seen / seconds), 2),
        "accuracy_gain_points": round(100 * (batched["test_accuracy"] - loop_acc), 2),
        "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
