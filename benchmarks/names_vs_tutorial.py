"""Surnames: the PyTorch tutorial's own model and training against nnlab's names-rnn and names-cnn.

The tutorial ("NLP From Scratch: Classifying Names with a Character-Level RNN") feeds each
name as one-hot letters ``[L, 1, 58]`` to a one-layer ``nn.RNN`` of 128, takes the final
state through a linear layer and LogSoftmax, and trains with NLL loss by plain SGD (lr 0.15),
a "batch" being 64 names run one at a time with their losses summed, gradients clipped to
norm 3, 27 epochs. It is written out as the tutorial has it in ``nnlab.lessons.tutorials``
(``nnlab speedrun names-84 --baselines`` times the same loop), and trained on the exact
training names of ``nnlab train names-rnn`` / ``names-cnn`` (same protocol, same seed, so the
same test names); then both recipes train through nnlab itself, in this process. Prints a JSON
line per model as it finishes, then one JSON object of all: accuracy, macro-F1 and seconds of
each, and the ratios to the tutorial's.

    NNLAB_DATA=../shared/data python benchmarks/names_vs_tutorial.py                 # leak-free split
    NNLAB_DATA=../shared/data python benchmarks/names_vs_tutorial.py --protocol tutorial
    ... --variant 'names-cnn;model=ensemble;members=cnn,ngrams;filters=128'     # a recipe with --set's

Each recipe's line also has its best validation accuracy, so variants are chosen on validation.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch

from nnlab.config import parse_set_args
from nnlab.data.names import load_names
from nnlab.engine.metrics import score
from nnlab.kinds.names import split_names
from nnlab.lessons.tutorials import TUTORIAL_LETTERS, TutorialRNN, line_to_tensor, names_predict, names_train_epoch
from nnlab.recipes import get_recipe, recipe_config
from nnlab.recipes import train as train_recipe

def train_tutorial(names: list[str], labels: list[int], n_classes: int, epochs: int, seed: int,
                   lr: float = 0.15) -> tuple[TutorialRNN, list[float]]:
    """The tutorial's ``train`` (``nnlab.lessons.tutorials.names_train_epoch`` each epoch): returns the
    model and the seconds of each epoch."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = TutorialRNN(len(TUTORIAL_LETTERS), 128, n_classes)
    tensors = [line_to_tensor(name) for name in names]
    targets = [torch.tensor([label]) for label in labels]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        names_train_epoch(model, tensors, targets, optimizer, rng)
        seconds.append(time.perf_counter() - start)
    return model, seconds


def tutorial_scores(model: TutorialRNN, names: list[str], labels: torch.Tensor, classes: list[str]) -> dict:
    result = score(names_predict(model, names), labels, classes)
    return {"test_accuracy": round(result["test_accuracy"], 4), "test_macro_f1": round(result["macro"]["f1"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=["grouped", "tutorial"], default="grouped")
    parser.add_argument("--tutorial-epochs", type=int, default=27,
                        help="the tutorial's 27 (about 5 minutes on 2 cores; fewer: a quicker look, its time "
                             "scaled to 27 epochs for the ratios)")
    parser.add_argument("--recipes", default="names-rnn,names-cnn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", action="append", default=[], metavar="RECIPE;KEY=VALUE;...",
                        help="also train RECIPE with these settings (as `--set KEY=VALUE`), named by the whole string")
    args = parser.parse_args()
    overrides = {"protocol": args.protocol, "seed": args.seed}
    config = recipe_config("names-cnn", overrides)
    split = split_names(load_names(config.data), config)
    data, rows = split.data, split.rows
    train_rows, test_rows = rows["train"].tolist(), rows["test"].tolist()
    load_before = os.getloadavg()
    model, epoch_seconds = train_tutorial([data.names[i] for i in train_rows], data.labels[rows["train"]].tolist(),
                                    len(data.classes), args.tutorial_epochs, args.seed)
    seconds = sum(epoch_seconds)
    tutorial = {**tutorial_scores(model, [data.names[i] for i in test_rows], data.labels[rows["test"]],
                                  data.classes), "train_seconds": round(seconds, 1), "epochs": args.tutorial_epochs,
                # what its 27 epochs would take at the same pace (each epoch is the same work)
                "seconds_for_27_epochs": round(seconds * 27 / args.tutorial_epochs, 1),
                "seconds_for_27_epochs_is": "measured" if args.tutorial_epochs == 27 else "extrapolated",
                "epoch_seconds": [round(t, 1) for t in epoch_seconds]}
    out = {"protocol": args.protocol, "split": split.about, "names": {k: len(v) for k, v in rows.items()},
           "torch_threads": torch.get_num_threads(), "load_before": load_before, "tutorial": tutorial}
    print(json.dumps({"tutorial": tutorial}), flush=True)  # each result as it comes: a long run cut short keeps it
    runs = [(recipe, recipe, {}) for recipe in args.recipes.split(",")]
    for variant in args.variant:
        recipe, *settings = variant.split(";")
        runs.append((variant, recipe, parse_set_args(settings)))
    for name, recipe, settings in runs:
        get_recipe(recipe)
        with tempfile.TemporaryDirectory() as tmp:
            summary = train_recipe(recipe, out=f"{tmp}/run", overrides={**overrides, **settings}, stream=io.StringIO())
            rows = [json.loads(line) for line in Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()]
        recipe = name
        out[recipe] = {"test_accuracy": round(summary["test_accuracy"], 4),
                       "valid_accuracy_best_epoch": round(next(r["valid_acc"] for r in rows
                                                               if r["epoch"] == summary["best_epoch"]), 4),
                       "test_macro_f1": round(summary["test_macro_f1"], 4),
                       "train_seconds": summary["train_seconds"], "epochs": summary["epochs"],
                       "model": summary["model"],
                       "gain_points_vs_tutorial": round(100 * (summary["test_accuracy"] - tutorial["test_accuracy"]), 2),
                       "time_ratio_to_tutorial_27_epochs": round(summary["train_seconds"]
                                                                  / max(tutorial["seconds_for_27_epochs"], 1e-9), 3)}
        print(json.dumps({recipe: out[recipe]}), flush=True)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
