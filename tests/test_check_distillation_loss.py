"""The step 5 checker accepts a differently written correct loss and rejects wrong ones."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bevdistill import (
    AttentionTransferLoss,
    BEVFusionDistillationLoss,
    ContrastiveLoss,
    HeatmapDistillationLoss,
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


class TutorialProjection(nn.Module):
    """The tutorial's ProjectionMLP: BatchNorm1d raises in training mode at batch size 1."""

    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__()
        self.layer1, self.layer2 = nn.Linear(in_dim, hidden_dim), nn.Linear(hidden_dim, out_dim)
        self.bn, self.dropout = nn.BatchNorm1d(hidden_dim), nn.Dropout(0.1)

    def forward(self, x):
        x = x.flatten(2).mean(2) if x.dim() > 2 else x
        x = self.dropout(F.relu(self.bn(self.layer1(x))))
        return F.normalize(self.layer2(x), dim=1)


class _Base(nn.Module):
    """A correct loss split into steps, so each mutant overrides exactly one."""

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
        self.layers = [n for n in student_channels if n in teacher_channels]
        self.alpha = {"crd": alpha_crd, "at": alpha_at, "kd": alpha_kd}
        self.proj_s = nn.ModuleDict(
            {n: self.projector(student_channels[n], feat_dim) for n in self.layers}
        )
        self.proj_t = nn.ModuleDict(
            {n: self.projector(teacher_channels[n], feat_dim) for n in self.layers}
        )
        self.crd = ContrastiveLoss(temperature)
        self.at = AttentionTransferLoss()
        self.kd = HeatmapDistillationLoss()

    def projector(self, channels, feat_dim):
        return ProjectionMLP(channels, out_dim=feat_dim)

    def key(self, term, layer):
        return f"loss_{term}.{layer}"

    def weight(self, term):
        return self.alpha[term]

    def teacher(self, x):
        return x.detach()

    def fp32(self):
        return torch.autocast("cpu", enabled=False)

    def get(self, features, layer):
        return features[layer]

    def layer_terms(self, layer, s, t):
        return {"crd": self.crd(self.proj_s[layer](s), self.proj_t[layer](t)), "at": self.at(s, t)}

    def kd_term(self, s_out, t_out):
        return self.kd(s_out, t_out)

    def forward(
        self, student_features, teacher_features, student_outputs=None, teacher_outputs=None
    ):
        out = {}
        with self.fp32():
            for layer in self.layers:
                s, t = self.get(student_features, layer), self.get(teacher_features, layer)
                if s is None or t is None:
                    continue
                for term, value in self.layer_terms(
                    layer, s.float(), self.teacher(t).float()
                ).items():
                    out[self.key(term, layer)] = self.weight(term) * value
            if student_outputs is not None and teacher_outputs is not None:
                kd = self.kd_term(student_outputs.float(), self.teacher(teacher_outputs).float())
                out[self.key("kd", "heatmap")] = self.weight("kd") * kd
        return out


class Tutorial(_Base):
    """The tutorial's step 5: BatchNorm projectors, keys without 'loss', alpha_kd unused,
    every layer wrapped in try/except print."""

    def projector(self, channels, feat_dim):
        return TutorialProjection(channels, out_dim=feat_dim)

    def key(self, term, layer):
        return f"{layer}_{term}"

    def forward(
        self, student_features, teacher_features, student_outputs=None, teacher_outputs=None
    ):
        losses = {}
        for layer in student_features:
            if layer in teacher_features and layer in self.proj_s:
                s, t = student_features[layer], teacher_features[layer].detach()
                try:
                    for term, value in self.layer_terms(layer, s, t).items():
                        losses[self.key(term, layer)] = self.weight(term) * value
                except Exception as e:
                    print(f"Warning: Failed to compute distillation loss for {layer}: {e}")
        return losses


class KeysWithoutLoss(_Base):
    def key(self, term, layer):
        return f"{term}.{layer}"


class OneKeyPerLayer(_Base):
    def layer_terms(self, layer, s, t):
        terms = super().layer_terms(layer, s, t)
        return {"distill": terms["crd"] + terms["at"]}


class AlphaIgnored(_Base):
    def weight(self, term):
        return 1.0 if term == "crd" else self.alpha[term]


class TeacherNotDetached(_Base):
    def teacher(self, x):
        return x


class KdUnused(_Base):
    def forward(
        self, student_features, teacher_features, student_outputs=None, teacher_outputs=None
    ):
        return super().forward(student_features, teacher_features)


class SoftmaxKd(_Base):
    """The tutorial's nn.KLDivLoss on a softmax over classes."""

    def kd_term(self, s_out, t_out):
        return nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s_out, 1), F.softmax(t_out, 1))


class BatchNormProjector(_Base):
    def projector(self, channels, feat_dim):
        return TutorialProjection(channels, out_dim=feat_dim)


class SkipsMissingLayer(_Base):
    def get(self, features, layer):
        return features.get(layer)


class SwallowsErrors(_Base):
    def layer_terms(self, layer, s, t):
        try:
            return super().layer_terms(layer, s, t)
        except Exception as e:
            print(f"Warning: Failed to compute distillation loss for {layer}: {e}")
            return {}


class NoFp32Guard(_Base):
    """Its own InfoNCE without the guard: autocast runs its matmul in bfloat16. (The package's
    losses guard themselves, so the mistake shows only in code a learner writes.)"""

    def fp32(self):
        return contextlib.nullcontext()

    def layer_terms(self, layer, s, t):
        z_s, z_t = self.proj_s[layer](s), self.proj_t[layer](t)
        logits = torch.einsum("id,jd->ij", z_s, z_t) / self.crd.temperature
        labels = torch.arange(logits.shape[0])
        crd = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        return {"crd": crd, "at": self.at(s, t)}


class Stub(nn.Module):
    def __init__(self, student_channels, teacher_channels, **kwargs):
        super().__init__()

    def forward(
        self, student_features, teacher_features, student_outputs=None, teacher_outputs=None
    ):
        raise NotImplementedError("TODO: combine the losses")


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


@pytest.mark.parametrize(
    "mutant,failing_case",
    [
        (Tutorial, "keys contain 'loss'"),
        (KeysWithoutLoss, "keys contain 'loss'"),
        (OneKeyPerLayer, "one key per layer and term"),
        (AlphaIgnored, "alpha_crd and alpha_at scale"),
        (TeacherNotDetached, "teacher gets no gradient"),
        (KdUnused, "alpha_kd is used"),
        (SoftmaxKd, "per-class sigmoids"),
        (BatchNormProjector, "batch size 1"),
        (SkipsMissingLayer, "missing layer"),
        (SwallowsErrors, "wrong channel count"),
        (NoFp32Guard, "float32 under autocast"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_rejects_mutant(mutant, failing_case):
    result = check_distillation_loss(mutant, verbose=False)
    assert result.passed is False
    assert result.impl is BEVFusionDistillationLoss
    assert any(failing_case in name for name in failed(result)), result.report()
    assert not result.not_implemented


def test_tutorial_fails_for_each_of_its_defects():
    names = failed(check_distillation_loss(Tutorial, verbose=False))
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
        check_distillation_loss(KdUnused, strict=True, verbose=False)
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")
    with pytest.raises(ExerciseFailed):
        check_distillation_loss(Stub, verbose=False)
    assert check_distillation_loss(BEVFusionDistillationLoss, verbose=False).passed
