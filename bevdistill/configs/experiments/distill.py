# The student trained with the frozen, shipped teacher (bevdistill distill distill).
# Same data and budget as train_student.py, so the two runs compare directly.
# Another teacher: --cfg-options model.teacher_ckpt=work_dirs/train_teacher/iter_3000.pth
_base_ = ["../student.py", "./_base_/bev_world.py"]

role = "distill"
model = dict(
    _delete_=True,
    type="Distiller",
    teacher="{{fileDirname}}/../teacher.py",
    student={{_base_.model}},
    teacher_ckpt="{{fileDirname}}/../../assets/teacher.pth",
    distill=dict(contrastive="spatial", alpha_crd=1.0, alpha_at=0.5, alpha_kd=0.5),
)
train_dataset = dict(point_cloud_range={{_base_.point_cloud_range}})
val_dataset = dict(point_cloud_range={{_base_.point_cloud_range}})
