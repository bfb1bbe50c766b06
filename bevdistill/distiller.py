"""Step 6: put a frozen teacher, a student and the distillation loss into one trainable model.

:class:`Distiller` is an mmengine ``BaseModel``, so mmengine's ``Runner`` trains it like any
detector: ``loss()`` returns the student's detection losses plus the distillation losses in one
dict. The teacher is a passenger, not a part:

* it is held OUTSIDE the module tree (not a registered submodule), so ``parameters()``, the
  optimizer, ``state_dict()``, checkpoints, resume and the Runner's ``init_weights()`` never see
  it (the last one would otherwise re-initialise the weights just loaded into it);
* ``_apply`` is overridden so ``.to(device)``, ``.cuda()`` and ``.double()`` still move it;
* ``train()`` is overridden so it stays in eval mode on every call: its BatchNorm statistics
  and dropout never change, whatever the Runner does;
* it runs under ``torch.no_grad`` and its captured features are detached.

The distillation terms are the tutorial's (``distill=dict(alpha_crd=..., ...)``) plus any listed
in ``terms=[...]`` (:mod:`bevdistill.losses.terms`); channel sizes of every layer they read come
from a dry forward of both models (:mod:`bevdistill.probe`), never typed by hand. Subclasses
drive other model APIs by overriding the public methods under "extension points" (the mmdet3d
distiller does). The tutorial's ``build_bevfusion_distillation`` keeps its signature.
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
from bevdistill.capture import DEFAULT_HOOK_POINTS, FeatureRecorder
from bevdistill.example_inputs import example_inputs_for  # noqa: F401 (the tutorial imports it here)
from bevdistill.export import plain_data, write_student_checkpoint
from bevdistill.losses.terms import term_layers
from bevdistill.probe import (  # noqa: F401 (DistillerBuildError, dry_forward: tutorial API)
    DistillerBuildError,
    check_batch_dim,
    check_loss_accepts,
    dry_forward,
    infer_channels,
    tensor_forward,
)
from bevdistill.teacher_weights import (  # noqa: F401 (TeacherCheckpointError: tutorial API)
    STUDENT_INITS,
    TeacherCheckpointError,
    copy_teacher_into_student,
    load_teacher_checkpoint,
)

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


@MODELS.register_module()
class Distiller(BaseModel):
    """A frozen teacher distilling into a student through BEVFusionDistillationLoss.

    Args:
        teacher, student: a module, a preset name, a config path, a dict or a ``Config``.
        teacher_ckpt: checkpoint loaded into the teacher (path or dict); None keeps the
            teacher as built (only sensible in tests: an untrained teacher teaches noise).
        distill: keyword arguments of :class:`~bevdistill.BEVFusionDistillationLoss`, except
            the channel dicts, which come from a dry forward.
        hook_points: layers the ``distill`` terms read, as dotted module names (both models).
        select: element of a tuple/list output per hook point (``pts_backbone`` returns one
            map per scale); default ``{'pts_backbone': -1}`` (the last) when it is hooked.
        kd_hook: module whose output is the class-heatmap logits for response KD; None
            disables response KD (as does ``distill['alpha_kd'] = 0``).
        terms: more distillation terms, as configs (:mod:`bevdistill.losses.terms`): a
            registered loss, the layers it reads (student and teacher names may differ), its
            connector, weight and schedule. Their layers are hooked too.
        foreground: ``'teacher_heatmap'`` weights the cells of the terms that take a mask
            (attention transfer, feature MSE, spatial InfoNCE) by the teacher's class
            probability at ``kd_hook`` (max over classes): imitation focused on objects, the
            few cells where the richer view knows more. None weights every cell alike.
        student_init: ``'teacher'`` starts the student from the teacher's weights (the
            teacher-guided initialisation of Yang et al., 2022): when both are one network and
            the teacher differs by what it saw, the student begins where the teacher is and
            learns to see with its own sensor. Needs a student of the teacher's architecture.
            None keeps the student's own initialisation.
        example_inputs: the batch for the dry forward; by default random points from
            :func:`~bevdistill.example_inputs.example_inputs_for` on the student.
        data_preprocessor: the Runner's preprocessor; by default the student's, so batches
            arrive exactly as when training the student alone.
        strict_teacher: any missing/unexpected/mis-shaped key in ``teacher_ckpt`` raises.
        trust_teacher_ckpt: read ``teacher_ckpt`` with full unpickling (weights_only=False).
    """

    def __init__(
        self,
        teacher: Any,
        student: Any,
        teacher_ckpt: Any = None,
        distill: Mapping[str, Any] | None = None,
        hook_points: Sequence[str] = DEFAULT_HOOK_POINTS,
        select: Mapping[str, int] | None = None,
        kd_hook: str | None = "bbox_head.heatmap_head",
        terms: Sequence[Mapping[str, Any]] | None = None,
        foreground: str | None = None,
        student_init: str | None = None,
        example_inputs: dict | None = None,
        data_preprocessor: dict | nn.Module | None = None,
        strict_teacher: bool = True,
        trust_teacher_ckpt: bool = False,
        init_cfg: dict | None = None,
    ):
        student_model = self.build_submodel(student, "student")
        teacher_model = self.build_submodel(teacher, "teacher")
        if teacher_model is student_model:
            raise ValueError("teacher and student are the same module; build two models")
        if data_preprocessor is None and isinstance(
            getattr(student_model, "data_preprocessor", None), nn.Module
        ):
            data_preprocessor = student_model.data_preprocessor
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = student_model

        self.teacher_load_report = None
        if teacher_ckpt is not None:
            self.before_teacher_load()
            self.teacher_load_report = load_teacher_checkpoint(
                teacher_model, teacher_ckpt, strict_teacher, trust_teacher_ckpt
            )
            print_log(f"teacher: {self.teacher_load_report}", logger="current")
        teacher_model.requires_grad_(False)
        teacher_model.eval()
        self._frozen = _Frozen(teacher_model)
        if student_init not in STUDENT_INITS:
            raise ValueError(f"student_init={student_init!r} is not one of {STUDENT_INITS}: "
                             "'teacher' copies the teacher's weights into the student, None "
                             "keeps the student's own initialisation")
        self.student_init = student_init
        self._init_student()

        distill = self._plan_capture(hook_points, select, kd_hook, distill, terms, foreground)
        inputs = example_inputs if example_inputs is not None else self.make_example_inputs()
        self.distill_loss = self._build_loss(inputs, distill)

        # Persistent hooks, created after the dry run's temporary ones were removed.
        self._student_rec = FeatureRecorder(
            student_model, self.hooks["student"], self.select, detach=False)
        self._teacher_rec = FeatureRecorder(
            teacher_model, self.hooks["teacher"], self.select, detach=True)
        # Plain copies for export meta: keeping the specs would register module specs as
        # submodules (and the teacher would be back in the module tree).
        self.student_meta = plain_data(self.describe_model(student, "student"))
        self._teacher_ckpt_name = (
            str(teacher_ckpt) if isinstance(teacher_ckpt, (str, os.PathLike)) else None
        )

    def _init_student(self) -> None:
        if self.student_init == "teacher":
            copy_teacher_into_student(self.teacher, self.student)

    def init_weights(self) -> None:
        """The Runner's initialisation, then the teacher's weights again when the student starts
        from them (the Runner calls this after building the model, before loading or resuming)."""
        super().init_weights()
        self._init_student()

    @property
    def recorded(self) -> tuple[str, ...]:
        """Every hooked module of the student: the distilled layers, the response-KD output and
        the layers of extra terms."""
        return self.hooks["student"]

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

    # --- extension points: a subclass drives other model APIs (bevdistill.mmdet3d) -----------

    @staticmethod
    def build_submodel(spec: Any, role: str) -> nn.Module:
        """The teacher or student module from its spec (see
        :func:`bevdistill.models.build.build_model`)."""
        from bevdistill.models.build import build_model  # lazy: the models are heavier code

        return build_model(spec, role)

    def describe_model(self, spec: Any, role: str) -> Any:
        """What the export records as the ``role``'s config: the spec it was built from."""
        return spec

    def before_teacher_load(self) -> None:
        """Called before the teacher checkpoint is read (e.g. to allow-list pickled types)."""

    def make_example_inputs(self) -> Any:
        """The dry-forward batch when none is given: random points for the student."""
        return example_inputs_for(self.student)

    def probe_forward(self, model: nn.Module, inputs: Any) -> None:
        """One forward of ``model`` far enough for its hooks to fire, for the dry run (it runs
        in eval mode under no_grad)."""
        tensor_forward(model, inputs)

    def probe_batch_size(self, inputs: Any) -> int | None:
        """Samples in the dry-run batch, to reject per-point layers; None skips the check."""
        points = inputs.get("points") if isinstance(inputs, Mapping) else None
        return len(points) if isinstance(points, (list, tuple)) else None

    @staticmethod
    def view_of(inputs: Any, role: str) -> Any:
        """What ``role`` ('teacher' or 'student') reads from a batch.

        A batch from a two-sensor world carries ``inputs['teacher_points']``, the richer
        sensor's scan of the same scenes: the teacher reads it as its ``points``, the student
        reads ``points`` (the deployed sensor). Other batches go to both models unchanged.
        """
        if not isinstance(inputs, Mapping) or "teacher_points" not in inputs:
            return inputs
        view = {k: v for k, v in inputs.items() if k != "teacher_points"}
        if role == "teacher":
            view["points"] = inputs["teacher_points"]
        return view

    def teacher_forward(self, inputs: Any, data_samples: Any) -> None:
        """Run the teacher on its view far enough for its hooks to fire (under no_grad)."""
        self.teacher(self.view_of(inputs, "teacher"), data_samples, mode="tensor")

    def student_loss(self, inputs: Any, data_samples: Any) -> dict[str, torch.Tensor]:
        """The student's own detection losses on its view; its hooks fire on the way."""
        return self.student(self.view_of(inputs, "student"), data_samples, mode="loss")

    def student_predict(self, inputs: Any, data_samples: Any) -> list:
        """The student's predictions on its view."""
        return self.student(self.view_of(inputs, "student"), data_samples, mode="predict")

    def student_tensor(self, inputs: Any, data_samples: Any) -> Any:
        """The student's raw outputs (``mode='tensor'``) on its view."""
        return self.student(self.view_of(inputs, "student"), data_samples, mode="tensor")

    # --- building --------------------------------------------------------------------------

    def dry_run(self, model: nn.Module, inputs: Any, recorded: Sequence[str]) -> dict[str, Any]:
        """What ``recorded`` output in one eval-mode, no-grad :meth:`probe_forward` of ``model``."""
        features = dry_forward(model, inputs, recorded, self.select, run=self.probe_forward)
        maps = {n: v for n, v in features.items() if n in self.hook_points}
        check_batch_dim(maps, self.probe_batch_size(inputs), type(model).__name__)
        return features

    def _plan_capture(self, hook_points, select, kd_hook, distill, terms, foreground,
                      ) -> dict[str, Any]:
        """Set hook_points, select, kd_hook, the extra terms and the hooks of each model;
        returns the loss kwargs they imply."""
        distill = dict(distill or {})
        clash = {"student_channels", "teacher_channels", "layers", "kd_layer", "terms"} & set(distill)
        if clash:
            raise ValueError(
                f"distill must not set {sorted(clash)}: channels are read from a dry forward, "
                "layers are hook_points, the KD layer is kd_hook, extra terms go in terms=[...]"
            )
        self.hook_points = (hook_points,) if isinstance(hook_points, str) else tuple(hook_points)
        if select is None:  # default: the last backbone scale, when the backbone is hooked
            select = {"pts_backbone": -1} if "pts_backbone" in self.hook_points else {}
        self.select = dict(select)
        if kd_hook is None:
            if float(distill.get("alpha_kd", 0.0)) > 0:
                raise ValueError("distill['alpha_kd'] > 0 needs a kd_hook (the heatmap logits)")
            distill["alpha_kd"] = 0.0  # no outputs to distil: build the loss without the term
        alpha_kd = float(distill.get("alpha_kd", _default_alpha_kd()))
        self.kd_hook = kd_hook if kd_hook is not None and alpha_kd > 0 else None
        if self.kd_hook in self.hook_points:
            raise ValueError(f"kd_hook {kd_hook!r} is also a hook point; list it in one place")
        if foreground not in (None, "teacher_heatmap"):
            raise ValueError(f"foreground must be None or 'teacher_heatmap', got {foreground!r}")
        if foreground and kd_hook is None:
            raise ValueError("foreground='teacher_heatmap' needs kd_hook (the teacher's heatmaps)")
        self.foreground_hook = kd_hook if foreground else None
        self.terms = [dict(term) for term in terms or ()]
        self.hooks: dict[str, tuple[str, ...]] = {}
        self.output_hooks: dict[str, set[str]] = {}
        for role in ("student", "teacher"):
            features, outputs = term_layers(self.terms, role)
            fg = [self.foreground_hook] if role == "teacher" else []
            self.hooks[role] = _unique(self.hook_points, [self.kd_hook], features, outputs, fg)
            self.output_hooks[role] = {h for h in [self.kd_hook, *outputs, *fg] if h}
        return distill

    def _build_loss(self, inputs: Any, distill: dict[str, Any]) -> nn.Module:
        """Channels from a dry forward of both models, then the loss, tried once on the captures."""
        from bevdistill.losses.combined import OUTPUTS, BEVFusionDistillationLoss

        captured, channels = {}, {}
        for role, model in (("student", self.student), ("teacher", self.teacher)):
            captured[role] = self.dry_run(model, inputs, self.hooks[role])
            maps = {n: v for n, v in captured[role].items() if n not in self.output_hooks[role]}
            channels[role] = infer_channels(maps, role)
        self.student_channels, self.teacher_channels = channels["student"], channels["teacher"]
        try:
            loss = BEVFusionDistillationLoss(
                dict(self.student_channels), dict(self.teacher_channels), layers=self.hook_points,
                kd_layer=self.kd_hook or OUTPUTS, terms=self.terms, **distill,
            )
        except ValueError as exc:
            raise DistillerBuildError(f"cannot build the distillation terms: {exc}") from exc
        check_loss_accepts(loss, captured["student"], captured["teacher"])
        return loss

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
        """Student detection losses + distillation losses, one dict (mmengine sums 'loss' keys)."""
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
        with torch.no_grad(), self._teacher_rec.recording() as captured:
            self.teacher_forward(inputs, data_samples)
        teacher_features = dict(captured)
        with self._student_rec.recording() as captured:
            det_losses = self.student_loss(inputs, data_samples)
        distill_losses = self.distill_loss(dict(captured), teacher_features,
                                           foreground=self._foreground(teacher_features))
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
        return self.student_predict(inputs, data_samples)

    def forward(
        self, inputs: dict, data_samples: Sequence[Any] | None = None, mode: str = "tensor"
    ):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            return self.student_tensor(inputs, data_samples)
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
            f"hook_points={list(self.hook_points)}, kd_hook={self.kd_hook!r}"
        )


def _default_alpha_kd() -> float:
    import inspect

    from bevdistill.losses.combined import BEVFusionDistillationLoss

    return float(inspect.signature(BEVFusionDistillationLoss).parameters["alpha_kd"].default)


def build_bevfusion_distillation(
    teacher_config: Any,
    student_config: Any,
    teacher_checkpoint: Any = None,
    **kwargs: Any,
) -> Distiller:
    """The tutorial's step 6: teacher (loaded, frozen) + student + distillation loss.

    ``kwargs`` go to :class:`Distiller` (``distill=dict(alpha_at=...)``, ``hook_points``,
    ``select``, ``kd_hook``, ``terms``, ``example_inputs``, ``strict_teacher``...).
    """
    return Distiller(teacher_config, student_config, teacher_ckpt=teacher_checkpoint, **kwargs)
