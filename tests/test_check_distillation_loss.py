"""The step 5 checker accepts a differently written correct loss and rejects wrong ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mistakes.step5 import MISTAKES, _Base
from torch import nn

from bevdistill import (
    AttentionTransferLoss,
    BEVFusionDistillationLoss,
    ContrastiveLoss,
    ProjectionMLP,
)
from bevdistill.exercises import ExerciseFailed, check_distillation_loss
from bevdistill.exercises._checking import FAIL, PASS

# The checker runs at batch size 1 on purpose; the global InfoNCE warns about it once.
pytestmark = pytest.mark.filterwarnings("ignore:ContrastiveLoss at batch size 1")


class AlternativeDistillationLoss(nn.Module):
    """Correct, written differently: projector pairs in a ModuleList by position, keys like
    ``pts_neck_crd_loss``, its own binary KL (plain mean over cells) for the heatmaps, explicit
    channel checks, and the fp32 guard as a context around the whole body."""

    def __init__(
        self,
        student_channels,
        teacher_channels,
        feat_dim=128,
        temperature=0.07,
        alpha_crd=1.0,
        alpha_at=0.5,
        alpha_kd=0.5,
    ):
        super().__init__()
        if set(student_channels) != set(teacher_channels):
            raise ValueError("student and teacher must name the same layers")
        self.names = sorted(student_channels)
        self.channels = dict(student_channels)
        self.pairs = nn.ModuleList(
            nn.ModuleList(
                [
                    ProjectionMLP(student_channels[n], out_dim=feat_dim),
                    ProjectionMLP(teacher_channels[n], out_dim=feat_dim),
                ]
            )
            for n in self.names
        )
        self.info_nce = ContrastiveLoss(temperature)
        self.attention = AttentionTransferLoss()
        self.a_crd, self.a_at, self.a_kd = alpha_crd, alpha_at, alpha_kd

    def forward(
        self, student_features, teacher_features, student_outputs=None, teacher_outputs=None
    ):
        with torch.autocast("cpu", enabled=False):
            out = {}
            for name, (proj_s, proj_t) in zip(self.names, self.pairs, strict=True):
                s = student_features[name].float()
                t = teacher_features[name].detach().float()
                if s.shape[1] != self.channels[name]:
                    raise ValueError(
                        f"{name}: expected {self.channels[name]} channels, got {s.shape[1]}"
                    )
                out[f"{name}_crd_loss"] = self.a_crd * self.info_nce(proj_s(s), proj_t(t))
                out[f"{name}_at_loss"] = self.a_at * self.attention(s, t)
            if student_outputs is not None and teacher_outputs is not None:
                z = student_outputs.float()
                p_t = teacher_outputs.detach().float().sigmoid()
                kl = p_t * (p_t.clamp_min(1e-12).log() - F.logsigmoid(z)) + (1 - p_t) * (
                    (1 - p_t).clamp_min(1e-12).log() - F.logsigmoid(-z)
                )
                out["kd_loss_heatmap"] = self.a_kd * kl.sum(1).mean()
            return out















class Stub(nn.Module):
    def __init__(self, student_channels, teacher_channels, **kwargs):
        super().__init__()

    def forward(
        self, student_features, teacher_features, student_outputs=None, teacher_outputs=None
    ):
        raise NotImplementedError("TODO: combine the losses")


def mistake(name):
    return next(m.impl for m in MISTAKES if m.name == name)


def failed(result):
    return {o.name for o in result.outcomes if o.status == FAIL}


def test_reference_passes():
    result = check_distillation_loss(BEVFusionDistillationLoss, verbose=False)
    assert result.passed and result.impl is BEVFusionDistillationLoss


def test_accepts_a_correct_alternative(capsys):
    for impl in (AlternativeDistillationLoss, _Base):
        result = check_distillation_loss(impl)
        assert result.passed, result.report()
        assert result.impl is impl
    assert "12/12 checks passed - PASS" in capsys.readouterr().out


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name)
def test_rejects_mistake(mistake):
    result = check_distillation_loss(mistake.impl, verbose=False)
    assert result.passed is False
    assert result.impl is BEVFusionDistillationLoss
    assert failed(result), result.report()
    assert not result.not_implemented


def test_tutorial_fails_for_each_of_its_defects():
    names = failed(check_distillation_loss(mistake("the tutorial's loss"), verbose=False))
    for case in (
        "keys contain 'loss'",
        "missing layer",
        "wrong channel count",
        "alpha_kd is used",
        "batch size 1",
    ):
        assert any(case in n for n in names), (case, names)


def test_stub_is_not_implemented_yet():
    result = check_distillation_loss(Stub, verbose=False)
    assert result.passed is False and result.not_implemented
    assert result.impl is BEVFusionDistillationLoss
    assert "NOT IMPLEMENTED YET" in result.report()
    assert all(o.status != PASS for o in result.outcomes)


def test_strict_raises(monkeypatch):
    with pytest.raises(ExerciseFailed, match="BEVFusionDistillationLoss"):
        check_distillation_loss(mistake("outputs ignored"), strict=True, verbose=False)
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")
    with pytest.raises(ExerciseFailed):
        check_distillation_loss(Stub, verbose=False)
    assert check_distillation_loss(BEVFusionDistillationLoss, verbose=False).passed
