"""Notebook 1's fusion pictures: any step-1 wrapper records the four fusion hook points, the
plots take what a fusion model outputs and refuse other shapes by name, and a fusion model's
card builds and loads the fusion network."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bevdistill import pretrained, viz  # noqa: E402
from bevdistill.capture import BEVFusionDistillationWrapper  # noqa: E402
from bevdistill.data.camera import CAMERA_NAMES, CameraRig  # noqa: E402
from bevdistill.exercises.teaching.step1 import MyDistillationWrapper  # noqa: E402
from bevdistill.models import build_detector  # noqa: E402

EXTENT = (-32.0, 32.0, -32.0, 32.0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def fusion_model():
    torch.manual_seed(0)
    return build_detector("student_fusion").eval()


def _batch(model) -> dict:
    inputs = model.example_inputs(batch_size=1, num_points=1500)
    return {"inputs": inputs, "data_samples": [{}]}


# --- capture --------------------------------------------------------------------------------


@pytest.mark.parametrize("wrapper_cls", [BEVFusionDistillationWrapper, MyDistillationWrapper],
                         ids=["reference", "step-1 class"])
def test_any_step1_wrapper_records_the_fusion_hook_points(fusion_model, wrapper_cls):
    with torch.no_grad():
        _, features = viz.capture_fusion(wrapper_cls, fusion_model, _batch(fusion_model))
    assert set(features) == set(viz.FUSION_HOOK_POINTS)
    vt = fusion_model.view_transform
    assert features["view_transform.depth"].shape[:2] == (len(CAMERA_NAMES), vt.num_bins)
    grid = features["pts_middle_encoder"].shape[-2:]
    assert features["view_transform"].shape[-2:] == grid == features["fusion_layer"].shape[-2:]
    assert not any(v.requires_grad for v in features.values())  # recorded as a teacher
    hooks = [len(m._forward_hooks) for m in fusion_model.modules()]
    assert sum(hooks) == 0, "capture_fusion left hooks on the model"


def test_a_wrapper_with_fixed_layers_is_told_to_read_hook_points(fusion_model):
    class Fixed(MyDistillationWrapper):
        def __init__(self, model, is_student=False):
            self.HOOK_POINTS = MyDistillationWrapper.HOOK_POINTS  # ignores the subclass's
            super().__init__(model, is_student)

    with pytest.raises(KeyError, match="self.HOOK_POINTS"), torch.no_grad():
        viz.capture_fusion(Fixed, fusion_model, _batch(fusion_model))


def test_a_lidar_only_model_has_nothing_to_fuse():
    model = build_detector("student").eval()
    with pytest.raises(ValueError, match="no camera branch"):
        viz.capture_fusion(BEVFusionDistillationWrapper, model, {"inputs": {}, "data_samples": []})


# --- cameras and one ray ---------------------------------------------------------------------


def test_six_cameras_in_nuscenes_layout_with_the_ray_marked():
    images = torch.randint(0, 256, (6, 3, 48, 96), dtype=torch.uint8)
    fig = viz.plot_cameras(images, CAMERA_NAMES, mark=(0, 40.0, 20.0))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT",
                      "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]
    assert len(fig.axes[1].lines) == 1 and not fig.axes[0].lines  # the cross, on CAM_FRONT


def test_camera_images_of_the_wrong_shape_are_refused_by_name():
    with pytest.raises(ValueError, match=r"images must be \[N cameras, 3, H, W\]"):
        viz.plot_cameras(torch.zeros(3, 48, 96), CAMERA_NAMES)
    with pytest.raises(ValueError, match="6 images but 2 names"):
        viz.plot_cameras(torch.zeros(6, 3, 48, 96), CAMERA_NAMES[:2])


def test_the_ray_goes_through_the_nearest_visible_object():
    cal = CameraRig().calibration()
    boxes = np.array([[30.0, 0.0, -1.0, 4, 2, 1.5, 0.0],  # ahead, far
                      [12.0, 0.5, -1.0, 4, 2, 1.5, 0.0],  # ahead, near: the one
                      [-8.0, 0.0, -1.0, 4, 2, 1.5, 0.0]])  # behind the front camera
    ray = viz.pick_ray(boxes, cal["cam2img"], cal["lidar2cam"], (48, 96), camera=0)
    assert ray["box"] == 1
    assert 30 < ray["pixel"][0] < 66 and 0 <= ray["pixel"][1] < 48
    assert ray["depth"] == pytest.approx(12.0 - (1.70 - 0.944), abs=0.05)  # camera ahead of LiDAR
    none = viz.pick_ray(boxes[2:], cal["cam2img"], cal["lidar2cam"], (48, 96), camera=0)
    assert none == {"pixel": (48.0, 24.0), "depth": None, "box": None}


def test_ray_depth_reads_the_cell_that_holds_the_pixel():
    depth = torch.zeros(6, 44, 12, 24)
    depth[2, 7, 5, 10] = 1.0
    probs = viz.ray_depth(depth, (10 * 4 + 3, 5 * 4), feature_stride=4, camera=2)
    assert probs.shape == (44,) and probs[7] == 1.0 and probs.sum() == 1.0
    with pytest.raises(ValueError, match=r"\[N images, D, h, w\]"):
        viz.ray_depth(depth[0], (0, 0), feature_stride=4)
    with pytest.raises(IndexError, match="outside the 96 x 48 image"):
        viz.ray_depth(depth, (100, 0), feature_stride=4)


def test_ray_depth_plot_marks_the_expected_and_the_true_depth():
    values = torch.arange(1.0, 45.0) + 0.5
    probs = torch.softmax(-(values - 20.0) ** 2, dim=0)
    ax = viz.plot_ray_depth(probs, values, (40, 20), true_depth=20.0)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "expected depth 20.0 m" in labels and "labelled object's centre 20.0 m" in labels
    with pytest.raises(ValueError, match=r"must both be \[D\]"):
        viz.plot_ray_depth(probs[:-1], values, (40, 20))


# --- the three BEV maps ----------------------------------------------------------------------


def test_three_maps_side_by_side_with_boxes_and_detections():
    maps = [torch.rand(1, c, 16, 16) for c in (8, 4, 4)]
    boxes = torch.tensor([[5.0, 5.0, 0.0, 4.0, 2.0, 1.5, 0.3]])
    pred = {"boxes": boxes, "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
    fig = viz.plot_fusion_maps(*maps, EXTENT, boxes, torch.tensor([0]), predictions=pred)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title().split("\n")[0] for ax in panels] == [
        "camera BEV (view_transform)", "LiDAR BEV (pts_middle_encoder)", "fused (fusion_layer)"]
    assert "8 channels" in panels[0].get_title()
    styles = [line.get_linestyle() for line in panels[2].lines]
    assert "--" in styles and "-" in styles and "--" not in [ln.get_linestyle() for ln in
                                                            panels[0].lines]


def test_maps_on_different_grids_are_refused():
    with pytest.raises(ValueError, match="share one BEV grid"):
        viz.plot_fusion_maps(torch.rand(1, 4, 16, 16), torch.rand(1, 4, 8, 8),
                             torch.rand(1, 4, 16, 16), EXTENT)
    with pytest.raises(ValueError, match=r"BEV map \[B, C, H, W\]"):
        viz.plot_fusion_maps(torch.rand(4, 16, 16), torch.rand(1, 4, 16, 16),
                             torch.rand(1, 4, 16, 16), EXTENT)


# --- the shipped fusion teacher ----------------------------------------------------------------


def test_the_fusion_teacher_is_listed_with_a_fusion_preset():
    experiment, preset, _ = pretrained.SHIPPED["teacher_fusion"]
    assert (experiment, preset) == ("train_fusion_16beam", "student_fusion")
    message = pretrained.shipped_missing_message("teacher_fusion")
    assert "bevdistill train teacher train_fusion_16beam" in message
    assert "python -m benchmarks.ship runs/teacher_fusion --name teacher_fusion" in message


def test_a_shipped_fusion_run_loads_back_as_the_fusion_network(tmp_path):
    """ship() writes the card of a BEVFusionDetector run, and load_shipped's builder loads its
    weights strictly (every camera module included)."""
    from benchmarks.ship import ship
    from bevdistill.engine.checkpoint import read_state_dict

    torch.manual_seed(0)
    trained = pretrained.build_for_card({"preset": "student_fusion"})
    checkpoint = tmp_path / "iter_1.pth"
    torch.save({"state_dict": trained.state_dict()}, checkpoint)
    (tmp_path / "metrics.json").write_text(json.dumps({
        "role": "teacher", "config": "train_fusion_16beam", "config_path": "train_fusion_16beam",
        "checkpoint": str(checkpoint),
        "argv": "bevdistill train teacher train_fusion_16beam", "seed": 0,
        "commit": "0" * 40, "iters_done": 1, "duration_s": 1.0, "device": "cpu",
        "torch": torch.__version__, "world_version": 2,
        "cfg_options": {"val_dataset.num_samples": 4}, "metrics": {"bev/mAP": 0.0}}))
    card = ship(tmp_path, out_dir=tmp_path, name="teacher_fusion")
    assert card["model"] == "BEVFusionDetector" and card["preset"] == "student_fusion"
    model = pretrained.build_for_card(card)
    assert type(model).__name__ == "BEVFusionDetector" and model.with_camera
    model.load_state_dict(read_state_dict(tmp_path / "teacher_fusion.pth", "test"), strict=True)
    assert any(k.startswith("view_transform.") for k in model.state_dict())


def test_a_shipped_models_scenes_are_its_experiments(monkeypatch):
    card = {"experiment": "train_fusion_16beam", "world_version": 2}
    monkeypatch.setattr(pretrained, "shipped_card", lambda name: card)
    scenes = pretrained.shipped_val_scenes("teacher_fusion", 1)
    assert len(scenes) == 1 and scenes.cameras is not None
    assert scenes.simulator.config.n_rings == 16 and scenes.scene_config.world_version == 2
