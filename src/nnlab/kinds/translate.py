"""Translation runs: a GRU encoder-decoder with attention on sentence pairs, scored with BLEU, chrF and exact match.

``train`` reads the pairs (``--data FILE`` of tab-separated pairs, the located ``eng-fra``/``eng-fra-5k``
files, or the generated ``dates`` task), holds out ``test_fraction`` of them for the scores and a
validation part of the rest (it picks the best epoch by teacher-forced loss), builds the source
and target vocabularies from the training pairs only, trains the registered ``seq2seq`` through
the run kit and writes ``summary.json`` with corpus BLEU and chrF (``sacrebleu``, its default
tokenisation), exact match, greedy and (``beam > 1``) beam-search scores, a few examples, and
``attention.png`` for the first held-out sentence. The ``acc`` columns of ``metrics.jsonl`` are
teacher-forced sentence accuracy: every target token right given the true previous ones.
``translate`` (the CLI's ``nnlab translate RUN "..."``) decodes new sentences and draws their
attention matrix.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence, TextIO

import sacrebleu
import torch
from matplotlib.figure import Figure

from nnlab.config import RunConfig, check_choice, check_dropout, check_positive
from nnlab.data.sources import cache_root
from nnlab.data.translation import (PAD, UNK, PairBatches, PairFilter, Vocab, build_vocab, date_pairs, detokenize,
                                    encode_pairs, normalize, pad, parse_prefixes, read_pairs, tokenize)
from nnlab.engine.learner import resolve_device
from nnlab.errors import CheckpointError, ConfigError, DataError
from nnlab.files import save_figure
from nnlab.kit.rundir import load_best, read_summary
from nnlab.kit.kind import Kind
from nnlab.kit.run import RunStart, Spec, stopped_summary, summarize, train_model
from nnlab.models import create_model

DATASETS = ("pairs", "eng-fra", "eng-fra-5k", "dates")


@dataclass
class TranslateConfig(RunConfig):
    """Sentence-pair translation: ``--data FILE`` of ``SOURCE<TAB>TARGET[<TAB>...]`` lines, or a named set."""

    kind: str = "translate"
    dataset: str = "pairs"              # pairs (--data FILE) | eng-fra | eng-fra-5k (located) | dates (generated)
    source_column: int = 0              # columns count from 0; eng-fra.txt: 0 English, 1 French
    target_column: int = 1
    normalize: bool = True              # the tutorial's: lowercase, ASCII, punctuation split
    tokens: str = "words"               # words | chars
    max_length: int | None = None       # keep pairs with both sides shorter than this (the tutorial's 10)
    prefixes: str = ""                  # "tutorial" or comma-separated: keep English sides starting so
    pairs: int = 20000                  # dates: pairs generated
    min_freq: int = 1                   # rarer training tokens are <unk>
    embed: int = 128
    hidden_size: int = 256
    layers: int = 1
    attention: str = "bahdanau"         # bahdanau (additive) | luong (dot product)
    bidirectional: bool = True          # encoder
    dropout: float = 0.1
    teacher_forcing: float = 1.0        # probability of feeding the true previous word in training
    beam: int = 1                       # summary: beam-search scores too when > 1 (greedy always)
    examples: int = 8                   # held-out examples written to summary.json
    epochs: int = 20
    lr: float = 3e-3
    clip: float | None = 1.0
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    eval_batch_size: int = 256

    unused: ClassVar[frozenset[str]] = frozenset({"freeze_epochs", "lr_mult"})

    def check(self) -> None:
        """Reject settings no translation run could use, naming the setting."""
        super().check()
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("tokens", self.tokens, ("words", "chars"))
        check_choice("attention", self.attention, ("bahdanau", "luong"))
        check_positive(self, "layers", "hidden_size", "embed", "min_freq", "pairs", "beam")
        check_dropout(self.dropout)
        if self.source_column < 0 or self.target_column < 0 or self.source_column == self.target_column:
            raise ConfigError(f"source_column and target_column must be two different columns from 0, got "
                              f"{self.source_column} and {self.target_column}")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"max_length must be at least 2 (sides shorter than it are kept), got {self.max_length}")
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise ConfigError(f"teacher_forcing must be in [0, 1], got {self.teacher_forcing}")
        if self.examples < 0:
            raise ConfigError(f"examples must be at least 0, got {self.examples}")


def _shared_data() -> Path:
    """``../shared/data`` beside the checkout (this project's offline data)."""
    return Path(__file__).resolve().parents[4] / "shared" / "data"


def locate_pairs(config: TranslateConfig, data: str | None) -> Path:
    """The pairs file of the run: ``data`` (``--data FILE``), or the named set's file found in
    ``$NNLAB_DATA/translation/``, the cache (``nnlab download eng-fra``) or ``../shared/data/translation/``."""
    if data is not None:
        path = Path(data).expanduser()
        if not path.is_file():
            raise DataError(f"--data {path}: no such pairs file")
        return path
    if config.dataset == "pairs":
        raise ConfigError("translation needs --data FILE (tab-separated sentence pairs), or "
                          "--set dataset=eng-fra-5k|eng-fra|dates")
    name = f"{config.dataset}.txt"
    root = os.environ.get("NNLAB_DATA")
    places = [Path(root).expanduser() / "translation" / name] if root else []
    places += [cache_root() / "eng-fra" / name, _shared_data() / "translation" / name]
    for path in places:
        if path.is_file():
            return path
    hint = "; get it with `nnlab download eng-fra`" if config.dataset == "eng-fra" else ""
    raise DataError(f"{name} not found; looked in {', '.join(str(p.parent) for p in places)}{hint}")


def load_pairs(config: TranslateConfig, data: str | None = None) -> tuple[list[tuple[str, str]], str]:
    """The run's (source, target) pairs and where they came from (``data`` instead of the config's file)."""
    if config.dataset == "dates" and data is None and config.data is None:
        return date_pairs(config.pairs, config.seed), f"generated dates ({config.pairs} pairs, seed {config.seed})"
    path = locate_pairs(config, data or config.data)
    keep = PairFilter(config.max_length, parse_prefixes(config.prefixes))
    pairs = read_pairs(path, config.source_column, config.target_column, config.normalize, config.tokens, keep)
    return pairs, str(path)


def split_pairs(n: int, config: TranslateConfig, source: str) -> dict[str, torch.Tensor]:
    """Indices of the test pairs, then of validation out of the rest; a pure function of the seed."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    n_test = max(1, round(n * config.test_fraction))
    n_valid = round((n - n_test) * config.valid_fraction)
    if n - n_test - n_valid < 1:
        raise DataError(f"{source}: {n} pairs are too few for a training and a test split")
    return {"test": order[:n_test], "valid": order[n_test:n_test + n_valid], "train": order[n_test + n_valid:]}


def sequence_loss(label_smoothing: float = 0.0):
    """Cross-entropy over every real target token of logits ``[B, T, V]`` and targets ``[B, T]`` (padding ignored)."""
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD,
                                                 label_smoothing=label_smoothing)
    return loss


def count_exact(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sentences whose every real target token is the argmax (teacher-forced): the ``acc`` columns."""
    return ((logits.argmax(-1) == target) | (target == PAD)).all(1).sum()


def model_args(config: TranslateConfig, source_vocab: Vocab, target_vocab: Vocab) -> dict[str, Any]:
    """Arguments of the registry's ``seq2seq``."""
    return {"n_source": len(source_vocab), "n_target": len(target_vocab), "embed": config.embed,
            "hidden": config.hidden_size, "layers": config.layers, "attention": config.attention,
            "bidirectional": config.bidirectional, "dropout": config.dropout,
            "teacher_forcing": config.teacher_forcing}


def train(start: RunStart, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
    """Train the translation run ``start`` describes; returns the summary (also ``summary.json``).

    ``dry_run`` trains one epoch on a few batches: a smoke test of the whole path.
    """
    config, device, run_dir = start.config, start.device, start.run_dir
    pairs, source = load_pairs(config)
    rows = split_pairs(len(pairs), config, source)
    tokenized = [(tokenize(s, config.tokens), tokenize(t, config.tokens)) for s, t in pairs]
    train_rows = rows["train"][: 4 * config.batch_size] if dry_run else rows["train"]
    training = [tokenized[i] for i in rows["train"].tolist()]
    source_vocab = build_vocab((s for s, _ in training), config.min_freq)
    target_vocab = build_vocab((t for _, t in training), config.min_freq)
    generator = torch.Generator().manual_seed(config.seed + 1)
    train_batches = PairBatches(*encode_pairs([tokenized[i] for i in train_rows.tolist()], source_vocab, target_vocab),
                                config.batch_size, shuffle=True, generator=generator, device=device)
    valid_batches = (PairBatches(*encode_pairs([tokenized[i] for i in rows["valid"].tolist()], source_vocab,
                                               target_vocab), config.eval_batch_size, device=device)
                     if len(rows["valid"]) else None)
    args = model_args(config, source_vocab, target_vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # initialization, without touching the caller's global RNG
        model = create_model("seq2seq", **args)
    max_output = max(len(t) for _, t in training) + 5  # decoding stops here if no <eos> came
    saved = {"model_name": "seq2seq", "model_args": args, "source_vocab": source_vocab.tokens,
             "target_vocab": target_vocab.tokens, "tokens": config.tokens, "normalize": config.normalize,
             "max_output": max_output}
    spec = Spec(model, train_batches, valid_batches, sequence_loss(config.label_smoothing), saved=saved,
                metric=count_exact, generator=generator, epochs=1 if dry_run else None, dry_run=dry_run,
                dropout_seed=config.seed)
    trained = train_model(start, spec, stream)
    if trained.stopped:
        return stopped_summary(start, trained)
    test = [pairs[i] for i in rows["test"].tolist()]
    result = score(trained.model.eval(), test, saved, device, config.beam, config.eval_batch_size, config.examples)
    if run_dir is not None and config.plots:
        save_figure(attention_figure(*first_attention(trained.model, test[0][0], saved, device)),
                    run_dir / "attention.png")
    return summarize(start, trained, {
        "dataset": source, "model": "seq2seq", "attention": config.attention, **result,
        "pairs": {k: len(v) for k, v in rows.items()}, "source_vocab": len(source_vocab),
        "target_vocab": len(target_vocab),
        "pairs_per_s": round(len(train_rows) * len(trained.history) / trained.train_seconds, 1)}, dry_run)


def encode_sources(sentences: Sequence[str], state: dict[str, Any], strict: bool = False) -> list[list[int]]:
    """Source ids of ``sentences`` in the run's vocabulary (normalised as the run's pairs were).

    With ``strict`` a sentence with no word (or character) the run knows is a ``DataError`` naming it.
    """
    vocab = Vocab(state["source_vocab"])
    out = []
    for sentence in sentences:
        text = normalize(sentence) if state["normalize"] else sentence
        ids = vocab.encode(tokenize(text, state["tokens"]))
        if strict and all(i == UNK for i in ids):
            unit = "characters" if state["tokens"] == "chars" else "words"
            what = f"no {unit}" if not ids else f"only {unit} the run never saw in training"
            raise DataError(f"{sentence!r}: {what} (its source vocabulary has {len(vocab) - 4} {unit})")
        out.append(ids or [UNK])
    return out


def decode(model: torch.nn.Module, sources: list[list[int]], state: dict[str, Any], device: torch.device,
           beam: int = 1, batch_size: int = 256) -> list[tuple[list[str], torch.Tensor]]:
    """Each source's output tokens and its attention weights ``[T, S]`` (greedy, or beam search of
    width ``beam``), in batches of ``batch_size`` sources."""
    vocab = Vocab(state["target_vocab"])
    out = []
    for start in range(0, len(sources), batch_size):
        chunk = sources[start:start + batch_size]
        ids, lengths = pad(chunk).to(device), torch.tensor([len(s) for s in chunk])
        if beam > 1:
            tokens, attention = model.beam_search(ids, lengths, state["max_output"], beam)
        else:
            tokens, attention = model.greedy(ids, lengths, state["max_output"])
        for row, length, weights in zip(tokens.tolist(), lengths.tolist(), attention.cpu()):
            words = vocab.decode(row)
            out.append((words, weights[: len(words) + 1, :length]))  # +1: the step that wrote <eos>
    return out


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (``sacrebleu``'s defaults, one reference each) and exact-match accuracy."""
    exact = sum(h == r for h, r in zip(hypotheses, references)) / max(len(references), 1)
    # force: normalised pairs are already split into words and punctuation, which sacrebleu would
    # warn about; its 13a tokenisation leaves such text as it is, so the score is the same.
    return {"bleu": round(sacrebleu.corpus_bleu(hypotheses, [list(references)], force=True).score, 2),
            "chrf": round(sacrebleu.corpus_chrf(hypotheses, [list(references)]).score, 2),
            "exact_match": round(exact, 4)}


def score(model: torch.nn.Module, pairs: Sequence[tuple[str, str]], state: dict[str, Any], device: torch.device,
          beam: int = 1, batch_size: int = 256, examples: int = 8) -> dict[str, Any]:
    """Scores of ``model`` on held-out ``pairs``: greedy (``test_*``) and, with ``beam > 1``, beam
    search (``test_beam_*``), and the first ``examples`` pairs with their greedy translations."""
    unit = state["tokens"]
    references = [detokenize(tokenize(t, unit), unit) for _, t in pairs]
    sources = encode_sources([s for s, _ in pairs], state)
    greedy = [detokenize(words, unit) for words, _ in decode(model, sources, state, device, 1, batch_size)]
    result: dict[str, Any] = {f"test_{k}": v for k, v in corpus_scores(greedy, references).items()}
    result["test_accuracy"] = result["test_exact_match"]
    if beam > 1:
        beamed = [detokenize(words, unit) for words, _ in decode(model, sources, state, device, beam, batch_size)]
        result.update({f"test_beam_{k}": v for k, v in corpus_scores(beamed, references).items()}, beam=beam)
    result["examples"] = [{"source": s, "reference": r, "greedy": h}
                          for (s, _), r, h in list(zip(pairs, references, greedy))[:examples]]
    return result


def first_attention(model: torch.nn.Module, sentence: str, state: dict[str, Any], device: torch.device,
                    beam: int = 1) -> tuple[list[str], list[str], torch.Tensor]:
    """Source tokens, output tokens (with ``<eos>``) and the attention matrix ``[T, S]`` of ``sentence``."""
    ids = encode_sources([sentence], state)[0]
    words, weights = decode(model, [ids], state, device, beam)[0]
    vocab = Vocab(state["source_vocab"])
    visible = (lambda t: "\u2423" if t == " " else t) if state["tokens"] == "chars" else (lambda t: t)  # spaces as ␣
    return ([visible(vocab.tokens[i]) for i in ids], [visible(w) for w in [*words, "<eos>"][: len(weights)]],
            weights)


def attention_figure(source: Sequence[str], output: Sequence[str], weights: torch.Tensor) -> Figure:
    """``weights [T, S]`` as a heat map, source tokens along the top, output tokens down the side."""
    fig = Figure(figsize=(max(4.0, 0.45 * len(source) + 2), max(3.0, 0.45 * len(output) + 1.5)), layout="tight")
    ax = fig.subplots()
    image = ax.imshow(weights.numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(image, ax=ax, label="attention weight")
    ax.set_xticks(range(len(source)), labels=list(source), rotation=60, ha="left", rotation_mode="anchor")
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(output)), labels=list(output))
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    return fig


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[TranslateConfig, torch.nn.Module, dict]:
    """A translation run's config, its best model (weights only) in eval mode, and the checkpoint."""
    config, model, state = load_best(run_dir, "translate", device)
    for key in ("source_vocab", "target_vocab", "tokens", "normalize", "max_output"):
        if key not in state:
            raise CheckpointError(f"{Path(run_dir) / 'best.pt'}: no {key} saved with the model")
    return config, model, state


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """Reload ``best.pt``, split the pairs (``data_path`` instead of the run's) as ``train`` did, and
    score the test pairs again (beside the BLEU ``train`` wrote in ``summary.json``)."""
    device = resolve_device(device_name or "cpu")
    config, model, state = load_run(run_dir, device)
    pairs, source = load_pairs(config, data_path)
    rows = split_pairs(len(pairs), config, source)
    result = score(model, [pairs[i] for i in rows["test"].tolist()], state, device, config.beam,
                   config.eval_batch_size, config.examples)
    summary = read_summary(run_dir)
    if summary is not None:
        result["summary_test_bleu"] = summary.get("test_bleu")
    return {"run_dir": str(run_dir), "recipe": config.recipe, "dataset": source, **result}


def translate(run_dir: str | Path, sentences: Sequence[str], beam: int = 1, attention: str | Path | None = None,
              device_name: str | None = None) -> list[dict[str, Any]]:
    """Translate ``sentences`` with the run's best model (greedy, or beam search of width ``beam``);
    with ``attention``, draw the first sentence's attention matrix to that PNG.

    A sentence the run cannot read (no known word) or a beam below 1 is a ``DataError`` /
    ``ConfigError`` naming it.
    """
    if beam < 1:
        raise ConfigError(f"--beam must be at least 1 (1: greedy), got {beam}")
    if not sentences:
        raise ConfigError("translate: give at least one sentence")
    device = resolve_device(device_name or "cpu")
    _, model, state = load_run(run_dir, device)
    sources = encode_sources(sentences, state, strict=True)
    unit = state["tokens"]
    out = [{"source": s, "translation": detokenize(words, unit), "beam": beam}
           for s, (words, _) in zip(sentences, decode(model, sources, state, device, beam))]
    if attention is not None:
        out[0]["attention"] = str(save_figure(attention_figure(*first_attention(model, sentences[0], state, device,
                                                                               beam)), attention))
    return out


def predict(run_dir: str | Path, inputs: Sequence[str] = (), top_k: int = 3) -> list[dict[str, Any]]:
    """``nnlab predict`` on a translation run: the greedy translation of each input sentence."""
    return translate(run_dir, inputs)


class TranslateKind(Kind, functions=(train, evaluate, predict, load_run, translate, first_attention)):
    """Sequence-to-sequence translation with attention (dates, French to English), greedy or beam search."""

    name = "translate"
    what = "translation run"
    config = TranslateConfig
    capabilities = frozenset({"resume", "translate", "show"})
    metrics = ("test_bleu",)

    def scores(self, result: dict[str, Any]) -> list[str]:
        if result.get("test_bleu") is None:
            return []
        return [f"BLEU {result['test_bleu']:.1f}  chrF {result['test_chrf']:.1f}  "
                f"exact {result['test_exact_match']:.4f}" + (f"  beam-{result['beam']} BLEU "
                f"{result['test_beam_bleu']:.1f}" if result.get("test_beam_bleu") is not None else "")]

    def batch_figure(self, config: Any, n: int = 16) -> Any:
        """The first ``n`` training pairs of the run's split (source and target, as the model reads them)."""
        from nnlab.inspection.report import text_rows_figure
        pairs, source = load_pairs(config)
        rows = split_pairs(len(pairs), config, source)["train"][:n].tolist()
        return text_rows_figure(("source", "target"), [pairs[i] for i in rows],
                                title=f"the first {len(rows)} training pairs")

    def results(self, run: Any, n: int = 16) -> Any:
        """The first ``n`` test pairs: the source, the reference and the greedy translation, mistakes in red."""
        from nnlab.inspection.report import text_rows_figure
        config, model, state = load_run(run.run_dir, "cpu")
        pairs, source = load_pairs(config)
        tests = [pairs[i] for i in split_pairs(len(pairs), config, source)["test"][:n].tolist()]
        decoded = decode(model, encode_sources([s for s, _ in tests], state), state, torch.device("cpu"), 1)
        outputs = [detokenize(words, state["tokens"]) for words, _ in decoded]
        return text_rows_figure(("source", "reference", "translation"),
                                [(s, t, o) for (s, t), o in zip(tests, outputs)],
                                ["black" if t == o else "red" for (_, t), o in zip(tests, outputs)],
                                "test pairs: reference/translation (mistakes in red)")
