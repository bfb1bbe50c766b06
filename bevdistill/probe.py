"""The dry forward: channel sizes read from the models themselves, never typed by hand.

One eval-mode, no-grad forward with temporary hooks records what each hooked layer outputs, so a
config change (a narrower student, another neck) cannot silently break the projectors; then the
distillation loss is tried once on those captures, so a layer it cannot take fails at build
time, naming the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from bevdistill.capture import FeatureRecorder
from bevdistill.errors import UserError
from bevdistill.losses.terms import as_feature


class DistillerBuildError(UserError, ValueError):
    """The models' captured layers cannot be fed to the distillation loss."""


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Eval mode inside, each submodule's own train/eval flag restored afterwards."""
    flags = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, was_training in flags:
            m.training = was_training


def tensor_forward(model: nn.Module, inputs: Any) -> Any:
    """The default probe: mmengine's ``mode='tensor'`` forward."""
    return model(inputs, None, mode="tensor")


def dry_forward(
    model: nn.Module,
    inputs: Any,
    hook_points: Sequence[str],
    select: Mapping[str, int] | None = None,
    run: Callable[[nn.Module, Any], Any] = tensor_forward,
) -> dict[str, Any]:
    """``run(model, inputs)`` once (eval mode, no grad); what ``hook_points`` output.

    Eval mode keeps BatchNorm statistics unchanged; the train/eval flags are restored after.
    The temporary hooks are removed before returning.
    """
    with FeatureRecorder(model, hook_points, select=select, detach=True) as recorder:
        with eval_mode(model), torch.no_grad(), recorder.recording() as features:
            run(model, inputs)
        return dict(features)


def infer_channels(features: Mapping[str, Any], role: str = "model") -> dict[str, int]:
    """Channels (dim 1) of every captured feature, after unwrapping one-element lists."""
    channels = {}
    for name, value in features.items():
        try:
            channels[name] = as_feature(name, value, role).shape[1]
        except (ValueError, TypeError) as exc:
            raise DistillerBuildError(
                f"{exc}. Hook a module that returns a [B, C, ...] feature map."
            ) from exc
    return channels


def check_batch_dim(features: Mapping[str, Any], batch_size: int | None, what: str) -> None:
    """Per-voxel or per-point outputs (first dim not the batch) cannot be distilled map to map."""
    if batch_size is None:
        return
    for name, value in features.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[0] != batch_size:
            raise DistillerBuildError(
                f"{what}.{name} outputs shape {tuple(value.shape)}, whose first dimension is not "
                f"the batch ({batch_size} samples): per-voxel or per-point features cannot be "
                "distilled map to map. Hook a dense BEV layer instead (pts_middle_encoder, "
                "pts_backbone, pts_neck, fusion_layer)."
            )


def check_loss_accepts(loss: nn.Module, student: Mapping[str, Any],
                       teacher: Mapping[str, Any]) -> None:
    """One call on the dry-run captures, so a layer the losses cannot take fails at build time."""
    shapes = {side: {n: tuple(f.shape) for n, f in feats.items() if isinstance(f, torch.Tensor)}
              for side, feats in (("student", student), ("teacher", teacher))}
    # A GPU-only model was probed on the GPU; the new loss is still where it was built.
    device = next(loss.parameters(), torch.empty(0)).device
    student, teacher = _to(student, device), _to(teacher, device)
    with eval_mode(loss), torch.no_grad():
        try:
            losses = loss(student, teacher)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise DistillerBuildError(
                f"the distillation loss cannot take the captured layers (shapes {shapes}): "
                f"{exc}. Let the terms read other layers, or pick another element "
                "(driver=dict(select=...))."
            ) from exc
    if not isinstance(losses, Mapping) or not any("loss" in k for k in losses):
        raise DistillerBuildError(
            f"the distillation loss returned {type(losses).__name__} without any 'loss' key; "
            "mmengine sums only keys containing 'loss'."
        )


def _to(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor inside (dicts, lists, tuples) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value
