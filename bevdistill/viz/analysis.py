"""Measurements behind the notebooks' pictures: what a map's bright spots are made of, and what
a contrastive temperature does.

* :func:`occupancy`, :func:`box_mask`: which cells of a feature grid hold points, or objects;
* :func:`empty_input_response`: what ``pts_backbone`` and ``pts_neck`` output where the LiDAR saw
  nothing (an all-zero BEV map): the "bright empty area" of notebook 1;
* :func:`parity_means`: the 2 x 2 periodic part of a map (a transposed convolution whose kernel
  equals its stride leaves one);
* :func:`attention_shares`, :func:`attention_gradient_map`: where the attention-transfer target
  puts its weight, and where the loss pushes a student, with and without a foreground ``mask``;
* :func:`temperature_sweep`: per InfoNCE temperature, the softmax entropy, the share of the
  gradient that goes to the hardest negative, and the loss (notebook 3).

Everything here calls the package's own losses; nothing re-implements them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bevdistill.bev_grid import resize_bev
from bevdistill.data.geometry import bev_corners
from bevdistill.losses.attention import AttentionTransferLoss
from bevdistill.losses.contrastive import ContrastiveLoss, symmetric_info_nce
from bevdistill.viz.bev import to_numpy
from bevdistill.viz.features import attention_maps, feature_map, sample_of


def occupancy(scatter_map: Any, shape: Sequence[int] | None = None, sample: int = 0) -> np.ndarray:
    """Share of pillar cells that hold points, per cell of a ``shape`` grid (default: its own).

    ``scatter_map`` is the ``pts_middle_encoder`` output ``[B, C, H, W]``: PointPillars' scatter
    leaves every cell without points at exactly zero, so a non-zero cell is an occupied pillar.
    Area averaging brings the 0/1 map to a coarser grid (1: every pillar under the cell has
    points, 0: none has).
    """
    x = sample_of(feature_map(scatter_map, what="scatter map"), sample)
    occupied = (x.abs().amax(dim=0) > 0).float()[None, None]
    if shape is not None:
        occupied = resize_bev(occupied, (int(shape[0]), int(shape[1])))
    return occupied[0, 0].numpy()


def box_mask(boxes: Any, extent: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """``[H, W]`` bool: the cell's centre lies inside a box footprint (boxes ``[M, 7]``)."""
    h, w = int(shape[0]), int(shape[1])
    x0, x1, y0, y1 = (float(v) for v in extent)
    xs = x0 + (np.arange(w) + 0.5) * (x1 - x0) / w
    ys = y0 + (np.arange(h) + 0.5) * (y1 - y0) / h
    gx, gy = np.meshgrid(xs, ys)  # row = y, column = x, as the feature maps
    mask = np.zeros((h, w), dtype=bool)
    b = to_numpy(boxes, "boxes").astype(np.float64).reshape(-1, 7)
    for corners in bev_corners(b[:, [0, 1, 3, 4, 6]]) if len(b) else []:
        inside = np.ones((h, w), dtype=bool)
        for k in range(4):  # inside a counter-clockwise convex polygon: left of every edge
            (ax, ay), (bx, by) = corners[k], corners[(k + 1) % 4]
            inside &= (bx - ax) * (gy - ay) - (by - ay) * (gx - ax) >= 0
        mask |= inside
    return mask


@torch.no_grad()
def empty_input_response(
    model: nn.Module, scatter_map: Any, select: Mapping[str, int] | None = None
) -> dict[str, torch.Tensor]:
    """``pts_backbone`` and ``pts_neck`` of ``model`` on an all-zero BEV map of the scatter's shape.

    This is what the detector computes where the LiDAR returned nothing: the scatter leaves such
    cells at zero, the convolutions have no bias, but every BatchNorm turns a zero input into
    its shift ``beta - gamma * running_mean / sqrt(running_var + eps)``, and the ReLU keeps the
    positive part. A large empty region converges to this response, cell for cell. Returns
    ``{'pts_backbone': map of scale select['pts_backbone'] (default: the last), 'pts_neck': map}``,
    each ``[1, C, h, w]``; the model's train/eval mode is left as it is.
    """
    x = feature_map(scatter_map, what="scatter map")
    zeros = torch.zeros(1, *x.shape[1:], dtype=x.dtype)
    device = next(model.parameters()).device
    scales = model.pts_backbone(zeros.to(device))
    neck = model.pts_neck(scales)
    index = dict(select or {}).get("pts_backbone", -1)
    return {
        "pts_backbone": feature_map(scales, index, "pts_backbone"),
        "pts_neck": feature_map(neck, 0, "pts_neck"),
    }


def parity_means(value: Any, sample: int = 0) -> np.ndarray:
    """``[2, 2]``: the channel-mean map averaged over the cells of each (row % 2, column % 2).

    A map without a 2-cell period gives four nearly equal numbers. A transposed convolution
    whose kernel equals its stride (SECONDFPN's upsampling) computes each cell of a 2 x 2 block
    from the same input cell with a different slice of its kernel, so on a uniform input the
    four positions differ systematically: a checkerboard (or stripes).
    """
    m = sample_of(feature_map(value), sample).mean(dim=0)
    return np.array([[float(m[r::2, c::2].mean()) for c in (0, 1)] for r in (0, 1)])


def attention_shares(
    student: Any,
    teacher: Any,
    regions: Mapping[str, Any],
    *,
    mask: torch.Tensor | None = None,
    sample: int = 0,
) -> dict[str, dict[str, float]]:
    """Share of each unit attention map's squared mass that falls in each region.

    ``regions`` maps a name to an ``[H, W]`` bool array on the common grid of
    :func:`~bevdistill.viz.attention_maps` (the smaller of the two grids). ``mask`` weights
    the cells exactly as :class:`~bevdistill.AttentionTransferLoss` does. Returns
    ``{'teacher': {region: share}, 'student': {...}}``; the shares of disjoint regions that
    cover the grid sum to 1.
    """
    maps = attention_maps(student, teacher, sample, mask=mask)
    out: dict[str, dict[str, float]] = {}
    for who in ("teacher", "student"):
        energy = maps[who] ** 2
        total = float(energy.sum()) or 1.0
        out[who] = {}
        for name, region in regions.items():
            r = np.asarray(region, dtype=bool)
            if r.shape != energy.shape:
                raise ValueError(f"region {name!r} has shape {r.shape}, the maps {energy.shape}")
            out[who][name] = float(energy[r].sum()) / total
    return out


def attention_gradient_map(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    sample: int = 0,
    loss: nn.Module | None = None,
) -> np.ndarray:
    """``[H, W]``: the norm over channels of d(attention-transfer loss)/d(student features).

    Where the loss pushes the student, cell by cell; ``loss`` defaults to the package's
    :class:`~bevdistill.AttentionTransferLoss`, called with ``mask``.
    """
    fn = loss if loss is not None else AttentionTransferLoss()
    s = feature_map(student, what="student feature").clone().requires_grad_(True)
    t = feature_map(teacher, what="teacher feature")
    value = fn(s, t) if mask is None else fn(s, t, mask=mask)
    (grad,) = torch.autograd.grad(value, s)
    return sample_of(grad, sample).norm(dim=0).numpy()


def temperature_sweep(
    student: torch.Tensor, teacher: torch.Tensor, temperatures: Sequence[float]
) -> list[dict[str, float]]:
    """What the temperature does to InfoNCE on ``N`` pairs (row ``i`` of both is a positive pair).

    For each ``tau``, with ``p_ij = softmax_j(s_i . t_j / tau)`` (the student-to-teacher half):

    * ``entropy``: mean over anchors of the softmax entropy, in nats (0: all weight on one
      candidate; ``log N``: uniform);
    * ``p_positive``: mean probability of the positive;
    * ``hardest_share``: mean over anchors of the share of the negatives' gradient that goes to
      the single hardest negative (``d loss / d logit_ij = p_ij`` for a negative ``j``, by
      autograd through :func:`~bevdistill.losses.contrastive.symmetric_info_nce`);
      ``1 / (N - 1)`` means every negative pulls equally, 1 means one negative gets it all;
    * ``loss``: :class:`~bevdistill.ContrastiveLoss` ``(temperature=tau)`` on the pair.

    Inputs ``[N, D]`` (normalised inside, as the loss does), ``N >= 2``.
    """
    if student.dim() != 2 or student.shape != teacher.shape or student.shape[0] < 2:
        raise ValueError(
            f"need two [N, D] tensors of the same shape with N >= 2, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    s = F.normalize(student.detach().float(), dim=1)
    t = F.normalize(teacher.detach().float(), dim=1)
    cosine = s @ t.T
    n = cosine.shape[0]
    negatives = ~torch.eye(n, dtype=torch.bool)
    rows = []
    for tau in temperatures:
        logits = (cosine / float(tau)).requires_grad_(True)
        # The student-to-teacher half alone: its gradient on row i is softmax(row i) - onehot(i).
        half = F.cross_entropy(logits, torch.arange(n))
        (grad,) = torch.autograd.grad(half, logits)
        neg = (grad * n).masked_fill(~negatives, 0.0)  # * n undoes the mean over anchors
        probs = F.softmax(logits.detach(), dim=1)
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum(dim=1)
        with torch.no_grad():
            full = float(ContrastiveLoss(temperature=float(tau))(s, t))
            check = float(symmetric_info_nce(logits.detach()))
        if abs(full - check) > 1e-4 * max(1.0, abs(full)):
            raise AssertionError(f"ContrastiveLoss ({full}) and symmetric_info_nce ({check}) disagree")
        rows.append(
            {
                "temperature": float(tau),
                "entropy": float(entropy.mean()),
                "p_positive": float(probs.diagonal().mean()),
                "hardest_share": float((neg.amax(dim=1) / neg.sum(dim=1).clamp_min(1e-30)).mean()),
                "loss": full,
            }
        )
    return rows
