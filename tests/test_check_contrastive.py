"""The step 3 checker accepts a differently written correct InfoNCE and rejects wrong ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bevdistill import ContrastiveLoss
from bevdistill.exercises import ExerciseFailed, check_contrastive
from bevdistill.exercises._checking import FAIL, PASS


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


class _Base(nn.Module):
    """The tutorial's solution, split so each mutant overrides one step."""

    def __init__(self, temperature=0.07):
        super().__init__()
        self.temperature = temperature

    def normalise(self, x):
        return F.normalize(x, dim=1)

    def logits(self, s, t):
        return self.normalise(s) @ self.normalise(t).T / self.temperature

    def labels(self, n):
        return torch.arange(n)

    def forward(self, student_feat, teacher_feat):
        logits = self.logits(student_feat, teacher_feat)
        labels = self.labels(logits.shape[0])
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class NoTemperature(_Base):
    def logits(self, s, t):
        return self.normalise(s) @ self.normalise(t).T


class TemperatureMultiplied(_Base):
    def logits(self, s, t):
        return self.normalise(s) @ self.normalise(t).T * self.temperature


class OneDirection(_Base):
    def forward(self, student_feat, teacher_feat):
        logits = self.logits(student_feat, teacher_feat)
        return F.cross_entropy(logits, self.labels(logits.shape[0]))


class NormaliseDim0(_Base):
    def normalise(self, x):
        return F.normalize(x, dim=0)


class NoNormalisation(_Base):
    def normalise(self, x):
        return x


class ReversedLabels(_Base):
    def labels(self, n):
        return torch.arange(n).flip(0)


class TransposedTwice(_Base):
    """Averages the same direction twice (logits.T used for both terms)."""

    def forward(self, student_feat, teacher_feat):
        logits = self.logits(student_feat, teacher_feat)
        labels = self.labels(logits.shape[0])
        return (F.cross_entropy(logits.T, labels) + F.cross_entropy(logits.T, labels)) / 2


class SumReduction(_Base):
    def forward(self, student_feat, teacher_feat):
        logits = self.logits(student_feat, teacher_feat)
        labels = self.labels(logits.shape[0])
        ce = F.cross_entropy(logits, labels, reduction="sum")
        return (ce + F.cross_entropy(logits.T, labels, reduction="sum")) / 2


class DirectionsSummed(_Base):
    def forward(self, student_feat, teacher_feat):
        logits = self.logits(student_feat, teacher_feat)
        labels = self.labels(logits.shape[0])
        return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)


class NormWithoutEps(_Base):
    def normalise(self, x):
        return x / x.norm(dim=1, keepdim=True)


class DetachedNorm(_Base):
    """Normalises with a detached norm: same value, wrong gradients."""

    def normalise(self, x):
        return x / x.norm(dim=1, keepdim=True).detach().clamp_min(1e-12)


class Stub(nn.Module):
    def __init__(self, temperature=0.07):
        super().__init__()

    def forward(self, student_feat, teacher_feat):
        raise NotImplementedError("TODO: compute InfoNCE")


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
    assert "7/7 checks passed - PASS" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mutant,failing_case",
    [
        (NoTemperature, "temperature is used"),
        (TemperatureMultiplied, "temperature is used"),
        (OneDirection, "symmetric"),
        (TransposedTwice, "symmetric"),
        (NormaliseDim0, "value at B=4"),
        (NoNormalisation, "value at B=4"),
        (ReversedLabels, "value at B=4"),
        (SumReduction, "value at B=8"),
        (DirectionsSummed, "value at B=4"),
        (NormWithoutEps, "zero feature vector"),
        (DetachedNorm, "gradients match"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_rejects_mutant(mutant, failing_case):
    result = check_contrastive(mutant, verbose=False)
    assert result.passed is False
    assert result.impl is ContrastiveLoss
    assert any(failing_case in name for name in failed(result)), result.report()
    assert not result.not_implemented


def test_failure_report_shows_relative_error_and_hint():
    report = check_contrastive(NoTemperature, verbose=False).report()
    assert "relative error" in report and "self.temperature" in report


def test_stub_is_not_implemented_yet():
    result = check_contrastive(Stub, verbose=False)
    assert result.passed is False and result.not_implemented
    assert result.impl is ContrastiveLoss
    assert "NOT IMPLEMENTED YET" in result.report()
    assert all(o.status != PASS for o in result.outcomes)


def test_strict_raises(monkeypatch):
    with pytest.raises(ExerciseFailed, match="ContrastiveLoss"):
        check_contrastive(OneDirection, strict=True, verbose=False)
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")
    with pytest.raises(ExerciseFailed):
        check_contrastive(Stub, verbose=False)
    assert check_contrastive(ContrastiveLoss, verbose=False).passed
