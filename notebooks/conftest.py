"""The lesson notebooks in the test suite: nbmake runs each ``notebooks/NN_*.ipynb`` top to bottom in a
kernel of the virtualenv's Python (jupyter_client starts the ``python3`` kernel with the Python that
runs pytest) and fails it on any error, the closing asserts included.

Each runs in quick mode (``NNLAB_QUICK=1``, unless the caller set ``NNLAB_QUICK``), with its share of
the cores, and is marked slow: it is an end-to-end run on real data, started early among the slow
tests, and left out by ``-m 'not slow'``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.path.suffix == ".ipynb":
        item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """The kernel inherits this process's environment: set quick mode, the threads and the data for it."""
    if item.path.suffix != ".ipynb":
        return (yield)
    saved = dict(os.environ)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("NNLAB_QUICK", "1")
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    if "NNLAB_DATA" not in os.environ and SHARED_DATA.is_dir():  # as make test sets it
        os.environ["NNLAB_DATA"] = str(SHARED_DATA)
    try:
        return (yield)
    finally:
        os.environ.clear()
        os.environ.update(saved)
