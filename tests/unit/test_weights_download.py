"""Pretrained weights that download themselves, against a local HTTP server on 127.0.0.1 (no internet).

The server serves a tiny generated state dict under a torchvision-style name (``NAME-<sha256
prefix>.pth``); the tests point the weights' URL (``backbones.weights_url``, stylize's
``WEIGHTS_URL``) at it and count its requests.
"""
import hashlib
import io
import json
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from nnlab.cli import main
from nnlab.errors import CheckpointError
from nnlab.models import backbones, create_model
from nnlab.models.weights import hash_prefix
from nnlab.workflows import stylize
from test_sources import server  # noqa: F401  (the local HTTP server fixture: files, a one-shot cut, requests)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty ``$TORCH_HOME``, online whatever the caller's environment says; yields its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("NNLAB_OFFLINE", "0")  # recorded, so that `--offline` setting it is undone too
    return tmp_path / "torch" / "hub" / "checkpoints"


def published(state: dict[str, torch.Tensor], stem: str) -> tuple[str, bytes]:
    """``state`` saved as torchvision publishes weights: named ``STEM-<first 8 hex of its SHA-256>.pth``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth", data


def conv1_1() -> dict[str, torch.Tensor]:
    """VGG19's first conv, all that stylize builds for ``--style-layers conv1_1 --content-layer conv1_1``."""
    generator = torch.Generator().manual_seed(0)
    return {"features.0.weight": torch.randn(64, 3, 3, 3, generator=generator) * 0.1,
            "features.0.bias": torch.zeros(64)}


def serve_vgg19(server, monkeypatch, name=None, data=None) -> tuple[str, bytes]:
    """Serve VGG19's conv1_1 as stylize's weights file (or ``data`` under ``name``); returns (name, bytes)."""
    base, state = server
    real_name, real_data = published(conv1_1(), "vgg19")
    name, data = name or real_name, data or real_data
    state.files[name] = data
    monkeypatch.setattr(stylize, "WEIGHTS_URL", base + name)
    return name, data


def stylize_cli(tmp_path, *extra):
    """``nnlab stylize`` on two 16 px images through conv1_1 only, for one step; its exit code."""
    rng = np.random.default_rng(0)
    for name in ("content.png", "style.png"):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / name)
    return main(["stylize", str(tmp_path / "content.png"), str(tmp_path / "style.png"), "-o", str(tmp_path / "out.png"),
                 "--size", "16", "--steps", "1", "--optimizer", "adam", "--style-layers", "conv1_1",
                 "--content-layer", "conv1_1", "--json", *extra])


def test_the_hash_prefix_is_read_from_torchvisions_file_name():
    assert hash_prefix(backbones.weights_url("resnet18")) == "f37072fd"
    assert hash_prefix(stylize.WEIGHTS_URL) == "dcbb9e9d" and stylize.WEIGHTS_FILE == "vgg19-dcbb9e9d.pth"


def test_stylize_downloads_vgg19_once_into_torch_home_and_loads_it(server, cache, tmp_path, monkeypatch, capsys):
    name, data = serve_vgg19(server, monkeypatch)
    assert stylize_cli(tmp_path) == 0
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["weights"] == str(cache / name)
    assert len(out.strip().splitlines()) == 1  # the download speaks on stderr: stdout stays one JSON line
    assert f"downloading VGG19 weights from {stylize.WEIGHTS_URL}" in err
    assert sorted(p.name for p in cache.iterdir()) == [name] and (cache / name).read_bytes() == data
    assert stylize_cli(tmp_path) == 0  # present: used as it is
    assert server[1].requests == [(name, None)]
    assert "downloading" not in capsys.readouterr().err
    features = stylize.vgg19_features("conv1_1")
    assert torch.equal(features.layers[0].weight, conv1_1()["features.0.weight"])


def test_backbone_downloads_torchvisions_file_once_then_loads_it_weights_only(server, cache, monkeypatch):
    base, state = server
    name, data = published({"fc.weight": torch.zeros(2, 2)}, "resnet18")  # not a resnet18: the load must refuse
    state.files[name] = data
    monkeypatch.setattr(backbones, "weights_url", lambda arch: base + name)
    assert backbones.weights_file("resnet18", "torchvision") == cache / name
    assert (cache / name).read_bytes() == data
    with pytest.raises(CheckpointError, match="do not fit torchvision resnet18"):
        create_model("resnet18", pretrained="torchvision")  # the model's own path: the cached file, loaded
    assert state.requests == [(name, None)]


def test_a_wrong_hash_is_refused_in_one_line_and_leaves_no_file(server, cache, tmp_path, monkeypatch, capsys):
    _, data = published(conv1_1(), "vgg19")
    serve_vgg19(server, monkeypatch, name="vgg19-00000000.pth", data=data)
    assert stylize_cli(tmp_path) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("nnlab: error: VGG19 weights: the file from")
    assert stylize.WEIGHTS_URL in last and "SHA-256 prefix 00000000" in last
    assert str(cache / "vgg19-00000000.pth") in last and "run again" in last
    assert list(cache.iterdir()) == []


def test_a_cut_connection_leaves_nothing_behind_and_the_next_try_downloads(server, cache, tmp_path, monkeypatch):
    name, data = serve_vgg19(server, monkeypatch)
    server[1].cut_after = len(data) // 2
    with pytest.raises(CheckpointError, match="a cut transfer"):
        stylize.weights_path(None)
    assert list(cache.iterdir()) == []
    assert stylize.weights_path(None) == cache / name
    assert (cache / name).read_bytes() == data and server[1].requests == [(name, None)] * 2


def test_no_network_or_a_missing_file_names_the_url_the_file_and_what_to_do(server, cache, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base, state = server
    for url, reason in ((f"http://127.0.0.1:{port}/resnet18-f37072fd.pth", "refused"),
                        (base + "resnet18-f37072fd.pth", "HTTP 404")):
        monkeypatch.setattr(backbones, "weights_url", lambda arch: url)
        with pytest.raises(CheckpointError) as error:
            backbones.weights_file("resnet18", "torchvision")
        message = str(error.value)
        assert f"downloading {url} to {cache / 'resnet18-f37072fd.pth'} failed" in message and reason in message
        assert "check the network and run again" in message and f"curl -L -o {cache / 'resnet18-f37072fd.pth'}" in message
        assert list(cache.iterdir()) == []
    assert state.requests == [("resnet18-f37072fd.pth", None)]


def test_offline_refuses_with_the_path_and_the_url_and_asks_nothing(server, cache, tmp_path, monkeypatch, capsys):
    name, _ = serve_vgg19(server, monkeypatch)
    assert stylize_cli(tmp_path, "--offline") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"VGG19 weights not found at {cache / name}; download {stylize.WEIGHTS_URL} there" in last
    assert "--weights random" in last and "offline" in last
    monkeypatch.setenv("NNLAB_OFFLINE", "1")
    monkeypatch.setattr(backbones, "weights_url", lambda arch: server[0] + name)
    with pytest.raises(CheckpointError, match=f"not found at {cache / name}; download {server[0] + name}"):
        backbones.weights_file("resnet18", "torchvision")
    assert server[1].requests == [] and not cache.exists()
