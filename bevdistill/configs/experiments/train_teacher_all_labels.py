# The teacher of the scarce-labels scenario: the student's own network, on the student's own
# sensor, trained on every labelled scene (bevdistill train teacher train_teacher_all_labels).
# What it knows beyond the student comes only from labels: the student's input holds every
# object it finds, so the whole gap is, in principle, transferable.
_base_ = ["../student.py", "./_base_/bev_world.py"]

role = "teacher"
train_dataset = dict(point_cloud_range={{_base_.point_cloud_range}})
val_dataset = dict(point_cloud_range={{_base_.point_cloud_range}})
