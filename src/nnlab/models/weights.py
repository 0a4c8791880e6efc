"""Pretrained weights files from a URL: found in torch.hub's cache, or downloaded there once.

torchvision's weights entries (``ResNet18_Weights.IMAGENET1K_V1.url`` ...) name files such as
``resnet18-f37072fd.pth``, the 8 hex digits the start of the file's SHA-256. ``cached_file``
returns ``$TORCH_HOME/hub/checkpoints/<that name>``: a file already there is used as it is (never
downloaded again, as torch.hub does); an absent one is downloaded with a progress bar on stderr
by ``torch.hub.download_url_to_file`` with the hash prefix, torch.hub's own ``check_hash=True``.
It writes to a ``.partial`` file beside the target and renames it only once the hash matches,
and deletes it on any failure, so the cache never holds a partial or wrong file. Offline
(``NNLAB_OFFLINE=1``, or ``--offline``, which sets it) nothing is downloaded: an absent file is
a ``CheckpointError`` with its path and URL. Callers load the file weights-only.

torch.hub's own ``load_state_dict_from_url`` is not used because it announces the download on
stdout, which holds the one JSON line of ``--json``.
"""
from __future__ import annotations

import http.client
import os
import sys
import urllib.error
from pathlib import Path

import torch

from nnlab.errors import CheckpointError

OFFLINE_ENV = "NNLAB_OFFLINE"


def checkpoints_dir() -> Path:
    """torch.hub's cache of weights files: ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/...``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def is_offline() -> bool:
    """Whether downloads are refused: ``NNLAB_OFFLINE`` set to anything but empty or 0."""
    return os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0")


def hash_prefix(url: str) -> str | None:
    """The SHA-256 prefix in the file name of ``url`` (``resnet18-f37072fd.pth`` -> f37072fd), torch.hub's rule."""
    match = torch.hub.HASH_REGEX.search(url.rsplit("/", 1)[1])
    return match.group(1) if match and match.group(1) else None


def cached_file(url: str, what: str, otherwise: str = "", offline: bool | None = None,
                progress: bool = True) -> Path:
    """The cache file of ``url``, downloaded (hash-checked) first if absent; a ``CheckpointError`` if that fails.

    ``what`` starts the messages (``"resnet18: pretrained weights"``); ``otherwise`` follows
    their "download it there yourself" with the user's other choices (``" or pass the file's
    path"``). ``offline`` None means ``is_offline()``.
    """
    path = checkpoints_dir() / url.rsplit("/", 1)[1]
    if path.is_file():
        return path
    fetch_yourself = f"download {url} there (e.g. `curl -L -o {path} {url}`){otherwise}"
    if is_offline() if offline is None else offline:
        raise CheckpointError(f"{what} not found at {path}; {fetch_yourself} "
                              f"(offline, by --offline or {OFFLINE_ENV}=1: nothing is downloaded)")
    download(url, path, what, fetch_yourself, progress)
    return path


def download(url: str, path: Path, what: str, fetch_yourself: str, progress: bool = True) -> None:
    """``url`` to ``path`` through torch.hub, checked against the hash prefix in its name; nothing left on failure."""
    prefix = hash_prefix(url)
    print(f"nnlab: downloading {what} from {url} to {path}", file=sys.stderr, flush=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), prefix, progress=progress)
    except RuntimeError as error:
        if "invalid hash value" not in str(error):
            raise
        # urllib does not notice a connection closed before Content-Length: a cut transfer shows as a wrong hash.
        raise CheckpointError(f"{what}: the file from {url} does not match the SHA-256 prefix {prefix} in its name "
                              f"(a cut transfer, or not the published file); it was discarded and {path} not "
                              f"written: run again, or {fetch_yourself}") from None
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, ValueError) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(error, urllib.error.HTTPError):
            reason = f"HTTP {error.code} {error.reason}"
        raise CheckpointError(f"{what}: downloading {url} to {path} failed ({reason or type(error).__name__}); "
                              f"nothing was written: check the network and run again, or {fetch_yourself}") from None
    except OSError as error:  # the cache folder refused the file: read-only, full disk
        raise CheckpointError(f"{what}: could not write {path} ({error.strerror or error}); free space or make "
                              f"{path.parent} writable (or point $TORCH_HOME elsewhere), then run again") from None
