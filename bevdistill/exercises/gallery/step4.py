"""Known mistakes of step 4 (attention transfer), compared by value on the checker's inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bevdistill.bev_grid import resize_bev
from bevdistill.exercises._checking import Gallery, Misconception, observe
from bevdistill.losses.attention import tutorial_attention_loss


class _Base(nn.Module):
    """A correct attention-transfer loss split into steps, so each mistake overrides one."""

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


class _Tutorial(nn.Module):
    def forward(self, student_feat, teacher_feat):
        return tutorial_attention_loss(student_feat, teacher_feat)


class _L1Normalised(_Base):
    def normalise(self, a):
        return F.normalize(a.flatten(1), p=1, dim=1)


class _MeanOverCells(_Base):
    def reduce(self, sq):
        return sq.mean()


class _BatchSummed(_Base):
    def reduce(self, sq):
        return sq.sum()


class _NoResize(_Base):
    def align(self, a_s, a_t):
        return a_s, a_t


class _StudentToTeacherGrid(_Base):
    def align(self, a_s, a_t):
        return resize_bev(a_s, a_t.shape[-2:]), a_t


class _BilinearShrink(_Base):
    def align(self, a_s, a_t):
        size = (min(a_s.shape[2], a_t.shape[2]), min(a_s.shape[3], a_t.shape[3]))
        return tuple(F.interpolate(a, size=size, mode="bilinear") for a in (a_s, a_t))


class _SquareGridAssumed(_Base):
    def align(self, a_s, a_t):
        h = min(a_s.shape[2], a_t.shape[2])
        return F.adaptive_avg_pool2d(a_s, (h, h)), F.adaptive_avg_pool2d(a_t, (h, h))


class _NormaliseDim0(_Base):
    def normalise(self, a):
        return F.normalize(a.flatten(1), p=2, dim=0)


class _NoNormalisation(_Base):
    def normalise(self, a):
        return a.flatten(1)


class _NoNormalisationChannelsSummed(_NoNormalisation):
    def raw(self, feat):
        return feat.pow(2).sum(1, keepdim=True)


class _AbsoluteValue(_Base):
    def raw(self, feat):
        return feat.abs().mean(1, keepdim=True)


class _TeacherNotDetached(_Base):
    def teacher(self, feat):
        return feat


class _NormWithoutEps(_Base):
    def normalise(self, a):
        a = a.flatten(1)
        return a / a.norm(dim=1, keepdim=True)


ENTRIES = [
    Misconception(
        "the tutorial's formula",
        "This is the tutorial's formula (L1-normalised maps, a mean over cells, the student "
        "resized bilinearly), whose value scales as 1/(H*W)^2 and vanishes on a BEV grid: "
        "L2-normalise each map, sum the squared differences over cells, and area-pool both maps "
        "to the smaller grid.",
        lambda: _Tutorial,
    ),
    Misconception(
        "L1 normalisation",
        "The maps are L1-normalised (p=1), so each cell is about 1/(H*W) and the loss vanishes "
        "on a large grid: normalise with F.normalize(a, p=2, dim=1).",
        lambda: _L1Normalised,
    ),
    Misconception(
        "mean over cells",
        "The squared differences are averaged over the cells instead of summed, which divides "
        "the loss by H*W: use ((a_s - a_t) ** 2).sum(dim=1).mean().",
        lambda: _MeanOverCells,
    ),
    Misconception(
        "sum over the batch",
        "The loss is summed over the batch as well as the cells, so it grows with the batch "
        "size: sum over cells (dim=1), then .mean() over the batch.",
        lambda: _BatchSummed,
    ),
    Misconception(
        "grids never resized",
        "The two maps are compared without bringing them to one grid, which fails as soon as "
        "the grids differ: area-pool both raw maps to (min(Hs, Ht), min(Ws, Wt)) with "
        "F.adaptive_avg_pool2d.",
        lambda: _NoResize,
    ),
    Misconception(
        "student resized to the teacher's grid",
        "Only the student's map is resized to the teacher's grid, so a finer teacher makes the "
        "student upsample detail it cannot hold: shrink whichever map is larger: area-pool "
        "both to (min(Hs, Ht), min(Ws, Wt)).",
        lambda: _StudentToTeacherGrid,
    ),
    Misconception(
        "bilinear shrinking",
        "The maps are shrunk with bilinear interpolation, which skips cells when shrinking by "
        "2x or more: shrink by area averaging (F.adaptive_avg_pool2d or bevdistill.resize_bev).",
        lambda: _BilinearShrink,
    ),
    Misconception(
        "square grid assumed",
        "Both maps are pooled to (H, H), which assumes a square grid: pool height and width "
        "separately, to (min(Hs, Ht), min(Ws, Wt)).",
        lambda: _SquareGridAssumed,
    ),
    Misconception(
        "normalised over the batch",
        "The maps are normalised over the batch (dim=0) instead of per sample: use "
        "F.normalize(a.flatten(1), p=2, dim=1).",
        lambda: _NormaliseDim0,
    ),
    Misconception(
        "no normalisation",
        "The attention maps are not normalised, so the loss compares feature magnitudes, not "
        "where the activity is: apply F.normalize(a.flatten(1), p=2, dim=1) to both maps.",
        lambda: _NoNormalisation,
    ),
    Misconception(
        "no normalisation, channels summed",
        "The attention maps are not normalised, so the loss compares feature magnitudes (here "
        "also growing with the channel count), not where the activity is: apply "
        "F.normalize(a.flatten(1), p=2, dim=1) to both maps.",
        lambda: _NoNormalisationChannelsSummed,
    ),
    Misconception(
        "absolute value instead of square",
        "The attention map uses |F| instead of F ** 2: use feat.pow(2).mean(dim=1).",
        lambda: _AbsoluteValue,
    ),
    Misconception(
        "teacher not detached",
        "The teacher's features are not detached, so the loss sends gradients into the teacher: "
        "use teacher_feat.detach().",
        lambda: _TeacherNotDetached,
    ),
    Misconception(
        "norm without eps",
        "Dividing by a.norm() gives 0/0 = NaN for an all-zero map: use "
        "F.normalize(a, p=2, dim=1), which divides by max(norm, eps).",
        lambda: _NormWithoutEps,
    ),
]


def _value(out):
    return out.detach().clone() if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"


def _features(b, c, h, w):
    x = torch.randn(b, c, h, w)
    ys = torch.linspace(-1, 1, h).view(1, 1, h, 1)
    xs = torch.linspace(-1, 1, w).view(1, 1, 1, w)
    centre = torch.rand(b, 2, 1, 1) * 1.2 - 0.6
    return x * (0.3 + 2.0 * torch.exp(-((ys - centre[:, :1]) ** 2 + (xs - centre[:, 1:]) ** 2) / 0.1))


def _gradients(cls):
    s = _features(2, 8, 24, 16).requires_grad_(True)
    t = _features(2, 12, 48, 32).requires_grad_(True)
    cls()(s, t).backward()
    return _value(s.grad), t.grad is not None and bool(t.grad.abs().max() > 0)


def _zero(cls):
    s = torch.zeros(2, 8, 16, 16, requires_grad=True)
    value = cls()(s, _features(2, 8, 16, 16))
    value.backward()
    return _value(value), s.grad is not None and bool(torch.isfinite(s.grad).all())


def probe(cls) -> dict:
    """Values on equal, larger, smaller and non-square grids; gradients; an all-zero map."""
    grids = {
        "same grid": ((3, 8, 16, 16), (3, 8, 16, 16)),
        "student larger": ((2, 8, 64, 64), (2, 8, 16, 16)),
        "teacher larger": ((2, 8, 16, 16), (2, 8, 48, 48)),
        "non-square, teacher larger": ((2, 6, 20, 30), (2, 10, 40, 60)),
        "non-square, student larger": ((2, 6, 48, 24), (2, 10, 16, 12)),
    }
    observations = {}
    for name, (s_shape, t_shape) in grids.items():
        s, t = _features(*s_shape), _features(*t_shape)
        observations[name] = observe(lambda s=s, t=t: _value(cls()(s, t)))
    observations["gradients"] = observe(lambda: _gradients(cls))
    observations["zero student"] = observe(lambda: _zero(cls))
    return observations


GALLERY = Gallery(ENTRIES, probe)
