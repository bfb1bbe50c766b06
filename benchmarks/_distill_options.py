"""What the distillation benchmarks share: the options they compare.

Each option is a set of ``--cfg-options`` overrides of the ``distill`` experiment
(``bevdistill/configs/experiments/distill.py``); the options in ``TRAINED_ALONE`` train the
student without a teacher at its side (``train_student``), from scratch (``baseline``) or from the
teacher's weights (``teacher_init``). Every distillation option sets every weight, so an option
never inherits another term from the default config by accident. ``TEACHER_CKPT`` in an override
stands for the scenario's teacher checkpoint (:func:`option_overrides` fills it in).
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any


def term_weights() -> list[str]:
    """The weight arguments of the tutorial's loss (``alpha_*``), read from its signature so a
    new term cannot be left on by an option that predates it."""
    from bevdistill.losses.combined import BEVFusionDistillationLoss

    return [p for p in inspect.signature(BEVFusionDistillationLoss).parameters if p.startswith("alpha_")]


def _only(**terms: Any) -> dict[str, Any]:
    """Overrides that switch every term off except ``terms``."""
    base: dict[str, Any] = {"model.distill.contrastive": "none"}
    base.update({f"model.distill.{alpha}": 0.0 for alpha in term_weights()})
    base.update({f"model.distill.{k}": v for k, v in terms.items()})
    return base


TEACHER_CKPT = "<teacher_ckpt>"
# The imitation weights' schedule of the *_decay options: full strength for 500 iterations, then
# linearly to 0 at 1500. Read off the tuning split's curves of the 2000-iteration runs at 544d3a4:
# teacher_init_mse_kd led teacher_init until about iteration 750 and trailed from 1000 on, and
# mse_kd's lead over the student alone was largest near 1000 and gone at 2000.
IMITATION_DECAY = {"model.distill.schedule.decay_begin": 500,
                   "model.distill.schedule.decay_end": 1500,
                   "model.distill.schedule.final": 0.0}
TRAINED_ALONE = ("baseline", "teacher_init")

# name -> (what it is, overrides of `distill`, or of `train_student` for TRAINED_ALONE).
# Weights: each option's term gets a weight that puts the norm of its gradient on the student's
# weights, at the start of distillation from the shipped teacher, at roughly a fifth to a half of
# the detection losses' (about 30 at batch 4): InfoNCE 1 (about 5-15 at weight 1), attention
# transfer 2 (about 5 at weight 1 with L2 maps, 0.04 with the tutorial's L1 maps: the same weight
# for both shows what the normalisation does), feature MSE 10 (about 0.6 at weight 1), heatmap
# KD 5 (about 1.5 at weight 1).
OPTIONS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "baseline": ("student trained alone (train_student)", None),
    "global_infonce": (
        "tutorial's InfoNCE on pooled embeddings (batch negatives)",
        _only(contrastive="global", alpha_crd=1.0),
    ),
    "spatial_infonce": (
        "InfoNCE over BEV cells at the same world place",
        _only(contrastive="spatial", alpha_crd=1.0),
    ),
    "at_l2": ("attention transfer, L2-normalised maps (ours)", _only(alpha_at=2.0)),
    "at_l1": (
        "attention transfer, L1-normalised maps (the tutorial's normalisation; summed over "
        "cells like at_l2, so 1/(H*W) less dilute than the tutorial's mean)",
        _only(alpha_at=2.0, at_normalization="l1"),
    ),
    "feature_mse": ("FitNets-style feature MSE (1x1 adapter)", _only(alpha_mse=10.0)),
    "heatmap_kd": ("response KD on the class heatmaps (binary KL)", _only(alpha_kd=5.0)),
    "combined": ("the default distill config (spatial InfoNCE + AT + heatmap KD)", {}),
    "mse_kd": ("feature MSE + heatmap KD (FitNets-style imitation of the teacher's maps, and "
               "its responses)", _only(alpha_mse=10.0, alpha_kd=5.0)),
    "teacher_init": ("the student alone, started from the teacher's weights (teacher-guided "
                     "initialisation; one network only): fine-tuned on its own sensor, no "
                     "distillation term", {"init_from": TEACHER_CKPT}),
    "teacher_init_mse_kd": ("mse_kd on a student started from the teacher's weights (one "
                            "network only): it begins where the teacher is and keeps imitating "
                            "what the teacher computes from the richer view",
                            {**_only(alpha_mse=10.0, alpha_kd=5.0),
                             "model.student_init": "teacher"}),
    "mse_kd_decay": ("mse_kd whose weights decay to 0 between iterations 500 and 1500 "
                     "(imitation early, labels alone late)",
                     {**_only(alpha_mse=10.0, alpha_kd=5.0), **IMITATION_DECAY}),
    "teacher_init_mse_kd_decay": ("teacher_init_mse_kd whose weights decay to 0 between "
                                  "iterations 500 and 1500", {
                                      **_only(alpha_mse=10.0, alpha_kd=5.0), **IMITATION_DECAY,
                                      "model.student_init": "teacher"}),
    # What else might add to the teacher's start, tried on one seed (the 2000-iteration curves
    # at e9208c0 showed constant mse_kd from the teacher's weights trailing teacher_init from
    # iteration 1000 on): responses only, at two temperatures; imitation of the neck only (the
    # map the head reads), fading; and both terms at a fifth of their weight, kept on.
    "teacher_init_kd": ("heatmap KD alone on a student started from the teacher's weights (the "
                        "teacher's responses as soft targets, no feature imitation)",
                        {**_only(alpha_kd=5.0), "model.student_init": "teacher"}),
    "teacher_init_kd_t2": ("teacher_init_kd with the heatmap logits softened at temperature 2",
                           {**_only(alpha_kd=5.0, kd_temperature=2.0),
                            "model.student_init": "teacher"}),
    "teacher_init_mse_neck_kd_decay": (
        "teacher_init_mse_kd_decay imitating the neck only (the map the head reads), not the "
        "backbone", {**_only(alpha_mse=10.0, alpha_kd=5.0), **IMITATION_DECAY,
                     "model.hook_points": "[pts_neck]", "model.student_init": "teacher"}),
    "teacher_init_mse_kd_light": ("teacher_init_mse_kd at a fifth of both weights (MSE 2, KD "
                                  "1), kept on", {**_only(alpha_mse=2.0, alpha_kd=1.0),
                                                  "model.student_init": "teacher"}),
    "fg_mse_kd": ("mse_kd with the feature MSE weighted by the teacher's class probability per "
                  "cell (imitation focused on objects)",
                  {**_only(alpha_mse=10.0, alpha_kd=5.0), "model.foreground": "teacher_heatmap"}),
}


def option_overrides(option: str, teacher_ckpt: str | None) -> dict[str, Any]:
    """The ``--cfg-options`` of ``option``, with the teacher's checkpoint filled in."""
    overrides = dict(OPTIONS[option][1] or {})
    for key, value in overrides.items():
        if value == TEACHER_CKPT:
            if teacher_ckpt is None:
                raise ValueError(f"option {option!r} starts from the teacher's weights: it "
                                 "needs a teacher checkpoint (--teacher-ckpt)")
            overrides[key] = teacher_ckpt
    return overrides


def cfg_option_args(overrides: dict[str, Any]) -> list[str]:
    """``--cfg-options`` arguments (``key=value`` strings) for the bevdistill CLI."""
    return [f"{k}={v}" for k, v in overrides.items()]


def as_the_cli_reads(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` as the bevdistill CLI's ``--cfg-options`` parses them (``"[pts_neck]"`` ->
    ``["pts_neck"]``), for code that builds an option's config in process."""
    from mmengine.config import DictAction

    if not overrides:
        return {}
    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    return parser.parse_args(["--cfg-options", *cfg_option_args(overrides)]).cfg_options
