"""Checker for step 4: ``AttentionTransferLoss``.

The learner's contract: ``AttentionTransferLoss()`` (no arguments) is an ``nn.Module`` whose
``forward(student_feat, teacher_feat)`` takes ``[B, Cs, Hs, Ws]`` and ``[B, Ct, Ht, Wt]`` features
(channels may differ, grids may differ in either direction and need not be square) and returns
a scalar tensor::

    a(F)  = mean over channels of F ** 2                        -> [B, H, W]
    if the grids differ, resize BOTH maps to (min(Hs, Ht), min(Ws, Wt)) by area averaging
          (F.adaptive_avg_pool2d or bevdistill.resize_bev), before normalising
    a     = F.normalize(a.flatten(1), p=2, dim=1)               -> unit vector per sample
    loss  = ((a_s - a_t) ** 2).sum(dim=1).mean()                 # sum over cells, mean over batch

with the teacher detached. Why not the tutorial's ``F.normalize(p=1)`` + ``F.mse_loss``: its
value is of order ``1 / (H*W)^2`` (about 1e-8 on a 180 x 180 grid) and its gradient is ten
orders of magnitude below the detection loss's, so it teaches nothing; see
:mod:`bevdistill.losses.attention`. Why area averaging to the smaller grid: bilinear
downsampling skips cells, and upsampling the student to a finer teacher leaves a loss that a
perfect student cannot bring to zero.
"""

from __future__ import annotations

from typing import Any

import torch

from bevdistill.exercises._checking import (
    Case,
    CheckResult,
    expect,
    expect_close,
    rel_error,
    run_cases,
)
from bevdistill.exercises.gallery.step4 import GALLERY
from bevdistill.losses.attention import AttentionTransferLoss

STEP = "Step 4 - AttentionTransferLoss"
_FORMULA = (
    "a = F.normalize(feat.pow(2).mean(1).flatten(1), p=2, dim=1) after area-pooling both raw maps "
    "to the smaller grid; loss = ((a_s - a_t) ** 2).sum(1).mean()"
)


def _features(b: int, c: int, h: int, w: int, structured: bool = True) -> torch.Tensor:
    """Random features whose activity varies smoothly over the grid (so attention has a shape)."""
    x = torch.randn(b, c, h, w)
    if not structured:
        return x
    ys = torch.linspace(-1, 1, h).view(1, 1, h, 1)
    xs = torch.linspace(-1, 1, w).view(1, 1, 1, w)
    centre = torch.rand(b, 2, 1, 1) * 1.2 - 0.6
    blob = torch.exp(-((ys - centre[:, :1]) ** 2 + (xs - centre[:, 1:]) ** 2) / 0.1)
    return x * (0.3 + 2.0 * blob)


def _loss(impl: Any, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    out = impl()(s, t)
    expect(
        isinstance(out, torch.Tensor) and out.dim() == 0,
        f"forward must return a scalar tensor, got {_describe(out)}",
        "reduce to one number: sum over cells, then mean over the batch",
    )
    expect(
        bool(torch.isfinite(out)),
        f"the loss is {float(out.detach())}",
        "guard against 0 / 0 (F.normalize has an eps)",
    )
    return out


def _compare(impl: Any, s: torch.Tensor, t: torch.Tensor, what: str, hint: str) -> None:
    expected = AttentionTransferLoss()(s, t)
    expect_close(_loss(impl, s, t), expected, what, rtol=1e-4, atol=1e-7, hint=hint)


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {list(x.shape)}"
    return type(x).__name__


def _case_scalar(impl: Any) -> None:
    _loss(impl, _features(2, 8, 12, 12), _features(2, 8, 12, 12))


def _case_same_grid(impl: Any) -> None:
    s, t = _features(3, 8, 16, 16), _features(3, 8, 16, 16)
    _compare(impl, s, t, "loss on a 16x16 grid", f"use exactly: {_FORMULA}")
    same = _loss(impl, t.clone(), t)
    expect(
        abs(float(same.detach())) < 1e-6,
        f"identical features give {float(same.detach()):.3g}, expected 0",
    )


def _case_channels(impl: Any) -> None:
    s, t = _features(2, 4, 16, 16), _features(2, 24, 16, 16)
    _compare(
        impl,
        s,
        t,
        "loss with 4 student and 24 teacher channels",
        "average over the channel dimension (dim=1) so the map has no channel axis",
    )


def _case_student_larger(impl: Any) -> None:
    s, t = _features(2, 8, 64, 64), _features(2, 8, 16, 16)
    _compare(
        impl,
        s,
        t,
        "loss with a 64x64 student and a 16x16 teacher",
        "shrink the larger raw attention map by area averaging (F.adaptive_avg_pool2d); bilinear "
        "interpolation skips 3 of every 4 cells when shrinking 4x",
    )


def _case_teacher_larger(impl: Any) -> None:
    s, t = _features(2, 8, 16, 16), _features(2, 8, 48, 48)
    hint = (
        "when the teacher is finer, shrink the TEACHER's map to the student's grid; upsampling the "
        "student asks it for detail its grid cannot hold"
    )
    _compare(impl, s, t, "loss with a 16x16 student and a 48x48 teacher", hint)
    # A student whose attention equals the teacher's pooled attention must reach zero loss.
    pooled = torch.nn.functional.adaptive_avg_pool2d(t.pow(2).mean(1, keepdim=True), (16, 16))
    perfect = pooled.sqrt().expand(-1, 8, -1, -1).contiguous()
    floor = _loss(impl, perfect, t)
    expect(
        abs(float(floor.detach())) < 1e-5,
        f"a student matching the teacher's pooled attention gets loss {float(floor.detach()):.3g}, expected 0",
        hint,
    )


def _case_non_square(impl: Any) -> None:
    for (hs, ws), (ht, wt) in [((20, 30), (40, 60)), ((48, 24), (16, 12)), ((24, 12), (12, 24))]:
        s, t = _features(2, 6, hs, ws), _features(2, 10, ht, wt)
        _compare(
            impl,
            s,
            t,
            f"loss with a {hs}x{ws} student and a {ht}x{wt} teacher",
            "resize both raw maps to (min(Hs, Ht), min(Ws, Wt)): height and width separately",
        )


def _case_zero(impl: Any) -> None:
    for s, t in [
        (torch.zeros(2, 8, 16, 16), _features(2, 8, 16, 16)),
        (torch.zeros(2, 8, 16, 16),) * 2,
    ]:
        s = s.clone().requires_grad_(True)
        loss = _loss(impl, s, t)
        loss.backward()
        expect(
            s.grad is not None and bool(torch.isfinite(s.grad).all()),
            "all-zero features give a NaN or missing gradient",
            "F.normalize(x, p=2, dim=1) divides by max(||x||, eps): a zero map stays zero",
        )


def _case_gradient(impl: Any) -> None:
    s, t = _features(2, 8, 24, 16), _features(2, 12, 48, 32)
    s_ref = s.clone().requires_grad_(True)
    AttentionTransferLoss()(s_ref, t).backward()
    s, t = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    _loss(impl, s, t).backward()
    expect(
        t.grad is None or float(t.grad.abs().max()) == 0.0,
        "the teacher's features received a gradient",
        "the teacher is a fixed target: use teacher_feat.detach()",
    )
    expect(s.grad is not None, "no gradient reached the student's features")
    err = rel_error(s.grad, s_ref.grad)
    expect(
        err < 1e-3,
        f"gradient w.r.t. the student differs from the reference: relative error {err:.2e}",
    )


def _case_magnitude(impl: Any) -> None:
    s, t = _features(2, 16, 180, 180, structured=False), _features(2, 16, 180, 180)
    out = _loss(impl, s, t)
    expect(
        float(out.detach()) > 1e-2,
        f"on a 180x180 BEV grid the loss is {float(out.detach()):.2e}: far too small to move a student "
        "next to a detection loss",
        "L1-normalised maps compared with a mean over cells scale as 1/(H*W)^2; use L2 "
        "normalisation and SUM the squared differences over cells",
    )
    _compare(impl, s, t, "loss on a 180x180 grid", f"use exactly: {_FORMULA}")


CASES = [
    Case("returns a finite scalar", _case_scalar),
    Case("matches the reference on one grid (and is 0 for identical maps)", _case_same_grid),
    Case("channel counts may differ", _case_channels),
    Case("student grid larger than teacher's", _case_student_larger),
    Case("teacher grid larger than student's", _case_teacher_larger),
    Case("non-square grids", _case_non_square),
    Case("all-zero features give no NaN", _case_zero),
    Case("gradient reaches the student only, and matches", _case_gradient),
    Case("loss does not vanish on a 180x180 grid", _case_magnitude),
]


def check_attention(
    learner_cls: Any,
    strict: bool | None = None,
    verbose: bool = True,
    time_limit_s: float | None = None,
) -> CheckResult:
    """Check a learner's ``AttentionTransferLoss`` class against the reference (see module doc)."""
    return run_cases(
        STEP,
        learner_cls,
        AttentionTransferLoss,
        CASES,
        strict=strict,
        verbose=verbose,
        gallery=GALLERY,
        time_limit_s=time_limit_s,
    )
