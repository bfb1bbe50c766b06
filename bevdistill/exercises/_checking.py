"""Shared machinery of the exercise checkers: checks, diagnoses, the sandbox, readable reports.

A checker is a list of :class:`Case` objects run against the learner's implementation. Some
compare with the reference on seeded inputs; others are *probes*: each isolates one property
the reference has and a learner can break (zero at identical inputs, invariance to scaling,
gradients to the student only, ...) and names its :class:`Cause` when it fails. A case raises
:class:`CheckFailure` when the learner's code is wrong; a ``NotImplementedError`` from the
learner's stub means "not implemented yet". The result carries ``.impl``: the learner's
implementation when every check passed, otherwise the reference, so a notebook with unfilled
TODOs keeps running.

Diagnosis: the causes of the failed probes, less those that another failed cause explains
(a missing normalisation also breaks the row-scaling probe), are the root causes; two mistakes
give two. When no probe names one, the report says so and shows the single most informative
failed check, with its hint only where that hint blames no property that holds.

Learner code runs in a forked child process (:mod:`bevdistill.exercises._sandbox`) killed at
each case's time limit; ``KeyboardInterrupt`` stops the checker after printing what ran.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from bevdistill.exercises import _sandbox
from bevdistill.exercises._limits import (  # noqa: F401 (re-exported)
    DEFAULT_TIME_LIMIT_S,
    TIME_LIMIT_ENV,
    case_time_limit,
)
from bevdistill.exercises._where import is_library, raised_in_reference, shown_filename, where  # noqa: F401

PASS, FAIL, TODO, SKIP = "pass", "fail", "not implemented yet", "not judged"
_MARK = {PASS: "✓", FAIL: "✗", TODO: "…", SKIP: "·"}


@dataclass(frozen=True)
class Cause:
    """A root cause and its fix in one sentence; ``explains``: keys of causes it brings along."""

    key: str
    text: str
    explains: tuple[str, ...] = ()


class CheckFailure(AssertionError):
    """Raised by a case when the learner's implementation gives a wrong answer."""

    def __init__(self, message: str, hint: str = "", causes: Sequence[Cause] = ()):
        super().__init__(message)
        self.hint = hint
        self.causes = tuple(causes)


class Inconclusive(Exception):
    """Raised by a probe that cannot judge its property (another mistake hides it)."""


class ExerciseFailed(AssertionError):
    """Raised in strict mode (``strict=True`` or ``BEVDISTILL_STRICT=1``) when a check fails."""


@dataclass(frozen=True)
class Case:
    """One seeded check: ``run(impl)`` raises :class:`CheckFailure` when ``impl`` is wrong.

    A probe names the ``cause`` its failure shows; when it passes, that cause and the keys in
    ``judges`` are shown not to apply. ``about``: the keys of the causes the ``hint`` blames;
    the hint is not shown when a passed probe rules them out.
    """

    name: str
    run: Callable[[Any], None]
    hint: str = ""
    cause: Cause | None = None
    about: tuple[str, ...] = ()
    judges: tuple[str, ...] = ()


@dataclass
class CaseOutcome:
    name: str
    status: str
    detail: str = ""
    hint: str = ""
    causes: tuple[Cause, ...] = ()


@dataclass
class CheckResult:
    """What a checker found; ``impl`` is what the notebook should use from here on."""

    step: str
    passed: bool
    impl: Any
    outcomes: list[CaseOutcome] = field(default_factory=list)
    message: str = ""
    diagnosis: str | None = None  # the root cause(s) and fix(es), when probes name them
    time_limit_s: float | None = None  # per case; None where no limit could be set
    interrupted: bool = False
    causes: tuple[str, ...] = ()  # the keys of the root causes named
    output: str = ""  # what the learner's code printed (capped)
    best_case: str | None = None  # with no diagnosis: the one failed check shown with its hint

    def __bool__(self) -> bool:
        return self.passed

    @property
    def not_implemented(self) -> bool:
        return any(o.status == TODO for o in self.outcomes)

    def report(self) -> str:
        judged = [o for o in self.outcomes if o.status != SKIP]
        n_pass = sum(o.status == PASS for o in judged)
        verdict = "PASS" if self.passed else ("NOT IMPLEMENTED YET" if self.not_implemented else "FAIL")
        if self.interrupted:
            verdict = "INTERRUPTED"
        limit = (
            f"time limit {self.time_limit_s:g} s per case"
            if self.time_limit_s
            else "no time limit (it needs os.fork)"
        )
        lines = [f"{self.step}: {n_pass}/{len(judged)} checks passed - {verdict} ({limit})"]
        if self.output:
            lines.append("Your code printed:")
            lines.extend(f"  | {line}" for line in self.output.rstrip("\n").splitlines())
        if self.diagnosis:
            lines.append(f"Diagnosis: {self.diagnosis}")
            lines.append("The failed checks below follow from it." if len(self.causes) == 1
                         else "The failed checks below follow from these.")
        for o in self.outcomes:
            lines.append(f"  {_MARK[o.status]} {o.name}")
            if o.status == FAIL:
                lines.extend(f"      {line}" for line in o.detail.splitlines())
            elif o.status == SKIP:
                lines.append(f"      not judged: {o.detail}")
        if self.best_case is not None:
            (best,) = [o for o in self.outcomes if o.name == self.best_case]
            failed = [o for o in self.outcomes if o.status == FAIL]
            same = sum(o.detail == best.detail for o in failed)
            lead = (f"your code raised the same error in {same} of the {len(failed)} failed checks: "
                    "fix the line shown first" if same > 1 and best.detail.startswith(_CRASH)
                    else f"the most telling failed check is '{best.name}'")
            lines.append(f"No single root cause is certain from the properties checked; {lead}.")
            if best.hint:
                lines.append(f"  hint: {best.hint}")
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


# --- running the cases ---------------------------------------------------------------------------

IN_PLACE = Cause(
    "in-place",
    "Your code changes a tensor it was given in place (x /= ..., x.div_(...), x[...] = ...), "
    "so the caller's features change under it: compute on new tensors (x = x / ...).",
)


def run_case(case: Case, impl: Any, seed: int) -> CaseOutcome:
    """One case on ``impl``, seeded; KeyboardInterrupt propagates."""
    torch.manual_seed(seed)
    try:
        case.run(impl)
    except NotImplementedError:
        return CaseOutcome(case.name, TODO)
    except Inconclusive as exc:
        return CaseOutcome(case.name, SKIP, str(exc))
    except CheckFailure as failure:
        causes = failure.causes or ((case.cause,) if case.cause else ())
        return CaseOutcome(case.name, FAIL, str(failure), failure.hint or case.hint, causes)
    except SystemExit as exc:  # sys.exit() in learner code must not end the check
        detail = (
            f"your code called sys.exit({'' if exc.code is None else repr(exc.code)}){where(exc)}: "
            "it must return a value; the checker caught the exit"
        )
        return CaseOutcome(case.name, FAIL, detail, case.hint)
    except Exception as exc:  # a crash is a failed check, reported with whose code raised
        if raised_in_reference(exc):
            detail = (
                f"the REFERENCE raised {type(exc).__name__}: {exc}, on inputs your code had been "
                "given before: your code changed them in place"
            )
            return CaseOutcome(case.name, FAIL, detail, "", (IN_PLACE,))
        detail = f"your code raised {type(exc).__name__}: {exc}{where(exc)}"
        return CaseOutcome(case.name, FAIL, detail, case.hint)
    return CaseOutcome(case.name, PASS)


def _timed_out(case: Case, limit: float, where_: str) -> CaseOutcome:
    detail = f"your code did not finish within {limit:g} s (it was running{where_ or ' somewhere'})"
    return CaseOutcome(case.name, FAIL, detail, case.hint)


def _died(case: Case, how: str) -> CaseOutcome:
    detail = f"the process running your code {how}: your code must return, not end the process"
    return CaseOutcome(case.name, FAIL, detail, case.hint)


def _run_all(cases: Sequence[Case], learner: Any, seed: int, limit: float) -> tuple[list, str, int | None]:
    """Outcomes of every case, the learner's printing, and the index interrupted (or None)."""
    outcomes: list[CaseOutcome] = []
    output = _sandbox.CappedOutput()
    if not _sandbox.sandbox_available():
        with _sandbox.saved_rng():
            try:
                for case in cases:
                    outcomes.append(run_case(case, learner, seed))
            except KeyboardInterrupt:
                return outcomes, "", len(outcomes)
        return outcomes, "", None
    try:
        for _, outcome in _sandbox.run_in_child(
            len(cases),
            lambda i: run_case(cases[i], learner, seed),
            lambda i, at: _timed_out(cases[i], limit, at),
            lambda i, how: _died(cases[i], how),
            limit,
            output,
        ):
            outcomes.append(outcome)
    except _sandbox.Interrupted as stop:
        return outcomes, _printed(output), stop.index
    return outcomes, _printed(output), None


def _printed(output: _sandbox.CappedOutput) -> str:
    text, dropped = output.take()
    if dropped:
        text += f"\n[... {dropped:,} more characters of output not shown]"
    return text


def diagnose(outcomes: Sequence[CaseOutcome]) -> list[Cause]:
    """The causes of the failed checks that no other failed cause explains, in check order."""
    named: dict[str, Cause] = {}
    for o in outcomes:
        if o.status == FAIL:
            for cause in o.causes:
                named.setdefault(cause.key, cause)
    explained = {k for cause in named.values() for k in cause.explains if k != cause.key}
    return [cause for key, cause in named.items() if key not in explained]


def _holds(outcomes: Sequence[CaseOutcome], cases: Sequence[Case]) -> set[str]:
    """Keys of the causes whose probe passed: properties shown to hold."""
    held = set()
    for case, o in zip(cases, outcomes, strict=False):
        if o.status == PASS:
            held.update(case.judges + ((case.cause.key,) if case.cause else ()))
    return held


_CRASH = "your code raised "


def _best_failure(outcomes: Sequence[CaseOutcome], cases: Sequence[Case]) -> CaseOutcome | None:
    """The first failed check (probes come first, most specific first), hint withheld if it
    blames a property a probe showed to hold. When most failed checks are one crash of the
    learner's code, that crash is the one shown, with no hint: the line is the lead."""
    failed = [o for o in outcomes if o.status == FAIL]
    crashes = [o for o in failed if o.detail.startswith(_CRASH)]
    if crashes and 2 * sum(o.detail == crashes[0].detail for o in failed) > len(failed):
        crashes[0].hint = ""
        return crashes[0]
    holds = _holds(outcomes, cases)
    for case, o in zip(cases, outcomes, strict=False):
        if o.status == FAIL:
            if set(case.about) & holds:
                o.hint = ""
            return o
    return None


def run_cases(
    step: str,
    learner: Any,
    reference: Any,
    cases: Sequence[Case],
    strict: bool | None = None,
    verbose: bool = True,
    seed: int = 0,
    time_limit_s: float | None = None,
) -> CheckResult:
    """Run ``cases`` against ``learner``; diagnose, report, and fall back to ``reference`` on failure."""
    limit = case_time_limit(time_limit_s)
    shown_limit = limit if _sandbox.sandbox_available() else None
    if learner is None:
        outcomes, output, stopped = [CaseOutcome(c.name, TODO) for c in cases], "", None
    else:
        outcomes, output, stopped = _run_all(cases, learner, seed, limit)
    if stopped is not None:
        result = CheckResult(step, False, reference, outcomes, "", None, shown_limit, True, output=output)
        result.message = f"Interrupted during case {stopped + 1} ({cases[stopped].name!r}); the checker stopped."
        if verbose:
            print(result.report())
        raise KeyboardInterrupt

    passed = bool(outcomes) and all(o.status in (PASS, SKIP) for o in outcomes)
    todo = any(o.status == TODO for o in outcomes)
    causes = [] if passed or todo else diagnose(outcomes)
    best = None if passed or todo or causes else _best_failure(outcomes, cases)
    if passed:
        message = "Your implementation is used from here on."
    elif todo:
        message = "Not implemented yet: the notebook carries on with the reference implementation."
    else:
        message = "The notebook carries on with the reference implementation; fix the checks marked ✗."
    result = CheckResult(
        step,
        passed,
        learner if passed else reference,
        outcomes,
        message,
        _diagnosis_text(causes),
        shown_limit,
        causes=tuple(c.key for c in causes),
        output=output,
        best_case=best.name if best is not None else None,
    )
    if verbose:
        print(result.report())
    if not passed and is_strict(strict):
        raise ExerciseFailed(result.report())
    return result


def _diagnosis_text(causes: Sequence[Cause]) -> str | None:
    if not causes:
        return None
    if len(causes) == 1:
        return causes[0].text
    listed = "\n".join(f"  {i}. {c.text}" for i, c in enumerate(causes, 1))
    return f"{len(causes)} mistakes at once:\n{listed}"


# --- small assertions that cases share ---------------------------------------------------


def expect(condition: bool, message: str, hint: str = "", causes: Sequence[Cause] = ()) -> None:
    if not condition:
        raise CheckFailure(message, hint, causes)


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
    causes: Sequence[Cause] = (),
) -> None:
    """Compare values and say by how much they differ, relative to the expected value."""
    if not isinstance(actual, torch.Tensor):
        raise CheckFailure(f"{what}: expected a tensor, got {type(actual).__name__}", hint, causes)
    expected = torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise CheckFailure(f"{what}: shape {list(actual.shape)}, expected {list(expected.shape)}", hint, causes)
    if not torch.isfinite(actual).all():
        raise CheckFailure(f"{what}: contains NaN or inf", hint, causes)
    a, e = actual.detach().double(), expected.detach().double()
    if not torch.allclose(a, e, rtol=rtol, atol=atol):
        err = rel_error(a, e)
        shown = f"got {a.item():.6g}, expected {e.item():.6g}; " if a.numel() == 1 else ""
        raise CheckFailure(f"{what}: {shown}relative error {err:.2e} (tolerance {rtol:.0e})", hint, causes)
