"""Atomic file writes: the bottom floor every writer in the package uses (checkpoints, model
cards, exports, benchmark records, the dataset's scene cache).

A file is written to a temporary sibling (:func:`temp_name`), fsync'ed, and renamed over the
final name with ``os.replace`` (atomic on POSIX and Windows within one file system): a reader,
or a run resumed after a crash, sees the old file or the complete new one, never half of it.
"""

from __future__ import annotations

import os
import os.path as osp
from collections.abc import Callable


def temp_name(filename: str) -> str:
    """The temporary sibling name under which ``filename`` is written before the rename."""
    return f".{filename}.tmp-{os.getpid()}"


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file or the complete new one."""
    atomic_write_with(path, lambda tmp: _write_bytes(tmp, data))


def atomic_write_with(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """``write(tmp)`` fills a temporary sibling of ``path``, which is then renamed over ``path``.

    For writers that want a file name rather than bytes (``np.savez``, ``torch.save``). The
    temporary file is removed if ``write`` raises.
    """
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, temp_name(osp.basename(path)))
    try:
        write(tmp)
        atomic_replace_from(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def atomic_replace_from(tmp: str, path: str) -> None:
    """fsync an already written ``tmp`` file and rename it over ``path``."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(osp.dirname(osp.abspath(path)))


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _fsync_dir(folder: str) -> None:
    # Makes the rename itself durable across a power cut; not possible on every platform.
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
