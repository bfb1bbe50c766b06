# Train the camera + LiDAR fusion teacher alone on the synthetic BEV world, every scene scanned
# and seen by six cameras (bevdistill train teacher train_teacher_fusion). Same world, LiDAR,
# schedule and seeds as train_teacher: the two differ only by the camera branch.
_base_ = ["../teacher_fusion.py", "./_base_/bev_world.py"]

role = "teacher"
train_dataset = dict(point_cloud_range={{_base_.point_cloud_range}}, cameras=True)
val_dataset = dict(point_cloud_range={{_base_.point_cloud_range}}, cameras=True)
