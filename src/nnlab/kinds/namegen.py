"""Names generated in a chosen language: a character LSTM/GRU conditioned on the language.

``train`` reads the names folder (one ``<Language>.txt`` a class), keeps each (name,
language) pair once, holds out a validation part grouped by name string (no name in both
parts; it picks the best epoch), and trains ``name_gen`` (``nnlab.models.rnn``) teacher-forced
to predict each next letter and the end of the name. ``sample`` draws names of a language,
optionally starting with given letters; ``evaluate`` measures quality without a human: of
``samples`` names drawn per language, the share a names classifier run assigns to that
language and the share that are in no file of the data (novel), per language and as a macro
mean; ``predict`` ranks the languages by how likely the generator makes a given name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch

from nnlab.config import RunConfig, check_choice, check_dropout, check_positive
from nnlab.data.names import (ALPHABET, BOUNDARY, GenerationBatches, deduplicate, fold_ascii, generation_ids,
                              grouped_split, load_names)
from nnlab.engine.learner import resolve_device
from nnlab.engine.metrics import check_predict_args, confusion_matrix, per_class_report, ranked
from nnlab.errors import CheckpointError, ConfigError, DataError
from nnlab.kit.rundir import load_best
from nnlab.kit.kind import Kind
from nnlab.kit.run import RunStart, Spec, stopped_summary, summarize, train_model
from nnlab.models import create_model
from nnlab.models.names import CONDITIONS

LN2 = math.log(2.0)
# `nnlab sample` options this kind takes beyond the char-RNN's (the CLI refuses them for other kinds).
SAMPLE_OPTIONS = ("category", "start", "count")
MODEL = "name_generator"  # nnlab.models.names (runs saved before it name "name_gen", which still loads)
SAMPLE_CONTINUES = False  # sample draws whole names, it does not continue a text: nnlab serve sends it in one piece


@dataclass
class NameGenConfig(RunConfig):
    """A generator of names conditioned on their language, trained on a names folder."""

    kind: str = "namegen"
    cell: str = "lstm"                  # lstm | gru
    layers: int = 1
    hidden_size: int = 256
    embed: int = 32                     # letter embedding
    category_embed: int = 32            # language embedding
    condition: str = "input"            # the language fed at every step (input), as the initial state (state), or both
    dropout: float = 0.2
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    clip: float | None = 1.0
    samples: int = 1000                 # names drawn per language by `nnlab eval`
    eval_temperature: float = 0.8       # the temperature `nnlab eval` samples them at
    eval_top_k: int | None = None       # and the letters it draws from (the K likeliest; None: all)
    device: str = "cpu"                 # short sequences in small batches: the CPU is as fast

    unused = frozenset({"test_fraction"})

    def check(self) -> None:
        """Reject settings no name-generation run could use, naming the setting."""
        super().check()
        check_choice("cell", self.cell, ("lstm", "gru"))
        check_choice("condition", self.condition, CONDITIONS)
        check_positive(self, "layers", "hidden_size", "embed", "category_embed", "samples")
        check_dropout(self.dropout)
        if self.eval_temperature <= 0:
            raise ConfigError(f"eval_temperature must be positive, got {self.eval_temperature}")
        if self.eval_top_k is not None and self.eval_top_k < 1:
            raise ConfigError(f"eval_top_k must be at least 1, got {self.eval_top_k}")


def model_args(config: NameGenConfig, n_categories: int) -> dict[str, Any]:
    """Arguments of the registry's ``name_generator`` for this config and ``n_categories`` languages."""
    return {"n_classes": len(ALPHABET) + 2, "n_categories": n_categories, "embed": config.embed,
            "category_embed": config.category_embed, "hidden": config.hidden_size, "layers": config.layers,
            "cell": config.cell, "dropout": config.dropout, "condition": config.condition}


def train(start: RunStart, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
    """Train the name generator ``start`` describes; returns the summary (also ``summary.json``)."""
    config, device = start.config, start.device
    data, removed = deduplicate(load_names(config.data))
    rows = grouped_split(data.names, data.labels, 0.0, config.valid_fraction,
                         torch.Generator().manual_seed(config.seed))  # its "test" part is our validation
    train_rows, valid_rows = rows["train"], rows["test"]
    if len(valid_rows) == 0 or len(train_rows) == 0:
        raise DataError(f"{data.source}: {len(set(data.names))} distinct names are too few for a training "
                        "and a validation part")
    if dry_run:
        train_rows = train_rows[torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(0))
                                [: 4 * config.batch_size]]
    generator = torch.Generator().manual_seed(config.seed + 1)
    train_batches = GenerationBatches([data.names[i] for i in train_rows.tolist()], data.labels[train_rows],
                                      config.batch_size, shuffle=True, generator=generator, device=device)
    valid_batches = GenerationBatches([data.names[i] for i in valid_rows.tolist()], data.labels[valid_rows],
                                      config.eval_batch_size, device=device)
    args = model_args(config, len(data.classes))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # initialization, without touching the caller's global RNG
        model = create_model(MODEL, **args)
    longest = max(len(n) for n in data.names)
    spec = Spec(model, train_batches, valid_batches, torch.nn.CrossEntropyLoss(),
                saved={"model_name": MODEL, "model_args": args, "classes": list(data.classes),
                       "alphabet": ALPHABET, "longest": longest},
                generator=generator, epochs=1 if dry_run else config.epochs, dry_run=dry_run,
                dropout_seed=config.seed)
    trained = train_model(start, spec, stream)
    if trained.stopped:
        return stopped_summary(start, trained)
    valid_loss = trained.best["best"]["score"] if trained.best else trained.history[-1]["valid_loss"]
    return summarize(start, trained, {
        "dataset": data.source, "model": MODEL, "cell": config.cell, "condition": config.condition,
        "duplicates_removed": removed,
        "names": {"train": len(train_rows), "valid": len(valid_rows)},
        "split": "(name, language) pairs deduplicated; validation grouped by name string",
        "valid_loss": valid_loss, "valid_bpc": valid_loss / LN2, "classes": list(data.classes),
        "evaluate": f"nnlab eval {start.run_dir} --classifier NAMES_RUN"}, dry_run)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[NameGenConfig, torch.nn.Module, dict]:
    """A name-generation run's config, its best model (weights only) in eval mode, and the checkpoint."""
    config, model, state = load_best(run_dir, "namegen", device)
    if not isinstance(state.get("alphabet"), str) or not isinstance(state.get("classes"), list):
        raise CheckpointError(f"{Path(run_dir) / 'best.pt'}: no alphabet or languages saved with the model")
    return config, model, state


def category_index(state: dict[str, Any], category: str | None) -> int:
    """The index of language ``category`` in the run (a ``ConfigError`` listing the known ones)."""
    if category is None:
        raise ConfigError(f"--category: give a language the run knows: {', '.join(state['classes'])}")
    if category not in state["classes"]:
        raise ConfigError(f"--category {category!r}: not a language of this run; known: {', '.join(state['classes'])}")
    return state["classes"].index(category)


@torch.no_grad()
def generate(model: torch.nn.Module, category: int, prefixes: Sequence[str], alphabet: str, max_length: int,
             temperature: float, top_k: int | None, generator: torch.Generator) -> list[str]:
    """One name per prefix of language ``category``, all drawn in one batch: each next letter from
    softmax(logits / ``temperature``) (the ``top_k`` likeliest where given) until the end mark
    or ``max_length`` letters. A prefix's letters are read first and kept."""
    device = next(model.parameters()).device
    index = {c: i + 2 for i, c in enumerate(alphabet)}
    width = max(len(p) for p in prefixes)
    # Prefixes right-aligned behind padding would shift the state; read them left-aligned instead,
    # one step at a time, and only let a row sample once its own prefix is used up.
    x = torch.zeros(len(prefixes), 2, dtype=torch.long, device=device)
    x[:, 0] = category
    x[:, 1] = BOUNDARY
    prefix_ids = torch.zeros(len(prefixes), width, dtype=torch.long, device=device)
    for row, prefix in enumerate(prefixes):
        prefix_ids[row, : len(prefix)] = torch.tensor([index[c] for c in prefix], dtype=torch.long)
    letters: list[list[int]] = [[] for _ in prefixes]
    done = torch.zeros(len(prefixes), dtype=torch.bool, device=device)
    hidden = None
    for step in range(max_length):
        logits, hidden = model.forward_sequence(x, hidden)  # [B, 1, V]
        logits = logits[:, -1].float() / temperature
        logits[:, 0] = -math.inf  # never padding
        if top_k is not None and top_k < logits.shape[1]:
            kth = logits.topk(top_k, dim=1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        drawn = torch.multinomial(logits.softmax(1), 1, generator=generator)[:, 0]  # [B]
        if step < width:  # rows still reading their prefix take its letter instead
            forced = prefix_ids[:, step]
            drawn = torch.where(forced != 0, forced, drawn)
        for row, token in enumerate(drawn.tolist()):
            if not done[row] and token != BOUNDARY:
                letters[row].append(token)
        done |= drawn == BOUNDARY
        if bool(done.all()):
            break
        x = torch.stack([x[:, 0], drawn], 1)
    return ["".join(alphabet[t - 2] for t in row) for row in letters]


def check_sample_args(temperature: float, top_k: int | None, count: int | None) -> None:
    """A ``ConfigError`` naming the flag for a temperature, top-k or count no sampling can use."""
    if temperature <= 0:
        raise ConfigError(f"--temperature must be positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if count is not None and count < 1:
        raise ConfigError(f"--count must be at least 1, got {count}")


def sample(run_dir: str | Path, prime: str | None = None, length: int = 500, temperature: float = 0.8,
           top_k: int | None = None, seed: int = 0, device_name: str | None = None, category: str | None = None,
           start: str | None = None, count: int | None = None) -> dict[str, Any]:
    """Names of language ``category``: ``count`` of them (default 20), or with ``start`` one name
    per start letter (``count`` per letter where given); ``prime`` starts every name. ``text``
    holds them one a line; the same seed draws the same names."""
    check_sample_args(temperature, top_k, count)
    device = resolve_device(device_name or "cpu")
    _, model, state = load_run(run_dir, device)
    alphabet = state["alphabet"]
    index = category_index(state, category)
    for flag, letters in (("--start", start), ("--prime", prime)):
        outside = sorted({c for c in letters or "" if c not in alphabet})
        if outside:
            raise ConfigError(f"{flag}: {''.join(outside)!r} not in the run's alphabet ({alphabet!r})")
    if start is not None and not start:
        raise ConfigError("--start must hold at least one letter")
    prefixes = [(prime or "") + letter for letter in start for _ in range(count or 1)] if start \
        else [prime or ""] * (count or 20)
    max_length = min(length, 2 * state["longest"])
    generator = torch.Generator(device=device).manual_seed(seed)
    names = generate(model, index, prefixes, alphabet, max_length, temperature, top_k, generator)
    return {"run_dir": str(run_dir), "category": category, "start": start, "prime": prime, "names": names,
            "text": "\n".join(names), "temperature": temperature, "top_k": top_k, "seed": seed}


@dataclass
class Judge:
    """A names classifier run as the judge of generated names: its model and checkpoint data, the
    log frequency of each language in its training split, and its own recall on the real test
    names it never saw, by both of ``predict``'s rules."""

    model: torch.nn.Module
    state: dict[str, Any]
    log_prior: torch.Tensor
    real_recall: dict[str, dict[str, float]]  # rule -> language -> recall on real test names

    def predict(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Each rule's language index for each (already readable) name."""
        from nnlab.kinds import names as names_kind
        with torch.no_grad():
            log_probs = self.model(names_kind.encode_inputs(self.state, names)).float().log_softmax(1)
        return {"balanced": (log_probs - self.log_prior).argmax(1), "argmax": log_probs.argmax(1)}


def load_judge(classifier: str | Path) -> Judge:
    """The names run ``classifier`` as a ``Judge``: its split is made again from its own config
    (same data, protocol and seed) for the training frequencies and the real test names."""
    from nnlab.kinds import kind_of_run
    from nnlab.kinds import names as names_kind
    from nnlab.kinds.sequence import check_classes
    if kind_of_run(classifier).name != "names":
        raise ConfigError(f"--classifier {classifier}: not a names run (train one: nnlab train names-cnn)")
    config, model, state = names_kind.load_run(classifier, "cpu")
    data = load_names(config.data, state["alphabet"])
    check_classes(data.source, data.classes, state)
    split = names_kind.split_names(data, config)
    counts = torch.bincount(split.data.labels[split.rows["train"]], minlength=len(data.classes)).clamp(min=1)
    judge = Judge(model, state, (counts / counts.sum()).log(), {})
    test = split.rows["test"]
    truth = split.data.labels[test]
    for rule, predicted in judge.predict([split.data.names[i] for i in test.tolist()]).items():
        report = per_class_report(confusion_matrix(predicted, truth, len(data.classes)), data.classes)
        judge.real_recall[rule] = {language: row["recall"] for language, row in report["per_class"].items()
                                   if row["support"]}
    return judge


def quality(names_by_language: dict[str, list[str]], known: set[str], classifier: str | Path | None
            ) -> dict[str, Any]:
    """Per language: the share of ``names`` not in ``known`` (novel) and, with a names
    ``classifier`` run, the share it assigns to that language (``in_language``), and their macro means.

    The judge decides with equal priors (``balanced``: its log-probabilities less the log
    frequency of each language in its training names): the question asked of a name generated
    in Portuguese is whether it reads as Portuguese, and a judge trained on 47% Russian names
    would otherwise count that share against every other language. Its plain argmax is reported
    too (``in_language_argmax``), and each rule's recall on real held-out names beside it
    (``judge_recall_on_real_names``, ``..._argmax``): what a share of generated names reads against.
    """
    per: dict[str, dict[str, float]] = {}
    judge = load_judge(classifier) if classifier is not None else None
    for language, names in names_by_language.items():
        row = {"novel": sum(n not in known for n in names) / max(len(names), 1), "samples": len(names)}
        if judge is not None:
            if language not in judge.state["classes"]:
                raise ConfigError(f"--classifier {classifier}: it knows no {language!r} (its languages: "
                                  f"{', '.join(judge.state['classes'])})")
            target = judge.state["classes"].index(language)
            readable = [n for n in names if fold_ascii(n, judge.state["alphabet"])]
            hits = ({rule: int((p == target).sum()) for rule, p in judge.predict(readable).items()} if readable
                    else {"balanced": 0, "argmax": 0})
            row["in_language"] = hits["balanced"] / max(len(names), 1)  # an empty name counts as a miss
            row["in_language_argmax"] = hits["argmax"] / max(len(names), 1)
            if language in judge.real_recall["balanced"]:
                row["judge_recall_on_real_names"] = judge.real_recall["balanced"][language]
                row["judge_recall_on_real_names_argmax"] = judge.real_recall["argmax"][language]
        per[language] = row
    macro = {key: sum(r[key] for r in per.values()) / len(per)
             for key in ("novel", "in_language", "in_language_argmax", "judge_recall_on_real_names",
                         "judge_recall_on_real_names_argmax")
             if all(key in r for r in per.values())}
    return {"judge_rule": "balanced" if judge is not None else None, "per_language": per, "macro": macro}


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None,
             classifier: str | None = None, temperature: float | None = None,
             top_k: int | None = None) -> dict[str, Any]:
    """Draw ``samples`` names per language (at ``temperature`` from the ``top_k`` likeliest letters,
    default the run's ``eval_temperature`` and ``eval_top_k``) and score them (``quality``);
    ``classifier`` is a names run that judges their language (without it only novelty is measured)."""
    run_dir = Path(run_dir)
    device = resolve_device(device_name or "cpu")
    config, model, state = load_run(run_dir, device)
    temperature = config.eval_temperature if temperature is None else temperature
    top_k = config.eval_top_k if top_k is None else top_k
    check_sample_args(temperature, top_k, None)
    data = load_names(data_path or config.data, state["alphabet"])
    generator = torch.Generator(device=device).manual_seed(config.seed)
    drawn = {language: generate(model, i, [""] * config.samples, state["alphabet"], 2 * state["longest"],
                                temperature, top_k, generator)
             for i, language in enumerate(state["classes"])}
    result = quality(drawn, set(data.names), classifier)
    return {"run_dir": str(run_dir), "recipe": config.recipe, "classifier": classifier,
            "samples_per_language": config.samples, "temperature": temperature, "top_k": top_k,
            "in_language_macro": result["macro"].get("in_language"), "novel_macro": result["macro"]["novel"],
            **result, "examples": {language: names[:5] for language, names in drawn.items()}}


@torch.no_grad()
def predict(run_dir: str | Path, inputs: Sequence[str], top_k: int = 3) -> list[dict]:
    """For each name, the ``top_k`` languages most likely to have generated it (its likelihood
    under each language, normalized over the languages: Bayes with equal priors)."""
    check_predict_args(inputs, top_k, "name")
    _, model, state = load_run(run_dir, "cpu")
    classes = state["classes"]
    folded = [fold_ascii(name, state["alphabet"]) for name in inputs]
    if not all(folded):
        bad = [n for n, f in zip(inputs, folded) if not f]
        raise DataError(f"no letters the model knows in {', '.join(repr(n) for n in bad)}")
    scores = []
    for name in folded:
        x, y = generation_ids(torch.arange(len(classes)), [name] * len(classes), state["alphabet"])
        logp = torch.log_softmax(model(x), 1).gather(1, y[:, None])[:, 0]      # [C * (len+1)]
        scores.append(logp.view(len(classes), -1).sum(1))                      # [C]
    return ranked(torch.stack(scores).softmax(1), classes, inputs, top_k)


class NameGenKind(Kind, functions=(train, evaluate, predict, load_run, sample)):
    """Names drawn letter by letter in a chosen language, judged by a names run."""

    name = "namegen"
    what = "name-generation run"
    config = NameGenConfig
    capabilities = frozenset({"resume", "sample"})
    eval_options = ("classifier", "temperature", "top_k")
    sample_options = SAMPLE_OPTIONS
    sample_continues = SAMPLE_CONTINUES
    metrics = ("in_language_macro", "novel_macro")

    def scores(self, result: dict[str, Any]) -> list[str]:
        if result.get("novel_macro") is None:
            return []
        judged, macro = result.get("in_language_macro"), result["macro"]
        return [(f"in-language {judged:.1%} (equal priors; the judge's argmax "
                 f"{macro['in_language_argmax']:.1%})  " if judged is not None else "") +
                f"novel {result['novel_macro']:.1%} (macro over {len(result['per_language'])} languages)"]
