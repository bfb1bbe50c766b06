"""The step 4 checker accepts a differently written correct loss and rejects wrong ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bevdistill import AttentionTransferLoss, resize_bev
from bevdistill.exercises import ExerciseFailed, check_attention
from bevdistill.exercises._checking import FAIL, PASS
from bevdistill.losses.attention import tutorial_attention_loss

# The checker feeds all-zero features on purpose; the reference warns about them once.
pytestmark = pytest.mark.filterwarnings(
    "ignore:AttentionTransferLoss. an attention map is all zero"
)


class AlternativeAttention(nn.Module):
    """Correct, written differently: einsum energy, resize_bev, linalg norms, explicit loop-free
    batch mean via a per-sample squared distance."""

    def forward(self, student_feat, teacher_feat):
        def energy(f):
            return torch.einsum("bchw,bchw->bhw", f, f).unsqueeze(1) / f.shape[1]

        e_s, e_t = energy(student_feat), energy(teacher_feat.detach())
        size = tuple(min(a, b) for a, b in zip(e_s.shape[-2:], e_t.shape[-2:], strict=True))
        vecs = []
        for e in (resize_bev(e_s, size), resize_bev(e_t, size)):
            v = e.reshape(e.shape[0], -1)
            vecs.append(v / torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp_min(1e-12))
        return torch.linalg.vector_norm(vecs[0] - vecs[1], dim=1).pow(2).mean()


class _Base(nn.Module):
    """A correct loss split into steps, so each mutant overrides exactly one."""

    def raw(self, feat):
        return feat.pow(2).mean(1, keepdim=True)

    def teacher(self, feat):
        return feat.detach()

    def align(self, a_s, a_t):
        size = (min(a_s.shape[2], a_t.shape[2]), min(a_s.shape[3], a_t.shape[3]))
        return F.adaptive_avg_pool2d(a_s, size), F.adaptive_avg_pool2d(a_t, size)

    def normalise(self, a):
        return F.normalize(a.flatten(1), p=2, dim=1)

    def reduce(self, sq):
        return sq.sum(1).mean()

    def forward(self, student_feat, teacher_feat):
        a_s, a_t = self.align(self.raw(student_feat), self.raw(self.teacher(teacher_feat)))
        return self.reduce((self.normalise(a_s) - self.normalise(a_t)).pow(2))


class Tutorial(nn.Module):
    """The tutorial's step 4 solution: sum_c F^2, bilinear to the teacher, L1 normalise, MSE."""

    def forward(self, student_feat, teacher_feat):
        return tutorial_attention_loss(student_feat, teacher_feat)


class L1Normalised(_Base):
    def normalise(self, a):
        return F.normalize(a.flatten(1), p=1, dim=1)


class MeanOverCells(_Base):
    """RepDistiller's reduction: vanishes as 1/HW."""

    def reduce(self, sq):
        return sq.mean()


class NoInterpolation(_Base):
    def align(self, a_s, a_t):
        return a_s, a_t


class StudentOnlyArea(_Base):
    """Brings the student to the teacher's grid (area down, bilinear up): wrong when the teacher
    is finer, because a student matching the pooled teacher can never reach zero loss."""

    def align(self, a_s, a_t):
        return resize_bev(a_s, a_t.shape[-2:]), a_t


class BilinearShrink(_Base):
    def align(self, a_s, a_t):
        size = (min(a_s.shape[2], a_t.shape[2]), min(a_s.shape[3], a_t.shape[3]))
        return tuple(F.interpolate(a, size=size, mode="bilinear") for a in (a_s, a_t))


class SquareGridAssumed(_Base):
    """RepDistiller's AT pools to (H, H): breaks on non-square BEV grids."""

    def align(self, a_s, a_t):
        h = min(a_s.shape[2], a_t.shape[2])
        return F.adaptive_avg_pool2d(a_s, (h, h)), F.adaptive_avg_pool2d(a_t, (h, h))


class NormaliseDim0(_Base):
    def normalise(self, a):
        return F.normalize(a.flatten(1), p=2, dim=0)


class SumNoNormalisation(_Base):
    def raw(self, feat):
        return feat.pow(2).sum(1, keepdim=True)

    def normalise(self, a):
        return a.flatten(1)


class PowerOne(_Base):
    def raw(self, feat):
        return feat.abs().mean(1, keepdim=True)


class TeacherNotDetached(_Base):
    def teacher(self, feat):
        return feat


class NoEps(_Base):
    def normalise(self, a):
        a = a.flatten(1)
        return a / a.norm(dim=1, keepdim=True)


class BatchSummed(_Base):
    def reduce(self, sq):
        return sq.sum()


class Stub(nn.Module):
    def forward(self, student_feat, teacher_feat):
        raise NotImplementedError("TODO: attention transfer")


def failed(result):
    return {o.name for o in result.outcomes if o.status == FAIL}


def test_reference_passes():
    result = check_attention(AttentionTransferLoss, verbose=False)
    assert result.passed and result.impl is AttentionTransferLoss


def test_accepts_a_correct_alternative(capsys):
    for impl in (AlternativeAttention, _Base):
        result = check_attention(impl)
        assert result.passed, result.report()
        assert result.impl is impl
    assert "9/9 checks passed - PASS" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mutant,failing_case",
    [
        (Tutorial, "does not vanish"),
        (L1Normalised, "does not vanish"),
        (MeanOverCells, "does not vanish"),
        (NoInterpolation, "student grid larger"),
        (StudentOnlyArea, "teacher grid larger"),
        (BilinearShrink, "student grid larger"),
        (SquareGridAssumed, "non-square"),
        (NormaliseDim0, "matches the reference on one grid"),
        (SumNoNormalisation, "matches the reference on one grid"),
        (PowerOne, "matches the reference on one grid"),
        (TeacherNotDetached, "gradient reaches the student only"),
        (NoEps, "no NaN"),
        (BatchSummed, "matches the reference on one grid"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_rejects_mutant(mutant, failing_case):
    result = check_attention(mutant, verbose=False)
    assert result.passed is False
    assert result.impl is AttentionTransferLoss
    assert any(failing_case in name for name in failed(result)), result.report()
    assert not result.not_implemented


def test_tutorial_failure_explains_the_magnitude():
    report = check_attention(Tutorial, verbose=False).report()
    assert "far too small" in report and "1/(H*W)^2" in report
    assert "relative error" in report


def test_stub_is_not_implemented_yet():
    result = check_attention(Stub, verbose=False)
    assert result.passed is False and result.not_implemented
    assert result.impl is AttentionTransferLoss
    assert "NOT IMPLEMENTED YET" in result.report()
    assert all(o.status != PASS for o in result.outcomes)


def test_strict_raises(monkeypatch):
    with pytest.raises(ExerciseFailed, match="AttentionTransferLoss"):
        check_attention(Tutorial, strict=True, verbose=False)
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")
    with pytest.raises(ExerciseFailed):
        check_attention(Stub, verbose=False)
    assert check_attention(AttentionTransferLoss, verbose=False).passed
