# The fusion teacher a CPU can train: the student's network plus BEVFusion's camera branch
# (configs/student_fusion.py), reading the deployed 16-beam scan and six camera images of every
# scene (bevdistill train teacher train_fusion_16beam). Its LiDAR-only twin is
# train_student_16beam: the same LiDAR, network (minus the camera modules), data and schedule.
_base_ = ["../student_fusion.py", "./_base_/two_sensor_world.py"]

role = "teacher"
train_dataset = dict(point_cloud_range={{_base_.point_cloud_range}}, cameras=True)
val_dataset = dict(point_cloud_range={{_base_.point_cloud_range}}, cameras=True)
