"""PointPillars' scatter: pillar features back to their cells of a dense BEV map.

This is the detector's ``pts_middle_encoder``; its output, ``[B, C, H, W]``, is the first
dense BEV feature map and a distillation hook point.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.registry import MODELS
from torch import nn


@MODELS.register_module()
class PointPillarsScatter(nn.Module):
    """``forward(voxel_features [P, C], coors [P, 4] = (b, z, y, x), batch_size) -> [B, C, H, W]``.

    Cells without a pillar stay zero. ``output_shape`` is (H, W) = (pillars along y, along x).
    """

    def __init__(self, in_channels: int, output_shape: Sequence[int]):
        super().__init__()
        if len(output_shape) != 2 or min(output_shape) < 1:
            raise ValueError(f"output_shape must be (H, W) of the pillar grid, got {output_shape!r}")
        self.in_channels = int(in_channels)
        self.out_channels = self.in_channels
        self.output_shape = (int(output_shape[0]), int(output_shape[1]))

    def forward(self, voxel_features: torch.Tensor, coors: torch.Tensor, batch_size: int) -> torch.Tensor:
        h, w = self.output_shape
        if voxel_features.dim() != 2 or voxel_features.shape[1] != self.in_channels:
            raise ValueError(
                f"PointPillarsScatter expects pillar features [P, {self.in_channels}], "
                f"got {tuple(voxel_features.shape)}"
            )
        if coors.numel() and (
            int(coors[:, 2].max()) >= h or int(coors[:, 3].max()) >= w or int(coors[:, 0].max()) >= batch_size
        ):
            raise ValueError(
                f"pillar coordinates exceed the {batch_size} x {h} x {w} canvas: the voxeliser and "
                "the scatter were built for different grids or batch sizes"
            )
        canvas = voxel_features.new_zeros(batch_size, self.in_channels, h * w)
        # Written straight into the channels-first layout: no permuted copy of the whole map.
        canvas[coors[:, 0], :, coors[:, 2] * w + coors[:, 3]] = voxel_features
        return canvas.view(batch_size, self.in_channels, h, w)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, output_shape={self.output_shape}"
