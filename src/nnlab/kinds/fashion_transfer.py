"""Transfer learning that visibly works offline: Fashion-MNIST classes 0-4 -> few-shot classes 5-9.

``train`` pretrains a conv net on every training image of the source classes (0-4: T-shirt,
trouser, pullover, dress, coat), in memory through the run kit, and keeps it in
``RUN/pretrain.pt`` (or takes that file from ``--from RUN_DIR``, an earlier fashion-transfer
run). Then for each K in ``shots`` it draws, by the seed, a validation set of ``valid_per_class``
training images of each target class (5-9: sandal, shirt, sneaker, bag, ankle boot) and, apart
from it, K labelled training images of each, and learns the target classes from the K-shot set
twice:

- ``transfer`` from the pretrained weights, by the best on validation of ``transfer_methods``:
  ``probe`` (a linear head fitted by L2 logistic regression on the frozen pretrained features,
  its L2 the best of ``probe_weight_decays`` on validation) and ``fine-tune`` (a fresh head alone
  for ``freeze_epochs``, then every layer group at discriminative rates ``lr * lr_mult**k``);
- ``scratch`` from random weights, the same architecture, batches and epochs (one-cycle; its
  learning rate the best of ``scratch_lrs`` on validation, unless ``scratch_lr`` fixes it).

Validation images choose every setting; the test images (every test image of the target
classes, 5,000 on Fashion-MNIST) only score the chosen models. With ``repeats`` N everything
after pretraining runs for seeds ``seed`` .. ``seed + N - 1`` (the drawn images and the
initializations change) and the summary gives means and spreads.

The run directory holds ``config.json``, ``pretrain.pt``, ``metrics.jsonl`` (every epoch of
every option tried, the chosen ones marked), the chosen few-shot models in ``models/``,
``transfer.png`` (test accuracy against K, both starts, with the spread over seeds) and
``summary.json`` with both accuracies per K, what validation chose, and ``transfer_gain_points``
(transfer minus scratch, accuracy points, per K).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence, TextIO

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from nnlab.config import RunConfig, check_positive
from nnlab.data.batches import TensorBatches, make_augment
from nnlab.data.vision import load_image_dataset
from nnlab.engine.checkpoint import load_checkpoint, save_checkpoint
from nnlab.engine.learner import predict_probs
from nnlab.errors import CheckpointError, ConfigError
from nnlab.files import save_figure
from nnlab.kit.rundir import environment, read_summary, write_json, write_jsonl
from nnlab.kinds.transfer import FROM_RUN_OPTION, check_comparison, fit_compared, saved_models
from nnlab.kit.kind import Kind
from nnlab.kit.run import RunStart, Spec, train_model
from nnlab.models import create_model


@dataclass
class FashionTransferConfig(RunConfig):
    """Pretrain on Fashion-MNIST classes 0-4 (or ``--from RUN_DIR``), then learn classes 5-9 from K
    images each, from the pretrained net (probe or fine-tune, chosen on validation) and from scratch."""

    kind: str = "fashion-transfer"
    dataset: str = "fashion-mnist"
    from_run: str | None = None         # --from RUN_DIR: an earlier fashion-transfer run whose pretrain.pt to reuse
    source_classes: tuple[int, ...] = (0, 1, 2, 3, 4)
    target_classes: tuple[int, ...] = (5, 6, 7, 8, 9)
    model: str = "cnn"
    model_args: dict[str, Any] = field(default_factory=lambda: {"widths": (16, 32, 64), "head_hidden": 256,
                                                                "dropout": 0.0})
    pretrain_epochs: int = 4            # over all training images of the source classes (one-cycle)
    pretrain_lr: float = 1e-2
    pretrain_batch_size: int = 128
    pretrain_per_class: int = 0         # 0: every training image of the source classes; else this many of each (seeded)
    shots: tuple[int, ...] = (5, 10, 50, 100)  # K labelled training images per target class
    epochs: int = 12                    # per few-shot run, transfer and scratch alike
    freeze_epochs: int = 3              # transfer: head-only epochs (fine-tune schedule)
    batch_size: int = 32                # a cap: a K-shot set smaller than it trains as one batch
    min_epoch_images: int = 256         # an epoch draws the K-shot set repeatedly to at least this many images
    lr: float = 3e-3                    # transfer's peak learning rate (the head's)
    scratch_lr: float | None = None     # scratch's (one-cycle); None: each seed takes the best of scratch_lrs
    scratch_lrs: tuple[float, ...] = (3e-3, 1e-2, 3e-2)  # scored on the validation images, never the test ones
    valid_per_class: int = 200          # validation images of each target class, drawn from the training images
    lr_mult: float = 0.3                # transfer: each earlier layer group trains at this times the next
    # Batched augmentations of the few-shot runs, transfer and scratch alike: none, since Fashion-MNIST's
    # shoes all point one way and mirroring lowered both starts' validation accuracy (docs/benchmarks.md).
    augment: tuple[str, ...] = ()
    pretrain_augment: tuple[str, ...] = ("flip_lr",)  # of pretraining (the source classes are left-right symmetric)
    transfer_methods: tuple[str, ...] = ("probe", "fine-tune")  # each seed's transfer: the best on validation
    probe_weight_decays: tuple[float, ...] = (0.01, 0.1)  # the probe's L2, chosen on validation
    repeats: int = 1                    # seeds (seed, seed + 1, ...) of the few-shot draws; means and spreads
    weight_decay: float = 5e-4
    eval_batch_size: int = 1000
    device: str = "cpu"
    precision: str = "auto"
    channels_last: bool = True          # bf16 convolutions on the CPU: 2.4x faster per step than NCHW (measured)

    # Each few-shot run has its own fixed schedule (fine-tune or one-cycle) and no kit validation split
    # (the validation images choose between whole runs).
    unused: ClassVar[frozenset[str]] = frozenset((
        "schedule", "pct_start", "cycles", "cycle_mult", "step_every", "gamma", "patience", "monitor", "time_budget",
        "valid_fraction", "test_fraction", "stop_after_epochs", "label_smoothing", "clip", "limit_train_batches"))

    def check(self) -> None:
        """Reject settings no fashion-transfer run could use, naming the setting."""
        super().check()
        if not self.shots or any(k < 1 for k in self.shots):
            raise ConfigError(f"shots must be positive image counts per class, got {self.shots}")
        check_comparison(self)
        check_positive(self, "valid_per_class")
        if not self.transfer_methods or set(self.transfer_methods) - set(TRANSFER_METHODS):
            raise ConfigError(f"transfer_methods must be some of {', '.join(TRANSFER_METHODS)}, "
                              f"got {self.transfer_methods}")
        if "probe" in self.transfer_methods and (not self.probe_weight_decays or min(self.probe_weight_decays) < 0):
            raise ConfigError(f"probe_weight_decays must be weights >= 0, got {self.probe_weight_decays}")
        if self.scratch_lr is None and (not self.scratch_lrs or min(self.scratch_lrs) <= 0):
            raise ConfigError(f"scratch_lrs must be positive learning rates, got {self.scratch_lrs}")
        if self.pretrain_per_class < 0:
            raise ConfigError(f"pretrain_per_class must be 0 (all images) or a positive count, got {self.pretrain_per_class}")
        if len(self.source_classes) < 2 or len(self.target_classes) < 2:
            raise ConfigError("source_classes and target_classes need at least two classes each")
        if set(self.source_classes) & set(self.target_classes):
            raise ConfigError(f"source_classes {self.source_classes} and target_classes {self.target_classes} overlap")


INITS = ("scratch", "transfer")
# probe: a linear head on the frozen pretrained features (logistic regression); fine-tune: the head
# alone, then every layer group at discriminative rates.
TRANSFER_METHODS = ("probe", "fine-tune")


def subset(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of ``classes``, labelled 0..len(classes)-1 in that order."""
    keep = torch.isin(labels, torch.tensor(list(classes)))
    remap = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
    remap[torch.tensor(list(classes))] = torch.arange(len(classes))
    return images[keep], remap[labels[keep]]


def draw_shots(labels: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``k`` images of each class in ``labels`` (all of a class that has fewer), drawn by ``generator``."""
    chosen = []
    for c in labels.unique().tolist():
        where = (labels == c).nonzero().flatten()
        chosen.append(where[torch.randperm(len(where), generator=generator)[:k]])
    return torch.cat(chosen).sort().values


def draw_split(labels: torch.Tensor, k: int, valid_per_class: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the K-shot training set and of a disjoint validation set (``valid_per_class`` of each
    class, drawn first), both from ``labels`` (the training images) by ``generator``."""
    valid = draw_shots(labels, valid_per_class, generator)
    rest = torch.ones(len(labels), dtype=torch.bool)
    rest[valid] = False
    pool = rest.nonzero().flatten()
    return pool[draw_shots(labels[pool], k, generator)], valid


def batches_for(config: FashionTransferConfig, images: torch.Tensor, labels: torch.Tensor, mean, std,
                device: torch.device, generator: torch.Generator, batch_size: int,
                min_images: int = 0) -> TensorBatches:
    """Shuffled training batches of ``images``, repeated to at least ``min_images`` per epoch."""
    if min_images > len(labels):
        copies = math.ceil(min_images / len(labels))
        images, labels = images.repeat(copies, 1, 1, 1), labels.repeat(copies)
    # drop_last: a last batch of one image would break batch norm
    return TensorBatches(images, labels, min(batch_size, len(labels)), shuffle=True, drop_last=True,
                         generator=generator, mean=mean, std=std, device=device,
                         augment=make_augment(config.augment), channels_last=config.channels_last)


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, state: dict,
             device: torch.device, batch_size: int = 1000, channels_last: bool = False) -> float:
    """Accuracy of ``model`` on ``images``."""
    batches = TensorBatches(images, labels, batch_size, mean=state["mean"], std=state["std"], device=device,
                            channels_last=channels_last)
    probs, targets = predict_probs(model, batches, device)
    return (probs.argmax(1) == targets).sum().item() / len(targets)


def pretrain(config: FashionTransferConfig, data, run_dir: Path, device: torch.device, stream: TextIO,
             dry_run: bool) -> dict:
    """Train the source net on every training image of ``source_classes``; saved to ``run_dir/pretrain.pt``."""
    images, labels = subset(data.train_images, data.train_labels, config.source_classes)
    if config.pretrain_per_class:
        chosen = draw_shots(labels, config.pretrain_per_class, torch.Generator().manual_seed(config.seed))
        images, labels = images[chosen], labels[chosen]
    if dry_run:
        images, labels = images[: 4 * config.pretrain_batch_size], labels[: 4 * config.pretrain_batch_size]
    torch.manual_seed(config.seed)
    model = create_model(config.model, n_classes=len(config.source_classes), **config.model_args)
    generator = torch.Generator().manual_seed(config.seed)
    batches = batches_for(dataclasses.replace(config, augment=config.pretrain_augment), images, labels, data.mean,
                          data.std, device, generator, config.pretrain_batch_size)
    run = dataclasses.replace(config, epochs=1 if dry_run else config.pretrain_epochs, lr=config.pretrain_lr,
                              batch_size=config.pretrain_batch_size, schedule="one-cycle", lr_mult=1.0,
                              stop_after_epochs=None, time_budget=None, patience=None)
    print(f"pretraining {config.model} on classes {list(config.source_classes)} ({len(labels)} images, "
          f"{run.epochs} epochs)", file=stream, flush=True)
    trained = train_model(RunStart(run, device, None), Spec(model, batches, None, torch.nn.CrossEntropyLoss(),
                                                            generator=generator, channels_last=config.channels_last))
    state = {"model": trained.model.state_dict(), "model_name": config.model, "model_args": dict(config.model_args),
             "classes": [data.classes[c] for c in config.source_classes], "mean": list(data.mean),
             "std": list(data.std), "input_shape": list(images.shape[1:]),
             "source_classes": list(config.source_classes)}
    test_x, test_y = subset(data.test_images, data.test_labels, config.source_classes)
    state["test_accuracy"] = accuracy(trained.model, test_x, test_y, state, device, config.eval_batch_size,
                                      config.channels_last)
    print(f"pretrained: test accuracy {state['test_accuracy']:.4f} on classes {list(config.source_classes)}",
          file=stream, flush=True)
    save_checkpoint(run_dir / "pretrain.pt", state)
    return state


def source_state(config: FashionTransferConfig, data, run_dir: Path, device: torch.device, stream: TextIO,
                 dry_run: bool) -> tuple[Path, dict]:
    """The pretrained checkpoint and where it is: ``from_run/pretrain.pt``, or pretrained now."""
    if not config.from_run:
        return run_dir / "pretrain.pt", pretrain(config, data, run_dir, device, stream, dry_run)
    source = Path(config.from_run) / "pretrain.pt"
    if not source.is_file():
        raise CheckpointError(f"--from {config.from_run}: not a fashion-transfer run (no pretrain.pt)")
    state = load_checkpoint(source, map_location="cpu")
    if set(state.get("source_classes", ())) & set(config.target_classes):
        raise CheckpointError(f"--from {config.from_run}: pretrained on {state['source_classes']}, which overlap "
                              f"the target classes {list(config.target_classes)}")
    return source, state


def fewshot_model(state: dict, init: str, n_classes: int, seed: int) -> torch.nn.Module:
    """The source architecture with a fresh head: pretrained weights (``transfer``) or none (``scratch``)."""
    torch.manual_seed(seed)
    if init == "scratch":
        return create_model(state["model_name"], n_classes=n_classes, **state["model_args"])
    model = create_model(state["model_name"], n_classes=len(state["classes"]), **state["model_args"])
    model.load_state_dict(state["model"])
    torch.manual_seed(seed)
    model.reset_classifier(n_classes)
    return model


def fit_fewshot(config: FashionTransferConfig, state: dict, init: str, images: torch.Tensor, labels: torch.Tensor,
                device: torch.device, epochs: int, freeze_epochs: int) -> tuple[torch.nn.Module, list[dict]]:
    """Train one few-shot model through the run kit, in memory: ``transfer`` fine-tunes (head, then all
    groups at ``lr * lr_mult**k``), ``scratch`` trains every layer at ``scratch_lr`` with one-cycle."""
    model = fewshot_model(state, init, len(config.target_classes), config.seed)
    transfer = init == "transfer"
    generator = torch.Generator().manual_seed(config.seed)
    batches = batches_for(config, images, labels, state["mean"], state["std"], device, generator, config.batch_size,
                          config.min_epoch_images)
    return fit_compared(config, transfer, model, batches, generator, device, epochs, freeze_epochs,
                        config.channels_last)


def model_file(init: str, k: int, repeat: int) -> str:
    """``INIT-kK`` for the first repeat, ``INIT-kK-seedS`` (S = seed offset) for the others."""
    return f"{init}-k{k}" + (f"-seed{repeat}" if repeat else "")


def _spread(values: Sequence[float]) -> float:
    """The sample standard deviation (0 for one value)."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def probe_args(state: dict) -> dict[str, Any]:
    """The source architecture's arguments with a plain linear head (no hidden layer, no dropout)."""
    return {**state["model_args"], "head_hidden": 0, "dropout": 0.0}


def last_linear(model: torch.nn.Module) -> torch.nn.Linear:
    """The model's last linear layer: its classifier, which a probe replaces."""
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]


def head_inputs(model: torch.nn.Module, images: torch.Tensor, state: dict, device: torch.device,
                config: FashionTransferConfig) -> torch.Tensor:
    """What the model's last linear layer reads for each image, [N, D] fp32 (eval mode): the frozen
    pretrained features a probe is fitted on."""
    last = last_linear(model)
    captured: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda module, args, out: captured.append(args[0].detach().float().cpu()))
    try:
        predict_probs(model, TensorBatches(images, torch.zeros(len(images), dtype=torch.long), config.eval_batch_size,
                                           mean=state["mean"], std=state["std"], device=device,
                                           channels_last=config.channels_last), device)
    finally:
        hook.remove()
    return torch.cat(captured)


def logistic_regression(features: torch.Tensor, labels: torch.Tensor, n_classes: int,
                        weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression with an L2 penalty (``weight_decay * |W|^2`` on the mean loss),
    fitted by L-BFGS on standardized features; returns ``(W, b)`` for the raw features."""
    mean, std = features.mean(0), features.std(0) + 1e-3
    z = (features - mean) / std  # [N, D]
    weight = torch.zeros(n_classes, features.shape[1], requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=500, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, labels) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():  # z @ W.T + b == x @ (W / std).T + (b - W @ (mean / std))
        return weight / std, bias - weight @ (mean / std)


def fit_probe(config: FashionTransferConfig, state: dict, train: tuple[torch.Tensor, torch.Tensor],
              valid: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> torch.nn.Module:
    """The pretrained net with a linear head fitted on its frozen features of the K-shot images (no
    augmentation: Fashion-MNIST's shoes all point one way, and mirrored copies lowered the validation
    accuracy), its L2 the best of ``probe_weight_decays`` on the validation images."""
    torch.manual_seed(config.seed)
    model = create_model(state["model_name"], n_classes=len(config.target_classes), **probe_args(state))
    missing, unexpected = model.load_state_dict({k: v for k, v in state["model"].items()
                                                 if not k.startswith("head.")}, strict=False)
    if unexpected or any(not key.startswith("head.") for key in missing):
        raise CheckpointError(f"the pretrained {state['model_name']} does not fit its own body: {missing or unexpected}")
    model = model.to(device)
    x, valid_x = head_inputs(model, train[0], state, device, config), head_inputs(model, valid[0], state, device, config)
    fits = [logistic_regression(x, train[1], len(config.target_classes), wd) for wd in config.probe_weight_decays]
    scores = [((valid_x @ w.T + b).argmax(1) == valid[1]).float().mean().item() for w, b in fits]
    weight, bias = fits[scores.index(max(scores))]
    last = last_linear(model)
    with torch.no_grad():
        last.weight.copy_(weight)
        last.bias.copy_(bias)
    return model


def fit_chosen(config: FashionTransferConfig, state: dict, init: str, train: tuple[torch.Tensor, torch.Tensor],
               valid: tuple[torch.Tensor, torch.Tensor], device: torch.device, epochs: int,
               freeze_epochs: int) -> tuple[str, dict[str, tuple[float, torch.nn.Module, list[dict]]]]:
    """Every option of one few-shot model, and the name of the best on the validation images (the first
    best on a tie): for ``transfer`` the ``transfer_methods``, for ``scratch`` the learning rates
    ``scratch_lrs`` (or the fixed ``scratch_lr``). Each option: its validation accuracy, model, epochs."""
    if init == "transfer":
        options = {method: (lambda: (fit_probe(config, state, train, valid, device), [])) if method == "probe" else
                   (lambda: fit_fewshot(config, state, "transfer", *train, device, epochs, freeze_epochs))
                   for method in config.transfer_methods}
    else:
        lrs = (config.scratch_lr,) if config.scratch_lr is not None else config.scratch_lrs
        options = {f"{lr:g}": (lambda lr=lr: fit_fewshot(dataclasses.replace(config, scratch_lr=lr), state, "scratch",
                                                         *train, device, epochs, freeze_epochs)) for lr in lrs}
    tried = {}
    for name, fit in options.items():
        model, history = fit()
        tried[name] = (accuracy(model, *valid, state, device, config.eval_batch_size, config.channels_last),
                       model, history)
    return max(tried, key=lambda name: tried[name][0]), tried


def compare(config: FashionTransferConfig, state: dict, data, run_dir: Path, k: int, device: torch.device,
            epochs: int, freeze_epochs: int, stream: TextIO, rows: list[dict]) -> dict[str, Any]:
    """Scratch and transfer on K images per target class, ``repeats`` times; means, spreads, each seed's,
    and the validation accuracies that chose the scratch learning rates."""
    train_x, train_y = subset(data.train_images, data.train_labels, config.target_classes)
    test_x, test_y = subset(data.test_images, data.test_labels, config.target_classes)
    scores: dict[str, list[float]] = {init: [] for init in INITS}
    valids: dict[str, list[float]] = {init: [] for init in INITS}
    picked: dict[str, list[str]] = {init: [] for init in INITS}   # each seed's option (scratch: its lr)
    options: dict[str, dict[str, list[float]]] = {init: {} for init in INITS}  # option -> validation per seed
    gains: list[float] = []
    for repeat in range(config.repeats):
        seeded = dataclasses.replace(config, seed=config.seed + repeat)
        chosen, valid = draw_split(train_y, k, config.valid_per_class, torch.Generator().manual_seed(seeded.seed))
        for init in INITS:
            began = time.perf_counter()
            name, tried = fit_chosen(seeded, state, init, (train_x[chosen], train_y[chosen]),
                                     (train_x[valid], train_y[valid]), device, epochs, freeze_epochs)
            model = tried[name][1]
            scores[init].append(accuracy(model, test_x, test_y, state, device, config.eval_batch_size,
                                         config.channels_last))
            valids[init].append(tried[name][0])
            picked[init].append(name)
            for option, (score, _, history) in tried.items():
                options[init].setdefault(option, []).append(score)
                rows += [{"init": init, "shots": k, "seed": seeded.seed, "option": option, "chosen": option == name,
                          "lr": float(option) if init == "scratch" else config.lr, **row} for row in history]
            save_checkpoint(run_dir / "models" / f"{model_file(init, k, repeat)}.pt",
                            {"model": model.state_dict(), "model_name": state["model_name"],
                             "model_args": probe_args(state) if name == "probe" else state["model_args"],
                             "classes": [data.classes[c] for c in config.target_classes],
                             "mean": list(state["mean"]), "std": list(state["std"]),
                             "input_shape": list(state["input_shape"]), "shots": k, "init": init,
                             "seed": seeded.seed, "option": name})
            what = f"lr {name}" if init == "scratch" else name
            note = f" ({what}, the best on validation of {', '.join(tried)})" if len(tried) > 1 else f" ({what})"
            print(f"K={k:>3} ({len(chosen)} images), seed {seeded.seed}, {init:<8}: test accuracy "
                  f"{scores[init][-1]:.4f}, validation {tried[name][0]:.4f}{note} ({time.perf_counter() - began:.1f}s)",
                  file=stream, flush=True)
        gains.append(100 * (scores["transfer"][-1] - scores["scratch"][-1]))
    scratch, transfer = (sum(scores[init]) / config.repeats for init in INITS)
    return {"shots": k, "train_images": len(chosen), "valid_images": len(valid),
            "scratch_accuracy": scratch, "transfer_accuracy": transfer,
            "scratch_spread": _spread(scores["scratch"]), "transfer_spread": _spread(scores["transfer"]),
            "gain_points": round(100 * (transfer - scratch), 2), "gain_spread_points": round(_spread(gains), 2),
            "repeats": config.repeats, "scratch_per_seed": scores["scratch"], "transfer_per_seed": scores["transfer"],
            "scratch_valid_accuracy": sum(valids["scratch"]) / config.repeats,
            "transfer_valid_accuracy": sum(valids["transfer"]) / config.repeats,
            "scratch_lr_per_seed": [float(name) for name in picked["scratch"]],
            "transfer_method_per_seed": picked["transfer"],
            "scratch_valid_accuracy_by_lr": {name: sum(v) / len(v) for name, v in options["scratch"].items()},
            "transfer_valid_accuracy_by_method": {name: sum(v) / len(v) for name, v in options["transfer"].items()}}


def transfer_figure(results: Sequence[dict[str, Any]]) -> Figure:
    """Test accuracy against K for both starts (error bars: the spread over seeds; a run's ``transfer.png``)."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    shots = [r["shots"] for r in results]
    for init, marker in (("transfer", "o"), ("scratch", "s")):
        ax.errorbar(shots, [100 * r[f"{init}_accuracy"] for r in results],
                    yerr=[100 * r[f"{init}_spread"] for r in results], marker=marker, capsize=3, label=init)
    ax.set_xscale("log")
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("labelled images per class (K)")
    ax.set_ylabel("test accuracy on classes 5-9 (%)")
    repeats = results[0]["repeats"] if results else 1
    ax.set_title(f"Fashion-MNIST 0-4 -> 5-9, mean over {repeats} seed{'s' if repeats > 1 else ''}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def train(start: RunStart, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
    """Pretrain (or take ``from_run``), then compare transfer and scratch at each K; returns the summary.
    ``dry_run``: a few pretraining batches, the first K only, two epochs."""
    config, device = start.config, start.device
    began = time.perf_counter()
    data = load_image_dataset(config.dataset, config.data)
    if list(data.train_images.shape[1:]) != [1, 28, 28] or len(data.classes) <= max(
            config.source_classes + config.target_classes):
        raise ConfigError(f"{config.dataset}: needs 28x28 grey images with classes {config.source_classes} "
                          f"and {config.target_classes}")
    counts = torch.bincount(data.train_labels, minlength=len(data.classes))[list(config.target_classes)]
    if int(counts.min()) < config.valid_per_class + max(config.shots):
        raise ConfigError(f"{config.dataset}: a target class has {int(counts.min())} training images, fewer than "
                          f"valid_per_class {config.valid_per_class} + the largest K {max(config.shots)}")
    run_dir = start.open()
    source, state = source_state(config, data, run_dir, device, stream, dry_run)
    pretrain_seconds = time.perf_counter() - began
    shots = config.shots[:1] if dry_run else config.shots
    epochs, freeze_epochs = (2, min(config.freeze_epochs, 1)) if dry_run else (config.epochs, config.freeze_epochs)
    rows: list[dict] = []
    results = [compare(config, state, data, run_dir, k, device, epochs, freeze_epochs, stream, rows) for k in shots]
    write_jsonl(run_dir / "metrics.jsonl", rows)
    if config.plots:
        save_figure(transfer_figure(results), run_dir / "transfer.png")
    summary = {
        "recipe": config.recipe, "kind": config.kind, "run_dir": str(run_dir), "source": str(source),
        "source_model": state["model_name"], "source_classes": list(state.get("source_classes", ())),
        "target_classes": list(config.target_classes), "source_test_accuracy": state.get("test_accuracy"),
        "test_images": int(torch.isin(data.test_labels, torch.tensor(list(config.target_classes))).sum()),
        "epochs": epochs, "freeze_epochs": freeze_epochs, "lr": config.lr, "scratch_lr": config.scratch_lr,
        "scratch_lrs": list(config.scratch_lrs) if config.scratch_lr is None else [config.scratch_lr],
        "scratch_lr_chosen_on": (f"validation: {config.valid_per_class} training images of each target class, "
                                 "disjoint from the K-shot set" if config.scratch_lr is None else "fixed (scratch_lr)"),
        "lr_mult": config.lr_mult, "transfer_methods": list(config.transfer_methods),
        "transfer_method_chosen_on": "the same validation images", "repeats": config.repeats, "results": results,
        "transfer_gain_points": {str(r["shots"]): r["gain_points"] for r in results},
        "pretrain_seconds": round(pretrain_seconds, 3) if not config.from_run else 0.0,
        "train_seconds": round(time.perf_counter() - began, 3), "dry_run": dry_run, **environment(),
    }
    write_json(run_dir / "summary.json", summary)
    print(table(results), file=stream, flush=True)
    return summary


def table(results: Sequence[dict[str, Any]]) -> str:
    """The comparison as a small text table: K, images, both accuracies (mean +- spread), gain in points."""
    repeats = results[0].get("repeats", 1) if results else 1
    lines = ["    K  images   scratch          transfer         gain" +
             (f"   (means +- spreads over {repeats} seeds)" if repeats > 1 else "")]
    for r in results:
        lines.append(f"{r['shots']:>5}  {r['train_images']:>6}  {100 * r['scratch_accuracy']:>5.1f}% +-"
                     f"{100 * r['scratch_spread']:>4.1f}  {100 * r['transfer_accuracy']:>5.1f}% +-"
                     f"{100 * r['transfer_spread']:>4.1f}  {r['gain_points']:>+5.1f}")
    return "\n".join(lines)


def evaluate(run_dir: str | Path, data_path: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """Score every few-shot model of the run (``models/INIT-kK*.pt``) again on the target classes' test images."""
    config, device, models = saved_models(run_dir, FashionTransferConfig, "fashion-transfer", device_name)
    data = load_image_dataset(config.dataset, data_path or config.data)
    test_x, test_y = subset(data.test_images, data.test_labels, config.target_classes)
    scores = {path.stem: accuracy(model, test_x, test_y, state, device, config.eval_batch_size, config.channels_last)
              for path, state, model in models}
    return {"run_dir": str(run_dir), "recipe": config.recipe, "test_accuracy_by_model": scores,
            "summary": (read_summary(run_dir) or {}).get("results")}


def predict(run_dir: str | Path, files: Sequence[str | Path] = (), top_k: int = 3) -> list[dict]:
    """Not offered: a fashion-transfer run is a measurement; its models are in ``RUN/models``."""
    raise ConfigError(f"predict does not apply to the fashion-transfer run in {run_dir}; "
                      "it is a measurement (its few-shot models are in RUN/models)")


class FashionTransferKind(Kind, functions=(train, evaluate, predict)):
    """A measurement: few-shot transfer between two halves of Fashion-MNIST's classes against scratch."""

    name = "fashion-transfer"
    what = "fashion-transfer run"
    config = FashionTransferConfig
    metrics = ()
    options = (FROM_RUN_OPTION,)

    def scores(self, result: dict[str, Any]) -> list[str]:
        gains = result.get("transfer_gain_points")
        if not isinstance(gains, dict):
            return []
        return ["transfer - scratch: " + ", ".join(f"{gain:+.1f} points at K={k}" for k, gain in gains.items())]
