"""The BEV grid a pillar detector works on: one source of truth for range, pillar size and strides.

BEVFusion's configs repeat ``point_cloud_range`` and ``voxel_size`` in the voxeliser, the
encoder, the scatter's ``output_shape`` and the head's train/test settings; a typo in one
copy silently misplaces every box. Here the detector builds one :class:`BEVGrid` and hands it
to every part, so they cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_TOL = 1e-4  # relative tolerance when checking that a range is a whole number of pillars


@dataclass(frozen=True)
class BEVGrid:
    """Pillars of ``voxel_size`` tiling ``point_cloud_range`` = (x0, y0, z0, x1, y1, z1), metres.

    BEV maps are ``[B, C, H, W]`` with rows along y (row 0 at y0) and columns along x (column 0
    at x0), as mmdet3d's ``PointPillarsScatter`` lays them out.
    """

    point_cloud_range: tuple[float, float, float, float, float, float]
    voxel_size: tuple[float, float, float]

    @classmethod
    def from_config(cls, point_cloud_range: Sequence[float], voxel_size: Sequence[float]) -> BEVGrid:
        """Validate and build; ``voxel_size`` may give (x, y) only, the pillar then spans all of z."""
        pcr = tuple(float(v) for v in point_cloud_range)
        if len(pcr) != 6:
            raise ValueError(
                f"point_cloud_range must have 6 numbers (x0, y0, z0, x1, y1, z1), got {list(pcr)}"
            )
        x0, y0, z0, x1, y1, z1 = pcr
        if not (x1 > x0 and y1 > y0 and z1 > z0):
            raise ValueError(
                f"point_cloud_range {list(pcr)} must have x1 > x0, y1 > y0 and z1 > z0"
            )
        vs = tuple(float(v) for v in voxel_size)
        if len(vs) == 2:
            vs = (vs[0], vs[1], z1 - z0)
        if len(vs) != 3 or min(vs) <= 0:
            raise ValueError(
                f"voxel_size must be 2 or 3 positive numbers (pillar x, y[, z] in metres), got {list(vs)}"
            )
        for axis, extent, size in (("x", x1 - x0, vs[0]), ("y", y1 - y0, vs[1])):
            cells = extent / size
            if abs(cells - round(cells)) > _TOL * max(cells, 1.0):
                raise ValueError(
                    f"the {axis} extent {extent:g} m is not a whole number of {size:g} m pillars "
                    f"({cells:.4f}); change point_cloud_range or voxel_size so they divide"
                )
        if abs(vs[2] - (z1 - z0)) > _TOL * (z1 - z0):
            raise ValueError(
                f"a pillar must span the whole z range: voxel_size[2] = {vs[2]:g} but "
                f"z1 - z0 = {z1 - z0:g}; set voxel_size[2] to {z1 - z0:g} or give only (x, y)"
            )
        return cls(pcr, vs)  # type: ignore[arg-type]

    @property
    def grid_size(self) -> tuple[int, int]:
        """Pillars along (x, y), i.e. (W, H)."""
        x0, y0, _, x1, y1, _ = self.point_cloud_range
        return round((x1 - x0) / self.voxel_size[0]), round((y1 - y0) / self.voxel_size[1])

    @property
    def bev_shape(self) -> tuple[int, int]:
        """(H, W) of the dense pillar map the scatter produces."""
        nx, ny = self.grid_size
        return ny, nx

    def feature_shape(self, out_size_factor: int) -> tuple[int, int]:
        """(H, W) of a map ``out_size_factor`` times coarser than the pillar grid."""
        h, w = self.bev_shape
        if out_size_factor < 1 or h % out_size_factor or w % out_size_factor:
            raise ValueError(
                f"the pillar grid {h}x{w} is not divisible by the output stride {out_size_factor}; "
                "pick a point_cloud_range / voxel_size whose grid is a multiple of the stride"
            )
        return h // out_size_factor, w // out_size_factor

    def cell_size(self, out_size_factor: int) -> tuple[float, float]:
        """Metres per cell (x, y) of a map ``out_size_factor`` times coarser than the pillars."""
        return self.voxel_size[0] * out_size_factor, self.voxel_size[1] * out_size_factor


def as_int_stride(value: float, what: str) -> int:
    """A stride given as a float (SECONDFPN allows 0.5) that must come out a whole number."""
    if value <= 0 or not math.isclose(value, round(value), rel_tol=1e-6):
        raise ValueError(f"{what} must be a positive whole number, got {value:g}")
    return round(value)
