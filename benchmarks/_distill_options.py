"""What the distillation benchmarks share: the options they compare, composed from settings.

An option is four independent settings:

* ``start``: ``'scratch'`` (the student's own initialisation) or ``'teacher'`` (the teacher's
  weights, teacher-guided initialisation; one network only);
* ``terms``: a named term set (:data:`TERM_SETS`), the weights it gives the ``distill``
  experiment's terms (``bevdistill/configs/experiments/distill.py``: crd, at, mse, kd; every
  other term is set to 0, so an option never inherits a term by accident), or ``'alone'``: no
  teacher at the student's side (``train_student``);
* ``schedule``: ``'constant'`` or ``'decay'`` (every term at full weight for 500 iterations,
  then linearly to 0 at 1500);
* ``labels``: ``'given'`` (the scenario's labels) or ``'pseudo'`` (the teacher's confident boxes
  as the labels of the unlabelled scenes, :mod:`bevdistill.data.pseudo_labels`; issue 19's
  baseline c, alone or beside the terms).

Its name is composed from them in one place (:func:`option_name`): ``[teacher_init_]<terms>
[_decay][_pseudo_label]``, with ``baseline``, ``teacher_init`` and ``pseudo_label`` for the
student alone;
:func:`parse_option` reads any such name back, so the names of the runs in
``benchmarks/results/*.json`` (``teacher_init_mse_neck_kd_decay``...) stay resolvable and new
combinations need no new row. ``TEACHER_CKPT`` in an override stands for the scenario's teacher
checkpoint, ``PSEUDO_LABELS`` the benchmark's pseudo-label file (:func:`option_overrides` fills
them in).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import cache
from typing import Any

TEACHER_CKPT = "<teacher_ckpt>"
PSEUDO_LABELS = "<pseudo_labels>"
STARTS = ("scratch", "teacher")
SCHEDULES = ("constant", "decay")
LABELS = ("given", "pseudo")
PSEUDO_SUFFIX = "_pseudo_label"
# The imitation weights' schedule of the decay options: full strength for 500 iterations, then
# linearly to 0 at 1500. Read off the tuning split's curves of the 2000-iteration runs at 544d3a4:
# teacher_init_mse_kd led teacher_init until about iteration 750 and trailed from 1000 on, and
# mse_kd's lead over the student alone was largest near 1000 and gone at 2000.
IMITATION_DECAY = {"decay_begin": 500, "decay_end": 1500, "final": 0.0}


@dataclass(frozen=True)
class TermSet:
    """What a term set says: the weight of each named term (others 0) and any other overrides,
    written against the term names (``{'crd.loss.type': ...}``) or the model (``'foreground'``)."""

    description: str
    weights: dict[str, float] | None  # None: keep the experiment's own weights
    settings: dict[str, Any] | None = None


# Weights: each term gets a weight that puts the norm of its gradient on the student's weights,
# at the start of distillation from the shipped teacher, at roughly a fifth to a half of the
# detection losses' (about 30 at batch 4): InfoNCE 1 (about 5-15 at weight 1), attention
# transfer 2 (about 5 at weight 1 with L2 maps, 0.04 with the tutorial's L1 maps: the same weight
# for both shows what the normalisation does), feature MSE 10 (about 0.6 at weight 1), heatmap
# KD 5 (about 1.5 at weight 1).
_HEATMAP_KD = TermSet("response KD on the class heatmaps (binary KL)", {"kd": 5.0})
TERM_SETS: dict[str, TermSet | None] = {
    "alone": None,  # no teacher at the student's side: train_student
    "global_infonce": TermSet(
        "tutorial's InfoNCE on pooled embeddings (batch negatives)", {"crd": 1.0},
        {"crd.loss.type": "ContrastiveLoss", "crd.reads": "features", "crd.mask": False,
         "crd.cells": None, "crd.connector.type": "ProjectionMLP"}),
    "spatial_infonce": TermSet("InfoNCE over BEV cells at the same world place", {"crd": 1.0}),
    "at_l2": TermSet("attention transfer, L2-normalised maps (ours)", {"at": 2.0}),
    "at_l1": TermSet("attention transfer, L1-normalised maps (the tutorial's normalisation; "
                     "summed over cells like at_l2, so 1/(H*W) less dilute than the tutorial's "
                     "mean)", {"at": 2.0}, {"at.loss.normalization": "l1"}),
    "feature_mse": TermSet("FitNets-style feature MSE (1x1 adapter)", {"mse": 10.0}),
    "heatmap_kd": _HEATMAP_KD,
    "kd": _HEATMAP_KD,
    "kd_t2": TermSet("heatmap KD with the logits softened at temperature 2", {"kd": 5.0},
                     {"kd.loss.temperature": 2.0}),
    "combined": TermSet("the default distill config (spatial InfoNCE + AT + heatmap KD)", None),
    "mse_kd": TermSet("feature MSE + heatmap KD (FitNets-style imitation of the teacher's maps, "
                      "and its responses)", {"mse": 10.0, "kd": 5.0}),
    "mse_neck_kd": TermSet("mse_kd imitating the neck only (the map the head reads), not the "
                           "backbone", {"mse": 10.0, "kd": 5.0}, {"mse.layers": "[pts_neck]"}),
    "mse_kd_light": TermSet("mse_kd at a fifth of both weights (MSE 2, KD 1)",
                            {"mse": 2.0, "kd": 1.0}),
    "fg_mse_kd": TermSet("mse_kd with the feature MSE weighted by the teacher's class probability "
                         "per cell (imitation focused on objects)", {"mse": 10.0, "kd": 5.0},
                         {"foreground": "teacher_heatmap"}),
}


@dataclass(frozen=True)
class Option:
    start: str = "scratch"
    terms: str = "alone"
    schedule: str = "constant"
    labels: str = "given"

    def __post_init__(self) -> None:
        if (self.start not in STARTS or self.schedule not in SCHEDULES
                or self.terms not in TERM_SETS or self.labels not in LABELS):
            raise ValueError(f"an option is start in {STARTS}, terms in {sorted(TERM_SETS)}, "
                             f"schedule in {SCHEDULES}, labels in {LABELS}; got {self}")
        if self.terms == "alone" and self.schedule != "constant":
            raise ValueError("a student trained alone has no term to schedule")

    @property
    def trained_alone(self) -> bool:
        return self.terms == "alone"


def option_name(option: Option) -> str:
    """The run name of ``option``: ``[teacher_init_]<terms>[_decay][_pseudo_label]``
    (``baseline``, ``teacher_init``, ``pseudo_label`` for the student alone)."""
    pseudo = PSEUDO_SUFFIX * (option.labels == "pseudo")
    if option.trained_alone:
        if option.start == "teacher":
            return "teacher_init" + pseudo
        return pseudo[1:] if pseudo else "baseline"
    words = ["teacher_init"] * (option.start == "teacher") + [option.terms]
    return "_".join(words + ["decay"] * (option.schedule == "decay")) + pseudo


def parse_option(name: str) -> Option:
    """The settings a run name stands for (the inverse of :func:`option_name`)."""
    rest, start, schedule, labels = name, "scratch", "constant", "given"
    if rest == PSEUDO_SUFFIX[1:]:
        return Option(labels="pseudo")
    if rest.endswith(PSEUDO_SUFFIX):
        rest, labels = rest[:-len(PSEUDO_SUFFIX)], "pseudo"
    if rest in ("baseline", "teacher_init"):
        return Option(start="teacher" if rest == "teacher_init" else "scratch", labels=labels)
    if rest.startswith("teacher_init_"):
        rest, start = rest[len("teacher_init_"):], "teacher"
    if rest.endswith("_decay") and rest[:-len("_decay")] in TERM_SETS:
        rest, schedule = rest[:-len("_decay")], "decay"
    if rest not in TERM_SETS or rest == "alone":
        raise ValueError(f"option {name!r} is not [teacher_init_]<terms>[_decay][_pseudo_label] "
                         f"with terms in {sorted(t for t in TERM_SETS if t != 'alone')}")
    return Option(start, rest, schedule, labels)


# The options the benchmarks run, in their order (every result file's names parse as above).
NAMES = (
    "baseline", "global_infonce", "spatial_infonce", "at_l2", "at_l1", "feature_mse",
    "heatmap_kd", "combined", "mse_kd", "teacher_init", "teacher_init_mse_kd", "mse_kd_decay",
    "teacher_init_mse_kd_decay",
    # What else might add to the teacher's start, tried on one seed (the 2000-iteration curves
    # at e9208c0 showed constant mse_kd from the teacher's weights trailing teacher_init from
    # iteration 1000 on): responses only, at two temperatures; imitation of the neck only (the
    # map the head reads), fading; and both terms at a fifth of their weight, kept on.
    "teacher_init_kd", "teacher_init_kd_t2", "teacher_init_mse_neck_kd_decay",
    "teacher_init_mse_kd_light", "fg_mse_kd",
    # Issue 19's baseline c, the teacher's boxes as pseudo-labels of the unlabelled scans, alone
    # and beside the taught loss (scenarios with unlabelled scans only).
    "pseudo_label", "combined_pseudo_label",
)


@cache
def term_index() -> dict[str, int]:
    """The position of each term in the ``distill`` experiment's ``terms`` (what ``--cfg-options
    model.terms.<i>...`` addresses), read from the config."""
    from mmengine.config import Config

    from bevdistill.engine.runner import EXPERIMENT_DIR

    cfg = Config.fromfile(str(EXPERIMENT_DIR / "distill.py"), import_custom_modules=False)
    return {term["name"]: i for i, term in enumerate(cfg.model.terms)}


def describe(option: Option) -> str:
    pseudo = (", on the labels plus the teacher's boxes as pseudo-labels of the unlabelled "
              "scans" if option.labels == "pseudo" else "")
    if option.trained_alone:
        return ("the student alone, started from the teacher's weights (teacher-guided "
                "initialisation; one network only): fine-tuned on its own sensor, no "
                "distillation term" if option.start == "teacher"
                else "student trained alone (train_student)") + pseudo
    text = TERM_SETS[option.terms].description + pseudo
    if option.start == "teacher":
        text += ", on a student started from the teacher's weights (one network only)"
    if option.schedule == "decay":
        text += ", every weight decaying to 0 between iterations 500 and 1500"
    return text


def overrides_of(option: Option) -> dict[str, Any]:
    """The ``--cfg-options`` of ``option``: of ``distill``, or of ``train_student`` when alone."""
    out: dict[str, Any] = {}
    if option.labels == "pseudo":
        out.update({"train_dataset.type": "PseudoLabelledDataset",
                    "train_dataset.pseudo_labels": PSEUDO_LABELS})
    if option.trained_alone:
        return {**out, "init_from": TEACHER_CKPT} if option.start == "teacher" else out
    index, term_set = term_index(), TERM_SETS[option.terms]
    if term_set.weights is not None:
        unknown = set(term_set.weights) - set(index)
        if unknown:
            raise ValueError(f"term set {option.terms!r} weighs terms {sorted(unknown)} that the "
                             f"distill experiment lacks (it has {sorted(index)})")
        out.update({f"model.terms.{i}.weight": term_set.weights.get(name, 0.0)
                    for name, i in index.items()})
    for key, value in (term_set.settings or {}).items():
        name, _, path = key.partition(".")
        out[f"model.terms.{index[name]}.{path}" if path else f"model.{key}"] = value
    if option.schedule == "decay":
        out.update({f"model.terms.{i}.schedule.{k}": v
                    for i in index.values() for k, v in IMITATION_DECAY.items()})
    if option.start == "teacher":
        out["model.student_init"] = "teacher"
    return out


# name -> (what it is, overrides of `distill`, or of `train_student` for TRAINED_ALONE).
OPTIONS: dict[str, tuple[str, dict[str, Any] | None]] = {
    name: (describe(parse_option(name)), overrides_of(parse_option(name)) or None)
    for name in NAMES
}
TRAINED_ALONE = tuple(name for name in NAMES if parse_option(name).trained_alone)


def option_overrides(option: str, teacher_ckpt: str | None,
                     pseudo_labels: str | None = None) -> dict[str, Any]:
    """The ``--cfg-options`` of ``option`` (any name :func:`parse_option` reads), with the
    teacher's checkpoint and the pseudo-label file filled in."""
    overrides = dict(overrides_of(parse_option(option)))
    for key, value in overrides.items():
        if value == TEACHER_CKPT:
            if teacher_ckpt is None:
                raise ValueError(f"option {option!r} starts from the teacher's weights: it "
                                 "needs a teacher checkpoint (--teacher-ckpt)")
            overrides[key] = teacher_ckpt
        elif value == PSEUDO_LABELS:
            if pseudo_labels is None:
                raise ValueError(f"option {option!r} trains on the teacher's pseudo-labels: it "
                                 "needs their file (made by benchmarks.pseudo_labels)")
            overrides[key] = pseudo_labels
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
