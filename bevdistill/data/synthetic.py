"""One synthetic LiDAR sample, end to end: scene -> scan -> boxes with point counts."""

from __future__ import annotations

from .geometry import count_points_in_boxes
from .lidar import LidarConfig, LidarSimulator
from .scene import SceneConfig, generate_scene, scene_rng


def simulate_sample(
    seed: int,
    index: int,
    scene_config: SceneConfig | dict | None = None,
    lidar: LidarSimulator | LidarConfig | dict | None = None,
    min_points: int = 5,
) -> dict:
    """Sample ``index`` of world ``seed``, as a dict of numpy arrays (the reader's structure).

    Keys: ``points`` float32 [N, 5], ``gt_boxes`` float32 [M, 7], ``gt_labels`` int64 [M],
    ``num_points`` int64 [M] (points of the full scan inside each box), ``visible`` bool [M]
    (num_points >= min_points), ``sample_idx``, ``source`` ("synthetic"), ``seed``.
    Deterministic: the same arguments give identical arrays.
    """
    if min_points < 0:
        raise ValueError(f"min_points must be >= 0, got {min_points}")
    simulator = lidar if isinstance(lidar, LidarSimulator) else LidarSimulator(lidar)
    scene = generate_scene(seed, index, scene_config)
    points = simulator.scan(scene, scene_rng(seed, index, 1))
    num_points = count_points_in_boxes(points, scene.boxes)
    return {
        "points": points,
        "gt_boxes": scene.boxes,
        "gt_labels": scene.labels,
        "num_points": num_points,
        "visible": num_points >= min_points,
        "sample_idx": int(index),
        "source": "synthetic",
        "seed": int(seed),
    }

