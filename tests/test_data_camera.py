"""The synthetic world's six cameras: calibration, geometry and occlusion shared with the LiDAR,
per-class appearance, cache and the dataset's camera inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bevdistill.data import (
    LidarSimulator,
    SyntheticBEVDataset,
    bev_collate,
    count_points_in_boxes,
    custom_scene,
    generate_scene,
)
from bevdistill.data.camera import (
    CAMERA_NAMES,
    GLASS,
    NUSCENES_RIG,
    PART_ROLES,
    CameraConfig,
    CameraRig,
    _primitive_appearance,
    part_role,
)
from bevdistill.data.parts import PART_ID, PART_NAMES
from bevdistill.data.scene import scene_rng

RIG = CameraRig()
SCENE = generate_scene(4, 2)
RENDER = RIG.render(SCENE)
FRONT = CAMERA_NAMES.index("CAM_FRONT")
BACK = CAMERA_NAMES.index("CAM_BACK")
GROUND_Z = -1.84


def _what(scene, prim: np.ndarray) -> np.ndarray:
    """The class name or clutter kind each pixel of a render's ``prim`` shows ("": none)."""
    return np.array([*scene.prim_kinds(), ""])[prim]  # prim -1 picks the ""


@pytest.mark.parametrize("version", [1, 2])
def test_every_primitive_names_its_object_and_part(version):
    """The (label, part id, object) rows the cameras paint by and scans' hits point into: a
    labelled object's parts lie inside its own label box, every part of a generated scene has
    a name, and every name has a camera appearance."""
    from bevdistill.data import points_in_boxes

    scene = generate_scene(4, 2, {"world_version": version})
    ids = scene.prim_ids()
    centres = np.concatenate([scene.box_prims[:, :3],
                              np.c_[scene.cyl_prims[:, :2], scene.cyl_prims[:, 2:4].mean(1)]])
    labelled = ids[:, 0] >= 0
    assert labelled.sum() > 20 and (~labelled).sum() > 20
    inside = points_in_boxes(centres[labelled], scene.boxes)
    assert np.array_equal(inside.argmax(1), ids[labelled, 2]) and inside.sum(1).max() == 1
    assert np.array_equal(scene.labels[ids[labelled, 2]], ids[labelled, 0])
    assert set(ids[~labelled, 2]) == set(range(len(scene.clutter_kinds)))
    assert (ids[:, 1] != PART_ID["unnamed"]).all()
    for kind, part in {(k, PART_NAMES[p]) for k, p in zip(scene.prim_kinds(), ids[:, 1], strict=True)}:
        part_role(kind, part)  # raises for a part the cameras cannot paint
    cars = {PART_NAMES[p] for p in ids[ids[:, 0] == 0, 1]}
    assert ({"bonnet", "windscreen", "mirror"} <= cars) == (version == 2)


def test_a_part_the_cameras_cannot_paint_is_named_in_the_error():
    assert part_role("cyclist", "head") == "helmet" and part_role("pedestrian", "head") == "head"
    assert set(PART_NAMES) == set(PART_ROLES)
    with pytest.raises(KeyError, match="'spoiler'.*PART_ROLES"):
        part_role("car", "spoiler")


def test_world_2_parts_have_their_own_materials():
    """A windscreen is glass, a bonnet and mirrors are the body's paint, and a car's lamps are
    on the faces at its ends: the bonnet's front, the body's back (not the step behind the
    bonnet); a world-1 car's single body carries both."""
    car = [("car", [9.0, 0.0, GROUND_Z + 0.75, 4.5, 1.8, 1.5, 0.0])]
    new, old = custom_scene(car, world_version=2), custom_scene(car, world_version=1)
    ids = new.prim_ids()
    albedo, texture, lamps = _primitive_appearance(new, ids, np.random.default_rng(0))
    part = np.array([PART_NAMES[p] for p in ids[:, 1]])
    screen, body, bonnet = part == "windscreen", part == "body", part == "bonnet"
    assert screen.sum() == 2
    tint = albedo[screen] / GLASS  # glass, tinted per object like every part
    np.testing.assert_allclose(tint, tint[0, 0], rtol=1e-9)
    assert 0.9 <= tint[0, 0] <= 1.1
    assert np.array_equal(albedo[bonnet], albedo[body])
    assert np.array_equal(albedo[part == "mirror"], albedo[body])
    assert not np.allclose(albedo[screen][0], albedo[body][0])
    assert lamps[bonnet, 0].all() and not lamps[bonnet, 1].any()
    assert lamps[body, 1].all() and not lamps[body, 0].any()
    assert not lamps[(part != "body") & (part != "bonnet")].any()
    old_ids = old.prim_ids()
    _, _, old_lamps = _primitive_appearance(old, old_ids, np.random.default_rng(0))
    assert old_lamps[old_ids[:, 1] == PART_ID["body"]].all()


def test_calibration_has_nuscenes_form_and_layout():
    cal = RIG.calibration()
    assert cal["cam2img"].shape == (6, 3, 3) and cal["lidar2cam"].shape == (6, 4, 4)
    assert cal["cam2ego"].shape == (6, 4, 4) and cal["lidar2ego"].shape == (4, 4)
    assert all(a.dtype == np.float32 for a in cal.values())
    # lidar2cam chains lidar2ego and the inverse of cam2ego, as in the v1.1 infos
    np.testing.assert_allclose(cal["lidar2cam"] @ np.linalg.inv(cal["lidar2ego"]),
                               np.linalg.inv(cal["cam2ego"]), atol=1e-5)
    # the front camera looks along +x and sits 0.76 m ahead of the LiDAR, 0.33 m below it
    front = np.linalg.inv(cal["lidar2cam"][FRONT])
    np.testing.assert_allclose(front[:3, 2], (1, 0, 0), atol=1e-6)
    np.testing.assert_allclose(front[:3, 3], (1.70 - 0.944, 0.02, 1.51 - 1.84), atol=1e-5)
    # focal lengths are nuScenes' scaled to the image width (the back camera's lens is wider)
    fx = cal["cam2img"][:, 0, 0]
    np.testing.assert_allclose(fx, [NUSCENES_RIG[n][4] * 96 / 1600 for n in CAMERA_NAMES],
                               rtol=1e-6)
    assert fx[BACK] < 0.7 * fx[FRONT]


def test_images_have_the_configured_size_and_are_deterministic():
    assert RENDER["imgs"].shape == (6, 3, 48, 96) and RENDER["imgs"].dtype == np.uint8
    again = RIG.render(generate_scene(4, 2))
    assert np.array_equal(again["imgs"], RENDER["imgs"])
    other = RIG.render(generate_scene(4, 3))
    assert not np.array_equal(other["imgs"], RENDER["imgs"])
    small = CameraRig(dict(width=64, height=30)).render(SCENE)
    assert small["imgs"].shape == (6, 3, 30, 64)


def test_a_hit_projected_with_the_calibration_lands_in_its_pixel():
    for cam in range(6):
        hit = RIG.cast(SCENE, cam)
        t = hit["t"]  # [W, H]
        u, v = np.nonzero(np.isfinite(t))
        points = RIG.centres[cam] + t[u, v, None] * RIG.rays[cam][u, v]
        uv, depth = RIG.project(points, cam)
        assert np.array_equal(np.floor(uv[:, 0]).astype(int), u)
        assert np.array_equal(np.floor(uv[:, 1]).astype(int), v)
        np.testing.assert_allclose(depth, RENDER["depth"][cam][v, u], rtol=1e-4)


def test_lidar_points_and_camera_depths_agree_where_both_see_an_object():
    """Project the LiDAR's scan of the same scene into each camera: where the pixel shows an
    object, the rendered depth matches the point's (up to the pixel's size, the parallax
    between the sensors and range noise)."""
    points = LidarSimulator().scan(SCENE, scene_rng(4, 2, 1))
    agree, total = 0, 0
    for cam in range(6):
        uv, depth = RIG.project(points, cam)
        u, v = np.floor(uv[:, 0]), np.floor(uv[:, 1])
        inside = (depth > 1) & (u >= 0) & (u < 96) & (v >= 0) & (v < 48)
        u, v, depth = u[inside].astype(int), v[inside].astype(int), depth[inside]
        on_object = RENDER["prim"][cam][v, u] >= 0
        rendered = RENDER["depth"][cam][v, u][on_object]
        close = np.abs(rendered - depth[on_object]) < 0.3 + 0.05 * depth[on_object]
        agree += int(close.sum())
        total += int(on_object.sum())
    assert total > 2000
    assert agree / total > 0.85, agree / total
    # the test can fail: a camera placed 2 m off its calibration disagrees
    shifted = CameraRig()
    shifted.centres = shifted.centres + np.array([0.0, 2.0, 0.0])
    bad = shifted.render(SCENE)
    uv, depth = RIG.project(points, FRONT)
    u, v = np.floor(uv[:, 0]), np.floor(uv[:, 1])
    inside = (depth > 1) & (u >= 0) & (u < 96) & (v >= 0) & (v < 48)
    u, v, depth = u[inside].astype(int), v[inside].astype(int), depth[inside]
    obj = bad["prim"][FRONT][v, u] >= 0
    wrong = np.abs(bad["depth"][FRONT][v, u][obj] - depth[obj]) < 0.3 + 0.05 * depth[obj]
    assert wrong.mean() < 0.75


def test_a_wall_hides_a_car_from_the_camera_and_the_lidar_alike():
    car = ("car", [15.0, 0.0, GROUND_Z + 0.75, 4.5, 1.8, 1.5, 0.0])
    wall = [8.0, 0.0, GROUND_Z + 1.5, 0.3, 8.0, 3.0, 0.0]
    sim = LidarSimulator()
    open_scene, walled = custom_scene([car]), custom_scene([car], obstacles=[wall])
    seen = _what(open_scene, RIG.render(open_scene)["prim"][FRONT])
    hidden = _what(walled, RIG.render(walled)["prim"][FRONT])
    car_pixels = seen == "car"
    assert car_pixels.sum() > 30
    assert (hidden[car_pixels] == "obstacle").all()
    assert count_points_in_boxes(sim.scan(open_scene, np.random.default_rng(0)), open_scene.boxes)[0] > 50
    assert count_points_in_boxes(sim.scan(walled, np.random.default_rng(0)), walled.boxes)[0] == 0


def _colour_histogram(imgs, mask) -> np.ndarray:
    """Distribution of the masked pixels' colours over 4 x 4 x 4 RGB bins."""
    px = imgs.transpose(0, 2, 3, 1)[mask] // 64
    h = np.bincount(px[:, 0] * 16 + px[:, 1] * 4 + px[:, 2], minlength=64)
    return h / h.sum()


def _class_colour_distances(scenes) -> dict[tuple[str, str], float]:
    """Total variation distance between the colour distributions of cars, facades, trees and
    the ground, over the scenes' six renders."""
    renders = [RIG.render(scene) for scene in scenes]
    imgs = np.concatenate([r["imgs"] for r in renders])
    what = np.concatenate([_what(s, r["prim"]) for s, r in zip(scenes, renders, strict=True)])
    ground = np.concatenate([(r["prim"] < 0) & np.isfinite(r["depth"]) for r in renders])
    hist = {name: _colour_histogram(imgs, what == name) for name in ("car", "facade", "tree")}
    hist["ground"] = _colour_histogram(imgs, ground)
    names = list(hist)
    return {(a, b): 0.5 * np.abs(hist[a] - hist[b]).sum()
            for i, a in enumerate(names) for b in names[i + 1:]}


def test_classes_look_different(monkeypatch):
    """Over 12 scenes (cars and roads are both mostly dark, so fewer scenes make the car-ground
    distance a matter of which paints were drawn); painting every part one grey fails it."""
    scenes = [generate_scene(seed, i) for seed in (3, 4, 5) for i in range(4)]
    for pair, distance in _class_colour_distances(scenes).items():
        assert distance > 0.2, pair
    import bevdistill.data.camera as camera_module

    grey = (camera_module._rgb(0.4, 0.4, 0.4), camera_module.PLAIN)
    monkeypatch.setattr(camera_module, "_role_colour", lambda role, u, refl: grey)
    assert min(_class_colour_distances(scenes).values()) < 0.2


def test_a_pedestrian_shows_skin_where_a_pole_of_its_size_is_grey():
    """A pedestrian and a pole of the same size at the same range: the LiDAR sees two thin
    columns; the camera sees a head in skin and hair tones (warm: red over blue)."""
    for seed in range(5):
        scene = custom_scene([("pedestrian", [6.0, 0.6, GROUND_Z + 0.85, 0.6, 0.6, 1.7, 0.0])],
                             obstacles=[[6.0, -0.6, GROUND_Z + 0.85, 0.4, 0.4, 1.7, 0.0]],
                             seed=seed)
        r = RIG.render(scene, seed=seed, index=0)
        rgb = r["imgs"][FRONT].transpose(1, 2, 0).astype(int)
        warm = (rgb[..., 0] - rgb[..., 2] > 14) & (rgb[..., 0] >= rgb[..., 1])
        person = _what(scene, r["prim"][FRONT]) == "pedestrian"
        pole = _what(scene, r["prim"][FRONT]) == "obstacle"
        assert person.sum() > 10 and pole.sum() > 10
        assert warm[person].sum() >= 2 and warm[pole].sum() == 0, seed


@pytest.mark.parametrize("version", [1, 2])
def test_a_car_shows_head_lights_in_front_and_tail_lights_behind(version):
    """A cue no LiDAR scan carries: which end of a car is its front."""
    def red_and_white(yaw):
        scene = custom_scene([("car", [7.0, 0.0, GROUND_Z + 0.75, 4.5, 1.8, 1.5, yaw])],
                             world_version=version)
        r = RIG.render(scene)
        rgb = r["imgs"][FRONT].transpose(1, 2, 0).astype(int)[_what(scene, r["prim"][FRONT]) == "car"]
        red = ((rgb[:, 0] > 120) & (rgb[:, 1] < 40)).sum()
        white = (rgb.min(1) > 150).sum()
        return red, white
    red_back, white_back = red_and_white(0.0)  # driving away: its back faces the camera
    red_front, white_front = red_and_white(np.pi)  # coming towards the camera
    assert red_back > 0 and white_back == 0
    assert white_front > 0 and red_front == 0


def test_camera_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="height"):
        CameraConfig(width=96, height=80)  # taller than the 16:9 frame (54 rows)
    with pytest.raises(KeyError, match="valid settings"):
        CameraConfig.from_dict({"widht": 64})
    assert CameraConfig.from_dict(True) == CameraConfig()


def test_a_scene_without_primitive_ids_is_refused():
    scene = custom_scene([])
    scene.box_prims = np.array([[5.0, 0.0, -1.0, 1.0, 1.0, 1.0, 0.0, 0.2, 0.0]])
    with pytest.raises(ValueError, match="id rows.*custom_scene"):
        RIG.render(scene)


RANGE = (-32.0, -32.0, -5.0, 32.0, 32.0, 3.0)


def test_dataset_items_carry_images_and_calibration_that_follows_the_augmentation():
    ds = SyntheticBEVDataset("val", num_samples=2, seed=3, point_cloud_range=RANGE,
                             augment=True, cameras=True)
    item, raw = ds[0], ds.raw_sample(0)
    inputs = item["inputs"]
    assert inputs["imgs"].shape == (6, 3, 48, 96) and inputs["imgs"].dtype == torch.uint8
    assert np.array_equal(inputs["imgs"].numpy(), raw["imgs"])  # images are not augmented
    # an augmented point, seen through the item's lidar2cam, is where the raw point is in the
    # camera: compare camera-frame coordinates of the item's points with the raw scan's
    aug = inputs["points"][:300, :3].double()
    l2c = inputs["lidar2cam"].double()
    cam_aug = aug @ l2c[FRONT, :3, :3].T + l2c[FRONT, :3, 3]
    raw_l2c = torch.from_numpy(raw["lidar2cam"]).double()
    pts = torch.from_numpy(raw["points"][:, :3]).double()
    cam_raw = pts @ raw_l2c[FRONT, :3, :3].T + raw_l2c[FRONT, :3, 3]
    nearest = torch.cdist(cam_aug, cam_raw).min(dim=1).values
    assert nearest.max() < 1e-3
    assert not torch.allclose(inputs["lidar2cam"], raw_l2c.float())  # it did change
    batch = bev_collate([ds[0], ds[1]])
    assert batch["inputs"]["imgs"].shape == (2, 6, 3, 48, 96)
    assert batch["inputs"]["cam2img"].shape == (2, 6, 3, 3)
    assert batch["inputs"]["lidar2cam"].shape == (2, 6, 4, 4)


def test_collate_refuses_a_batch_with_and_without_cameras():
    with_cams = SyntheticBEVDataset("val", num_samples=1, point_cloud_range=RANGE, cameras=True)
    without = SyntheticBEVDataset("val", num_samples=1, point_cloud_range=RANGE)
    with pytest.raises(ValueError, match="same cameras setting"):
        bev_collate([with_cams[0], without[0]])


def test_renders_are_cached_with_the_scan(tmp_path, monkeypatch):
    kwargs = dict(split="train", num_samples=1, seed=5, point_cloud_range=RANGE)
    plain = SyntheticBEVDataset(**kwargs, cache_dir=tmp_path)
    cams = SyntheticBEVDataset(**kwargs, cache_dir=tmp_path, cameras=True)
    small = SyntheticBEVDataset(**kwargs, cache_dir=tmp_path, cameras=dict(width=64, height=30))
    old = SyntheticBEVDataset(**kwargs, cache_dir=tmp_path, cameras=True, world_version=1)
    paths = {plain.cache_path(0), cams.cache_path(0), small.cache_path(0), old.cache_path(0)}
    assert len(paths) == 4  # the camera settings and the world are part of the cache key
    first = cams[0]
    assert not torch.equal(first["inputs"]["imgs"], old[0]["inputs"]["imgs"])  # both render
    assert cams.cache_path(0).is_file()
    import bevdistill.data.dataset as dataset_module

    def fail(*args, **kwargs):
        raise AssertionError("a cached render was generated again")
    monkeypatch.setattr(dataset_module, "simulate_sample", fail)
    again = SyntheticBEVDataset(**kwargs, cache_dir=tmp_path, cameras=True)[0]
    for key in ("imgs", "cam2img", "lidar2cam"):
        assert torch.equal(first["inputs"][key], again["inputs"][key]), key


def test_the_real_frame_gives_the_same_camera_inputs():
    """The real nuScenes frame's six images, at the synthetic cameras' size and crop, with a
    calibration that takes the reader's (x-forward) LiDAR frame to the right pixels: the same
    as projecting nuScenes' own frame through its full-size calibration, then scaling."""
    from bevdistill.data import (
        NuScenesBEVDataset,
        NuScenesReader,
        demo_info_path,
        demo_missing_message,
    )
    from bevdistill.data.nuscenes import load_infos
    from bevdistill.data.nuscenes_cameras import load_cameras

    info_path = demo_info_path()
    if info_path is None:
        pytest.skip(demo_missing_message())
    aligned = NuScenesReader(info_path)
    cams = load_cameras(aligned, 0)
    assert cams["imgs"].shape == (6, 3, 48, 96) and cams["imgs"].dtype == np.uint8
    assert cams["imgs"].std() > 20  # a photograph, not a blank
    raw_points = NuScenesReader(info_path, align_forward=False).load_points(0)[:, :3].astype(float)
    points = aligned[0]["points"][:, :3].astype(float)
    info = load_infos(info_path)["data_list"][0]["images"]
    for i, name in enumerate(CAMERA_NAMES):
        l2c, k = np.asarray(info[name]["lidar2cam"]), np.asarray(info[name]["cam2img"])
        q = raw_points @ l2c[:3, :3].T + l2c[:3, 3]
        front = q[:, 2] > 1
        full = (q[front] @ k.T)[:, :2] / q[front, 2:3]
        expected = full * 96 / 1600 - np.array([0.0, 54 - 48])  # scale, then crop 6 rows
        q2 = points @ cams["lidar2cam"][i, :3, :3].T + cams["lidar2cam"][i, :3, 3]
        got = (q2[front] @ cams["cam2img"][i].T)[:, :2] / q2[front, 2:3]
        np.testing.assert_allclose(got, expected, atol=0.02)
    ds = NuScenesBEVDataset(str(info_path), point_cloud_range=RANGE, cameras=True)
    batch = bev_collate([ds[0]])
    assert batch["inputs"]["imgs"].shape == (1, 6, 3, 48, 96)
