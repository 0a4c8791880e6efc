"""Files, the lowest floor: atomic writes, figure saves and weights-only loads, each written once.

``atomic_write`` is how nnlab writes any file: into a temp file beside the target (``.NAME.*.tmp``),
flushed to disk, then renamed over it, so a crash at any moment leaves the old file or the new one,
never a torn mix (a killed write leaves only its temp file, which ``kit.rundir`` clears).
``save_figure`` is that for a matplotlib ``Figure``: every picture is drawn as a Figure first
(Jupyter shows it inline) and written as PNG second. ``load_weights`` is ``torch.load`` with
``weights_only=True``, which refuses any pickle that would import or call code, and turns each
way a file can be wrong into one ``CheckpointError`` line naming the file and the fault.

This module imports nothing of nnlab but ``nnlab.errors``, so every floor can use it.
"""
from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from nnlab.errors import CheckpointError


def atomic_write(path: str | Path, content: bytes | Callable[[BinaryIO], Any]) -> Path:
    """Write ``content`` (bytes, or a function that writes to the binary file it is given) to
    ``path`` atomically: a temp file beside it, fsync, rename. Returns ``path``.

    Missing folders are created. A filesystem error (read-only, no space left) is an ``OSError``
    naming ``path``, not the temp file, and leaves no temp file behind.
    """
    path = Path(path)
    write = content if callable(content) else (lambda handle: handle.write(content))
    try:
        return _replace_with(path, write)
    except OSError as error:
        if error.filename is not None and Path(error.filename).parent != path.parent:
            raise  # about another path (a folder mkdir could not make): let it name itself
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None


def _replace_with(path: Path, write: Callable[[BinaryIO], Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """``fig`` (a matplotlib ``Figure``) rendered as PNG bytes, for an HTTP answer or an HTML page."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` (a matplotlib ``Figure``) to ``path`` as PNG, atomically; returns ``path``.

    The figure is rendered before the file is touched, so a figure that fails to draw leaves an
    existing file as it was.
    """
    return atomic_write(path, figure_png(fig, dpi))


def load_weights(path: str | Path, map_location: Any = None, what: str = "checkpoint") -> dict[str, Any]:
    """The dict saved in ``path``, loaded with ``torch.load(weights_only=True)``: tensors and plain
    data only, never code. ``what`` names the file in errors ("checkpoint", "weights file").

    A missing, unreadable, corrupt or truncated file, one holding anything a weights-only load
    refuses, and one holding something other than a dict are each a one-line ``CheckpointError``
    naming ``path``.
    """
    import torch  # here, not at the top: writing a file should not cost torch's import

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: refused to load: the {what} holds more than weights and plain data "
                              f"(loading it could run code): {_first_line(error)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(f"{path}: corrupt or truncated {what}: {_first_line(error)}") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the {what}: {error.strerror or error}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a {what} of nnlab or torchvision (expected a dict of weights, "
                              f"found {type(state).__name__})")
    return state


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
