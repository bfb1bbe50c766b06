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

Trustworthy reads. :func:`load_checkpoint_file` says which file is wrong and how (missing, a
folder, empty, truncated, not a checkpoint, objects a weights-only load refuses) instead of
torch's bare ``EOFError``/``OSError``; it never suggests turning ``weights_only`` off.
:func:`newest_complete_checkpoint` lets ``--resume`` fall back past a corrupt newest file or a
stale ``last_checkpoint`` pointer, and :func:`remove_stale_temp_files` removes what a killed
write left behind. :func:`file_sha256` / :func:`verify_sha256` check shipped weights against
the hash in their model card (bit flips load silently otherwise).
"""

from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS

from bevdistill._io import atomic_replace_from, atomic_write_bytes, temp_name  # noqa: F401 (re-exported)
from bevdistill.errors import UserError

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
        f"getattr(HistoryBuffer, one of {_HISTORY_BUFFER_METHODS}), because a real getattr "
        "in a checkpoint can reach code. This is not a checkpoint bevdistill or mmengine wrote; "
        "save the weights alone: torch.save({'state_dict': model.state_dict()}, path)"
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


_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)$")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files (:func:`temp_name`) of writes that were killed half-way.

    Only files of processes that no longer run: a live writer's file is left alone.
    """
    folder = os.fspath(folder)
    if not osp.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        match = _TEMP_NAME.match(name)
        if match and int(match.group(1)) != os.getpid() and not _process_alive(int(match.group(1))):
            os.remove(osp.join(folder, name))
            removed.append(name)
    return removed


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


class CheckpointError(UserError, ValueError):
    """A checkpoint cannot be used: the one type every checkpoint reader and loader raises
    (the subclasses below say which way it is wrong)."""


class MissingCheckpointError(CheckpointError):
    """A checkpoint path given on the command line or in a config does not exist."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file exists but cannot be read: empty, truncated, or not a checkpoint."""


class ChecksumError(CheckpointError):
    """A file's SHA-256 differs from the one recorded for it (a corrupt or replaced file)."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path(weights: str | os.PathLike) -> str:
    """The model card of a shipped weights file: ``NAME.pth`` -> ``NAME_card.json`` beside it."""
    root, _ = osp.splitext(os.fspath(weights))
    return f"{root}_card.json"


def verify_shipped_weights(weights: str | os.PathLike, shipped: bool = False) -> None:
    """Check ``weights`` against the SHA-256 in its model card. Weights with a card beside them
    are shipped weights, and so are all ``shipped`` ones: their card must be there and readable
    and record a checksum (an empty one is an error, not a skipped check)."""
    card = card_path(weights)
    if not osp.isfile(card):
        if shipped:
            raise ModelCardError(f"shipped weights {os.fspath(weights)} have no model card "
                                 f"{osp.basename(card)} beside them, so their SHA-256 cannot be "
                                 "checked; restore the card")
        return
    expected = read_card(card)["weights_sha256"]
    verify_sha256(weights, expected, f"shipped weights (card {osp.basename(card)})")


class ModelCardError(UserError, ValueError):
    """A model card is unreadable, lacks a key, or has no usable ``weights_sha256``."""


CARD_KEYS = ("preset", "weights_sha256")  # what loading a shipped model reads from its card
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def read_card(path: str | Path) -> dict[str, Any]:
    """A model card, with :data:`CARD_KEYS` present and a well-formed ``weights_sha256``;
    every problem raises :class:`ModelCardError` naming the file and the key."""
    path = Path(path)
    try:
        card = json.loads(path.read_text())
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise ModelCardError(
            f"model card {path} is not valid JSON ({exc}): it is truncated or corrupt. Restore it "
            "(reinstall the package or `git checkout` it)") from exc
    if not isinstance(card, dict):
        raise ModelCardError(f"model card {path} holds a {type(card).__name__}, not a JSON object")
    missing = [k for k in CARD_KEYS if not card.get(k)]
    if missing:
        raise ModelCardError(
            f"model card {path} lacks {missing[0]!r} (or it is empty): "
            + ("its weights cannot be checked against their SHA-256, so they are not loaded"
               if missing[0] == "weights_sha256" else "the model cannot be built from it")
            + ". Restore the card, or ship the weights again with "
            "`python -m benchmarks.ship RUN_DIR`, which writes it")
    if not isinstance(card["weights_sha256"], str) or not _SHA256.match(card["weights_sha256"]):
        raise ModelCardError(f"model card {path}: 'weights_sha256' = {card['weights_sha256']!r} "
                             "is not a SHA-256 (64 hex digits); restore the card")
    return card


def verify_sha256(path: str | os.PathLike, expected: str, what: str = "file") -> None:
    """Raise :class:`ChecksumError` unless ``path`` hashes to ``expected``."""
    actual = file_sha256(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"{what} {os.fspath(path)} is corrupt or was replaced: its SHA-256 is {actual}, the "
            f"model card records {expected}. Restore the file (reinstall the package or "
            "`git checkout` it), or ship new weights with `python -m benchmarks.ship RUN_DIR`, "
            "which records their hash"
        )


def _folder_hint(path: str) -> str:
    pointer = osp.join(path, "last_checkpoint")
    if osp.isfile(pointer):
        with open(pointer) as f:
            return f" (its last_checkpoint names {f.read().strip()})"
    found = sorted(n for n in os.listdir(path) if n.endswith(".pth"))
    return f" (it holds {found[:5]})" if found else " (it holds no .pth file)"


def _unreadable(path: str, what: str, exc: BaseException) -> CorruptCheckpointError:
    """Say what is wrong with a checkpoint torch could not load, from the file's own bytes."""
    size = osp.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
    fix = (" Use another checkpoint (e.g. an older iter_*.pth of the same run) or write this "
           "one again.")
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return CorruptCheckpointError(
                f"{what} {path} is truncated ({size} bytes; its zip index at the end is "
                f"missing), as after an interrupted write or copy.{fix}"
            )
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
            return CorruptCheckpointError(
                f"{what} {path} holds Python objects besides tensors, which a weights-only load "
                f"refuses because unpickling them can run code ({first.strip()}). Save the weights "
                "alone: torch.save({'state_dict': model.state_dict()}, path)"
            )
        return CorruptCheckpointError(f"{what} {path} is corrupt ({size} bytes): {exc}.{fix}")
    if head[:1] == b"\x80":  # a pickle: torch's legacy format
        return CorruptCheckpointError(
            f"{what} {path} is truncated or corrupt ({size} bytes, legacy torch format): {exc}.{fix}"
        )
    return CorruptCheckpointError(
        f"{what} {path} is not a PyTorch checkpoint: it starts with {head!r} (a text file, an "
        f"HTML error page or another format?).{fix}"
    )


def load_checkpoint_file(
    path: str | os.PathLike, what: str = "checkpoint", *, weights_only: bool = True
) -> Any:
    """``torch.load(path, weights_only=True)`` (mmengine's objects allowed) with clear errors.

    Every error names ``what`` and the path and says what is wrong: missing, a folder, empty,
    truncated, not a checkpoint, or holding objects a weights-only load refuses.
    ``weights_only=False`` is only for callers that were told explicitly to trust the file.
    """
    path = os.fspath(path)
    if osp.isdir(path):
        raise MissingCheckpointError(
            f"{what} {path!r} is a folder, not a checkpoint file{_folder_hint(path)}; pass the "
            ".pth file itself"
        )
    if not osp.isfile(path):
        raise MissingCheckpointError(f"{what} {path!r} does not exist (check the path)")
    if osp.getsize(path) == 0:
        raise CorruptCheckpointError(
            f"{what} {path} is empty (0 bytes), as after a write that was killed or a failed "
            "copy. Use another checkpoint (e.g. an older iter_*.pth of the same run) or write "
            "this one again."
        )
    allow_mmengine_checkpoint_globals()
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile,
            OSError, KeyError, AttributeError, ImportError, IndexError, TypeError) as exc:
        # arbitrary bytes fail in torch's legacy unpickler with any of these (a text file: KeyError)
        raise _unreadable(path, what, exc) from exc


_CHECKPOINT_NAME = re.compile(r"^iter_(\d+)\.pth$")


def newest_complete_checkpoint(work_dir: str | os.PathLike) -> tuple[str | None, list[str]]:
    """The newest checkpoint of a run that loads completely, and why newer ones were skipped.

    Candidates are ``last_checkpoint``'s target and every ``iter_N.pth`` in ``work_dir``, newest
    first: the pointer may be stale (a kill between writing ``iter_N.pth`` and updating it) and
    the newest file may be corrupt (a disk error, a copy that was cut short).
    """
    work_dir = os.fspath(work_dir)
    candidates: dict[str, int] = {}
    for name in os.listdir(work_dir) if osp.isdir(work_dir) else []:
        match = _CHECKPOINT_NAME.match(name)
        if match:
            candidates[osp.join(work_dir, name)] = int(match.group(1))
    pointer = osp.join(work_dir, "last_checkpoint")
    if osp.isfile(pointer):
        with open(pointer) as f:
            target = f.read().strip()
        if target and osp.abspath(target) not in {osp.abspath(c) for c in candidates}:
            match = _CHECKPOINT_NAME.match(osp.basename(target))
            candidates[target] = int(match.group(1)) if match else -1
    skipped = []
    for path in sorted(candidates, key=lambda c: candidates[c], reverse=True):
        try:
            load_checkpoint_file(path, "checkpoint")
        except (MissingCheckpointError, CorruptCheckpointError) as exc:
            skipped.append(str(exc))
            continue
        return path, skipped
    return None, skipped


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's keys or shapes do not fit the model built from the config."""


def read_state_dict(
    checkpoint: str | os.PathLike | Mapping, what: str = "checkpoint", *, trusted: bool = False
) -> dict[str, torch.Tensor]:
    """The model weights in an mmengine checkpoint or a plain state dict (a path or a loaded dict).

    Files are read ``weights_only`` (mmengine's own objects allowed) unless ``trusted``: full
    unpickling runs code from the file. Every way a checkpoint can be unusable raises a
    :class:`CheckpointError` naming the source.
    """
    if isinstance(checkpoint, Mapping):
        loaded, source = checkpoint, "<dict>"
    elif isinstance(checkpoint, (str, os.PathLike)):
        source = os.fspath(checkpoint)
        loaded = load_checkpoint_file(source, what, weights_only=not trusted)
    else:
        raise TypeError(f"{what} must be a path or a dict, got {type(checkpoint).__name__}")
    state = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise CheckpointMismatchError(
            f"{what} {source} contains no state dict (it holds {type(loaded).__name__}); pass a "
            "checkpoint written by a bevdistill run or torch.save({'state_dict': "
            "model.state_dict()}, path)"
        )
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointMismatchError(
            f"{what} {source}: expected a state dict of tensors (or a dict with a 'state_dict' "
            f"entry), but {not_tensors[:5]} are not tensors; top-level keys: {list(loaded)[:10]}"
        )
    check_finite_weights(state, f"{what} {source}")
    return dict(state)


class NonFiniteWeightsError(CheckpointError):
    """A checkpoint holds NaN or inf weights: scores and exports from it would be garbage."""


def check_finite_weights(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`NonFiniteWeightsError` naming the first tensor that holds a NaN or inf.

    Every reader of weights calls this (through :func:`read_state_dict`): a NaN BatchNorm
    statistic otherwise evaluates to mAP 0 and exits 0, and exports or teaches garbage.
    """
    bad = [k for k, v in state.items()
           if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())]
    if bad:
        first = state[bad[0]]
        count = int((~torch.isfinite(first)).sum())
        raise NonFiniteWeightsError(
            f"{source} holds non-finite weights: {bad[0]!r} has {count} NaN/inf of "
            f"{first.numel()} values ({len(bad)} of {len(state)} tensors are affected). It is "
            "from a diverged run or a corrupt file: use an earlier checkpoint of the run "
            "(iter_*.pth) or train again with a lower schedule.lr"
        )
