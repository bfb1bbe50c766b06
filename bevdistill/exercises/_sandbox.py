"""Learner code runs in a forked child process that the checker kills at its time limit.

Why a process and not a timer in the caller: a timer raises an exception inside the learner's
code, which a bare ``except:`` in a loop catches every time, and ``signal.alarm(0)`` cancels.
A child process is killed whatever its code does; its threads, its prints, its random numbers
and any global state it changes (``torch.set_grad_enabled``, a module's variables) end with it.

``fork`` copies the caller as it is, so a class defined in a Jupyter cell (``__main__``) needs no
pickling: only the outcomes travel back, through a pipe. The child runs the checks one after
another and says when each starts; a watchdog thread in the child records where the learner's
code was running at the limit and ends the child; the parent kills it outright a little later in
case even that thread cannot run. After a timeout a fresh child runs the remaining checks.

Where ``fork`` does not exist (Windows), the checks run in the caller, without a time limit,
with the RNG states saved and restored around them.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

import torch

from bevdistill.exercises._where import is_library, shown_filename

OUTPUT_CAP = 20_000  # characters of the learner's printing shown in the report
_GRACE_S = 2.0  # after the limit, how long the watchdog has before the parent kills the child


def sandbox_available() -> bool:
    return hasattr(os, "fork") and sys.platform != "win32"


class CappedOutput(io.TextIOBase):
    """A stdout that keeps the first ``cap`` characters and counts the rest."""

    def __init__(self, cap: int = OUTPUT_CAP):
        self.cap, self.kept, self.dropped = cap, [], 0
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        room = self.cap - self._size
        if room > 0:
            self.kept.append(text[:room])
            self._size += min(len(text), room)
        self.dropped += max(len(text) - max(room, 0), 0)
        return len(text)

    def take(self) -> tuple[str, int]:
        """The text kept and the count dropped since the last take."""
        text, dropped = "".join(self.kept), self.dropped
        self.kept, self.dropped = [], 0
        return text, dropped


def _frame_text(frame: traceback.FrameSummary | None) -> str:
    if frame is None:
        return ""
    text = f": {frame.line.strip()}" if frame.line else ""
    return f" at {shown_filename(frame.filename)}, line {frame.lineno}{text}"


def _where_now(thread_id: int) -> str:
    """Where the thread is running now, at the innermost frame of the learner's code."""
    frame = sys._current_frames().get(thread_id)
    stack = traceback.extract_stack(frame) if frame is not None else []
    mine = [f for f in stack if not is_library(f.filename)]
    return _frame_text(mine[-1] if mine else None)


class _Child:
    """The child's side: run checks from ``start``, report each, die at a check's limit."""

    def __init__(self, conn: Connection, limit: float):
        self.conn, self.limit = conn, limit
        self.lock = threading.Lock()
        self.deadline: float | None = None
        self.index = -1
        self.main = threading.get_ident()

    def send(self, *message: Any) -> None:
        with self.lock:
            self.conn.send(message)

    def watch(self) -> None:
        while True:
            time.sleep(0.02)
            deadline = self.deadline
            if deadline is not None and time.monotonic() > deadline:
                self.send("timeout", self.index, _where_now(self.main))
                os._exit(0)

    def run(self, run_one: Callable[[int], Any], indices: Sequence[int], output: CappedOutput) -> None:
        threading.Thread(target=self.watch, daemon=True).start()
        for index in indices:
            self.index = index
            self.send("start", index)
            self.deadline = time.monotonic() + self.limit
            try:
                outcome = run_one(index)
            except KeyboardInterrupt:
                self.deadline = None
                self.send("interrupted", index, *output.take())
                return
            self.deadline = None
            self.send("done", index, outcome, *output.take())


def _child_main(conn: Connection, run_one, indices, limit: float) -> None:
    """Entry of the forked child: quiet its file descriptors, capture its prints, run."""
    os.setpgid(0, 0)  # its own group, so killing the group ends what the learner started
    signal.signal(signal.SIGINT, signal.default_int_handler)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    output = CappedOutput()
    sys.stdout = sys.stderr = output
    warnings.simplefilter("ignore")  # the checker's odd inputs trip the package's own warnings
    torch.set_num_threads(1)
    _Child(conn, limit).run(run_one, indices, output)


def _kill(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            target()
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


class Interrupted(Exception):
    """The learner's code (or the user) interrupted the checks at ``index``."""

    def __init__(self, index: int):
        super().__init__(index)
        self.index = index


def run_in_child(
    n: int,
    run_one: Callable[[int], Any],
    on_timeout: Callable[[int, str], Any],
    on_death: Callable[[int, str], Any],
    limit: float,
    output: CappedOutput,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, outcome)`` for checks ``0..n-1``, each run by ``run_one`` in a child.

    ``on_timeout(index, where)`` and ``on_death(index, how)`` make the outcome of a check that
    ran past ``limit`` or whose child died. Raises :class:`Interrupted` on KeyboardInterrupt.
    """
    start = 0
    while start < n:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read)
            try:
                _child_main(Connection(write, readable=False), run_one, range(start, n), limit)
            finally:
                os._exit(0)
        os.close(write)
        conn = Connection(read, writable=False)
        index, running_since = start, time.monotonic()  # starting the child counts too
        try:
            while index < n:
                wait = running_since + limit + _GRACE_S - time.monotonic()
                if not conn.poll(max(wait, 0)):
                    yield index, on_timeout(index, "")
                    index += 1
                    break
                try:
                    message = conn.recv()
                except EOFError:
                    _, status = os.waitpid(pid, 0)
                    yield index, on_death(index, _how_it_ended(status))
                    index += 1
                    pid = 0
                    break
                kind, at = message[0], message[1]
                if kind == "start":
                    running_since = time.monotonic()
                elif kind == "done":
                    output.write(message[3])
                    _note_dropped(output, message[4])
                    yield at, message[2]
                    index, running_since = at + 1, time.monotonic()
                elif kind == "timeout":
                    yield at, on_timeout(at, message[2])
                    index = at + 1
                    break
                elif kind == "interrupted":
                    output.write(message[2])
                    _note_dropped(output, message[3])
                    raise Interrupted(at)
        except KeyboardInterrupt:
            raise Interrupted(index) from None
        finally:
            conn.close()
            if pid:
                _kill(pid)
        start = index


def _note_dropped(output: CappedOutput, dropped: int) -> None:
    output.dropped += dropped


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.WEXITSTATUS(status)} (os._exit?)"


@contextlib.contextmanager
def saved_rng() -> Iterator[None]:
    """Leave torch's, numpy's and Python's random states as they were (the in-process path)."""
    python_state = random.getstate()
    numpy = sys.modules.get("numpy")
    numpy_state = numpy.random.get_state() if numpy is not None else None
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            if numpy is not None:
                numpy.random.set_state(numpy_state)
