"""Shared machinery of the exercise checkers: cases, readable reports, strict mode.

A checker is a list of :class:`Case` objects run against the learner's implementation.
A case raises :class:`CheckFailure` (with a hint) when the learner's code is wrong; a
``NotImplementedError`` from the learner's stub means "not implemented yet". The result
carries ``.impl``: the learner's implementation when every case passed, otherwise the
reference, so a notebook with unfilled TODOs keeps running.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

PASS, FAIL, TODO = "pass", "fail", "not implemented yet"
_MARK = {PASS: "✓", FAIL: "✗", TODO: "…"}


class CheckFailure(AssertionError):
    """Raised by a case when the learner's implementation gives a wrong answer."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class ExerciseFailed(AssertionError):
    """Raised in strict mode (``strict=True`` or ``BEVDISTILL_STRICT=1``) when a check fails."""


@dataclass(frozen=True)
class Case:
    """One seeded check: ``run(impl)`` raises :class:`CheckFailure` when ``impl`` is wrong."""

    name: str
    run: Callable[[Any], None]
    hint: str = ""


@dataclass
class CaseOutcome:
    name: str
    status: str
    detail: str = ""
    hint: str = ""


@dataclass
class CheckResult:
    """What a checker found; ``impl`` is what the notebook should use from here on."""

    step: str
    passed: bool
    impl: Any
    outcomes: list[CaseOutcome] = field(default_factory=list)
    message: str = ""

    def __bool__(self) -> bool:
        return self.passed

    @property
    def not_implemented(self) -> bool:
        return any(o.status == TODO for o in self.outcomes)

    def report(self) -> str:
        n_pass = sum(o.status == PASS for o in self.outcomes)
        verdict = "PASS" if self.passed else ("NOT IMPLEMENTED YET" if self.not_implemented else "FAIL")
        lines = [f"{self.step}: {n_pass}/{len(self.outcomes)} checks passed - {verdict}"]
        for o in self.outcomes:
            lines.append(f"  {_MARK[o.status]} {o.name}")
            if o.status == FAIL:
                lines.extend(f"      {line}" for line in o.detail.splitlines())
                if o.hint:
                    lines.append(f"      hint: {o.hint}")
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)

    def __repr__(self) -> str:  # notebooks show the report when the result is the cell's value
        return self.report()


def is_strict(strict: bool | None) -> bool:
    """``strict`` wins when given; otherwise the ``BEVDISTILL_STRICT`` environment variable decides."""
    if strict is not None:
        return bool(strict)
    return os.environ.get("BEVDISTILL_STRICT", "").strip().lower() in {"1", "true", "yes", "on"}


def _where(exc: BaseException) -> str:
    """The innermost frame of a traceback, so a learner sees which of their lines raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    f = frames[-1]
    return f" (raised at {os.path.basename(f.filename)}:{f.lineno}: {f.line})"


def run_cases(
    step: str,
    learner: Any,
    reference: Any,
    cases: Sequence[Case],
    strict: bool | None = None,
    verbose: bool = True,
    seed: int = 0,
) -> CheckResult:
    """Run ``cases`` against ``learner``; report, and fall back to ``reference`` on failure."""
    outcomes: list[CaseOutcome] = []
    for case in cases:
        if learner is None:
            outcomes.append(CaseOutcome(case.name, TODO))
            continue
        torch.manual_seed(seed)
        try:
            case.run(learner)
        except NotImplementedError:
            outcomes.append(CaseOutcome(case.name, TODO))
        except CheckFailure as failure:
            outcomes.append(CaseOutcome(case.name, FAIL, str(failure), failure.hint or case.hint))
        except Exception as exc:  # the learner's code crashed: that is a failed check, reported
            detail = f"your code raised {type(exc).__name__}: {exc}{_where(exc)}"
            outcomes.append(CaseOutcome(case.name, FAIL, detail, case.hint))
        else:
            outcomes.append(CaseOutcome(case.name, PASS))

    passed = bool(outcomes) and all(o.status == PASS for o in outcomes)
    if passed:
        message = "Your implementation is used from here on."
    elif any(o.status == TODO for o in outcomes):
        message = "Not implemented yet: the notebook carries on with the reference implementation."
    else:
        message = "The notebook carries on with the reference implementation; fix the checks marked ✗."
    result = CheckResult(step, passed, learner if passed else reference, outcomes, message)
    if verbose:
        print(result.report())
    if not passed and is_strict(strict):
        raise ExerciseFailed(result.report())
    return result


# --- small assertions that cases share ---------------------------------------------------


def expect(condition: bool, message: str, hint: str = "") -> None:
    if not condition:
        raise CheckFailure(message, hint)


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``||actual - expected|| / max(||expected||, 1e-12)``, in float64."""
    a = torch.as_tensor(actual).detach().double()
    e = torch.as_tensor(expected).detach().double()
    return float((a - e).norm() / e.norm().clamp_min(1e-12))


def expect_shape(actual: torch.Tensor, shape: Sequence[int], what: str, hint: str = "") -> None:
    if not isinstance(actual, torch.Tensor):
        raise CheckFailure(f"{what}: expected a tensor of shape {list(shape)}, got {type(actual).__name__}", hint)
    if list(actual.shape) != list(shape):
        raise CheckFailure(f"{what}: shape {list(actual.shape)}, expected {list(shape)}", hint)


def expect_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    what: str,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    hint: str = "",
) -> None:
    """Compare values and say by how much they differ, relative to the expected value."""
    if not isinstance(actual, torch.Tensor):
        raise CheckFailure(f"{what}: expected a tensor, got {type(actual).__name__}", hint)
    expected = torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise CheckFailure(f"{what}: shape {list(actual.shape)}, expected {list(expected.shape)}", hint)
    if not torch.isfinite(actual).all():
        raise CheckFailure(f"{what}: contains NaN or inf", hint)
    a, e = actual.detach().double(), expected.detach().double()
    if not torch.allclose(a, e, rtol=rtol, atol=atol):
        err = rel_error(a, e)
        shown = f"got {a.item():.6g}, expected {e.item():.6g}; " if a.numel() == 1 else ""
        raise CheckFailure(f"{what}: {shown}relative error {err:.2e} (tolerance {rtol:.0e})", hint)
