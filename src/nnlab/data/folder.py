"""Image folders: ``root/<class>/*.jpg|png`` trees decoded once into a cached uint8 tensor file.

Two layouts are read: ``root/train/<class>/...`` with ``root/valid/`` (or ``val/``, ``test/``)
beside it, whose images become the test split; or ``root/<class>/...`` alone, split per class
with a seeded generator. Each image is decoded with Pillow, turned upright, converted to RGB
(or grey) and resized on its shorter side then centre-cropped to ``size`` (torchvision's
``Resize`` + ``CenterCrop`` preset), all once: the result is saved as an ``.npz`` in the cache,
keyed by the files' names, sizes and modification times, so later runs and epochs never decode
a JPEG again. A file that does not decode is a ``DataError`` naming it, or, with
``on_error="skip"``, left out and listed in the result.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from nnlab.data.batches import stratified_split
from nnlab.data.sources import cache_root
from nnlab.errors import ConfigError, DataError
from nnlab.files import atomic_write

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
VALID_NAMES = ("valid", "val", "test")


@dataclass
class FolderData:
    """Decoded splits (uint8 [N, C, H, W], int64 [N]), class names, and the files left out."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    skipped: list[str] = field(default_factory=list)


def list_images(root: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """Files under ``root/<class>/`` (sorted), their class indices, and the sorted class names."""
    if not root.is_dir():
        raise DataError(f"{root}: no such directory; expected root/<class>/*.jpg|png")
    classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
    files, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.is_file() and path.suffix.lower() in EXTENSIONS:
                files.append(path)
                labels.append(index)
    if len(classes) < 2 or not files:
        raise DataError(f"{root}: expected at least two class folders holding images ({', '.join(EXTENSIONS)}); "
                        f"found {len(classes)} folders and {len(files)} images")
    return files, labels, classes


def decode(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file as uint8 [C, H, W]: upright, RGB or grey, resized on its shorter side, centre-cropped."""
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image).convert("RGB" if channels == 3 else "L")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path}: corrupt or unreadable image ({error})") from None
    fitted = ImageOps.fit(image, (size[1], size[0]), Image.Resampling.BILINEAR)  # (width, height)
    return np.asarray(fitted, dtype=np.uint8).reshape(size[0], size[1], channels).transpose(2, 0, 1)


def _decode_all(files: list[Path], labels: list[int], size: tuple[int, int], channels: int,
                on_error: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, kept, skipped = [], [], []
    for path, label in zip(files, labels):
        try:
            images.append(decode(path, size, channels))
            kept.append(label)
        except DataError as error:
            if on_error != "skip":
                raise DataError(f"{error}; pass on_error='skip' to leave such files out") from None
            skipped.append(str(error))
    stacked = np.stack(images) if images else np.zeros((0, channels, *size), np.uint8)
    return stacked, np.asarray(kept, dtype=np.int64), skipped


def _cache_key(files: list[Path], size: tuple[int, int], channels: int, on_error: str) -> str:
    digest = hashlib.sha256(f"{size}|{channels}|{on_error}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _split_files(root: Path) -> tuple[Path, Path] | None:
    """(train, valid) folders when ``root`` has a ``train/`` and a ``valid/``/``val/``/``test/`` folder."""
    valid = next((root / n for n in VALID_NAMES if (root / n).is_dir()), None)
    return (root / "train", valid) if (root / "train").is_dir() and valid is not None else None


def read_image_folder(root: str | Path, size: tuple[int, int] = (64, 64), channels: int = 3,
                      valid_fraction: float = 0.2, seed: int = 0, on_error: str = "fail",
                      cache: Path | None = None) -> FolderData:
    """Decode an image folder (see the module docstring) into train/test tensors, through the cache.

    Without ``train/`` and ``valid/`` subfolders, ``valid_fraction`` of each class (seeded by
    ``seed``) becomes the test split. ``on_error`` is ``fail`` or ``skip``.
    """
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"on_error must be fail or skip, got {on_error!r}")
    root = Path(root).expanduser()
    halves = _split_files(root)
    if halves is not None:
        train_files, train_labels, classes = list_images(halves[0])
        test_files, test_labels, test_classes = list_images(halves[1])
        if test_classes != classes:
            raise DataError(f"{halves[1]}: class folders {list(test_classes)} differ from {halves[0]}'s {list(classes)}")
        files, labels = train_files + test_files, train_labels + test_labels
    else:
        files, labels, classes = list_images(root)
    cache_dir = cache if cache is not None else cache_root() / "decoded" / "folder"
    cached = cache_dir / f"{_cache_key(files, size, channels, on_error)}.npz"
    if cached.is_file():
        with np.load(cached, allow_pickle=False) as stored:
            images, kept, is_test = stored["images"], stored["labels"], stored["is_test"]
            skipped = [str(s) for s in stored["skipped"]]
    else:
        flags = [False] * (len(files) - (len(test_files) if halves else 0)) + [True] * (len(test_files) if halves else 0)
        images, kept, skipped = _decode_all(files, labels, size, channels, on_error)
        failed = {s.split(": ", 1)[0] for s in skipped}
        is_test = np.asarray([flag for path, flag in zip(files, flags) if str(path) not in failed], dtype=bool)
        buffer = io.BytesIO()
        np.savez(buffer, images=images, labels=kept, is_test=is_test, skipped=np.asarray(skipped, dtype=str))
        atomic_write(cached, buffer.getvalue())  # creates the cache folder
    images_t, labels_t = torch.from_numpy(images), torch.from_numpy(kept)
    if halves is not None:
        test_mask = torch.from_numpy(is_test)
        train_idx, test_idx = torch.nonzero(~test_mask).flatten(), torch.nonzero(test_mask).flatten()
    else:
        train_idx, test_idx = stratified_split(labels_t, valid_fraction, torch.Generator().manual_seed(seed))
    return FolderData(images_t[train_idx], labels_t[train_idx], images_t[test_idx], labels_t[test_idx],
                      classes, skipped)


def skipped_note(skipped: list[str], shown: int = 3) -> str:
    """``; skipped N files that do not decode: PATH, ...`` (the first ``shown``), or "" for none:
    the corrupt-file report a run's ``dataset_source`` carries."""
    if not skipped:
        return ""
    names = [entry.split(": corrupt or unreadable image", 1)[0] for entry in skipped[:shown]]
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    files = "1 file that does" if len(skipped) == 1 else f"{len(skipped)} files that do"
    return f"; skipped {files} not decode: {', '.join(names)}{more}"


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, C, H, W], on the 0..1 scale."""
    x = images.float().div(255).transpose(0, 1).reshape(images.shape[1], -1)  # [C, N*H*W]
    return tuple(x.mean(1).tolist()), tuple(x.std(1).clamp_min(1e-3).tolist())
