"""Known mistakes of step 5a (response distillation of heatmaps), each with the root causes its checker must name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mistakes import Mistake


def heatmaps(b: int, k: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher logits: mostly background, a few confident cells."""
    student = torch.randn(b, k, h, w) * 1.5 - 1.0
    teacher = torch.randn(b, k, h, w) * 2.0 - 2.0
    return student, teacher


def _binary_kl(s, t):
    p_t = t.sigmoid()
    return (F.binary_cross_entropy_with_logits(s, p_t, reduction="none")
            - F.binary_cross_entropy_with_logits(t, p_t, reduction="none"))


def _softmax_kl(s, t):
    return nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s, 1), F.softmax(t.detach(), 1))


def _mean_over_classes(s, t):
    return _binary_kl(s, t.detach()).mean()


def _cross_entropy_only(s, t):
    p_t = t.detach().sigmoid()
    return F.binary_cross_entropy_with_logits(s, p_t, reduction="none").sum(1).mean()


def _reversed_kl(s, t):
    return _binary_kl(t.detach(), s).sum(1).mean()


def _teacher_not_detached(s, t):
    return _binary_kl(s, t).sum(1).mean()


def _mse_on_probabilities(s, t):
    return F.mse_loss(s.sigmoid(), t.detach().sigmoid())


MISTAKES = [
    Mistake("softmax over classes", _softmax_kl, ("softmax",)),
    Mistake("mean over classes", _mean_over_classes, ("mean-classes",)),
    Mistake("cross-entropy without the entropy", _cross_entropy_only, ("entropy",)),
    Mistake("KL reversed", _reversed_kl, ("reversed",)),
    Mistake("teacher not detached", _teacher_not_detached, ("teacher-grad",)),
    Mistake("MSE on probabilities", _mse_on_probabilities, ("mse",)),
]
