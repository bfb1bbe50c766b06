"""Input checks shared by the distillation losses: one wording, one exception, fp32 maths.

Shapes and dtypes are checked up front (free). Finiteness is checked on the scalar loss and,
only when it is NaN or inf, on the inputs to say which one is to blame: scanning every map on
every step would cost several passes over the largest tensors of a distillation step, and a
NaN or inf in any input always makes these losses non-finite.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager

import torch

from bevdistill.errors import UserError

_HALF = (torch.float16, torch.bfloat16)


class LossInputError(UserError, ValueError, TypeError):
    """A loss got an input it cannot use (wrong dtype, empty batch or grid, NaN or inf).

    A ``ValueError`` as the issue asks; also a ``TypeError`` so that code written against the
    earlier ``TypeError`` for non-float inputs keeps working.
    """


class NonFiniteLossError(LossInputError):
    """A loss input (or the loss) is NaN or inf: in training, the mark of divergence."""


def check_input(loss: str, name: str, x: object) -> torch.Tensor:
    """``x`` must be a non-empty floating-point tensor; returns it."""
    if not isinstance(x, torch.Tensor):
        raise LossInputError(f"{loss}: {name} must be a float tensor (torch.Tensor), got {type(x).__name__}")
    if not x.is_floating_point():
        raise LossInputError(
            f"{loss}: {name} has dtype {x.dtype}; the loss needs floating-point features. "
            f"Pass {name}.float() (or the layer's output itself, not an index or mask)"
        )
    if x.numel() == 0:
        raise LossInputError(
            f"{loss}: {name} is empty (shape {tuple(x.shape)}): a batch of 0 samples or a "
            "grid with 0 cells has nothing to distil. Skip the loss for an empty batch, or "
            "check the layer that produced it"
        )
    return x


def as_fp32(x: torch.Tensor) -> torch.Tensor:
    """Half precision -> float32 (exp/normalise overflow in fp16); fp32/fp64 stay as they are."""
    return x.float() if x.dtype in _HALF else x


def full_precision(*tensors: torch.Tensor) -> AbstractContextManager:
    """Autocast off on the inputs' device, so a loss called under autocast stays in fp32."""
    return torch.autocast(device_type=tensors[0].device.type, enabled=False)


def check_finite(loss: str, value: torch.Tensor, inputs: Mapping[str, torch.Tensor | None]) -> torch.Tensor:
    """Return ``value`` if finite; otherwise raise naming the inputs that hold NaN or inf."""
    if bool(torch.isfinite(value).all()):
        return value
    bad = [
        f"{name} ({_count(t)})" for name, t in inputs.items()
        if isinstance(t, torch.Tensor) and not bool(torch.isfinite(t).all())
    ]
    cause = (
        f"{', '.join(bad)} contain NaN or inf" if bad
        else "the inputs are finite but too large for their dtype (overflow)"
    )
    raise NonFiniteLossError(
        f"{loss} is {float(value.detach())}: {cause}. Check the layer that produced them; in training "
        "this usually means divergence (lower the learning rate, keep gradient clipping on, "
        "or run the model in fp32)"
    )


def _count(t: torch.Tensor) -> str:
    nan = int(torch.isnan(t).sum())
    inf = int(torch.isinf(t).sum())
    return f"{nan} NaN, {inf} inf of {t.numel()} values"
