"""Character-level language model runs (char-RNN): train with truncated BPTT, evaluate, sample.

``train`` reads the text (Tiny Shakespeare or ``--data FILE``), keeps its last 10% as
validation, cuts both parts into parallel streams (``nnlab.data.text.StreamBatches``) and
fits a ``char_rnn`` wrapped in ``TruncatedBPTT``, so the hidden state flows from one window
to the next without gradients crossing windows. Loss is in nats per character; the summary
also gives bits per character (``valid_bpc`` = ``valid_loss`` / ln 2). With ``--time-budget``
the learning-rate schedule is a function of elapsed time and training stops, validated and
checkpointed, before the budget runs out. ``sample`` generates text from ``best.pt``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TextIO

import torch

from nnlab.config import CharLMConfig
from nnlab.data.text import StreamBatches, Vocab, load_corpus, split_stream
from nnlab.engine.callbacks import CheckpointCallback, MetricsLog, ProgressCallback, StopAfterEpochs
from nnlab.engine.checkpoint import load_checkpoint, rng_state
from nnlab.engine.learner import Callback, CancelFitException, Learner, resolve_device
from nnlab.engine.optim import create_optimizer
from nnlab.engine.schedules import create_scheduler
from nnlab.errors import CheckpointError, ConfigError, DataError
from nnlab.interpret.plots import plot_curves
from nnlab.models import create_model
from nnlab.models.rnn import CharRNN, TruncatedBPTT
from nnlab.runs import environment, load_best, start_run, stopped_summary, write_json

LN2 = math.log(2.0)


def one_cycle_lr(pos: float, max_lr: float, pct_start: float) -> float:
    """Learning rate at progress ``pos`` in [0, 1]: linear warm-up from ``max_lr/25`` over
    ``pct_start``, then cosine annealing to ``max_lr/25e4`` (OneCycleLR's end points)."""
    start, end = max_lr / 25, max_lr / 25e4
    pos = min(max(pos, 0.0), 1.0)
    if pos < pct_start:
        return start + (max_lr - start) * pos / pct_start
    return end + (max_lr - end) * (1 + math.cos(math.pi * (pos - pct_start) / (1 - pct_start))) / 2


class ResetState(Callback):
    """Starts the carried hidden state from zeros at each pass over the text and before validation."""

    def __init__(self, model: TruncatedBPTT) -> None:
        self.model = model

    def before_epoch(self) -> None:
        self.model.reset()

    def after_train(self) -> None:
        self.model.reset()


class TimeBudget(Callback):
    """Ends training before ``seconds`` of wall time have passed, with the last epoch validated and saved.

    ``wrap(batches)`` stops yielding windows once the time used plus one validation pass
    (as long as the last one took) reaches the budget, so the epoch ends normally (validation,
    metrics, checkpoints) and ``after_epoch`` then stops the fit. With ``schedule`` set, the
    learning rate follows ``one_cycle_lr`` of the elapsed fraction of the budget. ``spent``
    starts the clock at the seconds an interrupted run had already used.
    """

    order = 90  # after the checkpoint (70): the final epoch is saved before the fit stops

    def __init__(self, seconds: float, max_lr: float | None = None, pct_start: float = 0.1,
                 spent: float = 0.0) -> None:
        self.seconds = seconds
        self.max_lr = max_lr
        self.pct_start = pct_start
        self.spent = spent  # seconds of the budget used before this process (a resumed run)
        self.start = time.perf_counter()
        self.valid_seconds = 0.0
        self.out_of_time = False

    def elapsed(self) -> float:
        """Seconds of the budget used so far, those of the interrupted part of a resumed run included."""
        return self.spent + time.perf_counter() - self.start

    def wrap(self, batches: StreamBatches) -> "BudgetedBatches":
        return BudgetedBatches(batches, self)

    def check(self) -> bool:
        """True (and remembered) once no time is left for another window and a validation."""
        self.out_of_time = self.out_of_time or self.elapsed() + self.valid_seconds >= self.seconds
        return self.out_of_time

    def before_fit(self) -> None:
        self.start = time.perf_counter()

    def before_batch(self) -> None:
        if self.max_lr is not None:
            lr = one_cycle_lr(self.elapsed() / self.seconds, self.max_lr, self.pct_start)
            for group in self.learner.optimizer.param_groups:
                group["lr"] = lr

    def after_train(self) -> None:
        self.valid_start = time.perf_counter()

    def after_validate(self) -> None:
        self.valid_seconds = time.perf_counter() - self.valid_start

    def after_epoch(self) -> None:
        if self.check():
            raise CancelFitException()


class BudgetedBatches:
    """``batches``, ending early once ``budget`` says time is up."""

    def __init__(self, batches: StreamBatches, budget: TimeBudget) -> None:
        self.batches = batches
        self.budget = budget

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.batches:
            if self.budget.check():
                return
            yield batch


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


def train(recipe: str = "shakespeare-lstm", out: str | Path | None = None, overrides: dict[str, Any] | None = None,
          stream: TextIO | None = None, dry_run: bool = False, resume: str | Path | None = None) -> dict[str, Any]:
    """Train a char-RNN recipe into a new run directory; returns the summary (also ``summary.json``).

    ``dry_run`` trains on a few windows for one epoch: a smoke test of the whole path.
    ``resume`` continues the interrupted run in that directory from its ``last.pt`` (model,
    optimizer, schedule or the budget already spent, data offsets, dropout); without a time
    budget it ends as the uninterrupted run would have. ``stop_after_epochs`` ends a run after
    that many epochs, resumable.
    """
    start = start_run(recipe, out, overrides, resume, "text", "char-RNN run")
    config, device, run_dir, checkpoint = start.config, start.device, start.run_dir, start.checkpoint
    stream = stream if stream is not None else sys.stderr
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
    train_batches: Iterable = StreamBatches(train_ids, config.batch_size, config.bptt, shuffle_offset=True,
                                            generator=generator, device=device)
    valid_batches = StreamBatches(valid_ids, config.eval_batch_size, config.bptt, device=device)

    args = model_args(config, len(vocab))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # initialization, without touching the caller's global RNG
        model: CharRNN = create_model("char_rnn", **args)
    carried = TruncatedBPTT(model)
    optimizer = create_optimizer("adamw", model, config.lr, config.weight_decay)
    epochs = 1 if dry_run else config.epochs
    scheduler, budget = None, None
    if config.time_budget is not None and not dry_run:
        budget = TimeBudget(config.time_budget, config.lr if config.schedule == "one-cycle" else None,
                            config.pct_start, spent=(checkpoint.get("budget_spent") or 0.0) if checkpoint else 0.0)
        train_batches = budget.wrap(train_batches)
        epochs = 100_000  # the budget ends the run
    else:
        scheduler = create_scheduler(config.schedule, optimizer, config.lr, epochs * len(train_batches),
                                     config.pct_start)

    def state() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "model_name": "char_rnn",
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": rng_state(generator), "budget_spent": budget.elapsed() if budget is not None else None,
                "model_args": args, "config": dataclasses.asdict(config), "kind": "text", "vocab": vocab.chars}

    saver = CheckpointCallback(run_dir, state, monitor="valid_loss", mode="min")
    callbacks: list[Callback] = [CharProgress(stream), MetricsLog(run_dir / "metrics.jsonl"), ResetState(carried),
                                 saver, *([budget] if budget is not None else [])]
    interrupt = StopAfterEpochs(config.stop_after_epochs)
    callbacks.append(interrupt)
    learner = Learner(carried, train_batches, valid_batches, loss_fn=torch.nn.CrossEntropyLoss(),
                      optimizer=optimizer, scheduler=scheduler, callbacks=callbacks, device=device,
                      precision=config.precision, clip=config.clip)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)  # dropout masks
        start.restore(model, learner, saver, generator)  # a resumed run: where it stopped
        if budget is not None and budget.check():  # the interrupted run had used its whole budget
            epochs = start.start_epoch
        history = learner.fit(epochs, start_epoch=start.start_epoch)
    train_seconds = sum(row["seconds"] for row in history)
    if interrupt.cut_short(history, epochs):
        return stopped_summary(config.recipe, run_dir, len(history))

    best = load_checkpoint(run_dir / "best.pt", map_location=device)
    plot_curves(history, run_dir / "curves.png")
    valid_loss = best["best"]["score"]
    best_row = history[best["best"]["epoch"] - 1]
    chars = learner.step * config.batch_size * config.bptt
    summary = {
        "recipe": config.recipe, "run_dir": str(run_dir), "dataset": source, "model": "char_rnn",
        "cell": config.cell, "layers": config.layers, "hidden_size": config.hidden_size,
        "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(vocab),
        "train_chars": len(train_ids), "valid_chars": len(valid_ids),
        "valid_loss": valid_loss, "valid_bpc": valid_loss / LN2, "valid_acc": best_row["valid_acc"],
        "train_seconds": round(train_seconds, 3), "time_budget": config.time_budget,
        "steps": learner.step, "chars_per_s": round(chars / train_seconds, 1), "epochs": len(history),
        "best_epoch": best["best"]["epoch"], "device": str(device), "precision": learner.precision,
        "dry_run": dry_run, **environment(),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


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
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        result["summary_valid_loss"] = json.loads(summary_path.read_text(encoding="utf-8")).get("valid_loss")
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
