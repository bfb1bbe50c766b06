"""The shipped mmdet3d configs: the GPU ones parse, build and name layers both models have; what
needs a GPU says so clearly on the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mmdet3d_support import CONFIG_DIR, require_mmdet3d_or_skip

require_mmdet3d_or_skip()

from mmengine.config import Config  # noqa: E402

from bevdistill.capture import resolve_hook_point  # noqa: E402
from bevdistill.distiller import DistillerBuildError  # noqa: E402
from bevdistill.mmdet3d.distiller import BEVDistiller, build_mmdet3d_model  # noqa: E402
from bevdistill.mmdet3d.train import is_mmdet3d_config  # noqa: E402

CENTERPOINT_NUS = CONFIG_DIR / "centerpoint_voxel01_to_pillar02_nus.py"
BEVFUSION_NUS = CONFIG_DIR / "bevfusion_lc_to_l_nus.py"


def test_every_shipped_config_routes_to_the_mmdet3d_runner():
    configs = sorted(CONFIG_DIR.glob("*.py"))
    assert len(configs) == 3
    assert all(is_mmdet3d_config(c) for c in configs)
    assert not is_mmdet3d_config(CONFIG_DIR.parent / "experiments" / "distill.py")


def test_centerpoint_nuscenes_config_pairs_a_voxel_teacher_with_a_pillar_student():
    cfg = Config.fromfile(str(CENTERPOINT_NUS))
    assert cfg.model.type == "BEVDistiller"
    teacher = build_mmdet3d_model(cfg.model.teacher, "teacher")
    student = build_mmdet3d_model(cfg.model.student, "student")
    assert type(teacher.pts_middle_encoder).__name__ == "SparseEncoder"
    assert type(student.pts_middle_encoder).__name__ == "PointPillarsScatter"
    layers = {layer for term in cfg.model.terms if term.get("reads") != "heatmaps"
              for layer in term["layers"]}
    assert layers == {"pts_middle_encoder", "pts_backbone", "pts_neck"}
    for model in (teacher, student):
        for name in [*layers, "pts_bbox_head"]:  # the heatmaps the mmdet3d driver names
            resolve_hook_point(model, name)
    # response KD compares heatmaps channel by channel: same tasks, same class order
    assert teacher.pts_bbox_head.class_names == student.pts_bbox_head.class_names
    # the student trains on mmdet3d's own nuScenes pipeline and metric, untouched
    assert cfg.val_evaluator.type == "NuScenesMetric"
    assert cfg.train_dataloader.dataset.dataset.type == "NuScenesDataset"


def test_sparse_conv_teacher_on_the_cpu_says_it_needs_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the dry forward runs there")
    cfg = Config.fromfile(str(CENTERPOINT_NUS))
    kwargs = {k: v for k, v in cfg.model.items() if k != "type"}
    with pytest.raises(DistillerBuildError, match="run only on a GPU"):
        BEVDistiller(**kwargs)


def _mmdet3d_checkout() -> Path:
    root = os.environ.get("MMDET3D_ROOT")
    if not root or not (Path(root) / "projects" / "BEVFusion" / "configs").is_dir():
        pytest.skip("BEVFusion's configs live in an mmdetection3d checkout: set MMDET3D_ROOT to one "
                    "(projects/BEVFusion) to check bevfusion_lc_to_l_nus.py")
    return Path(root)


def test_bevfusion_config_reads_both_models_from_the_checkout():
    _mmdet3d_checkout()
    cfg = Config.fromfile(str(BEVFUSION_NUS), import_custom_modules=False)
    teacher = cfg.model.teacher
    student = Config.fromfile(cfg.model.student, import_custom_modules=False).model
    assert teacher.type == student.type == "BEVFusion"
    assert teacher.img_backbone is not None and student.get("img_backbone") is None
    layers = {layer for term in cfg.model.terms if term.get("reads") != "heatmaps"
              for layer in term["layers"]}
    for layer in [*layers, "bbox_head.heatmap_head"]:  # the driver's heatmaps of TransFusion
        top = layer.split(".")[0]
        assert teacher.get(top) and student.get(top), layer
    # a camera teacher needs a real sample (with images) for the dry forward
    assert "img" in cfg.model.driver.probe.dataset.pipeline[-1]["keys"]
    assert "projects.BEVFusion.bevfusion" in cfg.custom_imports.imports
