# The baseline of the two-sensor scenario: the student trained alone on the deployed 16-beam
# sensor, on the same scenes and labels as its teacher (bevdistill train student
# train_student_16beam).
_base_ = ["../student.py", "./_base_/two_sensor_world.py"]

role = "student"
train_dataset = dict(point_cloud_range={{_base_.point_cloud_range}})
val_dataset = dict(point_cloud_range={{_base_.point_cloud_range}})
