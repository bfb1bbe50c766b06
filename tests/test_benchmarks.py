"""The distillation benchmarks run end to end in their tiny --smoke mode and write the JSON
structure the reports rely on. No timing is asserted here: a shared CI machine cannot keep one."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import distill_gain, step_overhead
from bevdistill.models import build_detector

pytestmark = pytest.mark.filterwarnings("ignore")

GPU_CHECK = Path(step_overhead.__file__).with_name("gpu_check.sh")
REPO = Path(__file__).resolve().parents[1]


def test_step_overhead_smoke(tmp_path):
    out = tmp_path / "so.json"
    step_overhead.main(["--smoke", "--options", "combined", "--out", str(out)])
    record = json.loads(out.read_text())
    for key in ("command", "git_commit", "uncommitted_changes", "date", "duration_s", "machine",
                "preset", "goal_ratio", "memory_method", "options"):
        assert key in record, key
    assert record["memory_method"].startswith("torch.profiler")
    assert record["machine"]["cpu_count"] >= 1 and "torch" in record["machine"]
    assert record["command"].startswith("python -m benchmarks.step_overhead --smoke")
    (row,) = record["options"]
    assert row["option"] == "combined"
    # every row carries its own provenance: the tree can change during a long run
    assert row["commit"] == record["git_commit"] and row["dirty"] in (True, False, None)
    assert row["started"] >= record["date"] and 0 < row["duration_s"] <= record["duration_s"]
    for mode in ("reference", "distill"):
        assert row[mode]["wall_s"] > 0 and row[mode]["cpu_s"] > 0
        # the memory of a step, not of model building: the step allocates, and its peak
        # includes what the student part of the step holds after the teacher's forward
        mem = row["memory"][mode]
        assert 0 < mem["after_teacher_bytes"] <= mem["peak_bytes"]
        assert len(mem["per_step"]) == step_overhead.MEMORY_STEPS
    assert row["memory_ratio"] == pytest.approx(
        row["memory"]["distill"]["peak_bytes"] / row["memory"]["reference"]["peak_bytes"])
    assert row["ratio_of_medians_wall"] == pytest.approx(
        row["distill"]["wall_s"] / row["reference"]["wall_s"])
    low, high = row["ratio_wall_iqr"]
    assert 0 < low <= row["ratio_wall"] <= high  # the paired ratio's median within its IQR
    assert isinstance(row["meets_goal"], bool)
    assert row["hook_points"] == ["pts_backbone", "pts_neck"]


def test_step_overhead_builds_every_distillation_option():
    # the teacher_init_* options start the student from the teacher's weights, which a student
    # of another network cannot take; a step costs the same from any start
    for option in step_overhead.DISTILL_OPTIONS:
        distiller, batch = step_overhead.build("smoke", option, "cpu")
        assert batch and distiller.training


def test_gpu_check_parses_and_names_its_steps():
    """The GPU check cannot run here: at least its syntax, its plan and its stated duration."""
    subprocess.run(["bash", "-n", str(GPU_CHECK)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OUT_DIR", "PYTHON")}
    plan = subprocess.run(["bash", str(GPU_CHECK), "--dry-run"], capture_output=True, text=True,
                          check=True, timeout=60, env=env).stdout
    assert "papermill" in plan and "06_build_and_distill.ipynb" in plan and "-p MODE full" in plan
    assert "benchmarks.step_overhead --preset bevfusion_scale --device cuda" in plan
    assert "benchmarks.distill_gain --preset gpu" in plan
    assert "benchmarks.fusion_speed --device cuda" in plan
    assert "benchmarks.camera_speed" in plan
    assert plan.count("benchmarks/results/gpu/") == 5  # the notebook, four benchmarks' JSON
    assert "EXPECTED DURATION" in GPU_CHECK.read_text().split("set -euo pipefail")[0]


def test_gpu_check_without_cuda_stops_before_any_step(tmp_path):
    """No CUDA device (hidden here, whatever the machine has): a clear error, nothing run."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable,
           "OUT_DIR": str(tmp_path / "gpu")}
    done = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "sees no CUDA device" in done.stderr and "nothing was run" in done.stderr
    assert "==>" not in done.stdout  # no step started
    assert not (tmp_path / "gpu").exists()


def test_distill_gain_smoke_and_resume(tmp_path, capsys):
    teacher = build_detector(str(distill_gain.REPO_ROOT / "bevdistill" / "configs" /
                                 "experiments" / "train_teacher_ci.py"))
    ckpt = tmp_path / "teacher_ci.pth"
    torch.save({"state_dict": teacher.state_dict()}, ckpt)
    out, root = tmp_path / "dg.json", tmp_path / "runs"
    argv = ["--smoke", "--teacher-ckpt", str(ckpt), "--work-root", str(root), "--out", str(out)]
    distill_gain.main(argv)
    record = json.loads(out.read_text())
    result = record["scenarios"]["smoke"]
    assert result["seeds"] == [0] and result["budget"]["iters"] == 4
    # the schema the checks read: one row per (scenario, option, budget, split)
    keys = {(r["option"], r["budget"], r["split"]) for r in record["summary"]}
    assert keys == {(o, b, s) for o in ("baseline", "heatmap_kd")
                    for b in ("equal", "converged") for s in ("val", "test")}
    for row in record["summary"]:
        for key in ("scenario", "mAP_mean", "mAP_std", "gain", "seed_spread", "gap_recovered",
                    "seeds"):
            assert key in row, key
    test = {(r["option"], r["budget"]): r for r in record["summary"] if r["split"] == "test"}
    kd, base = test[("heatmap_kd", "converged")], test[("baseline", "converged")]
    assert kd["gain"] == pytest.approx(kd["mAP_mean"] - base["mAP_mean"])
    assert kd["gap_recovered"] == pytest.approx(
        kd["gain"] / (result["teacher"]["test"]["mAP"] - base["mAP_mean"]))
    assert result["best_option"] == "heatmap_kd" and result["chosen_on"].startswith("val")
    # every run is traced to a commit, and the first invocation reused nothing
    assert len(record["runs"]) == 7  # 2 trainings, 4 test scores, the teacher's test score
    for run in record["runs"]:
        assert {"commit", "dirty", "started", "duration_s", "reused"} <= set(run)
        assert run["reused"] is False and run["duration_s"] > 0
    assert [h["iter"] for h in record["curves"]["smoke"]["baseline"]["0"]] == [2, 4]

    capsys.readouterr()
    distill_gain.main(argv)  # everything is done: nothing reruns, same numbers
    assert "7 of 7 runs already done; 0 to go" in capsys.readouterr().out
    again = json.loads(out.read_text())
    assert again["summary"] == record["summary"]
    assert all(run["reused"] for run in again["runs"])


def test_distill_gain_reruns_a_run_of_another_commit(tmp_path, capsys):
    """A finished run from another commit is moved aside and run again, never mixed in."""
    from benchmarks.runs import PROVENANCE, RunSpec, run_all

    work = tmp_path / "run"
    spec = RunSpec("echo", [sys.executable, "-c", f"open({str(work / 'metrics.json')!r}, 'w')"],
                   work)
    (first,) = run_all([spec], parallel=1, env=dict(os.environ))
    assert first["reused"] is False
    prov = json.loads((work / PROVENANCE).read_text())
    (work / PROVENANCE).write_text(json.dumps({**prov, "commit": "0" * 40}))
    capsys.readouterr()
    (second,) = run_all([spec], parallel=1, env=dict(os.environ))
    assert second["reused"] is False and second["commit"] == prov["commit"]
    assert "made by commit 0000" in capsys.readouterr().out
    assert (tmp_path / "run.stale-1" / PROVENANCE).is_file()  # the old run is kept, not deleted


@pytest.mark.parametrize("name", ["few_labels", "scarce_labels"])
def test_few_labels_trains_the_student_alone_on_the_labelled_scenes_only(tmp_path, name):
    """The baseline sees the labelled scenes only; the distilled student sees every scene, the
    same labelled ones with their boxes and the rest without."""
    scenario = distill_gain.SCENARIOS[name]
    preset = distill_gain.PRESETS["cpu"]

    def args(option):
        cmd = distill_gain.train_command(scenario, preset, option, 0, tmp_path, tmp_path, None)
        return dict(a.split("=", 1) for a in cmd[cmd.index("--cfg-options") + 1:])

    alone, distilled = args("baseline"), args("mse_kd")
    assert alone["train_dataset.num_samples"] == str(scenario["labelled"])
    assert "train_dataset.labelled_samples" not in alone
    assert distilled["train_dataset.num_samples"] == str(preset["train_samples"])
    assert distilled["train_dataset.labelled_samples"] == str(scenario["labelled"])


def test_teacher_init_options_start_from_the_scenarios_teacher(tmp_path):
    """teacher_init trains the student alone from the teacher's weights; teacher_init_mse_kd
    distils into a student started from them; neither can run without a teacher."""
    scenario = distill_gain.SCENARIOS["two_sensor"]
    preset = distill_gain.PRESETS["cpu"]

    def command(option, teacher="/t/teacher.pth"):
        cmd = distill_gain.train_command(scenario, preset, option, 0, tmp_path, tmp_path, teacher)
        return cmd[3:5], dict(a.split("=", 1) for a in cmd[cmd.index("--cfg-options") + 1:])

    head, args = command("teacher_init")
    assert head == ["train", "student"] and args["init_from"] == "/t/teacher.pth"
    assert not any(k.startswith("model.") for k in args)
    head, args = command("teacher_init_mse_kd")
    assert head == ["distill", scenario["distill"]] and args["model.student_init"] == "teacher"
    assert args["model.teacher_ckpt"] == "/t/teacher.pth" and "init_from" not in args
    assert "init_from" not in command("baseline")[1]
    with pytest.raises(ValueError, match="needs a teacher checkpoint"):
        command("teacher_init", teacher=None)


def test_decay_options_build_a_distiller_whose_imitation_fades_to_zero():
    """The *_decay options reach the built terms: full weight until iteration 500, none after
    1500; the option without _decay keeps its weights."""
    from mmengine.registry import MODELS

    from benchmarks._distill_options import option_overrides
    from bevdistill.engine.runner import load_experiment, register_modules

    register_modules()

    def mse_term(option):
        overrides = {k: v for k, v in option_overrides(option, None).items()
                     if k != "model.student_init"}  # distill_ci's teacher is another network
        return MODELS.build(load_experiment("distill_ci", overrides).model).distill_loss.terms["mse"]

    decayed, kept = mse_term("teacher_init_mse_kd_decay"), mse_term("teacher_init_mse_kd")
    assert [decayed.schedule.factor(i) for i in (0, 500, 1000, 1500, 1999)] == [1, 1, 0.5, 0, 0]
    assert kept.schedule is None and decayed.weight == kept.weight == 10.0
    assert mse_term("mse_kd_decay").schedule == decayed.schedule


def test_heading_error_separates_flips_from_axis_errors():
    from benchmarks.heading_error import summarise

    rows = [(0, 0.1, 0.1 + math.pi, 0.2), (0, -3.0, -3.0 + math.pi, 0.3),  # flipped, axis exact
            (0, 0.5, 0.8, 0.9), (1, 1.0, 1.0, 1.0)]
    car, pedestrian = summarise(rows)["car"], summarise(rows)["pedestrian"]
    assert car["matched"] == 3 and car["flipped_share"] == pytest.approx(2 / 3)
    assert car["axis_error_median_rad"] == pytest.approx(0.0, abs=1e-9)
    assert car["error_median_rad"] == pytest.approx(math.pi)
    assert car["sincos_length_below_0.5"] == pytest.approx(2 / 3)
    assert pedestrian["error_mean_rad"] == 0.0 and "cyclist" not in summarise(rows)


def test_ship_students_reads_the_runs_the_result_file_reports(tmp_path):
    from benchmarks.ship_students import benchmark_extra

    run_dir = tmp_path / "kd" / "seed0"
    for budget, mAP in (("equal", 0.3), ("converged", 0.4)):
        (run_dir / f"test_{budget}").mkdir(parents=True)
        metrics = {"bev/mAP": mAP, **{f"bev/AP_{c}": mAP for c in ("car", "pedestrian", "cyclist")}}
        (run_dir / f"test_{budget}" / "metrics.json").write_text(json.dumps({"metrics": metrics}))
    (run_dir / "provenance.json").write_text(json.dumps({"commit": "abc"}))
    result = {"scenarios": {"s": {"provenance": {"command": "python -m benchmarks.distill_gain"},
                                  "budget": {"test_samples": 300}}},
              "runs": [{"scenario": "s", "name": "kd/seed0", "commit": "abc", "dirty": False}]}
    test = benchmark_extra(result, "s", "kd", 0, run_dir)["benchmark"]["test_split"]
    assert test["mAP_end_of_schedule"] == 0.4 and test["mAP_after_equal_budget"] == 0.3
    result["runs"][0]["commit"] = "def"  # the result file reports another run
    with pytest.raises(ValueError, match="ship the runs the result file reports"):
        benchmark_extra(result, "s", "kd", 0, run_dir)


def test_teacher_init_ablation_options_reach_the_built_terms():
    """Each of the teacher-start ablation options changes what it says it changes, and only that."""
    from mmengine.config import DictAction
    from mmengine.registry import MODELS

    from benchmarks._distill_options import cfg_option_args, option_overrides
    from bevdistill.engine.runner import load_experiment, register_modules

    register_modules()

    def built(option):
        overrides = {k: v for k, v in option_overrides(option, None).items()
                     if k != "model.student_init"}  # distill_ci's teacher is another network
        parser = argparse.ArgumentParser()
        parser.add_argument("--cfg-options", nargs="+", action=DictAction)
        parsed = parser.parse_args(["--cfg-options", *cfg_option_args(overrides)]).cfg_options
        return MODELS.build(load_experiment("distill_ci", parsed).model)

    kd, kd_t2 = built("teacher_init_kd"), built("teacher_init_kd_t2")
    assert [k.split(".")[0] for k in kd.loss_keys] == ["loss_kd"] == [
        k.split(".")[0] for k in kd_t2.loss_keys]
    assert (kd.distill_loss.terms["kd"].losses["heatmap"].temperature,
            kd_t2.distill_loss.terms["kd"].losses["heatmap"].temperature) == (1.0, 2.0)
    neck = built("teacher_init_mse_neck_kd_decay")
    assert sorted(neck.loss_keys) == ["loss_kd.heatmap", "loss_mse.pts_neck"]
    assert neck.distill_loss.terms["mse"].schedule.factor(1500) == 0.0
    light = built("teacher_init_mse_kd_light")
    assert (light.distill_loss.terms["mse"].weight, light.distill_loss.terms["kd"].weight) == (2.0, 1.0)
    assert light.distill_loss.terms["mse"].schedule is None
    for option in ("teacher_init_kd", "teacher_init_kd_t2", "teacher_init_mse_neck_kd_decay",
                   "teacher_init_mse_kd_light"):
        assert option_overrides(option, "t.pth")["model.student_init"] == "teacher"


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


def test_a_rewritten_result_file_does_not_make_the_tree_dirty(tmp_path):
    from benchmarks.provenance import tree_is_dirty

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "r.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "c")
    assert tree_is_dirty(tmp_path) is False
    (tmp_path / "benchmarks" / "results" / "r.json").write_text('{"new": 1}\n')
    assert tree_is_dirty(tmp_path) is False  # an output, not code
    (tmp_path / "code.py").write_text("x = 2\n")
    assert tree_is_dirty(tmp_path) is True


def test_teacher_schedule_retrains_the_cards_recipe(tmp_path):
    from benchmarks import teacher_schedule

    ckpt = tmp_path / "t.pth"
    card = {"experiment": "train_teacher_64beam", "iters": 3000, "seed": 0, "commit": "abc",
            "command": "bevdistill train teacher train_teacher_64beam --max-iters 3000 "
                       "--cfg-options train_dataset.num_samples=2000 val_dataset.num_samples=150 "
                       "data.num_workers=0 schedule.val_interval=500"}
    (tmp_path / "t_card.json").write_text(json.dumps(card))
    recipe = teacher_schedule.card_recipe(ckpt)
    # the training recipe is kept; what the benchmark sets itself (validation, workers) is not
    assert recipe["overrides"] == {"train_dataset.num_samples": "2000"}
    assert (recipe["experiment"], recipe["iters"]) == ("train_teacher_64beam", 3000)
    command = teacher_schedule.train_command(recipe, 6000, distill_gain.PRESETS["cpu"], 500,
                                             tmp_path / "run", tmp_path / "cache")
    assert command[command.index("--max-iters") + 1] == "6000"
    options = command[command.index("--cfg-options") + 1:]
    assert "train_dataset.num_samples=2000" in options and "val_dataset.split=val" in options
    assert "schedule.val_interval=500" in options and "data.num_workers=0" in options
    (tmp_path / "t_card.json").unlink()
    with pytest.raises(SystemExit, match="no card"):
        teacher_schedule.card_recipe(ckpt)


def test_the_shipped_teachers_cards_give_a_recipe():
    from benchmarks import teacher_schedule

    for name in ("two_sensor", "compression"):
        recipe = teacher_schedule.card_recipe(Path(distill_gain.SCENARIOS[name]["teacher_ckpt"]))
        assert recipe["iters"] > 0 and recipe["experiment"].startswith("train_teacher")


def test_choose_best_compares_gains_on_the_shared_seeds():
    """The option is chosen on the tuning split, by the paired gain on the seeds every option
    ran; students trained alone are references, never chosen; the held-out split plays no part."""
    def row(option, seeds, maps, split="val"):
        return {"scenario": "s", "option": option, "budget": "converged", "split": split,
                "seeds": seeds, "mAP_per_seed": maps, "mAP_mean": sum(maps) / len(maps)}

    # "wide" ran on 3 seeds, two of them hard; "lucky" on seed 0 only, with a higher mean mAP
    # but a smaller gain on seed 0, the seed both share: "wide" is chosen
    rows = [row("baseline", [0, 1, 2], [0.40, 0.30, 0.30]),
            row("wide", [0, 1, 2], [0.43, 0.31, 0.31]),
            row("lucky", [0], [0.42])]
    assert distill_gain.choose_best(rows, set()) == "wide"
    rows[2]["mAP_per_seed"] = [0.44]
    assert distill_gain.choose_best(rows, set()) == "lucky"
    rows.append(row("teacher_init", [0, 1, 2], [0.60, 0.50, 0.50]))
    assert distill_gain.choose_best(rows, set()) == "teacher_init"  # not marked: like any option
    assert distill_gain.choose_best(rows, {"teacher_init"}) == "lucky"
    rows.append(row("held_out_star", [0, 1, 2], [0.9, 0.9, 0.9], split="test"))
    assert distill_gain.choose_best(rows, {"teacher_init"}) == "lucky"  # test rows play no part
    assert distill_gain.choose_best([row("kd", [0], [0.5])], set()) is None  # no baseline


def test_choose_best_agrees_with_the_choice_the_result_files_record():
    """Where a file was made by the current rule, recomputing the choice from its rows gives the
    recorded ``best_option`` (distill_gain_scratch predates the shared-seeds rule)."""
    for name in ("distill_gain", "distill_gain_5k_decay", "distill_gain_long_teacher",
                 "distill_gain_ti_ablation", "distill_gain_foreground"):
        data = json.loads((REPO / "benchmarks" / "results" / f"{name}.json").read_text())
        for scenario, sc in data["scenarios"].items():
            rows = [r for r in data["summary"] if r["scenario"] == scenario]
            alone = {o for o, d in sc["options"].items() if d.get("trained_alone")}
            budget = "plateau" if sc.get("protocol") == "fair" else "converged"
            assert distill_gain.choose_best(rows, alone, budget) == sc["best_option"], (
                name, scenario)


def test_run_all_resumes_an_interrupted_benchmark(tmp_path, capsys):
    """After an interruption, the same commit and commands reuse every finished run; the run cut
    short (no provenance written) is moved aside and run again, and so is the run that reads it;
    a run whose command (config) changed is run again too."""
    from benchmarks.runs import PROVENANCE, RunSpec, run_all

    def spec(name, after=None, tag="a"):
        work = tmp_path / name
        write = f"open({str(work / 'metrics.json')!r}, 'w').write({tag!r})"
        return RunSpec(name, [sys.executable, "-c", write], work, after=after)

    specs = [spec("done"), spec("cut"), spec("cut_test", after="cut"), spec("changed")]
    first = run_all(specs, parallel=2, env=dict(os.environ))
    assert not any(r["reused"] for r in first)
    assert all(r["portable_command"].startswith("python -c") for r in first)
    (tmp_path / "cut" / PROVENANCE).unlink()  # killed before it finished: no provenance
    (tmp_path / "cut" / "partial.log").write_text("half a run")
    specs[3] = spec("changed", tag="b")  # another config for this run
    capsys.readouterr()
    second = {r["name"]: r for r in run_all(specs, parallel=2, env=dict(os.environ))}
    out = capsys.readouterr().out
    assert "1 of 4 runs already done; 3 to go" in out
    assert second["done"]["reused"] and second["done"]["started"] == first[0]["started"]
    assert not second["cut"]["reused"] and "rerun cut: not finished" in out
    assert not second["cut_test"]["reused"] and "rerun cut_test: its input was rerun" in out
    assert not second["changed"]["reused"] and "made by another command" in out
    assert (tmp_path / "cut.stale-1" / "partial.log").is_file()  # kept aside, not deleted
    assert (tmp_path / "changed" / "metrics.json").read_text() == "b"


@pytest.mark.filterwarnings("always")  # this module ignores warnings; this test counts them
def test_infonce_batch_size_measure_warns_nothing(recwarn):
    # a float() of a tensor that requires grad used to print a stray UserWarning per call
    from benchmarks import infonce_batch_size

    loss, grad, weight_grad = infonce_batch_size.measure("global", 2, "aligned", 0)
    assert loss > 0 and grad > 0 and weight_grad > 0
    assert not [w for w in recwarn if "requires_grad" in str(w.message)]


def test_options_are_composed_from_independent_settings_and_old_names_resolve():
    """An option is (start, terms, schedule); its name is composed and parsed in one place, so
    every run named in the shipped result files resolves and a new combination needs no row."""
    from benchmarks._distill_options import (
        NAMES,
        Option,
        option_name,
        option_overrides,
        parse_option,
    )

    for name in NAMES:
        assert option_name(parse_option(name)) == name
    assert parse_option("teacher_init_mse_neck_kd_decay") == Option("teacher", "mse_neck_kd", "decay")
    assert parse_option("baseline").trained_alone and parse_option("teacher_init").start == "teacher"
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    named = {option for path in results.glob("distill_gain*.json")
             for scenario in json.loads(path.read_text())["scenarios"].values()
             for option in scenario["options"]}
    assert "teacher_init_mse_neck_kd_decay" in named
    for option in named:
        parse_option(option)
    fresh = option_overrides("teacher_init_at_l2_decay", None)  # in no result file yet
    assert fresh["model.student_init"] == "teacher" and fresh["model.terms.1.weight"] == 2.0
    assert fresh["model.terms.1.schedule.decay_end"] == 1500
    with pytest.raises(ValueError, match=r"not \[teacher_init_\]<terms>\[_decay\]"):
        parse_option("mse_kdd")


def _curve(maps, every=500):
    return [{"iter": every * (i + 1), "mAP": m} for i, m in enumerate(maps)]


def test_plateau_check_on_synthetic_curves():
    """Plateau: over the last quarter of the schedule the mean tuning curve rises less than the
    seed spread of the final mAP (a fixed tolerance with one seed)."""
    from benchmarks._fair_protocol import extended_iters, plateau_check

    rising = plateau_check([_curve([0.1, 0.2, 0.3, 0.4])])  # +0.1 over iterations 1500-2000
    assert not rising["met"] and rising["rise"] == pytest.approx(0.1)
    assert (rising["from_iter"], rising["to_iter"], rising["threshold_is"]) == (1500, 2000,
                                                                               "tolerance")
    flat = plateau_check([_curve([0.1, 0.3, 0.400, 0.403])])
    assert flat["met"] and flat["threshold"] == 0.005
    assert not plateau_check([_curve([0.1, 0.3, 0.400, 0.403])], tolerance=0.001)["met"]
    # three seeds: a rise of 0.02 is inside a final spread of 0.03, not inside one of 0.005
    wide = [_curve([0.1, 0.2, 0.30, 0.32 + d]) for d in (-0.03, 0.0, 0.03)]
    check = plateau_check(wide)
    assert check["met"] and check["threshold_is"] == "seed spread"
    assert check["threshold"] == pytest.approx(0.03) and check["rise"] == pytest.approx(0.02)
    narrow = [_curve([0.1, 0.2, 0.30, 0.32 + d]) for d in (-0.005, 0.0, 0.005)]
    assert not plateau_check(narrow)["met"]
    # a curve validated only at the end cannot show a plateau
    sparse = plateau_check([_curve([0.4], every=2000)])
    assert not sparse["met"] and "validate more often" in sparse["why_not"]
    with pytest.raises(ValueError, match="one non-empty tuning curve per seed"):
        plateau_check([[]])
    assert [extended_iters(2000, 8000), extended_iters(6000, 8000), extended_iters(8000, 8000)] \
        == [4000, 8000, None]


def test_compute_matched_iterations_follow_the_measured_step_ratio():
    from benchmarks._fair_protocol import compute_matched_iters

    # the distilled step (teacher's forward included) takes 1.5x the student's: 3000 iterations
    # (a slow outlier step, 5 s, does not move the median)
    iters, ratio = compute_matched_iters(2000, [0.29, 0.30, 0.31, 5.0, 0.30], [0.20, 0.21, 0.19])
    assert iters == 3000 and ratio == pytest.approx(1.5)
    assert compute_matched_iters(2000, [0.1], [0.2]) == (1000, 0.5)  # a cheaper step: fewer
    assert compute_matched_iters(1000, [0.1], [0.1]) == (1000, 1.0)
    with pytest.raises(ValueError, match="logged seconds per iteration"):
        compute_matched_iters(1000, [], [0.1])


def test_fair_rows_compare_with_baselines_a_and_b_per_class():
    from benchmarks._fair_protocol import COMPUTE_MATCHED_OPTION as CM
    from benchmarks._fair_protocol import fair_rows

    def s(m):
        return {"mAP": m, "AP_car": m + 0.1, "AP_pedestrian": m, "AP_cyclist": m - 0.1}

    seeds = [0, 1, 2]
    scores = {}
    for split in ("val", "test"):
        scores[("baseline", split)] = {0: s(0.40), 1: s(0.42), 2: s(0.44)}
        scores[("combined", split)] = {0: s(0.46), 1: s(0.47), 2: s(0.51)}
        scores[(CM, split)] = {0: s(0.41), 1: s(0.43), 2: s(0.45)}
    rows = fair_rows("sc", {"baseline": seeds, "combined": seeds, CM: seeds}, scores,
                     {"test": s(0.62)}, {"baseline": [], "combined": ["loss_kd.heatmap"], CM: []},
                     {"combined": {"met": True}}, {"baseline": 4000, "combined": 4000, CM: 5200})
    row = next(r for r in rows if r["option"] == "combined" and r["split"] == "test")
    assert row["budget"] == "plateau" and row["terms"] == ["loss_kd.heatmap"]
    assert row["gain"] == pytest.approx(0.06) and row["gain_vs_compute_matched"] == pytest.approx(0.05)
    assert row["gap_recovered"] == pytest.approx(0.06 / (0.62 - 0.42))
    assert row["seed_spread"] == pytest.approx(statistics.stdev([0.46, 0.47, 0.51]))
    assert row["paired_spread"] == pytest.approx(statistics.stdev([0.06, 0.05, 0.07]))
    assert row["gain_exceeds_2x_spread"] and not row["gain_exceeds_2x_spread_vs_compute_matched"]
    car = row["per_class"]["car"]
    assert car["gain"] == pytest.approx(0.06) and car["paired_spread"] == pytest.approx(0.01)
    matched = next(r for r in rows if r["option"] == CM and r["split"] == "test")
    assert matched["budget"] == "compute_matched" and matched["iters"] == 5200
    assert next(r for r in rows if r["split"] == "val")["gap_recovered"] is None  # no val teacher


def test_pseudo_label_options_train_on_every_scan_and_need_unlabelled_ones(tmp_path):
    scenario = distill_gain.SCENARIOS["few_labels"]
    preset = distill_gain.PRESETS["cpu"]

    def args(option, sc=scenario):
        cmd = distill_gain.train_command(sc, preset, option, 0, tmp_path, tmp_path, "t.pth",
                                         pseudo_labels="pl.npz")
        return cmd[4], dict(a.split("=", 1) for a in cmd[cmd.index("--cfg-options") + 1:])

    head, alone = args("pseudo_label")
    assert head == "student" and alone["train_dataset.type"] == "PseudoLabelledDataset"
    assert alone["train_dataset.pseudo_labels"] == "pl.npz"
    assert alone["train_dataset.num_samples"] == str(preset["train_samples"])
    assert alone["train_dataset.labelled_samples"] == str(scenario["labelled"])
    _, both = args("combined_pseudo_label")
    assert both["train_dataset.type"] == "PseudoLabelledDataset" and "model.teacher_ckpt" in both
    with pytest.raises(ValueError, match="needs a scenario with unlabelled scans"):
        args("pseudo_label", distill_gain.SCENARIOS["two_sensor"])


def test_distill_gain_fair_protocol_smoke_and_resume(tmp_path, capsys):
    """The fair protocol end to end on CI models: every option extended once past its first
    schedule (a tolerance no curve meets, capped at 8 iterations, by resuming its checkpoint),
    the compute-matched student alone, pseudo-labels; rows follow the schema the book's check
    reads; a second invocation reuses every run."""
    from bevdistill.viz.findings import (
        check_summary,
        compared_options,
        fair_markdown,
        fair_numbers,
        fair_takeaway,
    )

    teacher = build_detector(str(distill_gain.REPO_ROOT / "bevdistill" / "configs" /
                                 "experiments" / "train_teacher_ci.py"))
    ckpt = tmp_path / "teacher_ci.pth"
    torch.save({"state_dict": teacher.state_dict()}, ckpt)
    out, root = tmp_path / "dg.json", tmp_path / "runs"
    argv = ["--smoke", "--protocol", "fair", "--labelled", "2", "--options", "combined",
            "pseudo_label", "--plateau-tolerance", "-1", "--plateau-cap", "8",
            "--teacher-ckpt", str(ckpt), "--work-root", str(root), "--out", str(out)]
    distill_gain.main(argv)
    record = json.loads(out.read_text())
    result = record["scenarios"]["smoke"]
    assert result["protocol"] == "fair" and result["labelled"] == 2
    for option in ("baseline", "combined", "pseudo_label"):
        plateau = result["plateau"][option]
        assert plateau["schedules"] == [4, 8] and plateau["met"] is False
    matched = result["compute_matched"]
    assert matched["matched_to"] == "combined" and matched["lead_iters"] == 8
    assert matched["iters"] == round(8 * matched["ratio"]) and matched["ratio"] > 0
    report = check_summary(record, strict=True)
    assert len(report.complete) == len(record["summary"]) == 8  # 4 options x 2 splits
    rows = {(r["option"], r["split"]): r for r in record["summary"]}
    assert rows[("combined", "test")]["terms"] == [
        "loss_at.pts_backbone", "loss_at.pts_neck", "loss_crd.pts_backbone", "loss_crd.pts_neck",
        "loss_kd.heatmap"]
    assert rows[("pseudo_label", "test")]["terms"] == [] and rows[("baseline", "val")]["iters"] == 8
    assert rows[("baseline_compute_matched", "test")]["budget"] == "compute_matched"
    assert {r["budget"] for r in record["summary"]
            if r["option"] != "baseline_compute_matched"} == {"plateau"}
    for row in record["summary"]:
        assert set(row["per_class"]) == {"car", "pedestrian", "cyclist"}
    assert compared_options(record, "smoke") == [
        "baseline", "combined", "baseline_compute_matched", "pseudo_label"]
    numbers = fair_numbers(record, "smoke")  # what chapter 6 and the Results chapter state
    test_rows = {r["option"]: r for r in record["summary"] if r["split"] == "test"}
    assert numbers["taught_map"] == test_rows["combined"]["mAP_mean"]
    assert numbers["cm_iters"] == matched["iters"] and numbers["labelled"] == 2
    assert numbers["taught_vs_pl"] == pytest.approx(
        test_rows["combined"]["mAP_mean"] - test_rows["pseudo_label"]["mAP_mean"])
    assert numbers["not_at_plateau"] == ["baseline", "combined", "pseudo_label"]
    text = fair_markdown(record, "smoke")
    assert f"{numbers['taught_map']:.3f}" in text and "still rose" in text
    takeaway = fair_takeaway(record, "smoke")
    assert len(takeaway.split()) <= 150 and f"{numbers['taught_rec']:.0%}" in takeaway
    assert [h["iter"] for h in record["curves"]["smoke"]["combined"]["0"]] == [2, 4, 6, 8]
    assert (root / "combined" / "seed0_it8" / "iter_4.pth").is_file()  # continued, not restarted
    assert "boxes" in result["pseudo_labels"]["metrics"]
    assert len(record["runs"]) == 13
    for run in record["runs"]:
        assert len(run["commit"]) == 40 and {"dirty", "started", "duration_s", "reused",
                                             "portable_command"} <= set(run)
        assert "/tmp" not in run["portable_command"] and not run["reused"]

    capsys.readouterr()
    distill_gain.main(argv)  # interrupted or not: the same curves give the same runs
    printed = capsys.readouterr().out
    assert "13 of 13 runs already done; 0 to go" in printed and "start " not in printed
    again = json.loads(out.read_text())
    assert again["summary"] == record["summary"] and all(r["reused"] for r in again["runs"])

    # where the distilled student gains: the same runs read again, per distance, class, points
    from benchmarks import distill_breakdown

    bd_out = tmp_path / "bd.json"
    bd = distill_breakdown.main(["--scenario", "smoke", "--result", str(out), "--out",
                                 str(bd_out), "--also", f"again={root / 'combined'}"]
                                )["scenarios"]["smoke"]
    assert bd["mAP_checked"]["again"] == bd["mAP_checked"]["combined"]  # the same run, found
    # by its folder as runs made outside the benchmark are
    for option in ("baseline", "baseline_compute_matched", "combined"):
        scored = test_rows[option]["mAP_per_seed"]
        assert list(bd["mAP_checked"][option].values()) == pytest.approx(scored, abs=2e-3)
    assert set(bd["difference"]) == {"baseline_compute_matched", "combined", "again"}
    assert set(bd["difference"]["combined"]["found_by_distance"]) == set(
        bd["summary"][0]["found_by_distance"])
    metrics = root / "combined" / "seed0_it8" / "test" / "metrics.json"
    scored = json.loads(metrics.read_text())
    scored["metrics"]["bev/mAP"] += 0.1  # another model than the one whose predictions we make
    metrics.write_text(json.dumps(scored))
    with pytest.raises(RuntimeError, match="would not describe the scored model"):
        distill_breakdown.main(["--scenario", "smoke", "--result", str(out), "--out", str(bd_out)])
    with pytest.raises(SystemExit, match="holds no scenario 'two_sensor'"):
        distill_breakdown.main(["--scenario", "two_sensor", "--result", str(out)])


@pytest.mark.parametrize("module", sorted(p.stem for p in (Path(__file__).parent.parent
                                                            / "benchmarks").glob("*.py")))
def test_every_benchmark_module_imports(module):
    """A renamed shared helper broke four benchmarks' imports unnoticed (none of them has a
    run in the tests): each module at least imports."""
    import importlib

    importlib.import_module(f"benchmarks.{module}")


def test_extend_runs_resumes_the_options_runs_as_the_fair_protocol_extends_them(tmp_path):
    """The longer schedule is the protocol's own extension (same command, --resume, the last
    checkpoint placed in a new folder), scored on the held-out split; nothing to resume or a
    shorter schedule is refused before anything runs."""
    from benchmarks import extend_runs

    scenario = distill_gain.SCENARIOS["fusion_to_lidar"]
    preset = {**distill_gain.PRESETS["cpu"], "iters": 2000, "eval_interval": 250}
    train, test = extend_runs.specs_for(scenario, preset, "combined", [1], 2000, 4000, tmp_path,
                                        tmp_path / "cache", "/t/teacher.pth")
    assert train.start_from == tmp_path / "combined" / "seed1" / "iter_2000.pth"
    assert train.work_dir == tmp_path / "combined_same_schedule" / "seed1_it4000"
    assert "--resume" in train.command and train.command[train.command.index("--max-iters")
                                                         + 1] == "4000"
    assert train.command[3:5] == ["distill", "distill_fusion_to_16beam"]
    assert test.after == train.name and str(train.work_dir / "iter_4000.pth") in test.command
    with pytest.raises(SystemExit, match="must exceed --from-iters"):
        extend_runs.main(["--scenario", "fusion_to_lidar", "--from-iters", "2000",
                          "--to-iters", "2000", "--work-root", str(tmp_path)])
    with pytest.raises(SystemExit, match="no checkpoint to resume"):
        extend_runs.main(["--scenario", "fusion_to_lidar", "--from-iters", "2000",
                          "--to-iters", "4000", "--work-root", str(tmp_path)])
    with pytest.raises(SystemExit, match="--option: option 'heatmap_kdd' is not"):
        extend_runs.main(["--scenario", "fusion_to_lidar", "--option", "heatmap_kdd",
                          "--from-iters", "2000", "--to-iters", "4000", "--work-root",
                          str(tmp_path)])


def test_distill_breakdown_says_which_result_file_is_missing(tmp_path):
    from benchmarks import distill_breakdown

    with pytest.raises(SystemExit, match="no result file .*none.json: run python -m "
                                         "benchmarks.distill_gain --scenario fusion_to_lidar"):
        distill_breakdown.main(["--result", str(tmp_path / "none.json"),
                                "--out", str(tmp_path / "bd.json")])
