"""What the whole suite needs beyond the virtualenv's packages, and how to get each.

One table serves both ends. ``make test`` runs this file after setting up: it names, in one line,
whatever is missing and how to get it, and exits 2 (with ``--partial``, for ``make test PARTIAL=1``,
it only notes it and the tests that need it skip). The tests that need one of these call
``conftest.require`` with the same words, so a skip says what the Makefile would have said, and
under ``NNLAB_REQUIRE_ALL=1`` (CI: ``.ci/run``; ``make test`` without ``PARTIAL``) fails instead.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Need:
    """One thing some tests need: what it is, how to get it, and a check that returns a falsy value
    where it is missing."""

    what: str
    how: str
    check: Callable[[], object]

    def missing(self) -> str | None:
        """``what: how to get it`` where the check fails, else None."""
        return None if self.check() else f"{self.what}: {self.how}"


def chromium() -> str | None:
    """Debian's Chromium where scripts/screenshots.py looks for it (PATH, then /usr/bin/chromium)."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    return path if Path(path).is_file() else None


def postgres_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: on PATH, or Debian's /usr/lib/postgresql/N/bin (the newest)."""
    found = shutil.which("initdb"), shutil.which("pg_ctl")
    if all(found):
        return Path(found[0]).resolve().parent
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]), reverse=True)
    return Path(debian[0]).parent if debian else None


def module(name: str) -> Callable[[], bool]:
    """A check that the Python module ``name`` can be imported (found, not imported: cheap)."""
    def check() -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # its parent package is missing
            return False
    return check


def locate_dataset(name: str) -> Path:
    """The directory of the dataset ``name`` (``fashion-mnist`` or ``text``), found the way the tests
    look for it: nnlab's places (``$NNLAB_DATA/<name>``, the cache, the system directory), never a
    download; a ``DataError`` saying where it looked otherwise."""
    from nnlab.data.sources import locate
    from nnlab.data.text import SHAKESPEARE
    from nnlab.data.vision import FASHION_MNIST
    spec = {"fashion-mnist": FASHION_MNIST.spec, "text": SHAKESPEARE}[name]
    return locate(spec, download=False)[0]


def dataset(name: str) -> Callable[[], Path | None]:
    """A check that the dataset ``name`` is found (``locate_dataset``)."""
    def check() -> Path | None:
        from nnlab.errors import DataError
        try:
            return locate_dataset(name)
        except DataError:
            return None
    return check


SETUP = "`make setup` (pip install -e '.[dev]')"
NEEDS = {
    "chromium": Need("Debian's chromium", "`make browser` as root (apt-get install chromium)", chromium),
    "playwright": Need("the Python package playwright", SETUP, module("playwright.sync_api")),
    "postgresql": Need("PostgreSQL's server binaries (initdb, pg_ctl on PATH or in /usr/lib/postgresql/*/bin)",
                       "`make postgres` as root (apt-get install postgresql)", postgres_bindir),
    "psycopg": Need("the PostgreSQL driver psycopg", SETUP, module("psycopg")),
    "jupyter": Need("the Jupyter packages nbformat, nbclient and ipykernel", SETUP,
                    lambda: all(module(name)() for name in ("nbformat", "nbclient", "ipykernel"))),
    "fashion-mnist": Need("the real Fashion-MNIST", "`make data` as root (apt-get install dataset-fashion-mnist) "
                          "or `nnlab download fashion-mnist`", dataset("fashion-mnist")),
    "text": Need("Tiny Shakespeare", "NNLAB_DATA=DIR holding text/tinyshakespeare.txt (make test sets "
                 "NNLAB_DATA=../shared/data where that folder exists) or `nnlab download text`", dataset("text")),
}


def main(argv: list[str] | None = None) -> int:
    """Check every need; one line naming what is missing (exit 2, or 0 with ``--partial``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partial", action="store_true", help="only note what is missing (make test PARTIAL=1)")
    args = parser.parse_args(argv)
    missing = [line for line in (need.missing() for need in NEEDS.values()) if line]
    if not missing:
        return 0
    if args.partial:
        print(f"make test PARTIAL=1: without {'; '.join(missing)}: the tests that need them skip", file=sys.stderr)
        return 0
    print(f"make test: missing {'; '.join(missing)}. `make test PARTIAL=1` or `make test-fast` runs the tests "
          "that do without them", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
