# The baseline: the student trained alone, same data and budget as distillation
# (bevdistill train student train_student).
_base_ = ["../student.py", "./_base_/bev_world.py"]

role = "student"
train_dataset = dict(point_cloud_range={{_base_.point_cloud_range}})
val_dataset = dict(point_cloud_range={{_base_.point_cloud_range}})
