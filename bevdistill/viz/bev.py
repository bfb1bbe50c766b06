"""A LiDAR scene seen from above: points, ground-truth boxes and detections.

Conventions (the project's data contract): points ``[N, >=3]`` (x, y, z, ...) and boxes
``[M, 7]`` = (x, y, z, l, w, h, yaw) in the LiDAR frame, x forward, y left. Plots put x to the
right and y up, the same orientation as a BEV feature map drawn with ``origin='lower'`` (row 0
at y0, column 0 at x0), so a box drawn on a feature map lands on its object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from bevdistill.data.classes import CLASS_NAMES
from bevdistill.data.geometry import bev_corners
from bevdistill.viz._deps import pyplot

# One colour per class, distinguishable for colour-blind readers (Okabe-Ito palette).
CLASS_COLOURS: dict[str, str] = {"car": "#0072B2", "pedestrian": "#D55E00", "cyclist": "#009E73"}
OTHER_COLOUR = "#7f7f7f"
MAX_POINTS = 40_000  # more points than this are thinned for drawing (deterministically)


def to_numpy(x: Any, what: str = "array") -> np.ndarray:
    """A tensor (any device, with or without grad) or array-like as a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if x is None:
        raise TypeError(f"{what} is None; pass a tensor or an array")
    return np.asarray(x)


def bev_extent(point_cloud_range: Sequence[float]) -> tuple[float, float, float, float]:
    """``(x0, x1, y0, y1)`` of a range ``(x0, y0, z0, x1, y1, z1)``, as ``imshow(extent=...)`` wants."""
    pcr = [float(v) for v in point_cloud_range]
    if len(pcr) != 6:
        raise ValueError(f"point_cloud_range must be (x0, y0, z0, x1, y1, z1), got {pcr}")
    return pcr[0], pcr[3], pcr[1], pcr[4]


def box_footprints(boxes: Any) -> np.ndarray:
    """Corners ``[M, 4, 2]`` of boxes ``[M, 7]``, counter-clockwise; corners 0 and 3 are the front."""
    b = to_numpy(boxes, "boxes").astype(np.float64)
    if b.size == 0:
        return np.zeros((0, 4, 2))
    if b.ndim != 2 or b.shape[1] < 7:
        raise ValueError(f"boxes must be [M, 7] = (x, y, z, l, w, h, yaw), got shape {b.shape}")
    return bev_corners(b[:, [0, 1, 3, 4, 6]])


def class_colour(label: int) -> str:
    if 0 <= int(label) < len(CLASS_NAMES):
        return CLASS_COLOURS[CLASS_NAMES[int(label)]]
    return OTHER_COLOUR


def draw_boxes(
    ax,
    boxes: Any,
    labels: Any = None,
    *,
    scores: Any = None,
    kind: str = "gt",
    linewidth: float = 1.2,
    annotate: bool = False,
    colour: str | None = None,
) -> list:
    """Draw box footprints on ``ax``, coloured by class, with a line showing the heading.

    ``kind='gt'``: solid outlines; ``'pred'``: dashed outlines, with the score written next to
    each box when ``annotate``. ``colour`` overrides the class colours (e.g. white on a dark
    feature map). Returns the drawn artists.
    """
    if kind not in ("gt", "pred"):
        raise ValueError(f"kind must be 'gt' or 'pred', got {kind!r}")
    corners = box_footprints(boxes)
    labels_np = np.zeros(len(corners), np.int64) if labels is None else to_numpy(labels).reshape(-1)
    if len(labels_np) != len(corners):
        raise ValueError(f"{len(corners)} boxes but {len(labels_np)} labels")
    scores_np = None if scores is None else to_numpy(scores).reshape(-1)
    style = "-" if kind == "gt" else "--"
    artists = []
    for i, (c, label) in enumerate(zip(corners, labels_np, strict=True)):
        edge = colour or class_colour(label)
        ring = np.vstack([c, c[:1]])
        artists += ax.plot(ring[:, 0], ring[:, 1], style, color=edge, lw=linewidth)
        front = c[[0, 3]].mean(axis=0)  # corners 0 and 3 are the front ones (u = +l/2)
        centre = c.mean(axis=0)
        artists += ax.plot([centre[0], front[0]], [centre[1], front[1]], style, color=edge, lw=linewidth)
        if annotate and scores_np is not None:
            artists.append(ax.text(c[:, 0].max(), c[:, 1].max(), f"{scores_np[i]:.2f}",
                                   color=edge, fontsize=6))
    return artists


def plot_points(
    ax,
    points: Any,
    *,
    colour_by: str = "z",
    max_points: int = MAX_POINTS,
    size: float = 0.8,
    cmap: str = "Greys",
    point_cloud_range: Sequence[float] | None = None,
):
    """Scatter a point cloud from above, coloured by height (``'z'``) or ``'intensity'``.

    Clouds larger than ``max_points`` are thinned with a fixed seed, so a figure is the same on
    every run. Returns the scatter artist.
    """
    pts = to_numpy(points, "points")
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must be [N, >=3] (x, y, z, ...), got shape {pts.shape}")
    column = {"z": 2, "intensity": 3}.get(colour_by)
    if column is None or column >= pts.shape[1]:
        raise ValueError(f"colour_by must be 'z' or 'intensity' (points have {pts.shape[1]} columns)")
    if point_cloud_range is not None:
        x0, x1, y0, y1 = bev_extent(point_cloud_range)
        inside = (pts[:, 0] >= x0) & (pts[:, 0] < x1) & (pts[:, 1] >= y0) & (pts[:, 1] < y1)
        pts = pts[inside]
    if len(pts) > max_points:
        pts = pts[np.random.default_rng(0).choice(len(pts), max_points, replace=False)]
    values = pts[:, column]
    lo, hi = np.percentile(values, [1, 99]) if len(values) else (0.0, 1.0)
    # Start the grey scale below the lowest points: ground stays visible as light grey, tall
    # objects come out dark, on a white page.
    return ax.scatter(pts[:, 0], pts[:, 1], c=values, s=size, cmap=cmap, vmin=lo - 0.6 * (hi - lo), vmax=hi,
                      linewidths=0, rasterized=True)


def _legend(ax, with_predictions: bool) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=CLASS_COLOURS[n], lw=2, label=n) for n in CLASS_NAMES]
    handles.append(Line2D([], [], color="black", lw=1, label="ground truth"))
    if with_predictions:
        handles.append(Line2D([], [], color="black", lw=1, ls="--", label="detection"))
    ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.85)


def _predictions(pred: Mapping[str, Any] | None, score_threshold: float):
    if pred is None:
        return None
    missing = [k for k in ("boxes", "scores", "labels") if k not in pred]
    if missing:
        raise KeyError(f"a prediction dict needs 'boxes', 'scores' and 'labels'; missing {missing}")
    keep = to_numpy(pred["scores"]).reshape(-1) >= score_threshold
    return (to_numpy(pred["boxes"])[keep], to_numpy(pred["labels"]).reshape(-1)[keep],
            to_numpy(pred["scores"]).reshape(-1)[keep])


def plot_bev(
    points: Any,
    boxes: Any = None,
    labels: Any = None,
    *,
    predictions: Mapping[str, Any] | None = None,
    score_threshold: float = 0.3,
    point_cloud_range: Sequence[float] | None = None,
    ax=None,
    title: str | None = None,
    legend: bool = True,
    colour_by: str = "z",
    annotate: bool = False,
):
    """Points from above with ground-truth boxes (solid) and optional detections (dashed).

    ``predictions``: a model's ``predict()`` output for this sample (``boxes``, ``scores``,
    ``labels``); detections below ``score_threshold`` are not drawn. Returns the axes.
    """
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    plot_points(ax, points, colour_by=colour_by, point_cloud_range=point_cloud_range)
    if boxes is not None and len(to_numpy(boxes)):
        draw_boxes(ax, boxes, labels, kind="gt")
    pred = _predictions(predictions, score_threshold)
    if pred is not None and len(pred[0]):
        draw_boxes(ax, pred[0], pred[1], scores=pred[2], kind="pred", annotate=annotate)
    if point_cloud_range is not None:
        x0, x1, y0, y1 = bev_extent(point_cloud_range)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, forward)")
    ax.set_ylabel("y (m, left)")
    ax.plot([0], [0], marker=">", color="black", ms=7, linestyle="none")  # the ego car, facing +x
    if title:
        ax.set_title(title, fontsize=10)
    if legend:
        _legend(ax, with_predictions=predictions is not None)
    return ax


def plot_sample(item: Mapping[str, Any], **kwargs: Any):
    """:func:`plot_bev` of a dataset item ``{'inputs': {'points'}, 'data_samples': {...}}``."""
    try:
        points = item["inputs"]["points"]
        sample = item["data_samples"]
    except (KeyError, TypeError) as exc:
        raise KeyError(
            "plot_sample takes one dataset item: {'inputs': {'points': Tensor[N, 5]}, "
            "'data_samples': {'gt_boxes': ..., 'gt_labels': ...}}"
        ) from exc
    return plot_bev(points, sample["gt_boxes"], sample["gt_labels"], **kwargs)


def found_mask(pred: Mapping[str, Any], gt_boxes: Any, gt_labels: Any,
               score_threshold: float = 0.3, max_distance: float = 2.0) -> np.ndarray:
    """Which ground-truth objects were found: matched one to one, greedily by score, by a
    detection of the same class with a score >= ``score_threshold`` whose BEV centre lies
    within ``max_distance`` metres (the metric's 2 m threshold)."""
    boxes, labels, scores = _predictions(pred, score_threshold)
    gt, gt_lab = to_numpy(gt_boxes).reshape(-1, 7), to_numpy(gt_labels).reshape(-1)
    taken = np.zeros(len(gt), dtype=bool)
    for k in np.argsort(-scores):
        d = np.hypot(*(gt[:, :2] - boxes[k, :2]).T)
        d[(gt_lab != labels[k]) | taken] = np.inf
        if len(d) and d.min() <= max_distance:
            taken[d.argmin()] = True
    return taken


def count_found(pred: Mapping[str, Any], gt_boxes: Any, gt_labels: Any,
                score_threshold: float = 0.3, max_distance: float = 2.0) -> int:
    """How many ground-truth objects :func:`found_mask` finds."""
    return int(found_mask(pred, gt_boxes, gt_labels, score_threshold, max_distance).sum())


def plot_detections(
    points: Any,
    gt_boxes: Any,
    gt_labels: Any,
    predictions: Mapping[str, Mapping[str, Any]],
    *,
    score_threshold: float = 0.3,
    point_cloud_range: Sequence[float] | None = None,
    panel_size: float = 4.5,
):
    """One panel per model: the same scene, ground truth (solid) and that model's detections
    (dashed), titled with how many objects it found. ``predictions`` maps a panel title to a
    ``predict()`` result; ``points`` is one cloud, or a dict with one cloud per panel title
    (models that read different sensors). Returns the figure."""
    plt = pyplot()
    if not predictions:
        raise ValueError("predictions is empty: pass {'model name': model.predict(...)[i], ...}")
    if isinstance(points, Mapping) and set(points) != set(predictions):
        raise KeyError(f"points per panel must name the same panels as predictions: "
                       f"{sorted(points)} vs {sorted(predictions)}")
    n, total = len(predictions), len(to_numpy(gt_labels).reshape(-1))
    fig, axes = plt.subplots(1, n, figsize=(panel_size * n, panel_size), squeeze=False)
    for ax, (name, pred) in zip(axes[0], predictions.items(), strict=True):
        cloud = points[name] if isinstance(points, Mapping) else points
        found = count_found(pred, gt_boxes, gt_labels, score_threshold)
        plot_bev(cloud, gt_boxes, gt_labels, predictions=pred, score_threshold=score_threshold,
                 point_cloud_range=point_cloud_range, ax=ax, legend=ax is axes[0][-1],
                 title=f"{name}: found {found} of {total} (score ≥ {score_threshold:g})")
    fig.tight_layout()
    return fig
