"""The one maker of example inputs: random LiDAR points inside a model's point-cloud range.

The dry forward that reads channel sizes, the exercises' checkers and the tests all need a
batch a detector accepts, not a labelled scene (``bevdistill.data`` simulates those).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NUM_RINGS = 32  # nuScenes' top LiDAR
MAX_INTENSITY = 255.0


def random_points(
    pc_range: Sequence[float], batch_size: int = 2, num_points: int = 2048, seed: int = 0,
    point_dim: int = 5,
) -> list[torch.Tensor]:
    """``batch_size`` clouds of uniform points in ``pc_range`` (x0, y0, z0, x1, y1, z1), with
    nuScenes-like intensity and ring: ``(x, y, z, intensity, ring)`` cut or zero-padded to
    ``point_dim`` features."""
    if len(pc_range) != 6:
        raise ValueError(f"pc_range must be (x0, y0, z0, x1, y1, z1), got {list(pc_range)}")
    low = torch.tensor([float(v) for v in pc_range[:3]])
    high = torch.tensor([float(v) for v in pc_range[3:]])
    gen = torch.Generator().manual_seed(seed)
    points = []
    for _ in range(batch_size):
        xyz = low + torch.rand(num_points, 3, generator=gen) * (high - low)
        intensity = torch.rand(num_points, 1, generator=gen) * MAX_INTENSITY
        ring = torch.randint(0, NUM_RINGS, (num_points, 1), generator=gen).float()
        cloud = torch.cat([xyz, intensity, ring], dim=1)[:, :point_dim]
        pad = point_dim - cloud.shape[1]
        points.append(torch.cat([cloud, cloud.new_zeros(num_points, pad)], 1) if pad > 0 else cloud)
    return points


def example_inputs_for(
    model: nn.Module, batch_size: int = 2, num_points: int = 2048, seed: int = 0
) -> dict:
    """A small random batch ``{'points': [Tensor[N, 5], ...]}`` on the model's device.

    Uses ``model.example_inputs()`` when the model defines it; otherwise uniform points inside
    the model's ``point_cloud_range`` (x0, y0, z0, x1, y1, z1), read from
    ``model.point_cloud_range`` or ``model.grid.point_cloud_range`` (PillarBEVDetector).
    """
    make = getattr(model, "example_inputs", None)
    if callable(make):
        return make()
    pc_range = getattr(model, "point_cloud_range", None)
    if pc_range is None:
        pc_range = getattr(getattr(model, "grid", None), "point_cloud_range", None)
    if pc_range is None or len(pc_range) != 6:
        raise ValueError(
            f"cannot make example inputs for {type(model).__name__}: it has neither an "
            "example_inputs() method nor a point_cloud_range (x0, y0, z0, x1, y1, z1). Give the "
            "Distiller driver=dict(example_inputs={'points': [Tensor[N, 5], ...]})."
        )
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    points = random_points(pc_range, batch_size, num_points, seed)
    return {"points": [p.to(device) for p in points]}
