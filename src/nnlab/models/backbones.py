"""torchvision's ImageNet backbones (resnet18/34/50, densenet121, vgg16) for transfer learning.

Each is wrapped in ``Backbone`` so that it offers the same interface as the nnlab families:
``forward_features`` (the last conv map), ``forward_head``, ``reset_classifier`` and
``layer_groups`` (stem, body, head). ``pretrained`` is None (random init), a path to a ``.pth``
state dict, or ``"torchvision"``: the file of torchvision's default weights entry for ``arch``
in ``$TORCH_HOME/hub/checkpoints/``, downloaded there on first use and checked against the
SHA-256 prefix in its name (``models/weights.py``; offline, a missing file is a
``CheckpointError`` naming the file and its URL). Files are loaded weights-only. With
``in_channels`` other than 3 the first conv is rebuilt, its pretrained filters averaged over
the RGB channels (so a grey image sees the same filters).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from nnlab import files
from nnlab.errors import CheckpointError
from nnlab.models.registry import Classifier, Example, images, register
from nnlab.models.weights import cached_file

if TYPE_CHECKING:
    import torchvision


def weights_url(arch: str) -> str:
    """The URL of torchvision's default ImageNet weights for ``arch``."""
    import torchvision  # here, not at the top: importing it costs 1-2 s (torch._dynamo) in every process
    return torchvision.models.get_model_weights(arch).DEFAULT.url


def weights_file(arch: str, pretrained: str) -> Path:
    """The state-dict file ``pretrained`` means for ``arch``: a path, or torchvision's cached (or downloaded) file."""
    if pretrained == "torchvision":
        return cached_file(weights_url(arch), f"{arch}: pretrained weights", " or pass the file's path")
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{arch}: pretrained weights file {path} not found "
                              f"(torchvision's file for it: {weights_url(arch)})")
    return path


# Old densenet checkpoints name norm.1 what the module now calls norm1 (torchvision's own fix-up).
_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def load_weights(model: nn.Module, arch: str, path: Path) -> None:
    """Load a torchvision state dict from ``path`` into ``model`` (weights only), or a ``CheckpointError``."""
    state = files.load_weights(path, "cpu", "weights file")
    if arch.startswith("densenet"):
        state = {(_DENSENET_KEY.sub(lambda m: m[1] + m[2], key)): value for key, value in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit torchvision {arch}: {str(error).splitlines()[0]}") from None


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs; each new channel gets the RGB filters' mean."""
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight.mean(dim=1, keepdim=True).expand_as(new.weight))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class Backbone(Classifier):
    """A torchvision classifier split into stem, body, a pooling step and a fresh linear ``head``.

    ``pre_logits`` holds what sits between pooling and the last linear layer in the original
    (VGG's two 4096-wide layers), so the pretrained part is kept and only the last layer is new.
    """

    def __init__(self, stem: nn.Module, body: nn.Module, pool: nn.Module, pre_logits: nn.Module,
                 width: int, n_classes: int) -> None:
        super().__init__()
        self.stem, self.body, self.pool, self.pre_logits = stem, body, pool, pre_logits
        self.head = nn.Linear(width, n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional feature map (used by CAM)."""
        return self.body(self.stem(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.pre_logits(self.pool(features)))

    def layer_groups(self) -> list[nn.Module]:
        """Stem (first conv block), body (everything pretrained after it), head (the new last layer)."""
        return [self.stem, nn.ModuleList([self.body, self.pre_logits]), self.head]


def _gap() -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _split_resnet(net: torchvision.models.ResNet, in_channels: int) -> tuple[nn.Module, ...]:
    conv = net.conv1 if in_channels == 3 else _adapt_first_conv(net.conv1, in_channels)
    stem = nn.Sequential(conv, net.bn1, net.relu, net.maxpool)
    body = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
    return stem, body, _gap(), nn.Identity(), net.fc.in_features


def _split_densenet(net: torchvision.models.DenseNet, in_channels: int) -> tuple[nn.Module, ...]:
    features = list(net.features.children())
    if in_channels != 3:
        features[0] = _adapt_first_conv(features[0], in_channels)
    stem = nn.Sequential(*features[:4])  # conv0, norm0, relu0, pool0
    # torchvision applies the final ReLU in forward(), outside `features`: it belongs to the body here.
    body = nn.Sequential(*features[4:], nn.ReLU(inplace=True))
    return stem, body, _gap(), nn.Identity(), net.classifier.in_features


def _split_vgg(net: torchvision.models.VGG, in_channels: int) -> tuple[nn.Module, ...]:
    features = list(net.features.children())
    if in_channels != 3:
        features[0] = _adapt_first_conv(features[0], in_channels)
    stem = nn.Sequential(*features[:2])  # first conv and its ReLU
    pool = nn.Sequential(net.avgpool, nn.Flatten())
    pre_logits = nn.Sequential(*list(net.classifier.children())[:-1])
    return stem, nn.Sequential(*features[2:]), pool, pre_logits, net.classifier[-1].in_features


SPLITS: dict[str, Callable[..., tuple[nn.Module, ...]]] = {
    "resnet18": _split_resnet, "resnet34": _split_resnet, "resnet50": _split_resnet,
    "densenet121": _split_densenet, "vgg16": _split_vgg,
}


def create_backbone(arch: str, n_classes: int = 10, in_channels: int = 3, pretrained: str | None = None) -> Backbone:
    """torchvision's ``arch`` with ImageNet weights from ``pretrained`` (see the module docstring), wrapped."""
    import torchvision
    net = getattr(torchvision.models, arch)(weights=None)
    if pretrained:
        load_weights(net, arch, weights_file(arch, pretrained))
    stem, body, pool, pre_logits, width = SPLITS[arch](net, in_channels)
    return Backbone(stem, body, pool, pre_logits, width, n_classes)


def _register(arch: str, example: Example) -> None:
    def factory(n_classes: int = 10, in_channels: int = 3, pretrained: str | None = None) -> Backbone:
        return create_backbone(arch, n_classes, in_channels, pretrained)

    factory.__doc__ = f"torchvision {arch} (ImageNet weights: a file, or downloaded once), nnlab interface."
    register(arch, example)(factory)


# With their small examples (tests/unit/test_models.py): one grey channel; densenet121 and vgg16 pool
# five times, so they need 32x32 inputs; all but resnet18 take seconds to build on a CPU (heavy).
_register("resnet18", Example(images(), {"in_channels": 1}))
_register("resnet34", Example(images(), {"in_channels": 1}, heavy=True))
_register("resnet50", Example(images(), {"in_channels": 1}, heavy=True))
_register("densenet121", Example(images(32), {"in_channels": 1}, heavy=True))
_register("vgg16", Example(images(32), {"in_channels": 1}, heavy=True))
