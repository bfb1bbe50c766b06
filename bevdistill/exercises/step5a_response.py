"""Checker for step 5a: ``heatmap_kd(student_logits, teacher_logits)``, response distillation.

The contract: both arguments are CenterPoint class-heatmap logits ``[B, K, H, W]`` on one grid.
Each class is its own sigmoid (a cell may hold no object at all), so the divergence is the
binary KL(teacher || student) per class and cell, summed over classes and averaged over cells
and samples, with the teacher detached: ``HeatmapDistillationLoss(weighting=None)`` computes it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from bevdistill.exercises._checking import (
    Case,
    CheckResult,
    Inconclusive,
    expect,
    expect_close,
    run_cases,
)
from bevdistill.exercises._probes import cause, same, scalar, unchanged_inputs
from bevdistill.losses.response import HeatmapDistillationLoss

STEP = "Step 5a - heatmap_kd"


def reference_heatmap_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The package's response loss, every cell weighted equally."""
    return HeatmapDistillationLoss(weighting=None)(student_logits, teacher_logits)


def heatmaps(b: int, k: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher logits: mostly background, a few confident cells."""
    student = torch.randn(b, k, h, w) * 1.5 - 1.0
    teacher = torch.randn(b, k, h, w) * 2.0 - 2.0
    return student, teacher


C = {
    "teacher-grad": cause("teacher-grad", "The teacher's logits are not detached, so the loss sends "
                          "gradients into the teacher: use teacher_logits.detach()."),
    "student-grad": cause("student-grad", "No gradient reaches the student's logits: compute the loss "
                          "with differentiable torch operations, detaching only the teacher."),
    "entropy": cause("entropy", "The teacher's entropy is not subtracted, so identical heatmaps still "
                     "give a positive loss: KL = BCE(student, p_t) - BCE(teacher, p_t)."),
    "softmax": cause("softmax", "The classes are compared through a softmax over them (the tutorial's "
                     "KLDivLoss), which cannot tell 'every class here' from 'nothing here': use one "
                     "sigmoid per class and the binary KL per class and cell."),
    "mean-classes": cause("mean-classes", "The per-class terms are averaged instead of summed, which "
                          "divides the loss by the class count: .sum(dim=1) over classes, then .mean()."),
    "reversed": cause("reversed", "The KL runs from the student to the teacher: the teacher's "
                      "probabilities p_t = sigmoid(teacher) are the target of the BCE, the student's "
                      "logits its input."),
    "mse": cause("mse", "The probabilities are compared by a squared error, which barely pulls where the "
                 "teacher is sure: use the binary KL per class and cell.", "mean-classes"),
}


def _binary_kl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    p_t = t.sigmoid()
    return (F.binary_cross_entropy_with_logits(s, p_t, reduction="none")
            - F.binary_cross_entropy_with_logits(t, p_t, reduction="none"))


def _softmax_kl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")


# What the loss could compute on heatmap logits, with the mistakes each form makes.
_FORMS = {
    (): lambda s, t: _binary_kl(s, t).sum(1).mean(),
    ("mean-classes",): lambda s, t: _binary_kl(s, t).mean(),
    ("reversed",): lambda s, t: _binary_kl(t, s).sum(1).mean(),
    ("reversed", "mean-classes"): lambda s, t: _binary_kl(t, s).mean(),
    ("entropy",): lambda s, t: F.binary_cross_entropy_with_logits(s, t.sigmoid(), reduction="none").sum(1).mean(),
    ("entropy", "mean-classes"): lambda s, t: F.binary_cross_entropy_with_logits(s, t.sigmoid()),
    ("mse",): lambda s, t: F.mse_loss(s.sigmoid(), t.sigmoid()),
    ("mse", "sum"): lambda s, t: (s.sigmoid() - t.sigmoid()).pow(2).sum(1).mean(),
    ("softmax",): _softmax_kl,
}


def _probe_in_place(fn: Any) -> None:
    unchanged_inputs(fn, *heatmaps(2, 3, 8, 8))


def _probe_gradients(fn: Any) -> None:
    s, t = (x.requires_grad_(True) for x in heatmaps(2, 3, 8, 8))
    out = scalar(fn(s, t))
    expect(out.requires_grad, "the loss carries no autograd graph", causes=[C["student-grad"]])
    out.backward()
    expect(t.grad is None or float(t.grad.abs().max()) == 0.0, "the teacher's logits received a gradient",
           causes=[C["teacher-grad"]])
    expect(s.grad is not None and float(s.grad.abs().max()) > 0, "no gradient reached the student's logits",
           causes=[C["student-grad"]])


def _case_identical(fn: Any) -> None:
    _, t = heatmaps(2, 3, 8, 8)
    value = float(scalar(fn(t.clone(), t)).detach())
    expect(abs(value) < 1e-5, f"identical heatmaps give {value:.3g}, expected 0")


def _case_all_or_nothing(fn: Any) -> None:
    everywhere, background = torch.full((2, 3, 8, 8), 6.0), torch.full((2, 3, 8, 8), -6.0)
    value = float(scalar(fn(everywhere, background)).detach())
    expect(value > 1e-2, f"a student seeing every class everywhere against a teacher seeing nothing gets {value:.3g}")


def _probe_form(fn: Any) -> None:
    """Which divergence the loss computes, on two draws of heatmaps."""
    draws = [heatmaps(2, 3, 8, 8), heatmaps(1, 4, 6, 10)]
    got = [float(scalar(fn(s, t)).detach()) for s, t in draws]
    for keys, form in _FORMS.items():
        if all(same(g, float(form(s, t)), rtol=1e-4, atol=1e-7) for g, (s, t) in zip(got, draws, strict=True)):
            keys = tuple(k for k in keys if k != "sum")
            expect(not keys, f"the loss on random heatmaps is {got[0]:.5g}, the reference's "
                   f"{float(reference_heatmap_kd(*draws[0])):.5g}", causes=[C[k] for k in keys])
            return
    raise Inconclusive("the loss matches no divergence of the two heatmaps checked for")


def _case_value(fn: Any) -> None:
    s, t = heatmaps(2, 3, 8, 8)
    expect_close(scalar(fn(s, t)), reference_heatmap_kd(s, t), "loss on 2 x 3 classes x 8 x 8")


def _case_gradients(fn: Any) -> None:
    s, t = heatmaps(2, 3, 8, 8)
    s_ref = s.clone().requires_grad_(True)
    reference_heatmap_kd(s_ref, t).backward()
    s = s.clone().requires_grad_(True)
    scalar(fn(s, t)).backward()
    expect(s.grad is not None, "no gradient reached the student's logits")
    expect_close(s.grad, s_ref.grad, "gradient w.r.t. the student's logits", rtol=1e-3)


_HINT = ("the reference: p_t = sigmoid(teacher); BCE(student logits, p_t) - BCE(teacher logits, p_t), "
         "summed over classes, mean over the rest")
CASES = [
    Case("your code leaves its inputs unchanged", _probe_in_place),
    Case("gradient reaches the student only", _probe_gradients, judges=("teacher-grad", "student-grad")),
    Case("identical heatmaps give 0", _case_identical, cause=C["entropy"]),
    Case("'every class' vs 'no class' is a large loss", _case_all_or_nothing, cause=C["softmax"]),
    Case("the binary KL(teacher || student) per class, summed over classes", _probe_form,
         judges=("mean-classes", "reversed", "mse")),
    Case("matches the binary KL per class and cell", _case_value, _HINT),
    Case("gradient matches the reference", _case_gradients, _HINT),
]


def check_heatmap_kd(
    learner_fn: Any, strict: bool | None = None, verbose: bool = True, time_limit_s: float | None = None
) -> CheckResult:
    """Check a learner's ``heatmap_kd``; ``.impl`` is it if it passed, else the reference."""
    return run_cases(STEP, learner_fn, reference_heatmap_kd, CASES, strict, verbose,
                     time_limit_s=time_limit_s)
