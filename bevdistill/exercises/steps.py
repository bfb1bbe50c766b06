"""The six steps of the lab, declared once.

Everything that lists the steps reads this: the checkers' registry (``bevdistill.exercises``),
``show_solution``, ``solution_source`` and ``teaching_source``, the tests, and the check of the
book's table of contents (tests/test_steps.py). Adding a step is one entry here plus its
notebook, checker (with its probes) and teaching solution.

Code is named by "module:name" strings, resolved on demand, so importing this imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Exercise:
    """One checked exercise cell: what the learner writes, its checker and its teaching solution."""

    key: str  # what show_solution takes: 'step3', 'step5a'
    stub: str  # the name the notebook's exercise cell defines
    writes: str  # what the learner writes, in words
    checker: str  # 'module:function', exported by bevdistill.exercises
    teaching: str  # the module of the teaching solution, which defines `stub`

    @property
    def checker_name(self) -> str:
        return self.checker.split(":")[1]


@dataclass(frozen=True)
class Step:
    """A chapter: its number, title, notebook, the reference code that answers it, its exercises."""

    number: int
    title: str
    notebook: str  # path from the repository root
    reference: tuple[str, ...]  # 'module:name', helpers first
    exercises: tuple[Exercise, ...]  # in notebook order; steps 5 and 6 have parts a and b

    @property
    def key(self) -> str:
        return f"step{self.number}"

    @property
    def notebook_name(self) -> str:
        """'01_feature_hooks': the notebook's file name without '.ipynb'."""
        return Path(self.notebook).stem


_EX = "bevdistill.exercises"

STEPS: tuple[Step, ...] = (
    Step(
        number=1,
        title="BEVFusionDistillationWrapper (feature capture with forward hooks)",
        notebook="notebooks/01_feature_hooks.ipynb",
        reference=("bevdistill.capture:BEVFusionDistillationWrapper",
                   "bevdistill.capture:FeatureRecorder"),
        exercises=(
            Exercise(key="step1", stub="MyDistillationWrapper", writes="MyDistillationWrapper",
                     checker=f"{_EX}.step1_wrapper:check_wrapper",
                     teaching=f"{_EX}.teaching.step1"),
        ),
    ),
    Step(
        number=2,
        title="ProjectionMLP (pool, MLP with LayerNorm, L2-normalise)",
        notebook="notebooks/02_projection.ipynb",
        reference=("bevdistill.projection:pool_to_vector", "bevdistill.projection:ProjectionMLP"),
        exercises=(
            Exercise(key="step2", stub="MyProjectionMLP", writes="MyProjectionMLP",
                     checker=f"{_EX}.step2_projection:check_projection",
                     teaching=f"{_EX}.teaching.step2"),
        ),
    ),
    Step(
        number=3,
        title="ContrastiveLoss (symmetric InfoNCE)",
        notebook="notebooks/03_contrastive_loss.ipynb",
        reference=("bevdistill.losses.contrastive:symmetric_info_nce",
                   "bevdistill.losses.contrastive:ContrastiveLoss"),
        exercises=(
            Exercise(key="step3", stub="MyContrastiveLoss", writes="MyContrastiveLoss",
                     checker=f"{_EX}.step3_contrastive:check_contrastive",
                     teaching=f"{_EX}.teaching.step3"),
        ),
    ),
    Step(
        number=4,
        title="AttentionTransferLoss (attention maps, area pooling, L2 normalisation)",
        notebook="notebooks/04_attention_transfer.ipynb",
        reference=("bevdistill.bev_grid:resize_bev",
                   "bevdistill.losses.attention:AttentionTransferLoss"),
        exercises=(
            Exercise(key="step4", stub="MyAttentionTransferLoss", writes="MyAttentionTransferLoss",
                     checker=f"{_EX}.step4_attention:check_attention",
                     teaching=f"{_EX}.teaching.step4"),
        ),
    ),
    Step(
        number=5,
        title="BEVFusionDistillationLoss (per-layer projectors and terms, response KD)",
        notebook="notebooks/05_distillation_loss.ipynb",
        reference=("bevdistill.losses.response:HeatmapDistillationLoss",
                   "bevdistill.losses.combined:BEVFusionDistillationLoss"),
        exercises=(
            Exercise(key="step5a", stub="heatmap_kd", writes="heatmap_kd",
                     checker=f"{_EX}.step5a_response:check_heatmap_kd",
                     teaching=f"{_EX}.teaching.step5a"),
            Exercise(key="step5b", stub="MyDistillationLoss",
                     writes="layer_input and MyDistillationLoss",
                     checker=f"{_EX}.step5_loss:check_distillation_loss",
                     teaching=f"{_EX}.teaching.step5b"),
        ),
    ),
    Step(
        number=6,
        title="build_bevfusion_distillation and the Distiller it returns",
        notebook="notebooks/06_build_and_distill.ipynb",
        reference=("bevdistill.distiller:build_bevfusion_distillation",
                   "bevdistill.distiller:Distiller"),
        exercises=(
            Exercise(key="step6a", stub="measure_channels", writes="measure_channels",
                     checker=f"{_EX}.step6a_channels:check_channels",
                     teaching=f"{_EX}.teaching.step6a"),
            Exercise(key="step6b", stub="my_build_bevfusion_distillation",
                     writes="MyDistiller and my_build_bevfusion_distillation",
                     checker=f"{_EX}.step6_build:check_build",
                     teaching=f"{_EX}.teaching.step6b"),
        ),
    ),
)

EXERCISES: dict[str, Exercise] = {ex.key: ex for step in STEPS for ex in step.exercises}


def resolve(target: str) -> Any:
    """The object a 'module:name' string names (importing its module)."""
    module, sep, name = target.partition(":")
    if not sep or not name:
        raise ValueError(f"expected 'module:name', got {target!r}")
    return getattr(import_module(module), name)
