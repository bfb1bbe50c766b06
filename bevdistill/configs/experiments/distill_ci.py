# Distillation between the tiny CI models (train_teacher_ci -> train_student_ci). Tests point
# model.teacher_ckpt at a checkpoint of train_teacher_ci; None distils from a random teacher.
_base_ = ["./distill.py"]

point_cloud_range = [-16.0, -16.0, -5.0, 16.0, 16.0, 3.0]
model = dict(
    teacher="{{fileDirname}}/train_teacher_ci.py",
    student="{{fileDirname}}/train_student_ci.py",
    teacher_ckpt=None,
)
train_dataset = dict(num_samples=16, point_cloud_range=point_cloud_range)
val_dataset = dict(num_samples=4, point_cloud_range=point_cloud_range)
data = dict(batch_size=2, val_batch_size=2, num_workers=0)
schedule = dict(max_iters=6, warmup_iters=2, val_interval=None, checkpoint_interval=2,
                log_interval=2, lr=5e-3)
