"""Known mistakes of step 3 (symmetric InfoNCE), compared by value on the checker's inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bevdistill.exercises._checking import Gallery, Misconception, observe


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


ENTRIES = [
    Misconception(
        "no temperature",
        "The similarities are never divided by the temperature, so every logit stays in [-1, 1] "
        "and the softmax is nearly flat: divide the similarity matrix by self.temperature.",
        lambda: _NoTemperature,
    ),
    Misconception(
        "temperature multiplied",
        "The similarities are multiplied by the temperature instead of divided by it, which "
        "flattens the softmax 200-fold at 0.07: use logits = s @ t.T / self.temperature.",
        lambda: _TemperatureMultiplied,
    ),
    Misconception(
        "student-to-teacher direction only",
        "Only one direction is computed (each student picks its teacher, as SimCLR's one-sided "
        "InfoNCE does): add F.cross_entropy(logits.T, labels) and average the two.",
        lambda: _StudentToTeacherOnly,
    ),
    Misconception(
        "teacher-to-student direction only",
        "Only the teacher-to-student direction (logits.T) is computed, so the loss is not "
        "symmetric: average F.cross_entropy(logits, labels) and F.cross_entropy(logits.T, labels).",
        lambda: _TeacherToStudentOnly,
    ),
    Misconception(
        "directions summed",
        "The two directions are added, not averaged, which doubles the loss: divide their sum by 2.",
        lambda: _DirectionsSummed,
    ),
    Misconception(
        "sum reduction",
        "cross_entropy uses reduction='sum', so the loss grows with the batch size: keep the "
        "default mean reduction.",
        lambda: _SumReduction,
    ),
    Misconception(
        "normalised over the batch",
        "The features are normalised over the batch (dim=0) instead of per sample: use "
        "F.normalize(x, dim=1) so every row is a unit vector.",
        lambda: _NormaliseDim0,
    ),
    Misconception(
        "no normalisation",
        "The features are not L2-normalised, so the logits are dot products of any size, not "
        "cosine similarities: apply F.normalize(x, dim=1) to both inputs first.",
        lambda: _NoNormalisation,
    ),
    Misconception(
        "wrong labels",
        "The labels do not point at the diagonal: sample i's positive is teacher i, so use "
        "labels = torch.arange(B).",
        lambda: _ReversedLabels,
    ),
    Misconception(
        "norm without eps",
        "Dividing by x.norm() gives 0/0 = NaN for an all-zero feature: use F.normalize(x, dim=1), "
        "which divides by max(norm, eps).",
        lambda: _NormWithoutEps,
    ),
    Misconception(
        "detached norm",
        "The norm is detached, so the value is right but the gradient ignores how normalising "
        "depends on x: do not .detach() any part of the computation (use F.normalize).",
        lambda: _DetachedNorm,
    ),
]


def _value(out):
    return out.detach().clone() if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"


def _features(batch: int, dim: int = 16):
    student = torch.randn(batch, dim) * 3.0 + 0.5
    teacher = torch.randn(batch, dim) * 0.4 - 1.0
    teacher[: batch // 2] += 0.5 * student[: batch // 2]
    return student, teacher


def _gradients(cls, s, t):
    s, t = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    cls(temperature=0.1)(s, t).backward()
    return _value(s.grad), _value(t.grad)


def _zero_vectors(cls, s, t):
    s, t = s[:4].clone(), t[:4].clone()
    s[1], t[2] = 0.0, 0.0
    s.requires_grad_(True)
    value = cls(temperature=0.07)(s, t)
    value.backward()
    return _value(value), bool(torch.isfinite(s.grad).all())


def probe(cls) -> dict:
    """Values and gradients on the kind of inputs the checker uses."""
    s, t = _features(6)
    return {
        "at 0.07": observe(lambda: _value(cls(temperature=0.07)(s, t))),
        "at 0.5": observe(lambda: _value(cls(temperature=0.5)(s, t))),
        "B=3": observe(lambda: _value(cls(temperature=0.07)(s[:3], t[:3]))),
        "swapped": observe(lambda: _value(cls(temperature=0.07)(t, s))),
        "gradients": observe(lambda: _gradients(cls, s, t)),
        "B=1": observe(lambda: _value(cls(temperature=0.07)(s[:1], t[:1]))),
        "zero vectors": observe(lambda: _zero_vectors(cls, s, t)),
    }


GALLERY = Gallery(ENTRIES, probe)
