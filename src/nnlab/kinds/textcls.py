"""Text classification runs: a word-level LSTM over padded, packed token ids; predictions for new texts.

``train`` reads ``--csv FILE`` (``--text-column``, ``--label-column``), holds out a stratified
``test_fraction`` (its accuracy is ``test_accuracy``) and a validation part of the rest (it
picks the best epoch), builds the vocabulary from the training rows only (``max_vocab``,
``min_freq``), trains ``text_rnn`` on batches of padded sequences that the model packs, and
writes a run directory like the names runner: ``config.json``, ``metrics.jsonl``,
``best.pt``/``last.pt`` (with the vocabulary and the classes as plain data, so the model is
rebuilt with weights-only loading), ``curves.png``, ``confusion.png`` and ``summary.json``
(accuracy, macro-F1, per-class precision/recall/F1, confusion matrix).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from nnlab.config import RunConfig, check_choice, check_dropout, check_positive
from nnlab.data.tabular import read_csv
from nnlab.data.textcls import TextDataset, TokenBatches, Vocab, build_vocab, encode_texts, load_text_csv, tokenize
from nnlab.engine.learner import predict_probs, resolve_device
from nnlab.engine.metrics import check_predict_args
from nnlab.errors import CheckpointError, ConfigError, DataError
from nnlab.files import atomic_write, save_figure
from nnlab.kinds.sequence import (check_classes, fit, rescore, split_stratified, test_scores, timing, top_classes,
                                  train_options)
from nnlab.kinds.tabular import class_predictions_csv
from nnlab.kit.rundir import check_output, load_best
from nnlab.kit.kind import CSV_OPTION, Kind, Option
from nnlab.kit.run import RunStart, plot_run_confusion, stopped_summary, summarize


@dataclass
class TextClassifyConfig(RunConfig):
    """Word-level text classification (say, review sentiment): ``--csv FILE --text-column C --label-column L``."""

    kind: str = "textcls"
    csv: str | None = None              # --csv FILE with a header row
    text_column: str | None = None      # --text-column NAME
    label_column: str | None = None     # --label-column NAME
    max_vocab: int = 20000              # vocabulary size, <pad> and <unk> included (from the training rows)
    min_freq: int = 2                   # rarer tokens are <unk>
    max_length: int = 256               # tokens kept from the start of each text
    cell: str = "lstm"                  # lstm | gru
    bidirectional: bool = True
    layers: int = 1
    hidden_size: int = 128
    embed: int = 100
    dropout: float = 0.3
    pooling: str = "last"               # last | max | attention (then `nnlab predict --explain` weighs each word)
    balance: str = "none"               # none | weighted-loss | sampler: counter class imbalance
    epochs: int = 6
    weight_decay: float = 1e-4
    clip: float | None = 1.0
    eval_batch_size: int = 512

    def check(self) -> None:
        """Reject settings no text-classification run could use, naming the setting."""
        super().check()
        check_choice("cell", self.cell, ("lstm", "gru"))
        check_choice("pooling", self.pooling, ("last", "max", "attention"))
        check_positive(self, "layers", "hidden_size", "embed", "max_length", "min_freq")
        if self.max_vocab < 3:
            raise ConfigError(f"max_vocab must be at least 3 (<pad>, <unk> and one word), got {self.max_vocab}")
        check_dropout(self.dropout)


def load_data(config: TextClassifyConfig, csv: str | None = None) -> TextDataset:
    """The run's CSV (``csv`` instead of the config's when given), or a ``ConfigError`` naming the missing flag."""
    path = csv or config.csv
    for value, flag in ((path, "--csv FILE"), (config.text_column, "--text-column NAME"),
                        (config.label_column, "--label-column NAME")):
        if not value:
            raise ConfigError(f"text classification needs {flag} "
                              f"(nnlab train text-classify --csv FILE --text-column NAME --label-column NAME)")
    return load_text_csv(path, config.text_column, config.label_column)


def split_rows(data: TextDataset, config: TextClassifyConfig) -> dict[str, torch.Tensor]:
    """Indices of the test rows (stratified), then of validation out of the rest; a pure function of the seed."""
    return split_stratified(data.labels, config, data.source, "rows")


def batches(data: TextDataset, rows: torch.Tensor, vocab: Vocab, config: TextClassifyConfig, batch_size: int,
            device: torch.device, **options: Any) -> TokenBatches:
    """The texts at ``rows`` as padded batches of token ids."""
    ids = encode_texts([data.documents[i] for i in rows.tolist()], vocab, config.max_length)
    return TokenBatches(ids, data.labels[rows], batch_size, device=device, **options)


def model_args(config: TextClassifyConfig, vocab: Vocab, n_classes: int) -> dict[str, Any]:
    """Arguments of the registry's ``text_rnn``."""
    return {"n_classes": n_classes, "n_tokens": len(vocab), "embed": config.embed, "hidden": config.hidden_size,
            "layers": config.layers, "cell": config.cell, "bidirectional": config.bidirectional,
            "dropout": config.dropout, "pooling": config.pooling}


def train(start: RunStart, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
    """Train the text-classification run ``start`` describes; returns the summary (also ``summary.json``).

    ``dry_run`` trains one epoch on a few batches: a smoke test of the whole path.
    """
    config, device = start.config, start.device
    data = load_data(config)
    rows = split_rows(data, config)
    n_classes = len(data.classes)
    train_rows = rows["train"][: 4 * config.batch_size] if dry_run else rows["train"]
    vocab = build_vocab((data.documents[i] for i in rows["train"].tolist()), config.max_vocab, config.min_freq)
    train_labels = data.labels[train_rows]
    train_batches = batches(data, train_rows, vocab, config, config.batch_size, device,
                            **train_options(config, train_labels, n_classes))
    valid_batches = (batches(data, rows["valid"], vocab, config, config.eval_batch_size, device)
                     if len(rows["valid"]) else None)

    trained = fit(start, "text_rnn", model_args(config, vocab, n_classes), train_batches, valid_batches,
                  train_labels, n_classes, stream, epochs=1 if dry_run else config.epochs,
                  saved={"classes": list(data.classes), "vocab": list(vocab.tokens), "max_length": config.max_length},
                  dry_run=dry_run)
    if trained.stopped:
        return stopped_summary(start, trained)
    test = batches(data, rows["test"], vocab, config, config.eval_batch_size, device)
    result = test_scores(trained.model, test, data.classes, device)
    plot_run_confusion(start, result["confusion"], data.classes)
    return summarize(start, trained, {
        "dataset": data.source, "model": "text_rnn", "cell": config.cell, "bidirectional": config.bidirectional,
        "pooling": config.pooling,
        "balance": config.balance, "test_accuracy": result.pop("test_accuracy"),
        "test_macro_f1": result["macro"]["f1"], **result, "rows": {k: len(v) for k, v in rows.items()},
        "vocab_size": len(vocab), **timing(trained, len(train_rows), "texts_per_s"),
        "classes": list(data.classes)}, dry_run)


def load_run(run_dir: str | Path,
             device: torch.device | str = "cpu") -> tuple[TextClassifyConfig, torch.nn.Module, Vocab, dict]:
    """A text run's config, its best model (weights only) in eval mode, its vocabulary and the checkpoint."""
    config, model, state = load_best(run_dir, "textcls", device)
    tokens = state.get("vocab")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise CheckpointError(f"{Path(run_dir) / 'best.pt'}: no vocabulary saved with the model")
    return config, model, Vocab(tokens), state


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """Reload ``best.pt``, split the CSV (``data_path`` instead of the run's) as ``train`` did, score the test rows."""
    run_dir = Path(run_dir)
    device = resolve_device(device_name or "cpu")
    config, model, vocab, state = load_run(run_dir, device)
    data = load_data(config, data_path)
    check_classes(data.source, data.classes, state)
    rows = split_rows(data, config)
    test = batches(data, rows["test"], vocab, config, config.eval_batch_size, device)
    return rescore(run_dir, config.recipe, model, test, data.classes, device)


def predict(run_dir: str | Path, inputs: Sequence[str] = (), top_k: int = 3, csv: str | Path | None = None,
            output: str | Path | None = None, explain: bool | None = None) -> list[dict] | dict[str, Any]:
    """The ``top_k`` most likely classes with probabilities for each text in ``inputs``; or, with
    ``csv``, every row of that CSV's text column predicted into a CSV (``predict_csv``). With
    ``explain`` (a run trained with ``pooling=attention``) each result also has every word's
    attention weight, and ``output`` names a PNG heat strip of the words to draw."""
    if csv is not None:
        if inputs or explain:
            raise ConfigError(f"predict: give texts (with --explain) or --csv {csv}, not both")
        return predict_csv(run_dir, csv, output)
    check_predict_args(inputs, top_k, "text")
    _, model, _, state = load_run(run_dir, "cpu")
    ids = encode_inputs(state, inputs)
    results = top_classes(model, ids, inputs, state["classes"], top_k)
    if explain:
        explain_words(run_dir, model, ids, [tokenize(text) for text in inputs], results, output)
    elif output is not None:
        raise ConfigError("predict: -o/--output is for --csv predictions or the --explain heat strip")
    return results


@torch.no_grad()
def explain_words(run_dir: str | Path, model: torch.nn.Module, ids: torch.Tensor, documents: list[list[str]],
                  results: list[dict], output: str | Path | None) -> None:
    """Add each word's attention weight (``words``: the text's words as written, unknown ones too,
    and their weights; padding left out) to ``results`` and, with ``output``, draw the words of
    every text as a heat strip there (``explanation``)."""
    if getattr(model, "attend", None) is None:
        raise ConfigError(f"--explain: {run_dir} pools by {model.config.pooling!r}; train it with "
                          "--set pooling=attention to weigh its words")
    weights = model.attention_weights(ids)                           # [N, L], 0 at padding
    for result, doc, weight in zip(results, documents, weights):
        words = doc[: ids.shape[1]]  # the words encode_texts kept (the first max_length)
        result["words"] = [{"word": w, "weight": round(float(a), 4)} for w, a in zip(words, weight[: len(words)])]
    if output is not None:
        path = save_figure(word_weights_figure([[(w["word"], w["weight"]) for w in r["words"]] for r in results],
                                               [r["top"][0]["class"] for r in results]), output)
        results[0]["explanation"] = str(path)


def word_weights_figure(texts: Sequence[Sequence[tuple[str, float]]], labels: Sequence[str]) -> Figure:
    """Each text as a strip of words, each on a background as dark as its attention weight (scaled
    to the largest weight drawn), after its predicted class (``nnlab predict --explain``'s picture)."""
    width = max(sum(len(w) + 1 for w, _ in words) for words in texts)
    # A monospace font: 10-point characters are 6 points (1/12 inch) wide, so columns are exact.
    label_inches, strip_inches = 1.0, width / 12 + 0.2
    fig = Figure(figsize=(label_inches + strip_inches, 0.4 + 0.4 * len(texts)))
    total = label_inches + strip_inches
    ax = fig.add_axes((label_inches / total, 0, strip_inches / total, 1))
    ax.set_axis_off()
    peak = max((a for words in texts for _, a in words), default=0.0) or 1.0
    for row, (words, label) in enumerate(zip(texts, labels)):
        y, column = 1 - (row + 0.5) / len(texts), 0
        ax.text(-0.01, y, f"{label}:", ha="right", va="center", fontsize=10, transform=ax.transAxes)
        for word, weight in words:
            shade = weight / peak
            ax.text(column / 12 / strip_inches, y, word, ha="left", va="center", fontsize=10,
                    family="monospace", color="white" if shade > 0.6 else "black", transform=ax.transAxes,
                    bbox={"facecolor": colormaps["Reds"](shade), "edgecolor": "none", "pad": 1.5})
            column += len(word) + 1
    return fig


def encode_inputs(state: dict, inputs: Sequence[str]) -> torch.Tensor:
    """Padded token ids ``[N, L]`` of ``inputs`` in the run's vocabulary (unknown words are ``<unk>``);
    a text without a word is a ``DataError`` naming it."""
    documents = [tokenize(text) for text in inputs]
    empty = [text for text, doc in zip(inputs, documents) if not doc]
    if empty:
        raise DataError(f"no words in {', '.join(repr(t) for t in empty)}")
    return encode_texts(documents, Vocab(state["vocab"]), state["max_length"])


def input_tokens(state: dict, inputs: Sequence[str]) -> list[list[str]]:
    """The tokens ``encode_inputs`` gives each input, as text (its first ``max_length`` words): what attention weighs."""
    return [tokenize(text)[: state["max_length"]] for text in inputs]


def predict_csv(run_dir: str | Path, csv: str | Path, output: str | Path | None = None) -> dict[str, Any]:
    """Classify the run's text column in every row of ``csv``; write the rows with
    ``predicted_LABEL`` and one ``probability_CLASS`` column per class to ``output`` (default
    ``NAME.predictions.csv`` beside the input, written atomically). A missing column or a row
    without words is a ``DataError`` naming the file (and line). Where the CSV also has the
    label column, the result gives the accuracy on its rows with known classes."""
    config, model, vocab, state = load_run(run_dir, "cpu")
    table = read_csv(csv)
    documents = [tokenize(text) for text in table.column(config.text_column)]
    for doc, line in zip(documents, table.lines):
        if not doc:
            raise DataError(f"{table.source}: line {line}: no text in column {config.text_column!r}")
    classes = state["classes"]
    ids = encode_texts(documents, vocab, state["max_length"])
    rows = TokenBatches(ids, torch.zeros(len(ids), dtype=torch.long), config.eval_batch_size)
    probs, _ = predict_probs(model, rows, torch.device("cpu"))
    out = check_output(output or Path(csv).with_suffix(".predictions.csv"), csv)
    data = class_predictions_csv(table, config.label_column, classes, probs)
    atomic_write(out, data)
    predicted = probs.argmax(1)
    result: dict[str, Any] = {"run_dir": str(run_dir), "csv": str(csv), "out": str(out), "rows": len(table.rows),
                              "predicted_counts": dict(zip(classes, torch.bincount(predicted, minlength=len(classes))
                                                           .tolist()))}
    if config.label_column in table.columns:
        index = {name: i for i, name in enumerate(classes)}
        known = [(i, index[label]) for i, label in enumerate(table.column(config.label_column)) if label in index]
        if known:
            hits = sum(int(predicted[i]) == label for i, label in known)
            result.update(labelled_rows=len(known), accuracy=hits / len(known))
    return result


class TextClassifyKind(Kind, functions=(train, evaluate, predict, load_run, encode_inputs, input_tokens)):
    """Text classification (sentiment, topics) of a CSV_OPTION's texts, with attention pooling's word weights."""

    name = "textcls"
    what = "text-classification run"
    config = TextClassifyConfig
    capabilities = frozenset({"resume", "serve"})
    predict_options = ("csv", "output", "explain")
    takes_text = True
    options = (CSV_OPTION, Option("--text-column", "text_column", "text-classify runs: the CSV_OPTION column of texts"),
               Option("--label-column", "label_column", "text-classify runs: the CSV_OPTION column of labels"))

