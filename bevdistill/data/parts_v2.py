"""World version 2's object recipes: cars, pedestrians and cyclists with a front and a back.

In world version 1 (:mod:`bevdistill.data.parts`) an object's scan looks nearly the same from
the front and from the back, so a detector cannot learn which way it faces. Real objects are
not symmetric, and these recipes give each class the cues a LiDAR sees:

* car: a bonnet lower than the roof, a windscreen stepped down towards it, the cabin set back
  over a short, square rear; a longer front overhang than rear; mirrors by the windscreen;
* pedestrian: feet pointing forward, arms and head a little ahead of the torso, a backpack on
  some;
* cyclist: the rider leaning forward, head over the front wheel, arms reaching a handlebar
  that is wider than the bicycle.

Same conventions as version 1: parts in the object's frame (u forward, v left, z up from its
bottom), ("b", u, v, z_bottom, l, w, h, refl, drop, part) boxes and ("c", u, v, z0, z1, r,
refl, drop, part) cylinders, every part ``INSET`` inside the label box. Sloped surfaces are
stairs of boxes, since the ray caster casts boxes turned about z and vertical cylinders only.
"""

from __future__ import annotations

from .parts import INSET, _paint


def _box(u, v, z0, z1, length, width, refl, drop, part) -> tuple:
    """A box part from its bottom ``z0`` and top ``z1``."""
    return ("b", float(u), float(v), float(z0), float(length), float(width), float(z1 - z0),
            float(refl), float(drop), part)


def car_parts(rng, length, width, height) -> list[tuple]:
    e = INSET
    paint = _paint(rng)
    glass, glass_drop = 0.6 * paint, 0.3
    clear = rng.uniform(0.14, 0.22)
    belt = rng.uniform(0.5, 0.62) * height
    roof = height - e
    body_w = width - 2 * e - rng.uniform(0.08, 0.14)  # the mirrors stick out beyond it
    cabin_w = body_w - rng.uniform(0.1, 0.2)
    front, rear = length / 2 - e, -(length / 2 - e)
    rear_gap = rng.uniform(0.2, 0.7)  # square rear: the cabin reaches far back
    screen = rng.uniform(0.5, 0.8)  # windscreen length along u, in two steps
    cabin_l = min(rng.uniform(0.42, 0.52) * length, length - 2 * e - rear_gap - screen - 0.8)
    cabin_front = rear + rear_gap + cabin_l
    nose_l = min(rng.uniform(0.5, 0.7), front - cabin_front - screen)
    nose_top = belt - rng.uniform(0.1, 0.18)  # the bonnet dips towards the front
    body_front = front - nose_l
    parts = [
        _box((rear + body_front) / 2, 0.0, clear, belt, body_front - rear, body_w, paint, 0.0,
             "body"),
        _box(front - nose_l / 2, 0.0, clear, nose_top, nose_l, body_w, paint, 0.0, "bonnet"),
        _box(rear + rear_gap + cabin_l / 2, 0.0, belt, roof, cabin_l, cabin_w, glass,
             glass_drop, "cabin"),
        _box(cabin_front + screen / 4, 0.0, belt, belt + 2 / 3 * (roof - belt), screen / 2,
             cabin_w, glass, glass_drop, "windscreen"),
        _box(cabin_front + 3 * screen / 4, 0.0, belt, belt + 1 / 3 * (roof - belt), screen / 2,
             cabin_w, glass, glass_drop, "windscreen"),
        # One bar across at mirror height: hidden inside the windscreen but at its two ends.
        _box(cabin_front + screen / 4, 0.0, belt + 0.04, belt + 0.16, 0.12, width - 2 * e,
             paint, 0.1, "mirror"),
    ]
    for axle in (front - rng.uniform(0.8, 1.0), rear + rng.uniform(0.6, 0.8)):
        parts.append(_box(axle, 0.0, e, clear + 0.1, 0.62, width - 2 * e - 0.02, 0.04, 0.1,
                          "wheel"))
    return parts


def pedestrian_parts(rng, length, width, height) -> list[tuple]:
    e = INSET
    span = length / 2 - e  # parts keep |u| <= span
    cloth = float(rng.uniform(0.04, 0.3))
    skin = float(rng.uniform(0.08, 0.2))
    leg_r = rng.uniform(0.06, 0.09)
    hip = rng.uniform(0.45, 0.5) * height
    foot_l, foot_back = 0.22, 0.05  # a foot reaches 0.17 m ahead of its leg's axis
    stride = rng.uniform(0.0, 1.0) * max(span - (foot_l - foot_back), 0.0)
    leg_v = min(rng.uniform(0.08, 0.13), width / 2 - e - leg_r)
    torso_w = min(rng.uniform(0.32, 0.45), width - 2 * e)
    torso_l = min(rng.uniform(0.2, 0.3), length - 2 * e)
    torso_u = rng.uniform(-0.03, 0.0)
    torso_h = rng.uniform(0.3, 0.36) * height
    arm_r = 0.045
    arm_v = min(torso_w / 2 + 0.05, width / 2 - e - arm_r)
    arm_u = min(rng.uniform(0.02, 0.08), span - arm_r)  # hands in front of the body
    swing = rng.uniform(0.0, 1.0) * min(0.06, span - arm_r - arm_u)
    head_r = rng.uniform(0.08, 0.11)
    head_h = rng.uniform(0.22, 0.26)
    head_u = min(rng.uniform(0.02, 0.05), span - head_r)
    parts = [
        ("c", stride, leg_v, 0.0, hip, leg_r, cloth, 0.0, "leg"),
        ("c", -stride, -leg_v, 0.0, hip, leg_r, cloth, 0.0, "leg"),
        _box(stride + (foot_l / 2 - foot_back), leg_v, 0.0, 0.08, foot_l, 0.1, cloth, 0.1,
             "foot"),
        _box(-stride + (foot_l / 2 - foot_back), -leg_v, 0.0, 0.08, foot_l, 0.1, cloth, 0.1,
             "foot"),
        _box(torso_u, 0.0, hip, hip + torso_h, torso_l, torso_w, cloth, 0.0, "torso"),
        ("c", arm_u - swing, arm_v, hip - 0.05, hip + 0.3 * height, arm_r, cloth, 0.1, "arm"),
        ("c", arm_u + swing, -arm_v, hip - 0.05, hip + 0.3 * height, arm_r, cloth, 0.1, "arm"),
        ("c", head_u, 0.0, height - e - head_h, height - e, head_r, skin, 0.05, "head"),
    ]
    back = torso_u - torso_l / 2  # the torso's back face
    depth = min(rng.uniform(0.12, 0.18), back + span)
    if rng.random() < 0.35 and depth > 0.06:
        parts.append(_box(back - depth / 2, 0.0, hip + 0.05 * height, hip + torso_h - 0.03,
                          depth, 0.8 * torso_w, float(rng.uniform(0.05, 0.4)), 0.0, "backpack"))
    return parts


def cyclist_parts(rng, length, width, height) -> list[tuple]:
    e = INSET
    cloth = float(rng.uniform(0.04, 0.3))
    wheel = rng.uniform(0.6, 0.7)
    hub = length / 2 - e - wheel / 2
    torso_w = min(rng.uniform(0.32, 0.4), width - 2 * e)
    seat = rng.uniform(0.5, 0.55) * height
    torso_h = 0.3 * height
    waist = seat + 0.4 * torso_h
    shoulder = seat + torso_h
    bar_u = hub - 0.12
    bar_z = wheel + rng.uniform(0.3, 0.4)
    bar_w = min(rng.uniform(0.5, 0.6), width - 2 * e)
    arm_v = min(0.17, width / 2 - e - 0.03)
    arm_u0 = 0.0  # the shoulders, ahead of the hips: the rider leans forward
    parts = [
        _box(hub, 0.0, 0.0, wheel, wheel, 0.05, 0.12, 0.3, "wheel"),
        _box(-hub, 0.0, 0.0, wheel, wheel, 0.05, 0.12, 0.3, "wheel"),
        _box(0.0, 0.0, 0.5 * wheel, 0.5 * wheel + 0.2, 2 * hub, 0.05, 0.25, 0.1, "frame"),
        _box(bar_u, 0.0, bar_z, bar_z + 0.05, 0.06, bar_w, 0.3, 0.1, "handlebar"),
        _box(-0.17 * length, 0.0, seat, waist, 0.3, torso_w, cloth, 0.0, "torso"),
        _box(-0.06 * length, 0.0, waist, shoulder, 0.3, torso_w, cloth, 0.0, "torso"),
        ("c", -0.1 * length, 0.12, 0.25, seat, 0.07, cloth, 0.0, "leg"),
        ("c", -0.1 * length, -0.12, 0.25, seat, 0.07, cloth, 0.0, "leg"),
        ("c", 0.06 * length, 0.0, height - e - 0.24, height - e, 0.1, 0.12, 0.05, "head"),
    ]
    arm_z = 0.5 * (bar_z + shoulder)
    for v in (arm_v, -arm_v):
        parts.append(_box(0.5 * (arm_u0 + bar_u), v, arm_z - 0.04, arm_z + 0.04, bar_u - arm_u0,
                          0.06, cloth, 0.1, "arm"))
    return parts


RECIPES = {"car": car_parts, "pedestrian": pedestrian_parts, "cyclist": cyclist_parts}
