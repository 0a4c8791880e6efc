"""Grad-CAM: equal to CAM for a GAP + linear head, located where the evidence is, and the command."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nnlab.cli import main
from nnlab.errors import ConfigError
from nnlab.inspection.cam import grad_cam


class GapNet(nn.Module):
    """conv -> ReLU feature map, global average pooling, linear head: the net CAM was defined for."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward_features(self, x):
        return self.relu(self.conv(x))

    def forward_head(self, features):
        return self.head(features.mean(dim=(2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_grad_cam_of_a_gap_head_is_the_class_activation_map():
    torch.manual_seed(0)
    model = GapNet()
    x = torch.randn(1, 1, 8, 8)
    heat, probs, target = grad_cam(model, x, class_index=2)
    features = model.forward_features(x)[0].detach()
    cam = torch.relu((model.head.weight[2].detach()[:, None, None] * features).sum(0))  # Zhou et al.'s CAM
    assert target == 2 and torch.allclose(probs.sum(), torch.tensor(1.0))
    assert torch.allclose(heat, cam / cam.max(), atol=1e-5)


def test_heat_map_peaks_where_the_evidence_is():
    model = GapNet()
    with torch.no_grad():  # channel 0 copies brightness; class 1 reads channel 0 only
        model.conv.weight.zero_()
        model.conv.bias.zero_()
        model.conv.weight[0, 0, 1, 1] = 1.0
        model.head.weight.zero_()
        model.head.weight[1, 0] = 1.0
    x = torch.zeros(1, 1, 12, 12)
    x[0, 0, 8:11, 2:5] = 1.0
    heat, _, _ = grad_cam(model, x, class_index=1)
    assert heat[9, 3] == 1.0 and heat[:6].max() == 0 and heat[:, 7:].max() == 0


def test_named_layer_is_hooked_and_unknown_layer_lists_the_convs():
    torch.manual_seed(0)
    model = GapNet()
    x = torch.randn(1, 1, 8, 8)
    by_name, _, _ = grad_cam(model, x, class_index=0, layer="relu")
    default, _, _ = grad_cam(model, x, class_index=0)
    assert torch.allclose(by_name, default)
    with pytest.raises(ConfigError, match="no such module; conv layers: conv"):
        grad_cam(model, x, layer="nope")
    with pytest.raises(ConfigError, match="not a \\[N, C, H, W\\] feature map"):
        grad_cam(model, x, layer="head")


def test_cam_command_writes_an_overlay_png(image_run, tmp_path, capsys):
    image = np.full((28, 28), 20, np.uint8)
    image[4:12, 1:6] = 220  # the square of class 0 in the generated data
    Image.fromarray(image).save(tmp_path / "square.png")
    out = tmp_path / "cam.png"
    assert main(["cam", str(image_run), str(tmp_path / "square.png"), "--class", "Trouser", "-o", str(out),
                 "--invert", "no", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["class"] == "Trouser" and 0 <= result["probability"] <= 1
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["cam", str(image_run), str(tmp_path / "square.png")]) == 0
    assert (tmp_path / "square.cam.png").is_file()
    assert main(["cam", str(image_run), str(tmp_path / "square.png"), "--class", "Cat"]) == 2
    assert "not a class of this run" in capsys.readouterr().err


def test_cam_gives_the_probability_predict_gives_through_the_test_time_flip(image_run, tmp_path, capsys):
    import shutil

    from nnlab.config import load_config, save_config
    image = np.full((28, 28), 20, np.uint8)
    image[4:12, 1:6] = 220  # class 0's square: its mirror image lies elsewhere, so the flip moves the probability
    path = tmp_path / "square.png"
    Image.fromarray(image).save(path)
    probabilities = {}
    for tta in (True, False):  # with the flip (fashion-cnn's default) Grad-CAM's title used to differ from predict
        run = tmp_path / f"tta-{tta}"
        shutil.copytree(image_run, run)
        config = load_config(run / "config.json")
        config.tta = tta
        save_config(config, run / "config.json")
        assert main(["predict", str(run), str(path), "--invert", "no", "--top-k", "1", "--json"]) == 0
        top = json.loads(capsys.readouterr().out)[0]["top"][0]
        assert main(["cam", str(run), str(path), "--invert", "no", "-o", str(tmp_path / f"{tta}.png"), "--json"]) == 0
        cam = json.loads(capsys.readouterr().out)
        assert cam["class"] == cam["predicted"] == top["class"]
        assert cam["probability"] == pytest.approx(top["probability"], abs=2e-6)
        probabilities[tta] = cam["probability"]
    assert abs(probabilities[True] - probabilities[False]) > 1e-3  # the two rules differ on this image
    before = path.read_bytes()
    assert main(["cam", str(run), str(path), "-o", str(path)]) == 2  # an output never replaces its input
    assert "is the input file" in capsys.readouterr().err and path.read_bytes() == before
