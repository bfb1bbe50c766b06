"""Cheap stand-in scans for model tests (NOT the synthetic LiDAR world of bevdistill.data).

A scan has nuScenes' size and layout: ground rings of a 32-beam LiDAR 1.84 m above the road
(about 1,000 azimuth steps, up to 70 m), points filling a few labelled boxes, and clutter
blobs. It needs no ray casting, so a batch costs milliseconds, and it is deterministic per seed.
"""

from __future__ import annotations

import math

import torch

LIDAR_HEIGHT = 1.84
# Typical (l, w, h) in metres for car, pedestrian, cyclist.
CLASS_SIZES = torch.tensor([[4.5, 1.9, 1.6], [0.7, 0.7, 1.75], [1.8, 0.7, 1.7]])


def _ground_rings(g: torch.Generator, beams: int, steps: int, max_range: float) -> torch.Tensor:
    elev = torch.deg2rad(torch.linspace(10.0, -30.0, beams))
    az = torch.arange(steps) * (2 * math.pi / steps)
    down = elev < 0
    ring = torch.arange(beams)[down]
    r = LIDAR_HEIGHT / torch.tan(-elev[down])
    keep = r < max_range
    ring, r = ring[keep], r[keep]
    rr = r.view(-1, 1) * (1 + 0.01 * torch.randn(len(r), steps, generator=g))
    x, y = rr * az.cos(), rr * az.sin()
    z = torch.full_like(x, -LIDAR_HEIGHT) + 0.03 * torch.randn(x.shape, generator=g)
    intensity = torch.rand(x.shape, generator=g) * 20
    rings = ring.view(-1, 1).expand_as(x).float()
    return torch.stack([x, y, z, intensity, rings], dim=-1).reshape(-1, 5)


def _fill_box(g: torch.Generator, box: torch.Tensor, n: int) -> torch.Tensor:
    local = (torch.rand(n, 3, generator=g) - 0.5) * box[3:6]
    c, s = math.cos(box[6]), math.sin(box[6])
    x = box[0] + local[:, 0] * c - local[:, 1] * s
    y = box[1] + local[:, 0] * s + local[:, 1] * c
    z = box[2] + local[:, 2]
    intensity = 30 + 50 * torch.rand(n, generator=g)
    ring = torch.randint(0, 32, (n,), generator=g).float()
    return torch.stack([x, y, z, intensity, ring], dim=1)


def toy_scene(
    seed: int,
    num_objects: int = 12,
    extent: float = 30.0,
    beams: int = 32,
    azimuth_steps: int = 1084,
    max_range: float = 70.0,
    num_classes: int = 3,
) -> tuple[torch.Tensor, dict]:
    """One scan ``[N, 5]`` and its sample dict (``gt_boxes``, ``gt_labels``, ``num_points``, ``visible``).

    Objects are placed at least 5 m apart within ``extent`` metres of the ego.
    """
    g = torch.Generator().manual_seed(seed)
    parts = [_ground_rings(g, beams, azimuth_steps, max_range)]
    boxes, labels = [], []
    tries = 0
    while len(boxes) < num_objects and tries < 50 * num_objects:
        tries += 1
        xy = (torch.rand(2, generator=g) * 2 - 1) * extent
        if xy.norm() < 3 or any((xy - b[:2]).norm() < 5 for b in boxes):
            continue
        label = int(torch.randint(0, num_classes, (1,), generator=g))
        size = CLASS_SIZES[label % len(CLASS_SIZES)] * (0.9 + 0.2 * torch.rand(3, generator=g))
        yaw = (torch.rand(1, generator=g) * 2 - 1) * math.pi
        z = -LIDAR_HEIGHT + size[2] / 2
        boxes.append(torch.cat([xy, z.view(1), size, yaw]))
        labels.append(label)
    num_points = []
    for box in boxes:
        n = max(8, int(4000 * float(box[3] * box[5]) / float(box[:2].norm()) ** 1.5))
        parts.append(_fill_box(g, box, n))
        num_points.append(n)
    for _ in range(10):  # clutter: unlabelled blobs (poles, bushes)
        centre = (torch.rand(2, generator=g) * 2 - 1) * extent
        blob = centre + 0.4 * torch.randn(150, 2, generator=g)
        z = -LIDAR_HEIGHT + 2.0 * torch.rand(150, 1, generator=g)
        rest = torch.cat([torch.rand(150, 1, generator=g) * 40, torch.zeros(150, 1)], dim=1)
        parts.append(torch.cat([blob, z, rest], dim=1))
    points = torch.cat(parts).float()
    gt_boxes = torch.stack(boxes).float() if boxes else torch.zeros(0, 7)
    sample = {
        "gt_boxes": gt_boxes,
        "gt_labels": torch.tensor(labels, dtype=torch.long),
        "num_points": torch.tensor(num_points, dtype=torch.long),
        "visible": torch.ones(len(boxes), dtype=torch.bool),
        "sample_idx": seed, "source": "toy", "seed": seed,
    }
    return points, sample


def toy_batch(batch_size: int = 4, seed: int = 0, **kwargs) -> tuple[dict, list[dict]]:
    """``(inputs, data_samples)`` in the layout ``bevdistill.data.bev_collate`` produces."""
    scenes = [toy_scene(seed * 1000 + i, **kwargs) for i in range(batch_size)]
    return {"points": [p for p, _ in scenes]}, [s for _, s in scenes]
