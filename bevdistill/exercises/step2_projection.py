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
    Cause,
    CheckFailure,
    CheckResult,
    expect,
    expect_close,
    expect_shape,
    run_cases,
    where,
)
from bevdistill.exercises._probes import cause
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
        try:
            with torch.no_grad():
                out = model(torch.randn(*shape))
        except NotImplementedError:
            raise
        except Exception as exc:  # noqa: BLE001 - a rank the code cannot take is the observation
            raise CheckFailure(f"a {name} input {list(shape)}: your code raised {type(exc).__name__}: "
                               f"{exc}{where(exc)}", causes=[C["ranks"]]) from None
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
    expect(isinstance(out, torch.Tensor) and out.requires_grad, "output carries no autograd graph",
           causes=[C["input-grad"]])
    (out * torch.randn_like(out)).sum().backward()
    expect(x.grad is not None and bool(x.grad.abs().sum() > 0), "no gradient reaches the input",
           causes=[C["input-grad"]])
    expect(bool(torch.isfinite(x.grad).all()), "the input gradient contains NaN or inf")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    expect(bool(params), "the module has no trainable parameters (use nn.Linear layers)")
    missing = [n for n, p in params if p.grad is None]
    expect(not missing, f"no gradient reaches parameter(s) {missing}", causes=[C["params"]])
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


C = {
    "out-dim": cause("out-dim", "The output does not have out_dim columns: the last Linear maps "
                     "hidden_dim to out_dim.", "ranks", "l2", "rows", "negative", "pooling-sum", "pooling-max",
                     "pooling-other", "batch1", "batch-eval", "params", "input-grad"),
    "ranks": cause("ranks", "Not every input rank is pooled to [B, C] (positions flattened into "
                   "channels, or a rank left out): average every dimension after "
                   "the channels (x.flatten(2).mean(2)), for [B, C, N], [B, C, H, W] and [B, C, D, H, W].",
                   "pooling-sum", "pooling-max", "pooling-other"),
    "l2": cause("l2", "The output rows are not L2-normalised: end with F.normalize(x, dim=1) so every "
                "sample is a unit vector.", "negative"),
    "rows": cause("rows", "The output is normalised over the batch (dim=0), so each column is a unit "
                  "vector, not each row: use F.normalize(x, dim=1).", "l2", "batch-eval"),
    "pooling-sum": cause("pooling-sum", "The positions are summed, not averaged, so the embedding grows "
                         "with the grid: use the mean over positions (x.flatten(2).mean(2)).", "pooling-other"),
    "pooling-max": cause("pooling-max", "The positions are max-pooled: use the mean over positions "
                         "(x.flatten(2).mean(2)), as CRD's global average pooling does.", "pooling-other"),
    "pooling-other": cause("pooling-other", "The map is not mean-pooled over positions (flattened into "
                           "channels, or one position picked?): use x.flatten(2).mean(2)."),
    "batchnorm": cause("batchnorm", "A BatchNorm layer mixes the samples of a batch and fails at batch "
                       "size 1 in training: use nn.LayerNorm(hidden_dim), which normalises each sample "
                       "on its own.", "batch1", "batch-eval"),
    "batch1": cause("batch1", "Training mode fails at batch size 1: nothing in the head may need more "
                    "than one sample (LayerNorm, not BatchNorm)."),
    "batch-eval": cause("batch-eval", "In eval mode a sample's embedding depends on the rest of the "
                        "batch: no statistic may mix samples."),
    "negative": cause("negative", "The output can never be negative (a ReLU after the last Linear?), so "
                      "half of the unit sphere is out of reach: end with Linear then F.normalize."),
    "dropout": cause("dropout", "Dropout stays on in eval mode: use nn.Dropout (switched off by .eval()), "
                     "not F.dropout(..., training=True).", "pooling-sum", "pooling-max", "pooling-other",
                     "batch-eval"),
    "input-grad": cause("input-grad", "No gradient reaches the input (detached or under torch.no_grad()): "
                        "the student's features must train through the projector."),
    "params": cause("params", "Not every parameter gets a gradient: build the head from nn.Linear layers "
                    "that the forward uses, with nothing detached."),
}


def _probe_constant_maps(learner_cls) -> None:
    """On a map constant over positions, mean and max pooling equal the vector; a sum does not."""
    model = _build(learner_cls).eval()
    v = torch.randn(3, IN_DIM)
    with torch.no_grad():
        out_map, out_vec = model(v[:, :, None, None].expand(3, IN_DIM, 4, 5).contiguous()), model(v)
    expect_close(out_map, out_vec, "a map constant over 4x5 positions vs its vector", rtol=1e-4,
                 causes=[C["pooling-sum"]])


def _probe_mean_not_max(learner_cls) -> None:
    model = _build(learner_cls).eval()
    x = torch.randn(3, IN_DIM, 4, 5)
    with torch.no_grad():
        out, by_mean, by_max = model(x), model(x.flatten(2).mean(2)), model(x.flatten(2).amax(2))
    if torch.allclose(out, by_max, rtol=1e-4, atol=1e-6):
        raise CheckFailure("projecting the map equals projecting its max vector", causes=[C["pooling-max"]])
    expect_close(out, by_mean, "projecting the map vs projecting its mean vector", rtol=1e-4,
                 causes=[C["pooling-other"]])


def _probe_batchnorm(learner_cls) -> None:
    model = _build(learner_cls)
    model.eval()(torch.randn(2, IN_DIM))  # a stub's NotImplementedError says "not implemented yet"
    norms = [type(m).__name__ for m in model.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    expect(not norms, f"the head holds {norms}")


def _probe_columns(learner_cls) -> None:
    model = _build(learner_cls).eval()
    with torch.no_grad():
        out = model(torch.randn(5, IN_DIM))
    cols = out.norm(dim=0)
    expect(not torch.allclose(cols, torch.ones_like(cols), atol=1e-4), "every output column has unit norm")


def _probe_negative(learner_cls) -> None:
    model = _build(learner_cls).eval()
    with torch.no_grad():
        out = model(torch.randn(64, IN_DIM) * 2)
    expect(bool((out < 0).any()), "no output of 64 samples has a negative coordinate")


def _with(cause_: Cause, run):
    """``run``, its failures naming ``cause_``."""
    def checked(learner_cls) -> None:
        try:
            run(learner_cls)
        except CheckFailure as failure:
            raise CheckFailure(str(failure), failure.hint, failure.causes or (cause_,)) from None
    return checked


def _case_out_dim(learner_cls) -> None:
    model = _build(learner_cls).eval()
    with torch.no_grad():
        out = model(torch.randn(3, IN_DIM))
    expect_shape(out, (3, OUT), "output for a [B, C] input")


CASES = [
    Case("output is [B, out_dim] for a [B, C] input", _case_out_dim, cause=C["out-dim"]),
    Case("output shape [B, out_dim] for [B,C], [B,C,N], [B,C,H,W] and [B,C,D,H,W]", _case_shapes,
         cause=C["ranks"]),
    Case("the output is not normalised over the batch (columns)", _probe_columns, cause=C["rows"]),
    Case("every output row has unit L2 norm", _case_unit_rows, cause=C["l2"]),
    Case("outputs can be negative", _probe_negative, cause=C["negative"]),
    Case("a map constant over positions projects like its vector (mean or max, not sum)",
         _probe_constant_maps, cause=C["pooling-sum"]),
    Case("spatial dimensions are mean-pooled (not max, not flattened)", _probe_mean_not_max,
         judges=("pooling-max", "pooling-other")),
    Case("spatial dimensions are mean-pooled", _with(C["pooling-other"], _case_mean_pooling)),
    Case("no BatchNorm: every sample normalised on its own", _probe_batchnorm, cause=C["batchnorm"]),
    Case("training mode works at batch size 1", _case_train_batch1, cause=C["batch1"]),
    Case("gradients reach every parameter and the input", _case_gradients,
         "do not detach the input or wrap the forward in torch.no_grad()", judges=("input-grad", "params")),
    Case("eval mode is deterministic (dropout off)", _case_eval_deterministic, cause=C["dropout"]),
    Case("in eval mode a sample's embedding does not depend on the rest of the batch", _case_per_sample,
         cause=C["batch-eval"]),
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
        time_limit_s=time_limit_s,
    )
