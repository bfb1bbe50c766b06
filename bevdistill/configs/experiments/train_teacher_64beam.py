# The teacher of the two-sensor scenario: the student's own network, reading the 64-beam scan
# (bevdistill train teacher train_teacher_64beam). What it knows beyond the student comes from
# what it sees, not from its size.
_base_ = ["../student.py", "./_base_/two_sensor_world.py"]

role = "teacher"
train_dataset = dict(point_cloud_range={{_base_.point_cloud_range}}, view="teacher")
val_dataset = dict(point_cloud_range={{_base_.point_cloud_range}}, view="teacher")
