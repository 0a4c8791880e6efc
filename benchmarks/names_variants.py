"""Surname -> language: what else was tried against the 84% target, and ensembles of it.

Trains variants of the names-rnn recipe's model on its exact split (seed 0: the same test
names as ``nnlab train names-rnn``) with the recipe's optimizer and schedule (AdamW, one-cycle,
12 epochs, batch 128, dropout 0.5, label smoothing 0.1, clip 1.0), and prints one JSON line per
variant (test accuracy, seconds) and then the accuracy of averaging the variants' probabilities.
The variants add, to the bidirectional GRU's final states, the max and mean of its outputs
(``--pool``), hashed character n-grams with an "exact name" feature (``--ngrams N``: a
fastText-style bag, ``--rnn 0`` for the bag alone), a character CNN (``--cnn F``: widths 2-5,
F filters each, max over time), SGDR snapshots (``--cycles K``: prints the snapshot ensemble),
or training on train + validation (``--train-valid``).

    NNLAB_DATA=../shared/data python benchmarks/names_variants.py --variant gru --variant cnn \
        --variant "gru --pool all" --variant "gru --ngrams 4"

The random search over the character CNN's settings that this script once ran (``--search 24``,
ranked by validation accuracy) is now an ordinary sweep of the ``names-cnn`` recipe, with each trial
a run directory and the table, ``results.csv`` and ``sweep.png`` of ``nnlab sweep``:

    NNLAB_DATA=../shared/data nnlab sweep names-cnn --search random --trials 24 --metric valid_acc \
        --grid filters=128,192,256,384 --grid "widths=(2,3,4,5),(1,2,3,4,5),(2,3,4),(3,4,5,6),(2,3,4,5,6)" \
        --grid embed=32,48,64,96 --grid dropout=0.3,0.4,0.5,0.6 --grid lr=2e-3,3e-3,5e-3,8e-3 \
        --grid epochs=8,12,16 --grid batch_size=64,128,256 --grid label_smoothing=0,0.05,0.1,0.2 \
        --grid weight_decay=1e-4,1e-2,5e-2 [--seeds 3] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import shlex
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nnlab.kinds.names import NamesConfig
from nnlab.data.names import ALPHABET, NameBatches, load_names
from nnlab.engine.optim import create_optimizer
from nnlab.engine.schedules import create_scheduler
from nnlab.kinds.names import split_names
from nnlab.models.names import ngram_ids

N_TOKENS = len(ALPHABET) + 1  # 0 is padding


def variant_args(spec: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="variant")
    p.add_argument("kind", choices=["gru", "cnn", "ngrams"])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--pool", choices=["final", "max", "all"], default="final")
    p.add_argument("--ngrams", type=int, default=0, help="n-gram orders 1..N added (0: none)")
    p.add_argument("--buckets", type=int, default=2 ** 16)
    p.add_argument("--cnn", type=int, default=0, help="filters per width added (0: none)")
    p.add_argument("--widths", default="2,3,4,5", help="the CNN's kernel widths")
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--cycles", type=int, default=0, help="SGDR cycles instead of one-cycle (0: one-cycle)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-valid", action="store_true", help="train on train + validation")
    return p.parse_args(shlex.split(spec))


def gram_ids(x: torch.Tensor, orders: int, buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hashed ids of every 1..``orders``-gram of each padded name ``x [N, L]`` (``ngram_ids``, with
    begin/end marks) and of the whole name, and which of them are real (not padding): ``[N, G]`` each."""
    ids, masks = ngram_ids(x, orders, buckets)
    whole = torch.zeros(x.shape[0], dtype=torch.long)
    for j in range(x.shape[1]):
        whole = (whole * 1_000_003 + x[:, j]) % (1 << 40)
    return (torch.cat([ids, (whole[:, None] * 7 + 99_991) % buckets], 1),
            torch.cat([masks, torch.ones(x.shape[0], 1, dtype=torch.bool)], 1))


class Variant(nn.Module):
    """Embedding -> any of: BiGRU (final states, optionally max/mean pooled outputs), char CNN,
    n-gram bag; their features concatenated -> dropout -> linear."""

    def __init__(self, a: argparse.Namespace, n_classes: int) -> None:
        super().__init__()
        self.a = a
        self.embed = nn.Embedding(N_TOKENS, a.embed, padding_idx=0)
        width = 0
        self.rnn = None
        if a.kind == "gru":
            self.rnn = nn.GRU(a.embed, a.hidden, batch_first=True, bidirectional=True)
            width += {"final": 2, "max": 4, "all": 6}[a.pool] * a.hidden
        filters = a.cnn or (256 if a.kind == "cnn" else 0)
        widths = [int(w) for w in a.widths.split(",")]
        self.convs = nn.ModuleList([nn.Conv1d(a.embed, filters, k, padding=k // 2) for k in widths]) \
            if filters else None
        width += len(widths) * filters
        orders = a.ngrams or (5 if a.kind == "ngrams" else 0)
        self.orders = orders
        self.grams = nn.Embedding(a.buckets, 64) if orders else None
        width += 64 if orders else 0
        self.drop = nn.Dropout(a.dropout)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = (x != 0).sum(1).clamp(min=1)
        feats = []
        if self.rnn is not None:
            out, h = self.rnn(pack_padded_sequence(self.embed(x), lengths, batch_first=True, enforce_sorted=False))
            feats.append(torch.cat([h[-2], h[-1]], 1))
            if self.a.pool != "final":
                o, _ = pad_packed_sequence(out, batch_first=True)  # [N, L, 2H]
                mask = (torch.arange(o.shape[1])[None, :] < lengths[:, None])[..., None]
                feats.append(o.masked_fill(~mask, -1e4).amax(1))
                if self.a.pool == "all":
                    feats.append((o * mask).sum(1) / lengths[:, None])
        if self.convs is not None:
            e = self.embed(x).transpose(1, 2)  # [N, E, L]
            mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None])[:, None, :]
            for conv in self.convs:
                feats.append(torch.relu(conv(e))[:, :, : x.shape[1]].masked_fill(~mask, -1e4).amax(2))
        if self.grams is not None:
            g, m = gram_ids(x, self.orders, self.a.buckets)
            feats.append((self.grams(g) * m[..., None]).sum(1) / m.sum(1, keepdim=True))
        return self.head(self.drop(torch.cat(feats, 1)))


@torch.no_grad()
def probabilities(model: nn.Module, data, rows: torch.Tensor) -> torch.Tensor:
    model.eval()
    batches = NameBatches([data.names[i] for i in rows.tolist()], data.labels[rows], 4096)
    probs = torch.cat([model(x).softmax(1) for x, _ in batches])
    model.train()
    return probs


def run_variant(spec: str, data, rows: dict[str, torch.Tensor]) -> tuple[dict, list[torch.Tensor]]:
    """Train one variant; its result row and its test probabilities (one per snapshot with cycles)."""
    a = variant_args(spec)
    torch.manual_seed(a.seed)
    model = Variant(a, len(data.classes))
    train_rows = torch.cat([rows["train"], rows["valid"]]) if a.train_valid else rows["train"]
    batches = NameBatches([data.names[i] for i in train_rows.tolist()], data.labels[train_rows], a.batch, shuffle=True,
                          generator=torch.Generator().manual_seed(a.seed + 1))
    optimizer = create_optimizer("adamw", model, a.lr, a.weight_decay)
    steps = a.epochs * len(batches)
    scheduler = create_scheduler("sgdr" if a.cycles else "one-cycle", optimizer, a.lr, steps, 0.25,
                                 cycles=max(a.cycles, 1))
    snapshots, start = [], time.perf_counter()
    for epoch in range(a.epochs):
        for x, y in batches:
            loss = F.cross_entropy(model(x), y, label_smoothing=a.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
        if a.cycles and (epoch + 1) % (a.epochs // a.cycles) == 0:
            snapshots.append(probabilities(model, data, rows["test"]))
    seconds = time.perf_counter() - start
    final = probabilities(model, data, rows["test"])
    y = data.labels[rows["test"]]
    valid = probabilities(model, data, rows["valid"]).argmax(1) == data.labels[rows["valid"]]
    row = {"variant": spec, "valid_accuracy": round(valid.float().mean().item(), 4),
           "test_accuracy": round((final.argmax(1) == y).float().mean().item(), 4), "train_seconds": round(seconds, 1)}
    if snapshots:
        row["snapshot_ensemble_accuracy"] = round((sum(snapshots).argmax(1) == y).float().mean().item(), 4)
    return row, [final]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", action="append", default=None,
                   help='a variant, e.g. "gru --pool all" (repeatable; default: gru and cnn)')
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    split = split_names(load_names(), NamesConfig())  # the recipe's split (seed 0, grouped, 10% test)
    data, rows = split.data, split.rows
    all_probs = []
    for spec in args.variant or ["gru", "cnn"]:
        row, probs = run_variant(spec, data, rows)
        all_probs += probs
        print(json.dumps(row), flush=True)
    if len(all_probs) > 1:
        y = data.labels[rows["test"]]
        ensemble = (sum(all_probs).argmax(1) == y).float().mean().item()
        print(json.dumps({"ensemble_of": len(all_probs), "test_accuracy": round(ensemble, 4),
                          "test_names": len(y)}), flush=True)


if __name__ == "__main__":
    main()
