"""Known mistakes of step 3 (symmetric InfoNCE), each with the root causes its checker must name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mistakes import Mistake


class _Base(nn.Module):
    """A correct InfoNCE split into steps, so each mistake overrides exactly one."""

    def __init__(self, temperature=0.07):
        super().__init__()
        self.temperature = temperature

    def normalise(self, x):
        return F.normalize(x, dim=1)

    def logits(self, s, t):
        return self.normalise(s) @ self.normalise(t).T / self.temperature

    def combine(self, logits, labels):
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

    def forward(self, student_feat, teacher_feat):
        logits = self.logits(student_feat, teacher_feat)
        return self.combine(logits, torch.arange(logits.shape[0]))


class _NoTemperature(_Base):
    def logits(self, s, t):
        return self.normalise(s) @ self.normalise(t).T


class _TemperatureMultiplied(_Base):
    def logits(self, s, t):
        return self.normalise(s) @ self.normalise(t).T * self.temperature


class _StudentToTeacherOnly(_Base):
    def combine(self, logits, labels):
        return F.cross_entropy(logits, labels)


class _TeacherToStudentOnly(_Base):
    def combine(self, logits, labels):
        return F.cross_entropy(logits.T, labels)


class _DirectionsSummed(_Base):
    def combine(self, logits, labels):
        return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)


class _SumReduction(_Base):
    def combine(self, logits, labels):
        ce = F.cross_entropy(logits, labels, reduction="sum")
        return (ce + F.cross_entropy(logits.T, labels, reduction="sum")) / 2


class _NormaliseDim0(_Base):
    def normalise(self, x):
        return F.normalize(x, dim=0)


class _NoNormalisation(_Base):
    def normalise(self, x):
        return x


class _ReversedLabels(_Base):
    def forward(self, student_feat, teacher_feat):
        logits = self.logits(student_feat, teacher_feat)
        return self.combine(logits, torch.arange(logits.shape[0]).flip(0))


class _NormWithoutEps(_Base):
    def normalise(self, x):
        return x / x.norm(dim=1, keepdim=True)


class _DetachedNorm(_Base):
    def normalise(self, x):
        return x / x.norm(dim=1, keepdim=True).detach().clamp_min(1e-12)


MISTAKES = [
    Mistake("no temperature", _NoTemperature, ("tau-missing",)),
    Mistake("temperature multiplied", _TemperatureMultiplied, ("tau-multiplied",)),
    Mistake("student-to-teacher direction only", _StudentToTeacherOnly, ("one-direction",)),
    Mistake("teacher-to-student direction only", _TeacherToStudentOnly, ("one-direction",)),
    Mistake("directions summed", _DirectionsSummed, ("summed",)),
    Mistake("sum reduction", _SumReduction, ("sum-reduction",)),
    Mistake("normalised over the batch", _NormaliseDim0, ("rows",)),
    Mistake("no normalisation", _NoNormalisation, ("scale",)),
    Mistake("wrong labels", _ReversedLabels, ("positives",)),
    Mistake("norm without eps", _NormWithoutEps, ("eps",)),
    Mistake("detached norm", _DetachedNorm, ("orthogonal",)),
]
