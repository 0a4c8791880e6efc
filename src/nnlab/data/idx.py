"""The IDX format of MNIST and Fashion-MNIST: read, validate, write and cache as .npy.

An IDX file is a 4-byte magic number (two zero bytes, a data type code, the number of
dimensions), one big-endian uint32 per dimension, then the values, big-endian, row-major.
Files are usually gzip-compressed. Every way a file can be wrong (truncated, trailing
bytes, bad header, corrupt gzip, labels out of range) is a one-line ``DataError`` that
names the file, says what was found and what was expected.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nnlab.errors import DataError
from nnlab.files import atomic_write

# IDX data type code -> big-endian numpy dtype, as in LeCun's description of the format.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
# numpy 1.x's limit on dimensions; IDX files in the wild have 1 to 4.
MAX_DIMS = 32
CHUNK = 1 << 20
# Errors the gzip module raises for damaged or incomplete archives.
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def _open_idx_stream(path: Path) -> BinaryIO:
    """Open ``path`` for reading its decompressed bytes: gzip when it starts with the gzip magic.

    The content is sniffed rather than trusted to the ``.gz`` suffix, so a decompressed file
    that kept its ``.gz`` name still reads.
    """
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
        return gzip.open(path, "rb") if compressed else open(path, "rb")  # type: ignore[return-value]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an IDX file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot open ({error.strerror or error})") from None


def _read_exactly(stream: BinaryIO, size: int) -> bytearray:
    """Up to ``size`` bytes from ``stream``, fewer only at end of file, read in bounded chunks.

    Chunks keep a corrupt header that claims a huge shape from allocating that much memory.
    """
    buffer = bytearray()
    while len(buffer) < size:
        chunk = stream.read(min(CHUNK, size - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    return buffer


def _count_rest(stream: BinaryIO) -> int:
    """Number of bytes left in ``stream``; reading to the end also makes gzip check its CRC."""
    count = 0
    while chunk := stream.read(CHUNK):
        count += len(chunk)
    return count


def _parse_magic(path: Path, magic: bytes) -> tuple[np.dtype, int]:
    """The (dtype, number of dimensions) that a 4-byte IDX magic number declares."""
    if len(magic) < 4:
        raise DataError(f"{path}: not an IDX file: expected a 4-byte magic number, found {len(magic)} bytes")
    zero, code, ndim = magic[:2], magic[2], magic[3]
    if zero != b"\x00\x00":
        raise DataError(f"{path}: not an IDX file: magic number starts with bytes {magic.hex(' ')}, "
                        "expected 00 00 <type> <ndim> (or a gzip archive starting 1f 8b)")
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX data type code 0x{code:02X}, expected one of {known}")
    if not 1 <= ndim <= MAX_DIMS:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions, expected 1 to {MAX_DIMS}")
    return IDX_DTYPES[code], ndim


def _read_idx_stream(path: Path, stream: BinaryIO, limit: int | None = None) -> np.ndarray:
    """Parse and validate the IDX content of an open stream; ``path`` is only for messages.

    ``limit``: read only the first ``limit`` records (the rest is neither read nor checked).
    """
    dtype, ndim = _parse_magic(path, stream.read(4))
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header: expected {4 * ndim} bytes of dimensions "
                        f"for {ndim} dimensions, found {len(dims)}")
    shape = struct.unpack(f">{ndim}I", dims)
    if limit is not None:
        shape = (min(limit, shape[0]), *shape[1:])
    expected = math.prod(shape) * dtype.itemsize
    payload = _read_exactly(stream, expected)
    if len(payload) < expected:
        raise DataError(f"{path}: truncated IDX file: expected {expected} data bytes for shape {shape} "
                        f"after the {4 + 4 * ndim}-byte header, found {len(payload)}")
    extra = 0 if limit is not None else _count_rest(stream)
    if extra:
        raise DataError(f"{path}: {extra} trailing bytes after the IDX data: expected exactly "
                        f"{expected} data bytes for shape {shape}")
    native = dtype.newbyteorder("=")
    array = np.frombuffer(payload, dtype=native).reshape(shape)  # writable: backed by a bytearray
    if not dtype.isnative:
        array.byteswap(inplace=True)
    return array


def read_idx(path: str | Path, limit: int | None = None) -> np.ndarray:
    """Read a raw or gzip-compressed IDX file into a writable, native-endian numpy array.

    The header, the exact payload size and the gzip stream (including its CRC) are all
    checked, so a damaged download fails here with a message naming the file instead of
    training on garbage. ``limit``: only the first ``limit`` records, decompressing no more
    (their header and size are checked; what follows them is not read).
    """
    path = Path(path)
    with _open_idx_stream(path) as stream:
        try:
            return _read_idx_stream(path, stream, limit)
        except GZIP_ERRORS as error:
            raise DataError(f"{path}: corrupt gzip data ({error}): the archive is damaged or "
                            "incomplete, expected a complete gzip stream; delete it and download again") from None
        except OSError as error:
            raise DataError(f"{path}: read error ({error})") from None


def _idx_code(dtype: np.dtype) -> int:
    """The IDX type code for ``dtype``, whatever its byte order."""
    for code, idx_dtype in IDX_DTYPES.items():
        if dtype.newbyteorder(">") == idx_dtype:
            return code
    names = ", ".join(str(d.newbyteorder("=")) for d in IDX_DTYPES.values())
    raise ValueError(f"IDX cannot store dtype {dtype}; use one of {names}")


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file in the exact upstream layout, gzip-compressed if ``path`` ends in .gz.

    Used by tests and by anyone producing MNIST-style files; the write is atomic. The gzip
    header carries no timestamp, so the same array always gives the same bytes.
    """
    path = Path(path)
    array = np.asarray(array)
    if not 1 <= array.ndim <= MAX_DIMS:
        raise ValueError(f"IDX needs 1 to {MAX_DIMS} dimensions, got an array of shape {array.shape}")
    if any(n >= 2**32 for n in array.shape):
        raise ValueError(f"IDX dimensions must fit in 32 bits, got shape {array.shape}")
    code = _idx_code(array.dtype)
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()

    def write(file: BinaryIO) -> None:
        if path.suffix == ".gz":
            with gzip.GzipFile(filename="", mode="wb", fileobj=file, mtime=0) as compressed:
                compressed.write(header)
                compressed.write(data)
        else:
            file.write(header)
            file.write(data)

    atomic_write(path, write)


def read_idx_pair(images_path: str | Path, labels_path: str | Path,
                  n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read matching image and label files: uint8 (N, H, W) images and uint8 (N,) labels in [0, n_classes).

    These are the invariants the rest of nnlab relies on, so they are checked once here,
    with errors naming the file at fault.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{images_path}: expected uint8 images of shape (N, H, W), "
                        f"found {images.dtype} values of shape {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_path}: expected uint8 labels of shape (N,), "
                        f"found {labels.dtype} values of shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels: "
                        "expected one label per image")
    bad = np.flatnonzero(labels >= n_classes)
    if len(bad):
        raise DataError(f"{labels_path}: label {labels[bad[0]]} at index {bad[0]} is out of range "
                        f"({len(bad)} such labels): expected labels in [0, {n_classes})")
    return images, labels


def _source_key(paths: tuple[Path, ...], n_classes: int) -> tuple[str, str]:
    """(path key, state key) of the source files: the cache entry is stale once the state changes."""
    resolved = [p.resolve() for p in paths]
    path_key = hashlib.sha256("\0".join(map(str, resolved)).encode()).hexdigest()[:12]
    stats = [(str(p), st.st_size, st.st_mtime_ns) for p, st in ((p, p.stat()) for p in resolved)]
    state_key = hashlib.sha256(repr((stats, n_classes)).encode()).hexdigest()[:16]
    return path_key, state_key


def _load_cached(images_file: Path, labels_file: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, or None when the entry is missing, unreadable or inconsistent."""
    try:
        images = np.load(images_file, allow_pickle=False)
        labels = np.load(labels_file, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    consistent = (images.dtype == np.uint8 and images.ndim == 3 and labels.dtype == np.uint8
                  and labels.ndim == 1 and len(images) == len(labels))
    return (images, labels) if consistent else None


def _save_cached(cache_dir: Path, prefix: str, entries: dict[Path, np.ndarray]) -> None:
    """Write each array atomically and delete older entries of the same sources; best effort only."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for file in cache_dir.glob(f"{prefix}-*.npy"):
            if file not in entries:
                file.unlink(missing_ok=True)
        for file, array in entries.items():
            atomic_write(file, lambda f, a=array: np.save(f, a, allow_pickle=False))
    except OSError:
        pass  # a read-only or full cache directory only costs the next run a decode


def cached_idx_pair(images_path: str | Path, labels_path: str | Path, n_classes: int,
                    cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Like ``read_idx_pair``, but keeps the decoded arrays as .npy files in ``cache_dir``.

    Decompressing and validating 60,000 images takes a noticeable fraction of a second; the
    cache makes every later run load them at disk speed. Entries are keyed by each source's
    resolved path, size and mtime, so an edited or replaced file is decoded again, and an
    unreadable entry is simply rewritten.
    """
    images_path, labels_path = Path(images_path), Path(labels_path)
    try:
        path_key, state_key = _source_key((images_path, labels_path), n_classes)
    except OSError:
        return read_idx_pair(images_path, labels_path, n_classes)  # let the reader name the missing file
    prefix = f"{images_path.name.removesuffix('.gz')}-{path_key}"
    images_file = cache_dir / f"{prefix}-{state_key}.images.npy"
    labels_file = cache_dir / f"{prefix}-{state_key}.labels.npy"
    cached = _load_cached(images_file, labels_file)
    if cached is not None:
        return cached
    images, labels = read_idx_pair(images_path, labels_path, n_classes)
    _save_cached(cache_dir, prefix, {labels_file: labels, images_file: images})
    return images, labels


def sha256_of_decompressed(path: str | Path) -> str:
    """The sha256 of the file's content after gzip decompression (of the file itself if not gzip).

    Archive checksums differ between upstream and Debian, which recompressed the files; the
    decompressed content is what identifies the dataset wherever it came from.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with _open_idx_stream(path) as stream:
        try:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
        except GZIP_ERRORS as error:
            raise DataError(f"{path}: corrupt gzip data ({error}): expected a complete gzip stream") from None
        except OSError as error:
            raise DataError(f"{path}: read error ({error})") from None
    return digest.hexdigest()
