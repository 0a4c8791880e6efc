"""The Learner: one readable training loop with events where callbacks hook in.

``fit`` -> ``one_epoch`` -> ``one_batch``. Each stage fires ``before_*``/``after_*`` events on
the callbacks (fastai's protocol, without its magic); callbacks read and change state
explicitly through ``self.learner``. Control flow uses ``CancelBatchException``,
``CancelEpochException`` and ``CancelFitException``. The engine knows nothing of datasets or
model families: it sees an ``nn.Module``, iterables of ``(x, y)`` batches and a loss.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import platform
import time
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from nnlab.engine.choices import DEVICES  # noqa: F401  (the engine's device choices, re-exported)
from nnlab.engine.distributed import all_reduce_sum, world_size


class CancelBatchException(Exception):
    """Raised by a callback to skip the rest of the current batch."""


class CancelEpochException(Exception):
    """Raised by a callback to end the current epoch's training early."""


class CancelFitException(Exception):
    """Raised by a callback to stop training (e.g. early stopping)."""


class Callback:
    """Base class: override any event method; ``order`` sorts callbacks (lower runs first)."""

    order = 0
    learner: "Learner"

    def before_fit(self) -> None: ...
    def before_epoch(self) -> None: ...
    def before_batch(self) -> None: ...
    def after_loss(self) -> None: ...
    def after_step(self) -> None: ...
    def after_batch(self) -> None: ...
    def after_train(self) -> None: ...
    def after_validate(self) -> None: ...
    def after_epoch(self) -> None: ...
    def after_fit(self) -> None: ...


def resolve_device(name: str = "auto") -> torch.device:
    """The device ``name`` names (the choices a run offers are ``DEVICES``; torch's own names such as
    ``cuda:1`` also pass): ``auto`` picks CUDA, then Apple's MPS, then the CPU; ``cuda`` and ``mps``
    are checked to be there."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from nnlab.errors import ConfigError
        raise ConfigError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if name == "mps" and not torch.backends.mps.is_available():
        from nnlab.errors import ConfigError
        raise ConfigError("--device mps: Apple's MPS backend is not available on this machine")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` means bf16 where the hardware computes it natively, else fp32.

    On CPUs without native bf16 (no AVX512-BF16/AMX) oneDNN emulates it and a training step
    gets several times slower, so auto falls back to fp32 there.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for forward passes (a no-op in fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


# glibc's mallopt parameters (malloc.h), and the largest mmap threshold it accepts on 64-bit
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 2 ** 20


def hold_freed_memory() -> bool:
    """Make this process's malloc keep the blocks a training step frees, for the next step (glibc only).

    glibc serves a block above its mmap threshold (128 KiB at start) straight from the kernel and
    unmaps it on free, and gives the top of its heap back once more than twice the threshold lies
    free there; it raises both only when such a block is freed. A CPU training step frees and
    allocates the same MiBs of activations every step, so each step took them from the kernel again
    as fresh zeroed pages until something freed a block large enough to raise the thresholds
    (fashion-cnn: its first validation pass): 3,700-7,100 page faults a step, 34.8 ms against 25.4
    on the AMX host, nearly all of the first epoch's excess (docs/benchmarks.md, "The first epoch").
    This sets the thresholds where glibc's own rule ends after such a block (an mmap threshold of
    32 MiB, its maximum, and twice that to trim), from the start. Process-wide; returns whether it applied.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and \
            bool(libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX))
    except (OSError, AttributeError):
        return False


def count_correct(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Number of samples whose highest logit is the target class: the Learner's default metric.

    A metric returns a sum over the batch (a tensor on the device), so that the epoch's value is
    the running sum over the number of samples, without a host sync per batch.
    """
    return (logits.argmax(1) == targets).sum()


@torch.no_grad()
def predict_probs(model: nn.Module, batches: Iterable, device: torch.device, precision: str = "fp32",
                  tta_flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities and targets for every batch, on the CPU, in batch order, in eval mode.

    With ``tta_flip`` the probabilities are averaged with those of the left-right mirrored
    images (test-time augmentation).
    """
    model.eval()
    probs, targets = [], []
    for x, y in batches:
        with autocast(device, precision):
            p = model(x).float().softmax(1)
            if tta_flip:
                p = (p + model(x.flip(3)).float().softmax(1)) / 2
        probs.append(p.cpu())
        targets.append(y.cpu())
    return torch.cat(probs), torch.cat(targets)


class Learner:
    """Trains ``model`` on ``train_batches`` and measures it on ``valid_batches``.

    ``scheduler`` (any object with ``step()``, e.g. a ``torch.optim.lr_scheduler``) is
    stepped after every optimizer step. ``precision`` is ``auto``, ``bf16``, ``fp16`` or
    ``fp32``; ``clip`` is a max gradient norm or ``None``. ``metric`` gives the ``acc`` columns
    (see ``count_correct``); ``None`` (regression, where argmax means nothing) leaves them ``None``.
    """

    def __init__(self, model: nn.Module, train_batches: Iterable, valid_batches: Iterable | None = None, *,
                 loss_fn: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any = None,
                 callbacks: Sequence[Callback] = (), device: torch.device | str = "cpu",
                 precision: str = "auto", clip: float | None = None, channels_last: bool = False,
                 metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = count_correct,
                 compile: bool = False) -> None:
        self.device = torch.device(device)
        self.channels_last = channels_last
        # raw_model holds the weights (checkpoints save its state_dict); model is what runs,
        # the same module or its torch.compile wrapper.
        self.raw_model = model.to(self.device, memory_format=torch.channels_last) if channels_last else model.to(self.device)
        self.model = torch.compile(self.raw_model) if compile else self.raw_model
        self.train_batches = train_batches
        self.valid_batches = valid_batches
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.precision = resolve_precision(precision, self.device)
        self.clip = clip
        self.metric = metric
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.callbacks: list[Callback] = []
        self.add_callbacks(callbacks)
        self.epoch = 0
        self.step = 0
        self.n_epochs = 0
        self.history: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {}

    def add_callbacks(self, callbacks: Sequence[Callback]) -> None:
        """Attach ``callbacks`` (kept sorted by their ``order``)."""
        for cb in callbacks:
            cb.learner = self
        self.callbacks = sorted([*self.callbacks, *callbacks], key=lambda cb: cb.order)

    def _event(self, name: str) -> None:
        for cb in self.callbacks:
            getattr(cb, name)()

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for this learner's device and precision."""
        return autocast(self.device, self.precision)

    def fit(self, epochs: int, start_epoch: int = 0) -> list[dict[str, Any]]:
        """Train for ``epochs`` epochs (from ``start_epoch`` when resuming); returns the history."""
        self.n_epochs = epochs
        if self.device.type == "cpu":  # the activations live in this process's heap: keep it (first-epoch cost)
            hold_freed_memory()
        try:
            self._event("before_fit")
            for self.epoch in range(start_epoch, epochs):
                try:
                    self.one_epoch()
                except CancelEpochException:
                    pass
        except CancelFitException:
            pass
        finally:
            self._event("after_fit")
        return self.history

    def one_epoch(self) -> None:
        """Train over ``train_batches`` once, validate, and record the epoch's metrics row."""
        start = time.perf_counter()
        self.model.train()
        self._event("before_epoch")
        # Running sums stay on the device: no host sync per batch.
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for self.batch_index, (self.x, self.y) in enumerate(self.train_batches):
            try:
                self.one_batch()
            except CancelBatchException:
                continue
            loss_sum += self.loss.detach() * len(self.y)
            if self.metric is not None:
                correct += self.metric(self.logits.detach(), self.y)
            seen += len(self.y)
        if world_size() > 1:  # every rank saw its shard: sum over ranks (the only collective per epoch)
            totals = all_reduce_sum(torch.stack([loss_sum.float(), correct.float(),
                                                 torch.tensor(float(seen), device=self.device)]))
            loss_sum, correct, seen = totals[0], totals[1], int(totals[2].item())
        train_seconds = time.perf_counter() - start
        self.metrics = {
            "epoch": self.epoch + 1,
            "train_loss": loss_sum.item() / max(seen, 1),  # host sync, once per epoch
            "train_acc": float(correct.item()) / max(seen, 1) if self.metric is not None else None,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_images_per_s": seen / train_seconds if train_seconds > 0 else math.nan,
        }
        self._event("after_train")
        if self.valid_batches is not None:
            result = self.validate(self.valid_batches)
            self.metrics.update(valid_loss=result["loss"], valid_acc=result["acc"])
            self._event("after_validate")
        else:
            self.metrics.update(valid_loss=None, valid_acc=None)
        self.metrics["seconds"] = time.perf_counter() - start
        self.history.append(self.metrics)
        self._event("after_epoch")

    def one_batch(self) -> None:
        """Forward, loss, backward, step, zero_grad: the whole update is visible here."""
        self._event("before_batch")
        with self.autocast():
            self.logits = self.model(self.x)
            self.loss = self.loss_fn(self.logits, self.y)
        self._event("after_loss")
        self.scaler.scale(self.loss).backward()
        if self.clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        self._event("after_step")
        self._event("after_batch")

    def predict(self, batches: Iterable, tta_flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities and targets for ``batches`` (see ``predict_probs``)."""
        # raw_model: a DistributedDataParallel wrapper would wait for the other ranks on forward.
        return predict_probs(self.raw_model, batches, self.device, self.precision, tta_flip)

    @torch.no_grad()
    def validate(self, batches: Iterable) -> dict[str, float]:
        """Mean loss and accuracy over ``batches`` in eval mode."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for x, y in batches:
            with self.autocast():
                logits = self.model(x)
                loss = self.loss_fn(logits.float(), y)
            loss_sum += loss * len(y)
            if self.metric is not None:
                correct += self.metric(logits, y)
            seen += len(y)
        self.model.train()
        acc = correct.item() / max(seen, 1) if self.metric is not None else None
        return {"loss": loss_sum.item() / max(seen, 1), "acc": acc}
