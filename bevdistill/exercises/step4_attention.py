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
import torch.nn.functional as F

from bevdistill.exercises._checking import (
    Case,
    CheckFailure,
    CheckResult,
    Inconclusive,
    expect,
    expect_close,
    rel_error,
    run_cases,
)
from bevdistill.exercises._probes import cause, same, scalar, unchanged_inputs
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


# --- probes: one property each ---------------------------------------------------------------

C = {
    "teacher-grad": cause("teacher-grad", "The teacher's features are not detached, so the loss sends "
                          "gradients into the teacher: use teacher_feat.detach()."),
    "student-grad": cause("student-grad", "No gradient reaches the student's features (a .detach(), "
                          ".item() or torch.no_grad() on the student side): only the teacher is detached."),
    "eps": cause("eps", "Dividing by a.norm() gives 0/0 = NaN for an all-zero map: use "
                 "F.normalize(a, p=2, dim=1), which divides by max(norm, eps)."),
    "scale": cause("scale", "The attention maps are not normalised, so the loss compares feature "
                   "magnitudes, not where the activity is: apply F.normalize(a.flatten(1), p=2, dim=1) "
                   "to both maps.", "channels", "square", "value", "batch", "l1", "mean-cells"),
    "channels": cause("channels", "The map depends on the channel count: average over channels "
                      "(feat.pow(2).mean(dim=1)) so the map has no channel axis.", "square"),
    "square": cause("square", "The attention map is not built from squared activations: use "
                    "feat.pow(2).mean(dim=1), not |F|, another power or a max.", "shrink", "teacher-finer",
                    "non-square"),
    "batch": cause("batch", "The samples are mixed (normalised or pooled over the batch, dim=0): each "
                   "sample's map is its own unit vector, F.normalize(a.flatten(1), p=2, dim=1)."),
    "batch-sum": cause("batch-sum", "The loss is summed over the batch as well as the cells, so it grows "
                       "with the batch size: sum over cells (dim=1), then .mean() over the batch."),
    "l1": cause("l1", "The maps are L1-normalised (p=1), so each cell is about 1/(H*W) and the loss "
                "vanishes on a large grid: normalise with F.normalize(a, p=2, dim=1)."),
    "mean-cells": cause("mean-cells", "The squared differences are averaged over the cells instead of "
                        "summed, which divides the loss by H*W: use ((a_s - a_t) ** 2).sum(dim=1).mean()."),
    "resize": cause("resize", "The two maps are compared without bringing them to one grid, which fails "
                    "as soon as the grids differ: area-pool both raw maps to (min(Hs, Ht), min(Ws, Wt)) "
                    "with F.adaptive_avg_pool2d.", "shrink", "teacher-finer", "non-square"),
    "shrink": cause("shrink", "The larger map is not shrunk by area averaging (bilinear interpolation "
                    "skips cells when shrinking by 2x or more): use F.adaptive_avg_pool2d or "
                    "bevdistill.resize_bev.", "teacher-finer", "non-square"),
    "teacher-finer": cause("teacher-finer", "When the teacher's grid is finer, the student's map is "
                           "upsampled instead of the teacher's shrunk, so a student cannot reach zero: "
                           "area-pool BOTH maps to (min(Hs, Ht), min(Ws, Wt)).", "non-square"),
    "non-square": cause("non-square", "The maps are pooled to a square grid: pool height and width "
                        "separately, to (min(Hs, Ht), min(Ws, Wt))."),
}


def _map_feature(energy: torch.Tensor) -> torch.Tensor:
    """A one-channel feature whose attention map (mean of squares) is ``energy`` [B, 1, H, W]."""
    return energy.sqrt()


def _value(impl: Any, s: torch.Tensor, t: torch.Tensor) -> float:
    return float(scalar(impl()(s, t)).detach())


def _zero_at(impl: Any, s: torch.Tensor, t: torch.Tensor, what: str, key: str) -> None:
    """The loss of ``s`` and ``t`` is 0, relative to its value for a student unrelated to ``t``."""
    try:
        value = _value(impl, s, t)
        unrelated = _value(impl, _map_feature(torch.rand(s.shape[0], 1, *s.shape[2:]) + 0.5), t)
    except (CheckFailure, NotImplementedError):
        raise
    except Exception as exc:  # noqa: BLE001 - a crash on different grids is the observation
        raise CheckFailure(f"{what}: your code raised {type(exc).__name__}: {exc}", causes=[C["resize"]]) from None
    if not unrelated > 0:
        raise Inconclusive(f"{what}: an unrelated student gets loss {unrelated:.3g} too")
    expect(abs(value) < 1e-4 * unrelated, f"{what}: loss {value:.3g}, expected 0 (an unrelated student: "
           f"{unrelated:.3g})", causes=[C[key]])


def _probe_in_place(impl: Any) -> None:
    unchanged_inputs(lambda s, t: impl()(s, t), _features(2, 4, 8, 8), _features(2, 6, 8, 8))


def _probe_gradients(impl: Any) -> None:
    s, t = (_features(2, c, 8, 8).requires_grad_(True) for c in (4, 6))
    out = scalar(impl()(s, t))
    expect(out.requires_grad, "the loss carries no autograd graph", causes=[C["student-grad"]])
    out.backward()
    expect(t.grad is None or float(t.grad.abs().max()) == 0.0, "the teacher's features received a gradient",
           causes=[C["teacher-grad"]])
    expect(s.grad is not None and float(s.grad.abs().max()) > 0, "no gradient reached the student",
           causes=[C["student-grad"]])


def _probe_zero_features(impl: Any) -> None:
    for s, t in [(torch.zeros(2, 8, 8, 8), _features(2, 8, 8, 8)), (torch.zeros(2, 8, 8, 8),) * 2]:
        s = s.clone().requires_grad_(True)
        out = scalar(impl()(s, t))
        expect(bool(torch.isfinite(out)), f"all-zero features give a loss of {float(out.detach())}")
        out.backward()
        expect(s.grad is not None and bool(torch.isfinite(s.grad).all()), "all-zero features give a NaN gradient")


def _probe_identical(impl: Any) -> None:
    t = _features(2, 8, 12, 12)
    value = _value(impl, t.clone(), t)
    expect(abs(value) < 1e-6, f"identical features give {value:.3g}, expected 0")


def _probe_scale(impl: Any) -> None:
    s, t = _features(2, 8, 12, 12), _features(2, 8, 12, 12)
    base = _value(impl, s, t)
    for what, args in (("3 x student", (3 * s, t)), ("0.2 x teacher", (s, 0.2 * t))):
        got = _value(impl, *args)
        expect(same(got, base), f"scaling the features ({what}) changes the loss from {base:.5g} to {got:.5g}")


def _probe_channels(impl: Any) -> None:
    s, t = _features(2, 4, 12, 12), _features(2, 8, 12, 12)
    base, got = _value(impl, s, t), _value(impl, torch.cat([s, s], 1), t)
    expect(same(got, base), f"repeating the student's channels (4 -> 8) changes the loss from {base:.5g} to {got:.5g}")


def _probe_square(impl: Any) -> None:
    s = _features(2, 6, 12, 12)
    t = _map_feature(s.pow(2).mean(1, keepdim=True))
    _zero_at(impl, s, t, "a teacher channel that is the root mean square of the student's channels", "square")


_GRIDS = [(8, 8, 4), (8, 8, 16), (16, 16, 4)]  # H, W, cells each map covers


def _disjoint(h: int, w: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    s, t = torch.zeros(1, 1, h * w), torch.zeros(1, 1, h * w)
    s[..., :k], t[..., k: 2 * k] = 1.0, 1.0
    return s.view(1, 1, h, w), t.view(1, 1, h, w)


def _probe_value(impl: Any) -> None:
    """Maps on disjoint cells are orthogonal unit vectors: the loss is 2 on any grid."""
    got = [_value(impl, *_disjoint(h, w, k)) for h, w, k in _GRIDS]
    models = {(): lambda h, w, k: 2.0, ("mean-cells",): lambda h, w, k: 2.0 / (h * w),
              ("l1",): lambda h, w, k: 2.0 / k, ("l1", "mean-cells"): lambda h, w, k: 2.0 / (k * h * w)}
    for keys, model in models.items():
        if all(same(g, model(*grid), rtol=1e-3) for g, grid in zip(got, _GRIDS, strict=True)):
            expect(not keys, f"maps on disjoint cells give {[f'{g:.3g}' for g in got]}, expected 2 on every grid",
                   causes=[C[k] for k in keys])
            return
    raise Inconclusive(f"maps on disjoint cells give {[f'{g:.3g}' for g in got]}")


def _probe_batch(impl: Any) -> None:
    s, t = _features(3, 4, 8, 8), _features(3, 6, 8, 8)
    together = _value(impl, s, t)
    alone = [_value(impl, s[i:i + 1], t[i:i + 1]) for i in range(3)]
    if same(together, sum(alone), rtol=1e-4):
        raise CheckFailure(f"a batch of 3 gives {together:.5g}, the sum of its samples' losses",
                           causes=[C["batch-sum"]])
    expect(same(together, sum(alone) / 3, rtol=1e-4),
           f"a batch of 3 gives {together:.5g}, not the mean of its samples' losses ({sum(alone) / 3:.5g})",
           causes=[C["batch"]])


def _blocks(target: torch.Tensor, fy: int, fx: int) -> torch.Tensor:
    """A map on a grid ``fy x fx`` times finer whose block means are ``target`` (varied inside)."""
    fine = target.repeat_interleave(fy, 2).repeat_interleave(fx, 3)
    wave = torch.randn(fine.shape[0], 1, fy, fx)
    wave = (wave - wave.mean((2, 3), keepdim=True)) * 0.5 * target.min()
    return fine + wave.repeat(1, 1, target.shape[2], target.shape[3])


def _target(h: int, w: int) -> torch.Tensor:
    return torch.rand(2, 1, h, w) + 0.5


def _probe_student_larger(impl: Any) -> None:
    m = _target(6, 6)
    _zero_at(impl, _map_feature(_blocks(m, 4, 4)), _map_feature(m),
             "a 24x24 student whose area-pooled map equals the 6x6 teacher's", "shrink")


def _probe_teacher_larger(impl: Any) -> None:
    m = _target(6, 6)
    _zero_at(impl, _map_feature(m), _map_feature(_blocks(m, 4, 4)),
             "a 6x6 student equal to the area-pooled map of a 24x24 teacher", "teacher-finer")


def _probe_non_square(impl: Any) -> None:
    m = _target(6, 12)
    _zero_at(impl, _map_feature(_blocks(m, 2, 1)), _map_feature(_blocks(m, 1, 2)),
             "a 12x12 student and a 6x24 teacher whose maps pool to the same 6x12 map", "non-square")
    s = _map_feature(_target(6, 12))
    pooled_equal = _map_feature(_blocks(F.avg_pool2d(s.pow(2), (1, 2)), 1, 2))
    value = _value(impl, s, pooled_equal)
    expect(value > 1e-4, f"on one 6x12 grid, maps that differ inside pairs of columns give {value:.3g}",
           causes=[C["non-square"]])


def _probe(name: str, run, key: str | None = None, judges: tuple[str, ...] = ()) -> Case:
    return Case(name, run, cause=C[key] if key else None, judges=judges)


PROBES = [
    Case("your code leaves its inputs unchanged", _probe_in_place),
    _probe("gradient reaches the student only", _probe_gradients, judges=("teacher-grad", "student-grad")),
    _probe("all-zero features give no NaN", _probe_zero_features, "eps"),
    Case("identical features give 0", _probe_identical),
    _probe("scaling either feature leaves the loss unchanged", _probe_scale, "scale"),
    _probe("channel counts may differ (repeating channels changes nothing)", _probe_channels, "channels"),
    _probe("maps are built from squared activations", _probe_square, "square"),
    _probe("maps on disjoint cells give 2 on any grid (L2 maps, sum over cells)", _probe_value,
           judges=("l1", "mean-cells")),
    _probe("each sample is normalised on its own; mean over the batch", _probe_batch, "batch",
           judges=("batch-sum",)),
    _probe("student grid larger than teacher's: area-pooled to the smaller", _probe_student_larger,
           "shrink", judges=("resize",)),
    _probe("teacher grid larger than student's: the teacher is pooled", _probe_teacher_larger,
           "teacher-finer", judges=("resize",)),
    _probe("non-square grids: height and width pooled separately", _probe_non_square, "non-square"),
]

CASES = [
    *PROBES,
    Case("matches the reference on one grid", _case_same_grid, f"the reference: {_FORMULA}"),
    Case("channel counts may differ", _case_channels, f"the reference: {_FORMULA}"),
    Case("student grid larger than teacher's", _case_student_larger, f"the reference: {_FORMULA}"),
    Case("teacher grid larger than student's", _case_teacher_larger, f"the reference: {_FORMULA}"),
    Case("non-square grids", _case_non_square, f"the reference: {_FORMULA}"),
    Case("gradient matches the reference", _case_gradient, f"the reference: {_FORMULA}"),
    Case("loss does not vanish on a 180x180 grid", _case_magnitude,
         "L1-normalised maps compared with a mean over cells scale as 1/(H*W)^2; use L2 "
         "normalisation and SUM the squared differences over cells", about=("l1", "mean-cells", "scale")),
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
        time_limit_s=time_limit_s,
    )
