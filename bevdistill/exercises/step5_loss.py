"""Checker for step 5: ``BEVFusionDistillationLoss``.

The learner's contract: an ``nn.Module`` built as ``BEVFusionDistillationLoss(student_channels,
teacher_channels, feat_dim=128, temperature=0.07, alpha_crd=1.0, alpha_at=0.5, alpha_kd=0.5)``
(channels: ``{layer: channels}``) whose ``forward(student_features, teacher_features,
student_outputs=None, teacher_outputs=None)`` takes ``{layer: [B, C, H, W]}`` dicts (student and
teacher grids and channels may differ) and heatmap logits ``[B, K, H, W]``, and returns a dict of
scalar tensors:

* one key per layer and term; every key contains ``loss`` (mmengine sums only those), the layer
  name and the term's tag as a word: ``crd`` (contrastive, after per-layer projectors), ``at``
  (attention transfer) and, when outputs are passed, ``kd`` (response distillation). E.g.
  ``loss_crd.pts_neck``, ``loss_at.pts_neck``, ``loss_kd.heatmap``;
* ``loss_at.<layer>`` = ``alpha_at * AttentionTransferLoss()(student, teacher)`` (step 4);
* every term scales linearly with its alpha; the kd term treats the heatmap as independent
  per-class sigmoids (``bevdistill.HeatmapDistillationLoss`` does), not a softmax over classes;
* the teacher is detached; gradients reach the student and the projectors;
* a missing layer or a wrong channel count raises an error at once (no ``try/except: print``);
* it works at batch size 1 in training mode and returns float32 values under autocast.

Projector weights are random, so contrastive values are checked through properties (linear in
``alpha_crd`` with the same seed, gradients), not against the reference's numbers.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from bevdistill.exercises._checking import (
    Case,
    CheckFailure,
    CheckResult,
    expect,
    expect_close,
    run_cases,
    where,
)
from bevdistill.exercises._probes import cause
from bevdistill.losses.attention import AttentionTransferLoss
from bevdistill.losses.combined import BEVFusionDistillationLoss

STEP = "Step 5 - BEVFusionDistillationLoss"
STUDENT_CHANNELS = {"pts_middle_encoder": 5, "pts_neck": 16}
TEACHER_CHANNELS = {"pts_middle_encoder": 5, "pts_neck": 32}
STUDENT_GRID, TEACHER_GRID, NUM_CLASSES = (16, 16), (32, 32), 3
TAGS = {
    "crd": {"crd", "contrastive", "nce", "infonce"},
    "at": {"at", "attention"},
    "kd": {"kd", "response"},
}


C = {
    "keys": cause("keys", "The keys do not contain 'loss', so mmengine's parse_losses logs the terms but "
                  "never adds them to what it back-propagates: name them loss_crd.<layer>, "
                  "loss_at.<layer>, loss_kd.heatmap."),
    "one-key": cause("one-key", "The terms of a layer are not under one key each (crd and at added into "
                     "one, or a term missing), so neither can be logged or weighted on its own: return "
                     "loss_crd.<layer> and loss_at.<layer> separately.", "at-value", "alpha", "kd"),
    "at-value": cause("at-value", "The attention term is not alpha_at * AttentionTransferLoss()(student, "
                      "teacher) of step 4: use the step-4 loss on the raw features, times alpha_at."),
    "alpha": cause("alpha", "A term is not proportional to its alpha, so the weight has no effect: multiply "
                   "every term by self.alpha_<term>, and leave a zero-weight term out or at 0.", "at-value"),
    "teacher-grad": cause("teacher-grad", "The teacher's features or outputs are not detached, so the loss "
                          "sends gradients into the teacher: use .detach() on every teacher input."),
    "student-grad": cause("student-grad", "No gradient reaches the student's features or the projectors: "
                          "detach only the teacher's side."),
    "missing-layer": cause("missing-layer", "A layer missing from the features is skipped silently "
                           "(features.get, 'if layer in' or try/except), so a wrong hook name trains without "
                           "distillation: index features[layer] and let the KeyError raise."),
    "channels": cause("channels", "A wrong channel count does not raise (caught and printed, or never "
                      "checked), so a run trains for days without distillation: check the channels and "
                      "raise, never catch and print."),
    "kd": cause("kd", "There is no response term scaled by alpha_kd when head outputs are given: add "
                "loss_kd.heatmap = alpha_kd * HeatmapDistillationLoss()(student_outputs, teacher_outputs).",
                "kd-sigmoid"),
    "kd-sigmoid": cause("kd-sigmoid", "The heatmaps are compared with a softmax over classes, which cannot "
                        "tell 'every class here' from 'nothing here': treat each class as its own sigmoid "
                        "(HeatmapDistillationLoss, a binary KL per class and cell)."),
    "batch1": cause("batch1", "The projectors fail at batch size 1 in training mode (BatchNorm1d?): build "
                    "them with the step-2 ProjectionMLP (LayerNorm)."),
    "fp32": cause("fp32", "The terms are computed in the autocast dtype, and bfloat16 keeps 3 significant "
                  "digits, too few for InfoNCE logits: wrap the body in torch.autocast(device_type=..., "
                  "enabled=False) and .float() the inputs."),
}


def _build(impl: Any, **overrides: float) -> torch.nn.Module:
    kwargs = dict(feat_dim=128, temperature=0.07, alpha_crd=1.0, alpha_at=0.5, alpha_kd=0.5)
    kwargs.update(overrides)
    torch.manual_seed(1)  # the same projector weights for every build of one class
    return impl(dict(STUDENT_CHANNELS), dict(TEACHER_CHANNELS), **kwargs)


def _inputs(batch: int = 4, grad: bool = False):
    """Student/teacher feature dicts and heatmap logits; fresh tensors on every call."""
    g = torch.Generator().manual_seed(7 + batch)

    def feats(channels, grid):
        return {
            k: torch.randn(batch, c, *grid, generator=g).requires_grad_(grad)
            for k, c in channels.items()
        }

    student = feats(STUDENT_CHANNELS, STUDENT_GRID)
    teacher = feats(TEACHER_CHANNELS, TEACHER_GRID)
    s_out = torch.randn(batch, NUM_CLASSES, *STUDENT_GRID, generator=g).requires_grad_(grad)
    t_out = (torch.randn(batch, NUM_CLASSES, *STUDENT_GRID, generator=g) - 2).requires_grad_(grad)
    return student, teacher, s_out, t_out


def _losses(module: torch.nn.Module, *args, keys: bool = False) -> dict[str, torch.Tensor]:
    """The dict ``module`` returns, checked to hold finite scalars (and with ``keys``, loss keys)."""
    out = module(*args)
    expect(isinstance(out, dict), f"forward must return a dict of losses, got {type(out).__name__}")
    expect(len(out) > 0, "forward returned an empty dict")
    for key, value in out.items():
        expect(
            "loss" in str(key) or not keys,
            f"key {key!r} does not contain 'loss': mmengine's parse_losses would not add it to the "
            "total, so it would never be trained",
            "name terms like loss_crd.pts_neck, loss_at.pts_neck, loss_kd.heatmap",
        )
        expect(
            isinstance(value, torch.Tensor) and value.dim() == 0,
            f"{key!r} must be a scalar tensor, got {value!r:.60}",
        )
        expect(bool(torch.isfinite(value)), f"{key!r} is {float(value.detach())}")
    return out


def _find(out: dict, term: str, layer: str | None = None) -> list[str]:
    found = []
    for key in out:
        words = set(re.split(r"[^a-z0-9]+", str(key).lower()))
        if words & TAGS[term] and (layer is None or layer in str(key)):
            found.append(key)
    return found


def _value(out: dict, term: str, layer: str | None = None) -> torch.Tensor | None:
    """The term's value; None when the key is absent (a zero-weight term may be left out)."""
    keys = _find(out, term, layer)
    expect(len(keys) <= 1, f"more than one key for term {term!r} of {layer!r}: {keys}")
    return out[keys[0]] if keys else None


def _case_dict(impl: Any) -> None:
    _losses(_build(impl), *_inputs(), keys=True)


def _case_keys(impl: Any) -> None:
    out = _losses(_build(impl), *_inputs())
    for layer in STUDENT_CHANNELS:
        for term in ("crd", "at"):
            keys = _find(out, term, layer)
            expect(
                len(keys) == 1,
                f"expected one {term!r} key for layer {layer!r}, found {keys} among {sorted(out)}",
                "one key per layer and term, e.g. loss_crd.pts_neck and loss_at.pts_neck",
            )


def _case_attention_value(impl: Any) -> None:
    student, teacher, s_out, t_out = _inputs()
    out = _losses(_build(impl), student, teacher, s_out, t_out)
    for layer in STUDENT_CHANNELS:
        expected = 0.5 * AttentionTransferLoss()(student[layer], teacher[layer])
        value = _value(out, "at", layer)
        expect(value is not None, f"no attention-transfer key for {layer!r}")
        expect_close(
            value,
            expected,
            f"attention term of {layer!r}",
            rtol=1e-4,
            atol=1e-7,
            hint="alpha_at * AttentionTransferLoss()(student_feat, teacher_feat) from step 4",
        )


def _scaled(impl: Any, term: str, alpha: str, low: float, high: float, outputs: bool) -> None:
    student, teacher, s_out, t_out = _inputs()
    args = (student, teacher, s_out, t_out) if outputs else (student, teacher)
    a = _losses(_build(impl, **{alpha: low}).eval(), *args)
    b = _losses(_build(impl, **{alpha: high}).eval(), *args)
    layers = list(STUDENT_CHANNELS) if term != "kd" else [None]
    for layer in layers:
        va, vb = _value(a, term, layer), _value(b, term, layer)
        expect(va is not None and vb is not None, f"no {term!r} key for {layer or 'the outputs'}")
        expect(
            float(va.detach()) != 0.0,
            f"the {term!r} term of {layer or 'the outputs'} is 0 with {alpha}={low}",
        )
        expect_close(
            vb / va,
            torch.tensor(high / low),
            f"{term!r} term ratio for {alpha}={high} vs {low}",
            rtol=1e-4,
            hint=f"multiply the term by self.{alpha}",
        )
        zero = _losses(_build(impl, **{alpha: 0.0}).eval(), *args)
        vz = _value(zero, term, layer)
        left = 0.0 if vz is None else float(vz.detach())
        expect(
            left == 0.0,
            f"with {alpha}=0 the {term!r} term of {layer or 'the outputs'} is {left:.3g}",
        )


def _case_alphas(impl: Any) -> None:
    _scaled(impl, "crd", "alpha_crd", 1.0, 2.0, outputs=True)
    _scaled(impl, "at", "alpha_at", 0.5, 1.5, outputs=True)


def _case_teacher_detached(impl: Any) -> None:
    student, teacher, s_out, t_out = _inputs(grad=True)
    out = _losses(_build(impl), student, teacher, s_out, t_out)
    sum(out.values()).backward()
    for name, t in [*teacher.items(), ("teacher_outputs", t_out)]:
        expect(
            t.grad is None or float(t.grad.abs().max()) == 0.0,
            f"the teacher's {name} received a gradient",
            "detach the teacher: teacher_features[layer].detach() (and its outputs)",
        )


def _case_student_gradients(impl: Any) -> None:
    student, teacher, s_out, t_out = _inputs(grad=True)
    module = _build(impl)
    out = _losses(module, student, teacher, s_out, t_out)
    sum(out.values()).backward()
    for name, s in student.items():
        expect(
            s.grad is not None and float(s.grad.abs().max()) > 0,
            f"no gradient reached the student's {name!r} features",
        )
    params = [p for p in module.parameters() if p.requires_grad]
    expect(len(params) > 0, "the module has no trainable parameters: where are the projectors?")
    reached = [p for p in params if p.grad is not None and float(p.grad.abs().max()) > 0]
    expect(len(reached) > 0, "no gradient reached the projectors' parameters")


def _expect_raises(fn, what: str, hint: str) -> None:
    """``fn()`` must raise; returning normally means the mistake went unnoticed."""
    try:
        fn()
    except NotImplementedError:
        raise
    except Exception:  # the error we want: any exception raised at the bad call
        return
    raise CheckFailure(f"{what} did not raise: the run would silently train without it", hint)


def _case_missing_layer(impl: Any) -> None:
    module = _build(impl)
    student, teacher, s_out, t_out = _inputs()
    del student["pts_neck"]
    _expect_raises(
        lambda: module(student, teacher, s_out, t_out),
        "a student feature dict without 'pts_neck'",
        "raise a KeyError naming the missing layer; the tutorial's try/except print(...) or "
        "skipping absent layers hides a wrong hook name",
    )


def _case_wrong_channels(impl: Any) -> None:
    module = _build(impl)
    student, teacher, s_out, t_out = _inputs()
    student["pts_neck"] = torch.randn(4, 24, *STUDENT_GRID)
    _expect_raises(
        lambda: module(student, teacher, s_out, t_out),
        "a 'pts_neck' student feature with 24 channels (built for 16)",
        "raise a ValueError saying expected 16, got 24; never catch and print",
    )


def _case_kd(impl: Any) -> None:
    _scaled(impl, "kd", "alpha_kd", 0.5, 1.0, outputs=True)
    student, teacher, s_out, t_out = _inputs(grad=True)
    out = _losses(_build(impl), student, teacher, s_out, t_out)
    kd = _value(out, "kd")
    expect(kd is not None, "no 'kd' key when student_outputs and teacher_outputs are passed")
    kd.backward()
    expect(
        s_out.grad is not None and float(s_out.grad.abs().max()) > 0,
        "no gradient reached the student outputs",
    )


def _case_kd_sigmoid(impl: Any) -> None:
    student, teacher, _, _ = _inputs()
    module = _build(impl)
    background = torch.full((4, NUM_CLASSES, *STUDENT_GRID), -6.0)
    everywhere = torch.full((4, NUM_CLASSES, *STUDENT_GRID), 6.0)
    kd = _value(_losses(module, student, teacher, everywhere, background), "kd")
    expect(kd is not None, "no 'kd' key when student_outputs and teacher_outputs are passed")
    expect(
        float(kd.detach()) > 1e-2,
        f"a student predicting objects of every class everywhere against a teacher seeing only "
        f"background gets a kd term of {float(kd.detach()):.2e}",
        "heatmap logits are independent per-class sigmoids: a softmax over classes cannot tell "
        "'all classes' from 'no class'; use HeatmapDistillationLoss (binary KL per class)",
    )
    same = _value(_losses(module, student, teacher, background.clone(), background), "kd")
    expect(
        abs(float(same.detach())) < 1e-5,
        f"identical heatmaps give a kd term of {float(same.detach()):.3g}",
    )


def _case_batch_one(impl: Any) -> None:
    module = _build(impl).train()
    _losses(module, *_inputs(batch=2))  # a crash at every batch size is not this case's to name
    student, teacher, s_out, t_out = _inputs(batch=1)
    try:
        _losses(module, student, teacher, s_out, t_out)
    except (CheckFailure, NotImplementedError):
        raise
    except Exception as exc:  # noqa: BLE001 - a crash at batch size 1 is the observation
        raise CheckFailure(f"at batch size 1 your code raised {type(exc).__name__}: {exc}{where(exc)}",
                           causes=[C["batch1"]]) from None


def _case_autocast(impl: Any) -> None:
    module = _build(impl).eval()  # no dropout: both calls must compute the same thing
    inputs = _inputs()
    base = _losses(module, *inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _losses(module, *inputs)
    hint = (
        "wrap the computation in torch.autocast(device_type=..., enabled=False) and cast the "
        "features to float32: bfloat16 keeps 3 significant digits, too few for InfoNCE logits"
    )
    for key, value in out.items():
        expect(value.dtype == torch.float32, f"{key!r} is {value.dtype} under autocast", hint)
        expect_close(
            value, base[key], f"{key!r} under bfloat16 autocast", rtol=1e-4, atol=1e-6, hint=hint
        )


CASES = [
    Case("returns a dict of finite scalars whose keys contain 'loss'", _case_dict, cause=C["keys"]),
    Case("one key per layer and term (crd, at)", _case_keys, cause=C["one-key"]),
    Case("attention terms equal alpha_at x AttentionTransferLoss", _case_attention_value, cause=C["at-value"]),
    Case("alpha_crd and alpha_at scale their terms (0 removes them)", _case_alphas, cause=C["alpha"]),
    Case("the teacher gets no gradient", _case_teacher_detached, cause=C["teacher-grad"]),
    Case("gradients reach the student and the projectors", _case_student_gradients, cause=C["student-grad"]),
    Case("a missing layer raises an error", _case_missing_layer, cause=C["missing-layer"]),
    Case("a wrong channel count raises an error", _case_wrong_channels, cause=C["channels"]),
    Case("alpha_kd is used when head outputs are given", _case_kd, cause=C["kd"]),
    Case("response distillation treats heatmaps as per-class sigmoids", _case_kd_sigmoid, cause=C["kd-sigmoid"]),
    Case("works at batch size 1 in training mode", _case_batch_one, cause=C["batch1"]),
    Case("computes in float32 under autocast (same values)", _case_autocast, cause=C["fp32"]),
]


def check_distillation_loss(
    learner_cls: Any,
    strict: bool | None = None,
    verbose: bool = True,
    time_limit_s: float | None = None,
) -> CheckResult:
    """Check a learner's ``BEVFusionDistillationLoss`` class against the contract in the module doc."""
    return run_cases(
        STEP,
        learner_cls,
        BEVFusionDistillationLoss,
        CASES,
        strict=strict,
        verbose=verbose,
        time_limit_s=time_limit_s,
    )
