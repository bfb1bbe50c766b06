# The BEVFusion-like scenario's world: every scene scanned twice. The student reads the deployed
# sensor, a 16-beam LiDAR (nuScenes' 32-beam field of view with half
# the rings); the teacher reads a 64-beam scan of the same scene (four times the points). Boxes are
# labelled by what the 64-beam scan sees (min_points of its points), so every run of the
# scenario, teacher or student, is trained and scored on the same boxes.
_base_ = ["./bev_world.py"]

deployed_lidar = dict(n_rings=16)
rich_lidar = dict(n_rings=64)
train_dataset = dict(lidar=deployed_lidar, teacher_lidar=rich_lidar)
val_dataset = dict(lidar=deployed_lidar, teacher_lidar=rich_lidar)
