"""The driver of the package's own BEV detectors (and of any model with their contract).

A model here is an mmengine-style detector: ``model(inputs, data_samples, mode)`` with ``mode``
``'tensor'`` (raw outputs: far enough for every hook to fire), ``'loss'`` or ``'predict'``, one
data preprocessor shared by teacher and student. Subclasses change what differs for another
model family (:class:`~bevdistill.drivers.mmdet3d.MMDet3DDriver`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from bevdistill.example_inputs import example_inputs_for
from bevdistill.probe import tensor_forward
from bevdistill.teacher_weights import load_teacher_checkpoint


class PillarDriver:
    """Runs PillarBEVDetector-like models for the Distiller.

    Args:
        select: element of a tuple/list output per hooked layer (``pts_backbone`` returns one
            map per scale); default ``{'pts_backbone': -1}`` (the last) when it is hooked.
        example_inputs: the batch of the dry forward that reads channel sizes; by default
            random points in the student's range (:func:`~bevdistill.example_inputs_for`).
        data_preprocessor: the Runner's preprocessor; by default the student's, so batches
            arrive exactly as when training the student alone.
        strict_teacher: any missing/unexpected/mis-shaped key in the teacher checkpoint raises.
        trust_teacher_ckpt: read the teacher checkpoint with full unpickling.
    """

    heatmap = "bbox_head.heatmap_head"  # the module whose output is the class-heatmap logits

    def __init__(self, select: Mapping[str, int] | None = None, example_inputs: Any = None,
                 data_preprocessor: Any = None, strict_teacher: bool = True,
                 trust_teacher_ckpt: bool = False):
        self.select = None if select is None else dict(select)
        self.example_inputs = example_inputs
        self.data_preprocessor = data_preprocessor
        self.strict_teacher, self.trust_teacher_ckpt = strict_teacher, trust_teacher_ckpt

    def __repr__(self) -> str:
        return f"{type(self).__name__}(select={self.select})"

    # --- building -------------------------------------------------------------------------

    def build(self, spec: Any, role: str) -> nn.Module:
        """The teacher or student module from its spec (:func:`bevdistill.models.build.build_model`)."""
        from bevdistill.models.build import build_model  # lazy: the models are heavier code

        return build_model(spec, role)

    def describe(self, spec: Any, role: str) -> Any:
        """What an exported student records as the ``role``'s config: the spec it was built from."""
        return spec

    def load_teacher(self, teacher: nn.Module, checkpoint: Any) -> Any:
        """Load the teacher's weights (checked against a shipped card); the load report."""
        return load_teacher_checkpoint(teacher, checkpoint, self.strict_teacher,
                                       self.trust_teacher_ckpt)

    def preprocessor(self, student: nn.Module) -> Any:
        """The Distiller's data preprocessor: the given one, else the student's."""
        if self.data_preprocessor is not None:
            return self.data_preprocessor
        own = getattr(student, "data_preprocessor", None)
        return own if isinstance(own, nn.Module) else None

    def heatmap_layer(self, model: nn.Module) -> str:
        """Where ``model``'s class-heatmap logits are (a term's ``'heatmap'`` layer)."""
        return self.heatmap

    def select_for(self, hooks: Sequence[str]) -> dict[str, int]:
        """Which element of a tuple output each hooked layer gives (see ``select``)."""
        if self.select is not None:
            return dict(self.select)
        return {"pts_backbone": -1} if "pts_backbone" in hooks else {}

    # --- the dry forward ------------------------------------------------------------------

    def dry_inputs(self, student: nn.Module, teacher: nn.Module) -> Any:
        """The dry-forward batch: the given one, else random points for the student, plus what
        only the teacher reads (a fusion teacher's camera images and calibration, which a
        LiDAR-only student leaves alone)."""
        if self.example_inputs is not None:
            return self.example_inputs
        inputs = example_inputs_for(student)
        if callable(getattr(teacher, "example_inputs", None)):
            inputs = {**example_inputs_for(teacher), **inputs}
        return inputs

    def probe(self, model: nn.Module, inputs: Any, hooks: Sequence[str]) -> None:
        """One forward of ``model`` far enough for ``hooks`` to fire (eval mode, no grad)."""
        tensor_forward(model, inputs)

    def batch_size(self, inputs: Any) -> int | None:
        """Samples in the dry-run batch, to reject per-point layers; None skips the check."""
        points = inputs.get("points") if isinstance(inputs, Mapping) else None
        return len(points) if isinstance(points, (list, tuple)) else None

    # --- one step -------------------------------------------------------------------------

    @staticmethod
    def view_of(inputs: Any, role: str) -> Any:
        """What ``role`` ('teacher' or 'student') reads from a batch.

        A batch from a two-sensor world carries ``inputs['teacher_points']``, the richer
        sensor's scan of the same scenes: the teacher reads it as its ``points``, the student
        reads ``points`` (the deployed sensor). Everything else (images, calibration) goes to
        both models unchanged, as do batches without ``teacher_points``.
        """
        if not isinstance(inputs, Mapping) or "teacher_points" not in inputs:
            return inputs
        view = {k: v for k, v in inputs.items() if k != "teacher_points"}
        if role == "teacher":
            view["points"] = inputs["teacher_points"]
        return view

    def teacher_forward(self, teacher: nn.Module, inputs: Any, data_samples: Any,
                        hooks: Sequence[str]) -> None:
        """Run the teacher on its view far enough for ``hooks`` to fire (caller: no_grad)."""
        teacher(self.view_of(inputs, "teacher"), data_samples, mode="tensor")

    def student_loss(self, student: nn.Module, inputs: Any, data_samples: Any,
                     ) -> dict[str, torch.Tensor]:
        """The student's own detection losses on its view; its hooks fire on the way."""
        return student(self.view_of(inputs, "student"), data_samples, mode="loss")

    def student_predict(self, student: nn.Module, inputs: Any, data_samples: Any) -> list:
        """The student's predictions on its view."""
        return student(self.view_of(inputs, "student"), data_samples, mode="predict")

    def student_tensor(self, student: nn.Module, inputs: Any, data_samples: Any,
                       hooks: Sequence[str]) -> Any:
        """The student's raw outputs (``mode='tensor'``) on its view."""
        return student(self.view_of(inputs, "student"), data_samples, mode="tensor")
