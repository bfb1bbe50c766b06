"""SECOND's 2-D BEV backbone and SECONDFPN neck, the ``pts_backbone`` / ``pts_neck`` of BEVFusion.

The backbone returns a TUPLE of scales and the neck a LIST holding one tensor, exactly the
output types of mmdet3d's modules, because feature-capture code must cope with both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from mmengine.registry import MODELS
from torch import nn

from bevdistill.models._layers import bn2d, conv_bn_relu


def _same_length(**lists: Sequence) -> None:
    lengths = {name: len(v) for name, v in lists.items()}
    if len(set(lengths.values())) != 1 or not min(lengths.values()):
        raise ValueError(f"these lists must be non-empty and equally long, one entry per scale: {lengths}")


@MODELS.register_module()
class SECOND(nn.Module):
    """Stages of a strided conv followed by ``layer_nums[i]`` convs; returns every stage's output."""

    def __init__(
        self,
        in_channels: int = 64,
        out_channels: Sequence[int] = (64, 128, 256),
        layer_nums: Sequence[int] = (3, 5, 5),
        layer_strides: Sequence[int] = (2, 2, 2),
    ):
        super().__init__()
        _same_length(out_channels=out_channels, layer_nums=layer_nums, layer_strides=layer_strides)
        if min(layer_strides) < 1 or min(layer_nums) < 0:
            raise ValueError(
                f"layer_strides must be >= 1 and layer_nums >= 0, got {list(layer_strides)} and {list(layer_nums)}"
            )
        self.in_channels = int(in_channels)
        self.out_channels = [int(c) for c in out_channels]
        self.layer_strides = [int(s) for s in layer_strides]
        blocks = []
        cin = self.in_channels
        for cout, num, stride in zip(self.out_channels, layer_nums, self.layer_strides, strict=True):
            layers = [conv_bn_relu(cin, cout, stride=stride)]
            layers += [conv_bn_relu(cout, cout) for _ in range(int(num))]
            blocks.append(nn.Sequential(*layers))
            cin = cout
        self.blocks = nn.ModuleList(blocks)

    @property
    def strides(self) -> list[int]:
        """Stride of each output scale relative to the input map."""
        return [math.prod(self.layer_strides[: i + 1]) for i in range(len(self.layer_strides))]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return tuple(outs)


@MODELS.register_module()
class SECONDFPN(nn.Module):
    """Brings every scale to one stride and concatenates them: ``[tensor [B, sum(out), H', W']]``.

    ``upsample_strides[i] >= 1`` is a transposed conv with that stride; a stride below 1
    (e.g. 0.5) is a strided conv that downsamples by its inverse, as in mmdet3d.
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (128, 128, 256),
        out_channels: Sequence[int] = (256, 256, 256),
        upsample_strides: Sequence[float] = (1, 2, 4),
    ):
        super().__init__()
        _same_length(in_channels=in_channels, out_channels=out_channels, upsample_strides=upsample_strides)
        self.in_channels = [int(c) for c in in_channels]
        self.upsample_strides = [float(s) for s in upsample_strides]
        blocks = []
        for cin, cout, stride in zip(self.in_channels, out_channels, self.upsample_strides, strict=True):
            if stride >= 1:
                k = round(stride)
                if not math.isclose(stride, k):
                    raise ValueError(f"an upsample stride >= 1 must be a whole number, got {stride:g}")
                conv = nn.ConvTranspose2d(cin, int(cout), k, stride=k, bias=False)
            else:
                k = round(1 / stride)
                if stride <= 0 or not math.isclose(1 / stride, k):
                    raise ValueError(f"an upsample stride below 1 must be 1/n (e.g. 0.5), got {stride:g}")
                conv = nn.Conv2d(cin, int(cout), k, stride=k, bias=False)
            blocks.append(nn.Sequential(conv, bn2d(int(cout)), nn.ReLU(inplace=True)))
        self.deblocks = nn.ModuleList(blocks)
        self.out_channels = sum(int(c) for c in out_channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.deblocks):
            raise ValueError(f"SECONDFPN was built for {len(self.deblocks)} scales, got {len(feats)}")
        ups = [block(f) for block, f in zip(self.deblocks, feats, strict=True)]
        shapes = {tuple(u.shape[-2:]) for u in ups}
        if len(shapes) != 1:
            raise ValueError(
                f"the scales reach different sizes {sorted(shapes)} after upsampling by "
                f"{self.upsample_strides}; make the pillar grid divisible by the backbone's total stride"
            )
        return [torch.cat(ups, dim=1)]
