"""Where an error happened: the learner's own line, not torch's or this package's."""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from pathlib import Path

import torch


def _library_dirs() -> tuple[str, ...]:
    """Folders whose frames are not the learner's: torch, this package, the standard library."""
    dirs = {str(Path(torch.__file__).parent), str(Path(__file__).resolve().parents[1])}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(str(Path(path).resolve()))
    return tuple(sorted(dirs))


_LIBRARY_DIRS = _library_dirs()
_PACKAGE = str(Path(__file__).resolve().parents[1])
_EXERCISES = str(Path(__file__).resolve().parent)


def _resolved(filename: str) -> str:
    return str(Path(filename).resolve()) if os.path.isabs(filename) else filename


def is_library(filename: str) -> bool:
    return filename.startswith("<frozen") or _resolved(filename).startswith(_LIBRARY_DIRS)


def shown_filename(filename: str) -> str:
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
        if not is_library(frame.filename):
            return frame
    return frames[-1] if frames else None


def where(exc: BaseException) -> str:
    """``' at <file>, line N: <text>'`` for the learner's own line that raised, or ''."""
    frame = learner_frame(exc)
    if frame is None:
        return ""
    text = f": {frame.line.strip()}" if frame.line else ""
    return f" at {shown_filename(frame.filename)}, line {frame.lineno}{text}"


def raised_in_reference(exc: BaseException) -> bool:
    """True when no learner frame is on the traceback and the package's reference code raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    if any(not is_library(f.filename) for f in frames):
        return False
    paths = [_resolved(f.filename) for f in frames]
    return any(p.startswith(_PACKAGE) and not p.startswith(_EXERCISES) for p in paths)
