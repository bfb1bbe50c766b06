"""Step 4: attention transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", 2017).

An attention map says *where* a network looks: per BEV cell, the mean over channels of
``|F|^p``. It has no channel axis, so teacher and student may have any channel counts.

Normalisation and loss magnitude (why the default differs from the tutorial)
----------------------------------------------------------------------------
* ``normalization='l2'`` (default, the AT paper): ``a = raw / ||raw||_2`` over the cells, and
  the loss is the squared L2 distance ``sum_cells (a_s - a_t)^2``, averaged over the batch.
  Both maps are unit vectors, so the loss lies in ``[0, 4]`` whatever the grid size.
* ``normalization='l1'`` with ``reduction='mean'`` reproduces the tutorial's sketch
  (``sum_c F^2``, L1 normalisation, ``F.mse_loss``). An L1-normalised map has entries of
  about ``1/HW``, and the MSE averages ``HW`` squared differences of that size, so the loss
  is of order ``1/(HW)^2``: 2.6e-8 on BEVFusion's 180 x 180 grid below, with a gradient ten
  orders of magnitude under a detection loss's, so it teaches nothing. RepDistiller (L2 maps, mean over cells) scales as
  ``1/HW`` and compensates with a weight of 1000.

Measured with ``OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.attention_magnitude``
(B=2; random input -> 3x3 conv -> 64-channel student features; 128-channel teacher with
Gaussian blobs of activity on 20 objects; |dF|, |dW|: gradient norms w.r.t. the student
features and that conv's weights; ratio: |dW| over the |dW| of CenterPoint's Gaussian focal
loss of a 10-class heatmap head at initialisation; all rows in
``benchmarks/results/attention_magnitude.json``)::

    grid     variant                      loss     |dF|     |dW|     ratio to focal
    32x32    tutorial (l1, mean)          6.3e-06  4.8e-08  8.0e-07  4.9e-07
    32x32    RepDistiller AT (l2, mean)   1.3e-03  1.7e-05  2.9e-04  1.8e-04
    32x32    bevdistill (l2, sum)         1.3e+00  1.8e-02  3.0e-01  1.8e-01
    128x128  tutorial (l1, mean)          9.9e-08  9.2e-11  1.5e-09  3.4e-10
    128x128  bevdistill (l2, sum)         1.6e+00  4.6e-03  7.7e-02  1.7e-02
    180x180  tutorial (l1, mean)          2.6e-08  1.7e-11  2.9e-10  3.4e-11
    180x180  RepDistiller AT (l2, mean)   5.0e-05  1.0e-07  1.7e-06  2.1e-07
    180x180  bevdistill (l2, sum)         1.6e+00  3.3e-03  5.6e-02  6.7e-03

The default's loss value does not depend on the grid; its gradient still thins out as
``1/sqrt(HW)`` when the per-cell contributions are uncorrelated (as here), while the
tutorial's falls by ten orders of magnitude below the focal loss's. Tune ``alpha_at``
against your detection loss; with the tutorial's form no sane weight would do.

Size mismatch: the attention maps (before normalisation) are resized to the smaller grid in
each dimension with :func:`bevdistill.bev_grid.resize_bev` (area averaging, world-aligned),
so a student that matches the teacher's pooled attention reaches zero loss. The tutorial
instead interpolates the student to the teacher's grid, bilinearly even when shrinking, which
skips cells and leaves an unreachable floor when the teacher is finer.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

from bevdistill._warnings import warn_once
from bevdistill.bev_grid import resize_bev
from bevdistill.losses._checks import as_fp32, check_finite, check_input, full_precision

Normalization = Literal["l2", "l1", "none"]
Reduction = Literal["sum", "mean"]
_NORMS = ("l2", "l1", "none")
_EPS = 1e-12


def _as_grid(feat: torch.Tensor, who: str) -> torch.Tensor:
    """View a feature as ``[B, C', H, W]``; 3D point features become a ``1 x N`` strip.

    ``[B, C, D, H, W]`` voxel features fold the height bins into channels (as BEV encoders do),
    so the attention map lives on the BEV grid.
    """
    check_input("AttentionTransferLoss", f"{who} features", feat)
    if feat.dim() == 4:
        return feat
    if feat.dim() == 5:
        b, c, d, h, w = feat.shape
        return feat.reshape(b, c * d, h, w)
    if feat.dim() == 3:
        return feat.unsqueeze(2)
    raise ValueError(
        f"{who} features have shape {tuple(feat.shape)}; attention transfer needs a spatial "
        "map: [B, C, H, W] (BEV), [B, C, D, H, W] (voxels) or [B, C, N] (points)"
    )


def _raw_attention(feat: torch.Tensor, p: float) -> torch.Tensor:
    """``mean_c |F|^p`` as ``[B, 1, H, W]``, not yet normalised (so it can be resized).

    ``p = 2`` (the default) squares directly: the same values without the abs/sign passes over
    the whole map in forward and backward (a few percent of a CPU training step).
    """
    powered = feat.square() if p == 2 else feat.abs().pow(p)
    return powered.mean(dim=1, keepdim=True)


def _normalise(flat: torch.Tensor, normalization: str) -> torch.Tensor:
    if normalization == "l2":
        return F.normalize(flat, p=2, dim=1, eps=_EPS)
    if normalization == "l1":
        return F.normalize(flat, p=1, dim=1, eps=_EPS)
    return flat


def _check_options(p: float, normalization: str) -> None:
    if normalization not in _NORMS:
        raise ValueError(f"normalization must be one of {_NORMS}, got {normalization!r}")
    if not p > 0:
        raise ValueError(f"p must be positive (the AT paper uses p=2), got {p}")


def attention_map(
    feat: torch.Tensor, p: float = 2, normalization: Normalization = "l2"
) -> torch.Tensor:
    """Attention map of a feature: ``normalise(mean_c |F|^p)`` flattened to ``[B, cells]``.

    ``[B, C, H, W]`` -> ``[B, H*W]``; ``[B, C, D, H, W]`` -> ``[B, H*W]``; ``[B, C, N]`` -> ``[B, N]``.
    ``'l2'``: unit L2 norm over cells (AT paper); ``'l1'``: cells sum to 1 (the tutorial);
    ``'none'``: the raw map. An all-zero map stays zero (no NaN).
    """
    _check_options(p, normalization)
    grid = _as_grid(feat, "input")
    with full_precision(grid):
        raw = _raw_attention(as_fp32(grid), p)
        return _normalise(raw.flatten(1), normalization)


def tutorial_attention_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """The seed tutorial's step-4 loss, kept in one place to be compared with, never to train
    with: sum of squares over channels, L1-normalised maps (their cells then scale as 1/(H*W)),
    bilinear resizing and a mean squared error (another 1/(H*W)), so it is vanishingly small on
    BEV grids (``benchmarks/attention_magnitude.py`` measures by how much)."""
    s_att = student_feat.pow(2).sum(1, keepdim=True)
    t_att = teacher_feat.pow(2).sum(1, keepdim=True)
    if s_att.shape != t_att.shape:
        s_att = F.interpolate(s_att, size=t_att.shape[2:], mode="bilinear")
    s_att = F.normalize(s_att.view(s_att.size(0), -1), p=1, dim=1)
    t_att = F.normalize(t_att.view(t_att.size(0), -1), p=1, dim=1)
    return F.mse_loss(s_att, t_att)


def _mask_weights(mask: torch.Tensor, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """A mask or heatmap on any grid -> non-negative cell weights ``[B, 1, *size]``.

    ``[B, H, W]``, ``[B, 1, H, W]`` or per-class probabilities ``[B, K, H, W]`` (max over classes).
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a tensor, got {type(mask).__name__}")
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.dim() != 4:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)}; expected [B, H, W], [B, 1, H, W] or "
            "[B, K, H, W] (class probabilities) on any BEV grid"
        )
    if mask.shape[0] != batch:
        raise ValueError(f"mask has batch size {mask.shape[0]} but the features have {batch}")
    weights = mask.detach().float().amax(dim=1, keepdim=True)
    if bool((weights < 0).any()):
        raise ValueError(
            "mask must be >= 0 (a 0/1 mask or probabilities; for logits pass .sigmoid())"
        )
    return resize_bev(weights, size)


@MODELS.register_module()
class AttentionTransferLoss(nn.Module):
    """Match the student's spatial attention map to the teacher's (teacher is detached).

    ``forward(student_feat, teacher_feat, mask=None)`` -> scalar. Features ``[B, C, H, W]``
    (channels may differ, grids may differ in either direction and need not be square),
    ``[B, C, D, H, W]`` or ``[B, C, N]`` (same N). ``mask`` (``[B, H, W]``, ``[B, 1, H, W]`` or
    class probabilities ``[B, K, H, W]``, any grid) weights the cells; both maps are renormalised over the weighted cells, so the
    loss stays in ``[0, 4]`` however small the foreground is.

    ``reduction='sum'`` sums the squared differences over cells (grid-size independent);
    ``'mean'`` averages them (RepDistiller; with ``normalization='l1'`` the tutorial).
    Either way the batch is averaged. See the module docstring for the magnitudes.
    """

    def __init__(
        self, p: float = 2, normalization: Normalization = "l2", reduction: Reduction = "sum"
    ):
        super().__init__()
        _check_options(p, normalization)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' (over cells) or 'mean', got {reduction!r}")
        self.p = p
        self.normalization = normalization
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"p={self.p}, normalization={self.normalization!r}, reduction={self.reduction!r}"

    def forward(
        self,
        student_feat: torch.Tensor,
        teacher_feat: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        s = _as_grid(student_feat, "student")
        t = _as_grid(teacher_feat.detach(), "teacher")
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"batch sizes differ: student {s.shape[0]}, teacher {t.shape[0]}")
        if (student_feat.dim() == 3 or teacher_feat.dim() == 3) and s.shape[2:] != t.shape[2:]:
            raise ValueError(
                f"point features {tuple(student_feat.shape)} and {tuple(teacher_feat.shape)} differ "
                "in layout; points have no cell correspondence, so scatter them to a BEV grid first"
            )
        with full_precision(s):
            loss = self._loss(as_fp32(s), as_fp32(t), mask)
        return check_finite(
            "AttentionTransferLoss", loss,
            {"student_feat": student_feat, "teacher_feat": teacher_feat, "mask": mask},
        )

    def _loss(self, s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        a_s, a_t = _raw_attention(s, self.p), _raw_attention(t, self.p)
        size = (min(a_s.shape[2], a_t.shape[2]), min(a_s.shape[3], a_t.shape[3]))
        a_s, a_t = resize_bev(a_s, size), resize_bev(a_t, size)
        if mask is not None:
            weights = _mask_weights(mask, s.shape[0], size).to(a_s.dtype)
            a_s, a_t = a_s * weights, a_t * weights

        a_s, a_t = a_s.flatten(1), a_t.flatten(1)
        if bool(((a_s.amax(1) <= 0) | (a_t.amax(1) <= 0)).any()):
            warn_once(
                "attention-zero-map",
                "AttentionTransferLoss: an attention map is all zero (all-zero features or an "
                "empty foreground mask). A zero map stays zero after normalisation: a sample "
                "whose two maps are both zero adds 0, one with a single zero map adds the other "
                "map's squared norm (1 with normalization='l2', reduction='sum'), and no "
                "gradient flows through the zero map.",
            )
        diff = (_normalise(a_s, self.normalization) - _normalise(a_t, self.normalization)).pow(2)
        per_sample = diff.sum(1) if self.reduction == "sum" else diff.mean(1)
        return per_sample.mean()
