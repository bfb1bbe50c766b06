"""Object recipes: the ray-castable parts a car, pedestrian, cyclist or large vehicle is made of.

These are world version 1's recipes, nearly the same seen from the front and from the back;
version 2's (:mod:`bevdistill.data.parts_v2`) give objects a front and a back.

Parts are in the object's frame (u forward, v left, z up from its bottom). A box part is
("b", u, v, z_bottom, l, w, h, refl, drop); a cylinder ("c", u, v, z0, z1, r, refl, drop).
Either may end with the part's name (one of ``PART_NAMES``): what a scan's hit reports and
what a camera paints by (a part without one is "unnamed").
Every part lies ``INSET`` inside the object's label box, so range noise rarely pushes a
surface point out of its box.
"""

from __future__ import annotations

import numpy as np

# Label-box size ranges (l, w, h) in metres, close to nuScenes' per-class statistics.
SIZE_RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    "car": ((3.9, 5.0), (1.7, 2.0), (1.4, 1.8)),
    "pedestrian": ((0.5, 0.9), (0.5, 0.9), (1.5, 1.9)),
    "cyclist": ((1.6, 1.9), (0.5, 0.8), (1.5, 1.9)),
}

INSET = 0.03  # parts stay this far inside their label box

# Part ids, as a scene's ``box_ids``/``cyl_ids`` and a scan's hit ids give them: 0 is a part
# without a name (a custom scene's obstacles); the labelled classes' parts, then clutter's.
PART_NAMES: tuple[str, ...] = (
    "unnamed", "body", "bonnet", "cabin", "windscreen", "mirror", "wheel", "leg", "foot", "torso",
    "arm", "head", "backpack", "frame", "handlebar",
    "wall", "hedge", "fence", "trunk", "crown", "post", "lamp_arm", "plate", "barrier", "cone",
    "cone_top", "bin", "bollard", "seat", "backrest", "cabinet",
)
PART_ID: dict[str, int] = {name: i for i, name in enumerate(PART_NAMES)}


def _paint(rng: np.random.Generator) -> float:
    kind = rng.choice(3, p=[0.35, 0.4, 0.25])  # dark, mid, bright paint
    lo, hi = ((0.04, 0.09), (0.09, 0.25), (0.25, 0.55))[kind]
    return float(rng.uniform(lo, hi))


def car_parts(rng, length, width, height) -> list[tuple]:
    e = INSET
    paint = _paint(rng)
    clear = rng.uniform(0.14, 0.22)
    belt = rng.uniform(0.5, 0.62) * height
    cabin_l = rng.uniform(0.45, 0.65) * length
    cabin_u = np.clip(rng.uniform(-0.12, 0.04) * length, -(length / 2 - e - cabin_l / 2),
                      length / 2 - e - cabin_l / 2)
    axle = length / 2 - rng.uniform(0.75, 0.95)
    parts = [
        ("b", 0.0, 0.0, clear, length - 2 * e, width - 2 * e, belt - clear, paint, 0.0, "body"),
        ("b", cabin_u, 0.0, belt, cabin_l, width - 2 * e - rng.uniform(0.1, 0.25),
         height - e - belt, 0.6 * paint, 0.3, "cabin"),
    ]
    for u in (axle, -axle):
        parts.append(("b", u, 0.0, e, 0.62, width - 2 * e - 0.02, clear + 0.1 - e, 0.04, 0.1,
                      "wheel"))
    return parts


def pedestrian_parts(rng, length, width, height) -> list[tuple]:
    e = INSET
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
        ("c", stride, leg_v, 0.0, hip, leg_r, cloth, 0.0, "leg"),
        ("c", -stride, -leg_v, 0.0, hip, leg_r, cloth, 0.0, "leg"),
        ("b", 0.0, 0.0, hip, torso_l, torso_w, torso_h, cloth, 0.0, "torso"),
        ("c", -swing, arm_v, hip - 0.05, hip + 0.3 * height, arm_r, cloth, 0.1, "arm"),
        ("c", swing, -arm_v, hip - 0.05, hip + 0.3 * height, arm_r, cloth, 0.1, "arm"),
        ("c", 0.0, 0.0, height - e - head_h, height - e, head_r, skin, 0.05, "head"),
    ]


def cyclist_parts(rng, length, width, height) -> list[tuple]:
    e = INSET
    cloth = float(rng.uniform(0.04, 0.3))
    wheel = rng.uniform(0.6, 0.7)
    hub = length / 2 - e - wheel / 2
    torso_w = min(rng.uniform(0.32, 0.4), width - 2 * e)
    seat = rng.uniform(0.5, 0.55) * height
    torso_h = 0.3 * height
    arm_v = min(0.17, width / 2 - e - 0.03)
    parts = [
        ("b", hub, 0.0, 0.0, wheel, 0.05, wheel, 0.12, 0.3, "wheel"),
        ("b", -hub, 0.0, 0.0, wheel, 0.05, wheel, 0.12, 0.3, "wheel"),
        ("b", 0.0, 0.0, 0.5 * wheel, 2 * hub, 0.05, 0.2, 0.25, 0.1, "frame"),
        ("b", -0.1 * length, 0.0, seat, 0.32, torso_w, torso_h, cloth, 0.0, "torso"),
        ("c", -0.05 * length, 0.12, 0.25, seat, 0.07, cloth, 0.0, "leg"),
        ("c", -0.05 * length, -0.12, 0.25, seat, 0.07, cloth, 0.0, "leg"),
        ("c", -0.02 * length, 0.0, height - e - 0.24, height - e, 0.1, 0.12, 0.05, "head"),
    ]
    for v in (arm_v, -arm_v):
        parts.append(("b", 0.12 * length, v, seat + 0.55 * torso_h, 0.3 * length, 0.06, 0.07,
                      cloth, 0.1, "arm"))
    return parts


def large_vehicle_parts(rng, length, width, height) -> list[tuple]:
    e = INSET
    paint = _paint(rng)
    clear = rng.uniform(0.3, 0.5)
    parts = [("b", 0.0, 0.0, clear, length - 2 * e, width - 2 * e, height - e - clear, paint, 0.05,
              "body")]
    for u in (length / 2 - 1.2, -length / 2 + 1.6):
        parts.append(("b", u, 0.0, e, 1.0, width - 2 * e - 0.05, clear + 0.2, 0.04, 0.1, "wheel"))
    return parts


RECIPES = {"car": car_parts, "pedestrian": pedestrian_parts, "cyclist": cyclist_parts}


def sample_dims(rng, name: str) -> tuple[float, float, float]:
    """A label-box size (l, w, h) for class ``name``, uniform within its ``SIZE_RANGES``."""
    return tuple(float(rng.uniform(lo, hi)) for lo, hi in SIZE_RANGES[name])


def place_parts(parts, x: float, y: float, bottom: float, yaw: float, box_prims: list,
                cyl_prims: list, box_ids: list | None = None, cyl_ids: list | None = None,
                label: int = -1, owner: int = -1) -> None:
    """Append an object's parts as LiDAR-frame primitives (object pose x, y, bottom, yaw).

    With ``box_ids``/``cyl_ids``, also append each primitive's ``(label, part id, owner)``: the
    object's class label (-1: unlabelled), the index of its part's name in ``PART_NAMES`` and
    the object's row in the scene's ``boxes`` (labelled) or ``clutter_boxes`` (unlabelled).
    """
    c, s = np.cos(yaw), np.sin(yaw)
    for part in parts:
        px, py = x + c * part[1] - s * part[2], y + s * part[1] + c * part[2]
        if part[0] == "b":
            _, _, _, zb, pl, pw, ph, refl, drop = part[:9]
            box_prims.append((px, py, bottom + zb + ph / 2, pl, pw, ph, yaw, refl, drop))
            ids, name = box_ids, part[9] if len(part) > 9 else "unnamed"
        else:
            _, _, _, z0, z1, r, refl, drop = part[:8]
            cyl_prims.append((px, py, bottom + z0, bottom + z1, r, refl, drop))
            ids, name = cyl_ids, part[8] if len(part) > 8 else "unnamed"
        if ids is not None:
            ids.append((label, PART_ID[name], owner))
