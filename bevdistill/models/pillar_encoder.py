"""PointPillars' pillar feature net: a PointNet per pillar (the detector's ``pts_voxel_encoder``).

Every point is decorated with its offsets to the mean of its pillar's points and to the
pillar's centre, passed through linear + BatchNorm + ReLU, and the pillar keeps the max over
its points. The input is mmdet3d's padded ``[P, M, 4]`` layout, but only real points enter
the linear layer and the BatchNorm statistics: the zero padding of short pillars would
otherwise drag the statistics towards the padding value (and cost most of the time).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

from bevdistill.models._layers import BN_EPS, BN_MOMENTUM
from bevdistill.models.geometry import BEVGrid
from bevdistill.models.voxelize import POINT_DIMS


class PFNLayer(nn.Module):
    """Linear + BN + ReLU on every real point, then the max over each pillar's points.

    Points come flat (``[N, F]`` with their pillar index ``[N]``), so no padding is ever
    computed on. A non-final layer returns per-point features concatenated with their
    pillar's max (as PointPillars stacks layers); the final layer returns ``[P, C]``.
    """

    def __init__(self, in_channels: int, out_channels: int, last: bool):
        super().__init__()
        self.last = last
        self.units = out_channels if last else out_channels // 2
        if self.units < 1:
            raise ValueError(f"a non-final PFN layer needs out_channels >= 2, got {out_channels}")
        self.linear = nn.Linear(in_channels, self.units, bias=False)
        self.norm = nn.BatchNorm1d(self.units, eps=BN_EPS, momentum=BN_MOMENTUM)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm cannot estimate statistics from fewer than two points; use the running ones.
        use_batch_stats = self.training and x.shape[0] > 1
        return F.batch_norm(
            x, self.norm.running_mean, self.norm.running_var, self.norm.weight, self.norm.bias,
            training=use_batch_stats, momentum=self.norm.momentum, eps=self.norm.eps,
        )

    def forward(self, feats: torch.Tensor, pillar: torch.Tensor, num_pillars: int) -> torch.Tensor:
        x = torch.relu(self._normalise(self.linear(feats)))
        # ReLU outputs are >= 0, so a zero start never wins the max over a non-empty pillar.
        index = pillar.unsqueeze(1).expand_as(x)
        pooled = x.new_zeros(num_pillars, self.units).scatter_reduce(0, index, x, "amax")
        if self.last:
            return pooled
        return torch.cat([x, pooled[pillar]], dim=1)


@MODELS.register_module()
class PillarFeatureNet(nn.Module):
    """``forward(voxels [P, M, 4], num_points [P], coors [P, 4]) -> [P, C]``, as mmdet3d's.

    ``coors`` are (batch, z, y, x) pillar indices from :class:`PillarVoxelizer`.
    """

    def __init__(
        self,
        voxel_size: Sequence[float],
        point_cloud_range: Sequence[float],
        in_channels: int = POINT_DIMS,
        feat_channels: Sequence[int] = (64,),
        with_cluster_center: bool = True,
        with_voxel_center: bool = True,
    ):
        super().__init__()
        if in_channels != POINT_DIMS:
            raise ValueError(
                f"PillarFeatureNet reads (x, y, z, intensity): in_channels must be {POINT_DIMS}, "
                f"got {in_channels}"
            )
        if not feat_channels:
            raise ValueError("feat_channels must list at least one layer width, e.g. [64]")
        self.grid = BEVGrid.from_config(point_cloud_range, voxel_size)
        self.with_cluster_center = with_cluster_center
        self.with_voxel_center = with_voxel_center
        cin = in_channels + 3 * with_cluster_center + 2 * with_voxel_center
        layers = []
        for i, cout in enumerate(feat_channels):
            last = i == len(feat_channels) - 1
            layer = PFNLayer(cin, int(cout), last)
            layers.append(layer)
            cin = 2 * layer.units  # a non-final layer outputs per-point + pooled features
        self.pfn_layers = nn.ModuleList(layers)
        self.out_channels = layers[-1].units

    def decorate(self, voxels: torch.Tensor, num_points: torch.Tensor, coors: torch.Tensor):
        """Real points ``[N, F]``: (x, y, z, intensity) + offsets to the pillar mean (3) and
        centre (2), and the pillar index ``[N]`` of each."""
        mask = torch.arange(voxels.shape[1], device=voxels.device) < num_points.unsqueeze(1)
        points = voxels[mask]  # row-major: pillar 0's points, then pillar 1's, ...
        pillar = torch.repeat_interleave(torch.arange(voxels.shape[0], device=voxels.device), num_points)
        feats = [points]
        if self.with_cluster_center:
            # Padding is zero, so the sum over all slots is the sum over real points.
            mean = voxels[:, :, :3].sum(dim=1) / num_points.clamp_min(1).to(voxels.dtype).unsqueeze(1)
            feats.append(points[:, :3] - mean[pillar])
        if self.with_voxel_center:
            x0, y0 = self.grid.point_cloud_range[:2]
            vx, vy = self.grid.voxel_size[:2]
            cx = coors[:, 3].to(voxels.dtype) * vx + (x0 + vx / 2)
            cy = coors[:, 2].to(voxels.dtype) * vy + (y0 + vy / 2)
            feats.append(points[:, :2] - torch.stack([cx, cy], dim=1)[pillar])
        return torch.cat(feats, dim=1), pillar

    def forward(self, voxels: torch.Tensor, num_points: torch.Tensor, coors: torch.Tensor) -> torch.Tensor:
        x, pillar = self.decorate(voxels, num_points, coors)
        for layer in self.pfn_layers:
            x = layer(x, pillar, voxels.shape[0])
        return x
