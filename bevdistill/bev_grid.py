"""Aligning BEV maps of different resolutions that cover the same world area.

Teacher and student grids span the same point-cloud range, so cell (i, j) of an H x W map
covers the same metres as the matching fraction of an H' x W' map. Resizing with area
averaging (down) or bilinear interpolation with ``align_corners=False`` (up) keeps cell
centres at the same world coordinates, in either direction and for non-square grids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_bev(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a ``[B, C, H, W]`` BEV map to ``size`` = (H', W') without shifting it in the world.

    Shrinking a dimension averages the cells it merges (as the AT paper pools the larger map);
    growing one interpolates bilinearly between cell centres.
    """
    if x.dim() != 4:
        raise ValueError(f"resize_bev expects a [B, C, H, W] map, got shape {tuple(x.shape)}")
    size = (int(size[0]), int(size[1]))
    h, w = x.shape[-2:]
    if (h, w) == size:
        return x
    if size[0] <= h and size[1] <= w:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def cell_centres(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised ``[-1, 1]`` (x, y) coordinates of every cell centre, as ``grid_sample`` reads them.

    Returns ``[H*W, 2]`` in row-major order, so row ``k`` is cell ``(k // W, k % W)``.
    """
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width * 2 - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)


def sample_cells(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Read a ``[B, C, H, W]`` map at normalised coordinates ``[B, K, 2]``; returns ``[B, K, C]``.

    Bilinear and ``align_corners=False``, so the same coordinates address the same world point
    on grids of any resolution.
    """
    grid = coords.to(x.dtype).unsqueeze(2)  # [B, K, 1, 2]
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.squeeze(-1).transpose(1, 2)


def gather_cells(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Read a ``[B, C, H, W]`` map at flat cell indices ``[B, K]`` (row-major); returns ``[B, K, C]``.

    What :func:`sample_cells` gives at those cells' centres on this map's own grid, without
    interpolation: cheaper forward and backward than ``grid_sample`` where the grids agree.
    """
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    return flat.gather(2, index.unsqueeze(1).expand(b, c, index.shape[1])).transpose(1, 2)

