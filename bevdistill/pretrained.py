"""The shipped teacher: a checkpoint trained by this project's own command, with its model card.

Learners see meaningful BEV features at once, without downloading anything. The card records
how the weights were made (command, seed, commit, training time) and the validation mAP,
including the mAP on a fixed validation subset that ``tests/test_pretrained.py`` reproduces.

A new teacher is shipped from a finished training run with the release tooling beside the
benchmarks (outside the package, see :mod:`benchmarks.ship`), from a clone of the repository::

    bevdistill train teacher train_teacher --work-dir runs/teacher --max-iters 1500
    python -m benchmarks.ship runs/teacher

A card's ``world_version`` names the synthetic world its model was trained and scored on (see
:class:`~bevdistill.data.SceneConfig`); cards without one predate world version 2 and mean 1.
Scoring a shipped model reproduces its card only on its own world (:func:`card_world_version`).

Every card records the SHA-256 of its weights (``weights_sha256``); the weights ``NAME.pth``
beside a card ``NAME_card.json`` are checked against it whenever they are loaded, here or as a
``teacher_ckpt``, since flipped bits in a checkpoint load silently otherwise.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from bevdistill.engine.checkpoint import ModelCardError, read_card  # noqa: F401  (re-exported)

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
            "`python -m benchmarks.ship runs/teacher` (from a clone of the repository)"
        )


def teacher_card() -> dict[str, Any]:
    """The model card: how the shipped teacher was trained and how well it detects."""
    _require_teacher()
    return read_card(TEACHER_CARD)


def card_world_version(card: dict[str, Any]) -> int:
    """The synthetic world a card's model was trained and scored on; 1 when the card predates
    world versions (the objects without a front and a back)."""
    return int(card.get("world_version", 1))


def shipped_world_version(weights: str | Path) -> int | None:
    """:func:`card_world_version` of the card beside shipped ``weights``; None without a card."""
    from bevdistill.engine.checkpoint import card_path

    card = Path(card_path(weights))
    return card_world_version(read_card(card)) if card.is_file() else None


def build_for_card(card: dict[str, Any]) -> torch.nn.Module:
    """The untrained network of a card: its preset, with the card's ``dir_classifier`` (absent:
    False, the head the cards before the direction classifier were trained with)."""
    from bevdistill.models import build_detector
    from bevdistill.models.build import model_config

    cfg = model_config(card["preset"])
    cfg["bbox_head"] = {**cfg["bbox_head"], "dir_classifier": bool(card.get("dir_classifier"))}
    return build_detector(cfg)


def load_teacher(device: str | torch.device = "cpu") -> torch.nn.Module:
    """The shipped teacher, built from its preset and loaded strictly, in eval mode."""
    from bevdistill.engine.checkpoint import read_state_dict, verify_shipped_weights

    _require_teacher()
    verify_shipped_weights(TEACHER_WEIGHTS, shipped=True)
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
    "teacher_all_labels": ("train_teacher_all_labels", "student",
                           "scarce-labels teacher: the student's network and sensor, trained on "
                           "every labelled scene (world version 2)"),
    "student_scarce": ("train_student", "student",
                       "scarce-labels student trained alone on its 16 labelled scenes (the fair "
                       "benchmark's baseline a, seed 0)"),
    "student_scarce_distilled": ("distill_scarce_labels", "student",
                                 "scarce-labels student distilled from teacher_all_labels with "
                                 "the taught loss (combined) on 16 labelled scenes and 1984 "
                                 "unlabelled scans (the fair benchmark's lead option, seed 0)"),
    "student_16beam": ("train_student_16beam", "student",
                       "two-sensor student trained alone on the 16-beam LiDAR (baseline)"),
    "student_16beam_distilled": ("distill_64to16beam", "student",
                                 "two-sensor student distilled from teacher_64beam (the "
                                 "benchmark's chosen option; its card names it)"),
    "teacher_fusion": ("train_fusion_16beam", "student_fusion",
                       "camera + LiDAR fusion teacher: the student's network plus BEVFusion's "
                       "camera branch, reading the 16-beam scan and six cameras (world version 2)"),
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
        raise TeacherNotShippedError(shipped_missing_message(name))
    return read_card(ASSETS / f"{name}_card.json")


def shipped_missing_message(name: str) -> str:
    """One line for a notebook that skips a part without shipped model ``name``: how to make it
    (train its experiment, then the command every card's ``shipped_with`` names)."""
    from bevdistill.engine.runner import load_experiment

    if name not in SHIPPED:
        raise KeyError(f"no shipped model {name!r}; the package ships {sorted(SHIPPED)}")
    experiment = SHIPPED[name][0]
    role = load_experiment(experiment).get("role")
    train = f"distill {experiment}" if role == "distill" else f"train {role} {experiment}"
    return (f"{name} is not shipped (no bevdistill/assets/{name}.pth); train it with `bevdistill {train} --work-dir "
            f"runs/{name}` and ship it with `python -m benchmarks.ship runs/{name} --name {name}` "
            "(from a clone of the repository)")


def shipped_val_scenes(name: str, num_samples: int) -> Any:
    """The first ``num_samples`` validation scenes of shipped model ``name``'s experiment: the
    sensors (LiDAR beams, cameras) and the world (its card's ``world_version``) it was trained
    and scored on."""
    from mmengine.registry import DATASETS

    import bevdistill.data  # noqa: F401  (registers the datasets)
    from bevdistill.engine.runner import load_experiment

    card = shipped_card(name)
    cfg = dict(load_experiment(card["experiment"]).val_dataset)
    cfg.update(num_samples=int(num_samples), world_version=card_world_version(card))
    return DATASETS.build(cfg)


def load_shipped(name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Shipped model ``name``, built from its card's preset, checked and loaded, in eval mode."""
    from bevdistill.engine.checkpoint import read_state_dict, verify_shipped_weights

    card = shipped_card(name)
    weights = ASSETS / f"{name}.pth"
    verify_shipped_weights(weights, shipped=True)
    model = build_for_card(card)
    model.load_state_dict(read_state_dict(weights, f"shipped {name}"), strict=True)
    return model.to(device).eval()
