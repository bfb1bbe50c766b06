"""Box geometry shared by the scene generator, the LiDAR, the reader and the augmentation.

Boxes are ``(x, y, z, l, w, h, yaw)`` with ``(x, y, z)`` the geometric centre, ``l`` along the
heading and ``yaw`` measured from +x towards +y, as in the project's data contract.
"""

from __future__ import annotations

import numpy as np


def _check_points_boxes(points, boxes) -> tuple[np.ndarray, np.ndarray]:
    pts = np.asarray(points)
    bxs = np.asarray(boxes)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(
            f"points must have shape [N, >=3] (x, y, z, ...), got {pts.shape}; "
            "pass the point cloud as an [N, 5] array."
        )
    if bxs.ndim != 2 or bxs.shape[1] != 7:
        raise ValueError(
            f"boxes must have shape [M, 7] (x, y, z, l, w, h, yaw), got {bxs.shape}; "
            "reshape a single box with boxes.reshape(1, 7)."
        )
    return pts[:, :3].astype(np.float64), bxs.astype(np.float64)


def _inside(xyz: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Which of ``xyz`` [K, 3] lie inside one box (boundary included)."""
    c, s = np.cos(box[6]), np.sin(box[6])
    dx = xyz[:, 0] - box[0]
    dy = xyz[:, 1] - box[1]
    u = c * dx + s * dy  # along the heading
    v = -s * dx + c * dy  # to the left of the heading
    return (
        (np.abs(u) <= box[3] / 2)
        & (np.abs(v) <= box[4] / 2)
        & (np.abs(xyz[:, 2] - box[2]) <= box[5] / 2)
    )


def points_in_boxes(points, boxes) -> np.ndarray:
    """``[N, M]`` bool: point n lies inside box m (faces included).

    Simple and fully vectorised; use :func:`count_points_in_boxes` when only counts are needed
    on a full scan, it is much faster.
    """
    xyz, bxs = _check_points_boxes(points, boxes)
    out = np.zeros((xyz.shape[0], bxs.shape[0]), dtype=bool)
    for m, box in enumerate(bxs):
        out[:, m] = _inside(xyz, box)
    return out


def count_points_in_boxes(points, boxes, cell: float = 2.0) -> np.ndarray:
    """``[M]`` int64: how many points lie inside each box (same rule as :func:`points_in_boxes`).

    Points are bucketed once on a ``cell``-metre BEV grid (sorted by cell key), so each box only
    tests the points in the cells under its bounding square instead of the whole scan.
    """
    xyz, bxs = _check_points_boxes(points, boxes)
    counts = np.zeros(bxs.shape[0], dtype=np.int64)
    if xyz.shape[0] == 0 or bxs.shape[0] == 0:
        return counts
    ix = np.floor(xyz[:, 0] / cell).astype(np.int64)
    iy = np.floor(xyz[:, 1] / cell).astype(np.int64)
    x0, y0 = ix.min(), iy.min()
    span = int(iy.max() - y0) + 1
    key = (ix - x0) * span + (iy - y0)
    order = np.argsort(key, kind="stable")
    key = key[order]
    for m, box in enumerate(bxs):
        r = 0.5 * np.hypot(box[3], box[4])
        cx0 = max(int(np.floor((box[0] - r) / cell)) - x0, 0)
        cx1 = int(np.floor((box[0] + r) / cell)) - x0
        cy0 = max(int(np.floor((box[1] - r) / cell)) - y0, 0)
        cy1 = min(int(np.floor((box[1] + r) / cell)) - y0, span - 1)
        if cx1 < cx0 or cy1 < cy0:
            continue
        columns = np.arange(cx0, cx1 + 1) * span
        lo = np.searchsorted(key, columns + cy0, side="left")
        hi = np.searchsorted(key, columns + cy1, side="right")
        idx = np.concatenate([order[a:b] for a, b in zip(lo, hi, strict=True) if b > a] or [order[:0]])
        if idx.size:
            counts[m] = int(_inside(xyz[idx], box).sum())
    return counts


def bev_corners(rects: np.ndarray) -> np.ndarray:
    """Corners ``[K, 4, 2]`` of BEV rectangles ``[K, 5]`` = (x, y, l, w, yaw), counter-clockwise."""
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 5)
    c, s = np.cos(rects[:, 4]), np.sin(rects[:, 4])
    hl, hw = rects[:, 2] / 2, rects[:, 3] / 2
    u = np.array([1.0, -1.0, -1.0, 1.0])[None, :] * hl[:, None]
    v = np.array([1.0, 1.0, -1.0, -1.0])[None, :] * hw[:, None]
    x = rects[:, None, 0] + c[:, None] * u - s[:, None] * v
    y = rects[:, None, 1] + s[:, None] * u + c[:, None] * v
    return np.stack([x, y], axis=-1)


def corners_overlap(ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """``[K]`` bool: does the rectangle with corners ``ca`` [4, 2] overlap each of ``cb`` [K, 4, 2]?

    Separating-axis test: two convex rectangles are disjoint exactly when their projections
    on one of the four edge directions do not overlap.
    """
    cb = cb.reshape(-1, 4, 2)
    k = cb.shape[0]
    axes = np.concatenate(
        [np.broadcast_to(np.stack([ca[1] - ca[0], ca[3] - ca[0]]), (k, 2, 2)),
         np.stack([cb[:, 1] - cb[:, 0], cb[:, 3] - cb[:, 0]], axis=1)],
        axis=1,
    )  # [K, 4 axes, 2]
    pa = np.einsum("kad,cd->kac", axes, ca)  # [K, 4 axes, 4 corners]
    pb = np.einsum("kad,kcd->kac", axes, cb)
    separated = (pa.max(2) < pb.min(2)) | (pb.max(2) < pa.min(2))
    return ~separated.any(1)
