"""Known mistakes of step 6 (building the distiller), compared by which checks fail."""

from __future__ import annotations

import torch
from torch import nn

from bevdistill.capture import FeatureRecorder
from bevdistill.distiller import dry_forward, example_inputs_for, infer_channels
from bevdistill.exercises._checking import Gallery, Misconception
from bevdistill.losses.combined import BEVFusionDistillationLoss

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

ENTRIES = [
    Misconception(
        "teacher not frozen",
        "The teacher's parameters still require grad: call teacher.requires_grad_(False) after "
        "loading its weights.",
        lambda: _builder(freeze=False),
    ),
    Misconception(
        "teacher never in eval mode",
        "The teacher runs in train mode during training, so its BatchNorm statistics drift with "
        "the student's batches: put it in eval() when building, and override train() to call "
        "super().train(mode) and then self.teacher.eval().",
        lambda: _builder(eval_teacher=False),
    ),
    Misconception(
        "train() not overridden",
        "After d.train() the teacher is in train mode, because nn.Module.train() does not know "
        "it must stay in eval mode: override train() to call super().train(mode) and then "
        "self.teacher.eval().",
        lambda: _builder(follows_mode=True),
    ),
    Misconception(
        "checkpoint ignored",
        "teacher_checkpoint is never loaded, so the teacher teaches with random weights: "
        "torch.load it and load its ['state_dict'] into the teacher.",
        lambda: _builder(load=False),
    ),
    Misconception(
        "channels typed by hand",
        "The channel counts are typed in for one pair of configs, so any other config breaks "
        "the projectors: measure them with a dry forward of each model (example_inputs_for) and "
        "read shape[1] of each captured feature.",
        lambda: _builder(typed=_TYPED),
    ),
    Misconception(
        "teacher registered as a submodule",
        "The teacher is assigned as an attribute, so nn.Module registers it and the optimizer "
        "and every checkpoint get its weights: keep it where nn.Module does not look (a tuple or "
        "object.__setattr__) and expose it with a property.",
        lambda: _builder(register_teacher=True),
    ),
    Misconception(
        "student features detached",
        "The student's captured features are detached, so the distillation terms give the "
        "student no gradient: record the student with detach=False (is_student=True).",
        lambda: _builder(detach_student=True),
    ),
    Misconception(
        "no distillation terms",
        "loss() returns only the student's detection losses: add the distillation loss's terms, "
        "return {**student_losses, **distillation_losses}.",
        lambda: _builder(distill=False),
    ),
    Misconception(
        "teacher and student swapped",
        "The teacher and student configs are swapped, so the small model teaches the large one: "
        "build d.teacher from teacher_config and d.student from student_config.",
        lambda: _builder(swap=True),
    ),
]

GALLERY = Gallery(ENTRIES)
