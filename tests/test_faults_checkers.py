"""Checkers cannot hang or end the kernel (issue 12, item 7; issue 23, item 7).

Every case runs in a forked child process, killed at its time limit (``time_limit_s=``,
``BEVDISTILL_CASE_TIME_LIMIT``, default 10 s) stated in the report; an endless loop is a failed
case "did not finish within N s" and the next case still runs, whatever the code catches or
cancels; ``sys.exit()`` and ``os._exit()`` are failed cases; ``KeyboardInterrupt`` stops the
checker after printing what ran; a learner's own ``TimeoutError`` is an ordinary crash. The
learner's threads end with the child, its printing is capped, the caller's random states and
globals are untouched, and an error the reference raises is told from the learner's.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mistakes.step3 import _Base

from bevdistill.exercises import check_contrastive
from bevdistill.exercises._checking import DEFAULT_TIME_LIMIT_S, FAIL, PASS, case_time_limit
from bevdistill.exercises.step3_contrastive import CASES

N_CASES = len(CASES)  # check_contrastive's cases


class EndlessLoop(_Base):
    def forward(self, student_feat, teacher_feat):
        while True:
            pass


class EndlessAtTemperature05(_Base):
    """Hangs in one case only, so the cases after it must still run and pass."""

    def forward(self, student_feat, teacher_feat):
        while self.temperature == 0.5:
            pass
        return super().forward(student_feat, teacher_feat)


class SwallowsEverything(_Base):
    """Catches BaseException once: the repeating alarm still stops it."""

    def forward(self, student_feat, teacher_feat):
        try:
            while True:
                pass
        except BaseException:  # noqa: BLE001 - the learner mistake under test
            while True:
                pass


class Exits(_Base):
    def forward(self, student_feat, teacher_feat):
        sys.exit(3)


class OwnTimeout(_Base):
    def forward(self, student_feat, teacher_feat):
        raise TimeoutError("my own timeout")


class Interrupted(_Base):
    def forward(self, student_feat, teacher_feat):
        raise KeyboardInterrupt


def _statuses(result):
    return [o.status for o in result.outcomes]


def test_an_endless_loop_fails_every_case_within_the_limit():
    started = time.monotonic()
    result = check_contrastive(EndlessLoop, verbose=False, time_limit_s=0.2)
    assert time.monotonic() - started < N_CASES * 0.2 + 10
    assert _statuses(result) == [FAIL] * N_CASES
    assert all("your code did not finish within 0.2 s" in o.detail for o in result.outcomes)
    assert all("while True" in o.detail for o in result.outcomes)  # where it was stopped
    assert "time limit 0.2 s per case" in result.report()


def test_the_case_after_a_hang_still_runs():
    result = check_contrastive(EndlessAtTemperature05, verbose=False, time_limit_s=0.3)
    by_name = {o.name: o for o in result.outcomes}
    assert by_name["temperature is used (0.07 and 0.5)"].status == FAIL
    assert "did not finish within 0.3 s" in by_name["temperature is used (0.07 and 0.5)"].detail
    others = [o.status for o in result.outcomes if "temperature" not in o.name]
    assert len(others) == N_CASES - 2 and set(others) == {PASS}  # two cases use temperature 0.5


def test_catching_base_exception_once_does_not_escape_the_limit():
    result = check_contrastive(SwallowsEverything, verbose=False, time_limit_s=0.2)
    assert _statuses(result) == [FAIL] * N_CASES


def test_sys_exit_is_a_failed_case_not_the_end_of_the_kernel():
    result = check_contrastive(Exits, verbose=False)
    assert _statuses(result) == [FAIL] * N_CASES
    assert all("your code called sys.exit(3)" in o.detail for o in result.outcomes)
    assert all("sys.exit(3)" in o.detail and "line" in o.detail for o in result.outcomes)


def test_a_learners_own_timeout_error_is_an_ordinary_crash():
    result = check_contrastive(OwnTimeout, verbose=False, time_limit_s=0.5)
    assert _statuses(result) == [FAIL] * N_CASES
    assert all("your code raised TimeoutError: my own timeout" in o.detail for o in result.outcomes)
    assert not any("did not finish" in o.detail for o in result.outcomes)
    assert check_contrastive(EndlessAtTemperature05, verbose=False, time_limit_s=0.3).outcomes[3].status == PASS


def test_keyboard_interrupt_stops_the_checker_after_printing_what_ran(capsys):
    with pytest.raises(KeyboardInterrupt):
        check_contrastive(Interrupted)
    out = capsys.readouterr().out
    assert "INTERRUPTED" in out and "Interrupted during case 1" in out


def test_no_alarm_is_left_behind_and_an_earlier_timer_keeps_running():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 5.0)
        check_contrastive(EndlessAtTemperature05, verbose=False, time_limit_s=0.2)
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining < 5.0  # the outer timer was restored, minus the time spent
        assert signal.getsignal(signal.SIGALRM) is not None and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_the_limit_is_configurable(monkeypatch):
    assert case_time_limit() == DEFAULT_TIME_LIMIT_S
    monkeypatch.setenv("BEVDISTILL_CASE_TIME_LIMIT", "2.5")
    assert case_time_limit() == 2.5 and case_time_limit(4) == 4
    assert "time limit 2.5 s per case" in check_contrastive(_Base, verbose=False).report()
    monkeypatch.setenv("BEVDISTILL_CASE_TIME_LIMIT", "soon")
    with pytest.raises(ValueError, match="BEVDISTILL_CASE_TIME_LIMIT must be a number"):
        case_time_limit()
    with pytest.raises(ValueError, match="time_limit_s must be positive"):
        case_time_limit(0)


def test_a_correct_answer_is_not_slowed_or_failed_by_the_limit():
    result = check_contrastive(_Base, verbose=False, time_limit_s=5)
    assert result.passed and F is not None


# --- the sandbox (issue 23, item 7) -----------------------------------------------------------


class BareExceptLoop(_Base):
    """Catches everything, over and over: a timer raising inside it never gets out."""

    def forward(self, student_feat, teacher_feat):
        while True:
            try:
                while True:
                    pass
            except:  # noqa: E722 - the learner mistake under test
                continue


class CancelsAlarms(_Base):
    def forward(self, student_feat, teacher_feat):
        while True:
            signal.alarm(0)
            signal.setitimer(signal.ITIMER_REAL, 0)


def test_code_that_catches_everything_or_cancels_alarms_is_still_stopped():
    for impl in (BareExceptLoop, CancelsAlarms):
        started = time.monotonic()
        result = check_contrastive(impl, verbose=False, time_limit_s=0.2)
        assert time.monotonic() - started < N_CASES * 2.5
        assert _statuses(result) == [FAIL] * N_CASES
        assert all("did not finish within 0.2 s" in o.detail for o in result.outcomes)


MARK = []


class StartsAThread(_Base):
    def forward(self, student_feat, teacher_feat):
        threading.Thread(target=lambda: [time.sleep(0.01) or MARK.append(1) for _ in range(10**6)], daemon=True).start()
        return super().forward(student_feat, teacher_feat)


def test_the_learners_threads_and_globals_stay_in_the_child():
    before = threading.active_count()
    result = check_contrastive(StartsAThread, verbose=False)
    time.sleep(0.2)
    assert result.passed and threading.active_count() == before and MARK == []


class Reseeds(_Base):
    def forward(self, student_feat, teacher_feat):
        torch.manual_seed(123)
        np.random.seed(123)
        random.seed(123)
        torch.set_grad_enabled(False)
        return super().forward(student_feat, teacher_feat)


def test_the_callers_random_states_are_untouched():
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    for impl in (_Base, Reseeds, EndlessLoop):
        torch.manual_seed(5)
        np.random.seed(5)
        random.seed(5)
        check_contrastive(impl, verbose=False, time_limit_s=0.3)
        got = (torch.rand(3), np.random.rand(3), random.random())
        assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
        assert torch.is_grad_enabled()


class PrintsTenMegabytes(_Base):
    def forward(self, student_feat, teacher_feat):
        for _ in range(10_000):
            print("x" * 1000)
        return super().forward(student_feat, teacher_feat)


def test_the_learners_printing_is_capped_with_a_note(capsys):
    result = check_contrastive(PrintsTenMegabytes)
    out = capsys.readouterr().out
    assert result.passed and len(out) < 100_000
    assert "Your code printed:" in out and "more characters of output not shown]" in out


class ExitsTheProcess(_Base):
    def forward(self, student_feat, teacher_feat):
        os._exit(0)


def test_os_exit_is_a_failed_case_and_the_next_case_runs():
    result = check_contrastive(ExitsTheProcess, verbose=False)
    assert _statuses(result) == [FAIL] * N_CASES
    assert all("the process running your code exited" in o.detail for o in result.outcomes)


class ZeroesItsInputs(_Base):
    """Writes into its inputs after computing: the reference, run next on them, sees zeros."""

    def forward(self, student_feat, teacher_feat):
        loss = super().forward(student_feat, teacher_feat)
        with torch.no_grad():
            student_feat.zero_()
            teacher_feat.resize_(0)
        return loss


def test_an_error_the_reference_raises_is_not_reported_as_the_learners():
    result = check_contrastive(ZeroesItsInputs, verbose=False)
    assert result.causes == ("in-place",), result.report()
    details = [o.detail for o in result.outcomes if o.status == FAIL]
    assert any("the REFERENCE raised" in d for d in details), details
    assert not any("your code raised" in d and "reference" in d.lower() for d in details)


MAIN_SCRIPT = """
import torch.nn.functional as F
from torch import nn
from bevdistill.exercises import check_contrastive

class Mine(nn.Module):  # defined in __main__, as a notebook cell defines it
    def __init__(self, temperature=0.07):
        super().__init__()
        self.t = temperature
    def forward(self, s, t):
        logits = F.normalize(s, dim=1) @ F.normalize(t, dim=1).T / self.t
        labels = torch.arange(len(s))
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

import torch
assert check_contrastive(Mine, verbose=False).impl is Mine
"""


def test_a_class_defined_in_main_is_checked_in_the_child():
    import subprocess

    done = subprocess.run([sys.executable, "-c", MAIN_SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
