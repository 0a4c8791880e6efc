"""The fast path: whole datasets as one uint8 tensor, batched by slicing one permutation.

Following airbench's ``CifarLoader``: the images stay in memory (on the training device when
there is one) as a single uint8 tensor; each epoch draws one permutation from the run's
seeded generator and yields slices of it; normalization and augmentation are whole-batch
tensor ops. There is no per-sample Python anywhere in the loop.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Iterator, Sequence, TypeVar

import torch
import torch.nn.functional as F

from nnlab.errors import ConfigError

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
Batcher = TypeVar("Batcher")


def shard_rows(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of an epoch's ``order`` of rows (distributed training): every
    ``world_size``-th row from position ``rank``, cut to ``len(order) // world_size`` so that every
    rank has as many rows, hence as many batches (the order's last ``len % world_size`` rows sit the
    epoch out: a different few each shuffled epoch). Every rank draws the same order from the run's
    seed, so the shares are disjoint and step ``i`` of all ranks together takes the rows one process
    would take at step ``i``::

        order   r0 r1 r2 r3 r4 r5 r6      world_size 2, batch 4 (2 per rank)
        rank 0  r0    r2    r4            step 0: r0 r2 | r1 r3   step 1: r4 | r5  (r6 sits out)
        rank 1     r1    r3    r5
    """
    return order[rank::world_size][: len(order) // world_size]


def sharded(batches: Batcher, rank: int, world_size: int) -> Batcher:
    """A copy of ``batches`` (sharing its tensors and generator) that yields rank ``rank``'s share
    (``shard_rows``) in batches of ``batch_size / world_size``: ``--batch-size`` stays the global batch.
    A batch size that does not divide over the processes is a ``ConfigError`` naming it."""
    if batches.batch_size % world_size:
        raise ConfigError(f"--batch-size {batches.batch_size} must divide evenly over {world_size} processes")
    share = copy.copy(batches)
    share.batch_size, share.rank, share.world_size = batches.batch_size // world_size, rank, world_size
    return share


def stratified_split(labels: torch.Tensor, valid_fraction: float,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (train, valid) so that every class keeps its share in both parts.

    Each class contributes ``round(valid_fraction * count)`` randomly chosen samples to the
    validation part. Both index tensors are returned sorted, so that the split is a pure
    function of the labels and the generator's seed.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ConfigError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    valid_parts = []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        take = round(valid_fraction * len(members))
        order = torch.randperm(len(members), generator=generator)
        valid_parts.append(members[order[:take]])
    valid = torch.sort(torch.cat(valid_parts)).values
    is_valid = torch.zeros(len(labels), dtype=torch.bool)
    is_valid[valid] = True
    train = torch.nonzero(~is_valid).flatten()
    return train, valid


def batch_flip_lr(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right ([N, C, H, W] in, same shape out)."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    flip = flip.to(images.device)[:, None, None, None]
    return torch.where(flip, images.flip(3), images)


def batch_random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad each image by ``padding`` zeros and crop it back at a random offset (a translation).

    Offsets are drawn per sample; the crop is one gather over the padded batch, so the cost
    does not depend on how many distinct offsets the batch has.
    """
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(images.device)
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)  # [N, H]
    cols = offsets[1][:, None] + torch.arange(w, device=images.device)  # [N, W]
    batch = torch.arange(n, device=images.device)[:, None, None]
    # Advanced indices separated by a slice put the broadcast dims first: [N, H, W, C].
    cropped = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return cropped.permute(0, 3, 1, 2).contiguous()


def batch_translate(images: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``shift`` pixels each way, repeating the edge pixels into the gap.

    Like ``batch_random_crop`` but the border is the image's own edge instead of black: the
    gather reads clamped indices, so no padded copy is made. [N, C, H, W] in, same shape out.
    """
    n, _, h, w = images.shape
    offsets = torch.randint(-shift, shift + 1, (2, n), generator=generator).to(images.device)
    rows = (offsets[0][:, None] + torch.arange(h, device=images.device)).clamp(0, h - 1)  # [N, H]
    cols = (offsets[1][:, None] + torch.arange(w, device=images.device)).clamp(0, w - 1)  # [N, W]
    batch = torch.arange(n, device=images.device)[:, None, None]
    shifted = images[batch, :, rows[:, :, None], cols[:, None, :]]  # [N, H, W, C], as in batch_random_crop
    return shifted.permute(0, 3, 1, 2).contiguous()


def batch_cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image at a random centre (DeVries & Taylor's cutout).

    The centre may lie near the border, so part of the square can fall outside the image, as
    in the paper. The mask is built by broadcasting row and column tests: one op per batch.
    """
    n, _, h, w = images.shape
    centres = torch.stack([torch.randint(0, h, (n,), generator=generator),
                           torch.randint(0, w, (n,), generator=generator)]).to(images.device)
    top, left = centres[0] - size // 2, centres[1] - size // 2
    rows = torch.arange(h, device=images.device)[None, :]  # [1, H]
    cols = torch.arange(w, device=images.device)[None, :]  # [1, W]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # [N, H]
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # [N, W]
    hole = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # [N, 1, H, W]
    return images.masked_fill(hole, 0)


def make_augment(spec: Sequence[str]) -> Augment | None:
    """Build one batched augmentation from names: ``flip_lr``, ``crop:PADDING``, ``translate:PIXELS``
    and ``cutout:SIZE``.

    The names are what recipes and ``--set augment=flip_lr,crop:2`` use; an empty spec
    means no augmentation.
    """
    steps: list[Augment] = []
    for item in spec:
        name, _, arg = item.partition(":")
        if name == "flip_lr" and not arg:
            steps.append(batch_flip_lr)
        elif name == "crop" and arg.isdigit():
            padding = int(arg)
            steps.append(lambda x, g, p=padding: batch_random_crop(x, p, g))
        elif name == "translate" and arg.isdigit():
            steps.append(lambda x, g, p=int(arg): batch_translate(x, p, g))
        elif name == "cutout" and arg.isdigit() and int(arg) > 0:
            steps.append(lambda x, g, p=int(arg): batch_cutout(x, p, g))
        else:
            raise ConfigError(f"unknown augmentation {item!r}; expected flip_lr, crop:PADDING (e.g. crop:2), "
                              "translate:PIXELS or cutout:SIZE")
    if not steps:
        return None

    def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in steps:
            images = step(images, generator)
        return images

    return augment


class TensorBatches:
    """Iterable of normalized (images, labels) batches over uint8 images held in memory.

    ``images`` is [N, C, H, W] uint8, ``labels`` [N] int64. With ``shuffle`` each pass draws
    one permutation from ``generator``; ``len()`` honours ``drop_last``. Batches come out as
    float32 ``(x / 255 - mean) / std`` on ``device``, channels-last if asked.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 mean: Sequence[float], std: Sequence[float], shuffle: bool = False,
                 drop_last: bool = False, generator: torch.Generator | None = None,
                 augment: Augment | None = None, device: torch.device | str = "cpu",
                 channels_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.augment = augment
        self.channels_last = channels_last
        # Distributed training: this rank's share of each epoch (``shard``, ``shard_rows``).
        self.rank, self.world_size = rank, world_size
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {len(mean)}/{len(std)}")
        # Fold /255 and the normalization into one multiply-add per pixel.
        scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, -1, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(mean, std)]).view(1, -1, 1, 1)
        self.scale = scale.to(self.device)
        self.shift = shift.to(self.device)

    def shard(self, rank: int, world_size: int) -> "TensorBatches":
        """This batcher for rank ``rank`` of ``world_size`` processes (see ``sharded``)."""
        return sharded(self, rank, world_size)

    def _shard_size(self) -> int:
        return len(self.images) // self.world_size

    @property
    def samples(self) -> int:
        """The samples one pass draws from (this rank's shard when distributed)."""
        return self._shard_size()

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, H, W] -> normalized float32 in the layout the model expects."""
        x = torch.addcmul(self.shift, images.float(), self.scale)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.device)
        else:
            order = None
        if self.world_size > 1:
            order = shard_rows(order if order is not None else torch.arange(n, device=self.device), self.rank,
                               self.world_size)
            n = len(order)
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, n)
            if order is None:
                xb, yb = self.images[lo:hi], self.labels[lo:hi]
            else:
                index = order[lo:hi]
                xb, yb = self.images[index], self.labels[index]
            if self.augment is not None:
                xb = self.augment(xb, self.generator)
            yield self.normalize(xb), yb
