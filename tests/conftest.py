"""Shared fixtures: small generated datasets in the exact upstream formats."""
from __future__ import annotations

import os

import pytest
import torch

# Two cores: keep each test process from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own nnlab cache, so nothing reads or writes ~/.cache/nnlab."""
    monkeypatch.setenv("NNLAB_CACHE", str(tmp_path_factory.mktemp("nnlab-cache")))
