"""The fashion-transfer kind: pretrain on classes 0-4, few-shot classes 5-9 from the pretrained net
and from scratch, repeats with means and spreads, transfer.png, evaluate again, --from a run."""
import io
import json
import statistics

import pytest
import torch

from conftest import write_square_fashion
from nnlab.cli import main
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.errors import ConfigError
from nnlab.kinds.fashion_transfer import draw_shots, draw_split, evaluate, subset
from nnlab.recipes import recipe_config, train


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    return write_square_fashion(tmp_path_factory.mktemp("squares") / "fashion-mnist", n_train=300, n_test=100)


def quick(squares, **extra):
    """A seconds-long fashion-transfer: a tiny net, one pretraining epoch, K = 2 and 4, 3 epochs."""
    return {"data": str(squares), "model_args.widths": (8, 16, 16), "model_args.head_hidden": 32,
            "pretrain_epochs": 1, "pretrain_batch_size": 50, "shots": (2, 4), "epochs": 3, "freeze_epochs": 1,
            "batch_size": 16, "min_epoch_images": 32, "valid_per_class": 6, "scratch_lrs": (3e-3, 3e-2),
            "threads": 1, **extra}


def test_subset_relabels_and_draw_shots_takes_k_per_class():
    labels = torch.arange(100) % 10
    images = torch.zeros(100, 1, 28, 28, dtype=torch.uint8)
    x, y = subset(images, labels, (5, 6, 7, 8, 9))
    assert len(x) == 50 and sorted(y.unique().tolist()) == [0, 1, 2, 3, 4]
    chosen = draw_shots(y, 3, torch.Generator().manual_seed(0))
    assert torch.bincount(y[chosen]).tolist() == [3] * 5
    assert torch.equal(chosen, draw_shots(y, 3, torch.Generator().manual_seed(0)))
    assert not torch.equal(chosen, draw_shots(y, 3, torch.Generator().manual_seed(1)))


def test_pretrains_on_source_classes_then_compares_on_the_same_budget(squares, tmp_path):
    run = tmp_path / "ft"
    summary = train("fashion-transfer", out=run, stream=io.StringIO(), overrides=quick(squares, repeats=2))
    pre = load_checkpoint(run / "pretrain.pt")
    assert pre["source_classes"] == [0, 1, 2, 3, 4] and len(pre["classes"]) == 5
    assert summary["source"] == str(run / "pretrain.pt") and summary["test_images"] == 50  # classes 5-9 of 100
    first, second = summary["results"]
    assert (first["shots"], second["shots"]) == (2, 4) and (first["train_images"], second["train_images"]) == (10, 20)
    assert set(summary["transfer_gain_points"]) == {"2", "4"}
    assert summary["transfer_gain_points"]["2"] == pytest.approx(
        100 * (first["transfer_accuracy"] - first["scratch_accuracy"]), abs=0.01)
    assert first["transfer_accuracy"] == pytest.approx(sum(first["transfer_per_seed"]) / 2)
    assert len(first["scratch_per_seed"]) == 2
    for init in ("scratch", "transfer"):  # the spread is the sample standard deviation over the seeds
        assert first[f"{init}_spread"] == pytest.approx(statistics.stdev(first[f"{init}_per_seed"]), abs=1e-12)
    assert (run / "transfer.png").stat().st_size > 1000
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # scratch's rate: the better of the two on validation images drawn from the training images
    assert summary["scratch_lrs"] == [3e-3, 3e-2] and "validation" in summary["scratch_lr_chosen_on"]
    tried = first["scratch_valid_accuracy_by_lr"]
    assert set(tried) == {"0.003", "0.03"} and first["valid_images"] == 30 and len(first["scratch_lr_per_seed"]) == 2
    assert all(lr in (3e-3, 3e-2) for lr in first["scratch_lr_per_seed"])
    assert 0 <= first["scratch_valid_accuracy"] <= max(tried.values())
    # every option's epochs are logged, the chosen ones marked; the probe has none (a closed fit)
    transfer = [r for r in rows if r["init"] == "transfer" and r["shots"] == 2 and r["seed"] == 0]
    assert {r["option"] for r in transfer} == {"fine-tune"}
    assert all(r["chosen"] == (r["option"] == first["transfer_method_per_seed"][0]) for r in transfer)
    assert set(first["transfer_valid_accuracy_by_method"]) == {"probe", "fine-tune"}
    scratch = [r for r in rows if r["init"] == "scratch" and r["shots"] == 2 and r["seed"] == 0 and r["chosen"]]
    assert len(transfer) == len(scratch) == 3  # the same budget
    assert transfer[0]["trainable"] == ["head"] and transfer[1]["trainable"] == ["stem", "body", "head"]
    assert scratch[0]["trainable"] == ["stem", "body", "head"]
    again = evaluate(run)["test_accuracy_by_model"]
    assert again["transfer-k2"] == first["transfer_per_seed"][0]
    assert again["scratch-k4-seed1"] == second["scratch_per_seed"][1]


def test_from_an_earlier_run_reuses_its_pretrained_net(squares, tmp_path, capsys):
    first = tmp_path / "first"
    train("fashion-transfer", out=first, stream=io.StringIO(), overrides=quick(squares, shots=(2,), epochs=2))
    code = main(["train", "fashion-transfer", "--from", str(first), "--out", str(tmp_path / "again"),
                 "--data", str(squares), "--epochs", "2", "--freeze-epochs", "1", "--set", "shots=2",
                 "--set", "model_args.widths=8,16,16", "--set", "model_args.head_hidden=32",
                 "--set", "min_epoch_images=32", "--set", "valid_per_class=6", "--set", "scratch_lr=0.01",
                 "--batch-size", "16", "--threads", "1", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["source"] == str(first / "pretrain.pt") and summary["pretrain_seconds"] == 0.0
    assert summary["scratch_lrs"] == [0.01] and summary["results"][0]["scratch_lr_per_seed"] == [0.01]
    assert not (tmp_path / "again" / "pretrain.pt").exists()
    assert main(["predict", str(tmp_path / "again"), "x.png"]) == 2
    assert main(["train", "fashion-transfer", "--from", str(tmp_path / "nothing"), "--data", str(squares),
                 "--out", str(tmp_path / "bad")]) != 0


def test_the_validation_set_is_drawn_apart_from_the_k_shot_set():
    labels = torch.arange(300) % 5
    chosen, valid = draw_split(labels, 4, 20, torch.Generator().manual_seed(3))
    assert torch.bincount(labels[chosen]).tolist() == [4] * 5 and torch.bincount(labels[valid]).tolist() == [20] * 5
    assert not set(chosen.tolist()) & set(valid.tolist())


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="overlap"):
        recipe_config("fashion-transfer", {"target_classes": (4, 5, 6)}).check()
    with pytest.raises(ConfigError, match="shots"):
        recipe_config("fashion-transfer", {"shots": (0,)}).check()
    with pytest.raises(ConfigError, match="scratch_lrs"):
        recipe_config("fashion-transfer", {"scratch_lrs": "0.01,-1"}).check()
    assert recipe_config("fashion-transfer", {"scratch_lrs": 0.01}).scratch_lrs == (0.01,)
