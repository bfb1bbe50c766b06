"""Checker for step 3: the learner's ``ContrastiveLoss(temperature=0.07)``.

A loss has no weights, so the learner's values and gradients are compared with the reference
:class:`~bevdistill.ContrastiveLoss` on seeded inputs, with the relative error reported. The
inputs are deliberately not unit vectors, so a missing or wrong normalisation shows.
"""

from __future__ import annotations

import warnings

import torch

from bevdistill.exercises._checking import Case, CheckResult, expect, expect_close, run_cases
from bevdistill.exercises.gallery.step3 import GALLERY
from bevdistill.losses.contrastive import ContrastiveLoss

DIM = 16


def _features(batch: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher features with different scales and offsets (not unit vectors)."""
    student = torch.randn(batch, DIM, dtype=dtype) * 3.0 + 0.5
    teacher = torch.randn(batch, DIM, dtype=dtype) * 0.4 - 1.0
    teacher[: batch // 2] += 0.5 * student[: batch // 2]  # some pairs agree, so directions differ
    return student, teacher


def _value_case(batch: int):
    def run(learner_cls) -> None:
        s, t = _features(batch)
        expected = ContrastiveLoss(temperature=0.07)(s, t)
        actual = learner_cls(temperature=0.07)(s, t)
        expect_close(actual, expected, f"loss at B={batch}, temperature 0.07", rtol=1e-4)

    return run


def _case_temperature(learner_cls) -> None:
    s, t = _features(6)
    values = {}
    for temp in (0.07, 0.5):
        values[temp] = learner_cls(temperature=temp)(s, t)
        expected = ContrastiveLoss(temperature=temp)(s, t)
        expect_close(values[temp], expected, f"loss at temperature {temp}", rtol=1e-4)


def _case_symmetric(learner_cls) -> None:
    s, t = _features(6)
    loss = learner_cls(temperature=0.07)
    forward, swapped = loss(s, t), loss(t, s)
    expect_close(swapped, forward, "loss(teacher, student) vs loss(student, teacher)", rtol=1e-4)


def _case_gradients(learner_cls) -> None:
    grads = []
    base_s, base_t = _features(5)
    for impl in (learner_cls, ContrastiveLoss):
        s = base_s.clone().requires_grad_(True)
        t = base_t.clone().requires_grad_(True)
        value = impl(temperature=0.1)(s, t)
        expect(
            isinstance(value, torch.Tensor) and value.requires_grad,
            "the loss carries no autograd graph",
        )
        value.backward()
        expect(s.grad is not None and t.grad is not None, "no gradient reaches an input")
        grads.append((s.grad, t.grad))
    expect_close(grads[0][0], grads[1][0], "gradient w.r.t. student_feat", rtol=1e-3)
    expect_close(grads[0][1], grads[1][1], "gradient w.r.t. teacher_feat", rtol=1e-3)


def _case_batch1(learner_cls) -> None:
    s, t = _features(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a warning here is welcome, not required
        value = learner_cls(temperature=0.07)(s, t)
    expect(isinstance(value, torch.Tensor), f"expected a tensor, got {type(value).__name__}")
    expect(bool(torch.isfinite(value).all()), f"loss at B=1 is {value}, expected 0")
    expect(abs(float(value)) < 1e-6, f"loss at B=1 is {float(value):.4g}, expected 0")


def _case_zero_vector(learner_cls) -> None:
    s, t = _features(4)
    s[1] = 0.0
    t[2] = 0.0
    s.requires_grad_(True)
    value = learner_cls(temperature=0.07)(s, t)
    expect_close(
        value, ContrastiveLoss(temperature=0.07)(s, t), "loss with zero vectors", rtol=1e-4
    )
    value.backward()
    expect(bool(torch.isfinite(s.grad).all()), "the gradient is NaN where a feature is all zero")


CASES = [
    Case(
        "value at B=4 (unnormalised inputs)",
        _value_case(4),
        "normalise both inputs with F.normalize(x, dim=1), logits = s @ t.T / temperature, "
        "labels = arange(B), average the two cross-entropies",
    ),
    Case(
        "value at B=8",
        _value_case(8),
        "cross-entropy with its default mean reduction, in both directions, then / 2",
    ),
    Case(
        "temperature is used (0.07 and 0.5)",
        _case_temperature,
        "divide the similarity matrix by self.temperature",
    ),
    Case(
        "symmetric: both directions are averaged",
        _case_symmetric,
        "average F.cross_entropy(logits, labels) and F.cross_entropy(logits.T, labels)",
    ),
    Case(
        "gradients match the reference for both inputs",
        _case_gradients,
        "compute the loss with differentiable torch operations only (no .detach(), .item())",
    ),
    Case(
        "batch size 1 gives 0 (one candidate, no negative), not NaN",
        _case_batch1,
        "a 1x1 logit matrix has cross-entropy 0; do not divide by B - 1",
    ),
    Case(
        "a zero feature vector gives no NaN",
        _case_zero_vector,
        "F.normalize divides by max(norm, eps); x / x.norm() divides by 0",
    ),
]


def check_contrastive(
    learner_cls,
    strict: bool | None = None,
    verbose: bool = True,
    time_limit_s: float | None = None,
) -> CheckResult:
    """Check a learner's ``ContrastiveLoss``; ``.impl`` is it if it passed, else the reference."""
    return run_cases(
        "Step 3: ContrastiveLoss",
        learner_cls,
        ContrastiveLoss,
        CASES,
        strict,
        verbose,
        gallery=GALLERY,
        time_limit_s=time_limit_s,
    )
