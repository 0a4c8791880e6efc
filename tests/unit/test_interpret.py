"""`nnlab interpret`: confusion matrix, most-confused pairs, per-class report and highest-loss images
of an image run, on its validation split (as training drew it) or its test split."""
import json

import pytest
import torch

from nnlab.cli import main
from nnlab.config import save_config
from nnlab.kinds.tabular import TabularConfig
from nnlab.data.vision import load_image_dataset
from nnlab.errors import ConfigError
from nnlab.commands.explain import interpret
from nnlab.inspection.report import top_losses
from nnlab.kinds.image import evaluate, load_run


def test_top_losses_are_the_largest_negative_log_probabilities_of_the_true_class():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    targets = torch.tensor([0, 0, 1, 1])
    losses, order = top_losses(probs, targets, 2)
    assert order.tolist() == [1, 2]
    assert losses.tolist() == pytest.approx([-torch.log(torch.tensor(0.2)).item(), -torch.log(torch.tensor(0.4)).item()])


def test_interpret_test_split_agrees_with_evaluate_and_writes_both_plots(image_run, tmp_path):
    result = interpret(image_run, split="test", top=6, out=tmp_path / "out")
    scored = evaluate(image_run)
    assert result["accuracy"] == scored["test_accuracy"] and result["confusion"] == scored["confusion"]
    assert result["images"] == 200 and sum(map(sum, result["confusion"])) == 200
    assert set(result["per_class"]) == set(result["classes"])
    assert all(0.0 <= row["precision"] <= 1.0 and 0.0 <= row["recall"] <= 1.0 for row in result["per_class"].values())
    losses = [row["loss"] for row in result["top_losses"]]
    assert len(losses) == 6 and losses == sorted(losses, reverse=True)
    data = load_image_dataset("fashion-mnist", load_run(image_run)[0].data)
    for row in result["top_losses"]:  # each index names the image and its label
        assert data.classes[int(data.test_labels[row["index"]])] == row["true"]
        assert row["loss"] == pytest.approx(-torch.log(torch.tensor(row["true_probability"])).item(), rel=1e-4)
    for name in ("confusion_png", "top_losses_png"):
        assert open(result[name], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_interpret_validation_split_is_the_runs_hold_out(image_run):
    config = load_run(image_run)[0]
    result = interpret(image_run, top=3)
    train_labels = load_image_dataset("fashion-mnist", config.data).train_labels
    assert result["split"] == "valid" and result["images"] == round(config.valid_fraction * len(train_labels))
    assert all(result["classes"][int(train_labels[row["index"]])] == row["true"] for row in result["top_losses"])
    assert (image_run / "interpret-valid" / "top_losses.png").is_file()


def test_interpret_cli_prints_json_and_refuses_other_runs(image_run, tmp_path, capsys):
    assert main(["interpret", str(image_run), "--split", "test", "--top", "4", "--out", str(tmp_path / "i"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"accuracy", "most_confused", "per_class", "confusion", "top_losses"} <= out.keys()
    assert len(out["top_losses"]) == 4
    other = tmp_path / "tabular"
    other.mkdir()
    save_config(TabularConfig(dataset="iris", target="target"), other / "config.json")
    assert main(["interpret", str(other)]) == 2
    assert "is a tabular run; interpret takes: image run" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--top"):
        interpret(image_run, top=0)
