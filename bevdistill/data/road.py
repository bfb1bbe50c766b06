"""The street a generated scene stands on: its layout (lanes, sidewalks, cross street) and the
ground the LiDAR's beams hit (road plane, raised sidewalks, lane markings)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene_config import SceneConfig


@dataclass
class RoadLayout:
    """The street in the road frame (ego at the origin, road along +x)."""

    yaw: float  # road frame -> LiDAR frame rotation
    centre_y: float  # centre line's y
    lanes: int  # lanes per direction
    lane_width: float
    parking: float  # width of the parking strip on each side (0: none)
    sidewalk: float
    kerb: float  # sidewalk height above the road
    setback: tuple[float, float]  # facade distance behind the sidewalk, right (-y) and left (+y)
    right_hand: bool  # traffic drives on the right (moving +x on the -y side)
    cross_x: float | None  # cross street centre (None: no cross street)
    cross_half: float  # half width of the cross street's carriageway
    dash_phase: float

    @property
    def half_road(self) -> float:
        return self.lanes * self.lane_width + self.parking

    def direction(self, side: int) -> float:
        """Heading of traffic on ``side`` (+1 left of the centre line, -1 right)."""
        moving_plus_x_side = -1 if self.right_hand else 1
        return 0.0 if side == moving_plus_x_side else np.pi

    def in_cross(self, x: np.ndarray, margin: float = 0.0) -> np.ndarray:
        if self.cross_x is None:
            return np.zeros(np.shape(x), dtype=bool)
        return np.abs(x - self.cross_x) < self.cross_half + margin

    def is_sidewalk(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Road-frame points that lie on a raised sidewalk."""
        dy = np.abs(y - self.centre_y)
        w, s = self.half_road, self.sidewalk
        main = (dy >= w) & (dy <= w + s) & ~self.in_cross(x)
        if self.cross_x is None:
            return main
        dx = np.abs(x - self.cross_x)
        cross = (dx >= self.cross_half) & (dx <= self.cross_half + s) & (dy >= w)
        return main | cross

    def is_road(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (np.abs(y - self.centre_y) < self.half_road) | self.in_cross(x)


@dataclass
class Ground:
    """Road plane ``z = -height + gx * x + gy * y`` (LiDAR frame) with raised sidewalks.

    Without a ``layout`` it is a plain plane of reflectivity ``refl_road`` (custom scenes).
    """

    height: float
    gx: float = 0.0
    gy: float = 0.0
    layout: RoadLayout | None = None
    refl_road: float = 0.07
    refl_sidewalk: float = 0.1
    refl_verge: float = 0.08
    refl_marking: float = 0.45

    def z_at(self, x, y):
        """Height of the road plane under (x, y)."""
        return -self.height + self.gx * x + self.gy * y

    def _to_road(self, x, y):
        c, s = np.cos(self.layout.yaw), np.sin(self.layout.yaw)
        return c * x + s * y, -s * x + c * y

    def _markings(self, xr: np.ndarray, yr: np.ndarray) -> np.ndarray:
        lay = self.layout
        dy = yr - lay.centre_y
        mark = np.abs(dy) < 0.1  # centre line
        for k in range(1, lay.lanes):  # dashed lane dividers
            on_line = np.abs(np.abs(dy) - k * lay.lane_width) < 0.075
            mark |= on_line & (np.mod(xr - lay.dash_phase, 9.0) < 3.0)
        if lay.parking > 0:  # solid edge lines between traffic and parking
            mark |= np.abs(np.abs(dy) - lay.lanes * lay.lane_width) < 0.075
        return mark & ~lay.in_cross(xr)

    #: Ground surfaces, in :meth:`hit`'s ``surface`` codes (a camera paints each its own way).
    SURFACES = ("road", "verge", "sidewalk", "marking")

    def cast(self, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray):
        """Nearest ground hit of unit rays from the origin: distance (inf: none), cos, refl."""
        t, cos, surface = self.hit(dx, dy, dz)
        refl = np.array([self.refl_road, self.refl_verge, self.refl_sidewalk, self.refl_marking])
        return t, cos, refl[surface]

    def hit(self, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, origin=(0.0, 0.0, 0.0)):
        """Nearest ground hit of unit rays from ``origin`` (LiDAR frame): distance (inf: none),
        cos(incidence) and the surface hit (an index into :attr:`SURFACES`)."""
        ox, oy, oz = (float(v) for v in origin)
        height = self.height + oz - self.gx * ox - self.gy * oy  # the plane below the origin
        denom = dz - self.gx * dx - self.gy * dy
        down = denom < 0
        safe = np.where(down, denom, -1.0)
        t_road = np.where(down, -height / safe, np.inf)
        cos = np.abs(denom) / np.sqrt(self.gx**2 + self.gy**2 + 1.0)
        if self.layout is None:
            return t_road, cos, np.zeros(t_road.shape, dtype=np.int64)
        # A beam that meets the raised plane above a sidewalk hits the sidewalk's top.
        t_walk = np.where(down, -(height - self.layout.kerb) / safe, np.inf)
        xr, yr = self._to_road(np.where(down, ox + t_walk * dx, 0),
                               np.where(down, oy + t_walk * dy, 0))
        walk = down & self.layout.is_sidewalk(xr, yr)
        t = np.where(walk, t_walk, t_road)
        xr, yr = self._to_road(np.where(down, ox + t * dx, 0), np.where(down, oy + t * dy, 0))
        surface = np.where(self.layout.is_road(xr, yr), 0, 1)
        surface = np.where(walk, 2, surface)
        return t, cos, np.where(~walk & self._markings(xr, yr), 3, surface)

def _setback(rng: np.random.Generator) -> float:
    """Facade line behind the sidewalk: flush, a front yard, or a plaza / car park."""
    u = rng.random()
    if u < 0.3:
        return 0.0
    return float(rng.uniform(1, 6) if u < 0.6 else rng.uniform(6, 25))


def sample_layout(rng: np.random.Generator, cfg: SceneConfig) -> RoadLayout:
    lanes = int(rng.choice([1, 2], p=[0.45, 0.55]))
    lane_width = rng.uniform(3.0, 3.6)
    right_hand = bool(rng.random() < 0.5)
    ego_lane = int(rng.integers(lanes))
    centre_y = (ego_lane + 0.5) * lane_width * (1 if right_hand else -1) + rng.normal(0, 0.2)
    cross = rng.random() < cfg.cross_street_prob
    return RoadLayout(
        yaw=float(rng.uniform(-cfg.max_road_angle, cfg.max_road_angle)),
        centre_y=float(centre_y),
        lanes=lanes,
        lane_width=float(lane_width),
        parking=float(rng.uniform(2.1, 2.5)) if rng.random() < 0.6 else 0.0,
        sidewalk=float(rng.uniform(2.0, 4.5)),
        kerb=float(rng.uniform(0.1, 0.18)),
        setback=(_setback(rng), _setback(rng)),
        right_hand=right_hand,
        cross_x=float(rng.uniform(-35, 35)) if cross else None,
        cross_half=float(rng.uniform(3.5, 7.0)),
        dash_phase=float(rng.uniform(0, 9)),
    )
