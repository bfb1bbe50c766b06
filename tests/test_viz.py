"""bevdistill.viz: the pictures show the right things, the explorers react, results render."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bevdistill import AttentionTransferLoss, viz  # noqa: E402
from bevdistill.exercises import show_solution  # noqa: E402
from bevdistill.exercises.solutions import SOLUTIONS, solution_source  # noqa: E402
from bevdistill.models.tiny import TinyBEVDetector  # noqa: E402
from bevdistill.viz import results as vr  # noqa: E402

RANGE = (-25.6, -25.6, -5.0, 25.6, 25.6, 3.0)  # TinyBEVDetector's default
BOX = [4.0, 2.0, -1.0, 4.0, 2.0, 1.5, 0.0]  # a car facing +x


class Scenes:
    """A tiny dataset of random clouds with one or two labelled boxes each."""

    point_cloud_range = RANGE

    def __init__(self, n: int = 3):
        self.n = n
        self.reads = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        g = torch.Generator().manual_seed(i)
        points = torch.cat([torch.rand(800, 2, generator=g) * 40 - 20,
                            torch.randn(800, 1, generator=g) - 1,
                            torch.rand(800, 2, generator=g) * 30], dim=1)
        boxes = torch.tensor([BOX, [-6.0, -3.0, -1.0, 0.8, 0.7, 1.7, 1.0]][: 1 + i % 2])
        return {"inputs": {"points": points},
                "data_samples": {"gt_boxes": boxes, "gt_labels": torch.tensor([0, 1][: len(boxes)])}}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def model() -> TinyBEVDetector:
    torch.manual_seed(0)
    return TinyBEVDetector().eval()


def _lines(ax, style: str) -> list:
    return [ln for ln in ax.lines if ln.get_linestyle() == style]


# --- bev ----------------------------------------------------------------------------------------


def test_extent_and_footprint_geometry():
    assert viz.bev_extent(RANGE) == (-25.6, 25.6, -25.6, 25.6)
    with pytest.raises(ValueError, match="x0, y0, z0"):
        viz.bev_extent((0, 1, 2))
    corners = viz.box_footprints(torch.tensor([BOX]))[0]
    assert corners.shape == (4, 2)
    np.testing.assert_allclose(corners[[0, 3]].mean(axis=0), [6.0, 2.0])  # front edge at x + l/2
    turned = viz.box_footprints([[0, 0, 0, 4, 2, 1, np.pi / 2]])[0]
    np.testing.assert_allclose(turned[[0, 3]].mean(axis=0), [0.0, 2.0], atol=1e-9)  # faces +y
    assert viz.box_footprints(torch.zeros(0, 7)).shape == (0, 4, 2)
    with pytest.raises(ValueError, match=r"\[M, 7\]"):
        viz.box_footprints(torch.zeros(2, 5))


def test_boxes_drawn_with_class_colours_heading_and_style():
    _, ax = plt.subplots()
    drawn = viz.draw_boxes(ax, [BOX, BOX], [0, 2])
    assert len(drawn) == 4  # outline + heading line per box
    assert drawn[0].get_color() == viz.CLASS_COLOURS["car"]
    assert drawn[2].get_color() == viz.CLASS_COLOURS["cyclist"]
    pred = viz.draw_boxes(ax, [BOX], [1], scores=[0.87], kind="pred", annotate=True, colour="white")
    assert pred[0].get_linestyle() == "--" and pred[0].get_color() == "white"
    assert ax.texts[-1].get_text() == "0.87"
    with pytest.raises(ValueError, match="kind"):
        viz.draw_boxes(ax, [BOX], kind="detections")
    with pytest.raises(ValueError, match="2 labels"):
        viz.draw_boxes(ax, [BOX], [0, 1])


def test_points_are_cropped_and_thinned_deterministically():
    pts = torch.cat([torch.rand(5000, 3) * 100 - 50, torch.rand(5000, 2)], dim=1)
    _, ax = plt.subplots()
    first = viz.plot_points(ax, pts, max_points=1000, point_cloud_range=RANGE)
    second = viz.plot_points(ax, pts, max_points=1000, point_cloud_range=RANGE)
    offsets = first.get_offsets()
    assert len(offsets) == 1000
    assert np.abs(np.asarray(offsets)).max() <= 25.6
    np.testing.assert_array_equal(offsets, second.get_offsets())
    with pytest.raises(ValueError, match="colour_by"):
        viz.plot_points(ax, pts, colour_by="ring")


def test_plot_bev_draws_only_detections_above_threshold():
    item = Scenes()[0]
    pred = {"boxes": torch.tensor([BOX, BOX]), "scores": torch.tensor([0.9, 0.1]), "labels": torch.tensor([0, 1])}
    ax = viz.plot_sample(item, predictions=pred, score_threshold=0.3, point_cloud_range=RANGE)
    assert len(_lines(ax, "--")) == 2  # one detection: outline + heading
    assert len(_lines(ax, "-")) == 2  # one ground-truth box
    assert ax.get_xlim() == (-25.6, 25.6)
    with pytest.raises(KeyError, match="scores"):
        viz.plot_bev(item["inputs"]["points"], predictions={"boxes": torch.zeros(0, 7)})
    gt_boxes, gt_labels = item["data_samples"]["gt_boxes"], item["data_samples"]["gt_labels"]
    fig = viz.plot_detections(item["inputs"]["points"], gt_boxes, gt_labels, {"a": pred, "b": pred})
    assert len(fig.axes) == 2 and "found" in fig.axes[0].get_title()
    pts = item["inputs"]["points"]
    fig = viz.plot_detections({"a": pts, "b": pts[:10]}, gt_boxes, gt_labels, {"a": pred, "b": pred})
    assert len(fig.axes) == 2
    with pytest.raises(KeyError, match="same panels"):
        viz.plot_detections({"a": pts}, gt_boxes, gt_labels, {"a": pred, "b": pred})


def test_count_found_matches_one_to_one_by_class_and_distance():
    gt = torch.tensor([[0.0, 0, 0, 4, 2, 1.5, 0], [10.0, 0, 0, 4, 2, 1.5, 0]])
    labels = torch.tensor([0, 1])
    near = torch.tensor([[0.5, 0, 0, 4, 2, 1.5, 0]])
    pred = {"boxes": near.repeat(2, 1), "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([0, 0])}
    assert viz.count_found(pred, gt, labels) == 1  # two detections, one object: counted once
    assert viz.count_found({**pred, "labels": torch.tensor([1, 1])}, gt, labels) == 0  # class
    assert viz.count_found(pred, gt, labels, score_threshold=0.95) == 0
    far = {"boxes": torch.tensor([[13.0, 0, 0, 4, 2, 1.5, 0]]), "scores": torch.tensor([0.9]),
           "labels": torch.tensor([1])}
    assert viz.count_found(far, gt, labels) == 0 and viz.count_found(far, gt, labels, max_distance=3.5) == 1


# --- features -----------------------------------------------------------------------------------


def test_feature_map_unwraps_and_rejects_non_maps():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2, requires_grad=True)
    assert viz.feature_map((a, b)).shape == (2, 5, 2, 2)  # last scale by default
    assert not viz.feature_map((a, b)).requires_grad
    assert torch.equal(viz.feature_map([a], 0), a)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        viz.feature_map(torch.randn(2, 3))
    with pytest.raises(TypeError):
        viz.feature_map({"x": a})


def test_channel_summary_and_active_channels():
    x = torch.zeros(1, 4, 3, 3)
    x[0, 2] = 5.0
    x[0, 1, 0, 0] = 1.0
    mean, peak = viz.channel_summary(x)
    assert mean[1, 1] == pytest.approx(5.0 / 4) and peak[0, 0] == 5.0
    assert viz.active_channels(x, k=2) == [2, 1]


def test_attention_maps_are_what_the_loss_compares():
    torch.manual_seed(0)
    s, t = torch.randn(3, 4, 16, 12), torch.randn(3, 7, 32, 24)
    maps = viz.attention_maps(s, t, sample=None)
    assert maps["grid"] == (16, 12) and maps["teacher"].shape == (3, 16, 12)
    np.testing.assert_allclose((maps["teacher"] ** 2).reshape(3, -1).sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(maps["difference"], maps["student"] - maps["teacher"])
    assert maps["loss"] == pytest.approx(float(AttentionTransferLoss()(s, t)), rel=1e-5)
    one = viz.attention_maps(s, t, sample=1)
    assert one["loss"] == pytest.approx(float(AttentionTransferLoss()(s[1:2], t[1:2])), rel=1e-5)
    assert viz.attention_maps(t, t)["loss"] == pytest.approx(0.0, abs=1e-10)


def test_similarity_map_and_cell_lookup():
    assert viz.cell_of(0.1, -25.0, (-25.6, 25.6, -25.6, 25.6), (32, 32)) == (0, 16)
    with pytest.raises(ValueError, match="outside"):
        viz.cell_of(30.0, 0.0, (-25.6, 25.6, -25.6, 25.6), (32, 32))
    x = torch.randn(1, 6, 5, 5)
    x[0, :, 4, 4] = 2 * x[0, :, 1, 2]  # same direction as the query cell
    sim = viz.similarity_map(x, (1, 2), centre=False)
    assert sim[1, 2] == pytest.approx(1.0) and sim[4, 4] == pytest.approx(1.0)
    assert np.all(sim <= 1 + 1e-6) and np.all(sim >= -1 - 1e-6)
    # Centred: a vector shared by every cell (a ReLU offset) changes nothing.
    offset = x + 10 * torch.rand(1, 6, 1, 1)
    np.testing.assert_allclose(viz.similarity_map(offset, (1, 2)), viz.similarity_map(x, (1, 2)),
                               atol=1e-5)
    assert viz.similarity_map(offset, (1, 2), centre=False).min() > viz.similarity_map(x, (1, 2)).min()


def test_figures_have_the_expected_panels():
    feats = {"a": torch.rand(1, 20, 8, 8), "b": (torch.rand(1, 3, 4, 4), torch.rand(1, 5, 2, 2))}
    assert len(viz.plot_channel_grid(feats["a"], ncols=8).axes) == 16
    with pytest.raises(IndexError, match="20 channels"):
        viz.plot_channel_grid(feats["a"], channels=[25])
    fig = viz.plot_layer_summaries(feats, extent=(-1, 1, -1, 1), boxes=torch.tensor([[0, 0, 0, 0.5, 0.5, 1, 0]]))
    assert "b [5x2x2]" in fig.axes[2].get_title()  # the tuple's last scale
    fig = viz.plot_attention_comparison(torch.rand(1, 3, 8, 8), torch.rand(1, 9, 16, 16), layer="neck")
    titles = [ax.get_title() for ax in fig.axes]
    assert any("teacher attention (8x8)" in t for t in titles) and any("loss" in t for t in titles)


def test_capture_gives_one_map_per_layer_and_leaves_no_hook(model):
    inputs = {"points": [Scenes()[0]["inputs"]["points"]]}
    _, feats = viz.capture(model, inputs)
    assert [tuple(v.shape) for v in feats.values()] == [(1, 5, 32, 32), (1, 32, 16, 16), (1, 32, 32, 32)]
    assert not any(v.requires_grad for v in feats.values())
    model.train()
    losses, feats = viz.capture(model, inputs, [{"gt_heatmap": torch.zeros(3, 32, 32)}], mode="loss",
                                select={"pts_backbone": 0}, keep_graph=True)
    assert "loss_heatmap" in losses and feats["pts_backbone"].shape[1] == 16
    assert feats["pts_neck"].grad_fn is not None
    assert all(not m._forward_hooks for m in model.modules())


def test_feature_cache_runs_each_scene_once_and_restores_the_model(model):
    scenes = Scenes()
    model.train()
    cache = viz.FeatureCache(model, scenes, predict=False)
    first = cache(1)
    assert cache(1) is first and scenes.reads == 1
    assert set(first.features) == {"pts_middle_encoder", "pts_backbone", "pts_neck"}
    assert model.training and all(not m._forward_hooks for m in model.modules())
    preds_only = viz.FeatureCache(model, scenes, hook_points=())(0)
    assert preds_only.features == {} and preds_only.predictions is not None


# --- explorers ----------------------------------------------------------------------------------


def test_feature_explorer_follows_the_layer_and_redraws(model):
    scenes = Scenes()
    explorer = viz.feature_explorer(model, scenes)
    fig = explorer.render()
    assert "pts_middle_encoder" in fig.axes[0].get_title()
    assert explorer.controls["channel"].max == 4  # 5 channels in the scatter output
    before = explorer.renders
    explorer.controls["layer"].value = "pts_neck"
    assert explorer.controls["channel"].max == 31
    assert explorer.renders > before  # moving a control redraws
    explorer.controls["view"].value = "channel"
    explorer.controls["channel"].value = 7
    assert "channel 7" in explorer.render().axes[0].get_title()


def test_similarity_attention_and_scene_explorers(model):
    scenes = Scenes()
    sim = viz.similarity_explorer(model, scenes)
    assert sim.controls["obj"].max == 0
    sim.controls["scene"].value = 1  # scene 1 has two boxes
    assert sim.controls["obj"].max == 1
    assert "cosine similarity to object" in sim.render().axes[0].get_title()
    torch.manual_seed(1)
    att = viz.attention_explorer(TinyBEVDetector().eval(), model, scenes)
    assert any("loss" in ax.get_title() for ax in att.render().axes)
    scene = viz.scene_explorer(scenes, {"tiny": TinyBEVDetector(grid=(32, 32)).eval()})
    with pytest.raises(KeyError, match="'boxes', 'scores' and 'labels'"):
        scene.render()  # TinyBEVDetector.predict returns heatmaps, not boxes: said clearly
    assert "labelled objects" in viz.scene_explorer(scenes).render().axes[0].get_title()


def test_explorers_say_how_to_install_ipywidgets(monkeypatch, model):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ModuleNotFoundError, match=r"\[lab\]"):
        viz.feature_explorer(model, Scenes())


# --- results and solutions ----------------------------------------------------------------------


def test_benchmark_markdown_renders_any_result_file():
    data = {"command": "python -m benchmarks.x", "machine": {"torch": "2.13", "cpu": {"cores": 2}},
            "setup": {"grid": [64, 64]}, "rows": [{"b": 1, "loss": 0.123456}, {"b": 2, "extra": True}],
            "meets_target": True}
    text = vr.benchmark_markdown(data, title="x")
    assert "```bash\npython -m benchmarks.x\n```" in text
    assert "cpu.cores 2" in text
    assert "| b | loss | extra |" in text and "| 1 | 0.1235 |  |" in text
    assert "| setup.grid | [64, 64] |" in text and "| meets_target | True |" in text
    assert "does not record the command" in vr.benchmark_markdown({"rows": []})
    # the machine's own paths are not part of the command a reader reruns
    local = vr.benchmark_markdown({"command": "python -m benchmarks.x --work-root /srv/runs/x"})
    assert "```bash\npython -m benchmarks.x\n```" in local and "/srv" not in local
    for name in vr.list_benchmarks():
        text = vr.benchmark_markdown(name)
        command = text.split("```bash\n", 1)[1].split("\n```", 1)[0]
        assert "Reproduce with" in text and " /" not in command, (name, command)
    with pytest.raises(FileNotFoundError, match="known:"):
        vr.load_benchmark("no_such_benchmark")


def _gain_result() -> dict:
    """A distill_gain result in the file's schema, with numbers chosen by hand."""
    def row(option, budget, mAP, car, ped, cyc, seeds=(0, 1)):
        return {"scenario": "s", "option": option, "budget": budget, "split": "test",
                "seeds": list(seeds), "mAP_mean": mAP, "mAP_std": 0.01, "AP_car_mean": car,
                "AP_pedestrian_mean": ped, "AP_cyclist_mean": cyc, "gain": mAP - 0.4,
                "seed_spread": 0.01, "gain_exceeds_2x_spread": option != "baseline",
                "gap_recovered": (mAP - 0.4) / 0.2}
    teacher = {"mAP": 0.6, "AP_car": 0.9, "AP_pedestrian": 0.5, "AP_cyclist": 0.4}
    return {
        "scenarios": {"s": {"what": "a teacher that sees more", "teacher": {
            "test": teacher, "val": {**teacher, "mAP": 0.62}}}},
        "summary": [row("baseline", "converged", 0.4, 0.8, 0.3, 0.1),
                    row("kd", "converged", 0.5, 0.8, 0.4, 0.3),
                    row("mse", "converged", 0.45, 0.8, 0.35, 0.2, seeds=(0,))],
        "curves": {"s": {"baseline": {"0": [{"iter": 250, "mAP": 0.3}, {"iter": 500, "mAP": 0.4}],
                                      "1": [{"iter": 250, "mAP": 0.2}, {"iter": 500, "mAP": 0.4}]},
                         "kd": {"0": [{"iter": 250, "mAP": 0.35}, {"iter": 500, "mAP": 0.5}]}}},
    }


def test_gap_by_class_splits_the_teacher_student_gap():
    from bevdistill.viz import gain

    car, ped, cyc = gain.gap_by_class(_gain_result(), "s", "kd")
    # gaps: car 0.1, pedestrian 0.2, cyclist 0.3 of 0.6 in all; kd closes 0, 0.1 and 0.2
    assert car["share of the gap"] == "17%" and car["class gap recovered"] == "0%"
    assert ped["share of the gap"] == "33%" and ped["class gap recovered"] == "50%"
    assert cyc["share of the gap"] == "50%" and cyc["class gap recovered"] == "67%"
    with pytest.raises(KeyError, match="options"):
        gain.gap_by_class(_gain_result(), "s", "nope")
    with pytest.raises(ValueError, match="seeds"):  # one seed against the baseline's two
        gain.gap_by_class(_gain_result(), "s", "mse")
    with pytest.raises(KeyError, match="predates"):
        gain.gap_by_class({"results": []}, "s", "kd")


def test_portable_command_keeps_no_machine_path():
    from bevdistill.engine.report import portable_command

    cmd = ("python -m benchmarks.distill_gain --scenario two_sensor --teacher-ckpt "
           "/home/me/repo/bevdistill/assets/teacher_64beam.pth --work-root /tmp/runs --out "
           "/tmp/x.json --parallel 2")
    assert portable_command(cmd) == ("python -m benchmarks.distill_gain --scenario two_sensor "
                                     "--teacher-ckpt bevdistill/assets/teacher_64beam.pth "
                                     "--parallel 2")
    train = ("bevdistill distill distill_64to16beam --work-dir /runs/kd/seed0 --max-iters 20 "
             "--cfg-options seed=0 train_dataset.cache_dir=/runs/scan_cache "
             "model.teacher_ckpt=/wt/bench/bevdistill/assets/teacher_64beam.pth")
    assert portable_command(train) == ("bevdistill distill distill_64to16beam --max-iters 20 "
                                       "--cfg-options seed=0 model.teacher_ckpt="
                                       "bevdistill/assets/teacher_64beam.pth")


def test_best_option_and_labels_come_from_the_result_file():
    from bevdistill.viz import gain

    result = _gain_result()
    with pytest.raises(KeyError, match="best_option"):
        gain.best_option(result, "s")
    result["scenarios"]["s"]["best_option"] = "kd"
    result["scenarios"]["s"]["options"] = {"teacher_init": {"trained_alone": True},
                                           "kd": {"trained_alone": False}}
    assert gain.best_option(result, "s") == "kd"
    with pytest.raises(KeyError, match="no scenario"):
        gain.best_option(result, "nope")
    # one name per run, in tables and legends alike
    assert gain.run_label(result, "s", "baseline") == "student alone"
    assert gain.run_label(result, "s", "teacher_init") == "alone: teacher_init"
    assert gain.run_label(result, "s", "kd") == "distilled: kd"


def test_the_package_never_imports_the_benchmarks():
    """bevdistill reads benchmarks/results/*.json; the benchmarks import the package, never the
    reverse (a wheel has no benchmarks folder)."""
    root = Path(__file__).resolve().parents[1] / "bevdistill"
    importing = re.compile(r"^\s*(from\s+benchmarks[\s.]|import\s+benchmarks\b)|"
                           r"import_module\(\s*[\"']benchmarks|sys\.modules\[\s*[\"']benchmarks",
                           re.M)
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if importing.search(p.read_text())]
    assert not offenders, f"these modules import the benchmarks: {offenders}"
    assert importing.search("from benchmarks.runs import run_all")  # the check can fail
    assert importing.search("    import benchmarks")


def test_gain_table_and_plots_read_the_summary():
    from bevdistill.viz import gain

    table = gain.gain_table(_gain_result(), "s")
    assert "| distilled: kd | full schedule | 2 | 0.500 ± 0.010 |" in table
    assert "| +0.100 | 50% | yes |" in table and "| teacher |" in table
    assert "| n/a (1 seed) |" in table  # one seed has no spread to compare with
    iters, mean, std = gain.curve_band(_gain_result()["curves"]["s"]["baseline"])
    assert iters == [250, 500] and mean == pytest.approx([0.25, 0.4])
    assert std[1] == pytest.approx(0.0)
    ax = gain.plot_gain_curves(_gain_result(), "s")
    assert [line.get_label() for line in ax.get_lines()][-1] == "teacher"
    ax = gain.plot_class_bars(_gain_result(), "s", "kd")
    assert len(ax.patches) == 9  # 3 classes x (alone, distilled, teacher)
    plt.close("all")


def test_teacher_schedule_plot_draws_each_schedule_of_each_scenario():
    from bevdistill.viz import gain

    curve = lambda *maps: [{"iter": 500 * (i + 1), "mAP": m} for i, m in enumerate(maps)]  # noqa: E731
    result = {"scenarios": {"a": {"experiment": "train_a"}, "b": {"experiment": "train_b"}},
              "curves": {"a": {"retrained": curve(0.1, 0.2), "longer": curve(0.1, 0.2, 0.3, 0.4)},
                         "b": {"retrained": curve(0.5), "longer": curve(0.5, 0.6)}}}
    axes = gain.plot_teacher_schedule(result)
    assert [ax.get_title() for ax in axes] == ["a teacher (train_a)", "b teacher (train_b)"]
    labels = [line.get_label() for line in axes[0].get_lines()]
    assert labels == ["retrained: 1000 iterations", "longer: 2000 iterations"]
    assert list(axes[1].get_lines()[1].get_ydata()) == [0.5, 0.6]
    plt.close("all")


def test_show_benchmark_and_missing_results(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    vr.show_benchmark("no_such_benchmark", missing_ok=True)
    assert "python -m benchmarks.no_such_benchmark" in shown[0].data
    vr.show_benchmark("infonce_batch_size")
    assert "negatives_per_anchor" in shown[1].data
    with pytest.raises(FileNotFoundError):
        vr.show_benchmark("no_such_benchmark")


def test_solutions_show_the_teaching_source_and_name_the_reference(capsys):
    for step in SOLUTIONS:
        assert solution_source(step).startswith(f"# Reference solution of {step}")
    show_solution(3)  # outside Jupyter: printed, the short teaching version
    out = capsys.readouterr().out
    assert "class MyContrastiveLoss" in out and "Read further" in out
    assert "class Distiller" in solution_source("step6")
    with pytest.raises(KeyError, match="step1"):
        solution_source("step7")


class _Oracle:
    """Finds every object of the scene whose scan (either view) it is given."""

    def __init__(self, data):
        self.data = data

    def predict(self, inputs):
        cloud = inputs["points"][0]
        i = next(k for k in range(len(self.data))
                 if any(torch.equal(self.data[k]["inputs"][view], cloud)
                        for view in ("points", "teacher_points") if view in self.data[k]["inputs"]))
        s = self.data[i]["data_samples"]
        return [{"boxes": s["gt_boxes"], "labels": s["gt_labels"],
                 "scores": torch.ones(len(s["gt_labels"]))}]


class _Blind:
    """Finds nothing."""

    def predict(self, inputs):
        return [{"boxes": torch.zeros(0, 7), "labels": torch.zeros(0, dtype=torch.long),
                 "scores": torch.zeros(0)}]


def test_found_by_points_bins_objects_by_what_the_student_scan_holds():
    from bevdistill.data import SyntheticBEVDataset
    from bevdistill.viz import gain

    data = SyntheticBEVDataset(num_samples=2, point_cloud_range=(-32, -32, -5, 32, 32, 3),
                               lidar=dict(n_rings=16, n_azimuth=360),
                               teacher_lidar=dict(n_rings=32, n_azimuth=360))

    rows = gain.found_by_points(data, {"oracle": (_Oracle(data), "teacher_points"),
                                       "blind": (_Blind(), "points")})
    assert [r["student-scan points in the box"] for r in rows] == ["0", "1-4", "5-19", "20+"]
    total = sum(len(data[i]["data_samples"]["gt_labels"]) for i in range(2))
    assert sum(r["objects"] for r in rows) == total
    for r in rows:
        if r["objects"]:
            assert r["found by oracle"] == "100%" and r["found by blind"] == "0%"


def test_typical_scene_is_the_median_difference():
    from bevdistill.viz import gain

    assert gain.typical_scene([5, -1, 0, 2, 0]) == 4  # sorted: -1 (1), 0 (2), 0 (4), 2 (3), 5 (0)
    assert gain.typical_scene([3, 1, 2, 0]) == 1  # even count: the lower middle one (1)
    assert gain.typical_scene([7]) == 0
    assert gain.typical_scene([9, 0, 0, 0, -9]) != 0  # never the most different scene
    with pytest.raises(ValueError, match="num_scenes"):
        gain.typical_scene([])


def test_side_by_side_shows_the_typical_scene_of_the_compared_models():
    import matplotlib

    matplotlib.use("Agg")
    from bevdistill.data import SyntheticBEVDataset
    from bevdistill.viz import gain

    data = SyntheticBEVDataset(num_samples=3, point_cloud_range=(-32, -32, -5, 32, 32, 3),
                               lidar=dict(n_rings=16, n_azimuth=360))

    objects = [len(data[i]["data_samples"]["gt_labels"]) for i in range(3)]
    models = {"oracle": (_Oracle(data), "points"), "blind": (_Blind(), "points")}
    fig, index, differences = gain.side_by_side(data, models, compare=("oracle", "blind"))
    assert differences == objects and index == gain.typical_scene(objects)
    assert objects[index] == sorted(objects)[1]  # the median of three scenes
    assert len(fig.axes) >= 2 and f"found {objects[index]} of {objects[index]}" in fig.axes[0].get_title()
    _, _, reversed_differences = gain.side_by_side(data, models, compare=("blind", "oracle"))
    assert reversed_differences == [-n for n in objects]
    with pytest.raises(KeyError, match="not among the models"):
        gain.side_by_side(data, models, compare=("oracle", "teacher"))


def test_show_gain_shows_the_scenarios_asked_for(monkeypatch):
    import IPython.display
    import matplotlib

    matplotlib.use("Agg")
    from bevdistill.viz import gain

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj.data))
    gain.show_gain("distill_gain", scenarios=["two_sensor"])
    out = "\n".join(shown)
    assert "Scenario `two_sensor`" in out and "Scenario `few_labels`" not in out
    with pytest.raises(KeyError, match="no scenario"):
        gain.show_gain("distill_gain", scenarios=["no_such_scenario"])
