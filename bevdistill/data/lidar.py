"""A ray-cast spinning LiDAR modelled on nuScenes' 32-beam top LiDAR (Velodyne HDL-32E).

Every beam (32 rings x ``n_azimuth`` steps) is cast from the sensor at the origin against the
ground and all primitives of a :class:`~bevdistill.data.scene.Scene`; the nearest hit wins, so
objects occlude what lies behind them. Each return then gets Gaussian range noise, an
intensity from the material's reflectivity and the angle of incidence (quantised to 0-255
like nuScenes), and may drop out (a base rate, plus more at grazing incidence, on dark or
glassy surfaces). Points come out as nuScenes stores them: float32 ``(x, y, z, intensity,
ring)``, ring 0 the lowest beam. Beams that hit nothing within ``max_range`` give no point
(the real .pcd.bin also keeps ego-body hits and no-return placeholders near the origin; the
realism test compares like with like).

Speed comes from broad-phase culling: the beams form a ring x azimuth grid, and each primitive
is only tested against the rectangular block of beams that its bounding cylinder can reach
(an azimuth sector from its bounding circle and a ring interval from its height), skipped when
everything in that block already hit something nearer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import Scene, settings_from_dict


@dataclass(frozen=True)
class LidarConfig:
    """Sensor model; defaults follow nuScenes' LIDAR_TOP (HDL-32E, 20 Hz, 1084 columns)."""

    n_rings: int = 32
    elevation_min_deg: float = -30.67
    elevation_max_deg: float = 10.67
    n_azimuth: int = 1084
    max_range: float = 70.0
    min_range: float = 1.0
    range_noise: float = 0.02  # metres, 1 sigma
    # Base probability that a return is lost. The real frame misses ~3% of its ground returns
    # at 5-10 m (rings 8-17 keep 1035-1076 of 1084 beams), so the base rate is low; losses
    # grow on dark, glassy or leafy surfaces (per material) and at grazing incidence.
    dropout: float = 0.03
    grazing_dropout: float = 0.6  # extra loss probability when cos(incidence) < grazing_cos
    grazing_cos: float = 0.035
    dark_dropout: float = 0.35  # extra loss probability for returns with raw intensity < 2
    intensity_noise: float = 0.3  # log-normal sigma of the intensity
    incidence_power: float = 0.5  # intensity ~ 255 * reflectivity * cos(incidence) ** power
    # The ego car's roof under the sensor, an ellipse (x_back, x_front, half_width, z_top) in the
    # LiDAR frame (x forward): it hides the lowest rings in most directions. Fitted to the real
    # frame, whose rings 0-8 lose about 82, 71, 60, 52, 48, 39, 31, 15, 5% of their beams to
    # self-hits at z ~ -0.35 m. Its returns are not emitted (the nuScenes files keep them, at
    # < 1.5 m, where pipelines remove them). None: no roof.
    ego_roof: tuple[float, float, float, float] | None = (-1.0, 0.9, 0.58, -0.35)

    def __post_init__(self):
        if self.n_rings < 1 or self.n_azimuth < 1:
            raise ValueError(f"n_rings and n_azimuth must be >= 1, got {self.n_rings}, "
                             f"{self.n_azimuth}")
        if not 0 <= self.min_range < self.max_range:
            raise ValueError(f"need 0 <= min_range < max_range, got {self.min_range}, "
                             f"{self.max_range}")
        if self.elevation_min_deg >= self.elevation_max_deg:
            raise ValueError("elevation_min_deg must be below elevation_max_deg")
        for name in ("dropout", "grazing_dropout", "dark_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if self.ego_roof is not None and len(self.ego_roof) != 4:
            raise ValueError("ego_roof is (x_back, x_front, half_width, z_top) or None, got "
                             f"{self.ego_roof}")

    @classmethod
    def from_dict(cls, cfg: dict | LidarConfig | None) -> LidarConfig:
        """Build from a (possibly partial) dict, as mmengine configs pass it."""
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        cfg = settings_from_dict(cls, cfg, "LiDAR")
        if cfg.get("ego_roof") is not None:
            cfg["ego_roof"] = tuple(float(v) for v in cfg["ego_roof"])
        return cls(**cfg)

    def elevations(self) -> np.ndarray:
        """Ring elevations in radians, ascending (ring 0 is the lowest beam, as nuScenes)."""
        return np.radians(
            np.linspace(self.elevation_min_deg, self.elevation_max_deg, self.n_rings)
        )


class _Grid:
    """Per-ray state on a [column, row] grid of unit rays from the origin (the LiDAR's
    [azimuth, ring], a camera's [u, v]): nearest hit, cos(incidence), reflectivity, dropout,
    and which primitive was hit (``prim``: its row in ``Scene.prim_ids()``, boxes first, then
    cylinders; -1: the ground or nothing)."""

    def __init__(self, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray):
        self.dx, self.dy, self.dz = dx, dy, dz
        shape = dx.shape
        self.t = np.full(shape, np.inf)
        self.cos = np.ones(shape)
        self.refl = np.zeros(shape)
        self.drop = np.zeros(shape)
        self.prim = np.full(shape, -1, dtype=np.int64)

    def update(self, cols: slice, rows: slice, t: np.ndarray, cos, refl, drop, prim: int) -> None:
        """Keep the new hits ``t`` (inf = miss) that are nearer than the current ones."""
        cur = self.t[cols, rows]
        better = t < cur
        if not better.any():
            return
        cur[better] = t[better]
        self.cos[cols, rows][better] = cos[better]
        self.refl[cols, rows][better] = refl
        self.drop[cols, rows][better] = drop
        self.prim[cols, rows][better] = prim


def _column_slices(lo: int, hi: int, width: int) -> list[slice]:
    """Slices covering azimuth columns lo..hi (inclusive, may wrap around)."""
    n = hi - lo + 1
    if n >= width:
        return [slice(0, width)]
    a = lo % width
    if a + n <= width:
        return [slice(a, a + n)]
    return [slice(a, width), slice(0, a + n - width)]


def _cast_box(g: _Grid, prim: np.ndarray, rows: slice, cols: list, dmin: float, k: int):
    cx, cy, cz, length, width, height, yaw, refl, drop = prim
    c, s = np.cos(yaw), np.sin(yaw)
    # Sensor position in the box frame (the sensor is the origin of the LiDAR frame).
    o = (-(c * cx + s * cy), -(-s * cx + c * cy), -cz)
    half = (length / 2, width / 2, height / 2)
    for col in cols:
        if dmin > 2.0 and g.t[col, rows].max() < dmin:
            continue  # everything in this block already hit something nearer
        dx, dy, dz = g.dx[col, rows], g.dy[col, rows], g.dz[col, rows]
        local = (c * dx + s * dy, -s * dx + c * dy, dz)
        with np.errstate(divide="ignore", invalid="ignore"):
            near = far = cos = None
            for axis in range(3):
                inv = 1.0 / local[axis]
                t1 = (-half[axis] - o[axis]) * inv
                t2 = (half[axis] - o[axis]) * inv
                tmin = np.minimum(t1, t2)
                tmax = np.maximum(t1, t2)
                if near is None:
                    near, far, cos = tmin, tmax, np.abs(local[axis])
                else:
                    # The entry face is the slab entered last; its normal is this axis.
                    cos = np.where(tmin > near, np.abs(local[axis]), cos)
                    near = np.maximum(near, tmin)
                    far = np.minimum(far, tmax)
        t = np.where((near <= far) & (near > 0), near, np.inf)
        g.update(col, rows, t, cos, refl, drop, k)


def _cast_cylinder(g: _Grid, prim: np.ndarray, rows: slice, cols: list, dmin: float, k: int):
    cx, cy, z0, z1, radius, refl, drop = prim
    c2 = cx * cx + cy * cy - radius * radius
    for col in cols:
        if dmin > 2.0 and g.t[col, rows].max() < dmin:
            continue
        dx, dy, dz = g.dx[col, rows], g.dy[col, rows], g.dz[col, rows]
        a = dx * dx + dy * dy
        b = dx * cx + dy * cy  # the quadratic is a t^2 - 2 b t + c2 = 0
        disc = b * b - a * c2
        with np.errstate(invalid="ignore", divide="ignore"):
            t_side = (b - np.sqrt(disc)) / a
            z_side = t_side * dz
            side_ok = (disc >= 0) & (t_side > 0) & (z_side >= z0) & (z_side <= z1)
            t = np.where(side_ok, t_side, np.inf)
            # The side normal is horizontal: cos = |d . (p - c)| / r at the hit point.
            cos = np.abs(t_side * a - b) / radius
            for zc in (z0, z1):  # caps: tops of bins and bushes, undersides of crowns
                t_cap = zc / dz
                qx = t_cap * dx - cx
                qy = t_cap * dy - cy
                cap_ok = (t_cap > 0) & (qx * qx + qy * qy <= radius * radius) & (t_cap < t)
                t = np.where(cap_ok, t_cap, t)
                cos = np.where(cap_ok, np.abs(dz), cos)
        g.update(col, rows, t, cos, refl, drop, k)


def bounding_cylinders(box_prims: np.ndarray, cyl_prims: np.ndarray):
    """Vertical bounding cylinders (cx, cy, radius, z0, z1) of all primitives, boxes first."""
    bp, cp = box_prims, cyl_prims
    cx = np.concatenate([bp[:, 0], cp[:, 0]])
    cy = np.concatenate([bp[:, 1], cp[:, 1]])
    radius = np.concatenate([0.5 * np.hypot(bp[:, 3], bp[:, 4]), cp[:, 4]])
    z0 = np.concatenate([bp[:, 2] - bp[:, 5] / 2, cp[:, 2]])
    z1 = np.concatenate([bp[:, 2] + bp[:, 5] / 2, cp[:, 3]])
    return cx, cy, radius, z0, z1


def cast_blocks(g: _Grid, box_prims: np.ndarray, cyl_prims: np.ndarray, blocks) -> None:
    """The narrow phase shared by every sensor: ray-cast primitive k against the rays in its
    block, for each ``(k, rows, column_slices, dmin)`` of ``blocks`` (nearest first, so that
    occluded primitives are skipped). Rays start at the origin of the primitives' frame."""
    n_box = box_prims.shape[0]
    for k, rows, cols, dmin in blocks:
        if k < n_box:
            _cast_box(g, box_prims[k], rows, cols, dmin, k)
        else:
            _cast_cylinder(g, cyl_prims[k - n_box], rows, cols, dmin, k)


class LidarSimulator:
    """Casts a scan of a :class:`Scene`; reusable across scenes."""

    def __init__(self, config: LidarConfig | dict | None = None):
        self.config = LidarConfig.from_dict(config)
        self._elev = self.config.elevations()
        self._step = 2 * np.pi / self.config.n_azimuth

    # -- broad phase --------------------------------------------------------------------
    def _blocks(self, cx, cy, radius, z0, z1, phase: float, far: float):
        """For bounding cylinders: ring ranges, azimuth column ranges and nearest distance.

        Returns (r0, r1, c0, c1, dmin, reachable); rings r0:r1 and columns c0..c1 (inclusive,
        wrapping) hold every beam that can touch the cylinder.
        """
        d = np.hypot(cx, cy)
        dmin = np.maximum(d - radius, 0.0)
        dmax = d + radius
        lo_el = np.arctan2(z0, np.where(z0 < 0, dmin, dmax))
        hi_el = np.arctan2(z1, np.where(z1 < 0, dmax, dmin))
        r0 = np.searchsorted(self._elev, lo_el, side="left")
        r1 = np.searchsorted(self._elev, hi_el, side="right")
        centre = np.arctan2(cy, cx)
        with np.errstate(divide="ignore", invalid="ignore"):
            half = np.where(d > radius, np.arcsin(np.clip(radius / d, 0.0, 1.0)), np.pi)
        c0 = np.ceil((centre - half - phase) / self._step).astype(np.int64) - 1
        c1 = np.floor((centre + half - phase) / self._step).astype(np.int64) + 1
        reachable = (dmin <= far) & (r1 > r0)
        return r0, r1, c0, c1, dmin, reachable

    # -- narrow phase -------------------------------------------------------------------
    def _cast_primitives(self, g: _Grid, scene: Scene, phase: float, far: float) -> None:
        """Narrow-phase tests, nearest primitives first so that occluded ones are skipped."""
        bounds = bounding_cylinders(scene.box_prims, scene.cyl_prims)
        r0, r1, c0, c1, dmin, reachable = self._blocks(*bounds, phase, far)
        width = self.config.n_azimuth
        order = np.flatnonzero(reachable)[np.argsort(dmin[reachable], kind="stable")]
        cast_blocks(g, scene.box_prims, scene.cyl_prims, (
            (k, slice(int(r0[k]), int(r1[k])), _column_slices(int(c0[k]), int(c1[k]), width),
             float(dmin[k])) for k in order))

    # -- full scan ----------------------------------------------------------------------
    def scan(self, scene: Scene, rng: np.random.Generator, return_hits: bool = False):
        """Simulate one sweep of ``scene``; returns float32 ``[N, 5]`` (x, y, z, intensity, ring).

        ``return_hits=True`` returns ``(points, hits)`` instead, ``hits`` int64 ``[N]`` the row
        of ``scene.prim_ids()`` (boxes first, then cylinders) each point's beam hit, -1 for the
        ground; ``scene.prim_ids()[hits]`` gives each point's class label, part id and object.
        The points are the same either way.
        """
        cfg = self.config
        phase = float(rng.uniform(0.0, self._step))  # where this sweep's first column points
        az = phase + self._step * np.arange(cfg.n_azimuth)
        ce, se = np.cos(self._elev), np.sin(self._elev)
        # Beams on an [azimuth, ring] grid: raveled, that is nuScenes' order (column by column).
        dx = np.cos(az)[:, None] * ce[None, :]
        dy = np.sin(az)[:, None] * ce[None, :]
        dz = np.broadcast_to(se[None, :], dx.shape)
        g = _Grid(dx, dy, dz)
        g.t[...], g.cos[...], g.refl[...] = scene.ground.cast(dx, dy, dz)
        if cfg.ego_roof is not None:
            x_back, x_front, half_width, z_top = cfg.ego_roof
            down = dz < 0
            t_roof = z_top / np.where(down, dz, -1.0)
            rx = (t_roof * dx - (x_back + x_front) / 2) / ((x_front - x_back) / 2)
            ry = t_roof * dy / half_width
            g.t[down & (rx * rx + ry * ry <= 1.0)] = -1.0  # self-hit: no point
        self._cast_primitives(g, scene, phase, cfg.max_range + 4 * cfg.range_noise)

        t = g.t.ravel()
        hit = np.flatnonzero((t > 0) & (t <= cfg.max_range + 4 * cfg.range_noise))
        n = hit.shape[0]
        t = t[hit] + rng.normal(0.0, cfg.range_noise, n)
        cos = np.clip(g.cos.ravel()[hit], 0.0, 1.0)
        raw = (255.0 * g.refl.ravel()[hit] * cos**cfg.incidence_power
               * rng.lognormal(0.0, cfg.intensity_noise, n))
        p_drop = (cfg.dropout + g.drop.ravel()[hit] + cfg.grazing_dropout * (cos < cfg.grazing_cos)
                  + cfg.dark_dropout * (raw < 2.0))
        keep = (rng.random(n) >= p_drop) & (t >= cfg.min_range) & (t <= cfg.max_range)
        beam = hit[keep]
        t = t[keep]
        out = np.empty((beam.shape[0], 5), dtype=np.float32)
        out[:, 0] = t * dx.ravel()[beam]
        out[:, 1] = t * dy.ravel()[beam]
        out[:, 2] = t * dz.ravel()[beam]
        out[:, 3] = np.clip(np.rint(raw[keep]), 0, 255)
        out[:, 4] = beam % cfg.n_rings
        if return_hits:
            return out, g.prim.ravel()[beam]
        return out
