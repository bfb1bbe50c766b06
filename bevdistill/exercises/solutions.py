"""The reference solution of each step, as source code, for when a learner is stuck.

The notebooks never paste solutions into their cells. A learner reveals one on purpose::

    from bevdistill.exercises import show_solution
    show_solution("step3")          # prints the reference ContrastiveLoss and its helpers

The book shows the same output in a folded block. The source is read from the package with
:func:`inspect.getsource`, so it is always the code the checkers compare against.
"""

from __future__ import annotations

import inspect
from importlib import import_module

# step -> (what the learner writes, the reference objects that answer it, "module:name").
SOLUTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "step1": (
        "BEVFusionDistillationWrapper (feature capture with forward hooks)",
        ("bevdistill.capture:BEVFusionDistillationWrapper", "bevdistill.capture:FeatureRecorder"),
    ),
    "step2": (
        "ProjectionMLP (pool, MLP with LayerNorm, L2-normalise)",
        ("bevdistill.projection:pool_to_vector", "bevdistill.projection:ProjectionMLP"),
    ),
    "step3": (
        "ContrastiveLoss (symmetric InfoNCE)",
        ("bevdistill.losses.contrastive:symmetric_info_nce",
         "bevdistill.losses.contrastive:ContrastiveLoss"),
    ),
    "step4": (
        "AttentionTransferLoss (attention maps, area pooling, L2 normalisation)",
        ("bevdistill.bev_grid:resize_bev", "bevdistill.losses.attention:AttentionTransferLoss"),
    ),
    "step5": (
        "BEVFusionDistillationLoss (per-layer projectors and terms, response KD)",
        ("bevdistill.losses.response:HeatmapDistillationLoss",
         "bevdistill.losses.combined:BEVFusionDistillationLoss"),
    ),
    "step6": (
        "build_bevfusion_distillation and the Distiller it returns",
        ("bevdistill.distiller:build_bevfusion_distillation", "bevdistill.distiller:Distiller"),
    ),
}


def _normalise_step(step: str | int) -> str:
    key = f"step{step}" if isinstance(step, int) else str(step).strip().lower().replace(" ", "")
    if key not in SOLUTIONS:
        raise KeyError(f"unknown step {step!r}; choose one of {sorted(SOLUTIONS)} (or 1 to 6)")
    return key


def solution_source(step: str | int) -> str:
    """The reference source of ``step`` ('step1'..'step6' or 1..6), helpers first."""
    key = _normalise_step(step)
    title, targets = SOLUTIONS[key]
    parts = [f"# Reference solution of {key}: {title}"]
    for target in targets:
        module_name, name = target.split(":")
        obj = getattr(import_module(module_name), name)
        parts.append(f"# --- {module_name}.{name} ---\n{inspect.getsource(obj).rstrip()}")
    return "\n\n\n".join(parts) + "\n"


def show_solution(step: str | int) -> None:
    """Print the reference solution of ``step``: only when you want to see it."""
    print(solution_source(step))
