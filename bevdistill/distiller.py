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

Channel sizes of the hooked layers are read from a dry forward of both models, never typed by
hand, so a config change (a narrower student, another neck) cannot silently break the
projectors. The tutorial's ``build_bevfusion_distillation`` keeps its signature and returns a
:class:`Distiller`.
"""

from __future__ import annotations

import inspect
import io
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from torch import nn

from bevdistill._warnings import warn_once
from bevdistill.capture import DEFAULT_HOOK_POINTS, FeatureRecorder
from bevdistill.losses.response import heatmap_logits

NUM_RINGS = 32  # nuScenes' top LiDAR
MAX_INTENSITY = 255.0
KEYS_SHOWN = 8  # keys listed per category in a load report


class TeacherCheckpointError(ValueError):
    """The teacher checkpoint cannot be read or does not match the teacher's config."""


class DistillerBuildError(ValueError):
    """The models' captured layers cannot be fed to the distillation loss."""


# --- building models ---------------------------------------------------------------------


def build_model(spec: Any, role: str = "model") -> nn.Module:
    """An ``nn.Module`` from a module, a preset name, a config path, a dict or a ``Config``.

    Anything but a module goes through :func:`bevdistill.models.build_detector`, which
    understands the project's presets ('teacher', 'student', 'bevfusion_scale'), config files
    and ``dict(type=..., ...)`` configs registered in mmengine's ``MODELS``.
    """
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, (str, os.PathLike, Mapping, Config)):
        from bevdistill.models import build_detector  # lazy: models import heavier code

        model = build_detector(spec)
        if not isinstance(model, nn.Module):
            raise TypeError(f"the {role} config built a {type(model).__name__}, not an nn.Module")
        return model
    raise TypeError(
        f"{role} must be an nn.Module, a preset name, a config path, a dict or an mmengine "
        f"Config; got {type(spec).__name__}"
    )


# --- loading the teacher -------------------------------------------------------------------


@dataclass
class LoadReport:
    """What loading a checkpoint into a model did, key by key."""

    source: str
    matched: int = 0  # tensors whose key and shape fit the model (loaded unless strict failed)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    stripped_prefix: str = ""
    ignored: int = 0  # keys under another prefix (e.g. 'distill_loss.' of a Distiller checkpoint)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"checkpoint {self.source}: {self.matched} tensors fit the model"]
        if self.stripped_prefix:
            lines.append(
                f"  keys were prefixed {self.stripped_prefix!r} (prefix removed; "
                f"{self.ignored} keys under other prefixes ignored)"
            )
        for title, items in (
            (
                "shape mismatches (checkpoint vs model)",
                [f"{k}: {list(c)} vs {list(m)}" for k, c, m in self.mismatched],
            ),
            ("missing from the checkpoint", self.missing),
            ("unexpected in the checkpoint", self.unexpected),
        ):
            if items:
                shown = ", ".join(items[:KEYS_SHOWN])
                more = len(items) - KEYS_SHOWN
                lines.append(
                    f"  {len(items)} {title}: {shown}" + (f" (+{more} more)" if more > 0 else "")
                )
        if self.ok:
            lines.append("  every key matched")
        return "\n".join(lines)


def read_checkpoint(checkpoint: Any, trusted: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict inside ``checkpoint`` (a path or an already loaded dict) and its name.

    Accepts mmengine checkpoints (``{'state_dict': ..., 'meta': ...}``) and plain state dicts.
    Files are read with ``weights_only=True`` (mmengine's own objects allowed) unless
    ``trusted``: full unpickling runs code from the file. A shipped teacher is checked against
    the SHA-256 in its model card. Unreadable files raise :class:`TeacherCheckpointError`
    naming the path and what is wrong (empty, truncated, a folder, not a checkpoint).
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        from bevdistill.engine.checkpoint import (
            CorruptCheckpointError,
            MissingCheckpointError,
            load_checkpoint_file,
        )
        from bevdistill.pretrained import verify_shipped_weights

        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"teacher checkpoint {str(path)!r} does not exist")
        verify_shipped_weights(path)
        try:
            loaded = load_checkpoint_file(path, "teacher checkpoint", weights_only=not trusted)
        except (MissingCheckpointError, CorruptCheckpointError) as exc:
            raise TeacherCheckpointError(str(exc)) from exc
        source = str(path)
    elif isinstance(checkpoint, Mapping):
        loaded, source = checkpoint, "<dict>"
    else:
        raise TypeError(
            f"teacher checkpoint must be a path or a dict, got {type(checkpoint).__name__}"
        )
    state = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise TeacherCheckpointError(
            f"{source} contains no state dict (got {type(loaded).__name__})"
        )
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise TeacherCheckpointError(
            f"{source}: expected a state dict of tensors (or a dict with a 'state_dict' entry), "
            f"but {not_tensors[:5]} are not tensors; top-level keys: {list(loaded)[:10]}"
        )
    return dict(state), source


def _strip_prefix(state: dict[str, torch.Tensor], model_keys: set[str]) -> tuple[dict, str, int]:
    """Remove the key prefix ('module.', 'model.', 'student.', ...) that best fits the model.

    Keeps the keys as they are when they already fit at least as well as any prefixed reading.
    """
    candidates = {""}
    for key in state:
        parts = key.split(".")
        candidates.update(".".join(parts[:i]) + "." for i in (1, 2) if len(parts) > i)

    def fit(prefix: str) -> int:
        return sum(k[len(prefix) :] in model_keys for k in state if k.startswith(prefix))

    best = max(sorted(candidates), key=lambda p: (fit(p), p == ""))
    if not best:
        return state, "", 0
    kept = {k[len(best) :]: v for k, v in state.items() if k.startswith(best)}
    return kept, best, len(state) - len(kept)


def load_teacher_weights(
    model: nn.Module, checkpoint: Any, strict: bool = True, trusted: bool = False
) -> LoadReport:
    """Load ``checkpoint`` into ``model`` and report missing/unexpected/mis-shaped keys.

    ``strict``: any mismatch raises :class:`TeacherCheckpointError` naming the keys (a teacher
    that silently keeps random layers would teach noise). Otherwise the matching tensors are
    loaded and the report is given as a warning. A checkpoint sharing no key with the model
    always raises.
    """
    state, source = read_checkpoint(checkpoint, trusted=trusted)
    own = model.state_dict()
    state, prefix, ignored = _strip_prefix(state, set(own))
    report = LoadReport(source, stripped_prefix=prefix, ignored=ignored)
    report.missing = [k for k in own if k not in state]
    report.unexpected = [k for k in state if k not in own]
    report.mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    bad_shape = {k for k, _, _ in report.mismatched}
    usable = {k: v for k, v in state.items() if k in own and k not in bad_shape}
    report.matched = len(usable)
    what = f"{type(model).__name__} teacher"
    if not usable:
        raise TeacherCheckpointError(
            f"none of the {len(state)} tensors in {source} fits the {what} (first checkpoint keys: "
            f"{list(state)[:5]}, first model keys: {list(own)[:5]}): the checkpoint does not "
            "belong to this teacher config."
        )
    if strict and not report.ok:
        raise TeacherCheckpointError(
            f"the checkpoint does not match the teacher config ({what}):\n{report}\n"
            "Build the teacher from the config it was trained with, or pass "
            "strict_teacher=False to load only the matching tensors."
        )
    model.load_state_dict(usable, strict=False)
    if not report.ok:
        warnings.warn(
            f"teacher loaded partially; layers left as initialised:\n{report}", stacklevel=3
        )
    return report


# --- dry forward: channels from the models themselves --------------------------------------


def example_inputs_for(
    model: nn.Module, batch_size: int = 2, num_points: int = 2048, seed: int = 0
) -> dict:
    """A small random batch ``{'points': [Tensor[N, 5], ...]}`` on the model's device.

    Uses ``model.example_inputs()`` when the model defines it; otherwise uniform points inside
    the model's ``point_cloud_range`` (x0, y0, z0, x1, y1, z1), read from
    ``model.point_cloud_range`` or ``model.grid.point_cloud_range`` (PillarBEVDetector), with
    nuScenes-like intensity and ring.
    """
    make = getattr(model, "example_inputs", None)
    if callable(make):
        return make()
    pc_range = getattr(model, "point_cloud_range", None)
    if pc_range is None:
        pc_range = getattr(getattr(model, "grid", None), "point_cloud_range", None)
    if pc_range is None or len(pc_range) != 6:
        raise ValueError(
            f"cannot make example inputs for {type(model).__name__}: it has neither an "
            "example_inputs() method nor a point_cloud_range (x0, y0, z0, x1, y1, z1). Pass "
            "example_inputs={'points': [Tensor[N, 5], ...]} to the Distiller."
        )
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    points = random_points(pc_range, batch_size, num_points, seed)
    return {"points": [p.to(device) for p in points]}


def random_points(
    pc_range: Sequence[float], batch_size: int = 2, num_points: int = 2048, seed: int = 0,
    point_dim: int = 5,
) -> list[torch.Tensor]:
    """``batch_size`` clouds of uniform points in ``pc_range`` (x0, y0, z0, x1, y1, z1), with
    nuScenes-like intensity and ring: ``(x, y, z, intensity, ring)`` cut or zero-padded to
    ``point_dim`` features."""
    low = torch.tensor([float(v) for v in pc_range[:3]])
    high = torch.tensor([float(v) for v in pc_range[3:]])
    gen = torch.Generator().manual_seed(seed)
    points = []
    for _ in range(batch_size):
        xyz = low + torch.rand(num_points, 3, generator=gen) * (high - low)
        intensity = torch.rand(num_points, 1, generator=gen) * MAX_INTENSITY
        ring = torch.randint(0, NUM_RINGS, (num_points, 1), generator=gen).float()
        cloud = torch.cat([xyz, intensity, ring], dim=1)[:, :point_dim]
        pad = point_dim - cloud.shape[1]
        points.append(torch.cat([cloud, cloud.new_zeros(num_points, pad)], 1) if pad > 0 else cloud)
    return points


@contextmanager
def _eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Eval mode inside, each submodule's own train/eval flag restored afterwards."""
    flags = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, was_training in flags:
            m.training = was_training


def dry_forward(
    model: nn.Module,
    inputs: dict,
    hook_points: Sequence[str],
    select: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Run ``model`` once (eval mode, no grad) and return what ``hook_points`` output.

    Eval mode keeps BatchNorm statistics unchanged; the train/eval flags are restored after.
    The temporary hooks are removed before returning.
    """
    with FeatureRecorder(model, hook_points, select=select, detach=True) as recorder:
        with _eval_mode(model), torch.no_grad(), recorder.recording() as features:
            model(inputs, None, mode="tensor")
        return dict(features)


def as_feature(name: str, value: Any, role: str) -> torch.Tensor:
    """The ``[B, C, ...]`` tensor a hook point gave, or an error saying how to make it one."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]  # SECONDFPN-style necks return a list with one map
    if isinstance(value, (tuple, list)):
        shapes = [
            tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for v in value
        ]
        raise DistillerBuildError(
            f"{role} layer {name!r} outputs a {type(value).__name__} of {len(value)} items "
            f"{shapes}; the losses take one map per layer. Pick one with "
            f"select={{{name!r}: -1}} (the last) or another index."
        )
    if not isinstance(value, torch.Tensor):
        raise DistillerBuildError(
            f"{role} layer {name!r} outputs a {type(value).__name__}, not a tensor; the losses "
            "take [B, C, ...] tensors. Hook a module that returns one."
        )
    if value.dim() < 2:
        raise DistillerBuildError(
            f"{role} layer {name!r} outputs shape {tuple(value.shape)}; the losses need "
            "[B, C, ...] with channels in dim 1. Hook a feature map, not a scalar/vector."
        )
    return value


def infer_channels(features: Mapping[str, Any], role: str = "model") -> dict[str, int]:
    """Channels (dim 1) of every captured feature, after unwrapping one-element lists."""
    return {name: as_feature(name, value, role).shape[1] for name, value in features.items()}


def _default_alpha_kd(distill: Mapping[str, Any], loss_cls: type) -> float:
    if "alpha_kd" in distill:
        return float(distill["alpha_kd"])
    default = inspect.signature(loss_cls).parameters.get("alpha_kd")
    return float(default.default) if default is not None else 0.0


def _check_loss_accepts(loss: nn.Module, args: dict[str, Any]) -> None:
    """One call on the dry-run captures, so a layer the losses cannot take fails at build time."""
    shapes = {
        side: {n: tuple(f.shape) for n, f in args[f"{side}_features"].items()}
        for side in ("student", "teacher")
    }
    with _eval_mode(loss), torch.no_grad():
        try:
            losses = loss(**args)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise DistillerBuildError(
                f"the distillation loss cannot take the captured layers (shapes {shapes}): "
                f"{exc}. Hook other layers (hook_points) or pick another element (select)."
            ) from exc
    if not isinstance(losses, Mapping) or not any("loss" in k for k in losses):
        raise DistillerBuildError(
            f"the distillation loss returned {type(losses).__name__} without any 'loss' key; "
            "mmengine sums only keys containing 'loss'."
        )


# --- the distiller ---------------------------------------------------------------------------


class _Frozen:
    """Holds the teacher so that nn.Module does not register it (see the module docstring)."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Module):
        self.module = module

    def __repr__(self) -> str:
        return f"frozen {type(self.module).__name__}"


@MODELS.register_module()
class Distiller(BaseModel):
    """A frozen teacher distilling into a student through BEVFusionDistillationLoss.

    Args:
        teacher, student: a module, a preset name, a config path, a dict or a ``Config``.
        teacher_ckpt: checkpoint loaded into the teacher (path or dict); None keeps the
            teacher as built (only sensible in tests: an untrained teacher teaches noise).
        distill: keyword arguments of :class:`~bevdistill.BEVFusionDistillationLoss`, except
            the channel dicts, which come from a dry forward.
        hook_points: layers distilled, as dotted module names (same on both models).
        select: element of a tuple/list output per hook point (``pts_backbone`` returns one
            map per scale); default ``{'pts_backbone': -1}`` (the last) when it is hooked.
        kd_hook: module whose output is the class-heatmap logits for response KD; None
            disables response KD (as does ``distill['alpha_kd'] = 0``).
        example_inputs: the batch for the dry forward; by default random points from
            :func:`example_inputs_for` on the student.
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

        self.teacher_load_report: LoadReport | None = None
        if teacher_ckpt is not None:
            self._before_teacher_load()
            self.teacher_load_report = load_teacher_weights(
                teacher_model, teacher_ckpt, strict=strict_teacher, trusted=trust_teacher_ckpt
            )
            print_log(f"teacher: {self.teacher_load_report}", logger="current")
        teacher_model.requires_grad_(False)
        teacher_model.eval()
        self._frozen = _Frozen(teacher_model)

        distill = self._plan_capture(hook_points, select, kd_hook, distill)
        inputs = example_inputs if example_inputs is not None else self.make_example_inputs()
        self.distill_loss = self._build_loss(inputs, distill)

        # Persistent hooks, created after the dry run's temporary ones were removed.
        self._student_rec = FeatureRecorder(student_model, self.recorded, self.select, detach=False)
        self._teacher_rec = FeatureRecorder(teacher_model, self.recorded, self.select, detach=True)
        # Plain copies for export meta: keeping the specs would register module specs as
        # submodules (and the teacher would be back in the module tree).
        self._student_meta = _plain(student)
        self._teacher_ckpt_name = (
            str(teacher_ckpt) if isinstance(teacher_ckpt, (str, os.PathLike)) else None
        )

    @property
    def recorded(self) -> tuple[str, ...]:
        """Every hooked module: the distilled layers, then the response-KD output if any."""
        return self.hook_points + ((self.kd_hook,) if self.kd_hook else ())

    # --- extension points: a subclass drives other model APIs (bevdistill.mmdet3d) -----------

    @staticmethod
    def build_submodel(spec: Any, role: str) -> nn.Module:
        """The teacher or student module from its spec (see :func:`build_model`)."""
        return build_model(spec, role)

    def _before_teacher_load(self) -> None:
        """Called before the teacher checkpoint is read (e.g. to allow-list pickled types)."""

    def make_example_inputs(self) -> Any:
        """The dry-forward batch when none is given: random points for the student."""
        return example_inputs_for(self.student)

    def dry_run(self, model: nn.Module, inputs: Any, recorded: Sequence[str]) -> dict[str, Any]:
        """What ``recorded`` output in one eval-mode, no-grad forward of ``model``."""
        return dry_forward(model, inputs, recorded, self.select)

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

    def _plan_capture(self, hook_points, select, kd_hook, distill) -> dict[str, Any]:
        """Set hook_points, select and kd_hook; returns the loss kwargs they imply."""
        from bevdistill.losses.combined import BEVFusionDistillationLoss

        distill = dict(distill or {})
        clash = {"student_channels", "teacher_channels"} & set(distill)
        if clash:
            raise ValueError(
                f"distill must not set {sorted(clash)}: channels are read from a dry forward"
            )
        self.hook_points = (hook_points,) if isinstance(hook_points, str) else tuple(hook_points)
        if select is None:  # default: the last backbone scale, when the backbone is hooked
            select = {"pts_backbone": -1} if "pts_backbone" in self.hook_points else {}
        self.select = dict(select)
        if kd_hook is None:
            if float(distill.get("alpha_kd", 0.0)) > 0:
                raise ValueError("distill['alpha_kd'] > 0 needs a kd_hook (the heatmap logits)")
            distill["alpha_kd"] = 0.0  # no outputs to distil: build the loss without the term
        use_kd = kd_hook is not None and _default_alpha_kd(distill, BEVFusionDistillationLoss) > 0
        self.kd_hook = kd_hook if use_kd else None
        if self.kd_hook in self.hook_points:
            raise ValueError(f"kd_hook {kd_hook!r} is also a hook point; list it in one place")
        return distill

    def _build_loss(self, inputs: dict, distill: dict[str, Any]) -> nn.Module:
        """Channels from a dry forward of both models, then the loss, tried once on the captures."""
        from bevdistill.losses.combined import BEVFusionDistillationLoss

        s_feats, s_out = self._split(self.dry_run(self.student, inputs, self.recorded))
        t_feats, t_out = self._split(self.dry_run(self.teacher, inputs, self.recorded))
        self.student_channels = infer_channels(s_feats, "student")
        self.teacher_channels = infer_channels(t_feats, "teacher")
        loss = BEVFusionDistillationLoss(
            dict(self.student_channels), dict(self.teacher_channels), **distill
        )
        _check_loss_accepts(loss, self._distill_args(s_feats, t_feats, s_out, t_out))
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

    def _split(self, features: dict[str, Any]) -> tuple[dict[str, torch.Tensor], Any]:
        """Layer features (one tensor each) and the response-KD output, if one is recorded."""
        out = features.pop(self.kd_hook) if self.kd_hook else None
        if out is not None:  # a logits map, or a head's per-task dicts (CenterHead)
            out = heatmap_logits(out, who=f"kd_hook {self.kd_hook!r}")
        return {n: as_feature(n, features[n], "captured") for n in self.hook_points}, out

    def _distill_args(self, s_feats, t_feats, s_out, t_out) -> dict[str, Any]:
        args: dict[str, Any] = dict(student_features=s_feats, teacher_features=t_feats)
        if self.kd_hook:
            args.update(student_outputs=s_out, teacher_outputs=t_out)
        return args

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
        with torch.no_grad(), self._teacher_rec.recording() as captured:
            self.teacher_forward(inputs, data_samples)
        t_feats, t_out = self._split(dict(captured))
        with self._student_rec.recording() as captured:
            det_losses = self.student_loss(inputs, data_samples)
        s_feats, s_out = self._split(dict(captured))
        distill_losses = self.distill_loss(**self._distill_args(s_feats, t_feats, s_out, t_out))
        clash = set(det_losses) & set(distill_losses)
        if clash:
            raise KeyError(
                f"loss names {sorted(clash)} are used by both the student and the distillation "
                "loss; one would overwrite the other. Rename one side's terms."
            )
        return {**det_losses, **distill_losses}

    def predict(self, inputs: dict, data_samples: Sequence[Any] | None = None) -> list:
        """The student's predictions on its view (the teacher only teaches)."""
        return self.student(self.view_of(inputs, "student"), data_samples, mode="predict")

    def forward(
        self, inputs: dict, data_samples: Sequence[Any] | None = None, mode: str = "tensor"
    ):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            return self.student(self.view_of(inputs, "student"), data_samples, mode="tensor")
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    # --- export ------------------------------------------------------------------------------

    def export_student(
        self, path: str | os.PathLike, meta: Mapping[str, Any] | None = None
    ) -> Path:
        """Write ``{'state_dict': student weights, 'meta': {...}}``; loads into the student alone.

        Written to a temporary file in the same folder, then renamed over ``path``: a crash
        mid-write never leaves a truncated checkpoint behind.
        """
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.student.state_dict().items()}
        info = {
            "exported_by": "bevdistill.Distiller.export_student",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "student_class": type(self.student).__name__,
            "student_config": self._student_meta,
            "teacher_class": type(self.teacher).__name__,
            "teacher_checkpoint": self._teacher_ckpt_name,
            "hook_points": list(self.hook_points),
            **_plain(dict(meta or {})),
        }
        from bevdistill.engine.checkpoint import atomic_write_bytes

        buffer = io.BytesIO()
        torch.save({"state_dict": state, "meta": info}, buffer)
        atomic_write_bytes(buffer.getvalue(), str(path))
        return path

    def extra_repr(self) -> str:
        return (
            f"teacher={type(self.teacher).__name__} (frozen, eval, not in state_dict), "
            f"hook_points={list(self.hook_points)}, kd_hook={self.kd_hook!r}"
        )


def _plain(value: Any) -> Any:
    """A copy made of str/int/float/bool/None/list/dict only (``weights_only``-loadable);
    modules and other objects become their class name."""
    if isinstance(value, Config):
        value = value.to_dict()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return f"<{type(value).__name__}>"


def build_bevfusion_distillation(
    teacher_config: Any,
    student_config: Any,
    teacher_checkpoint: Any = None,
    **kwargs: Any,
) -> Distiller:
    """The tutorial's step 6: teacher (loaded, frozen) + student + distillation loss.

    ``kwargs`` go to :class:`Distiller` (``distill=dict(alpha_at=...)``, ``hook_points``,
    ``select``, ``kd_hook``, ``example_inputs``, ``strict_teacher``...).
    """
    return Distiller(teacher_config, student_config, teacher_ckpt=teacher_checkpoint, **kwargs)
