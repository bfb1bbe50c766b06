# The two-sensor scenario distilled: the 64-beam teacher (same network) teaches the 16-beam
# student (bevdistill distill distill_64to16beam). Batches carry both scans; the Distiller
# feeds the teacher its 64-beam view and the student its 16-beam view.
_base_ = ["./distill.py"]

deployed_lidar = dict(n_rings=16)  # as in _base_/two_sensor_world.py
rich_lidar = dict(n_rings=64)
model = dict(
    teacher="{{fileDirname}}/../student.py",
    teacher_ckpt="{{fileDirname}}/../../assets/teacher_64beam.pth",
)
train_dataset = dict(lidar=deployed_lidar, teacher_lidar=rich_lidar)
val_dataset = dict(lidar=deployed_lidar, teacher_lidar=rich_lidar)
