"""Checker for step 5a: ``heatmap_kd(student_logits, teacher_logits)``, response distillation.

The contract: both arguments are CenterPoint class-heatmap logits ``[B, K, H, W]`` on one grid.
Each class is its own sigmoid (a cell may hold no object at all), so the divergence is the
binary KL(teacher || student) per class and cell, summed over classes and averaged over cells
and samples, with the teacher detached: ``HeatmapDistillationLoss(weighting=None)`` computes it.
"""

from __future__ import annotations

from typing import Any

import torch

from bevdistill.exercises._checking import Case, CheckResult, expect, expect_close, run_cases
from bevdistill.exercises.gallery.step5a import GALLERY, heatmaps
from bevdistill.losses.response import HeatmapDistillationLoss

STEP = "Step 5a - heatmap_kd"


def reference_heatmap_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The package's response loss, every cell weighted equally."""
    return HeatmapDistillationLoss(weighting=None)(student_logits, teacher_logits)


def _scalar(fn: Any, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    out = fn(s, t)
    expect(
        isinstance(out, torch.Tensor) and out.dim() == 0,
        f"heatmap_kd must return a scalar tensor, got {out!r:.60}",
        "sum over classes (dim=1), then .mean() over the batch and cells",
    )
    return out


def _case_value(fn: Any) -> None:
    s, t = heatmaps(2, 3, 8, 8)
    expect_close(
        _scalar(fn, s, t),
        reference_heatmap_kd(s, t),
        "loss on 2 x 3 classes x 8 x 8",
        hint="p_t = sigmoid(teacher); BCE(student logits, p_t) - BCE(teacher logits, p_t), "
        "summed over classes, mean over the rest",
    )


def _case_identical(fn: Any) -> None:
    _, t = heatmaps(2, 3, 8, 8)
    value = float(_scalar(fn, t.clone(), t).detach())
    expect(abs(value) < 1e-5, f"identical heatmaps give {value:.3g}, expected 0",
           "a KL divergence subtracts the teacher's entropy, so it is 0 when the maps agree")


def _case_all_or_nothing(fn: Any) -> None:
    everywhere = torch.full((2, 3, 8, 8), 6.0)
    background = torch.full((2, 3, 8, 8), -6.0)
    value = float(_scalar(fn, everywhere, background).detach())
    expect(
        value > 1.0,
        f"a student seeing every class everywhere against a teacher seeing nothing gets {value:.3g}",
        "each class is an independent sigmoid: a softmax over classes cannot tell 'all' from 'none'",
    )


def _case_gradients(fn: Any) -> None:
    s, t = heatmaps(2, 3, 8, 8)
    s_ref = s.clone().requires_grad_(True)
    reference_heatmap_kd(s_ref, t).backward()
    s, t = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    _scalar(fn, s, t).backward()
    expect(t.grad is None or float(t.grad.abs().max()) == 0.0,
           "the teacher's logits received a gradient", "detach the teacher: teacher_logits.detach()")
    expect(s.grad is not None, "no gradient reached the student's logits")
    expect_close(s.grad, s_ref.grad, "gradient w.r.t. the student's logits", rtol=1e-3)


CASES = [
    Case("matches the binary KL per class and cell", _case_value),
    Case("identical heatmaps give 0", _case_identical),
    Case("'every class' vs 'no class' is a large loss", _case_all_or_nothing),
    Case("gradient reaches the student only, and matches", _case_gradients),
]


def check_heatmap_kd(
    learner_fn: Any, strict: bool | None = None, verbose: bool = True, time_limit_s: float | None = None
) -> CheckResult:
    """Check a learner's ``heatmap_kd``; ``.impl`` is it if it passed, else the reference."""
    return run_cases(STEP, learner_fn, reference_heatmap_kd, CASES, strict, verbose,
                     gallery=GALLERY, time_limit_s=time_limit_s)
