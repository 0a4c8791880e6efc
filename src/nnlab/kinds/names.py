"""Surname -> language runs: a bidirectional GRU over padded, packed names; predictions for new names.

``train`` folds the names to ASCII and splits them by ``protocol``: ``grouped`` (the default)
keeps each (name, language) pair once and puts every name string in one split only (train,
valid or test, stratified by language), so ``test_accuracy`` measures names the model never
saw; ``tutorial`` is the PyTorch tutorial's random 85/15 split of all lines, repeats
included, for comparison with published numbers (it leaks: the summary says how much). The
validation part picks the best epoch. The run trains in
batches of padded sequences that the model packs, and writes a run directory like an image
run: ``config.json``, ``metrics.jsonl``, ``best.pt``/``last.pt`` (with the alphabet and the
classes as plain data), ``curves.png``, ``confusion.png`` and ``summary.json`` (accuracy,
macro-F1, per-class precision/recall/F1, confusion matrix). Class imbalance is countered by
``balance``: ``weighted-loss`` (inverse-frequency class weights) or ``sampler`` (batches drawn
with class-balanced probabilities).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch

from nnlab.config import RunConfig, check_choice, check_dropout, check_positive
from nnlab.data.names import (ALPHABET, NameBatches, NamesDataset, ceiling, deduplicate, encode_names, fold_ascii,
                              grouped_split, load_names, overlap, random_split)
from nnlab.engine.learner import resolve_device
from nnlab.engine.metrics import check_predict_args
from nnlab.errors import CheckpointError, ConfigError, DataError
from nnlab.kinds.sequence import (check_classes, fit, rescore, test_scores, timing, top_classes,
                                  train_options)
from nnlab.kit.rundir import load_best
from nnlab.kit.kind import Kind
from nnlab.kit.run import RunStart, other_rank, plot_run_confusion, stopped_summary, summarize
from nnlab.models.names import MEMBER_KINDS


PROTOCOLS = ("grouped", "tutorial")
MODELS = ("rnn", "cnn", "ngrams", "ensemble")
TUTORIAL_TEST_FRACTION = 0.15  # the tutorial's random_split(..., [.85, .15])


@dataclass
class NamesConfig(RunConfig):
    """A classifier of short sequences (surname -> language): a folder of ``<Class>.txt`` files, one item a line."""

    kind: str = "names"
    model: str = "rnn"                  # rnn: name_rnn (bidirectional GRU/LSTM) | cnn: name_cnn (character CNN)
    #                                     | ngrams: name_ngrams (hashed n-gram bag) | ensemble: name_ensemble
    members: tuple[str, ...] = ("cnn", "cnn", "rnn")  # model ensemble: its members (cnn | rnn | ngrams), trained side by side
    orders: int = 5                     # model ngrams (or an ngrams member): n-gram orders 1..orders
    buckets: int = 2 ** 14              # model ngrams: hashed n-gram embeddings
    cell: str = "gru"                   # gru | lstm, bidirectional (model rnn)
    pooling: str = "last"               # model rnn: last | max | attention (additive attention over the states)
    filters: int = 256                  # model cnn: filters per kernel width
    widths: tuple[int, ...] = (2, 3, 4, 5)  # model cnn: kernel widths, in characters
    layers: int = 1
    hidden_size: int = 128
    embed: int = 32
    dropout: float = 0.1
    balance: str = "none"               # none | weighted-loss | sampler: counter class imbalance
    protocol: str = "grouped"           # grouped: deduplicated, no name in two splits | tutorial: random 85/15
    epochs: int = 12
    lr: float = 5e-3
    weight_decay: float = 1e-4
    clip: float | None = 1.0
    test_fraction: float = 0.1          # stratified held-out names: test_accuracy
    device: str = "cpu"                 # tiny batches of short sequences: the CPU beats a GPU's launch overhead

    def check(self) -> None:
        """Reject settings no names run could use, naming the setting."""
        super().check()
        check_choice("model", self.model, MODELS)
        if not self.members:
            raise ConfigError("members: an ensemble needs at least one member (cnn, rnn or ngrams)")
        for member in self.members:
            check_choice("members", member, MEMBER_KINDS)
        check_choice("cell", self.cell, ("lstm", "gru"))
        check_choice("pooling", self.pooling, ("last", "max", "attention"))
        check_choice("protocol", self.protocol, PROTOCOLS)
        if not self.widths or any(w < 1 for w in self.widths):
            raise ConfigError(f"widths must be at least 1, got {self.widths}")
        check_positive(self, "filters", "layers", "hidden_size", "embed", "orders", "buckets")
        check_dropout(self.dropout)


@dataclass
class NamesSplit:
    """The names a run uses (deduplicated under ``grouped``), its split's row indices, and what
    the summary says of the split (protocol, duplicates removed, overlap, ceiling, baseline)."""

    data: NamesDataset
    rows: dict[str, torch.Tensor]
    about: dict[str, Any]


def split_names(data: NamesDataset, config: NamesConfig) -> NamesSplit:
    """The run's split of ``data`` by ``config.protocol``; a pure function of the data and the seed.

    Too few distinct names for a training and a test split (say, a folder of one name
    repeated), fewer than two classes to train on, or a class left without training names (its
    distinct names too few) is a ``DataError`` naming the folder.
    """
    generator = torch.Generator().manual_seed(config.seed)
    removed = 0
    if config.protocol == "tutorial":
        rows = random_split(len(data.names), config.valid_fraction, TUTORIAL_TEST_FRACTION, generator)
        how = ("tutorial: a random 85/15 split of all lines, repeated names included; it leaks "
               "(test names also seen in training), so compare it only with published tutorial numbers")
    else:
        data, removed = deduplicate(data)
        rows = grouped_split(data.names, data.labels, config.valid_fraction, config.test_fraction, generator)
        how = (f"grouped: (name, language) pairs deduplicated, then each name string in one split only "
               f"(test {config.test_fraction:g}, valid {config.valid_fraction:g} of the rest), "
               "stratified by its rarest language")
    if len(rows["test"]) == 0 or len(rows["train"]) == 0:
        distinct = len(set(data.names))
        raise DataError(f"{data.source}: {distinct} distinct names (after removing {removed} duplicate lines) "
                        "are too few for a training and a test split")
    trained = sorted(set(data.labels[rows["train"]].tolist()))
    if len(trained) < 2:  # one class (or one left): every prediction right, nothing learned
        raise DataError(f"{data.source}: names of {len(trained)} class ({data.classes[trained[0]]}) to train on "
                        f"(after removing {removed} duplicate lines); a classifier needs at least two classes")
    missing = [name for index, name in enumerate(data.classes) if index not in trained]
    if missing:
        raise DataError(f"{data.source}: class {', '.join(missing)} has no training names after removing {removed} "
                        "duplicate lines (too few distinct names); add names or remove its file")
    test_names = [data.names[i] for i in rows["test"].tolist()]
    test_labels = data.labels[rows["test"]]
    majority = int(torch.bincount(data.labels[rows["train"]]).argmax())
    about = {"protocol": config.protocol, "split": how, "duplicates_removed": removed,
             **overlap(data.names, data.labels, rows),
             "ceiling": round(ceiling(test_names, test_labels), 4),
             "majority_baseline": round((test_labels == majority).float().mean().item(), 4),
             "majority_class": data.classes[majority]}
    return NamesSplit(data, rows, about)


def batches(data: NamesDataset, rows: torch.Tensor, batch_size: int, device: torch.device,
            **options: Any) -> NameBatches:
    """The names at ``rows`` as padded batches."""
    return NameBatches([data.names[i] for i in rows.tolist()], data.labels[rows], batch_size, device=device, **options)


def model_args(config: NamesConfig, n_classes: int) -> tuple[str, dict[str, Any]]:
    """The registry's model for ``config.model`` (``name_rnn``, ``name_cnn``, ``name_ngrams`` or
    ``name_ensemble``) and its arguments."""
    common = {"n_classes": n_classes, "n_tokens": len(ALPHABET) + 1, "embed": config.embed, "dropout": config.dropout}
    if config.model == "cnn":
        return "name_cnn", {**common, "filters": config.filters, "widths": list(config.widths)}
    if config.model == "ngrams":
        del common["n_tokens"]
        return "name_ngrams", {**common, "orders": config.orders, "buckets": config.buckets}
    if config.model == "ensemble":
        return "name_ensemble", {**common, "members": list(config.members), "filters": config.filters,
                                 "widths": list(config.widths), "hidden": config.hidden_size,
                                 "orders": config.orders, "buckets": config.buckets}
    return "name_rnn", {**common, "hidden": config.hidden_size, "layers": config.layers, "cell": config.cell,
                        "pooling": config.pooling}


def train(start: RunStart, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
    """Train the names run ``start`` describes; returns the summary (also ``summary.json``).

    ``dry_run`` trains one epoch on a few batches: a smoke test of the whole path.
    """
    config, device = start.config, start.device
    split = split_names(load_names(config.data), config)
    data, rows = split.data, split.rows
    n_classes = len(data.classes)
    train_rows = rows["train"][: 4 * config.batch_size] if dry_run else rows["train"]
    train_labels = data.labels[train_rows]
    train_batches = batches(data, train_rows, config.batch_size, device,
                            **train_options(config, train_labels, n_classes))
    valid_batches = (batches(data, rows["valid"], config.eval_batch_size, device) if len(rows["valid"]) else None)

    model_name, args = model_args(config, n_classes)
    trained = fit(start, model_name, args, train_batches, valid_batches, train_labels, n_classes, stream,
                  epochs=1 if dry_run else config.epochs, saved={"classes": list(data.classes), "alphabet": ALPHABET},
                  dry_run=dry_run)
    if not trained.main:  # rank 0 of a torchrun job scores and writes the run
        return other_rank(start, trained)
    if trained.stopped:
        return stopped_summary(start, trained)
    result = test_scores(trained.model, batches(data, rows["test"], config.eval_batch_size, device),
                         data.classes, device)
    plot_run_confusion(start, result["confusion"], data.classes)
    return summarize(start, trained, {
        "dataset": data.source, "model": model_name, "cell": config.cell if config.model == "rnn" else None,
        "balance": config.balance, "test_accuracy": result.pop("test_accuracy"),
        "test_macro_f1": result["macro"]["f1"], **split.about,
        "test_recall": {name: row["recall"] for name, row in result["per_class"].items()},
        **result, "names": {k: len(v) for k, v in rows.items()},
        **timing(trained, len(train_rows), "names_per_s"), "classes": list(data.classes)}, dry_run)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[NamesConfig, torch.nn.Module, dict]:
    """A names run's config, its best model (weights only) in eval mode, and the checkpoint's plain data."""
    config, model, state = load_best(run_dir, "names", device)
    if not isinstance(state.get("alphabet"), str):
        raise CheckpointError(f"{Path(run_dir) / 'best.pt'}: no alphabet saved with the model")
    return config, model, state


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """Reload ``best.pt``, split the names exactly as ``train`` did (same protocol and seed) and
    score the test names again."""
    run_dir = Path(run_dir)
    device = resolve_device(device_name or "cpu")
    config, model, state = load_run(run_dir, device)
    data = load_names(data_path or config.data, state["alphabet"])
    check_classes(data.source, data.classes, state)
    split = split_names(data, config)
    data, rows = split.data, split.rows
    test = NameBatches([data.names[i] for i in rows["test"].tolist()], data.labels[rows["test"]],
                       config.eval_batch_size, alphabet=state["alphabet"], device=device)
    return rescore(run_dir, config.recipe, model, test, data.classes, device)


def encode_inputs(state: dict, inputs: Sequence[str]) -> torch.Tensor:
    """Padded ids ``[N, L]`` of ``inputs`` folded to the run's alphabet; a name with no letter the
    model knows is a ``DataError`` naming it."""
    folded = [fold_ascii(name, state["alphabet"]) for name in inputs]
    empty = [name for name, f in zip(inputs, folded) if not f]
    if empty:
        raise DataError(f"no letters the model knows in {', '.join(repr(n) for n in empty)} "
                        f"(expected a name in Latin letters)")
    return encode_names(folded, state["alphabet"])


def input_tokens(state: dict, inputs: Sequence[str]) -> list[list[str]]:
    """The tokens ``encode_inputs`` gives each input, as text (its folded letters): what attention weighs."""
    return [list(fold_ascii(name, state["alphabet"])) for name in inputs]


def predict(run_dir: str | Path, inputs: Sequence[str], top_k: int = 3) -> list[dict]:
    """The ``top_k`` most likely classes (languages) with probabilities for each name in ``inputs``."""
    check_predict_args(inputs, top_k, "name")
    _, model, state = load_run(run_dir, "cpu")
    return top_classes(model, encode_inputs(state, inputs), inputs, state["classes"], top_k)


class NamesKind(Kind, functions=(train, evaluate, predict, load_run, encode_inputs, input_tokens)):
    """Surnames to their language: an RNN, a CNN, an n-gram bag or an ensemble of them, over characters."""

    name = "names"
    what = "names run"
    config = NamesConfig
    capabilities = frozenset({"resume", "ddp", "serve", "show"})
    takes_text = True

    def batch_figure(self, config: Any, n: int = 16) -> Any:
        """The first ``n`` names of the run's training split, with their languages."""
        from nnlab.inspection.report import text_rows_figure
        split = split_names(load_names(config.data), config)
        data, rows = split.data, split.rows["train"][:n].tolist()
        shown = [(data.names[i], data.classes[int(data.labels[i])]) for i in rows]
        return text_rows_figure(("name", "language"), shown, title=f"the first {len(rows)} training names")

    def results(self, run: Any, n: int = 16) -> Any:
        """The first ``n`` test names with their true and predicted languages (``nnlab predict``'s), mistakes in red."""
        from nnlab.inspection.report import text_rows_figure
        split = split_names(load_names(run.config.data, run.state["alphabet"]), run.config)
        rows = split.rows["test"][:n].tolist()
        names = [split.data.names[i] for i in rows]
        truths = [split.data.classes[int(split.data.labels[i])] for i in rows]
        guesses = [r["top"][0]["class"] for r in predict(run.run_dir, names, top_k=1)]
        return text_rows_figure(("name", "true", "predicted"), list(zip(names, truths, guesses)),
                                ["black" if t == g else "red" for t, g in zip(truths, guesses)],
                                "test names: true/predicted (mistakes in red)")
