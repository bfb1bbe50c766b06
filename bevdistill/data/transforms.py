"""Global augmentation of a LiDAR sample: flips, rotation about z and scaling.

Each transform moves points and boxes together, so every point stays in the box it was in
(tests check that the per-box point counts do not change). Yaw follows the geometry:
mirroring y (flip about the x axis) maps yaw to -yaw, mirroring x (flip about the y axis) maps
it to pi - yaw, a rotation by a adds a. Only x, y, z of the points move; intensity and ring
are properties of the return and stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


def wrap_angle(yaw: np.ndarray) -> np.ndarray:
    """Angles to [-pi, pi)."""
    return (np.asarray(yaw) + np.pi) % (2 * np.pi) - np.pi


def flip(points: np.ndarray, boxes: np.ndarray, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Mirror the scene: ``axis='x'`` flips about the x axis (y -> -y), ``'y'`` about y (x -> -x)."""
    points, boxes = np.array(points, copy=True), np.array(boxes, copy=True)
    if axis == "x":
        points[:, 1] *= -1
        boxes[:, 1] *= -1
        boxes[:, 6] = wrap_angle(-boxes[:, 6])
    elif axis == "y":
        points[:, 0] *= -1
        boxes[:, 0] *= -1
        boxes[:, 6] = wrap_angle(np.pi - boxes[:, 6])
    else:
        raise ValueError(f"flip axis must be 'x' (y -> -y) or 'y' (x -> -x), got {axis!r}")
    return points, boxes


def rotate_z(points: np.ndarray, boxes: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the scene by ``angle`` radians about the z axis (counter-clockwise seen from above)."""
    points, boxes = np.array(points, copy=True), np.array(boxes, copy=True)
    c, s = np.cos(angle), np.sin(angle)
    for arr in (points, boxes):
        x, y = arr[:, 0].copy(), arr[:, 1].copy()
        arr[:, 0] = c * x - s * y
        arr[:, 1] = s * x + c * y
    boxes[:, 6] = wrap_angle(boxes[:, 6] + angle)
    return points, boxes


def scale(points: np.ndarray, boxes: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale the scene about the sensor: positions and box sizes by ``factor``."""
    if factor <= 0:
        raise ValueError(f"scale factor must be > 0, got {factor}")
    points, boxes = np.array(points, copy=True), np.array(boxes, copy=True)
    points[:, :3] *= factor
    boxes[:, :6] *= factor
    return points, boxes


@dataclass(frozen=True)
class GlobalAugment:
    """Random flips, rotation and scaling, drawn from the generator passed at each call.

    ``flip_x``: probability of mirroring y (flip about the x axis); ``flip_y``: of mirroring x;
    ``rotation``: uniform range of the angle in radians; ``scale``: uniform range of the factor.
    """

    flip_x: float = 0.5
    flip_y: float = 0.5
    rotation: tuple[float, float] = (-np.pi / 4, np.pi / 4)
    scale: tuple[float, float] = (0.95, 1.05)

    def __post_init__(self):
        for name in ("flip_x", "flip_y"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {p}")
        if self.rotation[0] > self.rotation[1] or self.scale[0] > self.scale[1]:
            raise ValueError(f"ranges must be (low, high), got rotation={self.rotation}, "
                             f"scale={self.scale}")
        if self.scale[0] <= 0:
            raise ValueError(f"scale factors must be > 0, got {self.scale}")

    @classmethod
    def from_config(cls, cfg: bool | dict | GlobalAugment | None) -> GlobalAugment | None:
        """``True``: defaults; a dict: overrides; ``False``/``None``: no augmentation."""
        if cfg is None or cfg is False:
            return None
        if cfg is True:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        if not isinstance(cfg, dict):
            raise TypeError(f"augment must be a bool, a dict or GlobalAugment, got {type(cfg)}")
        valid = {f.name for f in fields(cls)}
        unknown = set(cfg) - valid
        if unknown:
            raise KeyError(f"unknown augmentation setting(s) {sorted(unknown)}; valid: {sorted(valid)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})

    def __call__(self, points: np.ndarray, boxes: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        # Draw everything first, so the stream does not depend on which branches run.
        do_fx, do_fy = rng.random(2) < (self.flip_x, self.flip_y)
        angle = rng.uniform(*self.rotation)
        factor = rng.uniform(*self.scale)
        if do_fx:
            points, boxes = flip(points, boxes, "x")
        if do_fy:
            points, boxes = flip(points, boxes, "y")
        points, boxes = rotate_z(points, boxes, angle)
        return scale(points, boxes, factor)
