"""Procedural street scenes for the synthetic LiDAR, deterministic from ``(seed, index)``.

A scene is a straight road along x (turned by a small random angle, on a gently sloping
ground) with lanes, raised sidewalks, building facades beyond the sidewalks and sometimes a
cross street. Labelled objects of the three classes stand where they would in a town: cars
in lanes (both directions) and parked along the kerbs, pedestrians on the sidewalks (some
crossing), cyclists near the lane edges. Unlabelled clutter (facades, trees, hedges, poles,
signs, barriers, cones, bins, bollards, benches, cabinets, trucks and buses) gives the detector
things it must learn to ignore, some of them pedestrian- or car-sized on purpose.

Objects are made of primitives the LiDAR can ray-cast fast: oriented boxes and vertical
cylinders. A car is a body, wheels and a glassy cabin; a pedestrian has legs, torso, arms and
head; a cyclist a bicycle and a rider; so their returns are not plain box outlines. Every part
lies a few centimetres inside the object's label box, so range noise rarely pushes a surface
point out of its box. Nothing overlaps (an oriented-rectangle test on footprints).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from .classes import LABEL_OF
from .geometry import bev_corners, corners_overlap

# Label-box size ranges (l, w, h) in metres, close to nuScenes' per-class statistics.
SIZE_RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    "car": ((3.9, 5.0), (1.7, 2.0), (1.4, 1.8)),
    "pedestrian": ((0.5, 0.9), (0.5, 0.9), (1.5, 1.9)),
    "cyclist": ((1.6, 1.9), (0.5, 0.8), (1.5, 1.9)),
}

CLUTTER_KINDS: tuple[str, ...] = (
    "facade", "hedge", "fence", "tree", "pole", "sign", "barrier", "cone", "bin", "bollard",
    "bench", "cabinet", "large_vehicle",
)

_INSET = 0.03  # parts stay this far inside their label box
_EGO_RECT = (0.45, 0.0, 4.9, 2.0, 0.0)  # the ego car's footprint in the LiDAR frame


def settings_from_dict(cls: type, cfg: dict, what: str) -> dict:
    """Keyword arguments for the settings dataclass ``cls`` from a config dict.

    Unknown keys raise (naming the valid ones); lists become tuples, since mmengine configs
    turn tuples into lists.
    """
    valid = {f.name for f in fields(cls)}
    unknown = set(cfg) - valid
    if unknown:
        raise KeyError(
            f"unknown {what} setting(s) {sorted(unknown)}; valid settings are {sorted(valid)}"
        )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the scene generator; defaults give a busy town street."""

    sensor_height: float = 1.84  # nuScenes LIDAR_TOP above the road
    extent: float = 62.0  # labelled objects lie within |x| <= extent along the road
    cross_street_prob: float = 0.4
    max_road_angle: float = 0.15  # radians; the road is turned by up to this
    max_ground_slope: float = 0.015
    traffic_gap: tuple[float, float] = (8.0, 40.0)  # mean free gap between moving cars
    parking_occupancy: tuple[float, float] = (0.2, 0.8)
    pedestrians: tuple[int, int] = (2, 16)
    cyclists: tuple[int, int] = (0, 4)
    clutter: bool = True  # False: only road, sidewalks and labelled objects

    def __post_init__(self):
        for name in ("traffic_gap", "parking_occupancy", "pedestrians", "cyclists"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high, "
                                 f"got {(lo, hi)}")
        if self.sensor_height <= 0 or self.extent <= 0:
            raise ValueError("sensor_height and extent must be > 0")

    @classmethod
    def from_dict(cls, cfg: dict | SceneConfig | None) -> SceneConfig:
        """Build from a (possibly partial) dict, as mmengine configs pass it."""
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        return cls(**settings_from_dict(cls, cfg, "scene"))


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

    def cast(self, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray):
        """Nearest ground hit of unit rays from the origin: distance (inf: none), cos, refl."""
        denom = dz - self.gx * dx - self.gy * dy
        down = denom < 0
        safe = np.where(down, denom, -1.0)
        t_road = np.where(down, -self.height / safe, np.inf)
        cos = np.abs(denom) / np.sqrt(self.gx**2 + self.gy**2 + 1.0)
        if self.layout is None:
            return t_road, cos, np.full(t_road.shape, self.refl_road)
        # A beam that meets the raised plane above a sidewalk hits the sidewalk's top.
        t_walk = np.where(down, -(self.height - self.layout.kerb) / safe, np.inf)
        xr, yr = self._to_road(np.where(down, t_walk * dx, 0), np.where(down, t_walk * dy, 0))
        walk = down & self.layout.is_sidewalk(xr, yr)
        t = np.where(walk, t_walk, t_road)
        xr, yr = self._to_road(np.where(down, t * dx, 0), np.where(down, t * dy, 0))
        refl = np.where(self.layout.is_road(xr, yr), self.refl_road, self.refl_verge)
        refl = np.where(walk, self.refl_sidewalk, refl)
        refl = np.where(~walk & self._markings(xr, yr), self.refl_marking, refl)
        return t, cos, refl


@dataclass
class Scene:
    """Everything the LiDAR needs, plus the labels. Arrays are in the LiDAR frame."""

    seed: int | None
    index: int | None
    boxes: np.ndarray  # [M, 7] float32 label boxes (x, y, z, l, w, h, yaw), geometric centres
    labels: np.ndarray  # [M] int64
    box_prims: np.ndarray  # [P, 9] (cx, cy, cz, l, w, h, yaw, reflectivity, extra dropout)
    cyl_prims: np.ndarray  # [Q, 7] (cx, cy, z0, z1, radius, reflectivity, extra dropout)
    ground: Ground
    clutter_kinds: list[str] = field(default_factory=list)
    clutter_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.float32))


# --------------------------------------------------------------------------------------
# Object recipes: parts in the object's frame (u forward, v left, z up from its bottom).
# A box part is ("b", u, v, z_bottom, l, w, h, refl, drop); a cylinder ("c", u, v, z0, z1, r,
# refl, drop).


def _paint(rng: np.random.Generator) -> float:
    kind = rng.choice(3, p=[0.35, 0.4, 0.25])  # dark, mid, bright paint
    lo, hi = ((0.04, 0.09), (0.09, 0.25), (0.25, 0.55))[kind]
    return float(rng.uniform(lo, hi))


def _car_parts(rng, length, width, height) -> list[tuple]:
    e = _INSET
    paint = _paint(rng)
    clear = rng.uniform(0.14, 0.22)
    belt = rng.uniform(0.5, 0.62) * height
    cabin_l = rng.uniform(0.45, 0.65) * length
    cabin_u = np.clip(rng.uniform(-0.12, 0.04) * length, -(length / 2 - e - cabin_l / 2),
                      length / 2 - e - cabin_l / 2)
    axle = length / 2 - rng.uniform(0.75, 0.95)
    parts = [
        ("b", 0.0, 0.0, clear, length - 2 * e, width - 2 * e, belt - clear, paint, 0.0),
        ("b", cabin_u, 0.0, belt, cabin_l, width - 2 * e - rng.uniform(0.1, 0.25),
         height - e - belt, 0.6 * paint, 0.3),
    ]
    for u in (axle, -axle):
        parts.append(("b", u, 0.0, e, 0.62, width - 2 * e - 0.02, clear + 0.1 - e, 0.04, 0.1))
    return parts


def _pedestrian_parts(rng, length, width, height) -> list[tuple]:
    e = _INSET
    cloth = float(rng.uniform(0.04, 0.3))
    skin = float(rng.uniform(0.08, 0.2))
    leg_r = rng.uniform(0.06, 0.09)
    hip = rng.uniform(0.45, 0.5) * height
    stride = rng.uniform(0.0, 1.0) * (length / 2 - e - leg_r)
    leg_v = min(rng.uniform(0.08, 0.13), width / 2 - e - leg_r)
    torso_w = min(rng.uniform(0.32, 0.45), width - 2 * e)
    torso_l = min(rng.uniform(0.2, 0.3), length - 2 * e)
    torso_h = rng.uniform(0.3, 0.36) * height
    arm_r = 0.045
    arm_v = min(torso_w / 2 + 0.05, width / 2 - e - arm_r)
    swing = rng.uniform(0.0, 1.0) * (length / 2 - e - arm_r)
    head_r = rng.uniform(0.08, 0.11)
    head_h = rng.uniform(0.22, 0.26)
    return [
        ("c", stride, leg_v, 0.0, hip, leg_r, cloth, 0.0),
        ("c", -stride, -leg_v, 0.0, hip, leg_r, cloth, 0.0),
        ("b", 0.0, 0.0, hip, torso_l, torso_w, torso_h, cloth, 0.0),
        ("c", -swing, arm_v, hip - 0.05, hip + 0.3 * height, arm_r, cloth, 0.1),
        ("c", swing, -arm_v, hip - 0.05, hip + 0.3 * height, arm_r, cloth, 0.1),
        ("c", 0.0, 0.0, height - e - head_h, height - e, head_r, skin, 0.05),
    ]


def _cyclist_parts(rng, length, width, height) -> list[tuple]:
    e = _INSET
    cloth = float(rng.uniform(0.04, 0.3))
    wheel = rng.uniform(0.6, 0.7)
    hub = length / 2 - e - wheel / 2
    torso_w = min(rng.uniform(0.32, 0.4), width - 2 * e)
    seat = rng.uniform(0.5, 0.55) * height
    torso_h = 0.3 * height
    arm_v = min(0.17, width / 2 - e - 0.03)
    parts = [
        ("b", hub, 0.0, 0.0, wheel, 0.05, wheel, 0.12, 0.3),
        ("b", -hub, 0.0, 0.0, wheel, 0.05, wheel, 0.12, 0.3),
        ("b", 0.0, 0.0, 0.5 * wheel, 2 * hub, 0.05, 0.2, 0.25, 0.1),
        ("b", -0.1 * length, 0.0, seat, 0.32, torso_w, torso_h, cloth, 0.0),
        ("c", -0.05 * length, 0.12, 0.25, seat, 0.07, cloth, 0.0),
        ("c", -0.05 * length, -0.12, 0.25, seat, 0.07, cloth, 0.0),
        ("c", -0.02 * length, 0.0, height - e - 0.24, height - e, 0.1, 0.12, 0.05),
    ]
    for v in (arm_v, -arm_v):
        parts.append(("b", 0.12 * length, v, seat + 0.55 * torso_h, 0.3 * length, 0.06, 0.07,
                      cloth, 0.1))
    return parts


def _large_vehicle_parts(rng, length, width, height) -> list[tuple]:
    e = _INSET
    paint = _paint(rng)
    clear = rng.uniform(0.3, 0.5)
    parts = [("b", 0.0, 0.0, clear, length - 2 * e, width - 2 * e, height - e - clear, paint, 0.05)]
    for u in (length / 2 - 1.2, -length / 2 + 1.6):
        parts.append(("b", u, 0.0, e, 1.0, width - 2 * e - 0.05, clear + 0.2, 0.04, 0.1))
    return parts


class _Builder:
    """Collects objects in the road frame and keeps their footprints apart."""

    def __init__(self, layout: RoadLayout):
        self.layout = layout
        self.objects: list[dict] = []
        self._centres = np.zeros((256, 2))
        self._radii = np.zeros(256)
        self._corners = np.zeros((256, 4, 2))
        self._n = 0
        c, s = np.cos(layout.yaw), np.sin(layout.yaw)
        ex, ey, el, ew, eyaw = _EGO_RECT  # the ego's footprint, expressed in the road frame
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


def _setback(rng: np.random.Generator) -> float:
    """Facade line behind the sidewalk: flush, a front yard, or a plaza / car park."""
    u = rng.random()
    if u < 0.3:
        return 0.0
    return float(rng.uniform(1, 6) if u < 0.6 else rng.uniform(6, 25))


def _sample_layout(rng: np.random.Generator, cfg: SceneConfig) -> RoadLayout:
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


# -- structure -------------------------------------------------------------------------


def _facade_row(rng, b: _Builder, along_x: bool, offset: float, sign: int, start: float,
                stop: float) -> None:
    """Building fronts facing the street, from ``start`` to ``stop`` along the street."""
    pos = start
    while pos < stop:
        seg = min(rng.uniform(8, 35), stop - pos)
        if seg > 2.0:
            u = rng.random()
            if u < 0.15:  # alley: a deeper back wall shows through
                depth, seg = rng.uniform(8, 20), min(seg, rng.uniform(3, 8))
            elif u < 0.35:  # open lot: the next building stands far back
                depth = rng.uniform(10, 30)
            else:
                depth = rng.normal(0, 0.4)
            height = rng.uniform(4, 12) if rng.random() < 0.55 else rng.uniform(12, 30)
            thick = 6.0
            face = offset + sign * (depth + thick / 2)
            centre = pos + seg / 2
            x, y = (centre, face) if along_x else (face, centre)
            yaw = (0.0 if along_x else np.pi / 2) + rng.normal(0, 0.01)
            refl = rng.uniform(0.03, 0.12)
            parts = [("b", 0.0, 0.0, -2.0, seg, thick, height + 2.0, refl, rng.uniform(0, 0.15))]
            b.add("facade", x, y, yaw, (seg, thick, height), parts, base=0.0, check=False)
        pos += seg


def _add_structure(rng, b: _Builder, extent: float) -> None:
    lay = b.layout
    far = extent + 25
    w = lay.half_road + lay.sidewalk
    for k, side in enumerate((-1, 1)):
        offset = lay.centre_y + side * (w + lay.setback[k])
        if lay.cross_x is None:
            _facade_row(rng, b, True, offset, side, -far, far)
        else:
            gap = lay.cross_half + lay.sidewalk
            _facade_row(rng, b, True, offset, side, -far, lay.cross_x - gap)
            _facade_row(rng, b, True, offset, side, lay.cross_x + gap, far)
    if lay.cross_x is not None:
        for side in (-1, 1):
            offset = lay.cross_x + side * (lay.cross_half + lay.sidewalk)
            _facade_row(rng, b, False, offset, side, lay.centre_y + w, lay.centre_y + far)
            _facade_row(rng, b, False, offset, side, lay.centre_y - far, lay.centre_y - w)


def _kerb_positions(rng, b: _Builder, spacing: tuple[float, float], extent: float,
                    sides: tuple[int, ...] = (-1, 1)) -> list[tuple[float, int]]:
    """(x, side) positions along the kerbs at roughly ``spacing``, skipping the cross street."""
    lay = b.layout
    out = []
    for side in sides:
        x = -extent - rng.uniform(0, spacing[1])
        while x < extent + 10:
            x += rng.uniform(*spacing)
            if not lay.in_cross(np.array(x), margin=lay.sidewalk):
                out.append((x, side))
    return out


def _add_street_furniture(rng, b: _Builder, extent: float) -> None:
    lay = b.layout
    kerb_y = lay.half_road
    # Street trees in the sidewalk near the kerb, bigger ones in deep front yards.
    for k, side in enumerate((-1, 1)):
        if rng.random() < 0.6:
            for x, _ in _kerb_positions(rng, b, (7, 14), extent, sides=(side,)):
                _tree(rng, b, x, lay.centre_y + side * (kerb_y + min(0.8, lay.sidewalk / 3)), 1.0)
        if lay.setback[k] > 3:
            yard = kerb_y + lay.sidewalk
            for x, _ in _kerb_positions(rng, b, (8, 20), extent, sides=(side,)):
                y = lay.centre_y + side * (yard + rng.uniform(1.5, lay.setback[k] - 1.0))
                _tree(rng, b, x, y, 1.5)
    # Street lights with an arm over the road, and signs with retro-reflective plates.
    for x, side in _kerb_positions(rng, b, (20, 40), extent):
        y = lay.centre_y + side * (kerb_y + 0.4)
        h = rng.uniform(6, 10)
        arm = rng.uniform(1.5, 2.5)
        parts = [("c", 0.0, 0.0, 0.0, h, rng.uniform(0.08, 0.14), 0.2, 0.0),
                 ("b", 0.0, -side * arm / 2, h - 0.3, 0.12, arm, 0.12, 0.25, 0.0)]
        b.add("pole", x, y, 0.0, (0.3, 0.3, h), parts)
    for _ in range(rng.integers(0, 5)):
        side = int(rng.choice([-1, 1]))
        x = rng.uniform(-extent, extent)
        y = lay.centre_y + side * (kerb_y + 0.35)
        h = rng.uniform(2.0, 2.6)
        plate = rng.uniform(0.6, 0.9)
        parts = [("c", 0.0, 0.0, 0.0, h - plate, 0.04, 0.2, 0.0),
                 ("b", 0.0, 0.0, h - plate, 0.04, plate, plate, 0.9, 0.0)]
        b.add("sign", x, y, np.pi / 2 * (rng.random() < 0.5), (0.1, plate, h), parts)
    # Hedges and fences in front yards.
    for k, side in enumerate((-1, 1)):
        if lay.setback[k] < 0.8:
            continue
        y = lay.centre_y + side * (kerb_y + lay.sidewalk + rng.uniform(0.4, lay.setback[k] - 0.3))
        x = -extent - 10
        while x < extent + 10:
            seg = rng.uniform(3, 15)
            if rng.random() < 0.5:
                dims = (seg, rng.uniform(0.6, 1.2), rng.uniform(0.6, 1.8))
                kind, refl, drop = "hedge", rng.uniform(0.1, 0.25), 0.3
            else:
                dims = (seg, 0.1, rng.uniform(1.0, 2.0))
                kind, refl, drop = "fence", rng.uniform(0.1, 0.4), 0.4
            parts = [("b", 0.0, 0.0, 0.0, dims[0], dims[1], dims[2], refl, drop)]
            b.add(kind, x + seg / 2, y, 0.0, dims, parts, base=0.0)
            x += seg + rng.uniform(1, 6)
    # Small furniture anywhere on the sidewalks: pedestrian-sized on purpose.
    for _ in range(rng.poisson(8)):
        x, y, side = _sidewalk_spot(rng, b, extent)
        kind = str(rng.choice(["bin", "bollard", "bench", "cabinet"]))
        if kind == "bin":
            h, r = rng.uniform(0.8, 1.2), rng.uniform(0.25, 0.35)
            parts, dims = [("c", 0.0, 0.0, 0.0, h, r, rng.uniform(0.05, 0.3), 0.0)], (2 * r, 2 * r, h)
        elif kind == "bollard":
            h = rng.uniform(0.8, 1.1)
            parts, dims = [("c", 0.0, 0.0, 0.0, h, 0.1, 0.3, 0.0)], (0.2, 0.2, h)
        elif kind == "bench":
            dims = (rng.uniform(1.5, 2.0), rng.uniform(0.5, 0.7), 0.85)
            parts = [("b", 0.0, 0.0, 0.0, dims[0], dims[1], 0.45, 0.15, 0.1),
                     ("b", 0.0, -dims[1] / 2 + 0.05, 0.45, dims[0], 0.08, 0.4, 0.15, 0.1)]
        else:
            dims = (rng.uniform(0.6, 1.0), rng.uniform(0.4, 0.6), rng.uniform(1.1, 1.7))
            parts = [("b", 0.0, 0.0, 0.0, *dims, rng.uniform(0.1, 0.4), 0.0)]
        yaw = 0.0 if kind == "bench" and rng.random() < 0.8 else rng.uniform(-np.pi, np.pi)
        b.add(kind, x, y, yaw, dims, parts)


def _tree(rng, b: _Builder, x: float, y: float, scale: float) -> None:
    """A trunk and an irregular crown of overlapping cylinders (sparse: leaves drop returns)."""
    trunk_top = rng.uniform(2.2, 3.5)
    parts = [("c", 0.0, 0.0, 0.0, trunk_top, rng.uniform(0.1, 0.25), 0.1, 0.0)]
    leaf = rng.uniform(0.04, 0.1)
    for _ in range(rng.integers(2, 5)):
        z0 = trunk_top - rng.uniform(0, 0.5)
        parts.append(("c", rng.normal(0, 0.6 * scale), rng.normal(0, 0.6 * scale), z0,
                      z0 + scale * rng.uniform(1.5, 4.0), scale * rng.uniform(1.0, 2.5), leaf,
                      rng.uniform(0.3, 0.5)))
    b.add("tree", x, y, 0.0, (0.5, 0.5, trunk_top + 4 * scale), parts)


def _sidewalk_spot(rng, b: _Builder, extent: float) -> tuple[float, float, int]:
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


def _add_roadworks(rng, b: _Builder, extent: float) -> None:
    """Sometimes a row of jersey barriers with cones along a lane edge."""
    lay = b.layout
    if rng.random() > 0.35:
        return
    side = int(rng.choice([-1, 1]))
    y = lay.centre_y + side * (lay.half_road - rng.uniform(0.4, 1.2))
    x = rng.uniform(-extent, extent - 10)
    stop = x + rng.uniform(8, 30)
    refl = rng.uniform(0.2, 0.5)
    h = rng.uniform(0.8, 1.1)
    w = rng.uniform(0.5, 0.7)
    while x < stop:
        length = rng.uniform(1.8, 2.2)
        parts = [("b", 0.0, 0.0, 0.0, length - 0.02, w, h, refl, 0.0)]
        b.add("barrier", x + length / 2, y, rng.normal(0, 0.02), (length, w, h), parts,
              base=0.0, margin=0.01)
        x += length + rng.uniform(0.0, 0.3)
    for _ in range(rng.integers(0, 6)):
        cx = rng.uniform(x - 30, x + 5)
        cy = y - side * rng.uniform(0.8, 2.0)
        parts = [("c", 0.0, 0.0, 0.0, 0.4, 0.18, 0.5, 0.0), ("c", 0.0, 0.0, 0.4, 0.72, 0.09, 0.5, 0.0)]
        b.add("cone", cx, cy, 0.0, (0.36, 0.36, 0.72), parts, base=0.0)


# -- labelled objects and traffic -----------------------------------------------------------


def _sample_dims(rng, name: str) -> tuple[float, float, float]:
    return tuple(float(rng.uniform(lo, hi)) for lo, hi in SIZE_RANGES[name])


def _vehicle(rng, b: _Builder, x: float, y: float, yaw: float, allow_large: bool) -> float:
    """Try to place a car (or, rarely, a truck/bus) centred at x; returns its length."""
    if allow_large and rng.random() < 0.06:
        dims = (rng.uniform(6, 12), rng.uniform(2.3, 2.6), rng.uniform(2.5, 3.6))
        b.add("large_vehicle", x, y, yaw, dims, _large_vehicle_parts(rng, *dims), base=0.0)
        return dims[0]
    dims = _sample_dims(rng, "car")
    b.add("car", x, y, yaw, dims, _car_parts(rng, *dims), base=0.0, label=LABEL_OF["car"])
    return dims[0]


def _add_traffic(rng, b: _Builder, cfg: SceneConfig) -> None:
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
                length = _vehicle(rng, b, x, y + rng.normal(0, 0.2), yaw, cfg.clutter)
                x += length + 1.5 + rng.exponential(gap)
        if lay.parking > 0:
            occupancy = rng.uniform(*cfg.parking_occupancy)
            y = lay.centre_y + side * (lay.half_road - lay.parking / 2)
            x = -ext + rng.uniform(0, 3)
            while x < ext:
                yaw = heading + (np.pi if rng.random() < 0.1 else 0.0) + rng.normal(0, 0.04)
                if rng.random() < occupancy:
                    length = _vehicle(rng, b, x, y + rng.normal(0, 0.1), yaw, cfg.clutter)
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
                    length = _vehicle(rng, b, xl + rng.normal(0, 0.2), y, yaw, cfg.clutter)
                    y += sign * (length + 1.5 + rng.exponential(gap))


def _add_pedestrians(rng, b: _Builder, cfg: SceneConfig) -> None:
    lay = b.layout
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
            x, y, _ = _sidewalk_spot(rng, b, cfg.extent)
            along = rng.random() < 0.6
            heading = (rng.choice([0.0, np.pi]) + rng.normal(0, 0.3) if along
                       else rng.uniform(-np.pi, np.pi))
        group = 1 + (rng.poisson(1.0) if rng.random() < 0.3 else 0)
        for g in range(group):
            gx = x + (rng.normal(0, 1.0) if g else 0.0)
            gy = y + (rng.normal(0, 0.5) if g else 0.0)
            dims = _sample_dims(rng, "pedestrian")
            yaw = heading + (rng.normal(0, 0.3) if g else 0.0)
            if b.add("pedestrian", gx, gy, yaw, dims, _pedestrian_parts(rng, *dims),
                     margin=0.1, label=LABEL_OF["pedestrian"]):
                placed += 1
                if placed >= n:
                    break


def _add_cyclists(rng, b: _Builder, cfg: SceneConfig) -> None:
    lay = b.layout
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
            x, y, _ = _sidewalk_spot(rng, b, cfg.extent)
            yaw = rng.choice([0.0, np.pi]) + rng.normal(0, 0.2)
        dims = _sample_dims(rng, "cyclist")
        if b.add("cyclist", x, y, yaw, dims, _cyclist_parts(rng, *dims), margin=0.2,
                 label=LABEL_OF["cyclist"]):
            placed += 1


# -- assembly ------------------------------------------------------------------------------


def _place_parts(parts, x: float, y: float, bottom: float, yaw: float, box_prims: list,
                 cyl_prims: list) -> None:
    """Append an object's parts as LiDAR-frame primitives (object pose x, y, bottom, yaw)."""
    c, s = np.cos(yaw), np.sin(yaw)
    for part in parts:
        px, py = x + c * part[1] - s * part[2], y + s * part[1] + c * part[2]
        if part[0] == "b":
            _, _, _, zb, pl, pw, ph, refl, drop = part
            box_prims.append((px, py, bottom + zb + ph / 2, pl, pw, ph, yaw, refl, drop))
        else:
            _, _, _, z0, z1, r, refl, drop = part
            cyl_prims.append((px, py, bottom + z0, bottom + z1, r, refl, drop))


def _finalise(b: _Builder, ground: Ground, seed, index) -> Scene:
    """Turn road-frame objects into LiDAR-frame label boxes and ray-castable primitives."""
    lay = b.layout
    c, s = np.cos(lay.yaw), np.sin(lay.yaw)
    boxes, labels, kinds, clutter = [], [], [], []
    box_prims, cyl_prims = [], []
    for obj in b.objects:
        x = c * obj["x"] - s * obj["y"]
        y = s * obj["x"] + c * obj["y"]
        yaw = obj["yaw"] + lay.yaw
        bottom = ground.z_at(x, y) + obj["base"]  # base: kerb height on sidewalks
        length, width, height = obj["dims"]
        box = (x, y, bottom + height / 2, length, width, height, _wrap(yaw))
        if obj["label"] >= 0:
            boxes.append(box)
            labels.append(obj["label"])
        else:
            kinds.append(obj["kind"])
            clutter.append(box)
        _place_parts(obj["parts"], x, y, bottom, yaw, box_prims, cyl_prims)
    return Scene(
        seed=seed,
        index=index,
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 7),
        labels=np.array(labels, dtype=np.int64),
        box_prims=np.array(box_prims, dtype=np.float64).reshape(-1, 9),
        cyl_prims=np.array(cyl_prims, dtype=np.float64).reshape(-1, 7),
        ground=ground,
        clutter_kinds=kinds,
        clutter_boxes=np.array(clutter, dtype=np.float32).reshape(-1, 7),
    )


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def scene_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The random stream for one sample: 0 builds the scene, 1 drives the sensor noise."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([int(seed), int(index), int(stream)])


def generate_scene(seed: int, index: int, config: SceneConfig | dict | None = None) -> Scene:
    """The street scene number ``index`` of world ``seed``; identical inputs, identical scene."""
    cfg = SceneConfig.from_dict(config)
    rng = scene_rng(seed, index, 0)
    layout = _sample_layout(rng, cfg)
    slope = rng.uniform(0, cfg.max_ground_slope)
    direction = rng.uniform(-np.pi, np.pi)
    ground = Ground(
        height=cfg.sensor_height,
        gx=float(slope * np.cos(direction)),
        gy=float(slope * np.sin(direction)),
        layout=layout,
        refl_road=float(rng.uniform(0.04, 0.1)),
        refl_sidewalk=float(rng.uniform(0.06, 0.15)),
        refl_verge=float(rng.uniform(0.04, 0.12)),
        refl_marking=float(rng.uniform(0.3, 0.6)),
    )
    b = _Builder(layout)
    if cfg.clutter:
        _add_structure(rng, b, cfg.extent)
        _add_roadworks(rng, b, cfg.extent)
    _add_traffic(rng, b, cfg)
    if cfg.clutter:
        _add_street_furniture(rng, b, cfg.extent)
    _add_pedestrians(rng, b, cfg)
    _add_cyclists(rng, b, cfg)
    return _finalise(b, ground, seed, index)


_RECIPES = {"car": _car_parts, "pedestrian": _pedestrian_parts, "cyclist": _cyclist_parts}


def custom_scene(
    objects: list[tuple[str, list[float]]],
    obstacles: list[list[float]] = (),
    sensor_height: float = 1.84,
    seed: int = 0,
) -> Scene:
    """A hand-made scene on flat open ground (for tests, notebooks and what-if studies).

    ``objects``: (class name, box (x, y, z, l, w, h, yaw)) pairs, built from the same part
    recipes as generated scenes (random details drawn from ``seed``); ``obstacles``: plain
    boxes (walls, say) that are not labelled.
    """
    rng = np.random.default_rng(seed)
    boxes, labels, box_prims, cyl_prims = [], [], [], []
    for name, box in objects:
        if name not in _RECIPES:
            raise ValueError(f"unknown class {name!r}; use one of {sorted(_RECIPES)}")
        x, y, z, length, width, height, yaw = (float(v) for v in box)
        boxes.append((x, y, z, length, width, height, yaw))
        labels.append(LABEL_OF[name])
        _place_parts(_RECIPES[name](rng, length, width, height), x, y, z - height / 2, yaw,
                     box_prims, cyl_prims)
    for box in obstacles:
        box_prims.append((*(float(v) for v in box), 0.2, 0.0))
    return Scene(
        seed=None,
        index=None,
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 7),
        labels=np.array(labels, dtype=np.int64),
        box_prims=np.array(box_prims, dtype=np.float64).reshape(-1, 9),
        cyl_prims=np.array(cyl_prims, dtype=np.float64).reshape(-1, 7),
        ground=Ground(height=sensor_height),
        clutter_kinds=["obstacle"] * len(obstacles),
        clutter_boxes=np.array(obstacles, dtype=np.float32).reshape(-1, 7),
    )
