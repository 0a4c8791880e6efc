"""Transfer learning, measured offline: does a net pretrained on Fashion-MNIST learn digits from few examples?

``train`` pretrains the source recipe (a short fashion-cnn run kept in ``RUN/pretrain``, a
regular image run) or takes ``--from RUN_DIR``; loads scikit-learn's bundled digits (1,797
8x8 images, ink 0..16), upscales them to the source's 28x28 and normalizes them with the
source run's statistics; holds out a stratified test split; then, for each share of the
training split, trains the source architecture twice with the same seed, batches and epochs:
``transfer`` starts from the pretrained weights with a fresh head (fine-tune schedule: the head
alone, then every layer group at discriminative rates), ``scratch`` from random weights
(one-cycle). The run directory holds ``config.json``, ``metrics.jsonl`` (every epoch of every
digits run, with the trained layer groups and their learning rates), the digits models in
``models/`` and ``summary.json`` with both test accuracies per share and
``transfer_gain_points`` (transfer minus scratch, in accuracy points, at the smallest share).
With ``repeats`` N each share is compared on N splits (seeds ``seed`` .. ``seed + N - 1``: test
split, share and initialization all change) and the accuracies are means over them, since one
split's gain moves by a point or more.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence, TextIO

import torch
import torch.nn.functional as F

from nnlab.config import RunConfig, apply_overrides, check_positive, load_config
from nnlab.data.batches import TensorBatches, make_augment, stratified_split
from nnlab.engine.checkpoint import load_checkpoint, save_checkpoint
from nnlab.engine.learner import predict_probs, resolve_device
from nnlab.errors import CheckpointError, ConfigError
from nnlab.kinds.image import ImageConfig, load_run
from nnlab.kit.rundir import environment, read_summary, write_json, write_jsonl
from nnlab.kit.kind import Kind, Option
from nnlab.kit.run import RunStart, Spec, start_run, train_model
from nnlab.models import create_model

@dataclass
class TransferConfig(RunConfig):
    """Transfer learning, measured: a conv net pretrained on Fashion-MNIST (or ``--from RUN_DIR``)
    fine-tuned on scikit-learn's 8x8 digits upscaled to 28x28, against the same net from scratch."""

    kind: str = "transfer"
    source_recipe: str = "fashion-cnn"  # the name of the image recipe pretrained first (unless from_run)
    source: dict[str, Any] = field(default_factory=dict)  # that recipe's config, nested (what pretraining runs)
    from_run: str | None = None         # --from RUN_DIR: an image run on 28x28 grey images to start from
    pretrain_epochs: int = 2            # epochs of source_recipe (its schedule squeezed into them)
    percents: tuple[int, ...] = (10, 25, 100)  # shares of the digits' training split, each trained twice
    epochs: int = 10                    # per digits run, transfer and scratch alike
    freeze_epochs: int = 2              # transfer: head-only epochs (fine-tune schedule)
    batch_size: int = 32                # a cap: a share of the digits smaller than it trains as one batch
    lr: float = 3e-3                    # transfer's peak learning rate (the head's)
    scratch_lr: float = 1e-2            # scratch's: the best of 3e-3 and 1e-2 measured from scratch
    lr_mult: float = 0.3                # transfer: each earlier layer group trains at this times the next
    augment: tuple[str, ...] = ()       # batched augmentations of the digits, both runs alike
    repeats: int = 1                    # splits (seed, seed + 1, ...) each share is compared on; accuracies averaged
    weight_decay: float = 5e-4
    device: str = "cpu"                 # 1,797 small images: the CPU is quick enough
    precision: str = "auto"

    # Each digits run has its own fixed schedule (fine-tune or one-cycle) and no validation split.
    unused: ClassVar[frozenset[str]] = frozenset((
        "schedule", "pct_start", "cycles", "cycle_mult", "step_every", "gamma", "patience", "monitor", "time_budget",
        "valid_fraction", "stop_after_epochs", "eval_batch_size", "label_smoothing", "clip", "limit_train_batches"))

    def check(self) -> None:
        """Reject settings no transfer run could use, naming the setting."""
        super().check()
        if not self.percents or any(not 0 < p <= 100 for p in self.percents):
            raise ConfigError(f"percents must be in (0, 100], got {self.percents}")
        check_comparison(self)


def check_comparison(config: Any) -> None:
    """The rules a pretrain-then-compare config shares: a head-only phase shorter than the run, at
    least one pretraining epoch and one repeat."""
    if not 0 <= config.freeze_epochs < config.epochs:
        raise ConfigError(f"freeze_epochs must be in [0, epochs), got {config.freeze_epochs}")
    check_positive(config, "pretrain_epochs", "repeats")


DIGIT_CLASSES = tuple(str(d) for d in range(10))
INITS = ("scratch", "transfer")


def load_digits_images(size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits as uint8 [1797, 1, size, size] images (ink bright on dark,
    as in Fashion-MNIST) and int64 [1797] labels; bilinear upscaling, 0..16 stretched to 0..255."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    ink = torch.from_numpy(digits.images).float().unsqueeze(1) * (255.0 / 16.0)  # [N, 1, 8, 8]
    images = F.interpolate(ink, size=(size, size), mode="bilinear", align_corners=False)  # [N, 1, size, size]
    return images.round().clamp(0, 255).to(torch.uint8), torch.from_numpy(digits.target).long()


def share(labels: torch.Tensor, percent: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of a stratified ``percent``% of ``labels`` (all of them at 100)."""
    if percent >= 100:
        return torch.arange(len(labels))
    return stratified_split(labels, percent / 100.0, generator)[1]


def source_model(config: TransferConfig, run_dir: Path, stream: TextIO, dry_run: bool) -> tuple[Path, dict]:
    """The run to transfer from, pretrained here (``run_dir/pretrain``) unless ``from_run`` names one;
    returns its directory and its best checkpoint (weights, model name and args, input statistics)."""
    if config.from_run:
        source = Path(config.from_run)
        kind = load_config(source / "config.json").kind if (source / "config.json").is_file() else None
        if kind != "image":
            raise CheckpointError(f"--from {source}: not an image run (its kind: {kind})")
    else:
        from nnlab.kinds.image import ImageKind
        if config.source.get("kind", "image") != "image" or not config.source:
            raise ConfigError(f"source: the nested config of the recipe to pretrain ({config.source_recipe!r}) "
                              "must be an image run's")
        source = run_dir / "pretrain"
        overrides = {"epochs": config.pretrain_epochs, "seed": config.seed, "device": config.device,
                     "threads": config.threads, "time_budget": None, **({"data": config.data} if config.data else {})}
        source_config = apply_overrides(ImageConfig(**{**config.source, **tuples_of(config.source)}), overrides)
        print(f"pretraining {config.source_recipe} for {config.pretrain_epochs} epochs into {source}",
              file=stream, flush=True)
        with start_run(source_config, source) as start:
            ImageKind().train(start, stream, dry_run)
    _, _, state = load_run(source)
    if list(state["input_shape"]) != [1, 28, 28]:
        raise CheckpointError(f"{source}: its model takes {'x'.join(map(str, state['input_shape']))} images; "
                              "digits-transfer needs a run on 28x28 grey images (e.g. fashion-cnn)")
    return source, state


def tuples_of(fields: dict[str, Any]) -> dict[str, Any]:
    """The list values of a config read back from JSON as the tuples an ``ImageConfig`` holds."""
    return {key: tuple(value) for key, value in fields.items() if isinstance(value, list)}


def digits_model(state: dict, init: str, seed: int) -> torch.nn.Module:
    """The source architecture with a fresh 10-way head: pretrained weights (``transfer``) or none (``scratch``)."""
    torch.manual_seed(seed)  # the same random weights for every run of a seed
    if init == "scratch":
        return create_model(state["model_name"], n_classes=len(DIGIT_CLASSES), **state["model_args"])
    model = create_model(state["model_name"], n_classes=len(state["classes"]), **state["model_args"])
    model.load_state_dict(state["model"])
    torch.manual_seed(seed)
    model.reset_classifier(len(DIGIT_CLASSES))
    return model


def fit_digits(config: TransferConfig, state: dict, init: str, images: torch.Tensor, labels: torch.Tensor,
               device: torch.device, epochs: int, freeze_epochs: int) -> tuple[torch.nn.Module, list[dict]]:
    """Train one digits model on ``images`` through the run kit, in memory; ``transfer`` fine-tunes
    (head, then all groups at ``lr * lr_mult**k``), ``scratch`` trains every layer at ``scratch_lr``
    with one-cycle: same batches, same epochs."""
    model = digits_model(state, init, config.seed)
    transfer = init == "transfer"
    generator = torch.Generator().manual_seed(config.seed)
    # drop_last: a last batch of one image would break batch norm; the batch never exceeds the share
    batches = TensorBatches(images, labels, min(config.batch_size, len(labels)), shuffle=True, drop_last=True,
                            generator=generator, mean=state["mean"], std=state["std"], device=device,
                            augment=make_augment(config.augment))
    return fit_compared(config, transfer, model, batches, generator, device, epochs, freeze_epochs)


def fit_compared(config: Any, transfer: bool, model: torch.nn.Module, batches: Any, generator: torch.Generator,
                 device: torch.device, epochs: int, freeze_epochs: int,
                 channels_last: bool = False) -> tuple[torch.nn.Module, list[dict]]:
    """Train one model of a transfer-vs-scratch comparison through the run kit, in memory: ``transfer``
    fine-tunes (the head for ``freeze_epochs``, then every group at ``lr * lr_mult**k``), scratch runs
    one-cycle at ``scratch_lr``; same batches and epochs either way."""
    run = dataclasses.replace(config, epochs=epochs, freeze_epochs=freeze_epochs,
                              lr=config.lr if transfer else config.scratch_lr,
                              lr_mult=config.lr_mult if transfer else 1.0,
                              schedule="fine-tune" if transfer else "one-cycle",
                              stop_after_epochs=None, time_budget=None, patience=None)
    trained = train_model(RunStart(run, device, None), Spec(model, batches, None, torch.nn.CrossEntropyLoss(),
                                                            generator=generator, channels_last=channels_last))
    return trained.model, trained.history


def held_out_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, state: dict,
                  device: torch.device) -> float:
    """Accuracy of ``model`` on the held-out digits."""
    batches = TensorBatches(images, labels, 512, mean=state["mean"], std=state["std"], device=device)
    probs, targets = predict_probs(model, batches, device)
    return (probs.argmax(1) == targets).sum().item() / len(targets)


def split_digits(config: TransferConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits at 28x28 and the stratified, seeded (train, test) indices."""
    images, labels = load_digits_images()
    train_idx, test_idx = stratified_split(labels, config.test_fraction, torch.Generator().manual_seed(config.seed))
    return images, labels, train_idx, test_idx


def model_file(init: str, percent: int, repeat: int) -> str:
    """``INIT-PERCENT`` for the first repeat, ``INIT-PERCENT-seedS`` (S = seed offset) for the others."""
    return f"{init}-{percent}" + (f"-seed{repeat}" if repeat else "")


def compare(config: TransferConfig, state: dict, run_dir: Path, percent: int, device: torch.device, epochs: int,
            freeze_epochs: int, stream: TextIO, rows: list[dict]) -> dict[str, Any]:
    """Scratch and transfer on ``percent``% of the digits, ``config.repeats`` times (seed, seed + 1, ...:
    each repeat its own test split, share and initialization); the mean accuracies and each repeat's."""
    accuracy: dict[str, list[float]] = {init: [] for init in INITS}
    for repeat in range(config.repeats):
        seeded = dataclasses.replace(config, seed=config.seed + repeat)
        images, labels, train_idx, test_idx = split_digits(seeded)
        chosen = train_idx[share(labels[train_idx], percent, torch.Generator().manual_seed(seeded.seed))]
        for init in INITS:
            began = time.perf_counter()
            model, history = fit_digits(seeded, state, init, images[chosen], labels[chosen], device, epochs,
                                        freeze_epochs)
            accuracy[init].append(held_out_accuracy(model, images[test_idx], labels[test_idx], state, device))
            rows += [{"init": init, "percent": percent, "seed": seeded.seed, **row} for row in history]
            save_checkpoint(run_dir / "models" / f"{model_file(init, percent, repeat)}.pt",
                            {"model": model.state_dict(), "model_name": state["model_name"],
                             "model_args": state["model_args"], "classes": list(DIGIT_CLASSES),
                             "mean": list(state["mean"]), "std": list(state["std"]), "input_shape": [1, 28, 28],
                             "percent": percent, "init": init, "seed": seeded.seed})
            print(f"{percent:>3}% of the digits ({len(chosen)} images), seed {seeded.seed}, {init:<8}: test "
                  f"accuracy {accuracy[init][-1]:.4f} ({time.perf_counter() - began:.1f}s)", file=stream, flush=True)
    scratch, transfer = (sum(accuracy[init]) / config.repeats for init in INITS)
    return {"percent": percent, "train_images": len(chosen), "scratch_accuracy": scratch,
            "transfer_accuracy": transfer, "gain_points": round(100 * (transfer - scratch), 2),
            "repeats": config.repeats, "scratch_per_seed": accuracy["scratch"],
            "transfer_per_seed": accuracy["transfer"]}


def train(start: RunStart, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
    """Pretrain (or take ``from_run``), then compare transfer and scratch on shares of the digits;
    returns the summary. ``dry_run``: a few pretraining batches, one share, two epochs. With
    ``repeats`` above 1 each share is compared on that many splits and the accuracies averaged."""
    config, device, run_dir, recipe = start.config, start.device, start.open(), start.config.recipe
    start = time.perf_counter()
    source, state = source_model(config, run_dir, stream, dry_run)
    pretrain_seconds = time.perf_counter() - start
    _, _, train_idx, test_idx = split_digits(config)
    percents = config.percents[:1] if dry_run else config.percents
    epochs, freeze_epochs = (2, min(config.freeze_epochs, 1)) if dry_run else (config.epochs, config.freeze_epochs)
    rows: list[dict] = []
    results = [compare(config, state, run_dir, percent, device, epochs, freeze_epochs, stream, rows)
               for percent in percents]
    write_jsonl(run_dir / "metrics.jsonl", rows)
    summary = {
        "recipe": recipe, "kind": config.kind, "run_dir": str(run_dir), "source_run": str(source), "source_model": state["model_name"],
        "source_test_accuracy": _summary_value(source, "test_accuracy"),
        "digits_train_images": len(train_idx), "digits_test_images": len(test_idx), "epochs": epochs,
        "freeze_epochs": freeze_epochs, "lr": config.lr, "lr_mult": config.lr_mult, "repeats": config.repeats,
        "results": results, "transfer_gain_points": results[0]["gain_points"], "gain_at_percent": results[0]["percent"],
        "pretrain_seconds": round(pretrain_seconds, 3) if not config.from_run else 0.0,
        "train_seconds": round(time.perf_counter() - start, 3), "dry_run": dry_run, **environment(),
    }
    write_json(run_dir / "summary.json", summary)
    print(table(results), file=stream, flush=True)
    return summary


def _summary_value(run_dir: Path, key: str) -> Any:
    return (read_summary(run_dir) or {}).get(key)


def table(results: Sequence[dict[str, Any]]) -> str:
    """The comparison as a small text table: share, images, both accuracies, gain in points."""
    repeats = results[0].get("repeats", 1) if results else 1
    lines = ["share  images  scratch  transfer   gain" + (f"   (means over {repeats} splits)" if repeats > 1 else "")]
    for r in results:
        lines.append(f"{r['percent']:>4}%  {r['train_images']:>6}  {100 * r['scratch_accuracy']:>6.1f}%  "
                     f"{100 * r['transfer_accuracy']:>7.1f}%  {r['gain_points']:>+5.1f}")
    return "\n".join(lines)


def saved_models(run_dir: str | Path, config_class: type, what: str,
                 device_name: str | None) -> tuple[Any, torch.device, list[tuple[Path, dict, torch.nn.Module]]]:
    """The config, device and every saved model (``models/*.pt``, weights only, on the device) of a
    comparison run whose config is a ``config_class`` (``what`` names such runs in errors)."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.json")
    if not isinstance(config, config_class):
        raise CheckpointError(f"{run_dir}: not a {what} run")
    device = resolve_device(device_name or config.device)
    models = []
    for path in sorted((run_dir / "models").glob("*.pt")):
        state = load_checkpoint(path, map_location=device)
        model = create_model(state["model_name"], n_classes=len(state["classes"]), **state["model_args"])
        model.load_state_dict(state["model"])
        models.append((path, state, model.to(device)))
    if not models:
        raise CheckpointError(f"{run_dir / 'models'}: no {what} models")
    return config, device, models


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """Score every digits model of the run (``models/INIT-PERCENT.pt``) again on the held-out digits."""
    config, device, models = saved_models(run_dir, TransferConfig, "digits-transfer", device_name)
    accuracy: dict[str, float] = {}
    for path, state, model in models:
        seed = state.get("seed", config.seed)  # each repeat's own test split
        images, labels, _, test_idx = split_digits(dataclasses.replace(config, seed=seed))
        accuracy[path.stem] = held_out_accuracy(model, images[test_idx], labels[test_idx], state, device)
    return {"run_dir": str(run_dir), "recipe": config.recipe, "test_accuracy_by_model": accuracy,
            "summary": _summary_value(Path(run_dir), "results")}


def predict(run_dir: str | Path, files: Sequence[str | Path] = (), top_k: int = 3) -> list[dict]:
    """Not offered: a digits-transfer run is a measurement; its models are in ``RUN/models``."""
    raise ConfigError(f"predict does not apply to the digits-transfer run in {run_dir}; "
                      "its pretrained source is an image run you can predict with (RUN/pretrain)")


# --from: shared with the fashion-transfer kind, which imports it.
FROM_RUN_OPTION = Option("--from", "from_run", "digits-transfer and fashion-transfer: start from this earlier run "
                         "instead of pretraining", metavar="RUN_DIR")


class TransferKind(Kind, functions=(train, evaluate, predict)):
    """A measurement: an image recipe pretrained on Fashion-MNIST, then fine-tuned on scikit-learn's
    digits against the same net from scratch."""

    name = "transfer"
    what = "digits-transfer run"
    config = TransferConfig
    metrics = ("transfer_gain_points",)
    options = (FROM_RUN_OPTION,)

    def scores(self, result: dict[str, Any]) -> list[str]:
        if result.get("transfer_gain_points") is None:
            return []
        return [f"transfer - scratch: {result['transfer_gain_points']:+.1f} points at "
                f"{result['gain_at_percent']}% of the digits"]
