# Train the teacher alone on the synthetic BEV world (bevdistill train teacher train_teacher).
_base_ = ["../teacher.py", "./_base_/bev_world.py"]

role = "teacher"
train_dataset = dict(point_cloud_range={{_base_.point_cloud_range}})
val_dataset = dict(point_cloud_range={{_base_.point_cloud_range}})
