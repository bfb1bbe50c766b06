"""The shipped teacher loads, and its card's validation mAP is reproduced by the project's CLI."""

import json

import pytest

from benchmarks.ship import ship
from bevdistill import pretrained

CARD_FIELDS = ("command", "seed", "commit", "training_time_s", "iters", "val", "val_subset", "preset")


def test_card_records_how_the_teacher_was_made():
    card = pretrained.teacher_card()
    for field in CARD_FIELDS:
        assert field in card, f"model card lacks {field!r}"
    assert card["command"].startswith("bevdistill train teacher")
    metrics = card["val"]["metrics"]
    for name in ("car", "pedestrian", "cyclist"):
        assert f"bev/AP_{name}" in metrics, f"card lacks val AP for {name}"
    # A few MB, so it ships inside the package.
    assert pretrained.TEACHER_WEIGHTS.stat().st_size < 8 * 2**20


@pytest.mark.parametrize("card_path", sorted(pretrained.ASSETS.glob("*_card.json")),
                         ids=lambda p: p.name)
def test_shipped_cards_name_no_directory_of_the_machine_that_made_them(card_path):
    from bevdistill.engine.report import portable_command

    card = json.loads(card_path.read_text())
    commands = [card["command"], card["shipped_with"],
                card.get("benchmark", {}).get("made_by", "")]
    for command in commands:
        assert portable_command(command) == command, f"{card_path.name}: {command}"


def test_shipped_teacher_loads_in_eval_mode():
    model = pretrained.load_teacher()
    assert not model.training
    assert all(not m.training for m in model.modules())


@pytest.mark.slow
def test_card_val_subset_map_is_reproduced():
    card = pretrained.teacher_card()["val_subset"]
    metrics = pretrained.evaluate_subset(pretrained.TEACHER_WEIGHTS, card["num_samples"])
    for key in ("bev/mAP", "bev/AP_car", "bev/AP_pedestrian", "bev/AP_cyclist"):
        assert metrics[key] == pytest.approx(card["metrics"][key], abs=0.01), (
            f"{key}: evaluated {metrics[key]:.4f}, card says {card['metrics'][key]:.4f}"
        )


def test_missing_teacher_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "TEACHER_WEIGHTS", tmp_path / "teacher.pth")
    with pytest.raises(pretrained.TeacherNotShippedError, match="bevdistill train teacher"):
        pretrained.load_teacher()


def test_shipping_refuses_a_run_of_another_experiment(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"role": "student",
                                                       "config": "train_student"}))
    with pytest.raises(ValueError, match="teacher is trained with 'train_teacher'"):
        ship(tmp_path, out_dir=tmp_path)
    with pytest.raises(KeyError, match="no shipped model 'nope'"):
        ship(tmp_path, out_dir=tmp_path, name="nope")


def test_cards_name_their_world_and_cards_before_versions_mean_world_1():
    assert pretrained.card_world_version({}) == 1
    assert pretrained.card_world_version({"world_version": 2}) == 2
    card = pretrained.teacher_card()
    assert pretrained.shipped_world_version(pretrained.TEACHER_WEIGHTS) == \
        pretrained.card_world_version(card)


def test_the_teacher_subset_is_scored_on_its_cards_world(monkeypatch):
    from bevdistill.engine import evaluate

    seen = {}

    def fake_evaluate(exp, checkpoint, work_dir):
        seen["world"] = exp.val_dataset.world_version
        seen["num_samples"] = exp.val_dataset.num_samples
        return {"bev/mAP": 0.5}

    monkeypatch.setattr(evaluate, "evaluate_checkpoint", fake_evaluate)
    pretrained.evaluate_subset(pretrained.TEACHER_WEIGHTS, 3)
    assert seen == {"world": pretrained.card_world_version(pretrained.teacher_card()),
                    "num_samples": 3}


def test_a_card_builds_its_own_head():
    plain = pretrained.build_for_card({"preset": "student"})
    with_dir = pretrained.build_for_card({"preset": "student", "dir_classifier": True})
    assert not plain.bbox_head.dir_classifier and with_dir.bbox_head.dir_classifier
    assert any(k.startswith("bbox_head.dir_head.") for k in with_dir.state_dict())
