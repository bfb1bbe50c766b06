"""Checker for step 6a: ``measure_channels(model)``, channel counts read from the model.

The contract: ``measure_channels(model) -> {layer: channels}`` for ``pts_middle_encoder``,
``pts_backbone`` (its last scale) and ``pts_neck``, from one forward on
``bevdistill.distiller.example_inputs_for(model)``, leaving the model as it was: the same
train/eval flag, the same BatchNorm statistics, no hook left behind. The checker measures
three detectors of different widths, so typed-in numbers cannot pass.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from bevdistill.distiller import dry_forward, example_inputs_for, infer_channels
from bevdistill.exercises._checking import Case, CheckResult, expect, run_cases
from bevdistill.exercises._probes import cause
from bevdistill.exercises.step6_build import STUDENT, STUDENT_OTHER, TEACHER, TEACHER_OTHER, warm_up

STEP = "Step 6a - measure_channels"
LAYERS = ("pts_middle_encoder", "pts_backbone", "pts_neck")
PICK = {"pts_backbone": -1}


C = {
    "values": cause("values", "The channel counts are not shape[1] of each captured feature of this model "
                    "(typed in, or pts_backbone's first scale instead of its last): read value[-1] of the "
                    "backbone's tuple and shape[1] of each feature from a dry forward."),
    "mode": cause("mode", "The model is not left in the mode it came in: remember model.training and call "
                  "model.train(was_training) at the end."),
    "statistics": cause("statistics", "The dry forward runs in train mode, so BatchNorm updates its running "
                        "statistics: call model.eval() first and restore the mode after."),
    "hooks": cause("hooks", "The measuring hooks stay on the model, so every later forward still records into "
                   "them: close the recorder (a with block does it) or remove the hook handles."),
}


def reference_measure_channels(model: nn.Module) -> dict[str, int]:
    """The package's way: a dry forward in eval mode under no_grad, hooks removed after."""
    return infer_channels(dry_forward(model, example_inputs_for(model), LAYERS, PICK))


def _detector(cfg: dict) -> nn.Module:
    from bevdistill.models import build_detector

    torch.manual_seed(0)
    return build_detector(copy.deepcopy(cfg))


def _measure(fn: Any, model: nn.Module) -> dict:
    out = fn(model)
    expect(isinstance(out, dict), f"measure_channels must return a dict, got {type(out).__name__}")
    return out


def _case_values(fn: Any) -> None:
    for name, cfg in (("student", STUDENT), ("teacher", TEACHER), ("a wider teacher", TEACHER_OTHER),
                      ("a wider student", STUDENT_OTHER)):
        got = _measure(fn, _detector(cfg))
        want = reference_measure_channels(_detector(cfg))
        got = {k: int(v) for k, v in got.items()} if all(isinstance(v, int) for v in got.values()) else got
        expect(
            got == want,
            f"for {name} you measured {got}, expected {want}",
            "shape[1] of each captured feature; for pts_backbone's tuple, its last scale",
        )


def _case_mode_restored(fn: Any) -> None:
    for training in (True, False):
        model = _detector(STUDENT).train(training)
        _measure(fn, model)
        flags = {m.training for m in model.modules()}
        expect(
            flags == {training},
            f"a model in {'train' if training else 'eval'} mode came back with train flags {flags}",
            "remember model.training before, and call model.train(was_training) after",
        )


def _case_statistics_unchanged(fn: Any) -> None:
    model = _detector(STUDENT).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _measure(fn, model)
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    expect(
        not moved,
        f"measuring changed {len(moved)} tensors of the model, e.g. {moved[:2]}",
        "run the forward in eval mode (BatchNorm updates its running statistics in train mode)",
    )


def _case_no_hooks_left(fn: Any) -> None:
    model = _detector(STUDENT)
    _measure(fn, model)
    left = [n for n, m in model.named_modules() if m._forward_hooks]
    expect(
        not left,
        f"hooks are left on {left} after measuring",
        "remove the hooks when done: close() the recorder or use it in a with block",
    )


CASES = [
    Case("channels of four detectors of different widths", _case_values, cause=C["values"]),
    Case("the model's train/eval mode is restored", _case_mode_restored, cause=C["mode"]),
    Case("BatchNorm statistics do not change", _case_statistics_unchanged, cause=C["statistics"]),
    Case("no hook is left on the model", _case_no_hooks_left, cause=C["hooks"]),
]


def check_channels(
    learner_fn: Any, strict: bool | None = None, verbose: bool = True, time_limit_s: float | None = None
) -> CheckResult:
    """Check a learner's ``measure_channels``; ``.impl`` is it if it passed, else the reference."""
    warm_up()
    return run_cases(STEP, learner_fn, reference_measure_channels, CASES, strict, verbose,
                     time_limit_s=time_limit_s)
