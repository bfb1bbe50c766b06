# The scarce-labels scenario distilled: the teacher trained on every labelled scene (the same
# network and sensor as the student) teaches a student that has a few labelled scenes and many
# unlabelled scans (bevdistill distill distill_scarce_labels --cfg-options
# train_dataset.labelled_samples=N). On an unlabelled scan the teacher is all it learns from.
_base_ = ["./distill.py"]

model = dict(
    teacher="{{fileDirname}}/../student.py",
    teacher_ckpt="{{fileDirname}}/../../assets/teacher_all_labels.pth",
)
