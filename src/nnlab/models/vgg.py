"""A VGG-style net (Simonyan & Zisserman): stages of 3x3 conv -> batch norm -> ReLU, then a 2x2 max-pool.

Plain stacks without shortcuts, kept as the baseline the residual nets improve on. Batch norm
(absent from the 2014 paper) makes it train at the same learning rates as the others, and the
head is the concat-pool head of ``nnlab.models.resnet`` instead of VGG's three 4096-wide layers,
so any input size works and the parameter count stays small.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnlab.models.registry import Example, images, register
from nnlab.models.resnet import AdaptiveConcatPool2d, ConcatPoolClassifier


@dataclass
class VGGConfig:
    in_channels: int = 3
    stages: tuple[tuple[int, ...], ...] = ((64,), (128,), (256, 256), (512, 512))  # VGG-11's convs, one pool less
    dropout: float = 0.0
    n_classes: int = 10


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv (no bias: the norm has one) -> batch norm -> ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class VGG(ConcatPoolClassifier):
    """Stages of conv_bn_relu, each but the last followed by a 2x2 max-pool; concat-pool head."""

    def __init__(self, config: VGGConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.in_channels
        for index, stage in enumerate(config.stages):
            for width in stage:
                layers.append(conv_bn_relu(c_in, width))
                c_in = width
            if index < len(config.stages) - 1:
                layers.append(nn.MaxPool2d(2))
        self.stem = layers[0]
        self.body = nn.Sequential(*layers[1:])
        self.pool = AdaptiveConcatPool2d()
        self.head_width, self.dropout = config.stages[-1][-1], config.dropout
        self.head = self._make_head(config.n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv stage's map (used by CAM)."""
        return self.body(self.stem(x))

    def layer_groups(self) -> list[nn.Module]:
        """Stem (first conv), body (the other convs), head."""
        return [self.stem, self.body, self.head]


@register("vgg", example=Example(images(), {"in_channels": 1, "stages": ((8,), (16,), (16, 16))}))
def vgg(in_channels: int = 3, n_classes: int = 10,
        stages: tuple[tuple[int, ...], ...] = ((64,), (128,), (256, 256), (512, 512)), dropout: float = 0.0) -> VGG:
    """VGG-style conv net with batch norm; ``stages`` lists each stage's conv widths."""
    return VGG(VGGConfig(in_channels, tuple(tuple(s) for s in stages), dropout, n_classes))
