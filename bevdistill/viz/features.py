"""Hooked BEV features as pictures: channel grids, mean/max over channels, attention maps.

Feature maps are ``[B, C, H, W]`` with rows along y and columns along x (see
:mod:`bevdistill.viz.bev`), drawn with ``origin='lower'`` over the model's point-cloud range,
so ground-truth boxes can be drawn on top and land on their objects.

Running a model to get the maps is :mod:`bevdistill.viz.feature_cache`'s job; this module only
turns maps into numbers and pictures.

The attention maps are exactly what :class:`~bevdistill.AttentionTransferLoss` compares:
``mean_c F^2`` per cell, both maps area-pooled to the smaller grid, each L2-normalised over the
cells. The difference panel is ``student - teacher`` of those unit maps, and its squared sum is
the loss of that sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bevdistill.bev_grid import resize_bev
from bevdistill.losses.attention import attention_map
from bevdistill.viz._deps import pyplot
from bevdistill.viz.bev import draw_boxes, to_numpy


def feature_map(value: Any, index: int = -1, what: str = "feature") -> torch.Tensor:
    """The ``[B, C, H, W]`` map inside a captured output, detached.

    A tuple/list (``pts_backbone`` returns one map per scale, ``pts_neck`` a list of one) gives
    its element ``index`` (default: the last, coarsest backbone scale).
    """
    if isinstance(value, (tuple, list)):
        if not value:
            raise ValueError(f"{what} is an empty {type(value).__name__}")
        value = value[index]
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be a tensor or a tuple/list of tensors, got {type(value).__name__}")
    if value.dim() != 4:
        raise ValueError(
            f"{what} has shape {tuple(value.shape)}; pictures need a BEV map [B, C, H, W] "
            "(hook a layer after the scatter to BEV, e.g. pts_middle_encoder or later)"
        )
    return value.detach().float().cpu()


def sample_of(fmap: torch.Tensor, sample: int) -> torch.Tensor:
    """One sample of a batch of maps, with an error naming the batch size when out of range."""
    if not -fmap.shape[0] <= sample < fmap.shape[0]:
        raise IndexError(f"sample {sample} out of range for a batch of {fmap.shape[0]}")
    return fmap[sample]


def channel_summary(value: Any, sample: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max over channels of one sample's map: two ``[H, W]`` arrays.

    The mean shows where the layer is active overall; the max shows cells where any single
    channel fires strongly (a detector channel for one object type, say).
    """
    x = sample_of(feature_map(value), sample)
    return x.mean(dim=0).numpy(), x.amax(dim=0).numpy()


def active_channels(value: Any, k: int = 16, sample: int = 0) -> list[int]:
    """The ``k`` channels with the largest mean absolute activation, most active first.

    Many channels of a ReLU network are silent on a given scene; a grid of the first 16 would
    show mostly blank squares.
    """
    x = sample_of(feature_map(value), sample)
    score = x.abs().flatten(1).mean(dim=1)
    return torch.argsort(score, descending=True)[: min(k, len(score))].tolist()


def _cell_weights(mask: Any, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """A foreground mask as :class:`~bevdistill.AttentionTransferLoss` applies it: ``[B, H, W]``,
    ``[B, 1, H, W]`` or class probabilities ``[B, K, H, W]`` (max over classes), any grid,
    area-pooled to ``size``."""
    m = mask.detach().float().cpu() if isinstance(mask, torch.Tensor) else torch.as_tensor(mask).float()
    if m.dim() == 3:
        m = m.unsqueeze(1)
    if m.dim() != 4 or m.shape[0] != batch:
        raise ValueError(f"mask must be [B, H, W] or [B, K, H, W] with B = {batch}, got {tuple(m.shape)}")
    return resize_bev(m.amax(dim=1, keepdim=True), size)


def attention_maps(
    student: Any, teacher: Any, sample: int | None = 0, p: float = 2, mask: Any = None
) -> dict[str, np.ndarray | float | tuple[int, int]]:
    """Teacher and student attention on their common grid, their difference, and the loss.

    Returns ``teacher``, ``student``, ``difference`` (student - teacher) as ``[H, W]`` arrays
    (``[B, H, W]`` when ``sample`` is None), ``loss`` (sum of squared differences: the
    :class:`~bevdistill.AttentionTransferLoss` value of that sample, or of the batch mean) and
    ``grid`` (H, W). ``mask`` (a foreground mask or class probabilities, any grid) weights the
    cells before the normalisation, as ``AttentionTransferLoss(...)(s, t, mask=mask)`` does.
    """
    s, t = feature_map(student, what="student feature"), feature_map(teacher, what="teacher feature")
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"batch sizes differ: student {s.shape[0]}, teacher {t.shape[0]}")
    raw = []
    for fmap in (s, t):
        flat = attention_map(fmap, p=p, normalization="none")  # [B, H*W], not yet normalised
        raw.append(flat.reshape(fmap.shape[0], 1, *fmap.shape[2:]))
    size = (min(raw[0].shape[2], raw[1].shape[2]), min(raw[0].shape[3], raw[1].shape[3]))
    raw = [resize_bev(r, size) for r in raw]
    if mask is not None:
        weights = _cell_weights(mask, s.shape[0], size)
        raw = [r * weights for r in raw]
    a_s, a_t = (F.normalize(r.flatten(1), p=2, dim=1) for r in raw)
    diff = a_s - a_t
    per_sample = diff.pow(2).sum(dim=1)
    shape = (-1, *size)
    out = {"student": a_s.reshape(shape), "teacher": a_t.reshape(shape), "difference": diff.reshape(shape)}
    if sample is None:
        result = {k: v.numpy() for k, v in out.items()}
        result["loss"] = float(per_sample.mean())
    else:
        result = {k: sample_of(v, sample).numpy() for k, v in out.items()}
        result["loss"] = float(sample_of(per_sample, sample))
    result["grid"] = size
    return result


def cell_of(x: float, y: float, extent: Sequence[float], shape: Sequence[int]) -> tuple[int, int]:
    """``(row, col)`` of the cell holding world point ``(x, y)`` on an ``[H, W]`` map over ``extent``."""
    x0, x1, y0, y1 = (float(v) for v in extent)
    h, w = int(shape[0]), int(shape[1])
    if not (x0 <= x < x1 and y0 <= y < y1):
        raise ValueError(f"point ({x:.1f}, {y:.1f}) lies outside the map's extent {tuple(extent)}")
    return int((y - y0) / (y1 - y0) * h), int((x - x0) / (x1 - x0) * w)


def similarity_map(value: Any, cell: Sequence[int], sample: int = 0, centre: bool = True) -> np.ndarray:
    """Cosine similarity ``[H, W]`` of every cell's feature vector to the vector at ``cell``.

    What a per-cell contrastive loss works with: cells the network represents alike score near
    1. On a trained detector, cells on other objects of the query's class light up.
    ``centre`` subtracts the map's mean vector first: after a ReLU every vector has a large
    shared positive part, which would make all cells look alike.
    """
    x = sample_of(feature_map(value), sample)
    if centre:
        x = x - x.flatten(1).mean(dim=1)[:, None, None]
    row, col = int(cell[0]), int(cell[1])
    if not (0 <= row < x.shape[1] and 0 <= col < x.shape[2]):
        raise IndexError(f"cell {(row, col)} outside the {x.shape[1]}x{x.shape[2]} grid")
    unit = F.normalize(x, dim=0, eps=1e-12)
    return torch.einsum("chw,c->hw", unit, unit[:, row, col]).numpy()


# --- drawing -----------------------------------------------------------------------------------


def plot_bev_map(
    ax,
    values: Any,
    extent: Sequence[float] | None = None,
    *,
    title: str | None = None,
    cmap: str = "magma",
    symmetric: bool = False,
    boxes: Any = None,
    labels: Any = None,
    colorbar: bool = True,
    points: Any = None,
    point_colour: str = "#56B4E9",
    max_points: int = 8000,
):
    """Draw an ``[H, W]`` BEV map (row 0 at the bottom) over ``extent`` = (x0, x1, y0, y1).

    ``symmetric``: a diverging colour scale centred on 0 (for differences). ``boxes``: draw
    ground-truth footprints on top. ``points`` (``[N, >=2]``, x and y in metres): overlay the
    LiDAR points as small dots (thinned to ``max_points`` with a fixed seed), so bright and
    dark cells can be told apart from where the sensor saw something. Returns the image artist.
    """
    arr = to_numpy(values, "map").astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"a BEV map must be [H, W], got shape {arr.shape}")
    kwargs: dict[str, Any] = {"cmap": cmap}
    if symmetric:
        bound = float(np.abs(arr).max()) or 1.0
        kwargs.update(cmap="RdBu_r" if cmap == "magma" else cmap, vmin=-bound, vmax=bound)
    image = ax.imshow(arr, origin="lower", extent=extent, interpolation="nearest", **kwargs)
    if points is not None and extent is not None:
        _overlay_points(ax, points, extent, point_colour, max_points)
    # White outlines on the dark colour scales, black ones on the white centre of a difference.
    _draw_footprints(ax, boxes, labels, extent, 0.7, "black" if symmetric else "white")
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    return image


def _draw_footprints(ax, boxes: Any, labels: Any, extent: Sequence[float] | None,
                     linewidth: float, colour: str) -> None:
    """Ground-truth footprints over a map; the limits are reset so boxes cannot widen the view."""
    if boxes is None or extent is None or not len(to_numpy(boxes)):
        return
    draw_boxes(ax, boxes, labels, linewidth=linewidth, colour=colour)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])


def _overlay_points(ax, points: Any, extent: Sequence[float], colour: str, max_points: int) -> None:
    pts = to_numpy(points, "points")
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise ValueError(f"points must be [N, >=2] (x, y, ...), got shape {pts.shape}")
    x0, x1, y0, y1 = (float(v) for v in extent)
    pts = pts[(pts[:, 0] >= x0) & (pts[:, 0] < x1) & (pts[:, 1] >= y0) & (pts[:, 1] < y1)]
    if len(pts) > max_points:
        pts = pts[np.random.default_rng(0).choice(len(pts), max_points, replace=False)]
    ax.scatter(pts[:, 0], pts[:, 1], s=0.15, c=colour, alpha=0.6, linewidths=0, rasterized=True)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def plot_channel_grid(
    value: Any,
    *,
    sample: int = 0,
    channels: Sequence[int] | None = None,
    ncols: int = 8,
    extent: Sequence[float] | None = None,
    title: str | None = None,
    panel_size: float = 1.6,
    boxes: Any = None,
    labels: Any = None,
    colorbar: bool = False,
):
    """Single channels of one layer, one small panel each (default: the 16 most active).

    Each panel has its own colour scale, so weak and strong channels are both readable;
    ``colorbar=True`` shows every panel's scale beside it (off by default: the figure then has
    exactly one axes per panel, as before). ``boxes`` (with ``extent``): ground-truth
    footprints on every panel. Returns the figure.
    """
    plt = pyplot()
    x = sample_of(feature_map(value), sample)
    chosen = list(channels) if channels is not None else active_channels(value, 16, sample)
    bad = [c for c in chosen if not 0 <= c < x.shape[0]]
    if bad:
        raise IndexError(f"channels {bad} out of range: the layer has {x.shape[0]} channels")
    nrows = max(1, -(-len(chosen) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, c in zip(axes.flat, chosen, strict=False):  # extra panels stay blank
        image = ax.imshow(x[c].numpy(), origin="lower", extent=extent, cmap="viridis",
                          interpolation="nearest")
        _draw_footprints(ax, boxes, labels, extent, 0.5, "white")
        if colorbar:
            bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
            bar.ax.tick_params(labelsize=5)
        ax.set_title(f"ch {c}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_layer_summaries(
    features: Mapping[str, Any],
    *,
    sample: int = 0,
    extent: Sequence[float] | None = None,
    boxes: Any = None,
    labels: Any = None,
    select: Mapping[str, int] | None = None,
    panel_size: float = 3.2,
    points: Any = None,
):
    """One row per hooked layer: mean and max over channels, with shape and channel count.

    ``select[layer]`` picks the element of a tuple/list output (default: the last).
    ``points``: overlay the scene's LiDAR points (x, y) on every panel. Returns the figure.
    """
    plt = pyplot()
    if not features:
        raise ValueError("features is empty: pass the dict a recorder or wrapper captured")
    select = dict(select or {})
    fig, axes = plt.subplots(len(features), 2, figsize=(2 * panel_size + 1, panel_size * len(features)),
                             squeeze=False)
    for row, (name, value) in zip(axes, features.items(), strict=True):
        fmap = feature_map(value, select.get(name, -1), what=name)
        mean, peak = channel_summary(fmap, sample)
        shape = "x".join(str(s) for s in fmap.shape[1:])
        for ax, arr, what in zip(row, (mean, peak), ("mean", "max"), strict=True):
            plot_bev_map(ax, arr, extent, boxes=boxes, labels=labels, points=points,
                         title=f"{name} [{shape}]\n{what} over channels")
    fig.tight_layout()
    return fig


def plot_attention_comparison(
    student: Any,
    teacher: Any,
    *,
    sample: int = 0,
    extent: Sequence[float] | None = None,
    boxes: Any = None,
    labels: Any = None,
    layer: str = "",
    panel_size: float = 3.4,
    axes=None,
):
    """Teacher | student | student - teacher attention maps of one layer, side by side.

    The difference panel's title gives the attention-transfer loss of this sample.
    Returns the figure.
    """
    plt = pyplot()
    maps = attention_maps(student, teacher, sample)
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(3 * panel_size + 1.5, panel_size))
    else:
        fig = axes[0].figure
    grid = "x".join(str(s) for s in maps["grid"])
    prefix = f"{layer}\n" if layer else ""
    vmax = float(max(maps["teacher"].max(), maps["student"].max()))
    for ax, key in zip(axes[:2], ("teacher", "student"), strict=True):
        image = plot_bev_map(ax, maps[key], extent, boxes=boxes, labels=labels, colorbar=False,
                             title=f"{prefix}{key} attention ({grid})")
        image.set_clim(0.0, vmax)
    fig.colorbar(image, ax=list(axes[:2]), fraction=0.046, pad=0.02)
    plot_bev_map(axes[2], maps["difference"], extent, symmetric=True, boxes=boxes, labels=labels,
                 title=f"{prefix}student - teacher (loss {maps['loss']:.3f})")
    return fig


def plot_similarity(
    ax,
    value: Any,
    xy: Sequence[float],
    extent: Sequence[float],
    *,
    sample: int = 0,
    boxes: Any = None,
    labels: Any = None,
    title: str | None = None,
):
    """:func:`similarity_map` (centred) to the cell at world point ``xy``, marked with a cross.

    The colour scale spans the map's own range, so the most similar cells stand out.
    """
    fmap = feature_map(value)
    cell = cell_of(xy[0], xy[1], extent, fmap.shape[2:])
    image = plot_bev_map(ax, similarity_map(fmap, cell, sample), extent, boxes=boxes, labels=labels,
                         cmap="viridis", title=title)
    ax.plot([xy[0]], [xy[1]], marker="x", color="red", ms=9, mew=2)
    return image
