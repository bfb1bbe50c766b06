"""The step 3 checker accepts a differently written correct InfoNCE and rejects wrong ones."""

from __future__ import annotations

import pytest
import torch
from mistakes.step3 import MISTAKES, _Base
from torch import nn

from bevdistill import ContrastiveLoss
from bevdistill.exercises import ExerciseFailed, check_contrastive
from bevdistill.exercises._checking import FAIL, PASS
from bevdistill.exercises.step3_contrastive import CASES


class AlternativeContrastive(nn.Module):
    """Correct, written differently: einsum similarities, log_softmax + diagonal gather, manual
    normalisation with a clamp, and both directions from one matrix via the two softmax axes."""

    def __init__(self, temperature=0.07):
        super().__init__()
        self.inv_t = 1.0 / temperature

    def forward(self, student_feat, teacher_feat):
        s = student_feat / student_feat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        t = teacher_feat / teacher_feat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sim = torch.einsum("id,jd->ij", s, t) * self.inv_t
        idx = torch.arange(sim.shape[0]).unsqueeze(1)
        s2t = -sim.log_softmax(dim=1).gather(1, idx).mean()
        t2s = -sim.log_softmax(dim=0).diagonal().mean()
        return 0.5 * (s2t + t2s)














class Stub(nn.Module):
    def __init__(self, temperature=0.07):
        super().__init__()

    def forward(self, student_feat, teacher_feat):
        raise NotImplementedError("TODO: compute InfoNCE")


def mistake(name):
    return next(m.impl for m in MISTAKES if m.name == name)


def failed(result):
    return {o.name for o in result.outcomes if o.status == FAIL}


def test_reference_passes():
    result = check_contrastive(ContrastiveLoss, verbose=False)
    assert result.passed and result.impl is ContrastiveLoss


def test_tutorial_solution_passes():
    assert check_contrastive(_Base, verbose=False).passed


def test_accepts_a_correct_alternative(capsys):
    result = check_contrastive(AlternativeContrastive)
    assert result.passed, result.report()
    assert result.impl is AlternativeContrastive
    assert f"{len(CASES)}/{len(CASES)} checks passed - PASS" in capsys.readouterr().out


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name)
def test_rejects_mistake(mistake):
    result = check_contrastive(mistake.impl, verbose=False)
    assert result.passed is False
    assert result.impl is ContrastiveLoss
    assert failed(result), result.report()
    assert not result.not_implemented


def test_failure_report_shows_relative_error_and_the_diagnosis():
    report = check_contrastive(mistake("no temperature"), verbose=False).report()
    assert "relative error" in report and "Diagnosis:" in report and "self.temperature" in report


def test_stub_is_not_implemented_yet():
    result = check_contrastive(Stub, verbose=False)
    assert result.passed is False and result.not_implemented
    assert result.impl is ContrastiveLoss
    assert "NOT IMPLEMENTED YET" in result.report()
    assert all(o.status != PASS for o in result.outcomes)


def test_strict_raises(monkeypatch):
    with pytest.raises(ExerciseFailed, match="ContrastiveLoss"):
        check_contrastive(mistake("student-to-teacher direction only"), strict=True, verbose=False)
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")
    with pytest.raises(ExerciseFailed):
        check_contrastive(Stub, verbose=False)
    assert check_contrastive(ContrastiveLoss, verbose=False).passed
