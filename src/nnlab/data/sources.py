"""Finding or fetching a dataset's files: --data, $NNLAB_DATA, the cache, system dirs, download.

``locate`` looks in each place in a fixed order and says which one it used, so a run can
record where its data came from. Downloads go to a ``.part`` file that a later call resumes
with an HTTP Range request, are checked against upstream's md5, and only then move into
place atomically: a file under its final name is always complete.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from nnlab.data.idx import sha256_of_decompressed
from nnlab.errors import DataError
from nnlab.files import atomic_write

CHUNK = 1 << 16
USER_AGENT = "nnlab/0.1 (python urllib)"
# The PyTorch NLP tutorials' archive: data/names/<Language>.txt (the surnames) and data/eng-fra.txt
# (the translation pairs). Upstream publishes no checksum of it, so its readers check its structure.
TUTORIAL_DATA_URL = "https://download.pytorch.org/tutorial/data.zip"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset as published upstream: its name here, its checksums, and its name
    upstream where that differs (Tiny Shakespeare's ``input.txt`` is kept as ``tinyshakespeare.txt``)."""

    name: str
    md5: str
    raw_sha256: str | None = None
    remote: str | None = None

    @property
    def remote_name(self) -> str:
        """The name the mirrors serve it under."""
        return self.remote or self.name


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's files may be found on this machine or fetched from, and how to install it."""

    name: str
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    install_hint: str = ""


def cache_root() -> Path:
    """The directory for downloads and decoded caches: ``$NNLAB_CACHE``, else ``~/.cache/nnlab``."""
    configured = os.environ.get("NNLAB_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "nnlab"


def _missing(spec: DatasetSpec, directory: Path) -> list[str]:
    """Names of the spec's files absent from ``directory``, where a decompressed twin also counts."""
    return [f.name for f in spec.files
            if not (directory / f.name).is_file() and not (directory / f.name.removesuffix(".gz")).is_file()]


def how_to_get(spec: DatasetSpec) -> str:
    """The commands that make ``spec`` available, for error messages."""
    commands = [spec.install_hint] if spec.install_hint else []
    return " or ".join(f"`{c}`" for c in [*commands, f"nnlab download {spec.name}"])


def _from_data_argument(spec: DatasetSpec, data: str | Path) -> tuple[Path, str]:
    """The directory given as ``--data`` (or its ``<name>/`` subdirectory) if it holds every file."""
    directory = Path(data).expanduser()
    if not _missing(spec, directory / spec.name):
        return directory / spec.name, f"--data {directory / spec.name}"
    if not directory.is_dir():
        raise DataError(f"--data {directory}: no such directory; expected the {spec.name} files there: "
                        f"{', '.join(f.name for f in spec.files)}")
    missing = _missing(spec, directory)
    if missing:
        raise DataError(f"--data {directory}: missing {', '.join(missing)} "
                        f"(each file may also be decompressed, without .gz)")
    return directory, f"--data {directory}"


def _candidates(spec: DatasetSpec) -> list[tuple[Path | None, str]]:
    """(directory, description) of each place to look after --data, in order; None when $NNLAB_DATA is unset."""
    places: list[tuple[Path | None, str]] = []
    data_root = os.environ.get("NNLAB_DATA")
    if data_root:
        path = Path(data_root).expanduser() / spec.name
        places.append((path, f"$NNLAB_DATA/{spec.name} ({path})"))
    else:
        places.append((None, "$NNLAB_DATA (not set)"))
    cache = cache_root() / spec.name
    places.append((cache, f"cache {cache}"))
    places.extend((Path(d), f"system {d}") for d in spec.system_dirs)
    return places


def _why_not(spec: DatasetSpec, directory: Path | None, description: str) -> str:
    """``description`` with the reason that place did not serve, for the not-found message."""
    if directory is None:
        return description
    missing = _missing(spec, directory)
    if len(missing) == len(spec.files):
        return f"{description} (absent)"
    return f"{description} (missing {', '.join(missing)})"


def locate(spec: DatasetSpec, data: str | Path | None = None, download: bool = True) -> tuple[Path, str]:
    """The directory holding all of ``spec``'s files and a short description of where it was found.

    Looks at ``data`` (an explicit choice: if it lacks files that is an error at once), then
    ``$NNLAB_DATA/<name>``, the cache, the system directories, and finally downloads the
    missing files into the cache. Failing all that, one line lists every place looked and
    how to get the dataset.
    """
    if data is not None:
        return _from_data_argument(spec, data)
    places = _candidates(spec)
    for directory, description in places:
        if directory is not None and not _missing(spec, directory):
            return directory, description
    looked = "; ".join(_why_not(spec, d, desc) for d, desc in places)
    if not download:
        raise DataError(f"{spec.name} not found (downloads disabled); looked in: {looked}. "
                        f"Get it with {how_to_get(spec)}")
    directory = cache_root() / spec.name
    try:
        mirrors = fetch_missing(spec, directory, progress=True)
    except DataError as error:
        raise DataError(f"{spec.name} not found; looked in: {looked}; download failed: {error}. "
                        f"Get it with {how_to_get(spec)}") from None
    return directory, f"downloaded from {', '.join(mirrors)} into {directory}"


def find(spec: DatasetSpec, data: str | Path | None = None) -> str | None:
    """Where ``spec`` is found now, nothing downloaded: in ``data`` when that holds it, else in the
    usual places (``locate``'s order); None when it is nowhere. For listings, where ``--data`` is one
    more place to look rather than the only one."""
    for choice in ([data] if data is not None else []) + [None]:
        try:
            return locate(spec, choice, download=False)[1]
        except DataError:
            continue
    return None


def describe(spec: DatasetSpec, data: str | Path | None = None) -> str:
    """Where ``spec`` would be found now (``find``), or ``not found:`` and how to get it."""
    return find(spec, data) or f"not found: get it with {how_to_get(spec)}, or let the first run download it"


def _url(mirror: str, name: str) -> str:
    """``mirror`` joined with a file name, whether or not the mirror ends in a slash."""
    return mirror.rstrip("/") + "/" + name


def _md5_of(path: Path) -> str:
    """The md5 of a file's bytes, streamed."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from a ``Content-Range: bytes a-b/total`` header, None where absent."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (header or "").strip())
    if not match:
        return None, None
    return int(match[1]), None if match[2] == "*" else int(match[2])


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse | None:
    """Start the GET, asking for the bytes from ``offset`` on when resuming.

    None means the server refused the range (HTTP 416): the ``.part`` is already as long as
    the file or longer, so it cannot be resumed.
    """
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            return None
        raise DataError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DataError(f"{url}: cannot connect ({reason})") from None


def _copy(response: BinaryIO, file: BinaryIO, bar: tqdm) -> int:
    """Copy the response body into ``file``; the number of bytes copied."""
    copied = 0
    while chunk := response.read(CHUNK):
        file.write(chunk)
        copied += len(chunk)
        bar.update(len(chunk))
    return copied


def _transfer(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``, resuming from its size; raise if the transfer stops short."""
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, timeout)
    if response is None:
        offset = 0
        part.unlink()
        response = _open(url, offset, timeout)
    assert response is not None  # only a resumed request can be refused
    with response:
        start, total = _content_range(response.headers.get("Content-Range"))
        if response.status == 206 and start != offset:
            part.unlink()
            raise DataError(f"{url}: server sent bytes from {start} when asked for {offset} on; "
                            "the partial file was discarded, run the same command again")
        if response.status != 206:
            offset, total = 0, None  # the server ignored the Range header and sent the whole file
        length = response.headers.get("Content-Length")
        if total is None and length is not None and length.isdigit():
            total = offset + int(length)
        show = progress and sys.stderr.isatty()
        with open(part, "ab" if offset else "wb") as file, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=part.name.removesuffix(".part"), disable=not show, leave=False) as bar:
            try:
                received = offset + _copy(response, file, bar)
            except (OSError, http.client.HTTPException) as error:
                file.flush()
                raise DataError(f"{url}: transfer interrupted after {file.tell()} bytes ({error}); "
                                f"the partial file {part} is kept: run the same command again to resume") from None
    if total is not None and received < total:
        raise DataError(f"{url}: transfer interrupted after {received} of {total} bytes; "
                        f"the partial file {part} is kept: run the same command again to resume")


def download(url: str, dest: Path, md5: str | None = None, progress: bool = True, timeout: float = 30) -> Path:
    """Download ``url`` to ``dest`` atomically, resuming an earlier partial download, and return ``dest``.

    Bytes go to ``dest.part``; an existing ``.part`` is resumed with an HTTP Range request
    (a server that ignores it makes the download restart from zero). The md5, when given,
    is checked before ``os.replace`` moves the file into place, so ``dest`` never holds a
    partial or corrupt download. A mismatch discards the ``.part``.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{dest.parent}: cannot create download directory ({error.strerror or error})") from None
    _transfer(url, part, progress, timeout)
    if md5 is not None:
        actual = _md5_of(part)
        if actual != md5.lower():
            part.unlink()
            raise DataError(f"{url}: md5 mismatch: expected {md5}, got {actual}; the download was discarded")
    os.replace(part, dest)
    return dest


def _is_verified(file: RemoteFile, directory: Path) -> bool:
    """Whether ``directory`` already holds ``file``: the archive by its md5, or either form by its content hash."""
    archive = directory / file.name
    if archive.is_file() and _md5_of(archive) == file.md5.lower():
        return True
    if file.raw_sha256 is None:
        return False
    for path in (archive, directory / file.name.removesuffix(".gz")):
        try:
            if path.is_file() and sha256_of_decompressed(path) == file.raw_sha256.lower():
                return True
        except DataError:
            continue
    return False


def _download_from_mirrors(spec: DatasetSpec, file: RemoteFile, directory: Path, progress: bool) -> str:
    """Download ``file`` from the first mirror that serves it intact and return that mirror.

    A failure on every mirror is one error listing each of them.
    """
    if not spec.mirrors:
        raise DataError(f"no download mirror is known for {spec.name}")
    failures = []
    for mirror in spec.mirrors:
        try:
            download(_url(mirror, file.remote_name), directory / file.name, file.md5, progress)
            return mirror
        except DataError as error:
            failures.append(str(error))
    raise DataError(" | ".join(failures))


def fetch(spec: DatasetSpec, dest_dir: Path | None = None, progress: bool = True) -> Path:
    """Download every file of ``spec`` into ``dest_dir`` (default: the cache) and return the directory.

    Files already there and intact are skipped, so running it again after an interruption
    only fetches what is missing, and resumes a partial file where it stopped.
    """
    directory = Path(dest_dir).expanduser() if dest_dir is not None else cache_root() / spec.name
    fetch_missing(spec, directory, progress)
    return directory


def fetch_missing(spec: DatasetSpec, directory: Path, progress: bool = True) -> list[str]:
    """Download the files of ``spec`` that ``directory`` lacks; the mirrors that served them."""
    used: list[str] = []
    for file in spec.files:
        if not _is_verified(file, directory):
            mirror = _download_from_mirrors(spec, file, directory, progress)
            if mirror not in used:
                used.append(mirror)
    return used


def zip_members(archive: Path, url: str, prefix: str, what: str) -> dict[str, bytes]:
    """The files of the downloaded zip ``archive`` under ``prefix`` (a folder, or one member's path),
    by their path after ``prefix``'s folder: ``data/names/`` -> {"Arabic.txt": ...}.

    An archive that is not a zip, or holds no such member, is removed (it is not what ``url``
    should serve) and is a ``DataError`` naming ``url`` and ``what`` it should have been.
    """
    folder = prefix if prefix.endswith("/") else prefix.rpartition("/")[0] + "/"
    try:
        with zipfile.ZipFile(archive) as handle:
            members = {info.filename[len(folder):]: handle.read(info) for info in handle.infolist()
                       if not info.is_dir() and (info.filename.startswith(prefix) if prefix.endswith("/")
                                                 else info.filename == prefix)}
    except (zipfile.BadZipFile, OSError) as error:
        archive.unlink(missing_ok=True)
        raise DataError(f"{url}: not {what} ({error}); the download was removed") from None
    if not members:
        archive.unlink(missing_ok=True)
        raise DataError(f"{url}: not {what} (no {prefix} in it); the download was removed")
    return members


def place_files(directory: Path, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` (name -> bytes) into ``directory`` and return their paths, each one atomically
    (``files.atomic_write``), so a final name never holds a partial file."""
    return [atomic_write(directory / name, data) for name, data in files.items()]
