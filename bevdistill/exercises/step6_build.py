"""Checker for tutorial step 6: the learner's ``build_bevfusion_distillation``.

The contract (the tutorial's signature, with "return all components" made concrete)::

    build_bevfusion_distillation(teacher_config, student_config, teacher_checkpoint=None)
        -> an nn.Module ``d`` with
           d.teacher                 the teacher detector, weights from teacher_checkpoint
           d.student                 the student detector
           d.loss(inputs, samples)   dict of scalar tensors: the student's detection losses
                                     plus the distillation terms (keys containing 'loss')

Why one module and not the tutorial's ``(teacher_wrapper, student_wrapper, loss)`` tuple: the
lessons of this step are about what the *training loop* sees. ``d.parameters()`` is what an
optimizer gets, ``d.state_dict()`` what a checkpoint holds, ``d.train()`` what the Runner calls
every epoch; a tuple hides all three. The reference returns :class:`~bevdistill.Distiller`; a
small ``nn.Module`` of one's own that meets the contract passes too.

Helpers a learner may use: :func:`bevdistill.models.build_detector`, the step-1 wrapper or
:class:`~bevdistill.FeatureRecorder`, :class:`~bevdistill.BEVFusionDistillationLoss` and
:func:`bevdistill.distiller.example_inputs_for` (random points for the dry forward that reads the
channel sizes).

Not checked here, on purpose: that ``d.to(device)`` also moves a teacher kept outside the module
tree (the reference overrides ``_apply``; tests/test_distiller.py checks it): library
engineering beyond this step.

Configs are small ``PillarBEVDetector`` dicts (a 25.6 m square; 64x64 teacher pillars and 32x32
student pillars), so the whole check takes seconds; ``teacher_checkpoint`` is a path to a file
``torch.save({'state_dict': ..., 'meta': ...})`` wrote (an mmengine-style checkpoint).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import torch
from mmengine.logging import MMLogger
from torch import nn

from bevdistill.distiller import build_bevfusion_distillation, example_inputs_for
from bevdistill.exercises._checking import Case, CheckFailure, CheckResult, expect, run_cases, where
from bevdistill.exercises._probes import cause
from bevdistill.exercises._sandbox import saved_rng

STEP = "Step 6: build_bevfusion_distillation"
SEED = 0
POINT_CLOUD_RANGE = (-12.8, -12.8, -5.0, 12.8, 12.8, 3.0)


_AFTER = ("checkpoint", "frozen", "eval", "outside", "loss-dict", "distill-grad", "step", "channels")
C = {
    "structure": cause("structure", "d.teacher and d.student must be the detectors built from teacher_config "
                       "and student_config, and d.loss(inputs, samples) a method.", *_AFTER),
    "swapped": cause("swapped", "The teacher and student configs are swapped, so the small model teaches the "
                     "large one: build d.teacher from teacher_config and d.student from student_config.",
                     "structure", *_AFTER),
    "checkpoint": cause("checkpoint", "teacher_checkpoint is not loaded into the teacher, so it teaches with "
                        "other weights: torch.load it and load its ['state_dict'] into the teacher."),
    "frozen": cause("frozen", "The teacher's parameters still require grad: call teacher.requires_grad_(False) "
                    "after loading its weights."),
    "eval": cause("eval", "The teacher is not in eval mode after d.train(), so its BatchNorm statistics drift "
                  "with the student's batches: override train() to call super().train(mode) and then "
                  "self.teacher.eval().", "step"),
    "outside": cause("outside", "The teacher is registered as a submodule, so the optimizer and every "
                     "checkpoint get its weights: keep it where nn.Module does not look (a tuple or "
                     "object.__setattr__) and expose it with a property."),
    "loss-dict": cause("loss-dict", "loss() must return the student's detection losses and the distillation "
                       "terms in one dict: return {**student_losses, **distillation_losses}.", "distill-grad",
                       "channels"),
    "distill-grad": cause("distill-grad", "The distillation terms give the student no gradient (its captured "
                          "features detached?): record the student with detach=False (is_student=True).",
                          "channels"),
    "step": cause("step", "A training step changes the teacher (weights or BatchNorm statistics): run it in "
                  "eval mode under torch.no_grad(), frozen."),
    "channels": cause("channels", "The channel counts are not read from the models, so another pair of "
                      "configs breaks the projectors: measure them with a dry forward of each model "
                      "(example_inputs_for) and read shape[1] of each captured feature."),
}


def detector_config(voxel: float, widths: Sequence[int], strides: Sequence[int]) -> dict:
    """A small PillarBEVDetector config: ``widths`` = (scale-1, scale-2) backbone channels."""
    w1, w2 = widths
    return dict(
        type="PillarBEVDetector",
        point_cloud_range=list(POINT_CLOUD_RANGE),
        voxel_size=[voxel, voxel, 8.0],
        pts_voxel_layer=dict(max_points_per_pillar=8, max_pillars=(4096, 4096)),
        pts_voxel_encoder=dict(type="PillarFeatureNet", feat_channels=[w1]),
        pts_middle_encoder=dict(type="PointPillarsScatter"),
        pts_backbone=dict(
            type="SECOND", out_channels=[w1, w2], layer_nums=[1, 1], layer_strides=list(strides)
        ),
        pts_neck=dict(type="SECONDFPN", out_channels=[w1, w1], upsample_strides=[0.5, 1]),
        bbox_head=dict(
            type="CenterPointHead",
            shared_channels=w1,
            head_channels=w1,
            num_head_convs=0,
            train_cfg=dict(gaussian_overlap=0.1, min_radius=2),
        ),
    )


# Teacher: 0.4 m pillars, wider. Student: 0.8 m pillars, narrower. The *_other pair changes
# every channel count, so code that types the channel numbers cannot pass both.
TEACHER = detector_config(0.4, (16, 32), (2, 2))
STUDENT = detector_config(0.8, (8, 16), (1, 2))
TEACHER_OTHER = detector_config(0.4, (24, 40), (2, 2))
STUDENT_OTHER = detector_config(0.8, (12, 20), (1, 2))


def _build_detector(cfg: dict) -> nn.Module:
    from bevdistill.models import build_detector

    return build_detector(copy.deepcopy(cfg))


def _batch(seed: int = 0) -> tuple[dict, list[dict]]:
    """Two random clouds in the range and two labelled boxes per sample."""
    inputs = example_inputs_for(_build_detector(STUDENT), batch_size=2, num_points=1500, seed=seed)
    boxes = torch.tensor(
        [[4.0, 2.0, -1.0, 4.2, 1.9, 1.6, 0.3], [-6.0, -3.0, -1.0, 0.8, 0.7, 1.7, 0.0]]
    )
    samples = [
        dict(
            gt_boxes=boxes.clone(),
            gt_labels=torch.tensor([0, 1]),
            visible=torch.tensor([True, True]),
        )
        for _ in range(2)
    ]
    return inputs, samples


class _Setup:
    """The trained-looking teacher checkpoints and the batch every case uses, made on first use
    (in the checker's child process, so the caller's random numbers are left alone)."""

    def __init__(self, folder: Path):
        self.folder = folder

    @cached_property
    def ckpt(self) -> dict[str, torch.Tensor]:
        self._checkpoint(TEACHER_OTHER, self.folder / "teacher_other.pth", seed=12)
        return self._checkpoint(TEACHER, self.folder / "teacher.pth", seed=11)

    @cached_property
    def batch(self) -> tuple[dict, list[dict]]:
        return _batch()

    @property
    def inputs(self) -> dict:
        return self.batch[0]

    @property
    def samples(self) -> list[dict]:
        return self.batch[1]

    @cached_property
    def detection_keys(self) -> set[str]:
        with torch.no_grad():
            return set(_build_detector(STUDENT).eval().loss(self.inputs, self.samples))

    @staticmethod
    def _checkpoint(cfg: dict, path: Path, seed: int) -> dict[str, torch.Tensor]:
        """Weights and BatchNorm statistics unlike any fresh initialisation, saved to ``path``."""
        gen = torch.Generator().manual_seed(seed)
        state = _build_detector(cfg).state_dict()
        for key, value in state.items():
            if value.is_floating_point():
                noise = torch.rand(value.shape, generator=gen)
                value.copy_(noise + 0.5 if key.endswith("running_var") else value + 0.1 * noise)
        torch.save({"state_dict": state, "meta": {"epoch": 12}}, path)
        return {k: v.clone() for k, v in state.items()}

    def build(self, fn: Any, other: bool = False) -> nn.Module:
        """``fn`` on the default pair, or on the pair with other channel counts."""
        assert self.ckpt is not None  # the checkpoint files exist before the learner's code runs
        teacher, student = (TEACHER_OTHER, STUDENT_OTHER) if other else (TEACHER, STUDENT)
        ckpt = self.folder / ("teacher_other.pth" if other else "teacher.pth")
        d = fn(copy.deepcopy(teacher), copy.deepcopy(student), str(ckpt))
        if d is None:  # the tutorial's template: the body is still `pass`
            raise NotImplementedError("build_bevfusion_distillation returned None")
        expect(
            isinstance(d, nn.Module),
            f"expected an nn.Module holding teacher, student and loss(); got {type(d).__name__}",
            "return one module (e.g. a Distiller-like class) instead of a tuple of components",
        )
        for name in ("teacher", "student"):
            expect(
                isinstance(getattr(d, name, None), nn.Module),
                f"the returned module has no nn.Module attribute {name!r}",
                f"keep the {name} detector as d.{name}",
            )
        expect(callable(getattr(d, "loss", None)), "the returned module has no loss() method")
        return d


def _check_weights_match(d: nn.Module, setup: _Setup) -> None:
    own = d.teacher.state_dict()
    differing = [k for k, v in setup.ckpt.items() if k not in own or not torch.equal(own[k], v)]
    expect(
        not differing,
        f"{len(differing)} of {len(setup.ckpt)} teacher tensors differ from the checkpoint, "
        f"e.g. {differing[:3]}",
        "torch.load(teacher_checkpoint) and load its ['state_dict'] into the teacher",
    )


def _case_structure(setup: _Setup):
    def run(fn: Any) -> None:
        d = setup.build(fn)
        shapes = {name: {k: tuple(v.shape) for k, v in _build_detector(cfg).state_dict().items()}
                  for name, cfg in (("teacher", TEACHER), ("student", STUDENT))}
        mine = {name: {k: tuple(v.shape) for k, v in getattr(d, name).state_dict().items()}
                for name in ("teacher", "student")}
        if mine["teacher"] == shapes["student"] and mine["student"] == shapes["teacher"]:
            raise CheckFailure("d.teacher is built from student_config and d.student from teacher_config",
                               causes=[C["swapped"]])
        for name in ("teacher", "student"):
            want, got = shapes[name], mine[name]
            expect(
                got == want,
                f"d.{name} is not the model its config describes (parameter shapes differ)",
                f"build d.{name} from {name}_config with bevdistill.models.build_detector",
            )
        expect(d.teacher is not d.student, "d.teacher and d.student are the same module")

    return run


def _case_loaded(setup: _Setup):
    return lambda fn: _check_weights_match(setup.build(fn), setup)


def _case_frozen(setup: _Setup):
    def run(fn: Any) -> None:
        d = setup.build(fn)
        trainable = [n for n, p in d.teacher.named_parameters() if p.requires_grad]
        expect(
            not trainable,
            f"{len(trainable)} teacher parameters still require grad, e.g. {trainable[:3]}",
        )

    return run


def _case_eval(setup: _Setup):
    def run(fn: Any) -> None:
        d = setup.build(fn)
        for i, call in enumerate((d.train, d.eval, d.train, lambda: d.train(True))):
            call()
            training = [n or "<teacher>" for n, m in d.teacher.named_modules() if m.training]
            expect(
                not training,
                f"after call {i + 1} of train()/eval()/train()/train(True) the teacher has "
                f"modules in train mode: {training[:3]}",
            )
        expect(d.student.training, "after d.train() the student is not in train mode")

    return run


def _case_outside(setup: _Setup):
    def run(fn: Any) -> None:
        d = setup.build(fn)
        teacher_ids = {id(p) for p in d.teacher.parameters()}
        seen = [n for n, p in d.named_parameters() if id(p) in teacher_ids]
        expect(
            not seen,
            f"d.parameters() (what the optimizer gets) holds {len(seen)} teacher parameters, "
            f"e.g. {seen[:3]}",
        )
        teacher_ptrs = {v.data_ptr() for v in d.teacher.state_dict().values()}
        saved = [k for k, v in d.state_dict().items() if v.data_ptr() in teacher_ptrs]
        expect(
            not saved,
            f"d.state_dict() (what a checkpoint saves and resume overwrites) holds "
            f"{len(saved)} teacher tensors, e.g. {saved[:3]}",
        )

    return run


def _case_loss_dict(setup: _Setup):
    def run(fn: Any) -> None:
        d = setup.build(fn)
        d.train()
        losses = d.loss(setup.inputs, setup.samples)
        expect(isinstance(losses, dict), f"loss() must return a dict, got {type(losses).__name__}")
        missing = sorted(setup.detection_keys - set(losses))
        expect(
            not missing,
            f"the student's detection losses {missing} are missing from loss()",
            "return {**student_losses, **distillation_losses}",
        )
        extra = [k for k in losses if k not in setup.detection_keys and "loss" in k]
        expect(extra, "loss() has no distillation term (no key besides the detection losses)")
        bad = [k for k, v in losses.items() if not (torch.is_tensor(v) and v.dim() == 0)]
        expect(not bad, f"loss() values must be scalar tensors; not: {bad}")
        nonfinite = [k for k, v in losses.items() if not torch.isfinite(v)]
        expect(not nonfinite, f"loss() terms are NaN or inf: {nonfinite}")

    return run


def _distillation_grad(d: nn.Module, setup: _Setup) -> float:
    """Size of the gradient the distillation terms alone give the student's backbone."""
    losses = d.loss(setup.inputs, setup.samples)
    distill = [v for k, v in losses.items() if k not in setup.detection_keys and "loss" in k]
    expect(distill, "loss() has no distillation term (no key besides the detection losses)")
    expect(
        any(v.requires_grad for v in distill),
        "no distillation term carries a gradient; the student's features must keep their graph",
        "capture student features without detach (wrapper with is_student=True)",
    )
    sum(distill).backward()
    grads = [p.grad for p in d.student.pts_backbone.parameters() if p.grad is not None]
    return float(sum(g.abs().sum() for g in grads))


def _case_distill_grad(setup: _Setup):
    def run(fn: Any) -> None:
        d = setup.build(fn)
        d.train()
        expect(
            _distillation_grad(d, setup) > 0,
            "the distillation terms alone give the student's backbone no gradient",
            "capture student features without detach (wrapper with is_student=True)",
        )

    return run


def _case_step(setup: _Setup):
    def run(fn: Any) -> None:
        d = setup.build(fn)
        before = {k: v.clone() for k, v in d.teacher.state_dict().items()}
        d.train()
        params = [p for p in d.parameters() if p.requires_grad]
        optim = torch.optim.SGD(params, lr=0.1)
        losses = d.loss(setup.inputs, setup.samples)
        sum(v for k, v in losses.items() if "loss" in k).backward()
        with_grad = [n for n, p in d.teacher.named_parameters() if p.grad is not None]
        expect(not with_grad, f"teacher parameters received gradients: {with_grad[:3]}")
        optim.step()
        moved = [k for k, v in d.teacher.state_dict().items() if not torch.equal(v, before[k])]
        expect(
            not moved,
            f"a training step changed {len(moved)} teacher tensors, e.g. {moved[:3]} "
            "(BatchNorm running statistics move when the teacher runs in train mode)",
            "run the teacher in eval mode under torch.no_grad()",
        )

    return run


def _case_channels(setup: _Setup):
    def run(fn: Any) -> None:
        try:
            d = setup.build(fn, other=True)
            d.train()
            grad = _distillation_grad(d, setup)
        except (CheckFailure, NotImplementedError):
            raise
        except Exception as exc:  # noqa: BLE001 - a crash with other channel counts is the observation
            raise CheckFailure(f"with other channel counts your code raised {type(exc).__name__}: {exc}"
                               f"{where(exc)}", causes=[C["channels"]]) from None
        expect(
            grad > 0,
            "with other channel counts the distillation terms give the student no gradient",
        )

    return run


CASE_SPECS = (
    (
        "builds d.teacher and d.student from their configs",
        _case_structure,
        "d.teacher = build_detector(teacher_config); d.student = build_detector(student_config)",
        C["structure"],
    ),
    (
        "teacher weights come from teacher_checkpoint",
        _case_loaded,
        "ckpt = torch.load(path); teacher.load_state_dict(ckpt.get('state_dict', ckpt))",
        C["checkpoint"],
    ),
    (
        "teacher is frozen (no parameter requires grad)",
        _case_frozen,
        "teacher.requires_grad_(False)",
        C["frozen"],
    ),
    (
        "teacher stays in eval mode after every d.train()",
        _case_eval,
        "override train(): super().train(mode), then self.teacher.eval()",
        C["eval"],
    ),
    (
        "optimizer and state_dict leave the teacher out",
        _case_outside,
        "nn.Module registers any module you assign as an attribute; keep the teacher outside, "
        "e.g. object.__setattr__(self, 'teacher', teacher) or in a tuple",
        C["outside"],
    ),
    (
        "loss() = the student's detection losses + distillation terms",
        _case_loss_dict,
        "return {**student_losses, **distillation_losses}",
        C["loss-dict"],
    ),
    (
        "distillation terms give the student a gradient",
        _case_distill_grad,
        "the student's captured features must keep their autograd graph",
        C["distill-grad"],
    ),
    (
        "a training step leaves the teacher unchanged (weights and BatchNorm stats)",
        _case_step,
        "teacher forward under torch.no_grad(), in eval mode",
        C["step"],
    ),
    (
        "channel sizes come from the models (other channel counts work)",
        _case_channels,
        "run both models once on example inputs (example_inputs_for) and read shape[1] of each "
        "captured feature instead of typing channel numbers",
        C["channels"],
    ),
)


@contextmanager
def _quiet_log() -> Iterator[None]:
    """Mute mmengine's INFO lines (one checkpoint report per build) above the check's report."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@cache
def warm_up() -> None:
    """Import in this process what the cases would import in every child, and then forget: the
    first optimizer imports torch._dynamo (2 s), a detector's build and loss about 30 modules.
    The random states are restored, so the caller's are untouched."""
    with saved_rng():
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        with torch.no_grad():
            _build_detector(STUDENT).eval().loss(*_batch())


def check_build(
    learner_fn: Any,
    strict: bool | None = None,
    verbose: bool = True,
    time_limit_s: float | None = None,
) -> CheckResult:
    """Run every step-6 case on ``learner_fn``; ``.impl`` is it if all pass, else the reference."""
    warm_up()
    with tempfile.TemporaryDirectory(prefix="bevdistill-step6-") as folder, _quiet_log():
        setup = _Setup(Path(folder))
        cases = [Case(name, make(setup), hint, cause_) for name, make, hint, cause_ in CASE_SPECS]
        return run_cases(
            STEP,
            learner_fn,
            build_bevfusion_distillation,
            cases,
            strict,
            verbose,
            SEED,
            time_limit_s=time_limit_s,
        )
