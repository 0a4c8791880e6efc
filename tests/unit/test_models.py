"""Every registered model gets forward/backward and interface tests for free (timm's pattern).

Each registration declares a small example, ``@register(name, example=Example(...))``: the arguments
of a small instance, a function giving n inputs, and whether it is a classifier and heavy. The tests
read everything from it, so they keep no list of models, and a model without one fails below.
"""
import pytest
import torch
from torch import nn

from nnlab.errors import ConfigError
from nnlab.models import create_model, list_models, model_example, registry


def without_example() -> list[str]:
    """The registered models that declare no example: the tests below could not run them."""
    missing = []
    for name in list_models():
        try:
            model_example(name)
        except LookupError:
            missing.append(name)
    return missing


def models(classifiers: bool = True, heavy: bool = True) -> list:
    """The registered models whose examples are classifiers (or not); a heavy one (a full-size ImageNet
    backbone, seconds to build on a CPU) is a slow test, or left out when ``heavy`` is False."""
    chosen = []
    for name in sorted(set(list_models()) - set(without_example())):
        example = model_example(name)
        if example.classifier == classifiers and (heavy or not example.heavy):
            chosen.append(pytest.param(name, marks=pytest.mark.slow) if example.heavy else name)
    return chosen


def example_model(name: str, **kwargs: object) -> tuple[nn.Module, torch.Tensor]:
    """The small instance of ``name`` its example describes (``kwargs`` added) and a batch of 4 inputs."""
    example = model_example(name)
    return create_model(name, **example.args, **kwargs), example.inputs(4)


def test_every_registered_model_declares_a_small_example():
    assert without_example() == [], "register these with example=Example(...) (nnlab.models.registry)"


def test_a_model_registered_without_an_example_is_named(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    registry.register("toy_without_example")(lambda n_classes=2: nn.Linear(3, n_classes))
    assert without_example() == ["toy_without_example"]
    with pytest.raises(LookupError, match=r"'toy_without_example' was registered without an example"):
        model_example("toy_without_example")
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        model_example("nope")


# Their backward pass is the costliest of all; resnet18 takes the same wrapper's path through it.
@pytest.mark.parametrize("name", models(heavy=False))
def test_model_forward_backward_gives_logits_and_gradients(name):
    model, x = example_model(name, n_classes=7)
    logits = model(x)
    assert logits.shape == (4, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", models(classifiers=False))  # the encoder-decoder: see also test_translate.py
def test_other_models_forward_backward_reaches_every_parameter(name):
    model, x = example_model(name)
    out = model(x)
    assert len(out) == 4 and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", models())
def test_model_features_head_split_equals_forward(name):
    model, x = example_model(name, n_classes=5)
    model.eval()
    assert torch.allclose(model.forward_head(model.forward_features(x[:3])), model(x[:3]))


@pytest.mark.parametrize("name", models())
def test_reset_classifier_changes_output_width_only(name):
    model, x = example_model(name, n_classes=10)
    # A head is "head.*", or "members.i.head.*" for an ensemble's members.
    before = {k: v.clone() for k, v in model.named_parameters() if "head" not in k.split(".")}
    model.reset_classifier(3)
    assert model.eval()(x[:2]).shape == (2, 3)
    after = dict(model.named_parameters())
    # A model that is all head (logistic regression) has nothing else to keep.
    assert before or all(k.startswith("head") for k in after)
    assert all(torch.equal(v, after[k]) for k, v in before.items())


@pytest.mark.parametrize("name", models())
def test_layer_groups_cover_every_parameter_once(name):
    model, _ = example_model(name, n_classes=10)
    ids = [id(p) for g in model.layer_groups() for p in g.parameters()]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_cnn_accepts_other_input_sizes():
    model = create_model("cnn", n_classes=4, in_channels=3).eval()
    assert model(torch.randn(2, 3, 40, 36)).shape == (2, 4)


@pytest.mark.parametrize("channels_last", [True, False])
def test_cnn_head_skips_the_identity_pool_with_the_same_outputs_and_gradients(channels_last):
    """Training on 28x28 inputs the adaptive pool before the head is the identity and is skipped: the logits
    and every gradient are those of the pooled path, and the features' gradient keeps their memory format."""
    torch.manual_seed(0)
    model = create_model("cnn", n_classes=4, widths=(8, 16, 32), head_hidden=16, dropout=0.0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(3, 1, 28, 28).contiguous(memory_format=fmt)
    results = []
    for head in (model.forward_head, lambda f: model.head(model.pool(f))):  # skipped, then pooled
        model.zero_grad()
        features, seen = model.forward_features(x), []
        features.register_hook(seen.append)  # the gradient as the layers before receive it
        logits = head(features)
        logits.square().sum().backward()
        results.append((logits, seen[0], [p.grad.clone() for p in model.parameters()]))
    (skipped, grad, params), (pooled, pooled_grad, pooled_params) = results
    assert torch.equal(skipped, pooled) and torch.equal(grad, pooled_grad)
    assert all(torch.equal(a, b) for a, b in zip(params, pooled_params))
    assert grad.is_contiguous(memory_format=fmt)


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
