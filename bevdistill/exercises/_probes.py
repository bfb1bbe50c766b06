"""Small helpers that the probes of several steps share."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from bevdistill.exercises._checking import IN_PLACE, Cause, CheckFailure


def cause(key: str, text: str, *explains: str) -> Cause:
    return Cause(key, text, tuple(explains))


SCALAR = Cause("scalar", "forward must return the loss as a 0-dim tensor (one number with its "
               "autograd graph), not a float, a tuple or a per-sample tensor: reduce it with .mean().")


def scalar(out: Any) -> torch.Tensor:
    """``out`` if it is a finite-or-not 0-dim tensor, else a failure naming :data:`SCALAR`."""
    if not (isinstance(out, torch.Tensor) and out.dim() == 0):
        shown = f"a tensor of shape {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckFailure(f"forward returned {shown}, expected a scalar tensor", causes=[SCALAR])
    return out


def same(a: float, b: float, rtol: float = 1e-4, atol: float = 1e-7) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


def unchanged_inputs(call: Callable[..., Any], *inputs: torch.Tensor) -> None:
    """``call(*inputs)`` must leave every input tensor as it was."""
    kept = [x.clone() for x in inputs]
    call(*inputs)
    for i, (x, k) in enumerate(zip(inputs, kept, strict=True)):
        if not torch.equal(x, k):
            raise CheckFailure(f"input {i} was changed in place by your code", causes=[IN_PLACE])
