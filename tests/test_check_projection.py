"""The step 2 checker accepts a differently written correct projector and rejects wrong ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bevdistill import ProjectionMLP
from bevdistill.exercises import ExerciseFailed, check_projection
from bevdistill.exercises._checking import FAIL, PASS


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


class _Base(nn.Module):
    """Shared body of the mutants: the tutorial's layers with LayerNorm, unless overridden."""

    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__()
        self.layer1 = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(0.1)
        self.layer2 = nn.Linear(hidden_dim, out_dim)

    def pool(self, x):
        return x.flatten(2).mean(2) if x.dim() > 2 else x

    def mlp(self, x):
        return self.layer2(self.dropout(F.relu(self.norm(self.layer1(x)))))

    def forward(self, x):
        return F.normalize(self.mlp(self.pool(x)), dim=1)


class TutorialBatchNorm(nn.Module):
    """The tutorial's step 2 solution: BatchNorm1d fails in training mode at batch size 1."""

    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__()
        self.layer1 = nn.Linear(in_dim, hidden_dim)
        self.layer2 = nn.Linear(hidden_dim, out_dim)
        self.bn = nn.BatchNorm1d(hidden_dim)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):
        if len(x.shape) == 4:
            x = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        elif len(x.shape) == 3:
            x = x.mean(dim=2)
        elif len(x.shape) > 4:
            x = x.flatten(2).mean(dim=2)
        x = self.dropout(self.relu(self.bn(self.layer1(x))))
        return F.normalize(self.layer2(x), dim=1)


class NoL2Norm(_Base):
    def forward(self, x):
        return self.mlp(self.pool(x))


class NormaliseWrongDim(_Base):
    def forward(self, x):
        return F.normalize(self.mlp(self.pool(x)), dim=0)


class FlattenSpatial(_Base):
    """Flattens positions into channels (the CRD Embed's view) instead of pooling."""

    def pool(self, x):
        return x.flatten(1)


class No5D(_Base):
    """Handles [B,C,N] and [B,C,H,W] but passes voxels [B,C,D,H,W] through unpooled."""

    def pool(self, x):
        if x.dim() == 4:
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        if x.dim() == 3:
            return x.mean(dim=2)
        return x


class MeanOverChannels(_Base):
    """Pools [B,C,N] over the wrong dim: the output shape is wrong for 3D input."""

    def pool(self, x):
        return x.mean(dim=1) if x.dim() == 3 else super().pool(x)


class HardcodedOutDim(_Base):
    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__(in_dim, hidden_dim, 128)


class MaxPool(_Base):
    def pool(self, x):
        return x.flatten(2).amax(2) if x.dim() > 2 else x


class DropoutAlwaysOn(_Base):
    def mlp(self, x):
        h = F.dropout(F.relu(self.norm(self.layer1(x))), 0.3, training=True)
        return self.layer2(h)


class DetachedInput(_Base):
    def forward(self, x):
        return super().forward(x.detach())


class Stub(nn.Module):
    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__()

    def forward(self, x):
        raise NotImplementedError("TODO")


def failed(result):
    return {o.name for o in result.outcomes if o.status == FAIL}


def test_reference_passes():
    result = check_projection(ProjectionMLP, verbose=False)
    assert result.passed and result.impl is ProjectionMLP


def test_accepts_a_correct_alternative(capsys):
    result = check_projection(AlternativeProjection)
    assert result.passed, result.report()
    assert result.impl is AlternativeProjection
    assert "7/7 checks passed - PASS" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mutant,failing_case",
    [
        (TutorialBatchNorm, "training mode works at batch size 1"),
        (NoL2Norm, "unit L2 norm"),
        (NormaliseWrongDim, "unit L2 norm"),
        (NormaliseWrongDim, "does not depend on the rest of the batch"),
        (FlattenSpatial, "output shape"),
        (No5D, "output shape"),
        (MeanOverChannels, "output shape"),
        (HardcodedOutDim, "output shape"),
        (MaxPool, "mean-pooled"),
        (DropoutAlwaysOn, "eval mode is deterministic (dropout off)"),
        (DetachedInput, "gradients reach"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_rejects_mutant(mutant, failing_case):
    result = check_projection(mutant, verbose=False)
    assert result.passed is False
    assert result.impl is ProjectionMLP
    assert any(failing_case in name for name in failed(result)), result.report()
    assert not result.not_implemented


def test_failure_report_has_hint():
    report = check_projection(TutorialBatchNorm, verbose=False).report()
    assert "FAIL" in report and "LayerNorm" in report and "Expected more than 1 value" in report


def test_stub_is_not_implemented_yet():
    result = check_projection(Stub, verbose=False)
    assert result.passed is False and result.not_implemented
    assert result.impl is ProjectionMLP
    assert "NOT IMPLEMENTED YET" in result.report()
    assert all(o.status != PASS for o in result.outcomes)


def test_strict_raises(monkeypatch):
    with pytest.raises(ExerciseFailed, match="ProjectionMLP"):
        check_projection(NoL2Norm, strict=True, verbose=False)
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")
    with pytest.raises(ExerciseFailed):
        check_projection(Stub, verbose=False)
    assert check_projection(ProjectionMLP, verbose=False).passed  # strict + pass: no raise
