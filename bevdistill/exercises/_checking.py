"""Shared machinery of the exercise checkers: cases, diagnoses, time limits, readable reports.

A checker is a list of :class:`Case` objects run against the learner's implementation.
A case raises :class:`CheckFailure` (with a hint) when the learner's code is wrong; a
``NotImplementedError`` from the learner's stub means "not implemented yet". The result
carries ``.impl``: the learner's implementation when every case passed, otherwise the
reference, so a notebook with unfilled TODOs keeps running.

One mistake usually fails several cases, each with its own hint, and most of those hints are
beside the point. So when an answer fails, the checker compares it with a :class:`Gallery` of
known wrong answers (misconceptions) on the same inputs; where one behaves exactly like the
learner's, the report opens with that one root cause and its fix (``CheckResult.diagnosis``).

Learner code cannot hang or end the checker: every case runs under a time limit (SIGALRM,
where the checker runs in the main thread of a POSIX process, as in a Jupyter kernel), and a
``SystemExit`` is reported as a failed case. ``KeyboardInterrupt`` stops the checker, after
printing what ran so far. The timers live in :mod:`bevdistill.exercises._limits`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import sysconfig
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bevdistill.exercises._limits import (  # noqa: F401 (re-exported)
    DEFAULT_TIME_LIMIT_S,
    TIME_LIMIT_ENV,
    CaseTimedOut,
    case_time_limit,
    time_limit,
    time_limits_available,
)

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
    # Which check failed: the checker line that raised, the learner's exception type, or
    # "timeout". Galleries compare it; it is not shown.
    signature: str = ""


@dataclass
class CheckResult:
    """What a checker found; ``impl`` is what the notebook should use from here on."""

    step: str
    passed: bool
    impl: Any
    outcomes: list[CaseOutcome] = field(default_factory=list)
    message: str = ""
    diagnosis: str | None = None  # the one root cause and its fix, when a known mistake matched
    time_limit_s: float | None = None  # per case; None where no limit could be set
    interrupted: bool = False

    def __bool__(self) -> bool:
        return self.passed

    @property
    def not_implemented(self) -> bool:
        return any(o.status == TODO for o in self.outcomes)

    def report(self) -> str:
        n_pass = sum(o.status == PASS for o in self.outcomes)
        verdict = "PASS" if self.passed else ("NOT IMPLEMENTED YET" if self.not_implemented else "FAIL")
        if self.interrupted:
            verdict = "INTERRUPTED"
        limit = (
            f"time limit {self.time_limit_s:g} s per case"
            if self.time_limit_s
            else "no time limit (it needs the main thread of a POSIX process)"
        )
        lines = [f"{self.step}: {n_pass}/{len(self.outcomes)} checks passed - {verdict} ({limit})"]
        if self.diagnosis:
            lines.append(f"Diagnosis: {self.diagnosis}")
            lines.append("The failed cases below all follow from it:")
        for o in self.outcomes:
            lines.append(f"  {_MARK[o.status]} {o.name}")
            if o.status == FAIL:
                lines.extend(f"      {line}" for line in o.detail.splitlines())
                if o.hint and not self.diagnosis:
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


# --- where an error happened -----------------------------------------------------------------


def _library_dirs() -> tuple[str, ...]:
    """Folders whose frames are not the learner's: torch, this package, the standard library."""
    dirs = {str(Path(torch.__file__).parent), str(Path(__file__).resolve().parents[1])}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(str(Path(path).resolve()))
    return tuple(sorted(dirs))


_LIBRARY_DIRS = _library_dirs()


def _is_library(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return True
    path = str(Path(filename).resolve()) if os.path.isabs(filename) else filename
    return path.startswith(_LIBRARY_DIRS)


def _shown_filename(filename: str) -> str:
    """``Cell In[5]`` for a Jupyter cell (as IPython names it), else the path."""
    ipython_module = sys.modules.get("IPython")
    get_ipython = getattr(ipython_module, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    cells = getattr(getattr(shell, "compile", None), "_filename_map", None) or {}
    if filename in cells:
        return f"Cell In[{cells[filename]}]"
    return filename


def learner_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame of ``exc`` in the learner's code (not torch's, not this package's)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if not _is_library(frame.filename):
            return frame
    return frames[-1] if frames else None


def where(exc: BaseException) -> str:
    """``' at <file>, line N: <text>'`` for the learner's own line that raised, or ''."""
    frame = learner_frame(exc)
    if frame is None:
        return ""
    text = f": {frame.line.strip()}" if frame.line else ""
    return f" at {_shown_filename(frame.filename)}, line {frame.lineno}{text}"


def _checker_line(exc: BaseException) -> str:
    """The checker line that raised a CheckFailure: which of a case's checks failed."""
    here = str(Path(__file__).resolve())
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if str(Path(frame.filename).resolve()) != here:
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return ""


# --- running the cases ---------------------------------------------------------------------------


def run_case(case: Case, impl: Any, seed: int, limit: float) -> CaseOutcome:
    """One case on ``impl``, seeded and under ``limit`` seconds; KeyboardInterrupt propagates."""
    torch.manual_seed(seed)
    try:
        with time_limit(limit):
            case.run(impl)
    except NotImplementedError:
        return CaseOutcome(case.name, TODO)
    except CaseTimedOut as exc:
        detail = f"your code did not finish within {limit:g} s (it was running{where(exc) or ' somewhere'})"
        return CaseOutcome(case.name, FAIL, detail, case.hint, "timeout")
    except CheckFailure as failure:
        return CaseOutcome(case.name, FAIL, str(failure), failure.hint or case.hint, _checker_line(failure))
    except SystemExit as exc:  # sys.exit() in learner code must not end the kernel
        detail = (
            f"your code called sys.exit({'' if exc.code is None else repr(exc.code)}){where(exc)}: "
            "it must return a value; the checker caught the exit so the kernel keeps running"
        )
        return CaseOutcome(case.name, FAIL, detail, case.hint, "SystemExit")
    except Exception as exc:  # the learner's code crashed: that is a failed check, reported
        detail = f"your code raised {type(exc).__name__}: {exc}{where(exc)}"
        return CaseOutcome(case.name, FAIL, detail, case.hint, type(exc).__name__)
    return CaseOutcome(case.name, PASS)


def run_cases(
    step: str,
    learner: Any,
    reference: Any,
    cases: Sequence[Case],
    strict: bool | None = None,
    verbose: bool = True,
    seed: int = 0,
    gallery: Gallery | None = None,
    time_limit_s: float | None = None,
) -> CheckResult:
    """Run ``cases`` against ``learner``; diagnose, report, and fall back to ``reference`` on failure."""
    limit = case_time_limit(time_limit_s)
    outcomes: list[CaseOutcome] = []
    for case in cases:
        if learner is None:
            outcomes.append(CaseOutcome(case.name, TODO))
            continue
        try:
            outcomes.append(run_case(case, learner, seed, limit))
        except KeyboardInterrupt:
            result = CheckResult(step, False, reference, outcomes, "", None, limit, interrupted=True)
            result.message = (
                f"Interrupted during case {len(outcomes) + 1} ({case.name!r}); the checker stopped."
            )
            if verbose:
                print(result.report())
            raise

    passed = bool(outcomes) and all(o.status == PASS for o in outcomes)
    diagnosis = None
    if not passed and gallery is not None and not any(o.status == TODO for o in outcomes):
        entry = gallery.diagnose(learner, outcomes, cases, seed, limit)
        diagnosis = entry.diagnosis if entry is not None else None
    if passed:
        message = "Your implementation is used from here on."
    elif any(o.status == TODO for o in outcomes):
        message = "Not implemented yet: the notebook carries on with the reference implementation."
    else:
        message = "The notebook carries on with the reference implementation; fix the checks marked ✗."
    result = CheckResult(
        step,
        passed,
        learner if passed else reference,
        outcomes,
        message,
        diagnosis,
        limit if time_limits_available() else None,
    )
    if verbose:
        print(result.report())
    if not passed and is_strict(strict):
        raise ExerciseFailed(result.report())
    return result


# --- galleries of known mistakes -----------------------------------------------------------------


@dataclass(frozen=True)
class Misconception:
    """A known wrong answer: code that makes the mistake, and one sentence naming cause and fix."""

    name: str
    diagnosis: str
    build: Callable[[], Any]  # returns the wrong implementation (a class or a function)


class Gallery:
    """Known mistakes of one step, compared with a failing answer on the same inputs.

    Without a ``probe``, an answer's fingerprint is, per case, which check failed (the
    checker line that raised, or the exception type the code raised): steps whose answers
    have their own random weights cannot be compared by value. With a ``probe(impl) -> dict``,
    the fingerprint is what the answer computes on fixed inputs (values, gradients, the
    exception types it raises), compared with a relative tolerance of 1e-3: that tells apart
    mistakes that fail the same checks, such as a missing temperature and a multiplied one.
    An entry matches only when its fingerprint equals the learner's, so an answer with two
    mistakes gets no diagnosis rather than a wrong one.
    """

    def __init__(self, entries: Sequence[Misconception], probe: Callable[[Any], dict] | None = None):
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ValueError(f"gallery entries need distinct names, got {names}")
        self.entries = tuple(entries)
        self.probe = probe
        self._fingerprints: dict[str, Any] = {}

    def fingerprint(
        self, impl: Any, cases: Sequence[Case], seed: int, limit: float, outcomes=None
    ) -> Any:
        """What ``impl`` does on the gallery's inputs, with its prints and warnings muted."""
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.probe is not None:
                torch.manual_seed(seed)
                with time_limit(limit * max(len(cases), 1)):
                    return self.probe(impl)
            if outcomes is None:
                outcomes = [run_case(case, impl, seed, limit) for case in cases]
            return tuple((o.status, o.signature) for o in outcomes)

    def entry_fingerprint(self, entry: Misconception, cases, seed: int, limit: float) -> Any:
        if entry.name not in self._fingerprints:
            self._fingerprints[entry.name] = self.fingerprint(entry.build(), cases, seed, limit)
        return self._fingerprints[entry.name]

    def diagnose(
        self, learner: Any, outcomes: Sequence[CaseOutcome], cases: Sequence[Case], seed: int, limit: float
    ) -> Misconception | None:
        """The entry that behaves exactly like ``learner``, or None."""
        try:
            mine = self.fingerprint(learner, cases, seed, limit, outcomes)
        except CaseTimedOut:  # the probe hung on the learner's code: no diagnosis, the cases say why
            return None
        for entry in self.entries:
            if same_observations(mine, self.entry_fingerprint(entry, cases, seed, limit)):
                return entry
        return None


def observe(fn: Callable[[], Any]) -> Any:
    """``fn()``, or ``'raises <Type>'`` when it raises: a probe records crashes as observations."""
    try:
        return fn()
    except (CaseTimedOut, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - every error of learner code is an observation
        return f"raises {type(exc).__name__}"


def same_observations(a: Any, b: Any, rtol: float = 1e-3, atol: float = 1e-6) -> bool:
    """Equal structure, equal values (tensors and floats within ``rtol``; NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_observations(a[k], b[k], rtol, atol) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same_observations(x, y, rtol, atol) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape:
            return False
        x, y = a.detach().double(), b.detach().double()
        return bool(torch.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
    return type(a) is type(b) and a == b


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
