"""The camera branch's 2-D parts: ``img_backbone`` (a small ResNet) and ``img_neck`` (an FPN).

BEVFusion runs a Swin-T and a GeneralizedLSSFPN on 256 x 704 images; these are the same shapes
of module (a backbone returning a TUPLE of scales, a neck merging them into one map) sized for
96 x 48 renders on a CPU. Both take the six cameras as one batch ``[B * 6, C, H, W]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

from bevdistill.models._layers import bn2d, conv_bn_relu


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convs with an identity shortcut."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = conv_bn_relu(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = bn2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(self.conv1(x))))


@MODELS.register_module()
class ImageResNet(nn.Module):
    """A stride-2 stem, then one stage per ``out_channels`` (a stride-2 conv and ``blocks``
    basic blocks). Returns every stage's map, a tuple, like mmdet's ResNet/Swin backbones."""

    def __init__(self, in_channels: int = 3, stem_channels: int = 16,
                 out_channels: Sequence[int] = (32, 64), blocks: int = 1):
        super().__init__()
        if not out_channels or min(out_channels) < 1 or blocks < 0:
            raise ValueError(f"out_channels must be a non-empty list of positive widths and "
                             f"blocks >= 0, got {list(out_channels)} and {blocks}")
        self.out_channels = [int(c) for c in out_channels]
        self.stem = conv_bn_relu(in_channels, stem_channels, stride=2)
        self.stages = nn.ModuleList()
        cin = stem_channels
        for cout in self.out_channels:
            self.stages.append(nn.Sequential(conv_bn_relu(cin, cout, stride=2),
                                             *(BasicBlock(cout) for _ in range(blocks))))
            cin = cout

    @property
    def strides(self) -> list[int]:
        """Each output's stride in image pixels."""
        return [2 ** (i + 2) for i in range(len(self.out_channels))]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return tuple(outs)


@MODELS.register_module()
class ImageFPN(nn.Module):
    """Every scale to ``out_channels`` by a 1x1 conv, upsampled to the finest one, summed and
    smoothed by a 3x3 conv: a list with one map at the finest stride, the depth net's input."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 64):
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        self.out_channels = int(out_channels)
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in self.in_channels)
        self.smooth = conv_bn_relu(out_channels, out_channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.lateral):
            raise ValueError(f"img_neck expects {len(self.lateral)} scales (in_channels="
                             f"{self.in_channels}), got {len(feats)}")
        size = feats[0].shape[-2:]
        merged = sum(F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False)
                     if f.shape[-2:] != size else lat(f)
                     for lat, f in zip(self.lateral, feats, strict=True))
        return [self.smooth(merged)]
