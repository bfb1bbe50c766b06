"""Camera + LiDAR fusion as pictures: the six images, one ray's depth, and the three BEV maps.

A BEVFusion-style detector (:class:`~bevdistill.models.fusion.BEVFusionDetector`) makes two BEV
maps and fuses them: ``view_transform`` lifts the images to a camera BEV map (through a depth
distribution per image-feature pixel, the softmax submodule ``view_transform.depth``),
``pts_middle_encoder`` scatters the LiDAR pillars to a LiDAR BEV map, and ``fusion_layer``
concatenates the two and convolves them into the fused map that ``pts_backbone`` reads. Those
are the hook points :data:`FUSION_HOOK_POINTS`; :func:`capture_fusion` records them with any
step-1 wrapper class (the learner's or the reference), and the plots here draw them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from bevdistill.capture import BEVFusionDistillationWrapper
from bevdistill.data.camera import CAMERA_NAMES, project
from bevdistill.viz._deps import pyplot
from bevdistill.viz.bev import _predictions, draw_boxes, to_numpy
from bevdistill.viz.features import channel_summary, feature_map, plot_bev_map

# The depth softmax, the camera BEV map, the LiDAR BEV map and the fused map.
FUSION_HOOK_POINTS: tuple[str, ...] = (
    "view_transform.depth", "view_transform", "pts_middle_encoder", "fusion_layer")
# nuScenes' usual layout of the six images: the front three above, the back three below.
CAMERA_LAYOUT: tuple[tuple[str, ...], ...] = (
    ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"),
    ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"),
)


# --- capture -------------------------------------------------------------------------------


def wrapper_at(wrapper_cls: type, hook_points: Sequence[str]):
    """``wrapper_cls`` hooked at ``hook_points`` instead of its default three layers.

    The reference wrapper takes them as ``hook_points=``; a step-1 class (the notebook's
    template) reads its class attribute ``HOOK_POINTS``, so a subclass overrides it.
    """
    points = tuple(hook_points)
    if isinstance(wrapper_cls, type) and issubclass(wrapper_cls, BEVFusionDistillationWrapper):
        return functools.partial(wrapper_cls, hook_points=points)
    if not isinstance(wrapper_cls, type):
        raise TypeError(f"wrapper_cls must be a wrapper class, got {type(wrapper_cls).__name__}")
    return type(f"{wrapper_cls.__name__}AtFusion", (wrapper_cls,), {"HOOK_POINTS": points})


def capture_fusion(wrapper_cls: type, model: torch.nn.Module, batch: Mapping[str, Any],
                   hook_points: Sequence[str] = FUSION_HOOK_POINTS) -> tuple[Any, dict]:
    """``(predictions, features)`` of ``model.predict`` on a collated ``batch`` (what
    :func:`~bevdistill.data.bev_collate` returns), recorded by ``wrapper_cls`` as a teacher at
    ``hook_points``; the hooks are removed afterwards."""
    if getattr(model, "with_camera", False) is not True:
        raise ValueError(f"{type(model).__name__} has no camera branch: capture_fusion needs a "
                         "BEVFusionDetector built with img_backbone ... fusion_layer (e.g. the "
                         "student_fusion preset)")
    wrapper = wrapper_at(wrapper_cls, hook_points)(model, is_student=False)
    try:
        preds, features = wrapper(batch["inputs"], batch["data_samples"], mode="predict")
    finally:
        wrapper.close()
    missing = [p for p in hook_points if p not in features]
    if missing:
        raise KeyError(
            f"{wrapper_cls.__name__} captured {sorted(features)}, not {missing}: it hooks a fixed "
            "list of layers. Register the hooks on `self.HOOK_POINTS` in __init__ (as the "
            "template does) so that a subclass can choose other layers")
    return preds, features


# --- the six cameras and one ray -------------------------------------------------------------


def _images_hwc(images: Any) -> np.ndarray:
    """Images ``[N, 3, H, W]`` or ``[N, H, W, 3]`` (0-255 or 0-1) as float ``[N, H, W, 3]`` in
    0-1, for ``imshow``."""
    arr = to_numpy(images, "images")
    if arr.ndim == 5 and arr.shape[0] == 1:  # a batch of one sample: [1, N, 3, H, W]
        arr = arr[0]
    if arr.ndim != 4 or 3 not in (arr.shape[1], arr.shape[3]):
        raise ValueError(f"images must be [N cameras, 3, H, W] or [N, H, W, 3], got shape "
                         f"{arr.shape}")
    if arr.shape[1] == 3 and arr.shape[3] != 3:
        arr = arr.transpose(0, 2, 3, 1)
    arr = arr.astype(np.float64)
    return np.clip(arr / 255.0 if arr.max() > 1.0 else arr, 0.0, 1.0)


def _layout(names: Sequence[str]) -> list[list[int | None]]:
    """Grid of image indices: nuScenes' layout when the names are its six cameras, else rows
    of three in the given order."""
    if sorted(names) == sorted(CAMERA_NAMES):
        return [[list(names).index(n) for n in row] for row in CAMERA_LAYOUT]
    idx: list[int | None] = list(range(len(names)))
    idx += [None] * (-len(idx) % 3)
    return [idx[i:i + 3] for i in range(0, len(idx), 3)]


def plot_cameras(images: Any, names: Sequence[str] = CAMERA_NAMES, *,
                 mark: tuple[int, float, float] | None = None, title: str | None = None,
                 panel_width: float = 3.6):
    """The camera images of one sample, front row above the back row (nuScenes' layout).

    ``images``: ``[N, 3, H, W]`` (what a dataset item's ``inputs['imgs']`` holds, uint8 RGB) or
    ``[N, H, W, 3]``; ``names`` one per image. ``mark`` = (image index, u, v): a cross on that
    pixel (the ray :func:`plot_ray_depth` draws). Returns the figure.
    """
    plt = pyplot()
    arr = _images_hwc(images)
    if len(names) != len(arr):
        raise ValueError(f"{len(arr)} images but {len(names)} names")
    grid = _layout(names)
    h, w = arr.shape[1:3]
    fig, axes = plt.subplots(len(grid), 3, squeeze=False,
                             figsize=(3 * panel_width, len(grid) * panel_width * h / w + 0.5))
    for row_axes, row in zip(axes, grid, strict=True):
        for ax, i in zip(row_axes, row, strict=True):
            ax.axis("off")
            if i is None:
                continue
            ax.imshow(arr[i], extent=(0, w, h, 0), interpolation="nearest")
            ax.set_title(names[i], fontsize=8)
            if mark is not None and mark[0] == i:
                ax.plot([mark[1]], [mark[2]], marker="+", color="red", ms=14, mew=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def pick_ray(boxes: Any, cam2img: Any, lidar2cam: Any, image_hw: Sequence[int],
             camera: int = 0) -> dict[str, Any]:
    """The pixel of ``camera`` that looks at the nearest labelled object: ``{'pixel': (u, v),
    'depth': metres along the optical axis or None, 'box': its index or None}``.

    ``boxes`` ``[M, 7]`` in the LiDAR frame; ``cam2img`` ``[N, 3, 3]`` and ``lidar2cam``
    ``[N, 4, 4]`` of one sample. With no box centre inside the image, the image centre (no depth).
    """
    k, ext = to_numpy(cam2img, "cam2img"), to_numpy(lidar2cam, "lidar2cam")
    if k.ndim != 3 or k.shape[1:] != (3, 3) or ext.shape != (len(k), 4, 4):
        raise ValueError(f"cam2img must be [N, 3, 3] and lidar2cam [N, 4, 4] (one sample), got "
                         f"{k.shape} and {ext.shape}")
    if not 0 <= camera < len(k):
        raise IndexError(f"camera {camera} out of range for {len(k)} cameras")
    h, w = (int(v) for v in image_hw)
    b = to_numpy(boxes, "boxes").reshape(-1, 7)
    uv, depth = project(b[:, :3], k[camera], ext[camera])
    inside = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    if not inside.any():
        return {"pixel": (w / 2, h / 2), "depth": None, "box": None}
    i = int(np.flatnonzero(inside)[np.argmin(depth[inside])])
    return {"pixel": (float(uv[i, 0]), float(uv[i, 1])), "depth": float(depth[i]), "box": i}


def ray_depth(depth: Any, pixel: Sequence[float], feature_stride: int,
              camera: int = 0) -> np.ndarray:
    """The depth distribution ``[D]`` of the feature cell that holds image pixel ``pixel`` =
    (u, v) of image ``camera``: from ``depth`` ``[N images, D, h, w]``, the output of
    ``view_transform.depth`` (each image-feature cell covers ``feature_stride`` pixels)."""
    d = to_numpy(depth, "depth")
    if d.ndim != 4:
        raise ValueError(f"depth must be view_transform.depth's output [N images, D, h, w], got "
                         f"shape {d.shape}")
    if not 0 <= camera < d.shape[0]:
        raise IndexError(f"camera {camera} out of range for {d.shape[0]} images")
    col, row = (int(v // feature_stride) for v in pixel)
    if not (0 <= row < d.shape[2] and 0 <= col < d.shape[3]):
        raise IndexError(f"pixel {tuple(pixel)} is outside the {d.shape[3] * feature_stride} x "
                         f"{d.shape[2] * feature_stride} image (feature stride {feature_stride})")
    return d[camera, :, row, col].astype(np.float64)


def plot_ray_depth(depth_probs: Any, depth_values: Any, pixel: Sequence[float], *,
                   true_depth: float | None = None, camera: str = "CAM_FRONT", ax=None):
    """One ray's depth distribution: probability per depth bin (metres along the optical axis),
    its expected depth, and the depth of the labelled object's centre (``true_depth``, what
    :func:`pick_ray` gives) when known. Returns the axes."""
    p = to_numpy(depth_probs, "depth_probs").astype(np.float64)
    z = to_numpy(depth_values, "depth_values").astype(np.float64)
    if p.ndim != 1 or z.shape != p.shape:
        raise ValueError(f"depth_probs and depth_values must both be [D] (one ray, one value per "
                         f"bin), got {p.shape} and {z.shape}; pick a ray with ray_depth()")
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 2.8))
    ax.bar(z, p, width=float(np.diff(z).min()) if len(z) > 1 else 1.0, color="#0072B2",
           alpha=0.8, label="P(depth bin)")
    expected = float((p * z).sum() / max(p.sum(), 1e-12))
    ax.axvline(expected, color="black", lw=1, label=f"expected depth {expected:.1f} m")
    if true_depth is not None:
        ax.axvline(true_depth, color="#D55E00", ls="--", lw=1.5,
                   label=f"labelled object's centre {true_depth:.1f} m")
    ax.set_xlabel("depth along the optical axis (m)")
    ax.set_ylabel("probability")
    ax.set_title(f"{camera}, pixel (u={pixel[0]:.0f}, v={pixel[1]:.0f}): view_transform.depth",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return ax


# --- the three BEV maps ----------------------------------------------------------------------


def plot_fusion_maps(camera_bev: Any, lidar_bev: Any, fused_bev: Any,
                     extent: Sequence[float], boxes: Any = None, labels: Any = None, *,
                     predictions: Mapping[str, Any] | None = None, score_threshold: float = 0.3,
                     sample: int = 0, panel_size: float = 3.6, title: str | None = None):
    """The camera BEV map (``view_transform``), the LiDAR BEV map (``pts_middle_encoder``) and
    the fused map (``fusion_layer``) side by side, each the mean over its channels, with the
    labelled boxes (white) on all three and ``predictions`` (dashed) on the fused one.

    Maps are ``[B, C, H, W]`` on one grid (the fuser concatenates them cell by cell). Returns
    the figure.
    """
    plt = pyplot()
    named = {"camera BEV (view_transform)": camera_bev, "LiDAR BEV (pts_middle_encoder)":
             lidar_bev, "fused (fusion_layer)": fused_bev}
    maps = {k: feature_map(v, what=k) for k, v in named.items()}
    grids = {k: tuple(m.shape[-2:]) for k, m in maps.items()}
    if len(set(grids.values())) != 1:
        raise ValueError(f"the three maps must share one BEV grid (the fuser concatenates them), "
                         f"got {grids}")
    fig, axes = plt.subplots(1, 3, figsize=(3 * panel_size + 1.5, panel_size))
    for ax, (name, fmap) in zip(axes, maps.items(), strict=True):
        mean, _ = channel_summary(fmap, sample)
        plot_bev_map(ax, mean, extent, boxes=boxes, labels=labels,
                     title=f"{name}\n{fmap.shape[1]} channels, mean")
    pred = _predictions(predictions, score_threshold)
    if pred is not None and len(pred[0]):
        draw_boxes(axes[2], pred[0], pred[1], kind="pred", colour="#56B4E9")
        axes[2].set_xlim(extent[0], extent[1])
        axes[2].set_ylim(extent[2], extent[3])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
