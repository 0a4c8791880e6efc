"""The weights' moving average: its update, what the checkpoints hold, and a resumed run that continues it."""
from __future__ import annotations

import io
import json

import pytest
import torch
from torch import nn

from nnlab.engine.ema import WeightEMA
from nnlab.recipes import train
from conftest import assert_same_run, run_cli, tiny_image

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_average_moves_toward_the_weights_with_a_warmed_up_decay():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = WeightEMA(model, 0.9)
    ema.start()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update()  # first update: decay min(0.9, 1/10) = 0.1, so the average moves 90% of the way
    assert torch.allclose(ema.shadow["0.weight"], start["0.weight"] + 0.9)
    assert int(ema.shadow["1.num_batches_tracked"]) == 7  # integer counters are copied
    for _ in range(200):
        ema.update()
    assert ema.current_decay() == 0.9  # warmed up: (1 + n) / (10 + n) passed 0.9
    assert torch.allclose(ema.shadow["0.weight"], model[0].weight)


def test_the_average_is_validated_and_saved_and_the_weights_go_back_to_training():
    model = nn.Linear(2, 1)
    ema = WeightEMA(model, 0.5)
    ema.start()
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.updates = 100  # warmed up: each update moves halfway
    ema.update()
    trained = model.weight.clone()
    ema.after_train()  # the average in the model for validation and the checkpoint
    assert torch.equal(model.weight, ema.shadow["weight"]) and not torch.equal(model.weight, trained)
    saved = ema.state()
    assert torch.equal(saved["model"]["weight"], ema.shadow["weight"])
    assert torch.equal(saved["live_model"]["weight"], trained)
    ema.after_epoch()
    assert torch.equal(model.weight, trained)  # the next epoch trains the trained weights, not the average


def test_an_image_run_with_the_average_scores_saves_and_resumes_it(squares, tmp_path, capsys):
    settings = tiny_image(squares, epochs=2, ema=0.9)
    summary = train("fashion-cnn", out=tmp_path / "whole", overrides=settings, stream=io.StringIO())
    best = torch.load(tmp_path / "whole" / "best.pt", weights_only=True)
    assert best["ema"]["updates"] == best["step"] > 0
    assert any(not torch.equal(best["model"][k], best["live_model"][k]) for k in best["model"])
    code, out, _ = run_cli(capsys, "eval", str(tmp_path / "whole"), "--json")
    assert code == 0 and json.loads(out.splitlines()[-1])["test_accuracy"] == summary["test_accuracy"]

    train("fashion-cnn", out=tmp_path / "cut", overrides={**settings, "stop_after_epochs": 1}, stream=io.StringIO())
    train(None, resume=tmp_path / "cut", stream=io.StringIO())
    assert_same_run(tmp_path / "cut", tmp_path / "whole")
    assert_same_run(tmp_path / "cut", tmp_path / "whole", checkpoint="best.pt")
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["live_model"]
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["live_model"]
    assert all(torch.equal(cut[k], whole[k]) for k in whole)


def test_a_decay_outside_0_to_1_is_refused(squares, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "fashion-cnn", "--out", str(tmp_path / "run"), "--data", str(squares),
                           "--set", "ema=1.5")
    assert code == 2 and "ema: expected a decay in [0, 1)" in err
