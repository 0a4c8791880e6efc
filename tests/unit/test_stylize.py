"""nnlab stylize: Gram matrices by hand, a falling loss on random VGG19 weights, the PNG written, clear errors."""
import json
import struct
import zlib

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from nnlab.cli import main
from nnlab.errors import CheckpointError, ConfigError
from nnlab.workflows.stylize import (LAYER_NAMES, WEIGHTS_FILE, WEIGHTS_URL, gram_matrix, parse_style_layers, stylize,
                                 vgg19_features)

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = {"size": 32, "weights": "random", "progress": False}


@pytest.fixture
def images(tmp_path):
    """A 48x30 noisy RGB content photo and a 40x40 grey stripe 'style', as files."""
    rng = np.random.default_rng(0)
    content = tmp_path / "content.jpg"
    Image.fromarray(rng.integers(0, 256, (30, 48, 3), dtype=np.uint8)).save(content)
    stripes = ((np.arange(40)[:, None] + np.arange(40)[None, :]) % 8 < 4).astype(np.uint8) * 255  # [40, 40]
    style = tmp_path / "style.png"
    Image.fromarray(np.repeat(stripes[:, :, None], 2, 2), "LA").save(style)  # grey + alpha: converted to RGB
    return content, style


def test_gram_matrix_matches_a_hand_computation():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)  # C=2 maps of 1x2: F = [[1, 2], [3, 4]]
    # F F^T = [[1+4, 3+8], [3+8, 9+16]] = [[5, 11], [11, 25]], divided by C*H*W = 4 elements.
    expected = torch.tensor([[[1.25, 2.75], [2.75, 6.25]]])
    assert torch.equal(gram_matrix(features), expected)


def test_layer_names_follow_torchvision_vgg19_features():
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])
    assert len(LAYER_NAMES) == len(features)
    for name, layer in zip(LAYER_NAMES, features):
        assert type(layer).__name__ == {"conv": "Conv2d", "relu": "ReLU", "pool": "MaxPool2d"}[name[:4]]
    assert LAYER_NAMES.index("conv4_2") == 21 and LAYER_NAMES.index("conv5_1") == 28


def test_features_are_truncated_frozen_and_in_eval_mode():
    features = vgg19_features("conv3_1", "random")
    assert features.names[-1] == "conv3_1" and len(features.layers) == LAYER_NAMES.index("conv3_1") + 1
    assert not features.training and not any(p.requires_grad for p in features.parameters())
    out = features(torch.rand(1, 3, 16, 16), {"conv1_1", "conv3_1"})
    assert out["conv1_1"].shape == (1, 64, 16, 16) and out["conv3_1"].shape == (1, 256, 4, 4)


def test_style_layer_weights_parse_and_unknown_layers_are_named():
    assert parse_style_layers("conv1_1, relu2_1:0.5") == {"conv1_1": 1.0, "relu2_1": 0.5}
    with pytest.raises(ConfigError, match="no VGG19 layer 'conv6_1'"):
        parse_style_layers("conv1_1,conv6_1")


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_total_loss_falls_over_20_steps_with_random_weights(images, tmp_path, optimizer):
    content, style = images
    result = stylize(content, style, tmp_path / "out.png", steps=20, optimizer=optimizer, init="noise", **FAST)
    assert result["losses"]["total"] < 0.9 * result["initial_losses"]["total"]
    assert np.isfinite(result["losses"]["total"]) and result["losses"]["style"] > 0


def test_bf16_features_still_lower_the_fp32_loss_and_bad_precision_is_named(images, tmp_path):
    content, style = images
    result = stylize(content, style, tmp_path / "out.png", steps=20, optimizer="adam", init="noise",
                     precision="bf16", **FAST)
    assert result["precision"] == "bf16"
    assert result["losses"]["total"] < 0.9 * result["initial_losses"]["total"]
    with pytest.raises(ConfigError, match="--precision: expected fp32 or bf16"):
        stylize(content, style, tmp_path / "x.png", steps=1, precision="fp16", **FAST)


def test_output_is_an_rgb_png_of_the_content_resized_keeping_aspect(images, tmp_path):
    content, style = images
    out = tmp_path / "out.png"
    result = stylize(content, style, out, steps=4, save_every=2, preserve_color=True, tv_weight=1.0, **FAST)
    with Image.open(out) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (32, 20))  # 48x30 -> longer side 32
    assert result["size"] == [32, 20] and result["output"] == str(out)
    assert result["frames"] == [str(tmp_path / "out.step0002.png"), str(tmp_path / "out.step0004.png")]
    assert all(Image.open(frame).size == (32, 20) for frame in result["frames"])


def test_preserve_color_keeps_the_content_colours(images, tmp_path):
    content, style = images
    stylize(content, style, tmp_path / "out.png", steps=2, preserve_color=True, **FAST)
    out = np.asarray(Image.open(tmp_path / "out.png"), dtype=np.float64)
    source = np.asarray(Image.open(content).convert("RGB").resize((32, 20), Image.Resampling.LANCZOS), dtype=np.float64)
    chroma = np.array([[0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])  # YIQ's I and Q rows
    assert np.abs(out @ chroma.T - source @ chroma.T).mean() < 6  # within rounding and clipping, of 255


def test_weights_file_is_loaded_from_a_state_dict_with_features_keys(tmp_path):
    reference = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"][:3])  # conv1_1 .. pool1
    state = {f"features.{k}": v for k, v in reference.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored: only the features are built
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    features = vgg19_features("conv1_2", path)
    assert torch.equal(features.layers[2].weight, reference[2].weight)
    with pytest.raises(CheckpointError, match="not VGG19 weights"):
        vgg19_features("conv2_1", path)  # conv2_1's weights are not in the file


class Payload:
    """Stands for anything a malicious pickle could carry: weights-only loading must refuse it."""


def test_weights_file_carrying_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        vgg19_features("conv1_1", path)


def test_missing_weights_offline_name_the_file_the_place_and_the_url(images, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("NNLAB_OFFLINE", "1")  # online, the file downloads: tests/unit/test_weights_download.py
    with pytest.raises(CheckpointError) as error:
        stylize(*images, tmp_path / "out.png", size=32, steps=1, progress=False)
    message = str(error.value)
    assert WEIGHTS_FILE in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert WEIGHTS_URL in message and "--weights random" in message


def test_cli_writes_the_png_and_prints_json(images, tmp_path, capsys):
    content, style = images
    out = tmp_path / "cli.png"
    code = main(["stylize", str(content), str(style), "-o", str(out), "--size", "32", "--steps", "3",
                 "--weights", "random", "--optimizer", "adam", "--style-layers", "conv1_1,conv2_1:0.5", "--json"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["output"] == str(out) and out.is_file() and result["steps"] == 3
    assert result["style_layers"] == {"conv1_1": 1.0, "conv2_1": 0.5}
    assert set(result["losses"]) == {"content", "style", "tv", "total"} and result["seconds"] > 0


def test_cli_default_output_sits_beside_the_content(images, capsys):
    content, style = images
    assert main(["stylize", str(content), str(style), "--size", "32", "--dry-run", "--weights", "random"]) == 0
    assert content.with_name("content.stylized.png").is_file()
    assert "content.stylized.png: 32x20, 2 lbfgs steps" in capsys.readouterr().out


def zero_width_png(path):
    """A PNG whose header declares 0x10 pixels (PIL will not write one)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def bad_inputs(tmp_path, images):
    content, style = images
    (tmp_path / "notes.png").write_text("not an image at all")
    (tmp_path / "zero.jpg").write_bytes(b"")
    zero_width_png(tmp_path / "flat.png")
    return {
        "zero-byte file": ([str(tmp_path / "zero.jpg"), str(style)], "zero.jpg: file is empty"),
        "zero-width image": ([str(content), str(tmp_path / "flat.png")], "flat.png: not an image"),
        "missing file": ([str(tmp_path / "nope.jpg"), str(style)], "nope.jpg: no such file"),
        "not an image": ([str(content), str(tmp_path / "notes.png")], "notes.png: not an image"),
        "huge size": ([str(content), str(style), "--size", "100000"], "--size 100000: at most 2048 px"),
        "too thin": ([str(content), str(style), "--size", "16"], "needs a shorter side of at least 16 px"),
        "unknown layer": ([str(content), str(style), "--content-layer", "conv9_9"], "no VGG19 layer 'conv9_9'"),
        "not a png": ([str(content), str(style), "-o", str(tmp_path / "x.jpg")], "ending in .png"),
    }


@pytest.mark.parametrize("case", ["missing file", "not an image", "zero-byte file", "zero-width image", "huge size",
                                  "too thin", "unknown layer", "not a png"])
def test_bad_inputs_give_one_clear_line(images, tmp_path, capsys, case):
    argv, expected = bad_inputs(tmp_path, images)[case]
    assert main(["stylize", "--weights", "random", "--steps", "1", "--size", "32", *argv]) == 2  # argv's --size wins
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
