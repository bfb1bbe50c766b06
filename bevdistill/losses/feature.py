"""Plain feature imitation (FitNets-style hint loss) between BEV maps of different grids/widths.

Romero et al., "FitNets: Hints for Thin Deep Nets" (2015): a learned 1x1 regressor maps the
student's channels to the teacher's and the student is trained to reproduce the teacher's
feature map under a mean squared error. For BEV maps the grids may differ, so the student map
is brought onto the teacher's grid with :func:`~bevdistill.bev_grid.resize_bev` (world-aligned:
area-average when shrinking, bilinear when growing).

The adapter is a 1x1 convolution and ``resize_bev`` a per-channel linear map whose weights
sum to 1, so the two commute exactly (bias included); the adapter is applied on whichever grid
is smaller, which is cheaper and gives the same result.

``foreground`` (mask or class probabilities on any grid) turns the mean over cells into a
weighted mean: most BEV cells are empty road, on which imitation mostly teaches zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

from bevdistill._warnings import warn_once
from bevdistill.bev_grid import resize_bev
from bevdistill.losses._checks import (
    LossInputError,
    as_fp32,
    check_finite,
    check_input,
    full_precision,
)
from bevdistill.losses.contrastive import foreground_weights


def _check_channels(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_map(name: str, x: object, channels: int) -> torch.Tensor:
    check_input("FeatureMSELoss", name, x)
    if x.dim() != 4:
        raise LossInputError(
            f"FeatureMSELoss needs BEV maps [B, C, H, W]; {name} has shape {tuple(x.shape)}. "
            "Distil another layer or give this layer weight 0"
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} has {x.shape[1]} channels (shape {tuple(x.shape)}) but the loss was built "
            f"for {channels}; build FeatureMSELoss(student_channels, teacher_channels) with the "
            "captured layers' channel counts"
        )
    return x


@MODELS.register_module()
class FeatureMSELoss(nn.Module):
    """``mean((adapter(student) resized to the teacher grid - teacher)^2)``.

    Args:
        student_channels, teacher_channels: channels of the two maps; the adapter is a learned
            1x1 convolution ``student_channels -> teacher_channels``.

    ``forward(student [B, Cs, Hs, Ws], teacher [B, Ct, Ht, Wt], *, mask=None)`` returns a
    scalar: the squared error averaged over channels and cells (cells weighted by
    ``mask`` when given; a sample with an all-zero foreground falls back to uniform
    weights with a one-time warning). The teacher is detached.
    """

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.student_channels = _check_channels("student_channels", student_channels)
        self.teacher_channels = _check_channels("teacher_channels", teacher_channels)
        self.adapter = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)

    def extra_repr(self) -> str:
        return f"student_channels={self.student_channels}, teacher_channels={self.teacher_channels}"

    def forward(
        self,
        student_feat: torch.Tensor,
        teacher_feat: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        s = _check_map("student_feat", student_feat, self.student_channels)
        t = _check_map("teacher_feat", teacher_feat, self.teacher_channels).detach()
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"batch sizes differ: student {s.shape[0]}, teacher {t.shape[0]}")
        with full_precision(s):
            loss = self._loss(as_fp32(s), as_fp32(t), mask)
        # Checked on the scalar, not on the inputs: scanning the two maps costs several passes
        # over the largest tensors of a distillation step (the inputs are scanned on failure).
        return check_finite(
            "FeatureMSELoss", loss,
            {"student_feat": student_feat, "teacher_feat": teacher_feat, "mask": mask},
        )

    def _adapt(self, x: torch.Tensor) -> torch.Tensor:
        """The 1x1 adapter, in ``x``'s dtype (fp32) even if the module was moved to half."""
        weight = self.adapter.weight
        if weight.dtype == x.dtype:
            return self.adapter(x)
        return F.conv2d(x, weight.to(x.dtype), self.adapter.bias.to(x.dtype))

    def _loss(self, s: torch.Tensor, t: torch.Tensor, foreground) -> torch.Tensor:
        size = tuple(t.shape[-2:])
        if s.shape[-2] * s.shape[-1] <= size[0] * size[1]:
            s = resize_bev(self._adapt(s), size)  # adapt on the smaller grid (they commute)
        else:
            s = self._adapt(resize_bev(s, size))
        err = (s - t.to(s.dtype)).pow(2).mean(dim=1)  # [B, Ht, Wt]
        if foreground is None:
            return err.mean()
        w = foreground_weights(foreground, s.shape[0], size).to(err)  # [B, Ht*Wt]
        total = w.sum(dim=1, keepdim=True)
        empty = total.squeeze(1) <= 0
        if empty.any():
            warn_once(
                "FeatureMSELoss.empty_foreground",
                "FeatureMSELoss: a sample's foreground is all zero; its cells are weighted "
                "uniformly instead.",
            )
            w = torch.where(empty.unsqueeze(1), torch.ones_like(w), w)
            total = w.sum(dim=1, keepdim=True)
        per_sample = (w * err.flatten(1)).sum(dim=1) / total.squeeze(1)
        return per_sample.mean()
