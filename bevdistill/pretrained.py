"""The shipped teacher: a checkpoint trained by this project's own command, with its model card.

Learners see meaningful BEV features at once, without downloading anything. The card records
how the weights were made (command, seed, commit, training time) and the validation mAP,
including the mAP on a fixed validation subset that ``tests/test_pretrained.py`` reproduces.

Ship a new teacher from a finished training run::

    bevdistill train teacher train_teacher --work-dir runs/teacher --max-iters 1500
    python -m bevdistill.pretrained runs/teacher

A card's ``world_version`` names the synthetic world its model was trained and scored on (see
:class:`~bevdistill.data.SceneConfig`); cards without one predate world version 2 and mean 1.
Scoring a shipped model reproduces its card only on its own world (:func:`card_world_version`).

Every card records the SHA-256 of its weights (``weights_sha256``); the weights ``NAME.pth``
beside a card ``NAME_card.json`` are checked against it whenever they are loaded, here or as a
``teacher_ckpt``, since flipped bits in a checkpoint load silently otherwise.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ASSETS = Path(__file__).resolve().parent / "assets"
TEACHER_WEIGHTS = ASSETS / "teacher.pth"
TEACHER_CARD = ASSETS / "teacher_card.json"
TEACHER_EXPERIMENT = "train_teacher"  # the experiment config the teacher was trained with
SUBSET_SAMPLES = 48  # the fixed validation subset the card's reproducible mAP is measured on


class TeacherNotShippedError(FileNotFoundError):
    """The package was installed without its teacher asset."""


def teacher_available() -> bool:
    return TEACHER_WEIGHTS.is_file() and TEACHER_CARD.is_file()


def _require_teacher() -> None:
    if not teacher_available():
        raise TeacherNotShippedError(
            f"no shipped teacher at {TEACHER_WEIGHTS}; train one with `bevdistill train teacher "
            "train_teacher --work-dir runs/teacher` and ship it with "
            "`python -m bevdistill.pretrained runs/teacher`"
        )


def teacher_card() -> dict[str, Any]:
    """The model card: how the shipped teacher was trained and how well it detects."""
    _require_teacher()
    return json.loads(TEACHER_CARD.read_text())


def card_path(weights: str | Path) -> Path:
    """The model card of a shipped weights file: ``NAME.pth`` -> ``NAME_card.json`` beside it."""
    weights = Path(weights)
    return weights.with_name(f"{weights.stem}_card.json")


def card_world_version(card: dict[str, Any]) -> int:
    """The synthetic world a card's model was trained and scored on; 1 when the card predates
    world versions (the objects without a front and a back)."""
    return int(card.get("world_version", 1))


def shipped_world_version(weights: str | Path) -> int | None:
    """:func:`card_world_version` of the card beside shipped ``weights``; None without a card."""
    card = card_path(weights)
    return card_world_version(json.loads(card.read_text())) if card.is_file() else None


def build_for_card(card: dict[str, Any]) -> torch.nn.Module:
    """The untrained network of a card: its preset, with the card's ``dir_classifier`` (absent:
    False, the head the cards before the direction classifier were trained with)."""
    from bevdistill.models import build_detector
    from bevdistill.models.build import model_config

    cfg = model_config(card["preset"])
    cfg["bbox_head"] = {**cfg["bbox_head"], "dir_classifier": bool(card.get("dir_classifier"))}
    return build_detector(cfg)


def verify_shipped_weights(weights: str | Path) -> None:
    """Check ``weights`` against the SHA-256 in its model card, where it has a card with one."""
    from bevdistill.engine.checkpoint import verify_sha256

    card = card_path(weights)
    if not card.is_file():
        return
    expected = json.loads(card.read_text()).get("weights_sha256")
    if expected:
        verify_sha256(weights, expected, f"shipped weights (card {card.name})")


def load_teacher(device: str | torch.device = "cpu") -> torch.nn.Module:
    """The shipped teacher, built from its preset and loaded strictly, in eval mode."""
    from bevdistill.engine.checkpoint import read_state_dict

    _require_teacher()
    verify_shipped_weights(TEACHER_WEIGHTS)
    model = build_for_card(teacher_card())
    model.load_state_dict(read_state_dict(TEACHER_WEIGHTS, "shipped teacher"), strict=True)
    return model.to(device).eval()


def evaluate_subset(checkpoint: Path, num_samples: int = SUBSET_SAMPLES) -> dict[str, float]:
    """Val metrics of ``checkpoint`` on the first ``num_samples`` validation scenes (what
    ``bevdistill evaluate train_teacher CKPT --num-samples N`` computes)."""
    from bevdistill.engine.evaluate import evaluate_checkpoint
    from bevdistill.engine.runner import load_experiment

    exp = load_experiment(TEACHER_EXPERIMENT)
    exp.val_dataset.num_samples = num_samples
    world = shipped_world_version(checkpoint)
    if world is not None:  # the card's scores are on its own world
        exp.val_dataset.world_version = world
    with tempfile.TemporaryDirectory() as work_dir:
        return {k: float(v) for k, v in evaluate_checkpoint(exp, checkpoint, work_dir).items()}


# The models shipped beside the compression teacher: the two-sensor scenario's 64-beam teacher
# (and both teachers' twins trained twice as long), and the students of both benchmark arms (trained alone, distilled) that notebook 06 shows.
# name -> (experiment the weights were trained with, network preset, what it is).
SHIPPED: dict[str, tuple[str, str, str]] = {
    "teacher": ("train_teacher", "teacher", "compression teacher: wide, 0.25 m pillars"),
    "teacher_long": ("train_teacher", "teacher", "compression teacher trained twice as long as "
                     "teacher (3000 iterations, same recipe; benchmarks/teacher_schedule.py)"),
    "teacher_64beam": ("train_teacher_64beam", "student",
                       "two-sensor teacher: the student's network reading a 64-beam LiDAR"),
    "teacher_64beam_long": ("train_teacher_64beam", "student",
                            "two-sensor teacher trained twice as long as teacher_64beam (6000 "
                            "iterations, same recipe; benchmarks/teacher_schedule.py)"),
    "student_16beam": ("train_student_16beam", "student",
                       "two-sensor student trained alone on the 16-beam LiDAR (baseline)"),
    "student_16beam_distilled": ("distill_64to16beam", "student",
                                 "two-sensor student distilled from teacher_64beam (the "
                                 "benchmark's chosen option; its card names it)"),
    "student": ("train_student", "student",
                "compression student trained alone: narrow, 0.5 m pillars (baseline)"),
    "student_distilled": ("distill", "student",
                          "compression student distilled from teacher (the benchmark's chosen "
                          "option; its card names it)"),
}


def shipped_available(name: str) -> bool:
    return (ASSETS / f"{name}.pth").is_file() and (ASSETS / f"{name}_card.json").is_file()


def shipped_card(name: str) -> dict[str, Any]:
    """The model card of shipped model ``name`` (see ``SHIPPED``)."""
    if name not in SHIPPED:
        raise KeyError(f"no shipped model {name!r}; the package ships {sorted(SHIPPED)}")
    if not shipped_available(name):
        raise TeacherNotShippedError(
            f"{name} is not in {ASSETS}; make it with the command in its card's 'shipped_with' "
            f"(python -m bevdistill.pretrained RUN_DIR --name {name})")
    return json.loads((ASSETS / f"{name}_card.json").read_text())


def load_shipped(name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Shipped model ``name``, built from its card's preset, checked and loaded, in eval mode."""
    from bevdistill.engine.checkpoint import read_state_dict

    card = shipped_card(name)
    weights = ASSETS / f"{name}.pth"
    verify_shipped_weights(weights)
    model = build_for_card(card)
    model.load_state_dict(read_state_dict(weights, f"shipped {name}"), strict=True)
    return model.to(device).eval()


def _model_weights(record: dict) -> dict[str, torch.Tensor]:
    """The detector's weights from a run's last checkpoint (a distill run's student part)."""
    from bevdistill.engine.checkpoint import read_state_dict

    state = read_state_dict(record["checkpoint"], f"{record['role']} run checkpoint")
    if record["role"] == "distill":
        state = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
    return state


def ship(run_dir: Path, out_dir: Path = ASSETS, name: str = "teacher",
         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Copy a finished run's weights (weights only; a distill run's student) into ``out_dir`` as
    ``NAME.pth`` and write ``NAME_card.json``; ``extra`` adds fields (e.g. held-out scores)."""
    from bevdistill.engine.checkpoint import atomic_write_bytes, file_sha256
    from bevdistill.engine.report import portable_command, write_json
    from bevdistill.engine.runner import load_experiment

    if name not in SHIPPED:
        raise KeyError(f"no shipped model {name!r}; add it to SHIPPED ({sorted(SHIPPED)})")
    experiment, preset, what = SHIPPED[name]
    record = json.loads((run_dir / "metrics.json").read_text())
    if record.get("config") != experiment:
        raise ValueError(f"{run_dir} ran {record.get('config')!r}; {name} is trained with "
                         f"{experiment!r}")
    state = _model_weights(record)
    buffer = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in state.items()}, buffer)
    weights = out_dir / f"{name}.pth"
    atomic_write_bytes(buffer.getvalue(), str(weights))
    card = {
        "model": "PillarBEVDetector",
        "name": name,
        "what": what,
        "role": record["role"],
        "preset": preset,
        "experiment": record["config"],
        "command": portable_command(record["argv"]),
        "seed": record["seed"],
        "commit": record["commit"],
        "iters": record["iters_done"],
        "training_time_s": record["duration_s"],
        "device": record["device"],
        "torch": record["torch"],
        "parameters": sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k),
        "weights_sha256": file_sha256(weights),
        # Run records without it predate world versions: version 1.
        "world_version": int(record.get("world_version") or 1),
        "dir_classifier": any(k.startswith("bbox_head.dir_head.") for k in state),
        "val": {"num_samples": record.get("cfg_options", {}).get(
                    "val_dataset.num_samples",
                    load_experiment(record["config_path"]).val_dataset.num_samples),
                "metrics": record["metrics"]},
        "shipped_with": f"python -m bevdistill.pretrained RUN_DIR --name {name}",
        **dict(extra or {}),
    }
    if name == "teacher":  # the subset score tests/test_pretrained.py reproduces
        card["val_subset"] = {
            "num_samples": SUBSET_SAMPLES,
            "command": f"bevdistill evaluate {TEACHER_EXPERIMENT} bevdistill/assets/teacher.pth "
                       f"--num-samples {SUBSET_SAMPLES}",
            "metrics": evaluate_subset(weights),
        }
    write_json(out_dir / f"{name}_card.json", card)
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ship a finished run as one of the package's models.")
    parser.add_argument("run_dir", type=Path, help="work dir of the finished run")
    parser.add_argument("--name", default="teacher", choices=sorted(SHIPPED),
                        help="which shipped model the run becomes (default: teacher)")
    args = parser.parse_args(argv)
    card = ship(args.run_dir, name=args.name)
    print(json.dumps({k: card[k] for k in ("command", "iters", "training_time_s")}, indent=2))
    print("val mAP:", card["val"]["metrics"].get("bev/mAP"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
