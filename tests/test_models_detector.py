"""PillarBEVDetector end to end: BEVFusion's layer names and output types, the mmengine API,
presets, config errors, learning (overfitting one batch) and grid alignment."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS
from toy_scene import toy_batch

from bevdistill.data.classes import CLASS_NAMES
from bevdistill.models import PRESETS, PillarBEVDetector, build_detector, list_presets, preset_path
from bevdistill.models import build as build_module
from bevdistill.models.build import model_config

# A small detector for fast tests: 0.5 m pillars over 32 m (64 x 64), heatmap 32 x 32 of 1 m.
SMALL = dict(
    type="PillarBEVDetector",
    point_cloud_range=[-16.0, -16.0, -5.0, 16.0, 16.0, 3.0],
    voxel_size=[0.5, 0.5, 8.0],
    pts_voxel_layer=dict(max_points_per_pillar=10, max_pillars=4000),
    pts_voxel_encoder=dict(type="PillarFeatureNet", feat_channels=[16]),
    pts_middle_encoder=dict(type="PointPillarsScatter"),
    pts_backbone=dict(type="SECOND", out_channels=[16, 32], layer_nums=[1, 1], layer_strides=[2, 2]),
    pts_neck=dict(type="SECONDFPN", out_channels=[16, 16], upsample_strides=[1, 2]),
    bbox_head=dict(type="CenterPointHead", shared_channels=16, num_head_convs=0),
)
SCENE = dict(num_objects=5, extent=13.0, beams=16, azimuth_steps=360, max_range=20.0)


def small(**changes) -> dict:
    cfg = copy.deepcopy(SMALL)
    for key, value in changes.items():
        part, _, field = key.partition("__")
        if field:
            cfg[part][field] = value
        else:
            cfg[part] = value
    return cfg


@pytest.fixture
def model() -> PillarBEVDetector:
    torch.manual_seed(0)
    return build_detector(SMALL)


# ----------------------------------------------------------------------------- structure
def test_layer_names_and_output_types(model):
    inputs, _ = toy_batch(2, seed=0, **SCENE)
    seen = {}
    hooks = [
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
        for name in ("pts_voxel_encoder", "pts_middle_encoder", "pts_backbone", "pts_neck")
    ]
    hooks.append(model.bbox_head.heatmap_head.register_forward_hook(lambda m, i, o: seen.__setitem__("hm", o)))
    out = model(inputs, mode="tensor")
    for h in hooks:
        h.remove()
    assert seen["pts_voxel_encoder"].dim() == 2 and seen["pts_voxel_encoder"].shape[1] == 16
    assert isinstance(seen["pts_middle_encoder"], torch.Tensor)
    assert seen["pts_middle_encoder"].shape == (2, 16, 64, 64)
    assert isinstance(seen["pts_backbone"], tuple) and len(seen["pts_backbone"]) == 2
    assert [tuple(s.shape) for s in seen["pts_backbone"]] == [(2, 16, 32, 32), (2, 32, 16, 16)]
    assert isinstance(seen["pts_neck"], list) and len(seen["pts_neck"]) == 1
    assert seen["pts_neck"][0].shape == (2, 32, 32, 32)
    assert seen["hm"] is out["heatmap"] and out["heatmap"].shape == (2, len(CLASS_NAMES), 32, 32)
    assert {k: v.shape[1] for k, v in out.items()} == {"heatmap": 3, "reg": 2, "height": 1, "dim": 3, "rot": 2}
    assert model.out_size_factor == 2
    torch.testing.assert_close(model.extract_feat(inputs), seen["pts_neck"][0])
    # The heatmap starts at CenterPoint's prior (bias -2.19: probability ~0.1).
    assert model.bbox_head.heatmap_head[-1].bias.tolist() == pytest.approx([-2.19] * 3)


def test_registered_in_mmengine_models():
    assert MODELS.get("PillarBEVDetector") is PillarBEVDetector
    for name in ("PillarFeatureNet", "PointPillarsScatter", "SECOND", "SECONDFPN", "CenterPointHead"):
        assert MODELS.get(name) is not None


def test_pillar_grid_and_target_grid_are_aligned(model):
    """Points at one box's centre light the BEV cell that the head's target puts the box in."""
    cx, cy = 5.3, -7.8
    points = torch.tensor([[cx, cy, -1.0, 10.0, 0.0]] * 3)
    sample = {"gt_boxes": torch.tensor([[cx, cy, -1.0, 4.0, 2.0, 1.5, 0.0]]), "gt_labels": torch.tensor([0])}
    model.eval()
    voxels, num_points, coors = model.pts_voxel_layer([points])
    bev = model.pts_middle_encoder(model.pts_voxel_encoder(voxels, num_points, coors), coors, 1)
    rows, cols = torch.nonzero(bev[0].abs().sum(0), as_tuple=True)
    assert (rows.tolist(), cols.tolist()) == ([int((cy + 16) / 0.5)], [int((cx + 16) / 0.5)])
    (target,) = model.bbox_head.get_targets([sample], torch.device("cpu"))
    w = model.bbox_head.feature_shape[1]
    assert divmod(int(target.inds[0]), w) == (rows.item() // 2, cols.item() // 2)


# ----------------------------------------------------------------------------- mmengine API
def test_mode_dispatch(model):
    inputs, samples = toy_batch(2, seed=1, **SCENE)
    losses = model(inputs, samples, mode="loss")
    assert set(losses) == {"loss_heatmap", "loss_bbox"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    model.eval()
    preds = model(inputs, samples, mode="predict")
    assert len(preds) == 2
    for p in preds:
        assert set(p) == {"boxes", "scores", "labels"}
        assert p["boxes"].shape[1] == 7 and p["labels"].dtype == torch.int64
        assert p["scores"].shape == p["labels"].shape == p["boxes"].shape[:1]
        assert (p["scores"][:-1] >= p["scores"][1:]).all()  # best first
    out = model(inputs)  # mode defaults to "tensor"
    assert isinstance(out, dict)
    doubled = model({"points": [p.double() for p in inputs["points"]]}, mode="tensor")
    torch.testing.assert_close(doubled["heatmap"], out["heatmap"])  # float64 clouds are cast
    with pytest.raises(ValueError, match="mode must be one of"):
        model(inputs, samples, mode="train")
    with pytest.raises(ValueError, match="one data sample per input"):
        model(inputs, None, mode="loss")


def test_train_and_val_step_through_mmengine(model):
    inputs, samples = toy_batch(2, seed=2, **SCENE)
    data = {"inputs": inputs, "data_samples": samples}  # what bev_collate produces
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    before = model.bbox_head.shared_conv[0].weight.detach().clone()
    log_vars = model.train_step(data, wrapper)
    assert "loss" in log_vars and "loss_heatmap" in log_vars
    assert not torch.equal(before, model.bbox_head.shared_conv[0].weight)
    model.eval()
    preds = model.val_step(data)
    assert len(preds) == 2 and "boxes" in preds[0]


def test_invisible_boxes_and_empty_samples(model):
    inputs, samples = toy_batch(2, seed=3, **SCENE)
    hidden = dict(samples[0], visible=torch.zeros_like(samples[0]["visible"]))
    empty_targets = model.bbox_head.get_targets([hidden], torch.device("cpu"))[0]
    assert empty_targets.inds.numel() == 0 and empty_targets.heatmap.sum() == 0
    # A sample without points and without boxes still trains and predicts.
    inputs["points"][1] = torch.zeros(0, 5)
    samples[1] = {"gt_boxes": torch.zeros(0, 7), "gt_labels": torch.zeros(0, dtype=torch.long)}
    losses = model(inputs, [hidden, samples[1]], mode="loss")
    sum(losses.values()).backward()
    assert losses["loss_bbox"].item() == 0.0 and torch.isfinite(losses["loss_heatmap"])
    model.eval()
    assert len(model(inputs, mode="predict")) == 2


def test_bad_inputs_say_what_to_do(model):
    with pytest.raises(KeyError, match="'points'"):
        model({"pts": []}, mode="tensor")
    with pytest.raises(TypeError, match="wrap a single cloud"):
        model({"points": torch.zeros(10, 5)}, mode="tensor")
    with pytest.raises(ValueError, match=r"\[N, >=4\]"):
        model({"points": [torch.zeros(10, 3)]}, mode="tensor")
    inputs, samples = toy_batch(1, seed=4, **SCENE)
    with pytest.raises(KeyError, match="gt_boxes"):
        model(inputs, [{"boxes": samples[0]["gt_boxes"]}], mode="loss")
    bad = dict(samples[0], gt_labels=torch.full_like(samples[0]["gt_labels"], 3))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model(inputs, [bad], mode="loss")


# ----------------------------------------------------------------------------- learning
def test_loss_falls_when_overfitting_one_batch():
    torch.manual_seed(0)
    model = build_detector(SMALL)
    inputs, samples = toy_batch(2, seed=5, **SCENE)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    totals = []
    for _ in range(30):
        losses = model(inputs, samples, mode="loss")
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert totals[-1] < 0.35 * totals[0], totals
    assert min(totals[-5:]) < min(totals[:5])
    # The overfitted model finds the objects it was trained on.
    model.eval()
    with torch.no_grad():
        preds = model(inputs, samples, mode="predict")
    for pred, sample in zip(preds, samples, strict=True):
        for gt, label in zip(sample["gt_boxes"], sample["gt_labels"], strict=True):
            same = pred["labels"] == label
            dist = (pred["boxes"][same, :2] - gt[:2]).norm(dim=1)
            assert same.any() and dist.min() < 1.0


# ----------------------------------------------------------------------------- presets
def test_presets_build_and_differ():
    teacher, student = build_detector("teacher"), build_detector("student")
    assert isinstance(teacher, PillarBEVDetector) and isinstance(student, PillarBEVDetector)
    assert teacher.grid.point_cloud_range == student.grid.point_cloud_range  # same world area
    assert teacher.grid.bev_shape == (256, 256) and student.grid.bev_shape == (128, 128)
    assert teacher.pts_voxel_encoder.out_channels == 48 and student.pts_voxel_encoder.out_channels == 32
    assert teacher.pts_backbone.out_channels == [32, 64, 128] and student.pts_backbone.out_channels == [32, 64]
    assert teacher.pts_neck.out_channels == 192 and student.pts_neck.out_channels == 64
    assert teacher.bbox_head.feature_shape == student.bbox_head.feature_shape == (64, 64)
    n_teacher = sum(p.numel() for p in teacher.parameters())
    n_student = sum(p.numel() for p in student.parameters())
    assert n_teacher > 4 * n_student
    assert build_detector(preset_path("student")).grid == student.grid  # a path works too
    assert build_detector(Config.fromfile(preset_path("student"))).grid == student.grid  # and a Config
    assert model_config("teacher")["type"] == "PillarBEVDetector"


def test_bevfusion_scale_preset_forward_at_batch_1():
    torch.manual_seed(0)
    model = build_detector("bevfusion_scale").eval()
    assert model.grid.bev_shape == (180, 180)
    assert model.pts_middle_encoder.out_channels == 256
    assert model.pts_backbone.out_channels == [128, 256] and model.pts_neck.out_channels == 512
    inputs, _ = toy_batch(1, seed=6, beams=8, azimuth_steps=200)
    with torch.no_grad():
        neck = model.extract_feat(inputs)
        out = model.bbox_head(neck)
    assert neck.shape == (1, 512, 180, 180)
    assert out["heatmap"].shape == (1, 3, 180, 180)


# ----------------------------------------------------------------------------- config errors
def test_unknown_preset_lists_the_presets():
    with pytest.raises(KeyError, match="bevfusion_scale, student, student_fusion, teacher, teacher_fusion"):
        build_detector("techer")
    with pytest.raises(KeyError, match="presets are the config files"):
        preset_path("big")
    with pytest.raises(KeyError, match="unknown preset"):
        preset_path("../configs/teacher")  # a name, not a path into or out of the folder
    with pytest.raises(TypeError, match="preset name, a path"):
        build_detector(42)
    with pytest.raises(KeyError, match="'model' dict"):
        build_detector({"point_cloud_range": [0] * 6})
    assert PRESETS == list_presets() == ("bevfusion_scale", "student", "student_fusion", "teacher",
                                          "teacher_fusion")


def test_a_preset_is_just_a_config_file(tmp_path, monkeypatch):
    """Adding bevdistill/configs/<name>.py is all it takes to add the preset <name>."""
    (tmp_path / "small.py").write_text(f"model = {SMALL!r}\n")
    (tmp_path / "_helper.py").write_text("x = 1\n")
    monkeypatch.setattr(build_module, "CONFIG_DIR", tmp_path)
    assert list_presets() == ("small",)
    assert preset_path("small") == tmp_path / "small.py"
    assert build_detector("small").grid.bev_shape == (64, 64)
    with pytest.raises(KeyError, match="small"):
        build_detector("_helper")


@pytest.mark.parametrize(
    "changes, error, match",
    [
        (dict(pts_backbone__in_channels=32), ValueError, "pts_backbone.in_channels"),
        (dict(bbox_head__num_classes=10), ValueError, "bbox_head.num_classes"),
        (dict(pts_neck__upsample_strides=[1, 1]), ValueError, "same stride"),
        (dict(pts_backbone__layer_strides=[2, 3], pts_neck__upsample_strides=[1, 3]), ValueError, "divisible"),
        (dict(voxel_size=[0.3, 0.3, 8.0]), ValueError, "whole number"),
        (dict(bbox_head__test_cfg=dict(nms_typ="circle")), KeyError, "nms_type"),
        (dict(bbox_head__test_cfg=dict(nms_type="rotated")), ValueError, "nms_type"),
        (dict(pts_backbone__type="ResNet"), KeyError, "ResNet"),
        (dict(pts_middle_encoder="PointPillarsScatter"), TypeError, "config dict"),
    ],
)
def test_inconsistent_configs_are_rejected(changes, error, match):
    with pytest.raises(error, match=match):
        build_detector(small(**changes))


def test_consistent_explicit_values_are_accepted():
    model = build_detector(small(pts_backbone__in_channels=16, bbox_head__in_channels=32))
    assert model.pts_backbone.in_channels == 16


def test_nms_variants_in_predict(model):
    """Without peak finding every cell of a blob is a detection: NMS must thin them to one each."""
    head = model.bbox_head
    h, w = head.feature_shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blob = lambda r, c: torch.exp(-((ys - r) ** 2 + (xs - c) ** 2) / 4.0)  # noqa: E731
    heat = torch.full((1, 3, h, w), -8.0)
    heat[0, 0] = torch.logit(0.9 * torch.maximum(blob(10, 10), blob(20, 25)).clamp_min(1e-4))
    preds = {
        "heatmap": heat, "reg": torch.full((1, 2, h, w), 0.5), "height": torch.full((1, 1, h, w), -1.0),
        "dim": torch.tensor([4.0, 2.0, 1.5]).log().view(1, 3, 1, 1).expand(1, 3, h, w),
        "rot": torch.tensor([0.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, h, w),
    }
    results = {}
    for nms in (None, "circle", "aabb"):
        head.test_cfg.update(nms_type=nms, peak_kernel=1, score_threshold=0.5, nms_radius=[3.0, 0.5, 0.5])
        results[nms] = head.predict(preds)[0]
    assert len(results[None]["scores"]) > 10
    for nms in ("circle", "aabb"):
        kept = results[nms]
        assert len(kept["scores"]) == 2, nms
        assert kept["scores"][0] == results[None]["scores"][0]  # the best survives
        centres = torch.tensor(sorted(kept["boxes"][:, :2].tolist()))
        expected = torch.tensor([[-5.5, -5.5], [9.5, 4.5]])  # cells (row 10, col 10), (20, 25) + 0.5
        torch.testing.assert_close(centres, expected)
    head.test_cfg.update(peak_kernel=3, nms_type=None)
    assert len(head.predict(preds)[0]["scores"]) == 2  # max-pool peaks alone also find two


# ----------------------------------------------------------------------------- the data contract
def test_a_batch_of_the_synthetic_world_trains_and_predicts():
    """Items of bevdistill.data, collated by bev_collate, go through mmengine's train/val steps."""
    data = pytest.importorskip("bevdistill.data", reason="bevdistill.data is not available")
    pcr = SMALL["point_cloud_range"]
    dataset = data.SyntheticBEVDataset("train", num_samples=2, seed=0, point_cloud_range=pcr)
    batch = data.bev_collate([dataset[0], dataset[1]])
    torch.manual_seed(0)
    model = build_detector(SMALL)
    log_vars = model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01)))
    assert torch.isfinite(log_vars["loss"])
    model.eval()
    preds = model.val_step(batch)
    assert len(preds) == 2 and preds[0]["boxes"].shape[1] == 7


def test_unlabelled_samples_add_no_detection_loss(model):
    inputs, samples = toy_batch(2, seed=7, **SCENE)
    model.train()
    torch.manual_seed(0)
    preds = model.bbox_head(model.extract_feat(inputs))
    first_only = model.bbox_head.loss({k: v[:1] for k, v in preds.items()}, samples[:1])
    mixed = model.bbox_head.loss(preds, [samples[0], {**samples[1], "labelled": False}])
    for key in first_only:
        assert torch.allclose(first_only[key], mixed[key]), key
    none = model.bbox_head.loss(preds, [{**s, "labelled": False} for s in samples])
    assert all(float(v) == 0.0 and v.requires_grad for v in none.values())
    full = model.bbox_head.loss(preds, samples)
    assert not torch.allclose(full["loss_heatmap"], first_only["loss_heatmap"])


# ----------------------------------------------------------------------------- direction classifier
def test_direction_classifier_is_an_option_that_leaves_old_weights_loadable(model):
    assert not any(k.startswith("bbox_head.dir_head") for k in model.state_dict())
    assert "dir" not in model.bbox_head(model.extract_feat(toy_batch(1, seed=1, **SCENE)[0]))
    torch.manual_seed(0)
    with_dir = build_detector(small(bbox_head__dir_classifier=True))
    missing = set(with_dir.state_dict()) - set(model.state_dict())
    assert missing and all(k.startswith("bbox_head.dir_head.") for k in missing)
    with_dir.load_state_dict(model.state_dict(), strict=False)  # the rest is the same network


def test_direction_loss_rewards_the_right_bin():
    from bevdistill.models.box_ops import direction_bin

    torch.manual_seed(0)
    model = build_detector(small(bbox_head__dir_classifier=True))
    inputs, samples = toy_batch(2, seed=7, **SCENE)
    preds = model.bbox_head(model.extract_feat(inputs))
    targets = model.bbox_head.get_targets(samples, torch.device("cpu"))
    losses = {}
    for name, sign in (("right", 1.0), ("wrong", -1.0)):
        logits = torch.zeros_like(preds["dir"])
        for b, t in enumerate(targets):
            yaw = torch.atan2(t.codes[:, 6], t.codes[:, 7])
            one_hot = torch.nn.functional.one_hot(direction_bin(yaw, math.pi / 4), 2).float()
            logits[b].view(2, -1)[:, t.inds] = sign * 4.0 * (2 * one_hot.t() - 1)
        losses[name] = float(model.bbox_head.loss({**preds, "dir": logits}, samples)["loss_dir"])
    assert losses["right"] < 0.01 < 1.0 < losses["wrong"]
    unlabelled = model.bbox_head.loss(preds, [{**s, "labelled": False} for s in samples])
    assert float(unlabelled["loss_dir"]) == 0.0 and unlabelled["loss_dir"].requires_grad
