"""Transfer learning: the digits-transfer task (pretrain or --from, fine-tune vs scratch on shares of
scikit-learn's digits), rebuilding runs without reloading pretrained weights, and --model swaps."""
import io
import json
import shutil

import pytest
import torch

from conftest import write_square_fashion
from nnlab.cli import main
from nnlab.engine.checkpoint import load_checkpoint, save_checkpoint
from nnlab.kinds.image import load_run
from nnlab.recipes import recipe_config
from nnlab.kinds.transfer import evaluate, load_digits_images
from nnlab.recipes import train


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    return write_square_fashion(tmp_path_factory.mktemp("squares") / "fashion-mnist", n_train=300, n_test=50)


def quick(**extra):
    """A seconds-long digits-transfer: one share of 10%, 3 epochs (1 head-only), one thread."""
    return {"percents": (10,), "epochs": 3, "freeze_epochs": 1, "batch_size": 32, "threads": 1, "plots": False,
            **extra}


def test_digits_are_upscaled_to_28x28_bright_ink_on_dark():
    images, labels = load_digits_images()
    assert images.shape == (1797, 1, 28, 28) and images.dtype == torch.uint8
    assert sorted(labels.unique().tolist()) == list(range(10))
    assert images.max() == 255 and images[:, :, :2, :].float().mean() < images[:, :, 10:18, 10:18].float().mean()


def test_transfer_pretrains_then_compares_with_scratch_on_the_same_budget(squares, tmp_path):
    run = tmp_path / "dt"
    summary = train("digits-transfer", out=run, stream=io.StringIO(),
                    overrides=quick(data=str(squares), pretrain_epochs=1, percents=(10, 25)))
    assert (run / "pretrain" / "summary.json").is_file() and summary["source_run"] == str(run / "pretrain")
    first, second = summary["results"]
    assert (first["percent"], second["percent"]) == (10, 25) and first["train_images"] < second["train_images"]
    assert summary["digits_train_images"] + summary["digits_test_images"] == 1797
    assert summary["transfer_gain_points"] == pytest.approx(
        100 * (first["transfer_accuracy"] - first["scratch_accuracy"]), abs=0.01)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    transfer = [r for r in rows if r["init"] == "transfer" and r["percent"] == 10]
    scratch = [r for r in rows if r["init"] == "scratch" and r["percent"] == 10]
    assert len(transfer) == len(scratch) == 3  # the same budget
    assert transfer[0]["trainable"] == ["head"] and transfer[1]["trainable"] == ["stem", "body", "head"]
    assert transfer[0]["group_lr"]["body"] == 0.0 and scratch[0]["trainable"] == ["stem", "body", "head"]
    again = evaluate(run)["test_accuracy_by_model"]
    assert again["transfer-10"] == first["transfer_accuracy"] and again["scratch-25"] == second["scratch_accuracy"]


def test_repeats_average_the_comparison_over_splits(image_run, tmp_path):
    run = tmp_path / "rep"
    summary = train("digits-transfer", out=run, stream=io.StringIO(),
                    overrides=quick(from_run=str(image_run), repeats=2, epochs=2))
    result = summary["results"][0]
    assert summary["repeats"] == 2 and len(result["scratch_per_seed"]) == len(result["transfer_per_seed"]) == 2
    assert result["transfer_accuracy"] == pytest.approx(sum(result["transfer_per_seed"]) / 2)
    assert summary["transfer_gain_points"] == pytest.approx(
        100 * (result["transfer_accuracy"] - result["scratch_accuracy"]), abs=0.01)
    again = evaluate(run)["test_accuracy_by_model"]  # each model on its own split
    assert [again["scratch-10"], again["scratch-10-seed1"]] == result["scratch_per_seed"]
    assert {r["seed"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())} == {0, 1}


def test_transfer_from_an_existing_run_starts_from_its_weights(image_run, tmp_path, capsys):
    code = main(["train", "digits-transfer", "--from", str(image_run), "--out", str(tmp_path / "from"),
                 "--epochs", "3", "--freeze-epochs", "1", "--set", "percents=10", "--threads", "1", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["source_run"] == str(image_run) and not (tmp_path / "from" / "pretrain").exists()
    assert summary["source_model"] == "cnn" and summary["pretrain_seconds"] == 0.0
    head_reset = load_checkpoint(tmp_path / "from" / "models" / "transfer-10.pt")["model"]
    source = load_checkpoint(image_run / "best.pt")["model"]
    assert head_reset["head.1.weight"].shape == source["head.1.weight"].shape  # the same architecture
    assert main(["predict", str(tmp_path / "from"), "x.png"]) == 2


def test_load_run_does_not_load_pretrained_weights_again(image_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(image_run, run)
    state = load_checkpoint(run / "best.pt")
    state["model_args"] = {**state["model_args"], "pretrained": str(tmp_path / "gone.pth")}  # a run saved before
    save_checkpoint(run / "best.pt", state)
    _, model, loaded = load_run(run)
    assert "pretrained" not in loaded["model_args"]
    assert torch.equal(model.state_dict()["head.1.weight"], state["model"]["head.1.weight"])


def test_a_run_on_pretrained_weights_rebuilds_after_the_weights_file_is_gone(squares, tmp_path):
    import torchvision
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    run = tmp_path / "r18"
    assert main(["train", "fashion-cnn", "--model", "resnet18", "--set", "model_args.in_channels=1",
                 "--set", f"model_args.pretrained={weights}", "--data", str(squares), "--out", str(run),
                 "--batch-size", "16", "--dry-run", "--threads", "1", "--json"]) == 0
    weights.unlink()
    assert load_checkpoint(run / "best.pt")["model_args"] == {"in_channels": 1}
    assert load_run(run)[1].head.out_features == 10


def test_a_model_swap_drops_the_recipes_model_args_but_keeps_the_data_ones_and_overrides():
    assert recipe_config("fashion-cnn", {}).model_args["widths"] == (32, 64, 128)
    assert recipe_config("fashion-cnn", {"model": "resnet18"}).model_args == {}
    assert recipe_config("folder", {"model": "resnet18"}).model_args == {"in_channels": 3}
    swapped = recipe_config("fashion-mlp", {"model": "cnn", "model_args.widths": (8, 16)})
    assert swapped.model_args == {"widths": (8, 16)}


def test_train_with_another_model_than_the_recipes_runs(squares, tmp_path, capsys):
    assert main(["train", "fashion-mlp", "--model", "cnn", "--data", str(squares), "--out", str(tmp_path / "m"),
                 "--batch-size", "16", "--dry-run", "--threads", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == "cnn"


def test_cnn_pretrained_takes_stem_and_body_and_spreads_grey_filters_over_rgb(tmp_path):
    from nnlab.models import create_model
    source = create_model("cnn", n_classes=5, widths=(8, 16), head_hidden=16).eval()
    path = save_checkpoint(tmp_path / "pretrain.pt", {"model": source.state_dict(), "model_name": "cnn",
                                                      "model_args": {"widths": (8, 16), "head_hidden": 16}})
    model = create_model("cnn", n_classes=3, in_channels=3, widths=(8, 16), pretrained=str(path)).eval()
    assert torch.equal(model.body[0][0].weight, source.body[0][0].weight)
    assert model.head[-1].out_features == 3 and len(model.head) == 2  # a new head, of the model's own shape
    grey = torch.rand(2, 1, 28, 28)
    # a grey image given as RGB (R = G = B) gets the source's response; 64x64 inputs fit the head too
    assert torch.allclose(model.forward_features(grey.repeat(1, 3, 1, 1)), source.forward_features(grey), atol=1e-5)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3)
    torch.save(source.state_dict(), tmp_path / "bare.pt")  # a bare state dict works as well
    assert torch.equal(create_model("cnn", pretrained=str(tmp_path / "bare.pt"), widths=(8, 16)).stem[0].weight,
                       source.stem[0].weight)


def test_cnn_pretrained_that_does_not_fit_names_the_weight_and_the_sources_args(tmp_path):
    from nnlab.errors import CheckpointError
    from nnlab.models import create_model
    path = save_checkpoint(tmp_path / "pretrain.pt", {"model": create_model("cnn", widths=(8, 16)).state_dict(),
                                                      "model_args": {"widths": (8, 16)}})
    with pytest.raises(CheckpointError, match=r"stem.0.weight is \[8, 1, 3, 3\], this cnn's \[32, 1, 3, 3\].*"
                                              r"model_args \{'widths': \(8, 16\)\}: pass the same"):
        create_model("cnn", pretrained=str(path))
    torch.save({"model": torch.nn.Linear(1, 1)}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        create_model("cnn", pretrained=str(tmp_path / "code.pt"))
    with pytest.raises(CheckpointError, match="no such file"):
        create_model("cnn", pretrained=str(tmp_path / "absent.pt"))


def test_folder_recipe_takes_torchvision_weights_from_torch_home(tmp_path, monkeypatch, capsys):
    import torchvision

    from nnlab.models.backbones import weights_url
    from test_folder import make_tree
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    reference = torchvision.models.resnet18(weights=None)  # stands in for the ImageNet file, at its exact name
    cached = tmp_path / "torch" / "hub" / "checkpoints" / weights_url("resnet18").rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    run = tmp_path / "run"
    assert main(["train", "folder", "--data", str(make_tree(tmp_path / "imgs", per_class=8)), "--out", str(run),
                 "--model", "resnet18", "--set", "model_args.pretrained=torchvision", "--freeze", "stem,body",
                 "--batch-size", "8", "--dry-run", "--threads", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["frozen"] == ["stem", "body"]
    state = load_checkpoint(run / "best.pt")
    assert state["model_args"] == {"in_channels": 3}  # rebuilt from the checkpoint, not the file
    assert torch.equal(state["model"]["body.3.1.conv2.weight"], reference.layer4[1].conv2.weight)
