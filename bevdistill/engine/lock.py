"""One live run per work dir: a lock file that names its holder.

Two runs writing one ``--work-dir`` replace each other's checkpoints and ``metrics.json``
without a word. :func:`work_dir_lock` creates ``WORK_DIR/.bevdistill.lock`` atomically (the
holder's record is written to a temporary file and hard-linked to the lock name, which fails if
the name exists: no reader ever sees a half-written lock) and removes it when the block ends,
by return, exception, Ctrl-C or SIGTERM (the handler removes the lock and then ends the process
by the same signal, as before). A second run is refused with :class:`WorkDirBusyError` naming
the holder's PID, host and start time. A lock whose process is gone (killed with SIGKILL, a
crashed machine) is *stale*: it is taken over with a warning that says so. A process counts as
the holder only while its PID runs with the start time recorded in the lock (a PID reused by
another program does not hold the lock). A lock from another host cannot be checked and is
never taken over: the message says to delete it once that run is over.

Under torchrun only rank 0 takes the lock: if it is refused it exits, and torchrun stops the
other ranks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bevdistill.errors import UserError

LOCK_NAME = ".bevdistill.lock"


class WorkDirBusyError(UserError, RuntimeError):
    """Another live run holds the work dir's lock."""


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces


def _alive(pid: int, ticks: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    now = _start_ticks(pid)
    return ticks is None or now is None or now == ticks


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(
        started, (int, float)) else "an unknown time"
    return (f"PID {holder.get('pid')} on {holder.get('host')}, started {when}: "
            f"{holder.get('command', '?')}")


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"


def acquire(work_dir: Path, argv: Sequence[str] = (), log=print) -> Path | None:
    """Take ``work_dir``'s lock (see the module docstring); returns its path, or None on a
    rank other than 0."""
    if not _is_rank_zero():
        return None
    path = Path(work_dir) / LOCK_NAME
    me = dict(pid=os.getpid(), host=socket.gethostname(), started=time.time(),
              start_ticks=_start_ticks(os.getpid()),
              command=" ".join(["bevdistill", *argv]))
    tmp = path.with_name(f".{LOCK_NAME}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(me))
    try:
        for _ in range(3):  # a stale lock removed, then another run may win the race
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                pass
            try:
                holder = _read(path)
            except FileNotFoundError:
                continue  # released between our attempt and the read
            if holder is None:
                log(f"bevdistill: taking over the unreadable lock {path} (a run killed while "
                    "writing it)")
            elif holder.get("host") != me["host"]:
                raise WorkDirBusyError(
                    f"--work-dir {work_dir} is locked by a run on another host ({_describe(holder)})."
                    f" Pass another --work-dir, or delete {path} once that run has ended")
            elif _alive(int(holder.get("pid", -1)), holder.get("start_ticks")):
                raise WorkDirBusyError(
                    f"--work-dir {work_dir} is in use by a live run ({_describe(holder)}); two runs "
                    "would overwrite each other's checkpoints and metrics. Wait for it, stop it, or "
                    "pass another --work-dir")
            else:
                log(f"bevdistill: taking over the stale lock of {work_dir}: its run "
                    f"({_describe(holder)}) no longer runs")
            path.unlink(missing_ok=True)
        raise WorkDirBusyError(f"--work-dir {work_dir}: could not take the lock {path} (other "
                               "runs keep taking it); pass another --work-dir")
    finally:
        tmp.unlink(missing_ok=True)


def release(path: Path | None) -> None:
    """Remove the lock if this process still holds it (never another run's)."""
    if path is None:
        return
    try:
        holder = _read(path)
    except FileNotFoundError:
        return
    if holder is not None and holder.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


@contextmanager
def work_dir_lock(work_dir: str | os.PathLike, argv: Sequence[str] = ()) -> Iterator[None]:
    """Hold ``work_dir``'s lock for the block (see the module docstring)."""
    path = acquire(Path(work_dir), argv, log=lambda m: print(m, file=sys.stderr))
    previous = None
    if path is not None and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        def on_term(signum, frame):
            release(path)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)  # end as SIGTERM would have

        try:
            previous = signal.signal(signal.SIGTERM, on_term)
        except ValueError:  # not the main thread: no handler, the lock is released below
            previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        release(path)
