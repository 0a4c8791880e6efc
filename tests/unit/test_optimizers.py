"""The classic optimizers (``--optimizer sgd|momentum|nesterov|adam|adamw|rmsprop|adagrad|adadelta``),
their own arguments through ``--set optimizer_args.NAME=VALUE``, and one-cycle with each."""
import io

import pytest
import torch
from torch import nn

from conftest import tiny_image
from nnlab.config import CHOICES, apply_overrides
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.engine.optim import OPTIMIZERS, create_optimizer
from nnlab.engine.schedules import create_scheduler
from nnlab.errors import ConfigError
from nnlab.recipes import recipe_config, train


def tiny(squares, **extra):
    return tiny_image(squares, tensorboard=False, **extra)


def test_the_config_choices_are_the_optimizers_the_engine_builds():
    assert set(CHOICES["optimizer"]) == set(OPTIMIZERS)
    assert len(OPTIMIZERS) == 8


@pytest.mark.parametrize("name,cls,momentum,nesterov", [
    ("sgd", torch.optim.SGD, 0.0, False),
    ("momentum", torch.optim.SGD, 0.8, False),
    ("nesterov", torch.optim.SGD, 0.8, True),
    ("adam", torch.optim.Adam, None, None),
    ("adamw", torch.optim.AdamW, None, None),
    ("rmsprop", torch.optim.RMSprop, 0.0, None),
    ("adagrad", torch.optim.Adagrad, None, None),
    ("adadelta", torch.optim.Adadelta, None, None),
])
def test_each_name_builds_its_torch_optimizer(name, cls, momentum, nesterov):
    opt = create_optimizer(name, nn.Linear(3, 2), 0.01, 0.1, momentum=0.8)
    assert type(opt) is cls
    if momentum is not None:
        assert opt.defaults["momentum"] == momentum
    if nesterov is not None:
        assert opt.defaults["nesterov"] is nesterov
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]  # the bias is not decayed


def test_optimizer_args_reach_torch():
    opt = create_optimizer("adam", nn.Linear(3, 2), 0.01, 0.0, args={"betas": [0.8, 0.99], "eps": 1e-6})
    assert opt.defaults["betas"] == (0.8, 0.99) and opt.defaults["eps"] == 1e-6
    rms = create_optimizer("rmsprop", nn.Linear(3, 2), 0.01, 0.0, args={"alpha": 0.9, "momentum": 0.5})
    assert rms.defaults["alpha"] == 0.9 and rms.defaults["momentum"] == 0.5


@pytest.mark.parametrize("overrides,message", [
    ({"optimizer": "adam", "optimizer_args.alpha": 0.9}, "optimizer_args.alpha: adam takes betas, eps"),
    ({"optimizer": "adam", "optimizer_args.betas": (1.5, 0.9)}, "Invalid beta parameter"),
    ({"optimizer": "nesterov", "momentum": 0.0}, "Nesterov momentum requires a momentum"),
    ({"optimizer": "adagrad", "optimizer_args.lr": 0.1}, "lr and weight_decay are settings of their own"),
])
def test_bad_optimizer_arguments_are_config_errors_before_training(overrides, message):
    with pytest.raises(ConfigError, match=message):
        recipe_config("fashion-cnn", overrides)


def test_optimizer_args_override_one_key_and_keep_the_others():
    config = recipe_config("fashion-cnn", {"optimizer": "rmsprop", "optimizer_args.alpha": 0.9})
    config = apply_overrides(config, {"optimizer_args.eps": 1e-5})
    assert config.optimizer_args == {"alpha": 0.9, "eps": 1e-5}


@pytest.mark.parametrize("name,cycled", [("sgd", False), ("nesterov", True), ("adam", True), ("adagrad", False),
                                         ("adadelta", False), ("rmsprop", False)])
def test_one_cycle_cycles_momentum_only_where_the_optimizer_has_one(name, cycled):
    opt = create_optimizer(name, nn.Linear(3, 2), 0.01, 0.0)
    sched = create_scheduler("one-cycle", opt, 0.01, total_steps=20)
    seen = set()
    for _ in range(20):
        opt.step()
        sched.step()
        group = opt.param_groups[0]
        seen.add(group["betas"][0] if "betas" in group else group.get("momentum"))
    assert (len(seen) > 1) is cycled
    if name == "sgd":
        assert seen == {0.0}  # plain SGD stays plain


@pytest.mark.parametrize("name,key,value", [("sgd", "momentum", 0.0), ("momentum", "nesterov", False),
                                            ("nesterov", "nesterov", True), ("adam", "amsgrad", False),
                                            ("adamw", "eps", 1e-7), ("rmsprop", "alpha", 0.9),
                                            ("adagrad", "lr_decay", 0.0), ("adadelta", "rho", 0.9)])
def test_a_run_trains_with_each_optimizer_and_its_checkpoint_holds_that_optimizer(squares, tmp_path, name, key,
                                                                                  value):
    extra = {"rmsprop": {"optimizer_args.alpha": 0.9}, "adamw": {"optimizer_args.eps": 1e-7}}.get(name, {})
    summary = train("fashion-cnn", out=tmp_path / name, overrides=tiny(squares, optimizer=name, **extra),
                    stream=io.StringIO())
    saved = load_checkpoint(tmp_path / name / "last.pt")["optimizer"]["param_groups"][0]
    assert saved[key] == value
    assert summary["epochs"] == 1 and 0.0 <= summary["test_accuracy"] <= 1.0
