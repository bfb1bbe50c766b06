"""One synthetic LiDAR sample, end to end: scene -> scan(s) -> boxes with point counts.

A sample can carry two scans of the same scene: the deployed sensor's (``points``, what the
student sees) and a richer sensor's (``teacher_points``, e.g. 64 beams instead of 16). Both
scan one scene, so boxes, labels and geometry agree by construction. The labels are what the
richer setup sees (annotators work from the best sensors a fleet has, as nuScenes' do), so a
box counts as visible by its points in the teacher's scan; the deployed sensor's count is kept
as ``num_points_student`` for analysis.
"""

from __future__ import annotations

from .camera import CameraRig
from .geometry import count_points_in_boxes
from .lidar import LidarConfig, LidarSimulator
from .scene import SceneConfig, generate_scene, scene_rng

_SENSOR_STREAM, _TEACHER_SENSOR_STREAM = 1, 2  # random streams of the two scans' noise


def _simulator(lidar: LidarSimulator | LidarConfig | dict | None) -> LidarSimulator:
    return lidar if isinstance(lidar, LidarSimulator) else LidarSimulator(lidar)


def simulate_sample(
    seed: int,
    index: int,
    scene_config: SceneConfig | dict | None = None,
    lidar: LidarSimulator | LidarConfig | dict | None = None,
    min_points: int = 5,
    teacher_lidar: LidarSimulator | LidarConfig | dict | None = None,
    cameras: CameraRig | None = None,
) -> dict:
    """Sample ``index`` of world ``seed``, as a dict of numpy arrays (the reader's structure).

    Keys: ``points`` float32 [N, 5], ``gt_boxes`` float32 [M, 7], ``gt_labels`` int64 [M],
    ``num_points`` int64 [M] (points of the labelling scan inside each box), ``visible`` bool [M]
    (num_points >= min_points), ``sample_idx``, ``source`` ("synthetic"), ``seed``. With
    ``teacher_lidar`` also ``teacher_points`` (the richer sensor's scan of the same scene, which
    is then the labelling scan) and ``num_points_student``. With ``cameras`` also ``imgs``
    uint8 [6, 3, H, W], the rig's renders of the same scene, and its calibration
    (``cam2img``, ``lidar2cam``, ``cam2ego``, ``lidar2ego``; see :mod:`bevdistill.data.camera`).
    Deterministic: the same arguments give identical arrays.
    """
    if min_points < 0:
        raise ValueError(f"min_points must be >= 0, got {min_points}")
    scene = generate_scene(seed, index, scene_config)
    points = _simulator(lidar).scan(scene, scene_rng(seed, index, _SENSOR_STREAM))
    num_points = count_points_in_boxes(points, scene.boxes)
    sample = {
        "points": points,
        "gt_boxes": scene.boxes,
        "gt_labels": scene.labels,
        "num_points": num_points,
        "visible": num_points >= min_points,
        "sample_idx": int(index),
        "source": "synthetic",
        "seed": int(seed),
    }
    if teacher_lidar is not None:
        rich = _simulator(teacher_lidar).scan(scene, scene_rng(seed, index, _TEACHER_SENSOR_STREAM))
        rich_counts = count_points_in_boxes(rich, scene.boxes)
        sample.update(teacher_points=rich, num_points=rich_counts,
                      visible=rich_counts >= min_points, num_points_student=num_points)
    if cameras is not None:
        sample["imgs"] = cameras.render(scene, seed, index)["imgs"]
        sample.update(cameras.calibration())
    return sample
