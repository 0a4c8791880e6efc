"""Character-level language model runs (char-RNN): train with truncated BPTT, evaluate, sample.

``train`` reads the text (Tiny Shakespeare or ``--data FILE``), keeps its last 10% as
validation, cuts both parts into parallel streams (``nnlab.data.text.StreamBatches``) and
fits a ``char_rnn`` wrapped in ``TruncatedBPTT``, so the hidden state flows from one window
to the next without gradients crossing windows. Loss is in nats per character; the summary
also gives bits per character (``valid_bpc`` = ``valid_loss`` / ln 2). With ``--time-budget``
(the run kit's, as for every kind) the schedule runs on the share of the budget used and
training stops, validated and checkpointed, before the budget runs out. ``sample`` generates text from ``best.pt``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch

from nnlab.config import RunConfig, check_choice, check_dropout, check_positive
from nnlab.data.text import StreamBatches, Vocab, load_corpus, split_stream
from nnlab.engine.callbacks import ProgressCallback
from nnlab.engine.learner import Callback, resolve_device
from nnlab.errors import CheckpointError, ConfigError, DataError
from nnlab.kit.rundir import load_best, read_summary
from nnlab.kit.run import RunStart, Spec, stopped_summary, summarize, train_model
from nnlab.models import create_model
from nnlab.models.rnn import CharRNN, TruncatedBPTT

LN2 = math.log(2.0)


@dataclass
class CharLMConfig(RunConfig):
    """A character-level language model (char-RNN) on a UTF-8 text file, trained with truncated BPTT."""

    kind: str = "text"
    cell: str = "lstm"                  # lstm | gru
    layers: int = 2
    hidden_size: int = 256
    embed: int = 64                     # character embedding width (= hidden_size to tie weights)
    dropout: float = 0.2
    tie_weights: bool = False
    bptt: int = 128                     # window length T: gradients flow back at most this far
    epochs: int = 10                    # passes over the training text (under a time budget the budget ends the run)
    pct_start: float = 0.1
    clip: float | None = 1.0            # gradient clipping, on by default for RNNs
    eval_batch_size: int = 64           # parallel streams of the validation text (its tail, contiguous)

    def check(self) -> None:
        """Reject settings no char-RNN run could use, naming the setting."""
        super().check()
        check_choice("cell", self.cell, ("lstm", "gru"))
        check_positive(self, "layers", "hidden_size", "embed", "bptt")
        if self.tie_weights and self.embed != self.hidden_size:
            raise ConfigError(f"tie_weights needs embed == hidden_size, got {self.embed} and {self.hidden_size}")
        check_dropout(self.dropout)
        if self.valid_fraction == 0.0:
            raise ConfigError(f"valid_fraction must be in (0, 1) for a language model, got {self.valid_fraction}")


class ResetState(Callback):
    """Starts the carried hidden state from zeros at each pass over the text and before validation."""

    def __init__(self, model: TruncatedBPTT) -> None:
        self.model = model

    def before_epoch(self) -> None:
        self.model.reset()

    def after_train(self) -> None:
        self.model.reset()


class CharProgress(ProgressCallback):
    """The progress bar, and per epoch a line in nats and bits per character."""

    def after_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        m = self.learner.metrics
        valid = (f"valid {m['valid_loss']:.4f} nats/char ({m['valid_loss'] / LN2:.3f} bpc)"
                 if m.get("valid_loss") is not None else "")
        print(f"epoch {m['epoch']}  step {self.learner.step}  train {m['train_loss']:.4f}  {valid}  "
              f"lr {m['lr']:.2e}  {m['train_images_per_s']:.0f} chars/s  {m['seconds']:.1f}s",
              file=self.stream, flush=True)


def model_args(config: CharLMConfig, vocab_size: int) -> dict[str, Any]:
    """Arguments of the registry's ``char_rnn`` for this config and vocabulary."""
    return {"n_classes": vocab_size, "embed": config.embed, "hidden": config.hidden_size, "layers": config.layers,
            "cell": config.cell, "dropout": config.dropout, "tie_weights": config.tie_weights}


def train(start: RunStart, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
    """Train the char-RNN run ``start`` describes; returns the summary (also ``summary.json``).

    ``dry_run`` trains on a few windows for one epoch: a smoke test of the whole path. A resumed
    run must read the text it was trained on; under a time budget it continues with the
    budget it had left.
    """
    config, device, run_dir, checkpoint = start.config, start.device, start.run_dir, start.checkpoint
    text, source = load_corpus(config.data)
    vocab = Vocab.from_text(text)
    if checkpoint is not None and checkpoint["vocab"] != vocab.chars:
        raise DataError(f"--resume {run_dir}: {source} is not the text this run was trained on "
                        "(its characters differ)")
    train_ids, valid_ids = split_stream(vocab.encode(text, source), config.valid_fraction)
    if dry_run:
        train_ids = train_ids[: 4 * config.batch_size * config.bptt + config.bptt + 1]
        valid_ids = valid_ids[: 2 * config.eval_batch_size * config.bptt + config.bptt + 1]
    generator = torch.Generator().manual_seed(config.seed)
    train_batches = StreamBatches(train_ids, config.batch_size, config.bptt, shuffle_offset=True,
                                  generator=generator, device=device)
    valid_batches = StreamBatches(valid_ids, config.eval_batch_size, config.bptt, device=device)

    args = model_args(config, len(vocab))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # initialization, without touching the caller's global RNG
        model: CharRNN = create_model("char_rnn", **args)
    carried = TruncatedBPTT(model)
    spec = Spec(model, train_batches, valid_batches, torch.nn.CrossEntropyLoss(),
                saved={"model_name": "char_rnn", "model_args": args, "vocab": vocab.chars}, module=carried,
                generator=generator, epochs=1 if dry_run else config.epochs, dry_run=dry_run,
                progress=CharProgress(stream), callbacks=[ResetState(carried)], dropout_seed=config.seed + 1)
    trained = train_model(start, spec, stream)
    if trained.stopped:
        return stopped_summary(start, trained)
    valid_loss = trained.best["best"]["score"]
    best_row = trained.history[trained.best["best"]["epoch"] - 1]
    chars = trained.learner.step * config.batch_size * config.bptt
    return summarize(start, trained, {
        "dataset": source, "model": "char_rnn", "cell": config.cell, "layers": config.layers,
        "hidden_size": config.hidden_size, "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(vocab), "train_chars": len(train_ids), "valid_chars": len(valid_ids),
        "valid_loss": valid_loss, "valid_bpc": valid_loss / LN2, "valid_acc": best_row["valid_acc"],
        "time_budget": config.time_budget,
        "chars_per_s": round(chars / trained.train_seconds, 1) if trained.train_seconds else None}, dry_run)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[CharLMConfig, CharRNN, Vocab]:
    """A char-RNN run's config, its best model (weights only) in eval mode, and its vocabulary."""
    config, model, state = load_best(run_dir, "text", device)
    if not isinstance(state.get("vocab"), str):
        raise CheckpointError(f"{Path(run_dir) / 'best.pt'}: no vocabulary saved with the model")
    return config, model, Vocab(state["vocab"])


@torch.no_grad()
def stream_loss(model: CharRNN, batches: StreamBatches) -> float:
    """Mean cross-entropy in nats per character over ``batches``, with the hidden state carried."""
    carried = TruncatedBPTT(model).eval()
    total, count = 0.0, 0
    for x, y in batches:
        total += torch.nn.functional.cross_entropy(carried(x).float(), y, reduction="sum").item()
        count += len(y)
    return total / max(count, 1)


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """Reload ``best.pt`` and measure the validation loss again (nats and bits per character)."""
    run_dir = Path(run_dir)
    device = resolve_device(device_name or "cpu")
    config, model, vocab = load_run(run_dir, device)
    text, source = load_corpus(data_path or config.data)
    _, valid_ids = split_stream(vocab.encode(text, source), config.valid_fraction)
    loss = stream_loss(model, StreamBatches(valid_ids, config.eval_batch_size, config.bptt, device=device))
    result = {"run_dir": str(run_dir), "recipe": config.recipe, "dataset": source,
              "valid_loss": loss, "valid_bpc": loss / LN2}
    summary = read_summary(run_dir)
    if summary is not None:
        result["summary_valid_loss"] = summary.get("valid_loss")
    return result


def _next_char_probs(model: CharRNN, ids: torch.Tensor, hidden: Any) -> tuple[torch.Tensor, Any]:
    logits, hidden = model.forward_sequence(ids.view(1, -1), hidden)  # [1, T, V]
    return logits[0, -1].float(), hidden


@torch.no_grad()
def sample(run_dir: str | Path, prime: str | None = None, length: int = 500, temperature: float = 0.8,
           top_k: int | None = None, seed: int = 0, device_name: str | None = None) -> dict[str, Any]:
    """Generate ``length`` characters after ``prime`` from the run's best model; the text starts with the prime.

    Each character is drawn from softmax(logits / ``temperature``), restricted to the ``top_k``
    most likely when given, with a generator seeded by ``seed`` (same seed, same text).
    ``prime`` defaults to a newline (the start of a paragraph) where the vocabulary has one.
    """
    if length < 0:
        raise ConfigError(f"--length must be at least 0, got {length}")
    if temperature <= 0:
        raise ConfigError(f"--temperature must be positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    device = resolve_device(device_name or "cpu")
    _, model, vocab = load_run(run_dir, device)
    if prime is None:
        prime = "\n" if "\n" in vocab.chars else vocab.chars[0]
    if not prime:
        raise ConfigError("--prime must hold at least one character")
    generator = torch.Generator(device=device).manual_seed(seed)
    logits, hidden = _next_char_probs(model, vocab.encode(prime, "--prime").to(device), None)
    out: list[int] = []
    for _ in range(length):
        logits = logits / temperature
        if top_k is not None and top_k < len(logits):
            kth = logits.topk(top_k).values[-1]
            logits = logits.masked_fill(logits < kth, -math.inf)
        next_id = torch.multinomial(logits.softmax(0), 1, generator=generator)  # [1]
        out.append(int(next_id))
        logits, hidden = _next_char_probs(model, next_id, hidden)
    return {"run_dir": str(run_dir), "prime": prime, "text": prime + vocab.decode(out), "length": length,
            "temperature": temperature, "top_k": top_k, "seed": seed}


@torch.no_grad()
def predict(run_dir: str | Path, inputs: Sequence[str], top_k: int = 3) -> list[dict]:
    """For each input text, the ``top_k`` most likely next characters with their probabilities."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if not inputs:
        raise ConfigError("predict: give at least one text to continue")
    _, model, vocab = load_run(run_dir, "cpu")
    results = []
    for text in inputs:
        logits, _ = _next_char_probs(model, vocab.encode(text, f"input {text!r}"), None)
        values, indices = logits.softmax(0).topk(min(top_k, len(vocab)))
        results.append({"file": text, "top": [{"class": vocab.chars[i], "probability": round(p, 6)}
                                              for p, i in zip(values.tolist(), indices.tolist())]})
    return results
