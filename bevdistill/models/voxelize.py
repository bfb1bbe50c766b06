"""Pillar voxelisation in pure PyTorch (what mmcv's compiled ``Voxelization`` does for pillars).

Each in-range point is assigned to the pillar under it; a pillar keeps its first
``max_points`` points in input order (as mmcv's hard voxelisation does) and a sample keeps at
most ``max_pillars`` pillars. Where the cap bites, the densest pillars are kept (ties by
pillar id), so the cut is deterministic and loses the fewest points.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bevdistill._warnings import warn_once
from bevdistill.models.geometry import BEVGrid

POINT_DIMS = 4  # x, y, z, intensity: the columns the pillar encoder reads


def check_points(points: object, name: str = "points") -> None:
    """Raise a clear error unless ``points`` is a float tensor ``[N, >=4]``."""
    if not isinstance(points, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor [N, 5] (x, y, z, intensity, ring), got {type(points).__name__}"
        )
    if points.dim() != 2 or points.shape[1] < POINT_DIMS:
        raise ValueError(
            f"{name} must have shape [N, >=4] (x, y, z, intensity[, ring]), got {tuple(points.shape)}"
        )
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a float tensor [N, 5], got {points.dtype}; call .float() first")


def voxelize_single(
    points: torch.Tensor, grid: BEVGrid, max_points: int, max_pillars: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pillars of one point cloud.

    Returns ``voxels [P, max_points, 4]`` (zero-padded), ``num_points [P]`` and
    ``coors [P, 3]`` = (z, y, x) pillar indices (z is always 0), sorted by pillar id.
    """
    check_points(points)
    pts = points[:, :POINT_DIMS]
    x0, y0, z0, x1, y1, z1 = grid.point_cloud_range
    nx, ny = grid.grid_size
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    # NaN fails every comparison, so non-finite points are dropped here too.
    keep = (x >= x0) & (x < x1) & (y >= y0) & (y < y1) & (z >= z0) & (z < z1)
    pts = pts[keep]
    ix = ((pts[:, 0] - x0) / grid.voxel_size[0]).floor().long().clamp_(0, nx - 1)
    iy = ((pts[:, 1] - y0) / grid.voxel_size[1]).floor().long().clamp_(0, ny - 1)
    pillar_id = iy * nx + ix

    ids, inverse, counts = torch.unique(pillar_id, return_inverse=True, return_counts=True)
    if ids.numel() > max_pillars:
        warn_once(
            f"pillar-cap-{max_pillars}",
            f"a point cloud fills {ids.numel()} pillars, more than max_pillars={max_pillars}; "
            "the sparsest are dropped (raise max_pillars in the config to keep them)",
        )
        densest = torch.argsort(counts, descending=True, stable=True)[:max_pillars]
        kept = densest.sort().values
        remap = torch.full_like(ids, -1)
        remap[kept] = torch.arange(kept.numel(), device=ids.device)
        ids, counts = ids[kept], counts[kept]
        inverse = remap[inverse]
        inside = inverse >= 0
        pts, inverse = pts[inside], inverse[inside]

    # Slot of each point inside its pillar: its rank among the pillar's points, in input order.
    order = torch.argsort(inverse, stable=True)
    sorted_pillar = inverse[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(order.numel(), device=pts.device) - starts[sorted_pillar]
    fits = slot < max_points

    voxels = pts.new_zeros(ids.numel(), max_points, POINT_DIMS)
    voxels[sorted_pillar[fits], slot[fits]] = pts[order[fits]]
    num_points = counts.clamp(max=max_points)
    coors = torch.stack([torch.zeros_like(ids), ids // nx, ids % nx], dim=1)
    return voxels, num_points, coors


class PillarVoxelizer(nn.Module):
    """Batched voxelisation: ``coors`` gain a leading batch index, (batch, z, y, x), as in mmdet3d.

    ``max_pillars`` may be one number or (train, test), as mmdet3d's ``max_voxels``.
    The module has no parameters; it is the ``pts_voxel_layer`` of the detector.
    """

    def __init__(self, grid: BEVGrid, max_points_per_pillar: int = 20,
                 max_pillars: int | Sequence[int] = 30000):
        super().__init__()
        caps = (max_pillars, max_pillars) if isinstance(max_pillars, int) else tuple(max_pillars)
        if len(caps) != 2 or min(caps) < 1 or max_points_per_pillar < 1:
            raise ValueError(
                "max_points_per_pillar must be >= 1 and max_pillars a positive int or a "
                f"(train, test) pair, got {max_points_per_pillar!r} and {max_pillars!r}"
            )
        self.grid = grid
        self.max_points = int(max_points_per_pillar)
        self.max_pillars = (int(caps[0]), int(caps[1]))

    def forward(self, points: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cap = self.max_pillars[0] if self.training else self.max_pillars[1]
        voxels, num_points, coors = [], [], []
        for b, pts in enumerate(points):
            v, n, c = voxelize_single(pts, self.grid, self.max_points, cap)
            voxels.append(v)
            num_points.append(n)
            coors.append(torch.cat([torch.full_like(c[:, :1], b), c], dim=1))
        return torch.cat(voxels), torch.cat(num_points), torch.cat(coors)

    def extra_repr(self) -> str:
        return f"max_points_per_pillar={self.max_points}, max_pillars={self.max_pillars}"
