"""A tiny BEV detector with BEVFusion's LiDAR-branch layout, for checkers, tests and demos.

It is small enough to run hundreds of times in a test suite, yet has every trait the
feature capture must cope with: a ``pts_voxel_encoder`` that is built but never called (as
in BEVFusion), a dense ``pts_middle_encoder`` output, a ``pts_backbone`` that returns a
tuple of scales, a ``pts_neck`` that returns a list with one tensor, and a
``bbox_head.heatmap_head``. It follows the mmengine model API: ``loss``, ``predict`` and
``forward(inputs, data_samples, mode)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bevdistill.example_inputs import random_points

POINT_FEATURES = 5  # x, y, z, intensity, ring: nuScenes' layout


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PillarScatter(nn.Module):
    """Averages point features per BEV cell into a dense ``[B, C, H, W]`` map (plus a count channel)."""

    def __init__(self, grid: tuple[int, int], point_cloud_range: Sequence[float], in_channels: int = 4):
        super().__init__()
        self.grid = tuple(grid)
        self.range = tuple(float(v) for v in point_cloud_range)
        self.in_channels = in_channels
        self.out_channels = in_channels + 1

    def forward(self, points: Sequence[torch.Tensor]) -> torch.Tensor:
        h, w = self.grid
        x0, y0, _, x1, y1, _ = self.range
        maps = []
        for pts in points:
            feats = pts[:, : self.in_channels]
            ix = ((pts[:, 0] - x0) / (x1 - x0) * w).long()
            iy = ((pts[:, 1] - y0) / (y1 - y0) * h).long()
            keep = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
            cell = iy[keep] * w + ix[keep]
            summed = feats.new_zeros(h * w, self.in_channels).index_add_(0, cell, feats[keep])
            count = feats.new_zeros(h * w).index_add_(0, cell, torch.ones_like(cell, dtype=feats.dtype))
            mean = summed / count.clamp_min(1).unsqueeze(1)
            bev = torch.cat([mean, torch.log1p(count).unsqueeze(1)], dim=1)
            maps.append(bev.t().reshape(self.out_channels, h, w))
        return torch.stack(maps)


class TinyBackbone(nn.Module):
    """Two stride-2 stages, returned as a tuple of scales like mmdet3d's SECOND."""

    def __init__(self, in_channels: int, channels: Sequence[int]):
        super().__init__()
        self.stages = nn.ModuleList()
        for cout in channels:
            self.stages.append(nn.Sequential(_conv(in_channels, cout, stride=1), _conv(cout, cout)))
            in_channels = cout

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            outs.append(x)
        return tuple(outs)


class TinyNeck(nn.Module):
    """Upsamples every scale to the first and concatenates: a list with one tensor, like SECONDFPN."""

    def __init__(self, channels: Sequence[int], out_channels: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels // len(channels), 1) for c in channels)
        self.out_channels = out_channels // len(channels) * len(channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        size = feats[0].shape[-2:]
        ups = [F.interpolate(lat(f), size=size, mode="nearest") for lat, f in zip(self.lateral, feats, strict=True)]
        return [torch.cat(ups, dim=1)]


class TinyHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.heatmap_head = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.reg_head = nn.Conv2d(in_channels, 2, 3, padding=1)
        nn.init.constant_(self.heatmap_head.bias, -2.19)  # prior 0.1, as CenterPoint

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"heatmap": self.heatmap_head(x), "reg": self.reg_head(x)}


class TinyBEVDetector(nn.Module):
    """Points -> pillars -> BEV backbone -> neck -> heatmap head. Inputs: ``{'points': [N_i x 5, ...]}``."""

    def __init__(
        self,
        channels: Sequence[int] = (16, 32),
        neck_channels: int = 32,
        grid: tuple[int, int] = (32, 32),
        point_cloud_range: Sequence[float] = (-25.6, -25.6, -5.0, 25.6, 25.6, 3.0),
        num_classes: int = 3,
    ):
        super().__init__()
        self.grid = tuple(grid)
        self.num_classes = num_classes
        # Built but never called, as BEVFusion builds pts_voxel_encoder and never uses it.
        self.pts_voxel_encoder = nn.Linear(POINT_FEATURES, 8)
        self.pts_middle_encoder = PillarScatter(self.grid, point_cloud_range)
        self.pts_backbone = TinyBackbone(self.pts_middle_encoder.out_channels, channels)
        self.pts_neck = TinyNeck(channels, neck_channels)
        self.bbox_head = TinyHead(self.pts_neck.out_channels, num_classes)

    def extract_feat(self, batch_inputs_dict: dict) -> torch.Tensor:
        bev = self.pts_middle_encoder(batch_inputs_dict["points"])
        return self.pts_neck(self.pts_backbone(bev))[0]

    def _forward(self, batch_inputs_dict: dict) -> dict[str, torch.Tensor]:
        return self.bbox_head(self.extract_feat(batch_inputs_dict))

    def loss(self, batch_inputs_dict: dict, batch_data_samples: Sequence[dict] | None = None) -> dict:
        """Focal-style loss on the class heatmap; targets are ``sample['gt_heatmap']`` ([K, H, W])."""
        out = self._forward(batch_inputs_dict)
        if batch_data_samples is None:
            raise ValueError("TinyBEVDetector.loss needs batch_data_samples with a 'gt_heatmap' each")
        target = torch.stack([s["gt_heatmap"] for s in batch_data_samples]).to(out["heatmap"])
        prob = out["heatmap"].sigmoid()
        bce = F.binary_cross_entropy_with_logits(out["heatmap"], target, reduction="none")
        focal = (bce * (prob - target).abs().pow(2)).sum() / target.sum().clamp_min(1.0)
        return {"loss_heatmap": focal}

    def predict(self, batch_inputs_dict: dict, batch_data_samples: Sequence[dict] | None = None) -> list[dict]:
        out = self._forward(batch_inputs_dict)
        return [{"heatmap": h.sigmoid()} for h in out["heatmap"]]

    def forward(self, batch_inputs_dict: dict, batch_data_samples=None, mode: str = "tensor"):
        if mode == "loss":
            return self.loss(batch_inputs_dict, batch_data_samples)
        if mode == "predict":
            return self.predict(batch_inputs_dict, batch_data_samples)
        if mode == "tensor":
            return self._forward(batch_inputs_dict)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")


def random_batch(
    batch_size: int = 2,
    num_points: int = 2000,
    num_classes: int = 3,
    grid: tuple[int, int] = (32, 32),
    extent: float = 25.6,
    seed: int = 0,
) -> tuple[dict, list[dict]]:
    """Random points in the grid's range (:func:`bevdistill.example_inputs.random_points`) plus
    random sparse heatmap targets, for tests and demos."""
    points = random_points((-extent, -extent, -3.0, extent, extent, 1.0), batch_size, num_points,
                           seed)
    g = torch.Generator().manual_seed(seed + 1)
    samples = []
    for _ in range(batch_size):
        heatmap = torch.zeros(num_classes, *grid)
        idx = torch.randint(0, grid[0] * grid[1], (6,), generator=g)
        cls = torch.randint(0, num_classes, (6,), generator=g)
        heatmap.view(num_classes, -1)[cls, idx] = 1.0
        samples.append({"gt_heatmap": heatmap})
    return {"points": points}, samples
