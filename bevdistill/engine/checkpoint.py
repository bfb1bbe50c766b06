"""Crash-safe checkpoints and ``weights_only`` loading of mmengine checkpoints on torch >= 2.6.

Atomic writes. mmengine writes a checkpoint by opening the final path and streaming bytes into
it, and its ``CheckpointHook`` deletes the oldest checkpoint *before* writing the new one and
then rewrites the ``last_checkpoint`` pointer in place. A crash (OOM kill, pre-emption, full
disk) in that window leaves a truncated file, an empty pointer, or a pointer to a deleted file:
``--resume`` then fails or silently restarts. Here every file goes to a temporary name in the
same folder, is fsync'ed, and is renamed over the final name with ``os.replace`` (atomic on
POSIX and Windows within one file system); old checkpoints are removed only after the new one
and the pointer are in place.

Safe loading. torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7
calls ``torch.load`` without the argument, so resuming fails on the non-tensor objects in its
checkpoints. Rather than turning ``weights_only`` off (arbitrary code execution from a
checkpoint file), :func:`allow_mmengine_checkpoint_globals` allow-lists exactly what an mmengine
checkpoint holds, found with ``torch.serialization.get_unsafe_globals_in_checkpoint``:

* ``mmengine.logging.history_buffer.HistoryBuffer``: the message hub's logged scalars;
* ``numpy.ndarray``, ``numpy.dtype`` and ``numpy._core.multiarray._reconstruct``: the buffers'
  histories; ``numpy._core.multiarray.scalar``: numpy scalars in the runtime info (``eta``);
  the dtype classes (``numpy.dtypes.Float64DType``, ``Int64DType``; the other numeric kinds
  too), because unpickling a dtype sets state on an instance of its class. The numpy functions
  are also registered under numpy 1.x's ``numpy.core`` path;
* ``builtins.getattr``: a HistoryBuffer pickles its statistics methods as
  ``getattr(HistoryBuffer, 'mean')``. A real ``getattr`` would let a file reach any attribute
  of any allowed object (a path to code execution), so that name is mapped to
  :func:`history_buffer_method`, which only returns HistoryBuffer's own statistics methods.
"""

from __future__ import annotations

import os
import os.path as osp
import pickle
from collections.abc import Callable

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS

_HISTORY_BUFFER_METHODS = ("min", "max", "current", "mean")
# A pickled np.dtype is rebuilt as an instance of its class (numpy.dtypes.Float64DType...),
# which must be allowed too. Our checkpoints hold float64 and int64 (the buffers' histories);
# the other numeric kinds cover values a metric or hook may log.
_NUMERIC_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                   "uint64", "float16", "float32", "float64")


def history_buffer_method(obj: object, name: str) -> Callable:
    """``getattr`` restricted to ``HistoryBuffer``'s statistics methods (see module docstring)."""
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f"checkpoint asks for getattr({obj!r}, {name!r}); bevdistill only allows "
        f"getattr(HistoryBuffer, one of {_HISTORY_BUFFER_METHODS}). Load the file with "
        "weights_only=False only if you trust where it came from."
    )


def _numpy_multiarray() -> object:
    core = getattr(np, "_core", None) or np.core  # numpy 2.x, then 1.x
    return core.multiarray


def checkpoint_safe_globals() -> list:
    """The allow-list entries (objects or ``(object, pickled_name)`` pairs) for mmengine files."""
    multiarray = _numpy_multiarray()
    entries: list = [HistoryBuffer, np.ndarray, np.dtype, (history_buffer_method, "builtins.getattr")]
    entries += [type(np.dtype(t)) for t in _NUMERIC_DTYPES]
    for name in ("_reconstruct", "scalar"):
        fn = getattr(multiarray, name)
        for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
            entries.append((fn, f"{module}.{name}"))
    return entries


def allow_mmengine_checkpoint_globals() -> None:
    """Register :func:`checkpoint_safe_globals` with torch; idempotent, cheap, process-wide."""
    torch.serialization.add_safe_globals(checkpoint_safe_globals())


def atomic_write_bytes(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file or the complete new one."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, f".{osp.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    _fsync_dir(folder)


def atomic_replace_from(tmp: str, path: str) -> None:
    """fsync an already written ``tmp`` file and rename it over ``path``."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(osp.dirname(osp.abspath(path)))


def _fsync_dir(folder: str) -> None:
    # Makes the rename itself durable across a power cut; not possible on every platform.
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(filename: str) -> str:
    """The temporary sibling name under which ``filename`` is written before the rename."""
    return f".{filename}.tmp-{os.getpid()}"


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose save order survives a crash at any point.

    1. write the new checkpoint (atomically, by ``BEVRunner.save_checkpoint``);
    2. atomically point ``last_checkpoint`` at it;
    3. only then delete checkpoints beyond ``max_keep_ckpts``.
    Only local folders are supported (the pointer is a local file in mmengine too).
    """

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        stale: list[int] = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))

        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args,
        )
        if not is_main_process():
            return
        atomic_write_bytes(self.last_ckpt.encode(), osp.join(runner.work_dir, "last_checkpoint"))
        for old_step in stale:
            old = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old_step))
            if self.file_backend.isfile(old):
                self.file_backend.remove(old)


class MissingCheckpointError(ValueError):
    """A checkpoint path given on the command line or in a config does not exist."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not fit the model built from the config."""


def read_state_dict(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights in an mmengine checkpoint or a plain state dict, read ``weights_only``."""
    path = os.fspath(path)
    if not osp.isfile(path):
        raise MissingCheckpointError(f"{what} {path!r} does not exist (check the path)")
    allow_mmengine_checkpoint_globals()
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(
            f"{path} holds no state dict of tensors (top-level keys: {list(loaded)[:8]})"
        )
    return state


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` fits ``model`` key for key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items() if k in own and v.shape != own[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    hint = "Use the config the checkpoint was trained with."
    prefixes = {k.split(".", 1)[0] for k in state}
    if "student" in prefixes and "student" not in {k.split(".", 1)[0] for k in own}:
        hint = (
            "This is a distillation checkpoint: evaluate it with its distill config, or extract "
            "the student with `bevdistill export DISTILL_CONFIG CHECKPOINT OUT` and evaluate OUT "
            "with the student config."
        )
    elif "student" in {k.split(".", 1)[0] for k in own} and "student" not in prefixes:
        hint = ("This is a detector checkpoint, not a distillation one: evaluate it with a "
                "train_teacher/train_student config.")
    details = [
        f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
        f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
        f"{len(shapes)} shape mismatches (checkpoint vs model, e.g. {shapes[:3]})" if shapes else "",
    ]
    raise CheckpointMismatchError(
        f"checkpoint {source} does not fit {type(model).__name__}: "
        + "; ".join(d for d in details if d) + f". {hint}"
    )
