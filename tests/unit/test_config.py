import pytest

from nnlab.kinds.image import ImageConfig as TrainConfig
from nnlab.config import apply_overrides, load_config, parse_set_args, save_config
from nnlab.errors import ConfigError


def test_set_values_are_parsed_as_literals():
    assert parse_set_args(["lr=0.01", "epochs=3", "tta=true", "clip=None", "name=abc"]) == {
        "lr": 0.01, "epochs": 3, "tta": "true", "clip": None, "name": "abc"}


def test_overrides_are_coerced_to_field_types():
    c = apply_overrides(TrainConfig(), parse_set_args(["lr=1", "tta=yes", "augment=flip_lr,crop:2", "clip=0.5"]))
    assert c.lr == 1.0 and isinstance(c.lr, float)
    assert c.tta is True and c.augment == ("flip_lr", "crop:2") and c.clip == 0.5


def test_model_args_can_be_set_one_by_one():
    c = apply_overrides(TrainConfig(model_args={"widths": (8, 16), "dropout": 0.1}), {"model_args.dropout": 0.3})
    assert c.model_args == {"widths": (8, 16), "dropout": 0.3}


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown setting 'lrr'.*valid keys:.*lr"):
        apply_overrides(TrainConfig(), {"lrr": 1})


@pytest.mark.parametrize("item,message", [
    ("epochs=abc", "epochs: expected int"),
    ("epochs=0", "epochs must be at least 1"),
    ("optimizer=lamb", "optimizer: expected one of adamw, sgd, momentum"),
    ("lr=-1", "lr must be a finite positive number"),
    ("tta=maybe", "tta: expected bool"),
])
def test_bad_values_name_the_key(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(TrainConfig(), parse_set_args([item]))


def test_set_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set_args(["lr"])


def test_config_round_trips_through_json(tmp_path):
    c = apply_overrides(TrainConfig(recipe="x"), {"augment": "flip_lr", "model_args.widths": (4, 8)})
    save_config(c, tmp_path / "config.json")
    back = load_config(tmp_path / "config.json")
    assert back.augment == c.augment and back.recipe == "x" and list(back.model_args["widths"]) == [4, 8]


def test_epochs_alone_overrule_a_recipes_time_budget():
    from nnlab.recipes import recipe_config
    assert recipe_config("fashion-rnn", {}).time_budget == 280.0
    assert recipe_config("fashion-rnn", {"epochs": 2}).time_budget is None  # exactly 2 epochs, as asked
    both = recipe_config("fashion-rnn", {"epochs": 2, "time_budget": 30.0})
    assert (both.epochs, both.time_budget) == (2, 30.0)
    assert recipe_config("fashion-mlp", {"epochs": 2}).time_budget is None
