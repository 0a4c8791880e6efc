"""Small convolutional nets for 28x28 grey images (MNIST, Fashion-MNIST) and the like.

Each stage is conv -> max-pool -> batch norm -> ReLU. Pooling before the norm and the
activation is exact for max-pooling (it commutes with a monotone per-channel affine map and
ReLU when the norm's scale is positive, and nearly so otherwise) and it runs the
memory-bound element-wise ops on a quarter of the pixels: on a 2-core CPU this made the
training step 1.4x faster than conv -> norm -> ReLU -> pool (measured in benchmarks/).

``pretrained=PATH`` starts from another cnn's weights: an nnlab checkpoint (a fashion-transfer
run's ``pretrain.pt``, an image run's ``best.pt``) or a bare state dict, loaded weights-only.
The stem and body are taken; the head is new (its classes are not the source's, and the pooled
conv features transfer better than a hidden layer trained for the source's classes: measured in
docs/benchmarks.md), so ``head_hidden`` and ``dropout`` are free to choose. When the source saw other channels than ``in_channels`` (a grey source for RGB
folder images), the first conv's filters are spread over the new channels so that a grey image
given as R = G = B gets exactly the source's response (each channel gets the filter / 3), or,
from RGB to grey, summed. Other image sizes need nothing: the adaptive pool before the head
makes the feature grid ``pool_size`` x ``pool_size`` whatever the input size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nnlab.errors import CheckpointError
from nnlab.files import load_weights
from nnlab.models.registry import Classifier, Example, images, register


@dataclass
class CNNConfig:
    in_channels: int = 1
    widths: tuple[int, ...] = (32, 64, 128)
    stem_kernel: int = 3
    head_hidden: int = 0          # 0: linear head on the pooled features; else one hidden layer
    pool_size: int = 3            # features are max-pooled to pool_size x pool_size before the head
    dropout: float = 0.1
    n_classes: int = 10


def conv_pool_bn(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    """conv (no bias: the norm has one) -> 2x2 max-pool -> batch norm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class FlattenKeepingLayout(torch.autograd.Function):
    """``x.flatten(1)`` whose gradient comes back in ``x``'s memory format: a channels-last map's
    gradient stays channels-last for the ReLU and batch norm backward before it (a plain
    flatten hands them a contiguous one, and their kernels slow down on mixed layouts)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        ctx.channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        return x.flatten(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.reshape(ctx.shape)
        return grad.contiguous(memory_format=torch.channels_last) if ctx.channels_last else grad


class CNN(Classifier):
    """Stages of conv_pool_bn, adaptive max-pool to a small grid, flatten, then the head."""

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        self.stem = conv_pool_bn(config.in_channels, widths[0], config.stem_kernel)
        self.body = nn.Sequential(*[conv_pool_bn(a, b, 3) for a, b in zip(widths[:-1], widths[1:])])
        # Identity for 28x28 inputs (28 -> 14 -> 7 -> 3); makes other sizes work too.
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(config.pool_size), nn.Flatten())
        self.head = self._make_head(config.n_classes)

    def _make_head(self, n_classes: int) -> nn.Sequential:
        c = self.config
        width = c.widths[-1] * c.pool_size ** 2
        if not c.head_hidden:
            return nn.Sequential(nn.Dropout(c.dropout), nn.Linear(width, n_classes))
        return nn.Sequential(nn.Dropout(c.dropout), nn.Linear(width, c.head_hidden, bias=False),
                             nn.BatchNorm1d(c.head_hidden), nn.ReLU(inplace=True), nn.Dropout(c.dropout),
                             nn.Linear(c.head_hidden, n_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional feature map, [N, widths[-1], H/2^k, W/2^k] (used by CAM)."""
        return self.body(self.stem(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        size = self.config.pool_size
        # Training on 28x28 inputs the adaptive pool is the identity: skipping its forward and backward
        # took 2-4% off fashion-cnn's step (benchmarks/fashion_step.py). Evaluation, TorchScript and
        # ONNX keep the pool (the same values; exporters see the graph they always saw).
        if self.training and features.shape[-2:] == (size, size):
            return self.head(self._flatten_keeping_layout(features))
        return self.head(self.pool(features))

    @torch.jit.unused
    def _flatten_keeping_layout(self, features: torch.Tensor) -> torch.Tensor:
        return FlattenKeepingLayout.apply(features)

    def layer_groups(self) -> list[nn.Module]:
        """Stem, body, head: the units for freezing and discriminative learning rates."""
        return [self.stem, self.body, self.head]


def adapt_in_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """First-conv filters ``[out, c, k, k]`` for ``in_channels`` inputs: summed to one channel, or
    repeated and scaled by ``c / in_channels``, so an image whose channels are equal gets the same
    response as the source's (timm's ``adapt_input_conv`` rule)."""
    source = weight.shape[1]
    if source == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    copies = -(-in_channels // source)  # ceil
    return weight.repeat(1, copies, 1, 1)[:, :in_channels] * (source / in_channels)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict in ``path`` (an nnlab checkpoint's ``model`` entry, or a bare state dict),
    loaded weights-only, and the checkpoint's ``model_args`` ({} when it has none)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"pretrained={path}: no such file (a fashion-transfer run's pretrain.pt, "
                              "an image run's best.pt, or a state dict)")
    state = load_weights(path, "cpu")
    weights = state.get("model", state)
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"pretrained={path}: expected a state dict or an nnlab checkpoint")
    args = state.get("model_args") if isinstance(state.get("model_args"), dict) else {}
    return weights, args


def load_pretrained(model: CNN, path: str | Path) -> None:
    """Load the stem and body of ``path`` into ``model`` (see the module docstring), or a
    ``CheckpointError`` saying which weights do not fit and the source's model_args."""
    weights, source_args = read_weights(path)
    own = {key: value for key, value in model.state_dict().items() if not key.startswith("head.")}
    kept = {key: value for key, value in weights.items() if not key.startswith("head.")}
    if "stem.0.weight" in kept:
        kept["stem.0.weight"] = adapt_in_channels(kept["stem.0.weight"], model.config.in_channels)
    problems = ([f"{key} is {list(kept[key].shape)}, this cnn's {list(own[key].shape)}"
                 for key in kept if key in own and kept[key].shape != own[key].shape] +
                [f"missing {key}" for key in own if key not in kept] +
                [f"unexpected {key}" for key in kept if key not in own])
    if problems:
        shown = {k: v for k, v in source_args.items() if k in ("widths", "stem_kernel")}
        hint = f"; it holds a cnn with model_args {shown}: pass the same" if shown else ""
        raise CheckpointError(f"pretrained={path}: weights do not fit this cnn ({problems[0]}"
                              f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}){hint}")
    model.load_state_dict(kept, strict=False)


@register("cnn", example=Example(images()))
def cnn(in_channels: int = 1, n_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128),
        stem_kernel: int = 3, head_hidden: int = 0, pool_size: int = 3, dropout: float = 0.1,
        pretrained: str | None = None) -> CNN:
    """The configurable conv net; recipes pick widths and head; ``pretrained``: a path (module docstring)."""
    model = CNN(CNNConfig(in_channels, tuple(widths), stem_kernel, head_hidden, pool_size, dropout, n_classes))
    if pretrained:
        load_pretrained(model, pretrained)
    return model
