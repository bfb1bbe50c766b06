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
