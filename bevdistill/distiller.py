"""Step 6: put a frozen teacher, a student and the distillation terms into one trainable model.

:class:`Distiller` is an mmengine ``BaseModel``, so mmengine's ``Runner`` trains it like any
detector: ``loss()`` returns the student's detection losses plus the distillation losses in one
dict. The teacher is a passenger, not a part (the rules live here, in one place):

* it is held OUTSIDE the module tree (not a registered submodule), so ``parameters()``, the
  optimizer, ``state_dict()``, checkpoints, resume and the Runner's ``init_weights()`` never see
  it (the last one would otherwise re-initialise the weights just loaded into it);
* ``_apply`` is overridden so ``.to(device)``, ``.cuda()`` and ``.double()`` still move it;
* ``train()`` is overridden so it stays in eval mode on every call: its BatchNorm statistics
  and dropout never change, whatever the Runner does;
* it runs under ``torch.no_grad`` and its captured features are detached.

The recipe is a list of terms (:mod:`bevdistill.losses.terms`); the layers they read are hooked
on both models, and their channel sizes come from a dry forward (:mod:`bevdistill.probe`), never
typed by hand. How a model is built, preprocesses a batch, runs and exposes its heatmaps is its
driver's business (:mod:`bevdistill.drivers`): the Distiller is handed one and calls nothing
overridable while it is built. The tutorial's ``build_bevfusion_distillation`` keeps its
signature.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from torch import nn

from bevdistill._warnings import warn_once
from bevdistill.capture import FeatureRecorder
from bevdistill.drivers import make_driver
from bevdistill.example_inputs import example_inputs_for  # noqa: F401 (the tutorial imports it here)
from bevdistill.export import plain_data, write_student_checkpoint
from bevdistill.losses.recipe import upgrade_recipe
from bevdistill.losses.terms import HEATMAP, DistillationTerms, parse_terms
from bevdistill.probe import (  # noqa: F401 (DistillerBuildError, dry_forward: tutorial API)
    DistillerBuildError,
    check_batch_dim,
    check_loss_accepts,
    dry_forward,
    eval_mode,
    infer_channels,
)
from bevdistill.teacher_weights import (  # noqa: F401 (TeacherCheckpointError: tutorial API)
    STUDENT_INITS,
    TeacherCheckpointError,
    copy_teacher_into_student,
)

RECIPE_KEYS = ("distill", "hook_points", "kd_hook")  # the recipe before terms: converted
DRIVER_KEYS = ("select", "example_inputs", "data_preprocessor", "strict_teacher",
               "trust_teacher_ckpt", "probe")  # now the driver's settings: moved there
FOREGROUNDS = (None, "teacher_heatmap")

NO_GRAD_HINT = (
    "the student's losses were computed under torch.no_grad() (or with gradients off): they "
    "have no gradient, so backward() fails and nothing trains. Only the teacher runs without "
    "gradients, and the Distiller does that itself: call loss() with gradients on"
)


class _Frozen:
    """Holds the teacher so that nn.Module does not register it (see the module docstring)."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Module):
        self.module = module

    def __repr__(self) -> str:
        return f"frozen {type(self.module).__name__}"


def _unique(*groups: Sequence[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for group in groups for name in group if name))


def _moved_keys(old: Mapping[str, Any]) -> tuple[dict, dict]:
    """Split the keyword arguments of the Distiller before drivers and terms into (recipe keys,
    driver settings); warn how to write the driver's now (upgrade_recipe says the recipe's)."""
    unknown = sorted(set(old) - set(RECIPE_KEYS) - set(DRIVER_KEYS))
    if unknown:
        raise TypeError(
            f"Distiller got unknown arguments {unknown}; it takes teacher, student, teacher_ckpt, "
            "terms, driver, student_init, foreground, init_cfg"
        )
    recipe = {k: old[k] for k in RECIPE_KEYS if k in old}
    settings = {k: old[k] for k in DRIVER_KEYS if k in old}
    if settings:
        warn_once(
            "distiller.driver-keys",
            f"Distiller: {sorted(settings)} are settings of the model driver now; write "
            f"driver=dict(type=..., {', '.join(f'{k}=...' for k in sorted(settings))}) (config "
            f"keys model.driver.<key>)",
            FutureWarning,
        )
    return recipe, settings


@MODELS.register_module()
class Distiller(BaseModel):
    """A frozen teacher distilling into a student through a list of terms.

    Args:
        teacher, student: a module, or a spec the driver builds (a preset name, a config path,
            a dict or a ``Config`` for the pillar driver).
        teacher_ckpt: checkpoint loaded into the teacher (path or dict); None keeps the
            teacher as built (only sensible in tests: an untrained teacher teaches noise).
        terms: the recipe (:mod:`bevdistill.losses.terms`): per term a registered loss, what it
            reads, its layers (student and teacher names may differ; ``'heatmap'`` is the head
            the driver names), connectors, weight and schedule. Every layer read is hooked.
            None: the tutorial's recipe (:func:`~bevdistill.losses.recipe.tutorial_terms`).
        driver: how the models run (:mod:`bevdistill.drivers`): ``'pillar'`` (default),
            ``'mmdet3d'``, ``dict(type=..., **settings)`` or an instance.
        student_init: ``'teacher'`` starts the student from the teacher's weights (the
            teacher-guided initialisation of Yang et al., 2022): when both are one network and
            the teacher differs by what it saw, the student begins where the teacher is and
            learns to see with its own sensor. None keeps the student's own initialisation.
        foreground: ``'teacher_heatmap'`` hands the terms that take a mask (``mask=True``) the
            teacher's class probability per cell (max over classes): imitation focused on
            objects. None weights every cell alike.
        init_cfg: mmengine's.
        **old: the arguments of the Distiller before terms and drivers (``distill``,
            ``hook_points``, ``kd_hook``; ``select``, ``example_inputs``, ...): converted, with a
            warning that says how to write them now.
    """

    LEGACY_KEYS = RECIPE_KEYS + DRIVER_KEYS  # what **old converts (the config check reads it)

    def __init__(
        self,
        teacher: Any,
        student: Any,
        teacher_ckpt: Any = None,
        terms: Sequence[Mapping[str, Any]] | None = None,
        *,
        driver: Any = None,
        student_init: str | None = None,
        foreground: str | None = None,
        init_cfg: dict | None = None,
        **old: Any,
    ):
        recipe_keys, settings = _moved_keys(old)
        driver = make_driver(driver, **settings)
        terms, advice = upgrade_recipe(terms, recipe_keys)
        if advice:
            warn_once("distiller.recipe-keys", f"Distiller: {sorted(recipe_keys)} are the recipe "
                      f"language before terms; {advice}", FutureWarning)
        if student_init not in STUDENT_INITS:
            raise ValueError(f"student_init={student_init!r} is not one of {STUDENT_INITS}: "
                             "'teacher' copies the teacher's weights into the student, None "
                             "keeps the student's own initialisation")
        if foreground not in FOREGROUNDS:
            raise ValueError(f"foreground must be None or 'teacher_heatmap', got {foreground!r}")
        student_model = driver.build(student, "student")
        teacher_model = driver.build(teacher, "teacher")
        if teacher_model is student_model:
            raise ValueError("teacher and student are the same module; build two models")
        super().__init__(data_preprocessor=driver.preprocessor(student_model), init_cfg=init_cfg)
        self.driver, self.student = driver, student_model

        self.teacher_load_report = None
        if teacher_ckpt is not None:
            self.teacher_load_report = driver.load_teacher(teacher_model, teacher_ckpt)
            print_log(f"teacher: {self.teacher_load_report}", logger="current")
        teacher_model.requires_grad_(False)
        teacher_model.eval()
        self._frozen = _Frozen(teacher_model)
        self.student_init, self.foreground = student_init, foreground
        if student_init == "teacher":
            copy_teacher_into_student(teacher_model, student_model)

        self.specs = _plan(terms, driver, student_model, teacher_model)
        fg = [driver.heatmap_layer(teacher_model)] if foreground else []
        self.foreground_hook = fg[0] if fg else None
        self.hooks, self.heatmap_hooks = {}, {}  # every hooked layer; those giving heatmaps
        for role in ("student", "teacher"):
            extra = fg if role == "teacher" else []
            self.hooks[role] = _unique(*(s.hooks(role) for s in self.specs), extra)
            self.heatmap_hooks[role] = {h for s in self.specs if s.reads == "heatmaps"
                                        for h in s.hooks(role)} | set(extra)
        self.select = driver.select_for(self.hooks["student"])
        models = {"student": student_model, "teacher": teacher_model}
        inputs = driver.dry_inputs(student_model, teacher_model)
        captured = {role: _dry_run(driver, model, inputs, self.hooks[role], self.select,
                                   self.heatmap_hooks[role]) for role, model in models.items()}
        channels = {role: infer_channels({n: v for n, v in captured[role].items()
                                          if n not in self.heatmap_hooks[role]}, role)
                    for role in models}
        self.student_channels, self.teacher_channels = channels["student"], channels["teacher"]
        self.distill_loss = _build_terms(self.specs, channels, captured)

        # Persistent hooks, created after the dry run's temporary ones were removed.
        self._student_rec = FeatureRecorder(
            student_model, self.hooks["student"], self.select, detach=False)
        self._teacher_rec = FeatureRecorder(
            teacher_model, self.hooks["teacher"], self.select, detach=True)
        # Plain copies for export meta: keeping the specs would register module specs as
        # submodules (and the teacher would be back in the module tree).
        self.student_meta = plain_data(driver.describe(student, "student"))
        self._teacher_ckpt_name = (
            str(teacher_ckpt) if isinstance(teacher_ckpt, (str, os.PathLike)) else None
        )

    def init_weights(self) -> None:
        """The Runner's initialisation, then the teacher's weights again when the student starts
        from them (the Runner calls this after building the model, before loading or resuming)."""
        super().init_weights()
        if self.student_init == "teacher":
            copy_teacher_into_student(self.teacher, self.student)

    def captured(self, role: str) -> dict[str, Any]:
        """What ``role``'s ('student' or 'teacher') hooks recorded in the latest step."""
        recorders = {"student": self._student_rec, "teacher": self._teacher_rec}
        if role not in recorders:
            raise ValueError(f"role must be 'student' or 'teacher', got {role!r}")
        return dict(recorders[role].features)

    @property
    def loss_keys(self) -> tuple[str, ...]:
        """The distillation keys a step can return (``loss_<term>.<layer>``), from the built terms."""
        return self.distill_loss.loss_keys

    @property
    def hook_points(self) -> tuple[str, ...]:
        """The student's layers whose feature maps the terms read (not the heatmaps)."""
        return tuple(h for h in self.hooks["student"] if h not in self.heatmap_hooks["student"])

    @property
    def kd_hook(self) -> str | None:
        """The student's heatmap layer a term reads, if any does."""
        return next(iter(sorted(self.heatmap_hooks["student"])), None)

    def dry_run(self, role: str, inputs: Any) -> dict[str, Any]:
        """What ``role``'s hooks output in one eval-mode, no-grad forward of ``inputs``.

        Runs through the Distiller's own recorders: a new recorder on the same layers would
        take their hooks over, and ``loss()`` would then capture nothing.
        """
        model = self.student if role == "student" else self.teacher
        recorder = self._student_rec if role == "student" else self._teacher_rec
        with eval_mode(model), torch.no_grad(), recorder.recording() as captured:
            self.driver.probe(model, inputs, self.hooks[role])
        features = {name: captured[name] for name in self.hooks[role] if name in captured}
        maps = {n: v for n, v in features.items() if n not in self.heatmap_hooks[role]}
        check_batch_dim(maps, self.driver.batch_size(inputs), type(model).__name__)
        return features

    # --- the teacher stays frozen, in eval mode, outside the module tree -------------------

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher (not a registered submodule: see the module docstring)."""
        return self._frozen.module

    def train(self, mode: bool = True) -> Distiller:
        """Set the student (and the loss's projectors) to ``mode``; the teacher stays in eval."""
        super().train(mode)
        self.teacher.eval()
        return self

    def _apply(self, fn: Callable, recurse: bool = True) -> Distiller:
        """``.to()``, ``.cuda()``, ``.double()``... move the teacher with the student."""
        super()._apply(fn, recurse)
        self.teacher._apply(fn, recurse)
        return self

    def _set_device(self, device: torch.device) -> None:
        super()._set_device(device)
        if isinstance(self.teacher, BaseModel):
            self.teacher._set_device(device)

    # --- one distillation step ---------------------------------------------------------------

    def loss(
        self, inputs: dict, data_samples: Sequence[Any] | None = None
    ) -> dict[str, torch.Tensor]:
        """Student detection losses + distillation losses, one dict (mmengine sums 'loss' keys).

        When every term weighs 0 at this iteration (a schedule faded them out), the teacher is
        not run and the distillation keys are logged as 0.
        """
        if self.teacher.training:  # someone called teacher.train() directly
            warn_once(
                "distiller.teacher-train",
                "the teacher was in train mode (teacher.train() called by hand?); set back to "
                "eval so that its BatchNorm statistics stay as loaded",
                UserWarning,
            )
            self.teacher.eval()
        if self.training and not torch.is_grad_enabled():
            warn_once("distiller.no-grad", NO_GRAD_HINT, UserWarning)
        if not self.distill_loss.active():
            det_losses = self.driver.student_loss(self.student, inputs, data_samples)
            zero = next(iter(det_losses.values())).new_zeros(()).detach()
            return self._merge(det_losses, {key: zero for key in self.loss_keys})
        with torch.no_grad(), self._teacher_rec.recording() as captured:
            self.driver.teacher_forward(self.teacher, inputs, data_samples, self.hooks["teacher"])
        teacher_features = dict(captured)
        with self._student_rec.recording() as captured:
            det_losses = self.driver.student_loss(self.student, inputs, data_samples)
        distill_losses = self.distill_loss(dict(captured), teacher_features,
                                           mask=self._foreground(teacher_features))
        return self._merge(det_losses, distill_losses)

    @staticmethod
    def _merge(det_losses: Mapping[str, Any], distill_losses: Mapping[str, Any]) -> dict:
        clash = set(det_losses) & set(distill_losses)
        if clash:
            raise KeyError(
                f"loss names {sorted(clash)} are used by both the student and the distillation "
                "loss; one would overwrite the other. Rename one side's terms."
            )
        return {**det_losses, **distill_losses}

    def _foreground(self, teacher_features: Mapping[str, Any]) -> torch.Tensor | None:
        """The teacher's class probabilities ``[B, K, H, W]``, when cells are weighted by them."""
        if self.foreground_hook is None:
            return None
        from bevdistill.losses.response import heatmap_logits

        logits = heatmap_logits(teacher_features[self.foreground_hook], who="teacher foreground")
        return logits.detach().float().sigmoid()

    def predict(self, inputs: dict, data_samples: Sequence[Any] | None = None) -> list:
        """The student's predictions (the teacher only teaches)."""
        return self.driver.student_predict(self.student, inputs, data_samples)

    def forward(
        self, inputs: dict, data_samples: Sequence[Any] | None = None, mode: str = "tensor"
    ):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            return self.driver.student_tensor(self.student, inputs, data_samples,
                                              self.hooks["student"])
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    # --- export ------------------------------------------------------------------------------

    def export_student(
        self, path: str | os.PathLike, meta: Mapping[str, Any] | None = None
    ) -> Path:
        """Write ``{'state_dict': student weights, 'meta': {...}}``; loads into the student alone.

        Written atomically (:func:`bevdistill.export.write_student_checkpoint`).
        """
        info = {
            "student_class": type(self.student).__name__,
            "student_config": self.student_meta,
            "teacher_class": type(self.teacher).__name__,
            "teacher_checkpoint": self._teacher_ckpt_name,
            "hook_points": list(self.hook_points),
            "distill_terms": list(self.loss_keys),
            **dict(meta or {}),
        }
        return write_student_checkpoint(self.student.state_dict(), path, info,
                                        exported_by="bevdistill.Distiller.export_student")

    def extra_repr(self) -> str:
        return (
            f"teacher={type(self.teacher).__name__} (frozen, eval, not in state_dict), "
            f"driver={self.driver!r}, terms={list(self.distill_loss.terms)}"
        )


def _dry_run(driver: Any, model: nn.Module, inputs: Any, hooks: Sequence[str],
             select: Mapping[str, int], heatmaps: set[str]) -> dict[str, Any]:
    """What ``hooks`` output in one eval-mode, no-grad forward of ``model`` by its driver."""
    features = dry_forward(model, inputs, hooks, select,
                           run=lambda m, batch: driver.probe(m, batch, hooks))
    maps = {n: v for n, v in features.items() if n not in heatmaps}
    check_batch_dim(maps, driver.batch_size(inputs), type(model).__name__)
    return features


def _build_terms(specs: Sequence[Any], channels: Mapping[str, Mapping[str, int]],
                 captured: Mapping[str, Mapping[str, Any]]) -> DistillationTerms:
    """The terms, built with the channels of the dry forward and tried once on its captures."""
    try:
        loss = DistillationTerms(specs, channels["student"], channels["teacher"])
    except ValueError as exc:
        raise DistillerBuildError(f"cannot build the distillation terms: {exc}") from exc
    check_loss_accepts(loss, captured["student"], captured["teacher"])
    return loss


def _plan(terms: Sequence[Any], driver: Any, student: nn.Module, teacher: nn.Module) -> list:
    """The parsed term specs that weigh anything, with each side's ``'heatmap'`` layer named by
    the driver."""
    specs = [s for s in (spec.live() for spec in parse_terms(terms)) if s.pairs]
    if not any(HEATMAP in (p.student, p.teacher) for s in specs for p in s.pairs):
        return specs
    names = {role: {HEATMAP: driver.heatmap_layer(model)}
             for role, model in (("student", student), ("teacher", teacher))}
    return [s.resolve(names["student"], names["teacher"]) for s in specs]


def build_bevfusion_distillation(
    teacher_config: Any,
    student_config: Any,
    teacher_checkpoint: Any = None,
    **kwargs: Any,
) -> Distiller:
    """The tutorial's step 6: teacher (loaded, frozen) + student + distillation terms.

    ``kwargs`` go to :class:`Distiller` (``terms=[...]``, ``driver=dict(...)``,
    ``student_init``, ``foreground``...).
    """
    return Distiller(teacher_config, student_config, teacher_ckpt=teacher_checkpoint, **kwargs)
