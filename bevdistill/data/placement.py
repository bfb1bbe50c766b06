"""Where things stand: the footprint keeper every object goes through, and the labelled
objects (traffic, parked cars, pedestrians, cyclists) placed as they would be in a town."""

from __future__ import annotations

import numpy as np

from .classes import LABEL_OF
from .geometry import bev_corners, corners_overlap
from .parts import large_vehicle_parts, sample_dims
from .road import RoadLayout
from .scene_config import SceneConfig
from .worlds import WORLD_RECIPES, WORLD_VERSION, recipes_of_world  # noqa: F401  (re-exported)

EGO_RECT = (0.45, 0.0, 4.9, 2.0, 0.0)  # the ego car's footprint in the LiDAR frame

class Builder:
    """Collects objects in the road frame and keeps their footprints apart."""

    def __init__(self, layout: RoadLayout):
        self.layout = layout
        self.objects: list[dict] = []
        self._centres = np.zeros((256, 2))
        self._radii = np.zeros(256)
        self._corners = np.zeros((256, 4, 2))
        self._n = 0
        c, s = np.cos(layout.yaw), np.sin(layout.yaw)
        ex, ey, el, ew, eyaw = EGO_RECT  # the ego's footprint, expressed in the road frame
        self._remember((c * ex + s * ey, -s * ex + c * ey, el, ew, eyaw - layout.yaw))

    def _remember(self, rect) -> None:
        if self._n == self._radii.shape[0]:
            self._centres = np.concatenate([self._centres, np.zeros_like(self._centres)])
            self._radii = np.concatenate([self._radii, np.zeros_like(self._radii)])
            self._corners = np.concatenate([self._corners, np.zeros_like(self._corners)])
        self._centres[self._n] = rect[:2]
        self._radii[self._n] = 0.5 * np.hypot(rect[2], rect[3])
        self._corners[self._n] = bev_corners(np.array(rect))[0]
        self._n += 1

    def free(self, rect, margin: float = 0.15) -> bool:
        """Is the footprint ``rect`` (x, y, l, w, yaw), grown by ``margin``, clear of all others?"""
        n = self._n
        reach = 0.5 * np.hypot(rect[2], rect[3]) + margin + self._radii[:n]
        near = np.flatnonzero(np.hypot(self._centres[:n, 0] - rect[0],
                                       self._centres[:n, 1] - rect[1]) < reach)
        if near.size == 0:
            return True
        grown = (rect[0], rect[1], rect[2] + 2 * margin, rect[3] + 2 * margin, rect[4])
        return not corners_overlap(bev_corners(np.array(grown))[0], self._corners[near]).any()

    def add(self, kind: str, x, y, yaw, dims, parts, base=None, margin=0.15,
            check: bool = True, label: int = -1) -> bool:
        """Place an object if its footprint is free; ``base`` is its bottom above the road."""
        rect = (float(x), float(y), float(dims[0]), float(dims[1]), float(yaw))
        if check and not self.free(rect, margin):
            return False
        if base is None:
            base = self.layout.kerb * bool(self.layout.is_sidewalk(np.array(x), np.array(y)))
        self._remember(rect)
        self.objects.append(dict(kind=kind, label=label, x=rect[0], y=rect[1], yaw=rect[4],
                                 dims=dims, parts=parts, base=base))
        return True


def sidewalk_spot(rng, b: Builder, extent: float) -> tuple[float, float, int]:
    """A random point on a sidewalk (main street or, sometimes, the cross street)."""
    lay = b.layout
    if lay.cross_x is not None and rng.random() < 0.2:
        side = int(rng.choice([-1, 1]))
        x = lay.cross_x + side * (lay.cross_half + rng.uniform(0.3, lay.sidewalk - 0.3))
        y = lay.centre_y + rng.choice([-1, 1]) * rng.uniform(lay.half_road + 0.5, extent)
        return x, y, side
    side = int(rng.choice([-1, 1]))
    y = lay.centre_y + side * (lay.half_road + rng.uniform(0.35, lay.sidewalk - 0.35))
    return rng.uniform(-extent, extent), y, side


def _vehicle(rng, b: Builder, x: float, y: float, yaw: float, cfg: SceneConfig) -> float:
    """Try to place a car (or, rarely, a truck/bus) centred at x; returns its length."""
    if cfg.clutter and rng.random() < 0.06:
        dims = (rng.uniform(6, 12), rng.uniform(2.3, 2.6), rng.uniform(2.5, 3.6))
        b.add("large_vehicle", x, y, yaw, dims, large_vehicle_parts(rng, *dims), base=0.0)
        return dims[0]
    dims = sample_dims(rng, "car")
    car_parts = recipes_of_world(cfg.world_version)["car"]
    b.add("car", x, y, yaw, dims, car_parts(rng, *dims), base=0.0, label=LABEL_OF["car"])
    return dims[0]


def add_traffic(rng, b: Builder, cfg: SceneConfig) -> None:
    lay = b.layout
    ext = cfg.extent
    for side in (-1, 1):
        heading = lay.direction(side)
        for lane in range(lay.lanes):
            y = lay.centre_y + side * (lane + 0.5) * lay.lane_width
            gap = rng.uniform(*cfg.traffic_gap)
            x = -ext + rng.uniform(0, gap)
            while x < ext:
                yaw = heading + rng.normal(0, 0.03)
                length = _vehicle(rng, b, x, y + rng.normal(0, 0.2), yaw, cfg)
                x += length + 1.5 + rng.exponential(gap)
        if lay.parking > 0:
            occupancy = rng.uniform(*cfg.parking_occupancy)
            y = lay.centre_y + side * (lay.half_road - lay.parking / 2)
            x = -ext + rng.uniform(0, 3)
            while x < ext:
                yaw = heading + (np.pi if rng.random() < 0.1 else 0.0) + rng.normal(0, 0.04)
                if rng.random() < occupancy:
                    length = _vehicle(rng, b, x, y + rng.normal(0, 0.1), yaw, cfg)
                else:
                    length = 5.0
                x += length + rng.uniform(0.6, 3.0)
    if lay.cross_x is not None:  # two lanes on the cross street, along y
        for side in (-1, 1):
            xl = lay.cross_x + side * lay.cross_half / 2
            heading = np.pi / 2 * (1 if (side < 0) == lay.right_hand else -1)
            gap = rng.uniform(*cfg.traffic_gap)
            for sign in (-1, 1):
                y = lay.centre_y + sign * (lay.half_road + 3 + rng.uniform(0, gap))
                while abs(y - lay.centre_y) < ext:
                    yaw = heading + rng.normal(0, 0.03)
                    length = _vehicle(rng, b, xl + rng.normal(0, 0.2), y, yaw, cfg)
                    y += sign * (length + 1.5 + rng.exponential(gap))


def add_pedestrians(rng, b: Builder, cfg: SceneConfig) -> None:
    lay = b.layout
    pedestrian_parts = recipes_of_world(cfg.world_version)["pedestrian"]
    n = int(rng.integers(cfg.pedestrians[0], cfg.pedestrians[1] + 1))
    placed, tries = 0, 0
    while placed < n and tries < 20 * n:
        tries += 1
        if rng.random() < 0.12:  # crossing the road, at the cross street if there is one
            heading = np.pi / 2 * rng.choice([-1, 1]) + rng.normal(0, 0.2)
            x = (lay.cross_x + rng.choice([-1, 1]) * (lay.cross_half + 1.5)
                 if lay.cross_x is not None else rng.uniform(-cfg.extent, cfg.extent))
            y = lay.centre_y + rng.uniform(-lay.half_road, lay.half_road)
        else:
            x, y, _ = sidewalk_spot(rng, b, cfg.extent)
            along = rng.random() < 0.6
            heading = (rng.choice([0.0, np.pi]) + rng.normal(0, 0.3) if along
                       else rng.uniform(-np.pi, np.pi))
        group = 1 + (rng.poisson(1.0) if rng.random() < 0.3 else 0)
        for g in range(group):
            gx = x + (rng.normal(0, 1.0) if g else 0.0)
            gy = y + (rng.normal(0, 0.5) if g else 0.0)
            dims = sample_dims(rng, "pedestrian")
            yaw = heading + (rng.normal(0, 0.3) if g else 0.0)
            if b.add("pedestrian", gx, gy, yaw, dims, pedestrian_parts(rng, *dims),
                     margin=0.1, label=LABEL_OF["pedestrian"]):
                placed += 1
                if placed >= n:
                    break


def add_cyclists(rng, b: Builder, cfg: SceneConfig) -> None:
    lay = b.layout
    cyclist_parts = recipes_of_world(cfg.world_version)["cyclist"]
    n = int(rng.integers(cfg.cyclists[0], cfg.cyclists[1] + 1))
    placed, tries = 0, 0
    while placed < n and tries < 20 * n:
        tries += 1
        side = int(rng.choice([-1, 1]))
        if rng.random() < 0.8:  # riding near the lane edge, with the traffic
            y = lay.centre_y + side * (lay.lanes * lay.lane_width - rng.uniform(0.5, 1.0))
            yaw = lay.direction(side) + rng.normal(0, 0.08)
            x = rng.uniform(-cfg.extent, cfg.extent)
        else:
            x, y, _ = sidewalk_spot(rng, b, cfg.extent)
            yaw = rng.choice([0.0, np.pi]) + rng.normal(0, 0.2)
        dims = sample_dims(rng, "cyclist")
        if b.add("cyclist", x, y, yaw, dims, cyclist_parts(rng, *dims), margin=0.2,
                 label=LABEL_OF["cyclist"]):
            placed += 1
