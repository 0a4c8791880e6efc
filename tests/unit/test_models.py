"""Every registered model gets forward/backward and interface tests for free (timm's pattern)."""
import pytest
import torch

from nnlab.errors import ConfigError
from nnlab.models import create_model, list_models

MODEL_ARGS = {"mlp": {"in_features": 784}}


@pytest.mark.parametrize("name", list_models())
def test_model_forward_backward_gives_logits_and_gradients(name):
    model = create_model(name, n_classes=7, **MODEL_ARGS.get(name, {}))
    x = torch.randn(4, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (4, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_model_features_head_split_equals_forward(name):
    model = create_model(name, n_classes=5, **MODEL_ARGS.get(name, {})).eval()
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(model.forward_head(model.forward_features(x)), model(x))


@pytest.mark.parametrize("name", list_models())
def test_reset_classifier_changes_output_width_only(name):
    model = create_model(name, n_classes=10, **MODEL_ARGS.get(name, {}))
    before = {k: v.clone() for k, v in model.named_parameters() if not k.startswith("head")}
    model.reset_classifier(3)
    assert model.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    after = dict(model.named_parameters())
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())


@pytest.mark.parametrize("name", list_models())
def test_layer_groups_cover_every_parameter_once(name):
    model = create_model(name, n_classes=10, **MODEL_ARGS.get(name, {}))
    ids = [id(p) for g in model.layer_groups() for p in g.parameters()]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_cnn_accepts_other_input_sizes():
    model = create_model("cnn", n_classes=4, in_channels=3).eval()
    assert model(torch.randn(2, 3, 40, 36)).shape == (2, 4)


def test_unknown_model_lists_known_ones():
    with pytest.raises(ConfigError, match="known models: .*cnn"):
        create_model("nope")


def test_bad_model_argument_is_a_config_error():
    with pytest.raises(ConfigError, match="'cnn'"):
        create_model("cnn", wings=3)
