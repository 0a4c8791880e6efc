"""Pre-activation residual networks (He et al., "Identity Mappings in Deep Residual Networks").

A pre-activation block computes ``x + conv(relu(bn(conv(relu(bn(x))))))``: the shortcut is a
clean identity, so gradients reach the stem unchanged, which is what lets these nets train
fast at high learning rates (the DAWNBench/airbench CIFAR-10 nets are of this kind). Where a
stage halves the size or changes the width, the shortcut is a strided 1x1 conv of the
pre-activated input. The head pools the last map two ways, adaptive max and adaptive average,
and concatenates them (fastai's ``AdaptiveConcatPool2d``): the classifier sees both the
strongest and the typical response of each channel, and any input size works.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnlab.models.registry import Classifier, Example, images, register


@dataclass
class ResNetConfig:
    in_channels: int = 3
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks: tuple[int, ...] = (1, 1, 1, 1)   # pre-activation blocks (two 3x3 convs each) per stage
    dropout: float = 0.0
    n_classes: int = 10


class PreActBlock(nn.Module):
    """bn -> relu -> conv(stride) -> bn -> relu -> conv, plus the (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        # The projection reads the pre-activated input, as in the paper's full pre-activation unit.
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut


class AdaptiveConcatPool2d(nn.Module):
    """[N, C, H, W] -> [N, 2C]: adaptive max-pool and average-pool to 1x1, concatenated, flattened."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)


class ConcatPoolClassifier(Classifier):
    """The head side shared by the conv families here: concat pooling, dropout, one linear layer.

    A subclass sets ``pool``, ``head_width`` (its last map's channels), ``dropout`` and
    ``head = self._make_head(n)``, and defines ``forward_features``.
    """

    head_width: int
    dropout: float

    def _make_head(self, n_classes: int) -> nn.Sequential:
        return nn.Sequential(nn.Dropout(self.dropout), nn.Linear(2 * self.head_width, n_classes))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(features))


class ResNet(ConcatPoolClassifier):
    """Stem conv, stages of pre-activation blocks (each after the first halves the size), concat-pool head."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        if len(config.widths) != len(config.blocks):
            raise ValueError(f"widths {config.widths} and blocks {config.blocks} need one entry per stage")
        self.config = config
        widths = config.widths
        self.stem = nn.Conv2d(config.in_channels, widths[0], 3, padding=1, bias=False)
        stages = []
        c_in = widths[0]
        for index, (width, count) in enumerate(zip(widths, config.blocks)):
            blocks = [PreActBlock(c_in if i == 0 else width, width, 2 if index > 0 and i == 0 else 1)
                      for i in range(count)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.Sequential(*stages)
        # Pre-activation blocks end on a conv: one last norm and ReLU before pooling.
        self.final = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True))
        self.pool = AdaptiveConcatPool2d()
        self.head_width, self.dropout = widths[-1], config.dropout
        self.head = self._make_head(config.n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map after its norm and ReLU, [N, widths[-1], H/2^(stages-1), W/2^(stages-1)]."""
        return self.final(self.stages(self.stem(x)))

    def layer_groups(self) -> list[nn.Module]:
        """Stem, body (the stages and the final norm), head."""
        return [self.stem, nn.ModuleList([self.stages, self.final]), self.head]


@register("resnet9", example=Example(images(), {"in_channels": 1, "widths": (8, 16, 16, 32)}))
def resnet9(in_channels: int = 3, n_classes: int = 10, widths: tuple[int, ...] = (64, 128, 256, 512),
            dropout: float = 0.0) -> ResNet:
    """Pre-activation ResNet with one block per stage: 9 convs and a linear head (DAWNBench-style)."""
    return ResNet(ResNetConfig(in_channels, tuple(widths), (1,) * len(widths), dropout, n_classes))


@register("preact_resnet18", example=Example(images(), {"in_channels": 1, "widths": (8, 16, 16, 32)}))
def preact_resnet18(in_channels: int = 3, n_classes: int = 10, widths: tuple[int, ...] = (64, 128, 256, 512),
                    dropout: float = 0.0) -> ResNet:
    """Pre-activation ResNet-18: two blocks per stage (17 convs and a linear head)."""
    return ResNet(ResNetConfig(in_channels, tuple(widths), (2,) * len(widths), dropout, n_classes))
