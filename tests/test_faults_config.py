"""Fault suite, issue 23: config typos at every level, bad values, unreadable config files.

Each case ends in two lines and exit 2 naming the key (and the nearest known key for a typo);
before the fix a top-level typo trained on the defaults and was recorded as applied, a model
key typo was a TypeError from the model build, and a bad value a traceback from torch.
"""

from __future__ import annotations

import pytest
from test_faults import Faults

from bevdistill.engine.runner import DEFAULT_DATA, DEFAULT_SCHEDULE, EXPERIMENT_DIR, load_experiment
from bevdistill.engine.validate import DATA, NESTED, SCHEDULE, _resolve, known_keys
from bevdistill.errors import ExperimentConfigError


@pytest.fixture
def faults(record_property) -> Faults:
    return Faults(record_property)


def _train(tmp_path, *options: str, config: str = "train_student_ci", verb=("train", "student")):
    return [*verb, config, "--work-dir", str(tmp_path / "w"), "--max-iters", "2",
            "--cfg-options", *options]


@pytest.mark.parametrize("option, causes", [
    ("seeed=5", ["'seeed'", "did you mean 'seed'"]),
    ("shedule.lr=0.1", ["'shedule'", "did you mean 'schedule'"]),
    ("schedule.lrr=0.1", ["'schedule.lrr'", "did you mean 'schedule.lr'"]),
    ("data.batchsize=2", ["'data.batchsize'", "did you mean 'data.batch_size'"]),
    ("train_dataset.num_sample=3", ["'train_dataset.num_sample'", "'train_dataset.num_samples'"]),
    ("val_dataset.lidar.n_ring=16", ["'val_dataset.lidar.n_ring'", "'val_dataset.lidar.n_rings'"]),
    ("model.pts_backbone.out_chanels=[8,16]", ["'model.pts_backbone.out_channels'"]),
    ("model.bbox_head.test_cfg.max_nums=5", ["'model.bbox_head.test_cfg.max_num'"]),
    ("model.pts_neck.type=SECONDFNP", ["'SECONDFNP'", "'SECONDFPN'"]),
], ids=["top", "top_section", "schedule", "data", "dataset", "dataset_nested", "model_part",
        "model_untyped", "type"])
def test_a_typo_at_any_level_names_the_nearest_key(faults, tmp_path, capsys, option, causes):
    faults.cli(_train(tmp_path, option), capsys, *causes)
    assert not (tmp_path / "w" / "metrics.json").exists()  # nothing trained on the defaults


def test_a_distill_model_key_typo_is_caught_before_the_build(faults, tmp_path, capsys):
    faults.cli(_train(tmp_path, "model.teacher_ckp=None", config="distill_ci",
                      verb=("distill",)), capsys, "'model.teacher_ckp'",
               "did you mean 'model.teacher_ckpt'")


def test_a_typo_in_a_config_file_is_not_taken_for_a_helper_variable(faults, tmp_path, capsys):
    path = tmp_path / "mine.py"
    path.write_text(f"_base_ = ['{EXPERIMENT_DIR / 'train_student_ci.py'}']\n"
                    "shedule = dict(lr=1e-4)\nmy_range = [1, 2]\n")
    faults.cli(["train", "student", str(path), "--work-dir", str(tmp_path / "w")], capsys,
               "'shedule'", "did you mean 'schedule'")
    # a helper variable with a name of its own is fine, and so is setting it from the command line
    path.write_text(f"_base_ = ['{EXPERIMENT_DIR / 'train_student_ci.py'}']\nmy_range = [1, 2]\n")
    assert load_experiment(path, {"my_range": [3, 4]}).my_range == [3, 4]


@pytest.mark.parametrize("option, causes", [
    ("schedule.lr=-1", ["'schedule.lr'", "> 0", "-1"]),
    ("schedule.lr=0", ["'schedule.lr'", "> 0"]),
    ("schedule.lr=abc", ["'schedule.lr'", "a string"]),
    ("schedule.lr=nan", ["'schedule.lr'", "not finite"]),
    ("data.batch_size=0", ["'data.batch_size'", ">= 1"]),
    ("data.num_workers=-1", ["'data.num_workers'", ">= 0"]),
    ("schedule.max_iters=0", ["'schedule.max_iters'", ">= 1"]),
    ("schedule.warmup_iters=2.5", ["'schedule.warmup_iters'", "whole number"]),
    ("schedule.betas=[0.9,1.5]", ["'schedule.betas'", "< 1"]),
    ("schedule.grad_clip=-3", ["'schedule.grad_clip'", ">= 0"]),
    ("seed=-1", ["'seed'", ">= 0"]),
    ("amp=yes", ["'amp'", "True or False"]),
    ("log_level=LOUD", ["'log_level'", "WARNING"]),
])
def test_values_are_checked_by_type_and_range_before_anything_is_built(
        faults, tmp_path, capsys, option, causes):
    faults.cli(_train(tmp_path, option), capsys, *causes)
    assert not (tmp_path / "w").exists()  # refused before the work dir was made


@pytest.mark.parametrize("content, causes", [
    ("schedule = dict(lr=1e-3\n", ["line 2", "syntax error", "never closed"]),
    ("schedule = dict(lr=lrr)\n", ["NameError", "lrr"]),
    ("steps = 1000 // 0\n", ["ZeroDivisionError"]),
], ids=["syntax", "name", "raises"])
def test_a_config_file_that_does_not_parse(faults, tmp_path, capsys, content, causes):
    path = tmp_path / "broken.py"
    path.write_text(f"_base_ = ['{EXPERIMENT_DIR / 'train_student_ci.py'}']\n{content}")
    faults.cli(["train", "student", str(path)], capsys, str(path), *causes)


@pytest.mark.parametrize("name, content, kind", [
    ("broken.json", '{"role": "student", "model": {', "JSON"),
    ("broken.yaml", "role: student\nmodel: [unclosed\n", "YAML"),
])
def test_a_broken_json_or_yaml_config(faults, tmp_path, capsys, name, content, kind):
    path = tmp_path / name
    path.write_text(content)
    faults.cli(["train", "student", str(path)], capsys, str(path), kind)


@pytest.mark.parametrize("option, causes", [
    ("seed", ["'seed' is not KEY=VALUE", "--cfg-options seed=VALUE"]),
    ("=5", ["'=5' is not KEY=VALUE", "the key before '=' is empty"]),
])
def test_cfg_options_without_a_key_and_a_value(faults, tmp_path, capsys, option, causes):
    faults.cli(["train", "student", "train_student_ci", "--cfg-options", option], capsys, *causes)


@pytest.mark.parametrize("option, causes", [
    ("model.voxel_size=[0,1,8]", ["model cannot be built", "voxel_size", "[0.0, 1.0, 8.0]"]),
    ("train_dataset.num_samples=0", ["train_dataset cannot be built", "num_samples"]),
    ("val_dataset.min_points=-1", ["val_dataset cannot be built", "min_points"]),
])
def test_a_value_only_its_constructor_checks_ends_in_two_lines(faults, tmp_path, capsys, option,
                                                                 causes):
    faults.cli(_train(tmp_path, option, "log_level=WARNING"), capsys, *causes)


def test_the_validation_tables_match_what_the_runner_reads():
    """The rules cover exactly the runner's schedule and data keys, and every untyped nested
    dict names an argument of its class and a target that resolves (drift fails here)."""
    from mmengine.registry import DATASETS, MODELS

    assert set(SCHEDULE) == set(DEFAULT_SCHEDULE) and set(DATA) == set(DEFAULT_DATA)
    for (cls_name, arg), target in NESTED.items():
        cls = MODELS.get(cls_name) or DATASETS.get(cls_name)
        assert cls is not None and arg in known_keys(cls), (cls_name, arg)
        assert known_keys(_resolve(target)), target
    for name in ("train_student", "train_teacher", "distill", "distill_64to16beam"):
        load_experiment(name)  # the shipped configs pass their own checks
    with pytest.raises(ExperimentConfigError, match="'model.distill.alpha_att'"):
        load_experiment("distill_ci", {"model.distill.alpha_att": 1.0})
