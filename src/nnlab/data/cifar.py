"""CIFAR-10 and CIFAR-100 in upstream's "python version": pickled batches inside a tar.gz.

``cifar-10-python.tar.gz`` holds ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``_5``,
``test_batch`` and ``batches.meta``; ``cifar-100-python.tar.gz`` holds ``cifar-100-python/``
with ``train``, ``test`` and ``meta``. Each batch is a pickled dict whose ``data`` is a uint8
array of ``[N, 3072]`` rows (1024 red, 1024 green, 1024 blue values, row-major 32x32) and whose
labels are a list of ints. Members are read straight from the archive (nothing is extracted),
and unpickled by ``SafeUnpickler``, which builds only plain data and numpy arrays: a pickle
that asks for any other class or function (the way pickles run code) is refused with a
``DataError`` naming the file. Keys, shapes, dtypes and label ranges are all checked.
"""
from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnlab.errors import DataError

IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32
# What numpy arrays pickle to: the reconstruct function, the array and dtype classes, and (for
# bytes pickled by Python 3 at protocol 2) codecs.encode, which turns a str back into bytes.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("codecs").encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals numpy arrays need; anything else is refused.

    ``path`` names the file in the error. Plain containers, numbers, strings and bytes need no
    globals at all, so they load as usual.
    """

    def __init__(self, file: io.BufferedIOBase, path: str) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        raise DataError(f"{self.path}: refused to unpickle: it asks for {module}.{name}, and only plain data "
                        "and numpy arrays are allowed (loading it could run code)")


def safe_loads(data: bytes, path: str) -> Any:
    """Unpickle ``data`` with ``SafeUnpickler``; any malformed pickle is a ``DataError`` naming ``path``."""
    try:
        return SafeUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, UnicodeDecodeError, MemoryError, OverflowError, LookupError) as error:
        # MemoryError, OverflowError: a damaged length field claims more bytes than any file holds;
        # LookupError: a damaged encoding name handed to codecs.encode.
        raise DataError(f"{path}: corrupt pickle ({type(error).__name__}: {error})") from None


@dataclass(frozen=True)
class CifarLayout:
    """Member names inside one CIFAR archive, and the keys its pickles use."""

    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: bytes
    names_key: bytes
    n_classes: int


CIFAR10_LAYOUT = CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                             "batches.meta", b"labels", b"label_names", 10)
CIFAR100_LAYOUT = CifarLayout("cifar-100-python", ("train",), "test", "meta", b"fine_labels",
                              b"fine_label_names", 100)


def _one_line(error: BaseException) -> str:
    """``error``'s message on one line (tarfile's can span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def _text(key: Any) -> str:
    return key.decode("latin1") if isinstance(key, bytes) else str(key)


def _member(archive: tarfile.TarFile, archive_path: Path, name: str) -> bytes:
    """The bytes of member ``name`` of the open archive, or a ``DataError`` saying it is missing."""
    try:
        member = archive.getmember(name)
    except KeyError:
        raise DataError(f"{archive_path}: no member {name} (expected the upstream python-version layout)") from None
    handle = archive.extractfile(member) if member.isfile() else None
    if handle is None:
        raise DataError(f"{archive_path}: member {name} is not a regular file")
    return handle.read()


def _batch(obj: Any, where: str, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """Validated (images uint8 [N, 3, 32, 32], labels int64 [N]) from one unpickled batch dict."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict, found {type(obj).__name__}")
    keys = {_text(k): v for k, v in obj.items()}
    label_key = _text(layout.label_key)
    for key in ("data", label_key):
        if key not in keys:
            raise DataError(f"{where}: missing key {key!r}; found keys {sorted(keys)}")
    data, labels = keys["data"], keys[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        found = f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: 'data' must be a uint8 array of shape [N, {PIXELS}], found {found}")
    if not isinstance(labels, (list, np.ndarray)) or not all(isinstance(v, (int, np.integer)) for v in labels):
        raise DataError(f"{where}: {label_key!r} must be a list of integers")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(data):
        raise DataError(f"{where}: {len(data)} images but {len(labels)} labels")
    bad = (labels < 0) | (labels >= layout.n_classes)
    if bad.any():
        raise DataError(f"{where}: label {int(labels[bad][0])} out of range, expected 0..{layout.n_classes - 1}")
    return data.reshape(-1, *IMAGE_SHAPE), labels  # [N, 3072] -> [N, 3, 32, 32]: planes R, G, B


def _class_names(obj: Any, where: str, layout: CifarLayout) -> tuple[str, ...]:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict, found {type(obj).__name__}")
    names = {_text(k): v for k, v in obj.items()}.get(_text(layout.names_key))
    if not isinstance(names, list) or len(names) != layout.n_classes:
        raise DataError(f"{where}: expected {layout.n_classes} class names under {_text(layout.names_key)!r}")
    return tuple(_text(n) for n in names)


def read_cifar(path: str | Path, layout: CifarLayout) -> dict[str, Any]:
    """Read a CIFAR python-version archive into train/test uint8 images, int64 labels and class names.

    Returns ``{"train": (images, labels), "test": (images, labels), "classes": names}`` with
    images ``[N, 3, 32, 32]``. The archive may be gzip-compressed or plain tar.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty; delete it and download again")
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    # One explicit mode: "r:*" tries every compression and reports each failure on a line of its own.
    try:
        archive = tarfile.open(path, "r:gz" if gzipped else "r:")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a readable {'gzip-compressed ' if gzipped else ''}tar archive "
                        f"({_one_line(error)}); delete it and download again") from None
    with archive:
        try:
            def load(name: str) -> Any:
                member = f"{layout.folder}/{name}"
                return safe_loads(_member(archive, path, member), f"{path}:{member}")

            train = [_batch(load(name), f"{path}:{layout.folder}/{name}", layout) for name in layout.train]
            test = _batch(load(layout.test), f"{path}:{layout.folder}/{layout.test}", layout)
            classes = _class_names(load(layout.meta), f"{path}:{layout.folder}/{layout.meta}", layout)
            if gzipped:  # read to the end, where gzip checks its CRC: a flipped bit in a pixel is caught too
                while archive.fileobj.read(1 << 20):
                    pass
        except (tarfile.TarError, OSError, EOFError, zlib.error) as error:  # zlib: damaged deflate data
            raise DataError(f"{path}: corrupt archive ({_one_line(error)}); delete it and download again") from None
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    return {"train": (train_images, train_labels), "test": test, "classes": classes}
