"""The step 2 checker accepts a differently written correct projector and rejects wrong ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mistakes.step2 import MISTAKES
from torch import nn

from bevdistill import ProjectionMLP
from bevdistill.exercises import ExerciseFailed, check_projection
from bevdistill.exercises._checking import FAIL, PASS
from bevdistill.exercises.step2_projection import CASES


class AlternativeProjection(nn.Module):
    """Correct, written differently: the first layer is applied at every position *before*
    averaging (a linear map commutes with the mean), then ReLU before a parameter-free
    LayerNorm, no dropout, einsum instead of nn.Linear."""

    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(hidden_dim, in_dim) / in_dim**0.5)
        self.b1 = nn.Parameter(torch.zeros(hidden_dim))
        self.head = nn.Linear(hidden_dim, out_dim)

    def forward(self, x):
        points = x.reshape(x.shape[0], x.shape[1], -1)  # [B, C, positions]; [B, C] -> 1 position
        h = torch.einsum("hc,bcn->bhn", self.w1, points).mean(dim=2) + self.b1
        h = F.layer_norm(F.relu(h), h.shape[1:])
        y = self.head(h)
        return y / y.norm(dim=1, keepdim=True).clamp_min(1e-8)













class Stub(nn.Module):
    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__()

    def forward(self, x):
        raise NotImplementedError("TODO")


def mistake(name):
    return next(m.impl for m in MISTAKES if m.name == name)


def failed(result):
    return {o.name for o in result.outcomes if o.status == FAIL}


def test_reference_passes():
    result = check_projection(ProjectionMLP, verbose=False)
    assert result.passed and result.impl is ProjectionMLP


def test_accepts_a_correct_alternative(capsys):
    result = check_projection(AlternativeProjection)
    assert result.passed, result.report()
    assert result.impl is AlternativeProjection
    assert f"{len(CASES)}/{len(CASES)} checks passed - PASS" in capsys.readouterr().out


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name)
def test_rejects_mistake(mistake):
    result = check_projection(mistake.impl, verbose=False)
    assert result.passed is False
    assert result.impl is ProjectionMLP
    assert failed(result), result.report()
    assert not result.not_implemented


def test_failure_report_names_batchnorm():
    report = check_projection(mistake("BatchNorm head"), verbose=False).report()
    assert "FAIL" in report and "Diagnosis:" in report and "LayerNorm" in report


def test_stub_is_not_implemented_yet():
    result = check_projection(Stub, verbose=False)
    assert result.passed is False and result.not_implemented
    assert result.impl is ProjectionMLP
    assert "NOT IMPLEMENTED YET" in result.report()
    assert all(o.status != PASS for o in result.outcomes)


def test_strict_raises(monkeypatch):
    with pytest.raises(ExerciseFailed, match="ProjectionMLP"):
        check_projection(mistake("no L2 normalisation"), strict=True, verbose=False)
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")
    with pytest.raises(ExerciseFailed):
        check_projection(Stub, verbose=False)
    assert check_projection(ProjectionMLP, verbose=False).passed  # strict + pass: no raise
