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

``world_version`` picks the labelled objects' recipes: 2 (the default) gives cars, pedestrians
and cyclists a front and a back, so heading can be learnt from a scan; 1 is the older, nearly
front/back symmetric world that the models shipped before version 2 were trained on (their
cards carry no ``world_version``, which means 1).

Every primitive also carries ``(label, part id, object)`` (``box_ids``/``cyl_ids``,
:meth:`Scene.prim_ids`), so a ray that hits it, the LiDAR's or a camera's, knows the class,
the part and the object it hit: the one record of primitive identity that scans' hit indices
point into and that the cameras paint by.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .classes import CLASS_NAMES, LABEL_OF
from .clutter import CLUTTER_KINDS, add_roadworks, add_street_furniture, add_structure
from .parts import PART_ID, SIZE_RANGES, place_parts
from .placement import (
    WORLD_VERSION,
    Builder,
    add_cyclists,
    add_pedestrians,
    add_traffic,
    recipes_of_world,
)
from .road import Ground, RoadLayout, sample_layout
from .scene_config import SceneConfig, settings_from_dict

# The generator's public names; the pieces live in scene_config (its knobs), road (street and
# ground), parts (object recipes), placement (footprints and labelled objects) and clutter
# (everything unlabelled).
__all__ = [
    "CLUTTER_KINDS", "SIZE_RANGES", "WORLD_VERSION", "Ground", "RoadLayout", "Scene", "SceneConfig",
    "custom_scene", "generate_scene", "scene_rng", "settings_from_dict",
]


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
    # Per primitive (same rows as box_prims / cyl_prims): (class label, -1 unlabelled; part id,
    # an index into bevdistill.data.parts.PART_NAMES; object, its row in ``boxes`` when
    # labelled, else in ``clutter_boxes``).
    box_ids: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    cyl_ids: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    world_version: int = WORLD_VERSION

    def prim_ids(self) -> np.ndarray:
        """``[P + Q, 3]`` (label, part id, object) of every primitive, boxes first: the rows
        that a scan's hit index (``LidarSimulator.scan(..., return_hits=True)``) and a camera's
        (``CameraRig.render(...)["prim"]``) point into."""
        ids = np.concatenate([self.box_ids.reshape(-1, 3), self.cyl_ids.reshape(-1, 3)])
        if len(ids) != len(self.box_prims) + len(self.cyl_prims):
            raise ValueError(f"the scene has {len(self.box_prims)} box and {len(self.cyl_prims)} "
                             f"cylinder primitives but {len(ids)} id rows; build it with "
                             "generate_scene or custom_scene, or give place_parts box_ids and "
                             "cyl_ids")
        return ids.astype(np.int64)

    def prim_kinds(self) -> list[str]:
        """What each primitive belongs to, in :meth:`prim_ids` order: its class name when
        labelled, else its clutter kind (``clutter_kinds``, e.g. "tree" or "obstacle")."""
        return [CLASS_NAMES[label] if label >= 0 else self.clutter_kinds[obj]
                for label, _, obj in self.prim_ids()]


def _ids(rows: list) -> np.ndarray:
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def _finalise(b: Builder, ground: Ground, seed, index, world_version: int) -> Scene:
    """Turn road-frame objects into LiDAR-frame label boxes and ray-castable primitives."""
    lay = b.layout
    c, s = np.cos(lay.yaw), np.sin(lay.yaw)
    boxes, labels, kinds, clutter = [], [], [], []
    box_prims, cyl_prims, box_ids, cyl_ids = [], [], [], []
    for obj in b.objects:
        x = c * obj["x"] - s * obj["y"]
        y = s * obj["x"] + c * obj["y"]
        yaw = obj["yaw"] + lay.yaw
        bottom = ground.z_at(x, y) + obj["base"]  # base: kerb height on sidewalks
        length, width, height = obj["dims"]
        box = (x, y, bottom + height / 2, length, width, height, _wrap(yaw))
        if obj["label"] >= 0:
            owner = len(boxes)
            boxes.append(box)
            labels.append(obj["label"])
        else:
            owner = len(clutter)
            kinds.append(obj["kind"])
            clutter.append(box)
        place_parts(obj["parts"], x, y, bottom, yaw, box_prims, cyl_prims, box_ids, cyl_ids,
                    obj["label"], owner)
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
        box_ids=_ids(box_ids),
        cyl_ids=_ids(cyl_ids),
        world_version=world_version,
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
    layout = sample_layout(rng, cfg)
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
    b = Builder(layout)
    if cfg.clutter:
        add_structure(rng, b, cfg.extent)
        add_roadworks(rng, b, cfg.extent)
    add_traffic(rng, b, cfg)
    if cfg.clutter:
        add_street_furniture(rng, b, cfg.extent)
    add_pedestrians(rng, b, cfg)
    add_cyclists(rng, b, cfg)
    return _finalise(b, ground, seed, index, cfg.world_version)




def custom_scene(
    objects: list[tuple[str, list[float]]],
    obstacles: list[list[float]] = (),
    sensor_height: float = 1.84,
    seed: int = 0,
    world_version: int = WORLD_VERSION,
) -> Scene:
    """A hand-made scene on flat open ground (for tests, notebooks and what-if studies).

    ``objects``: (class name, box (x, y, z, l, w, h, yaw)) pairs, built from the same part
    recipes as generated scenes of ``world_version`` (random details drawn from ``seed``);
    ``obstacles``: plain boxes (walls, say) that are not labelled.
    """
    rng = np.random.default_rng(seed)
    recipes = recipes_of_world(world_version)
    boxes, labels, box_prims, cyl_prims, box_ids, cyl_ids = [], [], [], [], [], []
    for name, box in objects:
        if name not in recipes:
            raise ValueError(f"unknown class {name!r}; use one of {sorted(recipes)}")
        x, y, z, length, width, height, yaw = (float(v) for v in box)
        place_parts(recipes[name](rng, length, width, height), x, y, z - height / 2, yaw,
                    box_prims, cyl_prims, box_ids, cyl_ids, LABEL_OF[name], len(boxes))
        boxes.append((x, y, z, length, width, height, yaw))
        labels.append(LABEL_OF[name])
    for k, box in enumerate(obstacles):
        box_prims.append((*(float(v) for v in box), 0.2, 0.0))
        box_ids.append((-1, PART_ID["unnamed"], k))
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
        box_ids=_ids(box_ids),
        cyl_ids=_ids(cyl_ids),
        world_version=world_version,
    )
