"""Checker for step 3: the learner's ``ContrastiveLoss(temperature=0.07)``.

Probes first, each isolating one property of symmetric InfoNCE: invariance to the length of
each input row, how the loss moves with the temperature (on orthonormal inputs, where its
value is known in closed form: that tells 1/tau from tau, tau squared or none, a mean from a
sum, logits from probabilities), where the positives lie, symmetry under swapping student and
teacher, 0 at B = 1, a finite gradient at a zero vector, a gradient orthogonal to each row.
Then the values and gradients are compared with the reference :class:`~bevdistill.ContrastiveLoss`
on seeded inputs that are deliberately not unit vectors.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from bevdistill.exercises._checking import (
    Case,
    CheckFailure,
    CheckResult,
    Inconclusive,
    expect,
    expect_close,
    run_cases,
)
from bevdistill.exercises._probes import cause as _cause
from bevdistill.exercises._probes import same, scalar, unchanged_inputs
from bevdistill.losses.contrastive import ContrastiveLoss

DIM = 16
C = {
    "graph": _cause("graph", "The loss carries no autograd graph to an input (a .detach(), .item(), "
                    "numpy or torch.no_grad() inside): compute it with differentiable torch operations.",
                    "orthogonal"),
    "scale": _cause("scale", "The features are not L2-normalised, so the logits are dot products of "
                    "any size, not cosine similarities: apply F.normalize(x, dim=1) to both inputs first.",
                    "rows", "orthogonal"),
    "rows": _cause("rows", "The features are not normalised row by row (each sample its own unit "
                   "vector): use F.normalize(x, dim=1), not dim=0 or one norm for the whole batch.",
                   "orthogonal"),
    "eps": _cause("eps", "Dividing by x.norm() gives 0/0 = NaN for an all-zero feature: use "
                  "F.normalize(x, dim=1), which divides by max(norm, eps)."),
    "tau-multiplied": _cause("tau-multiplied", "The similarities are multiplied by the temperature "
                             "instead of divided by it: logits = s @ t.T / self.temperature."),
    "tau-squared": _cause("tau-squared", "The temperature is applied twice (the logits are divided "
                          "by tau squared): divide the similarity matrix by self.temperature once."),
    "tau-missing": _cause("tau-missing", "The similarities are never divided by the temperature, so "
                          "every logit stays in [-1, 1]: divide the similarity matrix by self.temperature."),
    "tau-other": _cause("tau-other", "The loss does not follow the temperature as InfoNCE does "
                        "(logits = cosine / tau): divide the cosine similarity matrix by self.temperature, "
                        "nothing else."),
    "summed": _cause("summed", "The two directions are added, not averaged, which doubles the loss: "
                     "divide their sum by 2."),
    "sum-reduction": _cause("sum-reduction", "cross_entropy uses reduction='sum', so the loss grows "
                            "with the batch size: keep the default mean reduction."),
    "probabilities": _cause("probabilities", "cross_entropy is given probabilities (a softmax "
                            "already applied), but it takes logits and applies log_softmax itself: "
                            "pass the scaled similarity matrix as it is.", "one-direction"),
    "positives": _cause("positives", "The positives are not on the diagonal: sample i's positive is "
                        "teacher i, so use labels = torch.arange(B)."),
    "one-direction": _cause("one-direction", "Only one direction is computed, so the loss changes when "
                            "student and teacher swap: average F.cross_entropy(logits, labels) and "
                            "F.cross_entropy(logits.T, labels)."),
    "batch1": _cause("batch1", "At B = 1 the loss is not 0: one candidate means one positive and no "
                     "negative, and the cross-entropy of a 1 x 1 logit matrix is 0 (do not divide by B - 1)."),
    "orthogonal": _cause("orthogonal", "Part of the computation is detached (the norm?), so the value is "
                         "right but the gradient ignores how normalising depends on x: detach nothing "
                         "(F.normalize does it all)."),
}


def _features(batch: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher features with different scales and offsets (not unit vectors)."""
    student = torch.randn(batch, DIM, dtype=dtype) * 3.0 + 0.5
    teacher = torch.randn(batch, DIM, dtype=dtype) * 0.4 - 1.0
    teacher[: batch // 2] += 0.5 * student[: batch // 2]  # some pairs agree, so directions differ
    return student, teacher


def _loss(cls: Any, s: torch.Tensor, t: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scalar(cls(temperature=tau)(s, t))


def _value(cls: Any, s, t, tau: float = 0.07) -> float:
    return float(_loss(cls, s, t, tau).detach())


# --- probes -----------------------------------------------------------------------------------


def _probe_in_place(cls: Any) -> None:
    unchanged_inputs(lambda s, t: cls(temperature=0.07)(s, t), *_features(4))


def _probe_graph(cls: Any) -> None:
    s, t = (x.requires_grad_(True) for x in _features(4))
    value = _loss(cls, s, t)
    expect(value.requires_grad, "the loss carries no autograd graph", causes=[C["graph"]])
    value.backward()
    expect(s.grad is not None and t.grad is not None, "no gradient reaches an input", causes=[C["graph"]])


def _probe_scale(cls: Any) -> None:
    s, t = _features(6)
    base = _value(cls, s, t)
    for what, args in (("3 x student", (3 * s, t)), ("0.3 x teacher", (s, 0.3 * t))):
        got = _value(cls, *args)
        expect(same(got, base), f"scaling the input ({what}) changes the loss from {base:.5g} to {got:.5g}")


def _probe_rows(cls: Any) -> None:
    s, t = _features(6)
    scaled = s.clone()
    scaled[0] *= 5.0
    base, got = _value(cls, s, t), _value(cls, scaled, t)
    expect(same(got, base), f"scaling sample 0 alone changes the loss from {base:.5g} to {got:.5g}")


def _probe_zero(cls: Any) -> None:
    s, t = _features(4)
    s[1], t[2] = 0.0, 0.0
    s.requires_grad_(True)
    value = _loss(cls, s, t)
    expect(bool(torch.isfinite(value)), f"with an all-zero feature the loss is {float(value.detach())}")
    value.backward()
    expect(s.grad is not None and bool(torch.isfinite(s.grad).all()),
           "the gradient is NaN where a feature is all zero")


_TAUS = (0.05, 0.2, 0.5, 2.0)
_B = 4
_SCALE = {"1/tau": lambda t: 1 / t, "tau": lambda t: t, "1/tau^2": lambda t: 1 / t**2, "1": lambda t: 1.0}
_SCALE_CAUSE = {"tau": "tau-multiplied", "1/tau^2": "tau-squared", "1": "tau-missing"}
_FACTOR = {1: (), 2: ("summed",), _B: ("sum-reduction",), 2 * _B: ("summed", "sum-reduction")}


def _model(k: float, probabilities: bool) -> float:
    """Symmetric InfoNCE of logits k * I (B x B), optionally fed probabilities."""
    logits = k * torch.eye(_B, dtype=torch.float64)
    if probabilities:
        logits = logits.softmax(dim=1)
    return float(F.cross_entropy(logits, torch.arange(_B)))


def _probe_temperature(cls: Any) -> None:
    """On identical orthonormal rows the loss is log(1 + (B-1) exp(-1/tau)): fit how it moves."""
    eye = torch.eye(_B, DIM)
    got = [_value(cls, eye.clone(), eye.clone(), tau) for tau in _TAUS]
    for scale, k in _SCALE.items():
        for factor, extra in _FACTOR.items():
            for probabilities in (False, True):
                want = [factor * _model(k(tau), probabilities) for tau in _TAUS]
                if all(same(g, w, rtol=2e-3, atol=1e-6) for g, w in zip(got, want, strict=True)):
                    keys = [*([_SCALE_CAUSE[scale]] if scale in _SCALE_CAUSE else []), *extra,
                            *(["probabilities"] if probabilities else [])]
                    expect(not keys, f"on identical orthonormal inputs the loss at tau = {_TAUS} is "
                           f"{[round(g, 5) for g in got]}, expected {[round(_model(1 / t, False), 5) for t in _TAUS]}",
                           causes=[C[k] for k in keys])
                    return
    if all(same(g, _model(1 / tau, False), rtol=2e-3, atol=1e-6) for g, tau in zip(got, _TAUS, strict=True)):
        return
    raise Inconclusive("the loss on identical orthonormal inputs fits no simple model")


def _probe_positives(cls: Any) -> None:
    eye = torch.eye(_B, DIM)
    matched, shuffled = _value(cls, eye, eye.clone(), 0.1), _value(cls, eye, eye.flip(0), 0.1)
    if math.isclose(matched, shuffled, rel_tol=1e-3, abs_tol=1e-6):
        raise Inconclusive("the loss does not tell matched pairs from shuffled ones")
    expect(matched < shuffled, f"identical pairs give {matched:.4g}, more than shuffled pairs ({shuffled:.4g})")


def _probe_symmetric(cls: Any) -> None:
    s, t = (F.normalize(x, dim=1) for x in _features(6))
    forward, swapped = _value(cls, s, t), _value(cls, t, s)
    expect(same(forward, swapped), f"loss(teacher, student) = {swapped:.5g}, loss(student, teacher) = {forward:.5g}")


def _probe_batch1(cls: Any) -> None:
    s, t = _features(1)
    value = _value(cls, s, t)
    expect(abs(value) < 1e-6, f"loss at B=1 is {value:.4g}, expected 0")


def _probe_orthogonal(cls: Any) -> None:
    s, t = (x.requires_grad_(True) for x in _features(5))
    _loss(cls, s, t).backward()
    for name, x in (("student", s), ("teacher", t)):
        if x.grad is None:
            raise Inconclusive("no gradient")
        g, x = x.grad, x.detach()
        along = (g * x).sum(1).abs() / (g.norm(dim=1) * x.norm(dim=1)).clamp_min(1e-12)
        expect(float(along.max()) < 1e-3,
               f"the gradient w.r.t. the {name} has a component along its own rows (cosine "
               f"{float(along.max()):.3g}): the loss is meant to ignore their length")


def _probe(name: str, run, key: str) -> Case:
    return Case(name, run, cause=C.get(key))


PROBES = [
    Case("your code leaves its inputs unchanged", _probe_in_place),
    _probe("the loss carries a gradient to both inputs", _probe_graph, "graph"),
    _probe("scaling either input leaves the loss unchanged", _probe_scale, "scale"),
    _probe("each row is normalised on its own", _probe_rows, "rows"),
    _probe("a zero feature vector gives no NaN", _probe_zero, "eps"),
    Case("the temperature divides the logits (identical orthonormal inputs, tau 0.05 to 2)",
         _probe_temperature, judges=("tau-multiplied", "tau-squared", "tau-missing", "summed",
                                     "sum-reduction", "probabilities")),
    _probe("the positives lie on the diagonal", _probe_positives, "positives"),
    _probe("symmetric: swapping student and teacher gives the same loss", _probe_symmetric, "one-direction"),
    _probe("batch size 1 gives 0 (one candidate, no negative)", _probe_batch1, "batch1"),
    _probe("the gradient ignores each row's length", _probe_orthogonal, "orthogonal"),
]


# --- comparisons with the reference ---------------------------------------------------------------


def _value_case(batch: int):
    def run(learner_cls) -> None:
        s, t = _features(batch)
        expect_close(_loss(learner_cls, s, t), ContrastiveLoss(temperature=0.07)(s, t),
                     f"loss at B={batch}, temperature 0.07", rtol=1e-4)

    return run


def _case_temperature(learner_cls) -> None:
    s, t = _features(6)
    for temp in (0.07, 0.5):
        expect_close(_loss(learner_cls, s, t, temp), ContrastiveLoss(temperature=temp)(s, t),
                     f"loss at temperature {temp}", rtol=1e-4)


def _case_gradients(learner_cls) -> None:
    grads = []
    base_s, base_t = _features(5)
    for impl in (learner_cls, ContrastiveLoss):
        s, t = base_s.clone().requires_grad_(True), base_t.clone().requires_grad_(True)
        _loss(impl, s, t, 0.1).backward()
        if s.grad is None or t.grad is None:
            raise CheckFailure("no gradient reaches an input")
        grads.append((s.grad, t.grad))
    expect_close(grads[0][0], grads[1][0], "gradient w.r.t. student_feat", rtol=1e-3)
    expect_close(grads[0][1], grads[1][1], "gradient w.r.t. teacher_feat", rtol=1e-3)


_FORMULA = ("the reference: logits = F.normalize(s, dim=1) @ F.normalize(t, dim=1).T / temperature, "
            "labels = arange(B), loss = mean of the two cross-entropies (logits and logits.T)")
CASES = [
    *PROBES,
    Case("value at B=4 (unnormalised inputs)", _value_case(4), _FORMULA),
    Case("value at B=8", _value_case(8), _FORMULA),
    Case("temperature is used (0.07 and 0.5)", _case_temperature,
         "divide the similarity matrix by self.temperature",
         about=("tau-multiplied", "tau-squared", "tau-missing")),
    Case("gradients match the reference for both inputs", _case_gradients,
         "compute the loss with differentiable torch operations only (no .detach(), .item())",
         about=("graph", "orthogonal")),
]


def check_contrastive(
    learner_cls,
    strict: bool | None = None,
    verbose: bool = True,
    time_limit_s: float | None = None,
) -> CheckResult:
    """Check a learner's ``ContrastiveLoss``; ``.impl`` is it if it passed, else the reference."""
    return run_cases("Step 3: ContrastiveLoss", learner_cls, ContrastiveLoss, CASES, strict, verbose,
                     time_limit_s=time_limit_s)
