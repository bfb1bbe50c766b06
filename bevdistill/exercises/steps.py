"""The six steps of the lab, declared once.

Everything that lists the steps reads this: the checkers' registry (``bevdistill.exercises``),
``show_solution`` and ``solution_source``, the consistency tests and the check of the book's
table of contents. Adding a step is one entry here, its notebook, checker and teaching solution.
Names are "module:object" strings, resolved on demand, so importing this costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class Exercise:
    """One checked TODO cell: what the learner writes, its checker and its teaching solution."""

    key: str  # 'step3', 'step5a'
    stub: str  # the name the notebook's stub defines
    writes: str  # what the learner writes, in words
    checker: str  # 'module:function'

    @property
    def checker_name(self) -> str:
        return self.checker.split(":")[1]

    @property
    def teaching_module(self) -> str:
        return f"bevdistill.exercises.teaching.{self.key}"


@dataclass(frozen=True)
class Step:
    """A chapter: its number, title, notebook, the reference code that answers it, its exercises."""

    number: int
    title: str
    notebook: str  # path from the repository root
    reference: tuple[str, ...]  # 'module:object', helpers first
    exercises: tuple[Exercise, ...]

    @property
    def key(self) -> str:
        return f"step{self.number}"


_EX = "bevdistill.exercises"
STEPS: tuple[Step, ...] = (
    Step(1, "BEVFusionDistillationWrapper (feature capture with forward hooks)",
         "notebooks/01_feature_hooks.ipynb",
         ("bevdistill.capture:BEVFusionDistillationWrapper", "bevdistill.capture:FeatureRecorder"),
         (Exercise("step1", "MyDistillationWrapper", "MyDistillationWrapper",
                   f"{_EX}.step1_wrapper:check_wrapper"),)),
    Step(2, "ProjectionMLP (pool, MLP with LayerNorm, L2-normalise)",
         "notebooks/02_projection.ipynb",
         ("bevdistill.projection:pool_to_vector", "bevdistill.projection:ProjectionMLP"),
         (Exercise("step2", "MyProjectionMLP", "MyProjectionMLP",
                   f"{_EX}.step2_projection:check_projection"),)),
    Step(3, "ContrastiveLoss (symmetric InfoNCE)",
         "notebooks/03_contrastive_loss.ipynb",
         ("bevdistill.losses.contrastive:symmetric_info_nce",
          "bevdistill.losses.contrastive:ContrastiveLoss"),
         (Exercise("step3", "MyContrastiveLoss", "MyContrastiveLoss",
                   f"{_EX}.step3_contrastive:check_contrastive"),)),
    Step(4, "AttentionTransferLoss (attention maps, area pooling, L2 normalisation)",
         "notebooks/04_attention_transfer.ipynb",
         ("bevdistill.bev_grid:resize_bev", "bevdistill.losses.attention:AttentionTransferLoss"),
         (Exercise("step4", "MyAttentionTransferLoss", "MyAttentionTransferLoss",
                   f"{_EX}.step4_attention:check_attention"),)),
    Step(5, "BEVFusionDistillationLoss (per-layer projectors and terms, response KD)",
         "notebooks/05_distillation_loss.ipynb",
         ("bevdistill.losses.response:HeatmapDistillationLoss",
          "bevdistill.losses.combined:BEVFusionDistillationLoss"),
         (Exercise("step5a", "heatmap_kd", "heatmap_kd", f"{_EX}.step5a_response:check_heatmap_kd"),
          Exercise("step5b", "MyDistillationLoss", "layer_input and MyDistillationLoss",
                   f"{_EX}.step5_loss:check_distillation_loss"))),
    Step(6, "build_bevfusion_distillation and the Distiller it returns",
         "notebooks/06_build_and_distill.ipynb",
         ("bevdistill.distiller:build_bevfusion_distillation", "bevdistill.distiller:Distiller"),
         (Exercise("step6a", "measure_channels", "measure_channels",
                   f"{_EX}.step6a_channels:check_channels"),
          Exercise("step6b", "my_build_bevfusion_distillation",
                   "MyDistiller and my_build_bevfusion_distillation",
                   f"{_EX}.step6_build:check_build"))),
)
EXERCISES: dict[str, Exercise] = {ex.key: ex for step in STEPS for ex in step.exercises}


def resolve(target: str) -> Any:
    """The object a 'module:name' string names."""
    module, name = target.split(":")
    return getattr(import_module(module), name)


def step_of(exercise_key: str) -> Step:
    """The step an exercise belongs to ('step5a' -> step 5)."""
    return next(s for s in STEPS if any(e.key == exercise_key for e in s.exercises))
