"""Known mistakes of step 4 (attention transfer), each with the root causes its checker must name."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from bevdistill.bev_grid import resize_bev
from bevdistill.losses.attention import tutorial_attention_loss
from mistakes import Mistake


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


MISTAKES = [
    Mistake("the tutorial's formula", _Tutorial, ("teacher-grad", "l1", "mean-cells", "shrink")),
    Mistake("L1 normalisation", _L1Normalised, ("l1",)),
    Mistake("mean over cells", _MeanOverCells, ("mean-cells",)),
    Mistake("sum over the batch", _BatchSummed, ("batch-sum",)),
    Mistake("grids never resized", _NoResize, ("resize",)),
    Mistake("student resized to the teacher's grid", _StudentToTeacherGrid, ("teacher-finer",)),
    Mistake("bilinear shrinking", _BilinearShrink, ("shrink",)),
    Mistake("square grid assumed", _SquareGridAssumed, ("non-square",)),
    Mistake("normalised over the batch", _NormaliseDim0, ("batch",)),
    Mistake("no normalisation", _NoNormalisation, ("scale",)),
    Mistake("no normalisation, channels summed", _NoNormalisationChannelsSummed, ("scale",)),
    Mistake("absolute value instead of square", _AbsoluteValue, ("square",)),
    Mistake("teacher not detached", _TeacherNotDetached, ("teacher-grad",)),
    Mistake("norm without eps", _NormWithoutEps, ("eps",)),
]
