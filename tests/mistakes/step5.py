"""Known mistakes of step 5 (the combined loss), each with the root causes its checker must name."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from bevdistill.losses.attention import AttentionTransferLoss
from bevdistill.losses.contrastive import ContrastiveLoss
from bevdistill.losses.response import HeatmapDistillationLoss
from bevdistill.projection import ProjectionMLP
from mistakes import Mistake


class _BatchNormProjection(nn.Module):
    """The tutorial's projector: BatchNorm1d, which raises at batch size 1 in training mode."""

    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__()
        self.layer1, self.layer2 = nn.Linear(in_dim, hidden_dim), nn.Linear(hidden_dim, out_dim)
        self.bn = nn.BatchNorm1d(hidden_dim)

    def forward(self, x):
        x = x.flatten(2).mean(2) if x.dim() > 2 else x
        return F.normalize(self.layer2(F.relu(self.bn(self.layer1(x)))), dim=1)


class _Base(nn.Module):
    """A correct combined loss split into steps, so each mistake overrides exactly one."""

    def __init__(self, student_channels, teacher_channels, feat_dim=128, temperature=0.07,
                 alpha_crd=1.0, alpha_at=0.5, alpha_kd=0.5):
        super().__init__()
        self.channels = {k: (student_channels[k], teacher_channels[k]) for k in student_channels}
        self.alpha = {"crd": alpha_crd, "at": alpha_at, "kd": alpha_kd}
        self.proj_s = nn.ModuleDict({k: self.projector(c[0], feat_dim) for k, c in self.channels.items()})
        self.proj_t = nn.ModuleDict({k: self.projector(c[1], feat_dim) for k, c in self.channels.items()})
        self.crd, self.at, self.kd = ContrastiveLoss(temperature), AttentionTransferLoss(), HeatmapDistillationLoss()

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

    def get(self, features, layer, channels):
        x = features[layer]
        if x.shape[1] != channels:
            raise ValueError(f"{layer!r}: expected {channels} channels, got {x.shape[1]}")
        return x.float()

    def layer_terms(self, layer, s, t):
        return {"crd": self.crd(self.proj_s[layer](s), self.proj_t[layer](t)), "at": self.at(s, t)}

    def forward(self, student_features, teacher_features, student_outputs=None, teacher_outputs=None):
        out = {}
        with self.fp32():
            for layer, (cs, ct) in self.channels.items():
                s, t = self.get(student_features, layer, cs), self.get(teacher_features, layer, ct)
                if s is None or t is None:
                    continue
                for term, value in self.layer_terms(layer, s, self.teacher(t)).items():
                    out[self.key(term, layer)] = self.weight(term) * value
            if student_outputs is not None and teacher_outputs is not None:
                kd = self.kd_term(student_outputs.float(), self.teacher(teacher_outputs).float())
                out[self.key("kd", "heatmap")] = self.weight("kd") * kd
        return out

    def kd_term(self, s_out, t_out):
        return self.kd(s_out, t_out)


class _Tutorial(_Base):
    """The tutorial's step 5: BatchNorm projectors, keys without 'loss', no kd, try/except print."""

    def projector(self, channels, feat_dim):
        return _BatchNormProjection(channels, out_dim=feat_dim)

    def forward(self, student_features, teacher_features, student_outputs=None, teacher_outputs=None):
        losses = {}
        for layer in student_features:
            if layer in teacher_features and layer in self.proj_s:
                try:
                    s, t = student_features[layer], teacher_features[layer].detach()
                    for term, value in self.layer_terms(layer, s, t).items():
                        losses[f"{layer}_{term}"] = self.weight(term) * value
                except Exception as e:  # the tutorial's pattern, kept here as the mistake it is
                    print(f"Warning: Failed to compute distillation loss for {layer}: {e}")
        return losses


class _KeysWithoutLoss(_Base):
    def key(self, term, layer):
        return f"{term}.{layer}"


class _OneKeyPerLayer(_Base):
    def layer_terms(self, layer, s, t):
        terms = super().layer_terms(layer, s, t)
        return {"distill": terms["crd"] + terms["at"] * self.alpha["at"] / self.alpha["crd"]}

    def weight(self, term):
        return self.alpha["crd" if term == "distill" else term]


class _AlphaCrdIgnored(_Base):
    def weight(self, term):
        return 1.0 if term == "crd" else self.alpha[term]


class _TeacherNotDetached(_Base):
    def teacher(self, x):
        return x


class _OutputsIgnored(_Base):
    def forward(self, student_features, teacher_features, student_outputs=None, teacher_outputs=None):
        return super().forward(student_features, teacher_features)


class _SoftmaxKd(_Base):
    def kd_term(self, s_out, t_out):
        return nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s_out, 1), F.softmax(t_out, 1))


class _BatchNormProjector(_Base):
    def projector(self, channels, feat_dim):
        return _BatchNormProjection(channels, out_dim=feat_dim)


class _SkipsMissingLayer(_Base):
    def get(self, features, layer, channels):
        return None if layer not in features else super().get(features, layer, channels)


class _SwallowsErrors(_Base):
    def get(self, features, layer, channels):
        return features[layer].float()

    def layer_terms(self, layer, s, t):
        try:
            return super().layer_terms(layer, s, t)
        except Exception as e:  # the tutorial's pattern, kept as the mistake it is
            print(f"Warning: Failed to compute distillation loss for {layer}: {e}")
            return {}


def _plain_info_nce(z_s, z_t, temperature):
    logits = z_s @ z_t.T / temperature
    labels = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class _NoFp32Guard(_Base):
    """Its own InfoNCE, in whatever dtype autocast picks (bfloat16 on a CPU)."""

    def fp32(self):
        return contextlib.nullcontext()

    def layer_terms(self, layer, s, t):
        z_s, z_t = self.proj_s[layer](s), self.proj_t[layer](t)
        return {"crd": _plain_info_nce(z_s, z_t, self.crd.temperature), "at": self.at(s, t)}


MISTAKES = [
    Mistake("the tutorial's loss", _Tutorial, ("keys", "missing-layer", "channels", "kd", "batch1", "fp32")),
    Mistake("keys without 'loss'", _KeysWithoutLoss, ("keys",)),
    Mistake("one key per layer", _OneKeyPerLayer, ("one-key",)),
    Mistake("alpha ignored", _AlphaCrdIgnored, ("alpha",)),
    Mistake("teacher not detached", _TeacherNotDetached, ("teacher-grad",)),
    Mistake("outputs ignored", _OutputsIgnored, ("kd",)),
    Mistake("softmax over classes", _SoftmaxKd, ("kd-sigmoid",)),
    Mistake("BatchNorm projectors", _BatchNormProjector, ("batch1",)),
    Mistake("missing layer skipped", _SkipsMissingLayer, ("missing-layer",)),
    Mistake("errors printed and swallowed", _SwallowsErrors, ("channels",)),
    Mistake("no float32 guard", _NoFp32Guard, ("fp32",)),
]
