"""Six surround cameras in the synthetic world, rendered by the LiDAR's own ray caster.

The rig copies nuScenes' (positions, headings and focal lengths of the real frame's six
cameras, rounded), scaled down from 1600 x 900 to a small image whose top is cropped as
BEVFusion crops it (mostly sky). Every pixel is one ray from the camera's centre, cast by
:func:`bevdistill.data.lidar.cast_blocks` against the same scene (the ground, every box and
cylinder), so what a camera sees and what the LiDAR scans agree in geometry and occlusion: the
cameras only add a broad phase of their own (each primitive's projected rectangle).

A pixel's colour is the albedo of what its ray hit, by the part's name and what it belongs to
(``Scene.prim_ids``, the record a LiDAR hit reads too): car paint, tinted glass and
windscreens, tyres, head and hair, shoes, backpacks, clothes, bicycle frames and handlebars,
facades with windows, foliage, cones, road, markings, sidewalk tiles, grass; Lambertian
shading from the hit normal under a sun drawn per scene, and distance haze; sky where nothing
is hit. So an image carries what a sparse scan does not: colour, texture, head lights and
tail lights (which end is the front), and small or far objects that the LiDAR catches with only
a few points. Car paint brightness follows the paint's LiDAR reflectivity (a dark car is dark
in both).

Calibration comes in nuScenes v1.1 form (``cam2img`` 3 x 3, ``lidar2cam``, ``cam2ego`` and
``lidar2ego`` 4 x 4). The synthetic LiDAR frame has x forward like the ego frame, so
``lidar2ego`` is a translation (the real frame's LiDAR offset, at the sensor height).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classes import NUM_CLASSES
from .lidar import _Grid, bounding_cylinders, cast_blocks
from .parts import INSET, PART_NAMES
from .scene import Scene, scene_rng, settings_from_dict

NUSCENES_IMAGE_SIZE = (1600, 900)  # (width, height) of nuScenes' camera images
CAMERA_NAMES: tuple[str, ...] = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK",
                                 "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
# Per camera (ego x, y, z in metres, heading in degrees from +x towards +y, focal length in
# pixels at 1600 x 900), rounded from the real frame's cam2ego and cam2img. CAM_BACK has the
# wide lens.
NUSCENES_RIG: dict[str, tuple[float, float, float, float, float]] = {
    "CAM_FRONT": (1.70, 0.02, 1.51, 0.0, 1266.0),
    "CAM_FRONT_RIGHT": (1.55, -0.49, 1.50, -56.0, 1261.0),
    "CAM_FRONT_LEFT": (1.52, 0.50, 1.51, 55.0, 1273.0),
    "CAM_BACK": (0.03, 0.00, 1.58, 180.0, 809.0),
    "CAM_BACK_LEFT": (1.04, 0.49, 1.59, 109.0, 1257.0),
    "CAM_BACK_RIGHT": (1.02, -0.48, 1.56, -111.0, 1260.0),
}
LIDAR_IN_EGO = (0.944, 0.0)  # LIDAR_TOP's x, y in the ego frame (the real frame's lidar2ego)
_CAMERA_STREAM = 3  # random stream of the cameras (0: scene, 1, 2: LiDAR scans)


@dataclass(frozen=True)
class CameraConfig:
    """Image size and appearance. The default, 96 x 48 per camera (nuScenes' frame scaled by
    0.06, the top 6 rows of sky cropped), is 27.6 k rays for six cameras, fewer than one
    32-beam scan (34.7 k): rendering costs about what scanning does (benchmarks.camera_speed),
    and in the front camera (focal length 76 px) a car at 30 m is still about 4 px tall and up
    to 11 px long, a pedestrian at 20 m 6 px tall."""

    width: int = 96
    height: int = 48  # rows kept from the bottom of the scaled 16:9 frame
    max_depth: float = 100.0  # primitives beyond are not drawn (haze has hidden them)
    haze_distance: float = 120.0  # a hit at distance t keeps exp(-t / haze_distance) of its colour
    ambient: float = 0.35  # light in the shade, as a fraction of full sun
    noise: float = 0.01  # sensor noise, one sigma, on the 0..1 scale

    def __post_init__(self):
        full_height = self.full_height
        if self.width < 8 or not 1 <= self.height <= full_height:
            raise ValueError(
                f"camera width must be >= 8 and height in [1, {full_height}] (the 16:9 frame at "
                f"width {self.width}), got {self.width} x {self.height}")
        if self.max_depth <= 0 or self.haze_distance <= 0 or not 0 <= self.ambient <= 1:
            raise ValueError("max_depth and haze_distance must be > 0 and ambient in [0, 1]")

    @property
    def scale(self) -> float:
        """Image width over nuScenes' 1600 px."""
        return self.width / NUSCENES_IMAGE_SIZE[0]

    @property
    def full_height(self) -> int:
        return int(round(NUSCENES_IMAGE_SIZE[1] * self.width / NUSCENES_IMAGE_SIZE[0]))

    @classmethod
    def from_dict(cls, cfg: dict | CameraConfig | bool | None) -> CameraConfig:
        """``True`` or None: defaults; a (possibly partial) dict: overrides."""
        if cfg is None or cfg is True:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        if not isinstance(cfg, dict):
            raise TypeError(f"cameras must be True, a dict of CameraConfig fields or a "
                            f"CameraConfig, got {type(cfg).__name__}")
        return cls(**settings_from_dict(cls, cfg, "camera"))


def _pose(x: float, y: float, z: float, heading_deg: float) -> np.ndarray:
    """cam2ego of a level camera looking along ``heading`` (camera x right, y down, z forward)."""
    h = np.radians(heading_deg)
    forward = np.array([np.cos(h), np.sin(h), 0.0])
    right = np.array([np.sin(h), -np.cos(h), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = (x, y, z)
    return pose


def project(points: np.ndarray, cam2img: np.ndarray,
            lidar2cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``[N, 2]`` (u, v; pixel i spans [i, i+1)) and depth ``[N]`` (metres
    along the optical axis) of LiDAR-frame points ``[N, >=3]`` in one camera of calibration
    ``cam2img`` [3, 3] and ``lidar2cam`` [4, 4]: a rig's, or a real frame's."""
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    lidar2cam = np.asarray(lidar2cam, dtype=np.float64)
    cam = xyz @ lidar2cam[:3, :3].T + lidar2cam[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam @ np.asarray(cam2img, dtype=np.float64).T)[:, :2] / cam[:, 2:3]
    return uv, cam[:, 2]


class CameraRig:
    """The six cameras: calibration, and :meth:`render` of a :class:`Scene`.

    ``sensor_height`` places the LiDAR above the ego frame's ground (the scene's
    ``sensor_height``), which places the cameras in the LiDAR frame.
    """

    def __init__(self, config: CameraConfig | dict | bool | None = None,
                 sensor_height: float = 1.84):
        self.config = cfg = CameraConfig.from_dict(config)
        self.names = CAMERA_NAMES
        s, crop = cfg.scale, cfg.full_height - cfg.height
        self.lidar2ego = np.eye(4)
        self.lidar2ego[:3, 3] = (*LIDAR_IN_EGO, float(sensor_height))
        self.cam2ego = np.stack([_pose(*NUSCENES_RIG[n][:4]) for n in self.names])
        self.cam2img = np.zeros((len(self.names), 3, 3))
        for i, name in enumerate(self.names):
            f = NUSCENES_RIG[name][4] * s
            self.cam2img[i] = ((f, 0, NUSCENES_IMAGE_SIZE[0] / 2 * s),
                               (0, f, NUSCENES_IMAGE_SIZE[1] / 2 * s - crop), (0, 0, 1))
        self.lidar2cam = np.linalg.inv(self.cam2ego) @ self.lidar2ego
        # Unit rays through pixel centres, in the LiDAR frame, on [u, v] grids like the LiDAR's
        # [azimuth, ring]; and each camera's centre in the LiDAR frame.
        u, v = np.meshgrid(np.arange(cfg.width) + 0.5, np.arange(cfg.height) + 0.5, indexing="ij")
        pix = np.stack([u, v, np.ones_like(u)], axis=-1)
        cam2lidar = np.linalg.inv(self.lidar2cam)
        self.centres = cam2lidar[:, :3, 3]
        self.rays = []
        for i in range(len(self.names)):
            d = pix @ np.linalg.inv(self.cam2img[i]).T @ cam2lidar[i, :3, :3].T
            self.rays.append(d / np.linalg.norm(d, axis=-1, keepdims=True))

    def calibration(self) -> dict[str, np.ndarray]:
        """float32 ``cam2img`` [6, 3, 3], ``lidar2cam`` and ``cam2ego`` [6, 4, 4], ``lidar2ego``
        [4, 4], as the nuScenes v1.1 info gives them per camera."""
        return {"cam2img": self.cam2img.astype(np.float32),
                "lidar2cam": self.lidar2cam.astype(np.float32),
                "cam2ego": self.cam2ego.astype(np.float32),
                "lidar2ego": self.lidar2ego.astype(np.float32)}

    def project(self, points: np.ndarray, camera: int) -> tuple[np.ndarray, np.ndarray]:
        """:func:`project` through camera ``camera`` of this rig."""
        return project(points, self.cam2img[camera], self.lidar2cam[camera])

    # -- rendering ------------------------------------------------------------------------
    def _blocks(self, camera: int, box_prims, cyl_prims):
        """Broad phase: each primitive's projected bounding rectangle, nearest first."""
        cfg = self.config
        cx, cy, radius, z0, z1 = bounding_cylinders(box_prims, cyl_prims)
        corners = np.stack(np.broadcast_arrays(
            cx[:, None] + radius[:, None] * np.array([-1, -1, 1, 1, -1, -1, 1, 1]),
            cy[:, None] + radius[:, None] * np.array([-1, 1, -1, 1, -1, 1, -1, 1]),
            np.where(np.arange(8) < 4, z0[:, None], z1[:, None])), axis=-1)  # [K, 8, 3]
        cam = corners @ self.lidar2cam[camera, :3, :3].T  # the camera is the frame's origin
        depth = cam[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (cam @ self.cam2img[camera].T)[..., :2] / depth[..., None]
        behind = (depth <= 0.05).any(axis=1)  # then the rectangle is the whole image
        u0 = np.where(behind, 0, np.floor(np.nan_to_num(uv[..., 0].min(1), nan=0.0)))
        u1 = np.where(behind, cfg.width, np.ceil(np.nan_to_num(uv[..., 0].max(1), nan=0.0)))
        v0 = np.where(behind, 0, np.floor(np.nan_to_num(uv[..., 1].min(1), nan=0.0)))
        v1 = np.where(behind, cfg.height, np.ceil(np.nan_to_num(uv[..., 1].max(1), nan=0.0)))
        u0, v0 = np.clip(u0, 0, cfg.width).astype(int), np.clip(v0, 0, cfg.height).astype(int)
        u1, v1 = np.clip(u1, 0, cfg.width).astype(int), np.clip(v1, 0, cfg.height).astype(int)
        dmin = np.maximum(np.hypot(cx, cy) - radius, 0.0)
        seen = (depth > 0.05).any(axis=1) & (u1 > u0) & (v1 > v0) & (dmin <= cfg.max_depth)
        order = np.flatnonzero(seen)[np.argsort(dmin[seen], kind="stable")]
        return [(k, slice(v0[k], v1[k]), [slice(u0[k], u1[k])], float(dmin[k])) for k in order]

    def cast(self, scene: Scene, camera: int) -> dict[str, np.ndarray]:
        """Ray-cast camera ``camera`` against ``scene``: per pixel [W, H], the distance ``t``
        along the unit ray (inf: sky), the primitive hit (-1: ground or sky) and the ground
        surface (:attr:`Ground.SURFACES` index, where the ground was hit)."""
        o = self.centres[camera]
        d = self.rays[camera]
        g = _Grid(d[..., 0], d[..., 1], d[..., 2])
        g.t[...], g.cos[...], surface = scene.ground.hit(g.dx, g.dy, g.dz, origin=o)
        bp = scene.box_prims.copy()
        bp[:, :3] -= o
        cp = scene.cyl_prims.copy()
        cp[:, :2] -= o[:2]
        cp[:, 2:4] -= o[2]
        cast_blocks(g, bp, cp, self._blocks(camera, bp, cp))
        return {"t": g.t, "prim": g.prim, "surface": surface, "box_prims": bp, "cyl_prims": cp}

    def render(self, scene: Scene, seed: int | None = None, index: int | None = None) -> dict:
        """Render all cameras. Returns ``imgs`` uint8 [6, 3, H, W] (RGB), ``depth`` float32
        [6, H, W] (along the optical axis; inf: sky) and ``prim`` int64 [6, H, W], the row of
        ``scene.prim_ids()`` (label, part id, object) each pixel's ray hit, -1 for the ground
        or the sky (as a LiDAR scan's ``return_hits``).

        Colours and noise are drawn from the scene's camera stream (``seed``, ``index``; the
        scene's own when None), so a render is deterministic.
        """
        ids = scene.prim_ids()  # raises, saying how to build a scene with them, if missing
        seed = scene.seed if seed is None else seed
        index = scene.index if index is None else index
        rng = scene_rng(seed or 0, index or 0, _CAMERA_STREAM)
        albedo, texture, lamps = _primitive_appearance(scene, ids, rng)
        sun = _sun(rng)
        cfg = self.config
        n, shape = len(self.names), (len(self.names), cfg.height, cfg.width)
        imgs = np.empty((*shape, 3))
        depth = np.empty(shape, dtype=np.float32)
        prim = np.empty(shape, dtype=np.int64)
        for c in range(n):
            hit = self.cast(scene, c)
            rgb = _shade(hit, self.rays[c], self.centres[c], scene, albedo, texture, lamps, sun,
                         cfg)
            axis = self.cam2ego[c, :3, 2] @ self.lidar2ego[:3, :3]  # optical axis, LiDAR frame
            depth[c] = (hit["t"] * (self.rays[c] @ axis)).T
            imgs[c], prim[c] = rgb.transpose(1, 0, 2), hit["prim"].T
        imgs += rng.normal(0.0, cfg.noise, imgs.shape)
        out = np.clip(np.rint(imgs * 255.0), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
        return {"imgs": np.ascontiguousarray(out), "depth": depth, "prim": prim}


# -- appearance ------------------------------------------------------------------------------
def _rgb(*colours) -> np.ndarray:
    return np.array(colours, dtype=np.float64)


PAINT = {  # car paint by the LiDAR reflectivity class of the recipe (dark, mid, bright)
    "dark": _rgb((0.05, 0.05, 0.06), (0.06, 0.09, 0.22), (0.2, 0.04, 0.04), (0.06, 0.16, 0.08)),
    "mid": _rgb((0.62, 0.08, 0.07), (0.1, 0.22, 0.55), (0.35, 0.36, 0.38), (0.15, 0.4, 0.2),
                (0.5, 0.35, 0.15)),
    "bright": _rgb((0.88, 0.88, 0.86), (0.68, 0.7, 0.72), (0.85, 0.75, 0.2), (0.9, 0.45, 0.1)),
}
SHIRT = _rgb((0.8, 0.1, 0.1), (0.1, 0.3, 0.75), (0.95, 0.85, 0.2), (0.2, 0.6, 0.25),
             (0.9, 0.9, 0.9), (0.12, 0.12, 0.12), (0.85, 0.4, 0.6), (0.95, 0.5, 0.1))
TROUSERS = _rgb((0.1, 0.12, 0.25), (0.08, 0.08, 0.08), (0.55, 0.48, 0.35), (0.3, 0.3, 0.32))
SKIN = _rgb((0.92, 0.76, 0.64), (0.78, 0.58, 0.44), (0.55, 0.38, 0.26), (0.34, 0.23, 0.16))
BIKE = _rgb((0.9, 0.15, 0.1), (0.1, 0.45, 0.9), (0.95, 0.95, 0.95), (0.2, 0.8, 0.3),
            (0.95, 0.8, 0.1))
FACADE = _rgb((0.55, 0.28, 0.2), (0.78, 0.7, 0.55), (0.6, 0.6, 0.6), (0.86, 0.84, 0.78),
              (0.45, 0.35, 0.28))
BUS = _rgb((0.9, 0.9, 0.88), (0.85, 0.7, 0.1), (0.15, 0.3, 0.6), (0.7, 0.12, 0.1))
SIGN = _rgb((0.1, 0.25, 0.7), (0.8, 0.1, 0.1), (0.92, 0.92, 0.92))
GREENS = _rgb((0.16, 0.36, 0.12), (0.22, 0.42, 0.14), (0.12, 0.28, 0.1))
GROUND_ALBEDO = _rgb((0.2, 0.2, 0.22), (0.24, 0.38, 0.14), (0.6, 0.58, 0.55), (0.92, 0.92, 0.88))
TYRE, GLASS, HAIR = _rgb(0.05, 0.05, 0.05), _rgb(0.07, 0.09, 0.13), _rgb(0.12, 0.08, 0.05)
SKY_HORIZON, SKY_ZENITH = _rgb(0.75, 0.82, 0.9), _rgb(0.35, 0.55, 0.88)
SHOES = _rgb((0.08, 0.08, 0.08), (0.35, 0.22, 0.12), (0.85, 0.85, 0.85), (0.15, 0.15, 0.3))
BAG = _rgb((0.1, 0.1, 0.1), (0.15, 0.25, 0.5), (0.55, 0.12, 0.1), (0.3, 0.35, 0.2),
           (0.9, 0.6, 0.1))

# Textures: painted per pixel from where the ray hit the primitive.
PLAIN, NOISE, WINDOWS, CAR_BODY, CABIN, HEAD, STRIPES = range(7)

# A part's role (its colour and texture) by its name (``PART_NAMES``), the same in world 1
# and 2 and for clutter; ``KIND_ROLES`` where one name means another look on another kind.
PART_ROLES: dict[str, str] = {
    "unnamed": "concrete", "body": "paint", "bonnet": "paint", "mirror": "paint",
    "cabin": "cabin", "windscreen": "glass", "wheel": "tyre", "leg": "trousers",
    "foot": "shoes", "torso": "shirt", "arm": "shirt", "head": "head", "backpack": "bag",
    "frame": "frame", "handlebar": "metal", "wall": "facade", "hedge": "foliage",
    "fence": "fence", "trunk": "trunk", "crown": "foliage", "post": "metal",
    "lamp_arm": "metal", "plate": "sign", "barrier": "barrier", "cone": "cone",
    "cone_top": "cone_band", "bin": "bin", "bollard": "bollard", "seat": "wood",
    "backrest": "wood", "cabinet": "cabinet",
}
KIND_ROLES: dict[tuple[str, str], str] = {
    ("cyclist", "head"): "helmet", ("large_vehicle", "body"): "bus",
}
LAMP_REACH = 2 * INSET + 0.05  # a paint face this near its car's end carries its lamps


def part_role(kind: str, part: str) -> str:
    """The role (a key of :func:`_role_colour`'s table) of part ``part`` of a ``kind``."""
    role = KIND_ROLES.get((kind, part), PART_ROLES.get(part))
    if role is None:
        raise KeyError(f"no camera appearance for part {part!r} (of a {kind}): add it to "
                       "bevdistill.data.camera.PART_ROLES")
    return role


def _role_colour(role: str, u: np.ndarray, refl: float) -> tuple[np.ndarray, int]:
    """Albedo and texture of a part, from four per-object uniforms ``u`` and its reflectivity."""
    def pick(palette, x):
        return palette[int(x * len(palette)) % len(palette)]

    if role in ("paint", "cabin"):
        shade = "dark" if refl < 0.09 else "mid" if refl < 0.25 else "bright"
        if role == "cabin":  # the cabin's reflectivity is 0.6 x the body's paint
            shade = "dark" if refl < 0.054 else "mid" if refl < 0.15 else "bright"
        return pick(PAINT[shade], u[0]), CAR_BODY if role == "paint" else CABIN
    table = {
        "tyre": (TYRE, PLAIN), "glass": (GLASS, PLAIN), "shirt": (pick(SHIRT, u[0]), PLAIN),
        "trousers": (pick(TROUSERS, u[1]), PLAIN), "head": (pick(SKIN, u[2]), HEAD),
        "shoes": (pick(SHOES, u[1]), PLAIN), "bag": (pick(BAG, u[2]), PLAIN),
        "frame": (pick(BIKE, u[3]), PLAIN), "helmet": (pick(BIKE, u[2]), PLAIN),
        "facade": (pick(FACADE, u[0]), WINDOWS), "foliage": (pick(GREENS, u[1]), NOISE),
        "fence": (_rgb(0.4, 0.38, 0.35), NOISE), "trunk": (_rgb(0.3, 0.22, 0.14), NOISE),
        "metal": (_rgb(0.42, 0.43, 0.45), PLAIN), "sign": (pick(SIGN, u[0]), PLAIN),
        "barrier": (_rgb(0.85, 0.1, 0.08), STRIPES), "cone": (_rgb(0.95, 0.42, 0.05), PLAIN),
        "cone_band": (_rgb(0.95, 0.42, 0.05), STRIPES), "bin": (_rgb(0.12, 0.26, 0.16), PLAIN),
        "bollard": (_rgb(0.2, 0.2, 0.21), PLAIN), "wood": (_rgb(0.45, 0.3, 0.16), NOISE),
        "cabinet": (_rgb(0.45, 0.5, 0.46), PLAIN), "bus": (pick(BUS, u[0]), WINDOWS),
        "concrete": (_rgb(0.55, 0.55, 0.55), NOISE),
    }
    return table[role]


def _primitive_appearance(scene: Scene, ids: np.ndarray, rng):
    """Per primitive (boxes, then cylinders): albedo [K, 3], texture code [K] and where a
    car's paint carries lamps [K, 2] (head lights on its front face, tail lights on its back:
    the faces at its label box's ends, so world 2's bonnet and body split them)."""
    n_obj = int(ids[:, 2].max()) + 1 if len(ids) else 1
    # Per object (its label + 1, 0 for clutter; its row): its colours and tint.
    uniforms = rng.random((NUM_CLASSES + 1, n_obj, 4))
    refl = np.concatenate([scene.box_prims[:, 7], scene.cyl_prims[:, 5]])
    albedo = np.empty((len(ids), 3))
    texture = np.empty(len(ids), dtype=np.int64)
    for k, (kind, (label, part, obj)) in enumerate(zip(scene.prim_kinds(), ids, strict=True)):
        u = uniforms[label + 1, obj]
        colour, texture[k] = _role_colour(part_role(kind, PART_NAMES[part]), u, refl[k])
        albedo[k] = colour * (0.9 + 0.2 * u[3])
    lamps = np.zeros((len(ids), 2), dtype=bool)
    n_box = len(scene.box_prims)
    paint = np.flatnonzero((texture[:n_box] == CAR_BODY) & (ids[:n_box, 0] >= 0))
    if len(paint):
        bp, box = scene.box_prims[paint], scene.boxes[ids[paint, 2]].astype(np.float64)
        along = (bp[:, 0] - box[:, 0]) * np.cos(box[:, 6]) + (bp[:, 1] - box[:, 1]) * np.sin(box[:, 6])
        lamps[paint, 0] = along + bp[:, 3] / 2 > box[:, 3] / 2 - LAMP_REACH
        lamps[paint, 1] = along - bp[:, 3] / 2 < -box[:, 3] / 2 + LAMP_REACH
    return np.clip(albedo, 0.0, 1.0), texture, lamps


def _sun(rng) -> np.ndarray:
    """Unit vector towards the sun: any azimuth, 25-65 degrees above the horizon."""
    az, el = rng.uniform(-np.pi, np.pi), np.radians(rng.uniform(25.0, 65.0))
    return np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])


def _hash(*coords: np.ndarray) -> np.ndarray:
    """A cheap deterministic value in [0, 1) per integer lattice cell."""
    x = sum(np.asarray(c, dtype=np.float64) * k for c, k in zip(coords, (12.9898, 78.233, 37.719)[:len(coords)], strict=True))
    return np.modf(np.abs(np.sin(x)) * 43758.5453)[0]


def _box_surface(p: np.ndarray, prims: np.ndarray):
    """Hit points ``p`` [N, 3] on boxes ``prims`` [N, 9]: outward normal, box-frame point
    (from the centre), the face's axis (0 front/back, 1 sides, 2 top/bottom) and sign."""
    c, s = np.cos(prims[:, 6]), np.sin(prims[:, 6])
    q = p - prims[:, :3]
    local = np.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1], q[:, 2]], axis=1)
    ratio = np.abs(local) / (prims[:, 3:6] / 2)
    axis = np.argmax(ratio, axis=1)
    sign = np.sign(local[np.arange(len(p)), axis])
    n_local = np.zeros_like(local)
    n_local[np.arange(len(p)), axis] = sign
    normal = np.stack([c * n_local[:, 0] - s * n_local[:, 1],
                       s * n_local[:, 0] + c * n_local[:, 1], n_local[:, 2]], axis=1)
    return normal, local, axis, sign


def _cyl_surface(p: np.ndarray, prims: np.ndarray):
    """Hit points on vertical cylinders [N, 7]: outward normal, height above the bottom and
    whether a cap (top or bottom) was hit."""
    qx, qy = p[:, 0] - prims[:, 0], p[:, 1] - prims[:, 1]
    top, bottom = np.abs(p[:, 2] - prims[:, 3]) < 1e-6, np.abs(p[:, 2] - prims[:, 2]) < 1e-6
    r = np.maximum(np.hypot(qx, qy), 1e-9)
    normal = np.stack([qx / r, qy / r, np.zeros_like(r)], axis=1)
    normal[top] = (0.0, 0.0, 1.0)
    normal[bottom] = (0.0, 0.0, -1.0)
    return normal, p[:, 2] - prims[:, 2], top | bottom


def _shade(hit: dict, rays, origin, scene: Scene, albedo, texture, lamps, sun, cfg):
    """Colours [W, H, 3] of one camera's cast."""
    t, prim = hit["t"], hit["prim"]
    bp, cp = hit["box_prims"], hit["cyl_prims"]
    n_box = len(bp)
    finite = np.isfinite(t) & (t > 0)
    rgb = np.empty((*t.shape, 3))
    normal = np.zeros((*t.shape, 3))
    p = np.where(finite[..., None], t[..., None] * rays, 0.0)  # hit points, camera at origin
    world = p + origin  # ... and in the LiDAR frame, for textures fixed to the world

    ground = finite & (prim < 0)
    g = scene.ground
    normal[ground] = np.array([-g.gx, -g.gy, 1.0]) / np.sqrt(g.gx**2 + g.gy**2 + 1.0)
    surface = hit["surface"][ground]
    colour = GROUND_ALBEDO[surface].copy()
    wx, wy = world[ground, 0], world[ground, 1]
    tiles = (np.abs(np.modf(wx / 0.6)[0]) < 0.06) | (np.abs(np.modf(wy / 0.6)[0]) < 0.06)
    colour[(surface == 2) & tiles] *= 0.7  # sidewalk tile joints
    colour *= (0.88 + 0.24 * _hash(np.floor(wx / 0.3), np.floor(wy / 0.3)))[:, None]
    rgb[ground] = colour

    for is_box in (True, False):
        mask = finite & ((prim >= 0) & (prim < n_box) if is_box else (prim >= n_box))
        if not mask.any():
            continue
        k = prim[mask]
        col = albedo[k].copy()
        tex = texture[k]
        if is_box:
            nrm, local, axis, sign = _box_surface(p[mask], bp[k])
            half = bp[k, 3:6] / 2
            height = local[:, 2] + half[:, 2]
            along = np.where(axis == 0, local[:, 1], local[:, 0])  # across the face
            win = (tex == WINDOWS) & (axis < 2) & (height > 1.0) \
                & (np.modf(np.abs(along) / 2.5)[0] > 0.35) & (np.modf(height / 3.0)[0] > 0.35)
            col[win] = GLASS
            # Head lights on the front face, tail lights at the back, in the top third.
            lamp = (tex == CAR_BODY) & (axis == 0) & (height > 0.55 * 2 * half[:, 2]) \
                & (np.abs(local[:, 1]) > 0.55 * half[:, 1])
            col[lamp & (sign > 0) & lamps[k, 0]] = (1.0, 0.97, 0.85)
            col[lamp & (sign < 0) & lamps[k, 1]] = (0.85, 0.05, 0.05)
            col[(tex == CABIN) & (axis < 2)] = GLASS  # windows all round, roof in paint
            stripe = (tex == STRIPES) & (np.modf((along + 8.0) / 0.5)[0] < 0.5)
            col[stripe] = (0.95, 0.95, 0.95)
        else:
            nrm, height, cap = _cyl_surface(p[mask], cp[k - n_box])
            length = cp[k - n_box, 3] - cp[k - n_box, 2]
            col[(tex == HEAD) & (height > 0.6 * length) | (tex == HEAD) & cap] = HAIR
            col[(tex == STRIPES) & (np.abs(height - 0.5 * length) < 0.2 * length)] = 0.95
        noisy = tex == NOISE
        cell = np.floor(world[mask] / 0.25)
        col[noisy] *= (0.75 + 0.5 * _hash(cell[noisy, 0], cell[noisy, 1], cell[noisy, 2]))[:, None]
        rgb[mask] = col
        normal[mask] = nrm

    facing = np.sum(normal * rays, axis=-1) > 0  # seen from inside: face the camera
    normal[facing] *= -1
    light = cfg.ambient + (1.0 - cfg.ambient) * np.clip(normal @ sun, 0.0, 1.0)
    rgb[finite] *= light[finite, None]
    haze = np.exp(-np.where(finite, t, 0.0) / cfg.haze_distance)[..., None]
    up = np.clip(rays[..., 2:3] * 3.0, 0.0, 1.0)
    sky = SKY_HORIZON * (1 - up) + SKY_ZENITH * up
    rgb = np.where(finite[..., None], rgb * haze + SKY_HORIZON * (1 - haze), sky)
    return rgb
