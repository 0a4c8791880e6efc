"""Model summaries against the closed forms of conv arithmetic."""
import json

import pytest
from torch import nn

from nnlab.cli import main
from nnlab.errors import ConfigError
from nnlab.commands.explain import model_summary
from nnlab.inspection.summary import parse_shape, summarize


def test_conv_pool_stack_on_130x130_matches_the_closed_forms():
    model = nn.Sequential(nn.Conv2d(3, 10, 3), nn.MaxPool2d(4, 4), nn.Conv2d(10, 20, 5, padding=2), nn.MaxPool2d(2, 2))
    result = summarize(model, (3, 130, 130))
    shapes = [row["output_shape"] for row in result["layers"]]
    # width = (W - F + 2P) / S + 1: 130 -> 128 -> 32 -> 32 -> 16
    assert shapes == [[10, 128, 128], [10, 32, 32], [20, 32, 32], [20, 16, 16]]
    # params = K * F * F * D_in + K
    assert [row["params"] for row in result["layers"]] == [280, 0, 5020, 0]
    assert result["total_params"] == 5300
    assert result["layers"][0]["mult_adds"] == 10 * 128 * 128 * 3 * 3 * 3
    assert result["layers"][2]["mult_adds"] == 20 * 32 * 32 * 5 * 5 * 10
    assert result["output_shape"] == [20, 16, 16]


def test_linear_and_grouped_conv_mult_adds():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    rows = summarize(model, (4, 6, 6))["layers"]
    assert rows[0]["mult_adds"] == 8 * 6 * 6 * (4 // 2) * 9
    assert rows[2]["mult_adds"] == 5 * 288 and rows[2]["params"] == 288 * 5 + 5


def test_summary_leaves_the_model_in_its_mode_without_hooks():
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout())
    summarize(model, (1, 1, 3))
    assert model.training and not model[0]._forward_hooks


def test_recipe_summary_counts_every_parameter():
    result = model_summary("fashion-cnn")
    assert result["input_shape"] == [1, 28, 28] and result["output_shape"] == [10]
    assert sum(row["params"] for row in result["layers"]) == result["total_params"]


def test_bad_input_shape_is_a_config_error():
    with pytest.raises(ConfigError, match="expected C,H,W"):
        parse_shape("3,x,4")
    with pytest.raises(ConfigError, match="does not fit the model"):
        summarize(nn.Sequential(nn.Linear(10, 2)), (1, 1, 3))


def test_summary_command_prints_json(capsys):
    assert main(["summary", "fashion-cnn", "--input", "1,32,32", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["input_shape"] == [1, 32, 32] and result["total_mult_adds"] > 0
    assert main(["summary", "fashion-cnn"]) == 0
    assert "total" in capsys.readouterr().out


def test_summary_of_a_run_uses_its_input_size(image_run):
    from nnlab.kinds.image import load_run
    result = model_summary(str(image_run))
    _, model, _ = load_run(image_run)
    assert result["input_shape"] == [1, 28, 28] and result["output_shape"] == [10]
    assert result["total_params"] == sum(p.numel() for p in model.parameters())
    assert result["layers"][0]["output_shape"] == [8, 28, 28]  # the run's widths (8, 16, 16)
