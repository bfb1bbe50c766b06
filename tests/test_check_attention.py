"""The step 4 checker accepts a differently written correct loss and rejects wrong ones."""

from __future__ import annotations

import pytest
import torch
from mistakes.step4 import MISTAKES, _Base
from torch import nn

from bevdistill import AttentionTransferLoss, resize_bev
from bevdistill.exercises import ExerciseFailed, check_attention
from bevdistill.exercises._checking import FAIL, PASS
from bevdistill.exercises.step4_attention import CASES

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
















class Stub(nn.Module):
    def forward(self, student_feat, teacher_feat):
        raise NotImplementedError("TODO: attention transfer")


def mistake(name):
    return next(m.impl for m in MISTAKES if m.name == name)


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
    assert f"{len(CASES)}/{len(CASES)} checks passed - PASS" in capsys.readouterr().out


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name)
def test_rejects_mistake(mistake):
    result = check_attention(mistake.impl, verbose=False)
    assert result.passed is False
    assert result.impl is AttentionTransferLoss
    assert failed(result), result.report()
    assert not result.not_implemented


def test_tutorial_failure_explains_the_magnitude():
    report = check_attention(mistake("the tutorial's formula"), verbose=False).report()
    assert "far too small" in report and "L1-normalised" in report and "instead of summed" in report
    assert "relative error" in report


def test_stub_is_not_implemented_yet():
    result = check_attention(Stub, verbose=False)
    assert result.passed is False and result.not_implemented
    assert result.impl is AttentionTransferLoss
    assert "NOT IMPLEMENTED YET" in result.report()
    assert all(o.status != PASS for o in result.outcomes)


def test_strict_raises(monkeypatch):
    with pytest.raises(ExerciseFailed, match="AttentionTransferLoss"):
        check_attention(mistake("the tutorial's formula"), strict=True, verbose=False)
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")
    with pytest.raises(ExerciseFailed):
        check_attention(Stub, verbose=False)
    assert check_attention(AttentionTransferLoss, verbose=False).passed
