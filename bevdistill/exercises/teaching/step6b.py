"""Step 6b: teacher, student and loss in one module that a training loop cannot damage."""

import torch
from torch import nn

from bevdistill import BEVFusionDistillationLoss, FeatureRecorder
from bevdistill.exercises.teaching.step6a import LAYERS, PICK, measure_channels  # yours, 6a
from bevdistill.models import build_detector


class MyDistiller(nn.Module):
    def __init__(self, teacher, student):
        super().__init__()
        self._outside = (teacher,)  # nn.Module does not look into a tuple: not in parameters()
        self.student = student
        self.distill_loss = BEVFusionDistillationLoss(
            measure_channels(student), measure_channels(teacher), alpha_kd=0.0)
        self._recorders = (FeatureRecorder(teacher, LAYERS, select=PICK, detach=True),
                           FeatureRecorder(student, LAYERS, select=PICK, detach=False))

    @property
    def teacher(self):
        return self._outside[0]

    def train(self, mode=True):
        super().train(mode)
        self.teacher.eval()  # BatchNorm statistics of the teacher must not move
        return self

    def loss(self, inputs, data_samples):
        teacher_rec, student_rec = self._recorders
        with torch.no_grad(), teacher_rec.recording() as teacher_feats:
            self.teacher(inputs, data_samples, mode="tensor")
        with student_rec.recording() as student_feats:
            detection = self.student.loss(inputs, data_samples)
        return {**detection, **self.distill_loss(dict(student_feats), dict(teacher_feats))}


def my_build_bevfusion_distillation(teacher_config, student_config, teacher_checkpoint=None):
    teacher = build_detector(teacher_config)
    if teacher_checkpoint is not None:
        state = torch.load(teacher_checkpoint, map_location="cpu", weights_only=True)
        teacher.load_state_dict(state.get("state_dict", state))
    teacher.requires_grad_(False).eval()
    return MyDistiller(teacher, build_detector(student_config))
