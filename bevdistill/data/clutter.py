"""Unlabelled clutter the detector must learn to ignore: facades, trees, hedges, fences, poles,
signs, roadworks and sidewalk furniture (some of it pedestrian-sized on purpose)."""

from __future__ import annotations

import numpy as np

from .placement import Builder, sidewalk_spot

CLUTTER_KINDS: tuple[str, ...] = (
    "facade", "hedge", "fence", "tree", "pole", "sign", "barrier", "cone", "bin", "bollard",
    "bench", "cabinet", "large_vehicle",
)


def _facade_row(rng, b: Builder, along_x: bool, offset: float, sign: int, start: float,
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
            parts = [("b", 0.0, 0.0, -2.0, seg, thick, height + 2.0, refl, rng.uniform(0, 0.15),
                      "wall")]
            b.add("facade", x, y, yaw, (seg, thick, height), parts, base=0.0, check=False)
        pos += seg


def add_structure(rng, b: Builder, extent: float) -> None:
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


def _kerb_positions(rng, b: Builder, spacing: tuple[float, float], extent: float,
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


def add_street_furniture(rng, b: Builder, extent: float) -> None:
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
        parts = [("c", 0.0, 0.0, 0.0, h, rng.uniform(0.08, 0.14), 0.2, 0.0, "post"),
                 ("b", 0.0, -side * arm / 2, h - 0.3, 0.12, arm, 0.12, 0.25, 0.0, "lamp_arm")]
        b.add("pole", x, y, 0.0, (0.3, 0.3, h), parts)
    for _ in range(rng.integers(0, 5)):
        side = int(rng.choice([-1, 1]))
        x = rng.uniform(-extent, extent)
        y = lay.centre_y + side * (kerb_y + 0.35)
        h = rng.uniform(2.0, 2.6)
        plate = rng.uniform(0.6, 0.9)
        parts = [("c", 0.0, 0.0, 0.0, h - plate, 0.04, 0.2, 0.0, "post"),
                 ("b", 0.0, 0.0, h - plate, 0.04, plate, plate, 0.9, 0.0, "plate")]
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
            parts = [("b", 0.0, 0.0, 0.0, dims[0], dims[1], dims[2], refl, drop, kind)]
            b.add(kind, x + seg / 2, y, 0.0, dims, parts, base=0.0)
            x += seg + rng.uniform(1, 6)
    # Small furniture anywhere on the sidewalks: pedestrian-sized on purpose.
    for _ in range(rng.poisson(8)):
        x, y, side = sidewalk_spot(rng, b, extent)
        kind = str(rng.choice(["bin", "bollard", "bench", "cabinet"]))
        if kind == "bin":
            h, r = rng.uniform(0.8, 1.2), rng.uniform(0.25, 0.35)
            parts = [("c", 0.0, 0.0, 0.0, h, r, rng.uniform(0.05, 0.3), 0.0, "bin")]
            dims = (2 * r, 2 * r, h)
        elif kind == "bollard":
            h = rng.uniform(0.8, 1.1)
            parts, dims = [("c", 0.0, 0.0, 0.0, h, 0.1, 0.3, 0.0, "bollard")], (0.2, 0.2, h)
        elif kind == "bench":
            dims = (rng.uniform(1.5, 2.0), rng.uniform(0.5, 0.7), 0.85)
            parts = [("b", 0.0, 0.0, 0.0, dims[0], dims[1], 0.45, 0.15, 0.1, "seat"),
                     ("b", 0.0, -dims[1] / 2 + 0.05, 0.45, dims[0], 0.08, 0.4, 0.15, 0.1,
                      "backrest")]
        else:
            dims = (rng.uniform(0.6, 1.0), rng.uniform(0.4, 0.6), rng.uniform(1.1, 1.7))
            parts = [("b", 0.0, 0.0, 0.0, *dims, rng.uniform(0.1, 0.4), 0.0, "cabinet")]
        yaw = 0.0 if kind == "bench" and rng.random() < 0.8 else rng.uniform(-np.pi, np.pi)
        b.add(kind, x, y, yaw, dims, parts)


def _tree(rng, b: Builder, x: float, y: float, scale: float) -> None:
    """A trunk and an irregular crown of overlapping cylinders (sparse: leaves drop returns)."""
    trunk_top = rng.uniform(2.2, 3.5)
    parts = [("c", 0.0, 0.0, 0.0, trunk_top, rng.uniform(0.1, 0.25), 0.1, 0.0, "trunk")]
    leaf = rng.uniform(0.04, 0.1)
    for _ in range(rng.integers(2, 5)):
        z0 = trunk_top - rng.uniform(0, 0.5)
        parts.append(("c", rng.normal(0, 0.6 * scale), rng.normal(0, 0.6 * scale), z0,
                      z0 + scale * rng.uniform(1.5, 4.0), scale * rng.uniform(1.0, 2.5), leaf,
                      rng.uniform(0.3, 0.5), "crown"))
    b.add("tree", x, y, 0.0, (0.5, 0.5, trunk_top + 4 * scale), parts)


def add_roadworks(rng, b: Builder, extent: float) -> None:
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
        parts = [("b", 0.0, 0.0, 0.0, length - 0.02, w, h, refl, 0.0, "barrier")]
        b.add("barrier", x + length / 2, y, rng.normal(0, 0.02), (length, w, h), parts,
              base=0.0, margin=0.01)
        x += length + rng.uniform(0.0, 0.3)
    for _ in range(rng.integers(0, 6)):
        cx = rng.uniform(x - 30, x + 5)
        cy = y - side * rng.uniform(0.8, 2.0)
        parts = [("c", 0.0, 0.0, 0.0, 0.4, 0.18, 0.5, 0.0, "cone"),
                 ("c", 0.0, 0.0, 0.4, 0.72, 0.09, 0.5, 0.0, "cone_top")]
        b.add("cone", cx, cy, 0.0, (0.36, 0.36, 0.72), parts, base=0.0)
