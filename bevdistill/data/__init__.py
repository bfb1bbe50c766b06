"""The BEV world's data: a synthetic LiDAR and camera street world, a nuScenes-format reader, datasets.

Importing this package registers ``SyntheticBEVDataset`` and ``NuScenesBEVDataset`` in
mmengine's DATASETS registry and ``bev_collate`` in its FUNCTIONS registry.
"""

from .camera import CAMERA_NAMES, CameraConfig, CameraRig
from .classes import CLASS_NAMES, LABEL_OF, NUM_CLASSES
from .dataset import (
    DEFAULT_POINT_CLOUD_RANGE,
    NuScenesBEVDataset,
    SyntheticBEVDataset,
    bev_collate,
    split_world_seed,
    world_version_of,
)
from .geometry import count_points_in_boxes, points_in_boxes
from .lidar import LidarConfig, LidarSimulator
from .nuscenes import NuScenesReader, demo_frame_dir, demo_info_path, demo_missing_message
from .pseudo_labels import PseudoLabelledDataset
from .scene import (
    CLUTTER_KINDS,
    SIZE_RANGES,
    WORLD_VERSION,
    Scene,
    SceneConfig,
    custom_scene,
    generate_scene,
)
from .synthetic import simulate_sample
from .transforms import GlobalAugment, flip, rotate_z, scale

__all__ = [
    "CAMERA_NAMES", "CLASS_NAMES", "CameraConfig", "CameraRig", "CLUTTER_KINDS", "DEFAULT_POINT_CLOUD_RANGE", "GlobalAugment", "LABEL_OF",
    "LidarConfig", "LidarSimulator", "NUM_CLASSES", "NuScenesBEVDataset", "NuScenesReader",
    "PseudoLabelledDataset", "SIZE_RANGES", "Scene", "SceneConfig", "SyntheticBEVDataset", "bev_collate",
    "count_points_in_boxes", "custom_scene", "demo_frame_dir", "demo_info_path", "demo_missing_message",
    "flip", "generate_scene", "points_in_boxes", "rotate_z", "scale", "simulate_sample",
    "split_world_seed", "WORLD_VERSION", "world_version_of",
]
