"""Known mistakes of step 6 (building the distiller), each with the root causes its checker must name."""

from __future__ import annotations

import torch
from torch import nn

from bevdistill.capture import FeatureRecorder
from bevdistill.distiller import dry_forward, example_inputs_for, infer_channels
from bevdistill.losses.combined import BEVFusionDistillationLoss
from mistakes import Mistake

LAYERS = ("pts_middle_encoder", "pts_backbone", "pts_neck")
PICK = {"pts_backbone": -1}


def _channels(model):
    return infer_channels(dry_forward(model, example_inputs_for(model), LAYERS, PICK))


class _Distiller(nn.Module):
    """A correct distiller with switches, one per mistake; each switch makes one mistake."""

    def __init__(self, teacher, student, channels=None, register_teacher=False,
                 detach_student=False, teacher_eval=True, distill=True, eval_in_loss=False):
        super().__init__()
        self._outside = (teacher,)
        if register_teacher:
            self.registered_teacher = teacher
        self.student, self.teacher_eval, self.distill = student, teacher_eval, distill
        self.eval_in_loss = eval_in_loss
        s_ch, t_ch = channels or (_channels(student), _channels(teacher))
        self.distill_loss = BEVFusionDistillationLoss(s_ch, t_ch, alpha_kd=0.0)
        self._recorders = (FeatureRecorder(teacher, LAYERS, select=PICK, detach=True),
                           FeatureRecorder(student, LAYERS, select=PICK, detach=detach_student))

    @property
    def teacher(self):
        return self._outside[0]

    def train(self, mode=True):
        super().train(mode)
        self.teacher.train(mode and not self.teacher_eval)  # the mistake: follow the mode
        return self

    def loss(self, inputs, data_samples):
        t_rec, s_rec = self._recorders
        was_training = self.teacher.training
        if self.eval_in_loss:
            self.teacher.eval()
        with torch.no_grad(), t_rec.recording() as t_feats:
            self.teacher(inputs, data_samples, mode="tensor")
        self.teacher.train(was_training)
        with s_rec.recording() as s_feats:
            detection = self.student.loss(inputs, data_samples)
        if not self.distill:
            return detection
        return {**detection, **self.distill_loss(dict(s_feats), dict(t_feats))}


def _builder(load=True, freeze=True, eval_teacher=True, swap=False, typed=None,
             follows_mode=False, **switches):
    """A build function that makes the mistakes its arguments name."""

    def build(teacher_config, student_config, teacher_checkpoint=None):
        from bevdistill.models import build_detector

        teacher, student = build_detector(teacher_config), build_detector(student_config)
        if load and teacher_checkpoint is not None:
            state = torch.load(teacher_checkpoint, map_location="cpu", weights_only=True)
            teacher.load_state_dict(state["state_dict"])
        teacher.requires_grad_(not freeze)
        teacher.train(not eval_teacher)
        channels = typed
        if swap:
            channels = (_channels(student), _channels(teacher))
            teacher, student = student, teacher
        if follows_mode:  # eval at build, but train() does not put it back, and loss() does
            switches.update(teacher_eval=False, eval_in_loss=True)
        else:
            switches.setdefault("teacher_eval", eval_teacher)
        return _Distiller(teacher, student, channels=channels, **switches)

    return build


# The checker's default pair measured by hand (last backbone scale): right for it, not for others.
_TYPED = (
    {"pts_middle_encoder": 8, "pts_backbone": 16, "pts_neck": 16},
    {"pts_middle_encoder": 16, "pts_backbone": 32, "pts_neck": 32},
)


MISTAKES = [
    Mistake("teacher not frozen", _builder(freeze=False), ("frozen",)),
    Mistake("teacher never in eval mode", _builder(eval_teacher=False), ("eval",)),
    Mistake("train() not overridden", _builder(follows_mode=True), ("eval",)),
    Mistake("checkpoint ignored", _builder(load=False), ("checkpoint",)),
    Mistake("channels typed by hand", _builder(typed=_TYPED), ("channels",)),
    Mistake("teacher registered as a submodule", _builder(register_teacher=True), ("outside",)),
    Mistake("student features detached", _builder(detach_student=True), ("distill-grad",)),
    Mistake("no distillation terms", _builder(distill=False), ("loss-dict",)),
    Mistake("teacher and student swapped", _builder(swap=True), ("swapped",)),
]
