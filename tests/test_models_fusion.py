"""BEVFusionDetector: BEVFusion's module names, shapes, the LSS view transform's geometry, the
optional camera branch, capture at fusion_layer and a few training steps through the runner."""

from __future__ import annotations

import math

import pytest
import torch

from bevdistill import FeatureRecorder
from bevdistill.data import CameraRig, SyntheticBEVDataset, bev_collate
from bevdistill.engine.runner import load_experiment, make_runner
from bevdistill.models import build_detector
from bevdistill.models.fusion import CAMERA_MODULES
from bevdistill.models.lss import LSSViewTransform

CI = "train_teacher_fusion_ci"
BEVFUSION_NAMES = ("img_backbone", "img_neck", "view_transform", "pts_voxel_encoder",
                   "pts_middle_encoder", "fusion_layer", "pts_backbone", "pts_neck", "bbox_head")


def _model_cfg(**changes) -> dict:
    cfg = load_experiment(CI).model.to_dict()
    cfg.pop("_delete_", None)
    cfg.update(changes)
    return cfg


def _build(seed: int = 0, **changes):
    torch.manual_seed(seed)
    return build_detector(_model_cfg(**changes))


@pytest.fixture(scope="module")
def batch():
    exp = load_experiment(CI)
    ds = SyntheticBEVDataset(**{k: v for k, v in exp.val_dataset.items() if k != "type"})
    return bev_collate([ds[0], ds[1]])


def test_modules_carry_bevfusion_names():
    names = dict(_build().named_modules())
    assert all(n in names for n in BEVFUSION_NAMES)
    assert "view_transform.depth" in names and "bbox_head.heatmap_head" in names


def test_forward_backward_shapes_and_gradients_reach_the_cameras(batch):
    model = _build().train()
    with FeatureRecorder(model, ["pts_middle_encoder", "view_transform", "fusion_layer",
                                 "view_transform.depth"]) as rec, rec.recording() as feats:
        losses = model(batch["inputs"], batch["data_samples"], mode="loss")
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    lidar, camera, fused = feats["pts_middle_encoder"], feats["view_transform"], feats["fusion_layer"]
    assert lidar.shape == (2, 16, 64, 64)  # 32 m / 0.5 m pillars, 16 pillar channels
    assert camera.shape == (2, 8, 64, 64)  # the camera map on the same grid
    assert fused.shape == lidar.shape  # the fuser returns the LiDAR map's channels
    depth = feats["view_transform.depth"]  # [B * 6, D bins, h, w]: 30 x 64 images at stride 4
    assert depth.shape == (12, 12, 8, 16)
    torch.testing.assert_close(depth.sum(1), torch.ones(12, 8, 16))
    for name in ("img_backbone", "view_transform", "fusion_layer", "pts_voxel_encoder"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name


def test_the_images_change_the_output(batch):
    model = _build().eval()
    with torch.no_grad():
        out = model(batch["inputs"], mode="tensor")
        dark = dict(batch["inputs"], imgs=torch.zeros_like(batch["inputs"]["imgs"]))
        out_dark = model(dark, mode="tensor")
    assert out["heatmap"].shape == (2, 3, 32, 32)  # the head's stride-2 grid, three classes
    assert not torch.allclose(out["heatmap"], out_dark["heatmap"])


def test_without_the_camera_branch_it_is_the_lidar_only_detector(batch):
    cfg = _model_cfg(**dict.fromkeys(CAMERA_MODULES))
    torch.manual_seed(0)
    fusion_off = build_detector(cfg).eval()
    torch.manual_seed(0)
    lidar_cfg = {k: v for k, v in cfg.items() if k not in CAMERA_MODULES}
    pillar = build_detector(dict(lidar_cfg, type="PillarBEVDetector")).eval()
    assert fusion_off.state_dict().keys() == pillar.state_dict().keys()
    assert fusion_off.img_backbone is None and fusion_off.fusion_layer is None
    lidar_only = {"points": batch["inputs"]["points"]}  # no images needed
    with torch.no_grad():
        a = fusion_off.predict(lidar_only)
        b = pillar.predict(lidar_only)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x["boxes"], y["boxes"])
    with pytest.raises(Exception, match="None in this BEVFusionDetector"):
        FeatureRecorder(fusion_off, ["fusion_layer"])


def test_a_partial_camera_branch_or_missing_images_are_refused(batch):
    with pytest.raises(ValueError, match="needs all of"):
        _build(fusion_layer=None)
    model = _build().eval()
    with pytest.raises(KeyError, match="cameras=True") as missing:
        model({"points": batch["inputs"]["points"]}, mode="tensor")
    from bevdistill.cli import user_error_message

    # a user's config (a dataset without cameras): the command line says it in one line
    assert user_error_message(missing.value).startswith("a fusion detector needs inputs")


def test_frustum_points_project_back_to_their_pixels():
    rig = CameraRig()
    vt = LSSViewTransform(8, 4, (-32, -32, -5, 32, 32, 3), (128, 128), feature_stride=8)
    cam2img = torch.from_numpy(rig.cam2img).float()[None]
    lidar2cam = torch.from_numpy(rig.lidar2cam).float()[None]
    points = vt.frustum_points((6, 12), cam2img, lidar2cam)  # [1, 6, D, 6, 12, 3]
    for cam in (0, 3):
        for bin_, row, col in ((0, 0, 0), (10, 5, 11), (43, 2, 7)):
            uv, depth = rig.project(points[0, cam, bin_, row, col][None].double().numpy(), cam)
            assert uv[0] == pytest.approx(((col + 0.5) * 8, (row + 0.5) * 8), abs=1e-3)
            assert depth[0] == pytest.approx(float(vt.depth_values[bin_]), abs=1e-3)


def test_splat_puts_a_pixel_at_its_depth_in_its_bev_cell():
    rig = CameraRig()
    vt = LSSViewTransform(8, 4, (-32, -32, -5, 32, 32, 3), (128, 128), feature_stride=8,
                          splat_stride=2)
    cam2img = torch.from_numpy(rig.cam2img).float()[None]
    lidar2cam = torch.from_numpy(rig.lidar2cam).float()[None]
    points = vt.frustum_points((6, 12), cam2img, lidar2cam)
    depth = torch.zeros(6, vt.num_bins, 6, 12)
    depth[0, 20, 4, 6] = 1.0  # the front camera, one pixel below the horizon, all at bin 20
    context = torch.arange(1.0, 5.0).view(1, 4, 1, 1).expand(6, 4, 6, 12)
    bev = vt.splat(depth, context, points)  # [1, 4, 64, 64], 1 m cells
    x, y, _ = points[0, 0, 20, 4, 6].tolist()
    nonzero = bev[0, 0].nonzero().tolist()
    assert nonzero == [[math.floor(y + 32), math.floor(x + 32)]]  # rows along y, columns along x
    torch.testing.assert_close(bev[0, :, nonzero[0][0], nonzero[0][1]], torch.arange(1.0, 5.0))
    assert 20 < x < 23 and abs(y) < 3  # 21.5 m ahead (bin centre), near the optical axis


def test_presets_give_the_fusion_teacher_and_its_lidar_only_twin():
    fusion, lidar = build_detector("teacher_fusion"), build_detector("teacher")
    assert fusion.with_camera
    shared = {k: v.shape for k, v in fusion.state_dict().items() if k in lidar.state_dict()}
    assert shared == {k: v.shape for k, v in lidar.state_dict().items()}  # every LiDAR weight
    extra = {k.split(".")[0] for k in fusion.state_dict() if k not in lidar.state_dict()}
    assert extra == set(CAMERA_MODULES)


def test_a_few_training_steps_through_the_runner(tmp_path):
    exp = load_experiment(CI, {"train_dataset.num_samples": 4, "val_dataset.num_samples": 2})
    runner = make_runner(exp, tmp_path / "fusion", max_iters=3)
    before = {k: v.clone() for k, v in runner.model.img_backbone.state_dict().items()}
    runner.train()
    loss = runner.message_hub.get_scalar("train/loss").current()
    assert math.isfinite(loss)
    after = runner.model.img_backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the cameras trained


def test_the_distiller_runs_a_fusion_teacher_into_a_lidar_student(batch):
    """The pillar-detector contract holds: the Distiller takes the fusion teacher as it is,
    given a dry-run batch with cameras (the teacher's own example_inputs)."""
    from bevdistill import Distiller

    teacher = _build()
    example = teacher.example_inputs()
    assert example["imgs"].shape == (2, 6, 3, 48, 96) and example["lidar2cam"].shape == (2, 6, 4, 4)
    student = load_experiment("train_teacher_ci").model.to_dict()
    student.pop("_delete_", None)
    distiller = Distiller(teacher=teacher, student=student, example_inputs=example,
                          hook_points=["pts_neck"])
    losses = distiller(batch["inputs"], batch["data_samples"], mode="loss")
    assert "loss_crd.pts_neck" in losses and all(torch.isfinite(v) for v in losses.values())
    camera_off = _build(**dict.fromkeys(CAMERA_MODULES))
    assert set(camera_off.example_inputs()) == {"points"}


def test_without_example_inputs_the_dry_run_adds_the_teachers_cameras(batch):
    """A LiDAR-only student's example batch has no images: the driver adds the fusion teacher's
    camera inputs, so the Distiller builds from configs alone (distill_fusion_to_16beam)."""
    from bevdistill import Distiller

    student = load_experiment("train_teacher_ci").model.to_dict()
    student.pop("_delete_", None)
    distiller = Distiller(teacher=_build(), student=student, hook_points=["pts_neck"])
    dry = distiller.driver.dry_inputs(distiller.student, distiller.teacher)
    assert {"points", "imgs", "cam2img", "lidar2cam"} <= set(dry)
    losses = distiller(batch["inputs"], batch["data_samples"], mode="loss")
    assert all(torch.isfinite(v) for v in losses.values())


def test_the_fusion_scenario_reads_one_scan_and_scores_the_twins_boxes():
    """distill_fusion_to_16beam: the teacher reads the student's own 16-beam scan (no
    teacher_points in the batch) plus the images, on the boxes the fusion teacher and the
    student alone (train_student_16beam) were trained and scored on."""
    distill = load_experiment("distill_fusion_to_16beam")
    alone, fusion = load_experiment("train_student_16beam"), load_experiment("train_fusion_16beam")
    for split in ("train_dataset", "val_dataset"):
        d = distill[split]
        assert d.view == "deployed" and d.cameras is True
        for other in (alone[split], fusion[split]):
            assert (d.lidar, d.teacher_lidar, d.point_cloud_range) == (
                other.lidar, other.teacher_lidar, other.point_cloud_range)
    assert distill.model.teacher.endswith("student_fusion.py")
    assert distill.model.teacher_ckpt.endswith("teacher_fusion.pth")


def test_the_fusion_teacher_takes_the_direction_classifier(batch):
    """World 2's direction bin is a head option, so the fusion preset gets it the way the
    LiDAR-only one does: from the same head config, or from a card that names it."""
    from bevdistill.pretrained import build_for_card

    head = dict(_model_cfg()["bbox_head"], dir_classifier=True)
    model = _build(bbox_head=head).train()
    losses = model(batch["inputs"], batch["data_samples"], mode="loss")
    assert "loss_dir" in losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.bbox_head.dir_head.parameters())
    assert all(p.grad is not None for p in model.view_transform.parameters())
    with torch.no_grad():
        assert model.eval()(batch["inputs"], mode="tensor")["dir"].shape == (2, 2, 32, 32)
        assert len(model.predict(batch["inputs"])) == 2
    card_model = build_for_card({"preset": "teacher_fusion", "dir_classifier": True})
    assert card_model.with_camera and card_model.bbox_head.dir_classifier
