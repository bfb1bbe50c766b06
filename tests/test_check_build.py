"""check_build accepts a correct build function written differently and rejects wrong ones."""

from __future__ import annotations

import pytest
import torch
from mmengine.model import BaseModel
from torch import nn

from bevdistill import BEVFusionDistillationLoss, BEVFusionDistillationWrapper
from bevdistill.distiller import Distiller, build_bevfusion_distillation, example_inputs_for
from bevdistill.exercises import ExerciseFailed, check_build
from bevdistill.exercises.step6_build import STUDENT, TEACHER
from bevdistill.models import build_detector

SELECT = {"pts_backbone": 0}  # the first scale, where the reference takes the last


def measure_channels(model: nn.Module, inputs: dict) -> dict[str, int]:
    """One eval-mode forward through a step-1 wrapper; channels are shape[1] of each capture."""
    was_training = model.training
    model.eval()
    with BEVFusionDistillationWrapper(model, select=SELECT) as wrapper, torch.no_grad():
        _, feats = wrapper(inputs, None, mode="tensor")
    model.train(was_training)
    return {k: (v[0] if isinstance(v, list) else v).shape[1] for k, v in feats.items()}


class AltDistiller(nn.Module):
    """A correct distiller without the package's Distiller: the teacher and both step-1 wrappers
    live in a tuple, which nn.Module does not look into."""

    def __init__(
        self,
        teacher,
        student,
        distill_loss,
        register_teacher=False,
        detach_student=False,
        teacher_eval=True,
    ):
        super().__init__()
        self.teacher_eval = teacher_eval
        self.student = student
        self.distill_loss = distill_loss
        if register_teacher:  # mutant: the teacher becomes a submodule
            self._modules["teacher"] = teacher
        self._outside = (
            teacher,
            BEVFusionDistillationWrapper(teacher, is_student=False, select=SELECT),
            BEVFusionDistillationWrapper(student, is_student=not detach_student, select=SELECT),
        )

    @property
    def teacher(self):
        return self._outside[0]

    def train(self, mode=True):
        super().train(mode)
        if self.teacher_eval:
            self._outside[0].eval()
        return self

    def loss(self, inputs, samples):
        with torch.no_grad():
            _, teacher_feats = self._outside[1](inputs, samples, mode="tensor")
        det_losses, student_feats = self._outside[2](inputs, samples, mode="loss")
        return {**det_losses, **self.distill_loss(student_feats, teacher_feats)}


def alt_build(teacher_config, student_config, teacher_checkpoint=None, channels=None, **flags):
    teacher = build_detector(teacher_config)
    if teacher_checkpoint is not None:
        ckpt = torch.load(teacher_checkpoint, map_location="cpu", weights_only=True)
        teacher.load_state_dict(ckpt["state_dict"])
    teacher.requires_grad_(False)
    teacher.train(not flags.get("teacher_eval", True))
    student = build_detector(student_config)
    if channels is None:
        inputs = example_inputs_for(student, batch_size=2, num_points=500, seed=3)
        channels = measure_channels(student, inputs), measure_channels(teacher, inputs)
    distill_loss = BEVFusionDistillationLoss(
        *channels, alpha_kd=0.0, contrastive="spatial", num_samples=64
    )
    return AltDistiller(teacher, student, distill_loss, **flags)


# --- mutants: each breaks one thing the step is about ------------------------------------


def teacher_not_frozen(teacher_config, student_config, teacher_checkpoint=None):
    d = build_bevfusion_distillation(teacher_config, student_config, teacher_checkpoint)
    d.teacher.requires_grad_(True)
    return d


class FollowsMode(Distiller):
    """The teacher follows the distiller's mode, as a registered submodule would."""

    def train(self, mode=True):
        BaseModel.train(self, mode)
        self.teacher.train(mode)
        return self


def teacher_follows_mode(teacher_config, student_config, teacher_checkpoint=None):
    return FollowsMode(teacher_config, student_config, teacher_checkpoint)


def teacher_never_eval(teacher_config, student_config, teacher_checkpoint=None):
    return alt_build(teacher_config, student_config, teacher_checkpoint, teacher_eval=False)


def checkpoint_ignored(teacher_config, student_config, teacher_checkpoint=None):
    return build_bevfusion_distillation(teacher_config, student_config, None)


# Channels typed by hand for the checker's default configs (select: first backbone scale).
TYPED = (
    {"pts_middle_encoder": 8, "pts_backbone": 8, "pts_neck": 16},
    {"pts_middle_encoder": 16, "pts_backbone": 16, "pts_neck": 32},
)


def channels_typed(teacher_config, student_config, teacher_checkpoint=None):
    return alt_build(teacher_config, student_config, teacher_checkpoint, channels=TYPED)


def teacher_registered(teacher_config, student_config, teacher_checkpoint=None):
    return alt_build(teacher_config, student_config, teacher_checkpoint, register_teacher=True)


def student_detached(teacher_config, student_config, teacher_checkpoint=None):
    return alt_build(teacher_config, student_config, teacher_checkpoint, detach_student=True)


class DetectionOnly(Distiller):
    def loss(self, inputs, data_samples=None):
        return self.student.loss(inputs, data_samples)


def no_distillation_terms(teacher_config, student_config, teacher_checkpoint=None):
    return DetectionOnly(teacher_config, student_config, teacher_checkpoint)


def swapped(teacher_config, student_config, teacher_checkpoint=None):
    d = build_bevfusion_distillation(teacher_config, student_config, teacher_checkpoint)
    return AltDistiller(d.student, d.teacher, d.distill_loss)


def stub(teacher_config, student_config, teacher_checkpoint=None):
    raise NotImplementedError


def template(teacher_config, student_config, teacher_checkpoint=None):
    """The tutorial's template: every line a TODO, the body falls through."""


def failed_cases(result) -> list[str]:
    return [o.name for o in result.outcomes if o.status == "fail"]


# --- tests ------------------------------------------------------------------------------------


def test_accepts_the_reference():
    result = check_build(build_bevfusion_distillation, verbose=False)
    assert result.passed, result.report()
    assert result.impl is build_bevfusion_distillation


def test_accepts_a_correct_alternative():
    result = check_build(alt_build, verbose=False)
    assert result.passed, result.report()
    assert result.impl is alt_build


def test_typed_channels_match_the_default_configs():
    """The hard-coded mutant is right for the default pair, so only the channel case can fail."""
    inputs = example_inputs_for(build_detector(STUDENT), num_points=500)
    assert measure_channels(build_detector(STUDENT), inputs) == TYPED[0]
    assert measure_channels(build_detector(TEACHER), inputs) == TYPED[1]


@pytest.mark.parametrize(
    ("mutant", "failing"),
    [
        (teacher_not_frozen, ["teacher is frozen"]),
        (teacher_follows_mode, ["teacher stays in eval mode"]),
        (teacher_never_eval, ["teacher stays in eval mode", "leaves the teacher unchanged"]),
        (checkpoint_ignored, ["teacher weights come from teacher_checkpoint"]),
        (channels_typed, ["channel sizes come from the models"]),
        (teacher_registered, ["optimizer and state_dict leave the teacher out"]),
        (student_detached, ["distillation terms give the student a gradient"]),
        (no_distillation_terms, ["loss() = the student's detection losses + distillation"]),
        (swapped, ["builds d.teacher and d.student from their configs"]),
    ],
    ids=lambda v: v.__name__ if callable(v) else "",
)
def test_rejects_mutant(mutant, failing):
    result = check_build(mutant, verbose=False)
    assert result.passed is False
    assert result.impl is build_bevfusion_distillation
    failed = failed_cases(result)
    for expected in failing:
        assert any(expected in name for name in failed), result.report()


def test_typed_channels_fail_only_the_channel_case():
    assert failed_cases(check_build(channels_typed, verbose=False)) == [
        "channel sizes come from the models (other channel counts work)"
    ]


@pytest.mark.parametrize("unfilled", [stub, template], ids=["stub", "template"])
def test_unfilled_exercise_reports_not_implemented(unfilled):
    result = check_build(unfilled, verbose=False)
    assert result.passed is False and result.not_implemented
    assert result.impl is build_bevfusion_distillation
    assert "NOT IMPLEMENTED YET" in result.report()
    assert "not implemented yet" in result.message.lower()


def test_report_shows_the_failure_and_a_hint(capsys):
    check_build(teacher_registered)
    out = capsys.readouterr().out
    assert "✗ optimizer and state_dict leave the teacher out" in out
    assert "holds" in out and "teacher parameters" in out
    assert "Diagnosis: The teacher is registered as a submodule" in out  # the one root cause
    assert "hint:" not in out  # per-case hints give way to the diagnosis
    assert "INFO" not in out  # the checkpoint reports of every build stay out of the way


def test_strict_raises(monkeypatch):
    with pytest.raises(ExerciseFailed, match="teacher is frozen"):
        check_build(teacher_not_frozen, strict=True, verbose=False)
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")
    with pytest.raises(ExerciseFailed):
        check_build(checkpoint_ignored, verbose=False)
    assert check_build(alt_build, verbose=False).passed  # strict never hits a passing impl
