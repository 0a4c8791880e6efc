"""Language-model runs over characters or words (char-RNN, a small transformer): train with
truncated windows, evaluate, sample.

``train`` reads the text (Tiny Shakespeare or ``--data FILE``), keeps its last 10% as
validation, cuts both parts into parallel streams (``nnlab.data.text.StreamBatches``) and
fits the model wrapped in ``TruncatedBPTT``, so the state flows from one window to the next
without gradients crossing windows. ``model=rnn`` is a ``char_rnn`` (LSTM/GRU, ``cell``), whose
state is its hidden state; ``model=transformer`` a ``char_transformer`` (causal self-attention,
``nnlab.models.transformer``) with a context of ``bptt`` tokens, whose state is the text it has
read: it trains on independent windows of ``bptt`` and validates on windows of ``eval_bptt``
(default ``bptt // 2``) read after the preceding ``bptt - eval_bptt`` tokens.

``tokens=char`` (the default): loss in nats per character; the summary also gives bits per
character (``valid_bpc`` = ``valid_loss`` / ln 2). ``tokens=word``: words, punctuation marks and
line breaks (``nnlab.data.text.split_words``), a vocabulary of the training text's
``max_vocab`` most frequent tokens with ``<unk>`` for the rest, the text's last
``test_fraction`` held out as a test part, and perplexity per word (``exp`` of nats per word) on
validation and test. With ``--time-budget`` (the run kit's, as for every kind) the schedule runs
on the share of the budget used and training stops, validated and checkpointed, before the
budget runs out. ``sample`` generates text (characters or words) from ``best.pt``.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch

from nnlab.config import RunConfig, check_choice, check_dropout, check_positive
from nnlab.data.text import (StreamBatches, Vocab, WordVocab, load_corpus, split_stream, split_three,
                             split_words)
from nnlab.engine.callbacks import ProgressCallback
from nnlab.engine.learner import Callback, autocast, resolve_device, resolve_precision
from nnlab.errors import CheckpointError, ConfigError, DataError
from nnlab.kit.rundir import load_best, read_summary
from nnlab.kit.kind import Kind
from nnlab.kit.run import RunStart, Spec, other_rank, stopped_summary, summarize, train_model
from nnlab.models import create_model
from nnlab.models.rnn import TruncatedBPTT

LN2 = math.log(2.0)
# model -> the registered model it builds
MODEL_NAMES = {"rnn": "char_rnn", "transformer": "char_transformer"}


@dataclass
class CharLMConfig(RunConfig):
    """A language model (char-RNN or a causal transformer) over the characters or words of a UTF-8
    text file, trained on truncated windows."""

    kind: str = "text"
    model: str = "rnn"                  # rnn (an LSTM/GRU: cell) | transformer (causal self-attention)
    cell: str = "lstm"                  # lstm | gru
    layers: int = 2
    hidden_size: int = 256              # the RNN's state; the transformer's width
    embed: int = 64                     # RNN: token embedding width (= hidden_size to tie weights)
    heads: int = 4                      # transformer: attention heads (hidden_size must divide into them)
    dropout: float = 0.2
    locked_dropout: bool = False        # RNN (like cell and embed): one dropout mask per window, held over its steps
    tie_weights: bool = False           # the output layer's weight is the token embedding's
    bptt: int = 128                     # window length T: gradients flow back at most this far (transformer: its context)
    eval_bptt: int | None = None        # validation window (None: bptt for an RNN, bptt // 2 for a transformer)
    tokens: str = "char"                # char | word (words, punctuation marks and line breaks)
    max_vocab: int = 10000              # word tokens: <unk> and the training text's most frequent tokens
    test_fraction: float = 0.1          # word tokens: the text's last part, scored once at the end
    epochs: int = 10                    # passes over the training text (under a time budget the budget ends the run)
    pct_start: float = 0.1
    clip: float | None = 1.0            # gradient clipping, on by default for RNNs
    eval_batch_size: int = 64           # parallel streams of the validation text (its tail, contiguous)

    def check(self) -> None:
        """Reject settings no language-model run could use, naming the setting."""
        super().check()
        check_choice("model", self.model, tuple(MODEL_NAMES))
        check_choice("cell", self.cell, ("lstm", "gru"))
        check_choice("tokens", self.tokens, ("char", "word"))
        check_positive(self, "layers", "hidden_size", "embed", "bptt", "heads")
        if self.model == "rnn" and self.tie_weights and self.embed != self.hidden_size:
            raise ConfigError(f"tie_weights needs embed == hidden_size, got {self.embed} and {self.hidden_size}")
        if self.model == "transformer" and self.hidden_size % self.heads:
            raise ConfigError(f"hidden_size {self.hidden_size} (the transformer's width) must divide into "
                              f"heads={self.heads}")
        if self.eval_bptt is not None and not 1 <= self.eval_bptt <= self.bptt:
            raise ConfigError(f"eval_bptt must be in [1, bptt={self.bptt}], got {self.eval_bptt}")
        if self.max_vocab < 2:
            raise ConfigError(f"max_vocab must be at least 2 (<unk> and one word), got {self.max_vocab}")
        check_dropout(self.dropout)
        if self.valid_fraction == 0.0:
            raise ConfigError(f"valid_fraction must be in (0, 1) for a language model, got {self.valid_fraction}")
        if self.tokens == "word" and self.valid_fraction + self.test_fraction >= 1.0:
            raise ConfigError(f"valid_fraction + test_fraction must leave text to train on, got "
                              f"{self.valid_fraction} + {self.test_fraction}")

    @property
    def unit(self) -> str:
        return "word" if self.tokens == "word" else "char"

    @property
    def valid_window(self) -> int:
        """The validation window: ``eval_bptt``, or by default the whole window (RNN) or half (transformer)."""
        if self.eval_bptt is not None:
            return self.eval_bptt
        return max(1, self.bptt // 2) if self.model == "transformer" else self.bptt


@dataclass
class Corpus:
    """A text as ids: the vocabulary, the training, validation and (word tokens) test streams,
    where it came from, and the share of ``<unk>`` in each held-out part (word tokens)."""

    vocab: Vocab | WordVocab
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor | None
    source: str

    def unk_share(self, ids: torch.Tensor) -> float | None:
        return float((ids == 0).float().mean()) if isinstance(self.vocab, WordVocab) and len(ids) else None


def read_corpus(config: CharLMConfig, data: str | None = None, vocab: Vocab | WordVocab | None = None) -> Corpus:
    """``data`` (default: the config's, or Tiny Shakespeare) as ids of ``vocab`` (default: built from the
    text: its characters, or its training part's most frequent words)."""
    text, source = load_corpus(data or config.data)
    if config.tokens == "char":
        vocab = vocab if vocab is not None else Vocab.from_text(text)
        train_ids, valid_ids = split_stream(vocab.encode(text, source), config.valid_fraction)
        return Corpus(vocab, train_ids, valid_ids, None, source)
    words = split_words(text)
    train_words, valid_words, test_words = split_three(words, config.valid_fraction, config.test_fraction)
    vocab = vocab if vocab is not None else WordVocab.from_tokens(train_words, config.max_vocab)
    return Corpus(vocab, vocab.ids(train_words), vocab.ids(valid_words), vocab.ids(test_words), source)


def stream_batches(config: CharLMConfig, ids: torch.Tensor, device: torch.device | str,
                   generator: torch.Generator | None = None) -> StreamBatches:
    """Training windows (with ``generator``: a random offset each pass) or held-out windows of ``ids``."""
    if generator is not None:
        return StreamBatches(ids, config.batch_size, config.bptt, shuffle_offset=True, generator=generator,
                             device=device)
    return StreamBatches(ids, config.eval_batch_size, config.valid_window, device=device)


class ResetState(Callback):
    """Starts the carried hidden state from zeros at each pass over the text and before validation."""

    def __init__(self, model: TruncatedBPTT) -> None:
        self.model = model

    def before_epoch(self) -> None:
        self.model.reset()

    def after_train(self) -> None:
        self.model.reset()


class CharProgress(ProgressCallback):
    """The progress bar, and per epoch a line in nats and bits per character (nats and perplexity per word)."""

    def __init__(self, stream: TextIO | None = None, unit: str = "char") -> None:
        super().__init__(stream)
        self.unit = unit

    def after_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        m = self.learner.metrics
        valid = ""
        if m.get("valid_loss") is not None:
            other = (f"perplexity {math.exp(min(m['valid_loss'], 50.0)):.1f}" if self.unit == "word"
                     else f"{m['valid_loss'] / LN2:.3f} bpc")
            valid = f"valid {m['valid_loss']:.4f} nats/{self.unit} ({other})"
        print(f"epoch {m['epoch']}  step {self.learner.step}  train {m['train_loss']:.4f}  {valid}  "
              f"lr {m['lr']:.2e}  {m['train_images_per_s']:.0f} {self.unit}s/s  {m['seconds']:.1f}s",
              file=self.stream, flush=True)


def model_args(config: CharLMConfig, vocab_size: int) -> dict[str, Any]:
    """Arguments of the registered model (``MODEL_NAMES[config.model]``) for this config and vocabulary."""
    if config.model == "transformer":
        return {"n_classes": vocab_size, "context": config.bptt, "width": config.hidden_size,
                "layers": config.layers, "heads": config.heads, "dropout": config.dropout,
                "tie_weights": config.tie_weights}
    return {"n_classes": vocab_size, "embed": config.embed, "hidden": config.hidden_size, "layers": config.layers,
            "cell": config.cell, "dropout": config.dropout, "tie_weights": config.tie_weights,
            "locked_dropout": config.locked_dropout}


def train(start: RunStart, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
    """Train the language-model run ``start`` describes; returns the summary (also ``summary.json``).

    ``dry_run`` trains on a few windows for one epoch: a smoke test of the whole path. A resumed
    run must read the text it was trained on; under a time budget it continues with the
    budget it had left.
    """
    config, device, run_dir, checkpoint = start.config, start.device, start.run_dir, start.checkpoint
    corpus = read_corpus(config)
    vocab, train_ids, valid_ids = corpus.vocab, corpus.train, corpus.valid
    if checkpoint is not None and checkpoint["vocab"] != vocab.saved:
        raise DataError(f"--resume {run_dir}: {corpus.source} is not the text this run was trained on "
                        f"(its {'words' if config.tokens == 'word' else 'characters'} differ)")
    if dry_run:
        train_ids = train_ids[: 4 * config.batch_size * config.bptt + config.bptt + 1]
        valid_ids = valid_ids[: 2 * config.eval_batch_size * config.valid_window + config.valid_window + 1]
    generator = torch.Generator().manual_seed(config.seed)
    train_batches = stream_batches(config, train_ids, device, generator)
    valid_batches = stream_batches(config, valid_ids, device)

    name, args = MODEL_NAMES[config.model], model_args(config, len(vocab))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # initialization, without touching the caller's global RNG
        model = create_model(name, **args)
    carried = TruncatedBPTT(model)
    spec = Spec(model, train_batches, valid_batches, torch.nn.CrossEntropyLoss(),
                saved={"model_name": name, "model_args": args, "vocab": vocab.saved}, module=carried,
                generator=generator, epochs=1 if dry_run else config.epochs, dry_run=dry_run,
                progress=CharProgress(stream, config.unit), callbacks=[ResetState(carried)],
                dropout_seed=config.seed + 1)
    trained = train_model(start, spec, stream)
    if not trained.main:  # rank 0 of a torchrun job scores and writes the run
        return other_rank(start, trained)
    if trained.stopped:
        return stopped_summary(start, trained)
    valid_loss = trained.best["best"]["score"]
    best_row = trained.history[trained.best["best"]["epoch"] - 1]
    tokens = trained.learner.step * config.batch_size * config.bptt
    speed = round(tokens / trained.train_seconds, 1) if trained.train_seconds else None
    result = {"dataset": corpus.source, "model": name, "tokens": config.tokens, "cell": config.cell,
              "layers": config.layers, "hidden_size": config.hidden_size,
              "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(vocab),
              "valid_loss": valid_loss, "valid_acc": best_row["valid_acc"], "time_budget": config.time_budget}
    if config.tokens == "char":
        result.update(train_chars=len(train_ids), valid_chars=len(valid_ids), valid_bpc=valid_loss / LN2,
                      chars_per_s=speed)
    else:
        test_ids = corpus.test[: len(valid_ids)] if dry_run else corpus.test
        test_loss = stream_loss(model, stream_batches(config, test_ids, device), trained.learner.precision)
        result.update(train_tokens=len(train_ids), valid_tokens=len(valid_ids), test_tokens=len(test_ids),
                      valid_perplexity=math.exp(valid_loss), test_loss=test_loss, test_perplexity=math.exp(test_loss),
                      valid_unk_share=corpus.unk_share(valid_ids), test_unk_share=corpus.unk_share(test_ids),
                      tokens_per_s=speed)
    return summarize(start, trained, result, dry_run)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu"
             ) -> tuple[CharLMConfig, torch.nn.Module, Vocab | WordVocab]:
    """A language-model run's config, its best model (weights only) in eval mode, and its vocabulary
    (characters: a string in the checkpoint; words: a list of strings)."""
    config, model, state = load_best(run_dir, "text", device)
    saved = state.get("vocab")
    if isinstance(saved, str):
        return config, model, Vocab(saved)
    if isinstance(saved, list) and saved and all(isinstance(w, str) for w in saved):
        return config, model, WordVocab(tuple(saved))
    raise CheckpointError(f"{Path(run_dir) / 'best.pt'}: no vocabulary saved with the model")


@torch.no_grad()
def stream_loss(model: torch.nn.Module, batches: StreamBatches, precision: str = "fp32") -> float:
    """Mean cross-entropy in nats per token over ``batches``, with the state carried (``precision``:
    the autocast of the forward passes, as in training's validation)."""
    carried = TruncatedBPTT(model).eval()
    device = batches.device
    total, count = 0.0, 0
    for x, y in batches:
        with autocast(device, resolve_precision(precision, device)):
            logits = carried(x)
        total += torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum").item()
        count += len(y)
    return total / max(count, 1)


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None,
             precision: str | None = None) -> dict[str, Any]:
    """Reload ``best.pt`` and measure the validation loss again (nats and bits per character; word
    runs: nats and perplexity per word, on the test part too), in the run's precision unless
    ``precision`` is given."""
    run_dir = Path(run_dir)
    device = resolve_device(device_name or "cpu")
    config, model, vocab = load_run(run_dir, device)
    corpus = read_corpus(config, data_path, vocab)
    precision = precision or config.precision
    loss = stream_loss(model, stream_batches(config, corpus.valid, device), precision)
    result = {"run_dir": str(run_dir), "recipe": config.recipe, "dataset": corpus.source, "valid_loss": loss}
    if corpus.test is None:
        result["valid_bpc"] = loss / LN2
    else:
        test_loss = stream_loss(model, stream_batches(config, corpus.test, device), precision)
        result.update(valid_perplexity=math.exp(loss), test_loss=test_loss, test_perplexity=math.exp(test_loss))
    summary = read_summary(run_dir)
    if summary is not None:
        result["summary_valid_loss"] = summary.get("valid_loss")
    return result


def _next_char_probs(model: torch.nn.Module, ids: torch.Tensor, hidden: Any) -> tuple[torch.Tensor, Any]:
    logits, hidden = model.forward_sequence(ids.view(1, -1), hidden)  # [1, T, V]
    return logits[0, -1].float(), hidden


def encode_prime(vocab: Vocab | WordVocab, text: str, what: str = "--prime") -> tuple[torch.Tensor, list[str]]:
    """The ids of ``text`` and warnings: characters outside a character vocabulary are a ``DataError``;
    words outside a word vocabulary become ``<unk>``, with a warning naming them; a text with no
    word at all is a ``ConfigError``."""
    if isinstance(vocab, Vocab):
        return vocab.encode(text, what), []
    words = split_words(text)
    if not words:
        raise ConfigError(f"{what}: a word-level run needs at least one word to start from, got {text!r}")
    unknown = vocab.unknown(words)
    warnings = []
    if unknown:
        shown = ", ".join(repr(w) for w in unknown[:10])
        warnings.append(f"{what}: {len(unknown)} word(s) not in the model's vocabulary of {len(vocab)}, "
                        f"read as <unk>: {shown}")
    return vocab.ids(words), warnings


@torch.no_grad()
def sample(run_dir: str | Path, prime: str | None = None, length: int = 500, temperature: float = 0.8,
           top_k: int | None = None, seed: int = 0, device_name: str | None = None) -> dict[str, Any]:
    """Generate ``length`` characters (words, for a word-level run) after ``prime`` from the run's best
    model; the text starts with the prime.

    Each token is drawn from softmax(logits / ``temperature``), restricted to the ``top_k``
    most likely when given, with a generator seeded by ``seed`` (same seed, same text).
    ``prime`` defaults to a newline (the start of a paragraph) where the vocabulary has one. A
    word-level run never draws ``<unk>``; words of the prime outside its vocabulary are read as
    ``<unk>`` and named in ``warnings`` (also printed to stderr).
    """
    if length < 0:
        raise ConfigError(f"--length must be at least 0, got {length}")
    if temperature <= 0:
        raise ConfigError(f"--temperature must be positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    device = resolve_device(device_name or "cpu")
    _, model, vocab = load_run(run_dir, device)
    words = isinstance(vocab, WordVocab)
    if prime is None:
        prime = "\n" if "\n" in vocab.saved else vocab.token(min(1, len(vocab) - 1) if words else 0)
    if not prime and not words:  # a word-level run's prime: encode_prime says it needs a word
        raise ConfigError("--prime must hold at least one character")
    ids, warnings = encode_prime(vocab, prime)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    generator = torch.Generator(device=device).manual_seed(seed)
    logits, hidden = _next_char_probs(model, ids.to(device), None)
    out: list[int] = []
    for _ in range(length):
        logits = logits / temperature
        if words:
            logits[0] = -math.inf  # <unk> is not a word to write
        if top_k is not None and top_k < len(logits):
            kth = logits.topk(top_k).values[-1]
            logits = logits.masked_fill(logits < kth, -math.inf)
        next_id = torch.multinomial(logits.softmax(0), 1, generator=generator)  # [1]
        out.append(int(next_id))
        logits, hidden = _next_char_probs(model, next_id, hidden)
    text = prime + (vocab.decode(out, after=split_words(prime)[-1]) if words else vocab.decode(out))
    result = {"run_dir": str(run_dir), "prime": prime, "text": text, "length": length,
              "temperature": temperature, "top_k": top_k, "seed": seed}
    if words:
        result.update(tokens="word", words=[vocab.token(i) for i in out], warnings=warnings)
    return result


@torch.no_grad()
def predict(run_dir: str | Path, inputs: Sequence[str], top_k: int = 3) -> list[dict]:
    """For each input text, the ``top_k`` most likely next characters (words) with their probabilities."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if not inputs:
        raise ConfigError("predict: give at least one text to continue")
    _, model, vocab = load_run(run_dir, "cpu")
    results = []
    for text in inputs:
        ids, warnings = encode_prime(vocab, text, f"input {text!r}")
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        logits, _ = _next_char_probs(model, ids, None)
        values, indices = logits.softmax(0).topk(min(top_k, len(vocab)))
        results.append({"file": text, "top": [{"class": vocab.token(i), "probability": round(p, 6)}
                                              for p, i in zip(values.tolist(), indices.tolist())]})
    return results


class CharLMKind(Kind, functions=(train, evaluate, predict, load_run, sample)):
    """Char- and word-level language models (LSTM/GRU or a small transformer) trained by truncated BPTT."""

    name = "text"
    what = "char-RNN run"
    config = CharLMConfig
    capabilities = frozenset({"resume", "ddp", "sample", "show"})
    metrics = ("valid_loss", "valid_bpc")

    def scores(self, result: dict[str, Any]) -> list[str]:
        if result.get("valid_bpc") is None:
            return []
        return [f"valid loss {result['valid_loss']:.4f} nats/char ({result['valid_bpc']:.3f} bits/char)"]

    def batch_figure(self, config: Any, n: int = 16) -> Any:
        """The first window of the training stream: ``n`` of its rows (each a stream of the text), the
        characters the model reads and the ones it must predict (the same, one on)."""
        from nnlab.inspection.report import text_rows_figure
        corpus = read_corpus(config)
        x, y = next(iter(StreamBatches(corpus.train, config.batch_size, config.bptt)))  # [B, T], [B*T]
        y = y.view(x.shape)  # [B, T]
        shown = [(str(b), _visible(corpus.vocab.decode(x[b])), _visible(corpus.vocab.decode(y[b])))
                 for b in range(min(n, len(x)))]
        return text_rows_figure(("stream", "input", "target"), shown,
                                title=f"the first training window: {len(shown)} of {len(x)} streams, "
                                      f"{config.bptt} {config.unit}s each")

    def results(self, run: Any, n: int = 16) -> Any:
        """``n`` places spread over the validation text: the text before each, the next character
        (word) and ``nnlab predict``'s guess of it, mistakes in red."""
        from nnlab.inspection.report import text_rows_figure
        _, _, vocab = load_run(run.run_dir, "cpu")
        valid = read_corpus(run.config, vocab=vocab).valid
        context = 40 if run.config.tokens == "char" else 12
        starts = torch.linspace(0, len(valid) - context - 1, n).long().unique().tolist()
        texts = [vocab.decode(valid[s:s + context]) for s in starts]
        truths = [vocab.token(int(valid[s + context])) for s in starts]
        guesses = [r["top"][0]["class"] for r in predict(run.run_dir, texts, top_k=1)]
        return text_rows_figure(("text", "next", "predicted"),
                                [(_visible(t), _visible(a), _visible(b)) for t, a, b in zip(texts, truths, guesses)],
                                ["black" if a == b else "red" for a, b in zip(truths, guesses)],
                                "validation text: the next token, true/predicted (mistakes in red)")

def _visible(text: str) -> str:
    """``text`` on one line: line breaks and tabs shown as escapes."""
    return text.replace("\n", "\\n").replace("\t", "\\t")
