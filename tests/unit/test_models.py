"""Every registered model gets forward/backward and interface tests for free (timm's pattern)."""
import pytest
import torch

from nnlab.errors import ConfigError
from nnlab.models import create_model, list_models

MODEL_ARGS = {"mlp": {"in_features": 784}, "logistic": {"in_features": 784},
              "resnet9": {"in_channels": 1, "widths": (8, 16, 16, 32)},
              "preact_resnet18": {"in_channels": 1, "widths": (8, 16, 16, 32)},
              "vgg": {"in_channels": 1, "stages": ((8,), (16,), (16, 16))},
              "resnet18": {"in_channels": 1}, "resnet34": {"in_channels": 1}, "resnet50": {"in_channels": 1},
              "densenet121": {"in_channels": 1}, "vgg16": {"in_channels": 1}}
# ImageNet backbones that pool five times need at least 32x32 inputs.
INPUT_SIZE = {"densenet121": 32, "vgg16": 32}
# Full-size ImageNet backbones take seconds each to build on a CPU: slow tests (resnet18 stays fast).
HEAVY_MODELS = {"resnet34", "resnet50", "densenet121", "vgg16"}
# Models that are not classifiers of one input (the encoder-decoder: tests/unit/test_translate.py).
NOT_CLASSIFIERS = {"seq2seq"}
CLASSIFIERS = [name for name in list_models() if name not in NOT_CLASSIFIERS]
MODELS = [pytest.param(name, marks=pytest.mark.slow) if name in HEAVY_MODELS else name for name in CLASSIFIERS]
# Their backward pass is the costliest of all; resnet18 takes the same wrapper's path through it.
LIGHT_MODELS = [name for name in CLASSIFIERS if name not in HEAVY_MODELS]
# Sequence models take token ids [N, T] (0 is padding for name_rnn) instead of images.
SEQUENCE_MODELS = {"char_rnn", "name_rnn", "name_cnn", "series_rnn", "text_rnn", "name_gen", "char_transformer",
                   "name_ngrams", "name_ensemble", "name_generator"}


def sample_input(name, n):
    if name in SEQUENCE_MODELS:
        # char_rnn: one position per row; name_gen: a category and one character (one position) per row
        return torch.randint(1, 5, (n, {"char_rnn": 1, "char_transformer": 1, "name_gen": 2, "name_generator": 2}.get(name, 5)))
    size = INPUT_SIZE.get(name, 28)
    return torch.randn(n, 1, size, size)


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_model_forward_backward_gives_logits_and_gradients(name):
    model = create_model(name, n_classes=7, **MODEL_ARGS.get(name, {}))
    x = sample_input(name, 4)
    logits = model(x)
    assert logits.shape == (4, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_model_features_head_split_equals_forward(name):
    model = create_model(name, n_classes=5, **MODEL_ARGS.get(name, {})).eval()
    x = sample_input(name, 3)
    assert torch.allclose(model.forward_head(model.forward_features(x)), model(x))


@pytest.mark.parametrize("name", MODELS)
def test_reset_classifier_changes_output_width_only(name):
    model = create_model(name, n_classes=10, **MODEL_ARGS.get(name, {}))
    # A head is "head.*", or "members.i.head.*" for an ensemble's members.
    before = {k: v.clone() for k, v in model.named_parameters() if "head" not in k.split(".")}
    model.reset_classifier(3)
    assert model.eval()(sample_input(name, 2)).shape == (2, 3)
    after = dict(model.named_parameters())
    # A model that is all head (logistic regression) has nothing else to keep.
    assert before or all(k.startswith("head") for k in after)
    assert all(torch.equal(v, after[k]) for k, v in before.items())


@pytest.mark.parametrize("name", MODELS)
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


def test_row_rnn_reads_the_rows_in_order_and_refuses_other_widths():
    torch.manual_seed(0)
    model = create_model("row_rnn", n_classes=3, hidden=8).eval()
    x = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(model(x), model(x.flip(2)), atol=1e-4)   # the row order matters
    with pytest.raises(ValueError, match="rows of 28 values"):
        model(torch.randn(1, 3, 28, 28))


def test_name_generator_gives_logits_at_real_positions_only():
    model = create_model("name_gen", n_classes=10, n_categories=3, hidden=8, embed=4, category_embed=4).eval()
    x = torch.tensor([[2, 1, 5, 6, 0], [0, 1, 7, 0, 0]])     # category, begin mark, letters, padding
    assert model(x).shape == (5, 10)
    full, _ = model.forward_sequence(x[:1])
    assert torch.allclose(model(x)[:3], full[0, :3], atol=1e-6)
