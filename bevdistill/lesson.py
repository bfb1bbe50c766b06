"""Notebook 6's runs: the learner's step-5 loss trained into the 16-beam student, beside the
student trained alone, with the package's mmengine runner (the code of ``bevdistill train``).

* :func:`step5_loss`: the learner's ``MyDistillationLoss`` from notebook 5 as last saved (its
  exercise cells, checked again by the step-5 checkers), or the reference
  :class:`~bevdistill.BEVFusionDistillationLoss` where it does not pass;
* :func:`train_pair`: the scarce-labels scenario of the benchmark, where its fair comparison
  ran: the student alone on the few labelled scenes (``train_student``) and the same student
  distilled with that loss from ``teacher_all_labels``, reading the unlabelled scans as well
  (``distill_scarce_labels``), both from scratch, with the same schedule and seed: no head start
  from the teacher's weights;
* :func:`run_report`: what the runs show, which in short mode is that they run, never a mAP.

A mode sets the budget (:data:`MODES`): *short* is a mechanics check of a few iterations,
*medium* a few hundred iterations (how fast each arm learns), *full* the experiments' own
schedules (a GPU's work). What a mode can show is said in :data:`WHAT_A_MODE_SHOWS`.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

NOTEBOOK_5 = Path(__file__).resolve().parent.parent / "notebooks" / "05_distillation_loss.ipynb"
ALONE, DISTILLED = "train_student", "distill_scarce_labels"
TEACHER = "teacher_all_labels"  # the shipped teacher of the scarce-labels scenario
LABELLED = 16  # labelled scenes, as in the benchmark (benchmarks/distill_gain.py, scarce_labels)
KD_HOOK = "bbox_head.heatmap_head"  # where the Distiller records the class-heatmap logits
DISTILL_TAGS = ("loss_crd", "loss_at", "loss_kd")  # the step-5 terms, by their key's first part

MODES: dict[str, dict[str, Any]] = {
    # iterations, training and tuning-split scenes, batch size (None: the experiment's own)
    "short": dict(iters=3, train_samples=6, val_samples=2, batch_size=2),
    "medium": dict(iters=400, train_samples=400, val_samples=60, batch_size=None),
    "full": dict(iters=None, train_samples=None, val_samples=None, batch_size=None),
}
WHAT_A_MODE_SHOWS = {
    "short": "a mechanics check: both runs build and train, and every loss term stays finite. "
             "A few iterations on a handful of scenes cannot show whether the "
             "loss helps, so no mAP is reported.",
    "medium": "how fast each arm learns: one seed, a few hundred iterations, scored on the "
              "tuning split. It is not the end of a schedule (the shipped curves above are).",
    "full": "both experiments' whole schedules, one seed, scored on the tuning split: one "
            "point of the benchmark, without its seeds, its held-out split or its baselines.",
}


# --- the learner's loss -----------------------------------------------------------------------


def _exercise_cells(notebook: Path) -> list[tuple[str, str]]:
    """``(imports, source)`` of each exercise cell: the import statements of the code cells
    before it (what the cell relies on, without running the notebook's experiments), its code."""
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    found, imports = [], []
    for cell in cells:
        source = "".join(cell["source"])
        if "exercise" in cell.get("metadata", {}).get("tags", []):
            found.append(("\n".join(imports), source))
        tree = ast.parse(re.sub(r"^\s*[%!].*$", "", source, flags=re.M))  # no IPython magics
        imports += [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return found


def step5_loss(notebook: str | Path = NOTEBOOK_5, verbose: bool = True):
    """The learner's step-5 loss class if it passes the step-5 checks, else the reference.

    Reads the two exercise cells of notebook 5 as last saved (``heatmap_kd``, then
    ``layer_input`` and ``MyDistillationLoss``) with the imports of the cells before each, in
    one namespace, checking 5a before 5b as the notebook does (5b uses the learner's
    ``heatmap_kd`` only where it passed), and returns
    the :class:`~bevdistill.exercises.CheckResult` of step 5b: ``.impl`` is the class to train.
    Never strict: a failing answer falls back to the reference, as in the notebooks."""
    from bevdistill.exercises import check_distillation_loss, check_heatmap_kd

    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook 5 not found at {notebook}: pass its path "
                                "(step5_loss(notebook=...)) or run from the source checkout")
    cells = _exercise_cells(notebook)
    if len(cells) != 2:
        raise ValueError(f"{notebook.name} has {len(cells)} cells tagged 'exercise', expected 2 "
                         "(heatmap_kd, then MyDistillationLoss): restore the tags")
    namespace: dict[str, Any] = {"__name__": "notebook05"}
    for (imports, source), part in zip(cells, ("5a", "5b"), strict=True):
        exec(compile(imports, f"{notebook.name} (imports before {part})", "exec"), namespace)  # noqa: S102
        exec(compile(source, f"{notebook.name} (exercise {part})", "exec"), namespace)  # noqa: S102
        if part == "5a":
            with contextlib.redirect_stdout(io.StringIO()):
                namespace["heatmap_kd"] = check_heatmap_kd(namespace["heatmap_kd"], strict=False,
                                                           verbose=False).impl
    with contextlib.redirect_stdout(io.StringIO()):
        result = check_distillation_loss(namespace["MyDistillationLoss"], strict=False,
                                         verbose=False)
    if verbose:
        verdict = result.report().splitlines()[0]
        print(f"{verdict}\n-> training "
              + ("your MyDistillationLoss" if result.passed else
                 "the reference BEVFusionDistillationLoss (yours has not passed step 5 yet)"))
    return result


class TaughtLoss(nn.Module):
    """A step-5 loss in the :class:`~bevdistill.Distiller`'s place: the Distiller hands one
    dict of captured features (the heatmap logits among them, under ``kd_hook``); a step-5 loss
    takes the features and the heatmaps apart (``forward(s_feats, t_feats, s_heat, t_heat)``)."""

    def __init__(self, loss: nn.Module, kd_hook: str = KD_HOOK):
        super().__init__()
        self.loss, self.kd_hook = loss, kd_hook
        self.loss_keys: tuple[str, ...] = ()  # known after the first step

    def active(self, iteration: int | None = None) -> bool:
        """A step-5 loss has no schedule: every step runs the teacher."""
        return True

    def forward(self, student_features: Mapping[str, Any], teacher_features: Mapping[str, Any],
                mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if mask is not None:
            raise ValueError("a step-5 loss weights no cells: build the Distiller without "
                             "foreground=")
        s_feats, t_feats = dict(student_features), dict(teacher_features)
        s_heat, t_heat = s_feats.pop(self.kd_hook, None), t_feats.pop(self.kd_hook, None)
        losses = self.loss(s_feats, t_feats, s_heat, t_heat)
        self.loss_keys = tuple(losses)
        return losses


def tutorial_settings(terms: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The step-5 arguments an experiment's ``terms`` stand for: ``alpha_<name>`` is the weight
    of the term named ``crd``, ``at`` or ``kd``; ``feat_dim`` and ``temperature`` are the
    contrastive term's projector width and loss temperature."""
    settings: dict[str, Any] = {}
    for term in terms:
        name = term.get("name")
        if name in ("crd", "at", "kd"):
            settings[f"alpha_{name}"] = float(term.get("weight", 1.0))
        if name == "crd":
            connector = term.get("connector") or {}
            if "out_dim" in connector:
                settings["feat_dim"] = int(connector["out_dim"])
            if "temperature" in (term.get("loss") or {}):
                settings["temperature"] = float(term["loss"]["temperature"])
    return settings


def loss_arguments(loss_cls: type, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The step-5 settings that ``loss_cls`` accepts (a learner's class takes the step-5
    contract's: ``feat_dim``, ``temperature`` and the alphas)."""
    accepted = inspect.signature(loss_cls).parameters
    return {k: v for k, v in settings.items() if k in accepted}


def install_loss(distiller, loss_cls: type, terms: Sequence[Mapping[str, Any]]) -> TaughtLoss:
    """Put ``loss_cls``, built on the distiller's measured channels and the weights of the
    config's ``terms``, in place of the loss the distiller's config built. Call it before
    ``runner.train()``: the optimiser is built there, from the parameters (the new projectors
    among them)."""
    settings = loss_arguments(loss_cls, tutorial_settings(terms))
    loss = loss_cls(dict(distiller.student_channels), dict(distiller.teacher_channels), **settings)
    distiller.distill_loss = TaughtLoss(loss, distiller.kd_hook or KD_HOOK)
    return distiller.distill_loss


# --- the runs ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One training run: its experiment, budget, time, loss curves, last tuning-split metrics
    and trained student (eval mode)."""

    name: str
    experiment: str
    iterations: int
    seconds: float
    curves: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] | None = None
    model: nn.Module | None = None
    loss: str = ""


def mode_options(mode: str, work_dir: Path, iters: int | None = None
                 ) -> tuple[dict[str, Any], int | None]:
    """``--cfg-options`` and iterations of a mode (:data:`MODES`; ``iters`` overrides the
    mode's iterations, not the full schedule's)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r} (parameters cell, "
                         "or the environment variable BEVDISTILL_NOTEBOOK_MODE)")
    m = MODES[mode]
    iters = iters or m["iters"]
    if mode == "full":
        return {}, None  # the experiments' own schedule
    options: dict[str, Any] = {
        "train_dataset.num_samples": m["train_samples"], "val_dataset.num_samples": m["val_samples"],
        "data.num_workers": 0, "log_level": "ERROR" if mode == "short" else "WARNING",
    }
    if m["batch_size"]:
        options.update({"data.batch_size": m["batch_size"], "data.val_batch_size": m["batch_size"]})
    if mode == "medium":
        options.update({"train_dataset.cache_dir": str(work_dir / "scans"),  # one set of scans
                        "val_dataset.cache_dir": str(work_dir / "scans"),
                        "schedule.val_interval": iters, "schedule.log_interval": 100})
    return options, iters


def train_run(name: str, experiment: str, mode: str, work_dir: str | Path,
              loss_cls: type | None = None, cfg_options: Mapping[str, Any] | None = None,
              iters: int | None = None) -> Run:
    """Train one experiment in ``mode``; with ``loss_cls``, the distiller trains that loss."""
    from bevdistill.engine import LastMetricsHook, load_experiment, make_runner

    work_dir = Path(work_dir)
    options, max_iters = mode_options(mode, work_dir, iters)
    started = time.time()
    exp = load_experiment(experiment, {**options, **dict(cfg_options or {})})
    runner = make_runner(exp, work_dir / name, max_iters=max_iters)
    loss = ""
    if loss_cls is not None:
        install_loss(runner.model, loss_cls, list(exp.model.get("terms") or []))
        loss = loss_cls.__name__
    # The runner's progress bars redraw many times a second on stderr: kept out of a notebook.
    with contextlib.redirect_stderr(io.StringIO()):
        runner.train()
    hub = runner.message_hub
    curves = {k.removeprefix("train/"): list(hub.get_scalar(k).data[0])
              for k in hub.log_scalars if k.startswith("train/") and "loss" in k}
    metrics = next(h.metrics for h in runner.hooks if isinstance(h, LastMetricsHook))
    model = getattr(runner.model, "student", runner.model)  # a Distiller holds its student
    return Run(name, experiment, runner.iter, time.time() - started, curves, metrics,
               model.eval(), loss)


def scarce_label_options(mode: str) -> tuple[dict[str, int], dict[str, int]]:
    """The data of each arm: the student alone trains on the labelled scenes only (it has
    nothing to learn from a scan without boxes); the distilled one reads every scan, the same
    labelled ones with their boxes. A short run labels half its handful of scenes."""
    scenes = MODES[mode]["train_samples"] or 2000  # full: the benchmark's 2000 scenes
    labelled = min(LABELLED, scenes // 2)
    return ({"train_dataset.num_samples": labelled},
            {"train_dataset.num_samples": scenes, "train_dataset.labelled_samples": labelled})


def train_pair(loss_cls: type, mode: str, work_dir: str | Path,
               teacher_ckpt: str | Path | None = None, iters: int | None = None
               ) -> dict[str, Run]:
    """The student alone and the student distilled with ``loss_cls``, same data, schedule and
    seed, both from scratch (no start from the teacher's weights)."""
    from bevdistill import pretrained

    teacher_ckpt = teacher_ckpt or pretrained.ASSETS / f"{TEACHER}.pth"
    alone_data, distilled_data = scarce_label_options(mode)
    alone = train_run("student alone", ALONE, mode, work_dir, cfg_options=alone_data, iters=iters)
    distilled = train_run(f"distilled: {loss_cls.__name__}", DISTILLED, mode, work_dir, loss_cls,
                          {"model.teacher_ckpt": str(teacher_ckpt), **distilled_data},
                          iters=iters)
    for run in (alone, distilled):
        print(f"{run.name}: {run.iterations} iterations in {run.seconds:.0f} s")
    return {"alone": alone, "distilled": distilled}


def run_report(runs: Mapping[str, Run], mode: str) -> list[dict[str, Any]]:
    """Rows a reader can trust for ``mode``: per run, its budget and its last loss terms; the
    tuning-split mAP only outside short mode, named with its budget and scenes."""
    rows = []
    for run in runs.values():
        terms = {k: v[-1] for k, v in run.curves.items() if k.startswith("loss_")}
        row: dict[str, Any] = {
            "run": run.name, "loss": run.loss or "detection only", "iterations": run.iterations,
            "every loss term finite": all(math.isfinite(v) for v in terms.values()),
            "distillation terms": ", ".join(k for k in terms if k.split(".")[0] in
                                            DISTILL_TAGS) or "none"}
        if mode != "short" and run.metrics:
            scenes = MODES[mode]["val_samples"]
            row[f"tuning mAP after {run.iterations} it."
                + (f" ({scenes} scenes)" if scenes else "")] = run.metrics.get("bev/mAP")
        rows.append(row)
    return rows


def plot_loss_curves(runs: Mapping[str, Run]):
    """Total loss, detection loss (heatmap + box) and each distillation term, per logged step."""
    from bevdistill.viz._deps import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    detection_keys = ("loss_heatmap", "loss_bbox")
    for run in runs.values():
        axes[0].plot(run.curves.get("loss", []), label=run.name)
        parts = [run.curves[k] for k in detection_keys if k in run.curves]
        axes[1].plot([sum(v) for v in zip(*parts, strict=True)], label=run.name)
        for key, values in run.curves.items():
            if key.split(".")[0] in DISTILL_TAGS:
                axes[2].plot(values, label=f"{key}")
    for ax, title in zip(axes, ("total loss", "detection loss (heatmap + box)",
                                "distillation terms (distilled run)"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("logged step")
        if ax.get_lines():
            ax.legend(fontsize=7)
    return fig

