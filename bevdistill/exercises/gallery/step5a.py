"""Known mistakes of step 5a (response distillation of heatmaps), compared by value."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bevdistill.exercises._checking import Gallery, Misconception, observe


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


ENTRIES = [
    Misconception(
        "softmax over classes",
        "The classes are compared through a softmax over them (the tutorial's KLDivLoss), which "
        "cannot tell 'every class here' from 'nothing here': use one sigmoid per class and the "
        "binary KL per class and cell.",
        lambda: _softmax_kl,
    ),
    Misconception(
        "mean over classes",
        "The per-class terms are averaged instead of summed, which divides the loss by the class "
        "count: .sum(dim=1) over classes, then .mean().",
        lambda: _mean_over_classes,
    ),
    Misconception(
        "cross-entropy without the entropy",
        "The teacher's entropy is not subtracted, so identical heatmaps still give a positive "
        "loss: KL = BCE(student, p_t) - BCE(teacher, p_t).",
        lambda: _cross_entropy_only,
    ),
    Misconception(
        "KL reversed",
        "The KL runs from the student to the teacher: the teacher's probabilities p_t = "
        "sigmoid(teacher) are the target of the BCE, the student's logits its input.",
        lambda: _reversed_kl,
    ),
    Misconception(
        "teacher not detached",
        "The teacher's logits are not detached, so the loss sends gradients into the teacher: "
        "use teacher_logits.detach().",
        lambda: _teacher_not_detached,
    ),
    Misconception(
        "MSE on probabilities",
        "The probabilities are compared by mean squared error, which barely pulls where the "
        "teacher is sure: use the binary KL per class and cell.",
        lambda: _mse_on_probabilities,
    ),
]


def _value(out):
    return out.detach().clone() if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"


def _gradients(fn, s, t):
    s, t = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    fn(s, t).backward()
    return _value(s.grad), t.grad is not None and bool(t.grad.abs().max() > 0)


def probe(fn) -> dict:
    s, t = heatmaps(2, 3, 8, 8)
    return {
        "value": observe(lambda: _value(fn(s, t))),
        "identical": observe(lambda: _value(fn(t.clone(), t))),
        "gradients": observe(lambda: _gradients(fn, s, t)),
    }


GALLERY = Gallery(ENTRIES, probe)
