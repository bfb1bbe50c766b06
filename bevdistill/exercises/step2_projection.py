"""Checker for step 2: the learner's ``ProjectionMLP(in_dim, hidden_dim=256, out_dim=128)``.

The learner's network has its own random weights (and may use a different norm layer or layer
order), so its outputs cannot be compared number by number with the reference. The cases test
the properties every correct projector has instead: output shape for every input rank, unit
rows, mean pooling (projecting a map equals projecting its mean vector), training at batch
size 1, gradients to the parameters and the input, and a deterministic per-sample eval mode.
"""

from __future__ import annotations

import torch

from bevdistill.exercises._checking import (
    Case,
    CheckResult,
    expect,
    expect_close,
    expect_shape,
    run_cases,
)
from bevdistill.exercises.gallery.step2 import GALLERY
from bevdistill.projection import ProjectionMLP

IN_DIM, HIDDEN, OUT = 6, 32, 12
# One input per rank the projector must accept: points, BEV maps, voxels.
SHAPES = {
    "[B, C]": (3, IN_DIM),
    "[B, C, N]": (3, IN_DIM, 7),
    "[B, C, H, W]": (3, IN_DIM, 5, 4),
    "[B, C, D, H, W]": (3, IN_DIM, 2, 3, 4),
}


def _build(learner_cls) -> torch.nn.Module:
    return learner_cls(IN_DIM, hidden_dim=HIDDEN, out_dim=OUT)


def _case_shapes(learner_cls) -> None:
    model = _build(learner_cls).eval()
    for name, shape in SHAPES.items():
        with torch.no_grad():
            out = model(torch.randn(*shape))
        expect_shape(out, (shape[0], OUT), f"output for a {name} input {list(shape)}")


def _case_unit_rows(learner_cls) -> None:
    model = _build(learner_cls).eval()
    with torch.no_grad():
        out = model(torch.randn(5, IN_DIM, 4, 4) * 3)
    expect_shape(out, (5, OUT), "output")
    norms = out.norm(dim=1)
    expect(
        torch.allclose(norms, torch.ones_like(norms), atol=1e-4),
        f"row L2 norms are {[round(v, 3) for v in norms.tolist()]}, expected all 1",
    )
    expect(
        (out[0] - out[1:]).abs().max() > 1e-4,
        "every sample got the same embedding: the output does not depend on the input",
    )


def _case_mean_pooling(learner_cls) -> None:
    model = _build(learner_cls).eval()
    for name, shape in list(SHAPES.items())[1:]:
        x = torch.randn(*shape)
        perm = torch.randperm(x[0, 0].numel())
        shuffled = x.flatten(2)[:, :, perm].reshape(shape)
        with torch.no_grad():
            out, out_mean = model(x), model(x.flatten(2).mean(dim=2))
            out_shuffled = model(shuffled)
        expect_close(out, out_mean, f"{name}: projecting the map vs projecting its mean", rtol=1e-4)
        expect_close(out_shuffled, out, f"{name}: projecting after shuffling positions", rtol=1e-4)


def _case_train_batch1(learner_cls) -> None:
    model = _build(learner_cls).train()
    out = model(torch.randn(1, IN_DIM, 6, 6))
    expect_shape(out, (1, OUT), "output in training mode at batch size 1")
    expect(bool(torch.isfinite(out).all()), "output at batch size 1 contains NaN or inf")


def _case_gradients(learner_cls) -> None:
    model = _build(learner_cls).train()
    x = torch.randn(4, IN_DIM, 5, 5, requires_grad=True)
    out = model(x)
    expect(isinstance(out, torch.Tensor) and out.requires_grad, "output carries no autograd graph")
    (out * torch.randn_like(out)).sum().backward()
    expect(x.grad is not None and bool(x.grad.abs().sum() > 0), "no gradient reaches the input")
    expect(bool(torch.isfinite(x.grad).all()), "the input gradient contains NaN or inf")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    expect(bool(params), "the module has no trainable parameters (use nn.Linear layers)")
    missing = [n for n, p in params if p.grad is None]
    expect(not missing, f"no gradient reaches parameter(s) {missing}")
    expect(
        all(bool(torch.isfinite(p.grad).all()) for _, p in params), "a parameter gradient is NaN"
    )
    expect(sum(float(p.grad.abs().sum()) for _, p in params) > 0, "all parameter gradients are 0")


def _case_eval_deterministic(learner_cls) -> None:
    model = _build(learner_cls).eval()
    x = torch.randn(4, IN_DIM, 3, 5)
    with torch.no_grad():
        first, second = model(x), model(x)
    expect_close(second, first, "two eval-mode calls on the same input", rtol=1e-6)


def _case_per_sample(learner_cls) -> None:
    model = _build(learner_cls).eval()
    x = torch.randn(4, IN_DIM, 3, 5)
    with torch.no_grad():
        together, alone = model(x), model(x[2:3])
    expect_close(
        alone, together[2:3], "sample 2 alone vs inside a batch of 4 (eval mode)", rtol=1e-4
    )


CASES = [
    Case(
        "output shape [B, out_dim] for [B,C], [B,C,N], [B,C,H,W] and [B,C,D,H,W]",
        _case_shapes,
        "pool every dimension after C (x.flatten(2).mean(2)) so any rank becomes [B, C]",
    ),
    Case(
        "every output row has unit L2 norm",
        _case_unit_rows,
        "end with F.normalize(x, dim=1): normalise each sample (dim=1), not each feature (dim=0)",
    ),
    Case(
        "spatial dimensions are mean-pooled",
        _case_mean_pooling,
        "average over all positions (adaptive_avg_pool2d to 1x1 is the mean over H, W); "
        "do not flatten positions into channels or take a max",
    ),
    Case(
        "training mode works at batch size 1",
        _case_train_batch1,
        "BatchNorm1d needs more than one sample per channel in training; LayerNorm normalises "
        "each sample on its own and works at any batch size",
    ),
    Case(
        "gradients reach every parameter and the input",
        _case_gradients,
        "do not detach the input or wrap the forward in torch.no_grad()",
    ),
    Case(
        "eval mode is deterministic (dropout off)",
        _case_eval_deterministic,
        "use nn.Dropout (switched off by .eval()), not F.dropout(..., training=True)",
    ),
    Case(
        "in eval mode a sample's embedding does not depend on the rest of the batch",
        _case_per_sample,
        "normalise each sample (F.normalize(x, dim=1)); no statistic may mix samples in eval mode",
    ),
]


def check_projection(
    learner_cls,
    strict: bool | None = None,
    verbose: bool = True,
    time_limit_s: float | None = None,
) -> CheckResult:
    """Check a learner's ``ProjectionMLP``; ``.impl`` is it if it passed, else the reference."""
    return run_cases(
        "Step 2: ProjectionMLP",
        learner_cls,
        ProjectionMLP,
        CASES,
        strict,
        verbose,
        gallery=GALLERY,
        time_limit_s=time_limit_s,
    )
