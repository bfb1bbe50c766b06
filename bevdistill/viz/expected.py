"""Expected outputs of the exercises: what the teaching solution gives on one fixed, seeded
input, printed beside what the learner's code gives on the same input.

The checker says pass or fail; this table says *what* the numbers should be, so a learner can
compare while writing, e.g. a loss of 2.7614 where theirs gives 5.5228 (twice as large: a
missing average). Both sides are computed when the cell runs, never typed in.

    viz.expected_output("step3", MyContrastiveLoss)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import torch

from bevdistill.exercises.steps import EXERCISES

Rows = dict[str, str]


def _number(value: Any) -> str:
    """A scalar to 4 decimals (so that float noise does not show as a difference)."""
    x = float(value)
    return "0.0000" if abs(x) < 5e-5 else f"{x:.4f}"


def _outcome(run: Callable[[], Any]) -> str:
    """What one call gives: its value, or the exception it raised, by type. A row of a table
    whose point is to show what the code does on bad input (KeyError, ValueError)."""
    try:
        return str(run())
    except Exception as exc:  # noqa: BLE001 - the raised type is the output shown
        return f"raises {type(exc).__name__}"


def _describe(value: Any) -> str:
    """'tuple of 2: [2, 32, 16, 16] no grad, ...' for a captured layer output."""
    if isinstance(value, torch.Tensor):
        return f"{list(value.shape)} {'grad' if value.requires_grad else 'no grad'}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of {len(value)}: " + ", ".join(_describe(v) for v in value)
    return type(value).__name__


def _wrapper(cls) -> Rows:
    from bevdistill.models.tiny import TinyBEVDetector, random_batch

    torch.manual_seed(0)
    model = TinyBEVDetector()
    inputs, samples = random_batch(batch_size=2, seed=0)
    rows: Rows = {}
    for is_student, side in ((False, "teacher"), (True, "student")):
        wrapper = cls(model, is_student=is_student)
        try:
            _, features = wrapper(inputs, samples, mode="loss")
        finally:
            wrapper.close()
        for name in sorted(features):
            rows[f"{side}: features[{name!r}]"] = _describe(features[name])
        rows[f"{side}: hooks left on pts_neck after close()"] = str(len(model.pts_neck._forward_hooks))
    return rows


def _projection(cls) -> Rows:
    torch.manual_seed(0)
    head = cls(16, hidden_dim=32, out_dim=8).eval()
    x = torch.randn(3, 16, 6, 5)
    with torch.no_grad():
        z = head(x)
        pooled = head(x.mean(dim=(2, 3)))
        shapes = {len(size): list(head(torch.randn(3, 16, *size[2:])).shape)
                  for size in ((3, 16), (3, 16, 7), (3, 16, 2, 3, 4))}
    one = cls(16, hidden_dim=32, out_dim=8).train()
    return {
        "output shape of a [3, 16, 6, 5] map": str(list(z.shape)),
        "row norms": ", ".join(_number(n) for n in z.norm(dim=1)),
        "max |head(map) - head(its mean vector)|": _number((z - pooled).abs().max()),
        **{f"output shape of a rank-{rank} input": str(shape) for rank, shape in shapes.items()},
        "training mode, B = 1": _outcome(lambda: list(one(torch.randn(1, 16)).shape)),
    }


def _contrastive(cls) -> Rows:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    return {
        "loss, tau = 0.07, B = 4": _number(cls(0.07)(s, t)),
        "loss, tau = 0.5, B = 4": _number(cls(0.5)(s, t)),
        "loss, tau = 0.07, student = teacher": _number(cls(0.07)(t, t)),
        "loss, tau = 0.07, B = 1": _number(cls(0.07)(s[:1], t[:1])),
    }


def _attention(cls) -> Rows:
    g = torch.Generator().manual_seed(0)
    fine, coarse = torch.randn(2, 8, 12, 10, generator=g), torch.randn(2, 16, 6, 5, generator=g)
    loss = cls()
    return {
        "student [2, 8, 12, 10], teacher [2, 16, 6, 5]": _number(loss(fine, coarse)),
        "student [2, 16, 6, 5], teacher [2, 8, 12, 10]": _number(loss(coarse, fine)),
        "student = teacher": _number(loss(coarse, coarse)),
        "student = 3 x teacher": _number(loss(3 * coarse, coarse)),
    }


def _heatmap_kd(fn) -> Rows:
    g = torch.Generator().manual_seed(0)
    s, t = 2 * torch.randn(2, 3, 8, 8, generator=g), 2 * torch.randn(2, 3, 8, 8, generator=g)
    return {"heatmap_kd(student, teacher), [2, 3, 8, 8]": _number(fn(s, t)),
            "heatmap_kd(teacher, teacher)": _number(fn(t, t))}


# Values that depend on more than the exercise's formula: they match with the code as given.
_DEPENDS = {"loss_crd": " (random projectors, __init__ as given)",
            "loss_kd": " (your heatmap_kd of 5a)"}


def _distillation_loss(cls) -> Rows:
    g = torch.Generator().manual_seed(0)
    student = {"pts_backbone": torch.randn(2, 8, 8, 8, generator=g),
               "pts_neck": torch.randn(2, 12, 8, 8, generator=g)}
    teacher = {"pts_backbone": torch.randn(2, 16, 16, 16, generator=g),
               "pts_neck": torch.randn(2, 24, 8, 8, generator=g)}
    heat_s, heat_t = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    torch.manual_seed(0)  # the projectors' random weights: the same for both sides of the table
    loss = cls({k: v.shape[1] for k, v in student.items()},
               {k: v.shape[1] for k, v in teacher.items()}).eval()
    terms = loss(student, teacher, heat_s, heat_t)
    rows = {key + _DEPENDS.get(key.split(".")[0], ""): _number(value)
            for key, value in sorted(terms.items())}
    no_neck = {k: v for k, v in student.items() if k != "pts_neck"}
    rows["student features without 'pts_neck'"] = _outcome(
        lambda: "returns " + ", ".join(sorted(loss(no_neck, teacher))))
    return rows


def _channels(fn) -> Rows:
    from bevdistill.models import build_detector

    torch.manual_seed(0)
    model = build_detector("student").train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    channels = fn(model)
    rows = {f"channels of {name}": str(int(channels[name])) for name in sorted(channels)}
    rows["the model still in training mode"] = str(model.training)
    rows["weights and BatchNorm statistics unchanged"] = str(
        all(torch.equal(v, model.state_dict()[k]) for k, v in state.items()))
    rows["hooks left on pts_neck"] = str(len(model.pts_neck._forward_hooks))
    return rows


@dataclass(frozen=True)
class Example:
    """The fixed input of one exercise, in words, and what to report about an answer on it."""

    input: str
    rows: Callable[[Any], Rows]


EXAMPLES: dict[str, Example] = {
    "step1": Example("TinyBEVDetector (torch.manual_seed(0)), random_batch(batch_size=2, seed=0), "
                     "mode='loss'", _wrapper),
    "step2": Example("MyProjectionMLP(16, hidden_dim=32, out_dim=8) in eval mode, a [3, 16, 6, 5] "
                     "map (torch.manual_seed(0))", _projection),
    "step3": Example("student and teacher [4, 16] from torch.Generator().manual_seed(0)",
                     _contrastive),
    "step4": Example("a [2, 8, 12, 10] and a [2, 16, 6, 5] map from "
                     "torch.Generator().manual_seed(0)", _attention),
    "step5a": Example("logits 2 * randn(2, 3, 8, 8) from torch.Generator().manual_seed(0)",
                      _heatmap_kd),
    "step5b": Example("two layers with different channels and grids, heatmaps [2, 3, 8, 8]; "
                      "projectors built after torch.manual_seed(0), eval mode", _distillation_loss),
    "step6a": Example("build_detector('student') (torch.manual_seed(0)) in training mode",
                      _channels),
}


def reference(key: str) -> Any:
    """The teaching solution of an exercise: what the learner's stub should become."""
    exercise = EXERCISES[key]
    return getattr(import_module(exercise.teaching), exercise.stub)


@dataclass
class Expected:
    """Both columns of the table; ``yours`` is None while the exercise is a stub."""

    key: str
    reference: Rows
    yours: Rows | None
    error: str = ""  # what the learner's code raised, if it did

    @property
    def matches(self) -> bool:
        return self.yours == self.reference

    def report(self) -> str:
        width = max(len(k) for k in self.reference) + 2
        lines = [f"Expected output ({EXAMPLES[self.key].input}):"]
        if self.yours is None:
            lines.append(f"  yours: {self.error}")
        for label, value in self.reference.items():
            line = f"  {label:{width}s} reference: {value}"
            if self.yours is not None:
                mine = self.yours.get(label, "(missing)")
                line += f"\n  {'':{width}s} yours:     {mine}" + ("" if mine == value else "   <- differs")
            lines.append(line)
        extra = sorted(set(self.yours or {}) - set(self.reference))
        lines += [f"  {label:{width}s} yours only: {self.yours[label]}" for label in extra]
        return "\n".join(lines)


def expected_output(key: str, yours: Any, *, show: bool = True) -> Expected:
    """Run the fixed example of exercise ``key`` through the teaching solution and through
    ``yours`` (the learner's class or function), print both, and return them."""
    if key not in EXAMPLES:
        raise KeyError(f"no expected output for {key!r}; there are {sorted(EXAMPLES)}")
    example = EXAMPLES[key]
    result = Expected(key, example.rows(reference(key)), None)
    try:
        result.yours = example.rows(yours)
    except NotImplementedError:
        result.error = "not written yet (the stub raises NotImplementedError)"
    except Exception as exc:  # noqa: BLE001 - the learner's error is the output shown
        result.error = f"your code raised {type(exc).__name__}: {exc}"
    if show:
        print(result.report())
    return result

