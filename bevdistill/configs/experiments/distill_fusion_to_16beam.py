# The fusion scenario distilled (issue 22, item 5): the camera + LiDAR teacher (student_fusion.py,
# shipped as teacher_fusion) teaches the LiDAR-only student of the same 16-beam sensor
# (bevdistill distill distill_fusion_to_16beam). Both read the same scan; the teacher also sees
# six camera images, which the student never reads. Boxes are labelled as in train_fusion_16beam
# (by the 64-beam scan, view="deployed" keeps it out of the batches), so teacher, student and
# the student alone (train_student_16beam) are scored on the same boxes. The recipe is
# distill.py's: pts_backbone and pts_neck sit after fusion_layer on the same 0.5 m grid in both
# models, and the heatmaps.
_base_ = ["./distill.py"]

deployed_lidar = dict(n_rings=16)  # as in _base_/two_sensor_world.py
rich_lidar = dict(n_rings=64)
model = dict(
    teacher="{{fileDirname}}/../student_fusion.py",
    teacher_ckpt="{{fileDirname}}/../../assets/teacher_fusion.pth",
)
train_dataset = dict(lidar=deployed_lidar, teacher_lidar=rich_lidar, cameras=True,
                     view="deployed")
val_dataset = dict(lidar=deployed_lidar, teacher_lidar=rich_lidar, cameras=True, view="deployed")
