"""CenterPoint's box coding on a BEV grid: Gaussian heatmap targets, focal loss, peak decoding, BEV NMS.

Boxes are ``[M, 7]`` = (x, y, z, l, w, h, yaw) in the LiDAR frame, (x, y, z) the geometric
centre. On a map ``out_size_factor`` (``osf``) times coarser than the pillar grid, an object
is a Gaussian peak of value 1 in its class's heatmap at the cell holding its centre, and
eight regression targets at that cell, in :data:`REG_LAYOUT` order.

Heading is regressed as ``(sin yaw, cos yaw)``. An optional direction classifier (SECOND's and
PointPillars' direction bin) adds two logits per cell: which half-turn, starting at
``dir_offset``, the heading lies in (:func:`direction_bin`). Decoding keeps the regressed
heading's axis and takes its direction from the classifier (:func:`apply_direction`), so a
head unsure of front and back still gets the axis right, and a confident classifier fixes a
flipped regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bevdistill.models.geometry import BEVGrid

# Regression maps of the head, their channels, and the order of the 8 box-code columns.
REG_LAYOUT: tuple[tuple[str, int], ...] = (("reg", 2), ("height", 1), ("dim", 3), ("rot", 2))
CODE_SIZE = sum(c for _, c in REG_LAYOUT)
_MAX_LOG_SIZE = 6.0  # exp(6) ~ 400 m: caps a runaway size prediction before exp overflows


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.1) -> torch.Tensor:
    """CornerNet's radius, as CenterPoint computes it: the largest corner shift of a
    ``height x width`` box (in cells) that still leaves IoU >= ``min_overlap``.

    Three cases (both corners inside, both outside, one of each) each give a quadratic in the
    radius; the smallest root wins. Like CenterPoint (and CenterNet's code), each root is
    ``(b + sqrt(b^2 - 4ac)) / 2`` rather than ``/ (2a)``; we keep that so radii, and hence
    targets, match the models this one imitates.
    """
    h, w, m = height, width, float(min_overlap)
    b1 = h + w
    c1 = w * h * (1 - m) / (1 + m)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - m) * w * h
    r2 = (b2 + torch.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * m
    b3 = -2 * m * (h + w)
    c3 = (m - 1) * w * h
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


@dataclass
class CenterTargets:
    """Targets of one sample: ``heatmap [K, H, W]``; per kept object its flat cell index
    ``inds [M]`` (row * W + col), box code ``codes [M, 8]`` and ``labels [M]``."""

    heatmap: torch.Tensor
    inds: torch.Tensor
    codes: torch.Tensor
    labels: torch.Tensor


def encode_targets(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    grid: BEVGrid,
    out_size_factor: int,
    num_classes: int,
    gaussian_overlap: float = 0.1,
    min_radius: int = 2,
) -> CenterTargets:
    """CenterPoint targets; boxes whose centre lies outside the grid are left out."""
    h, w = grid.feature_shape(out_size_factor)
    cell_x, cell_y = grid.cell_size(out_size_factor)
    x0, y0 = grid.point_cloud_range[:2]
    boxes = boxes.float()
    fx = (boxes[:, 0] - x0) / cell_x
    fy = (boxes[:, 1] - y0) / cell_y
    col, row = fx.floor().long(), fy.floor().long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    boxes, labels, fx, fy, col, row = (t[inside] for t in (boxes, labels, fx, fy, col, row))

    radius = gaussian_radius(boxes[:, 4] / cell_y, boxes[:, 3] / cell_x, gaussian_overlap)
    radius = radius.floor().clamp_min(min_radius)
    sigma = (2 * radius + 1) / 6
    ys = torch.arange(h, device=boxes.device).view(1, h, 1)
    xs = torch.arange(w, device=boxes.device).view(1, 1, w)
    dy = (ys - row.view(-1, 1, 1)).float()
    dx = (xs - col.view(-1, 1, 1)).float()
    r = radius.view(-1, 1, 1)
    blob = torch.exp(-(dx**2 + dy**2) / (2 * sigma.view(-1, 1, 1) ** 2))
    blob = blob * ((dx.abs() <= r) & (dy.abs() <= r))  # CenterNet draws a (2r+1)^2 window
    heatmap = boxes.new_zeros(num_classes, h * w)
    heatmap.scatter_reduce_(0, labels.view(-1, 1).expand(-1, h * w), blob.flatten(1), "amax")
    heatmap = heatmap.view(num_classes, h, w)

    codes = torch.cat(
        [
            torch.stack([fx - col, fy - row], dim=1),
            boxes[:, 2:3],
            boxes[:, 3:6].log(),
            torch.stack([boxes[:, 6].sin(), boxes[:, 6].cos()], dim=1),
        ],
        dim=1,
    )
    return CenterTargets(heatmap, row * w + col, codes, labels)


def gaussian_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, gamma: float = 4.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """CenterNet's penalty-reduced focal loss, summed; returns ``(loss_sum, num_peaks)``.

    Cells where the target is exactly 1 are positives; elsewhere the negative loss is damped
    by ``(1 - target) ** gamma`` near a peak. Log-probabilities come from ``logsigmoid``, so
    confident logits neither overflow nor need clamping.
    """
    logits, target = logits.float(), target.float()
    prob = logits.sigmoid()
    pos = target.eq(1).float()
    pos_loss = F.logsigmoid(logits) * (1 - prob).pow(alpha) * pos
    neg_loss = F.logsigmoid(-logits) * prob.pow(alpha) * (1 - target).pow(gamma) * (1 - pos)
    return -(pos_loss + neg_loss).sum(), pos.sum()


def limit_period(angle: torch.Tensor, offset: float = 0.5, period: float = math.pi) -> torch.Tensor:
    """``angle`` moved by whole periods into ``[-offset * period, (1 - offset) * period)``."""
    return angle - torch.floor(angle / period + offset) * period


def direction_bin(yaw: torch.Tensor, dir_offset: float) -> torch.Tensor:
    """0 or 1: whether ``yaw`` lies in ``[dir_offset, dir_offset + pi)`` (0) or in the other
    half-turn (1), modulo 2 pi; the direction classifier's target."""
    return (limit_period(yaw - dir_offset, 0.0, 2 * math.pi) >= math.pi).long()


def apply_direction(yaw: torch.Tensor, bins: torch.Tensor, dir_offset: float) -> torch.Tensor:
    """The heading on ``yaw``'s axis whose :func:`direction_bin` is ``bins``, in ``[-pi, pi)``."""
    axis = limit_period(yaw - dir_offset, 0.0, math.pi)  # in [0, pi): the axis, bin 0
    return limit_period(axis + dir_offset + math.pi * bins.to(yaw.dtype), 0.5, 2 * math.pi)


def decode_single(
    heatmap_logits: torch.Tensor,
    reg: dict[str, torch.Tensor],
    grid: BEVGrid,
    out_size_factor: int,
    max_num: int = 100,
    score_threshold: float = 0.1,
    peak_kernel: int = 3,
    dir_logits: torch.Tensor | None = None,
    dir_offset: float = math.pi / 4,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``max_num`` local maxima of one sample's heatmaps -> ``(boxes [K, 7], scores, labels)``.

    ``reg`` maps every name of :data:`REG_LAYOUT` to a ``[c, H, W]`` map. A cell is a peak
    when it equals the max of its ``peak_kernel`` neighbourhood (CenterNet's max-pool NMS);
    ``peak_kernel=1`` keeps every cell. ``dir_logits`` ``[2, H, W]`` (a direction classifier's
    output) sets each box's direction on its regressed axis (:func:`apply_direction`).
    """
    heat = heatmap_logits.float().sigmoid()
    num_classes, h, w = heat.shape
    if peak_kernel > 1:
        pooled = F.max_pool2d(heat.unsqueeze(0), peak_kernel, stride=1, padding=peak_kernel // 2)[0]
        heat = heat * (heat == pooled)
    scores, idx = heat.flatten().topk(min(max_num, heat.numel()))
    keep = scores > score_threshold
    scores, idx = scores[keep], idx[keep]
    labels = idx // (h * w)
    cell = idx % (h * w)
    row, col = cell // w, cell % w
    code = torch.cat([reg[name].float().flatten(1)[:, cell] for name, _ in REG_LAYOUT], dim=0).t()
    cell_x, cell_y = grid.cell_size(out_size_factor)
    x0, y0 = grid.point_cloud_range[:2]
    x = (col + code[:, 0]) * cell_x + x0
    y = (row + code[:, 1]) * cell_y + y0
    size = code[:, 3:6].clamp(max=_MAX_LOG_SIZE).exp()
    yaw = torch.atan2(code[:, 6], code[:, 7])
    if dir_logits is not None:
        yaw = apply_direction(yaw, dir_logits.float().flatten(1)[:, cell].argmax(0), dir_offset)
    boxes = torch.cat([torch.stack([x, y, code[:, 2]], dim=1), size, yaw.unsqueeze(1)], dim=1)
    return boxes, scores, labels


def _greedy_keep(suppress: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Greedy NMS on a boolean "i suppresses j" matrix: indices kept, by descending score."""
    order = torch.argsort(scores, descending=True, stable=True)
    sup = suppress[order][:, order].cpu()
    removed = torch.zeros(len(order), dtype=torch.bool)
    kept = []
    for i in range(len(order)):
        if removed[i]:
            continue
        kept.append(i)
        removed |= sup[i]
    return order[torch.tensor(kept, dtype=torch.long, device=order.device)]


def circle_nms(centres: torch.Tensor, scores: torch.Tensor, radius: float) -> torch.Tensor:
    """CenterPoint's rotation-free NMS: drop a box whose BEV centre lies within ``radius`` metres
    of a higher-scoring kept one. Returns kept indices, best first."""
    if centres.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=centres.device)
    dist = torch.cdist(centres[:, :2].float(), centres[:, :2].float())
    return _greedy_keep(dist < radius, scores)


def aabb_bev(boxes: torch.Tensor) -> torch.Tensor:
    """Axis-aligned BEV rectangles ``[N, 4]`` = (x0, y0, x1, y1) enclosing the rotated boxes."""
    c, s = boxes[:, 6].cos().abs(), boxes[:, 6].sin().abs()
    half_x = (boxes[:, 3] * c + boxes[:, 4] * s) / 2
    half_y = (boxes[:, 3] * s + boxes[:, 4] * c) / 2
    return torch.stack([boxes[:, 0] - half_x, boxes[:, 1] - half_y,
                        boxes[:, 0] + half_x, boxes[:, 1] + half_y], dim=1)


def aabb_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``[N, M]`` of (x0, y0, x1, y1) rectangles."""
    lo = torch.maximum(a[:, None, :2], b[None, :, :2])
    hi = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp_min(0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(dim=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp_min(1e-9)


def aabb_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS with the IoU of the boxes' axis-aligned BEV enclosures (no rotated overlap op)."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    rect = aabb_bev(boxes.float())
    return _greedy_keep(aabb_iou(rect, rect) > iou_threshold, scores)
