"""The pipeline diagram names, by their names in the code, the hook points, projectors and
losses it shows (and they exist under those names); the ratio plots draw what they are given."""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import bevdistill  # noqa: E402
from bevdistill import viz  # noqa: E402
from bevdistill.models import build_detector  # noqa: E402
from bevdistill.viz import pipeline  # noqa: E402

NAMES = ["pts_middle_encoder", "pts_backbone", "pts_neck", "bbox_head.heatmap_head",
         "ProjectionMLP", "SpatialProjector", "loss_crd", "loss_at", "loss_kd",
         "AttentionTransferLoss", "ContrastiveLoss", "HeatmapDistillationLoss"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_the_diagram_names_every_hook_point_projector_and_loss():
    text = _texts(viz.draw_pipeline())
    for name in [*NAMES, "view_transform", "fusion_layer", "teacher BEV maps", "student BEV maps"]:
        assert name in text, f"the pipeline diagram does not name {name!r}"


def test_without_a_camera_branch_the_camera_hooks_are_left_out():
    text = _texts(viz.draw_pipeline(camera=False))
    assert "view_transform" not in text and "fusion_layer" not in text
    assert all(name in text for name in NAMES)


def test_the_names_it_shows_are_the_package_s():
    for name in ("ProjectionMLP", "SpatialProjector", "AttentionTransferLoss", "ContrastiveLoss",
                 "SpatialContrastiveLoss", "HeatmapDistillationLoss"):
        assert hasattr(bevdistill, name), name
    student = build_detector("student")
    for name, _ in pipeline.LIDAR_LAYERS:
        student.get_submodule(name)  # raises if the diagram names a layer the models lack


def test_it_draws_into_a_given_axes():
    fig, ax = plt.subplots()
    assert viz.draw_pipeline(ax) is fig
    assert len(ax.patches) > 10  # boxes were drawn


def test_ratio_bars_draw_one_bar_per_value_on_a_log_axis():
    ax = viz.plot_ratio_bars({"pts_neck": {"a": 1e-9, "b": 0.2}, "pts_backbone": {"a": 3e-3}},
                             reference={"equal pull": 1.0})
    assert ax.get_xscale() == "log" and len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "a"]
    assert any("1.0e-09" in t.get_text() for t in ax.texts)
    zero = viz.plot_ratio_bars({"g": {"none": 0.0, "some": 0.5}})
    assert len(zero.patches) == 1 and any("no gradient" in t.get_text() for t in zero.texts)
    with pytest.raises(ValueError, match=">= 0"):
        viz.plot_ratio_bars({"g": {"negative": -1.0}})


def test_attention_magnitude_plots_one_curve_per_variant_from_the_shipped_result():
    result = viz.load_benchmark("attention_magnitude")
    ax = viz.plot_attention_magnitude(result)
    variants = {r["variant"] for r in result["rows"]}
    labels = {line.get_label() for line in ax.get_lines()}
    assert variants <= labels
    with pytest.raises(KeyError, match="attention_magnitude"):
        viz.plot_attention_magnitude({"summary": []})
