"""The ray-cast LiDAR: output format, rings, geometry, noise, dropout, occlusion, point counts."""

from __future__ import annotations

import numpy as np
import pytest

from bevdistill.data import (
    LidarConfig,
    LidarSimulator,
    count_points_in_boxes,
    custom_scene,
    points_in_boxes,
    simulate_sample,
)

SIM = LidarSimulator()
SAMPLE = simulate_sample(2, 0, lidar=SIM)
CAR_20M = ("car", [20.0, 0.0, -1.84 + 0.75, 4.5, 1.8, 1.5, 0.3])


def _scan(scene, config=None, seed=0):
    sim = SIM if config is None else LidarSimulator(config)
    return sim.scan(scene, np.random.default_rng(seed))


def test_points_are_float32_x_y_z_intensity_ring():
    pts = SAMPLE["points"]
    assert pts.dtype == np.float32 and pts.ndim == 2 and pts.shape[1] == 5
    assert 15_000 < len(pts) < 34_688  # at most one return per beam
    intensity, ring = pts[:, 3], pts[:, 4]
    assert np.all(intensity == np.round(intensity)) and intensity.min() >= 0
    assert intensity.max() <= 255
    assert np.array_equal(np.unique(ring), np.arange(32))  # ring ids as nuScenes stores them


def test_ring_ids_follow_elevation_lowest_first():
    pts = SAMPLE["points"]
    elev = np.degrees(np.arctan2(pts[:, 2], np.hypot(pts[:, 0], pts[:, 1])))
    expected = np.degrees(LidarConfig().elevations())
    for k in range(32):
        med = np.median(elev[pts[:, 4] == k])
        assert abs(med - expected[k]) < 0.2, (k, med, expected[k])
    assert expected[0] == pytest.approx(-30.67) and expected[-1] == pytest.approx(10.67)


def test_ranges_stay_within_sensor_limits():
    r = np.linalg.norm(SAMPLE["points"][:, :3], axis=1)
    cfg = LidarConfig()
    assert r.min() >= cfg.min_range and r.max() <= cfg.max_range


def test_same_sample_is_identical_and_another_differs():
    again = simulate_sample(2, 0, lidar=SIM)
    for key in ("points", "gt_boxes", "gt_labels", "num_points", "visible"):
        np.testing.assert_array_equal(SAMPLE[key], again[key])
    other = simulate_sample(2, 1, lidar=SIM)
    assert other["points"].shape != SAMPLE["points"].shape or not np.array_equal(
        other["points"], SAMPLE["points"])


def test_flat_ground_returns_lie_on_the_plane_with_stated_noise():
    cfg = {"ego_roof": None, "dropout": 0.0}
    pts = _scan(custom_scene([]), cfg)
    assert np.abs(pts[:, 2] + 1.84).max() < 0.05
    # Range error along each beam: measured range minus the exact range to the plane.
    rng_ = np.linalg.norm(pts[:, :3], axis=1)
    sin_el = np.sin(LidarConfig().elevations())[pts[:, 4].astype(int)]
    err = rng_ - (-1.84 / sin_el)
    assert abs(err.std() - 0.02) < 0.004 and abs(err.mean()) < 0.002
    # Rings 0-21 reach the plane within 70 m (ring 21, at -2.7 deg, at 39 m); ring 22 would
    # meet it at 78 m, beyond the range, and the upward rings never.
    assert set(np.unique(pts[:, 4]).astype(int)) == set(range(22))


def test_dropout_rate_and_ego_roof():
    empty = custom_scene([])
    per_ring = np.bincount(_scan(empty, {"ego_roof": None})[:, 4].astype(int), minlength=32)
    kept = per_ring[8:16] / 1084
    assert np.all(np.abs(kept - 0.97) < 0.025), kept  # base dropout 3 %
    half = np.bincount(_scan(empty, {"ego_roof": None, "dropout": 0.5})[:, 4].astype(int),
                       minlength=32)
    assert np.all(np.abs(half[8:16] / 1084 - 0.5) < 0.06)
    roofed = np.bincount(_scan(empty)[:, 4].astype(int), minlength=32)
    # The roof hides most of ring 0 and nothing from ring 12 up.
    assert roofed[0] < 0.3 * per_ring[0] and roofed[12] > 0.95 * per_ring[12]


def test_a_wall_hides_the_car_behind_it():
    open_view = _scan(custom_scene([CAR_20M]))
    wall = [10.0, 0.0, -0.84, 0.3, 6.0, 2.0, 0.0]  # 2 m high, 6 m wide, between car and sensor
    blocked = _scan(custom_scene([CAR_20M], obstacles=[wall]))
    box = np.array([CAR_20M[1]])
    assert count_points_in_boxes(open_view, box)[0] >= 30
    assert count_points_in_boxes(blocked, box)[0] == 0
    # A half-width wall hides only part of it.
    half = [10.0, 1.0, -0.84, 0.3, 1.0, 2.0, 0.0]
    partly = _scan(custom_scene([CAR_20M], obstacles=[half]))
    n = count_points_in_boxes(partly, box)[0]
    assert 0 < n < count_points_in_boxes(open_view, box)[0]


def test_only_beams_passing_over_a_low_wall_reach_the_car():
    # A 60 m long, 1 m high wall at 10 m (tested first: its bounding circle holds the sensor),
    # the car behind it at 20 m is taller: only beams above the wall's top edge may hit it.
    wall = [10.0, 0.0, -1.34, 0.3, 60.0, 1.0, 0.0]
    pts = _scan(custom_scene([CAR_20M], obstacles=[wall]))
    on_car = pts[points_in_boxes(pts, np.array([CAR_20M[1]]))[:, 0]]
    assert len(on_car) >= 10
    elev = np.arctan2(on_car[:, 2], np.hypot(on_car[:, 0], on_car[:, 1]))
    assert elev.min() > np.arctan2(-0.84, 9.85) - 0.002


def test_nearest_hit_wins_no_points_behind_a_solid_wall():
    wall = [15.0, 0.0, 1.0, 0.5, 20.0, 8.0, 0.0]
    pts = _scan(custom_scene([], obstacles=[wall]))
    ahead = (np.abs(np.arctan2(pts[:, 1], pts[:, 0])) < np.arctan2(9.0, 15.0))
    assert pts[ahead, 0].max() < 15.0 + 0.25 + 0.1


def test_bright_surface_gives_brighter_returns():
    wall = [12.0, 0.0, 0.0, 0.3, 6.0, 3.7, 0.0]  # reflectivity 0.2 against road 0.07
    pts = _scan(custom_scene([], obstacles=[wall]))
    on_wall = np.abs(pts[:, 0] - 11.85) < 0.1
    on_road = (pts[:, 2] < -1.7) & (pts[:, 0] > 5) & (pts[:, 0] < 11)
    assert np.median(pts[on_wall, 3]) > 1.5 * np.median(pts[on_road, 3])


def test_visible_flag_follows_min_points():
    s = SAMPLE
    np.testing.assert_array_equal(s["visible"], s["num_points"] >= 5)
    strict = simulate_sample(2, 0, lidar=SIM, min_points=40)
    np.testing.assert_array_equal(strict["visible"], s["num_points"] >= 40)
    assert s["visible"].sum() > strict["visible"].sum() > 0
    assert not s["visible"].all()  # far or hidden objects exist and are flagged


def test_num_points_counts_points_inside_each_box():
    expected = points_in_boxes(SAMPLE["points"], SAMPLE["gt_boxes"]).sum(0)
    np.testing.assert_array_equal(SAMPLE["num_points"], expected)


def test_points_in_boxes_rule_and_fast_count_agree():
    box = np.array([[1.0, 2.0, 0.0, 4.0, 2.0, 1.0, np.pi / 2]])  # long side along y
    pts = np.array([[1.0, 3.9, 0.0], [1.0, 4.1, 0.0], [1.9, 2.0, 0.4], [2.1, 2.0, 0.0],
                    [1.0, 2.0, 0.5], [1.0, 2.0, -0.6]])
    np.testing.assert_array_equal(points_in_boxes(pts, box)[:, 0],
                                  [True, False, True, False, True, False])
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.uniform(-20, 20, (400, 3))
        b = np.c_[rng.uniform(-20, 20, (15, 3)), rng.uniform(0.3, 8, (15, 3)),
                  rng.uniform(-4, 4, 15)]
        np.testing.assert_array_equal(count_points_in_boxes(p, b), points_in_boxes(p, b).sum(0))


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match=r"\[M, 7\]"):
        points_in_boxes(np.zeros((3, 5)), np.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"\[N, >=3\]"):
        count_points_in_boxes(np.zeros(5), np.zeros((1, 7)))
    with pytest.raises(KeyError, match="valid settings"):
        LidarConfig.from_dict({"max_rnage": 50})
    with pytest.raises(ValueError, match="min_points"):
        simulate_sample(0, 0, min_points=-1)
    with pytest.raises(ValueError, match="probability"):
        LidarConfig(dropout=1.5)
    with pytest.raises(ValueError, match="min_range < max_range"):
        LidarConfig(max_range=0.5)
