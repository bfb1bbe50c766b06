"""Atomic checkpoints and the weights_only allow-list for mmengine checkpoints."""

from __future__ import annotations

import collections
import contextlib
import os
import pickle

import pytest
import torch
from mmengine.fileio.backends.local_backend import LocalBackend
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner

from bevdistill.engine import checkpoint as ckpt_mod
from bevdistill.engine.checkpoint import (
    atomic_write_bytes,
    checkpoint_safe_globals,
    history_buffer_method,
)
from bevdistill.engine.runner import build_runner_config, load_experiment, make_runner


def _experiment():
    return load_experiment("train_student_ci", {
        "train_dataset.num_samples": 4,
        "val_dataset.num_samples": 1,
        "schedule.max_iters": 4,
        "schedule.checkpoint_interval": 2,
        "schedule.max_keep_ckpts": 1,
    })


def _fail_second_checkpoint(monkeypatch):
    """The 2nd checkpoint write puts half its bytes on disk, then fails (disk full, kill...)."""
    original = LocalBackend.put
    calls = []

    def put(self, obj, filepath):
        calls.append(str(filepath))
        if len(calls) == 2:
            with open(filepath, "wb") as f:
                f.write(obj[: len(obj) // 2])
            raise OSError("simulated crash in the middle of a checkpoint write")
        return original(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, "put", put)
    return calls


def _loads(path):
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError):
        return False
    return True


def test_crash_during_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    work = tmp_path / "atomic"
    runner = make_runner(_experiment(), work)
    _fail_second_checkpoint(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        runner.train()
    assert sorted(p.name for p in work.glob("*.pth")) == ["iter_2.pth"]
    assert not list(work.glob(".*tmp*")), "temporary file left behind"
    assert (work / "last_checkpoint").read_text() == str(work / "iter_2.pth")
    state = torch.load(work / "iter_2.pth", map_location="cpu", weights_only=True)
    assert state["meta"]["iter"] == 2


def test_plain_mmengine_loses_the_checkpoint_in_the_same_crash(tmp_path, monkeypatch):
    """The failure the atomic writes prevent (so the test above can fail)."""
    work = tmp_path / "plain"
    ckpt_mod.allow_mmengine_checkpoint_globals()
    cfg = build_runner_config(_experiment(), work)
    cfg.default_hooks.checkpoint.type = "CheckpointHook"
    runner = Runner.from_cfg(cfg)
    _fail_second_checkpoint(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        runner.train()
    assert not (work / "iter_2.pth").exists()  # deleted before the new one was written
    assert (work / "iter_4.pth").exists() and not _loads(work / "iter_4.pth")  # truncated


def test_atomic_write_keeps_old_content_when_the_rename_never_happens(tmp_path, monkeypatch):
    target = tmp_path / "last_checkpoint"
    atomic_write_bytes(b"old", str(target))

    def crash(*args):
        raise OSError("killed before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write_bytes(b"new-and-longer", str(target))
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["last_checkpoint"]


# --- weights_only loading --------------------------------------------------------------------


def _allowed_names():
    names = set()
    for entry in checkpoint_safe_globals():
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f"{entry.__module__}.{entry.__qualname__}")
    return names


@pytest.fixture(scope="module")
def runner_checkpoint(tmp_path_factory):
    work = tmp_path_factory.mktemp("run")
    make_runner(_experiment(), work, max_iters=2).train()
    return work / "iter_2.pth"


@contextlib.contextmanager
def _no_safe_globals():
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        yield
    finally:
        torch.serialization.add_safe_globals(saved)


def test_every_global_in_a_runner_checkpoint_is_allow_listed(runner_checkpoint):
    with _no_safe_globals():  # torch lists only globals not yet allowed
        found = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(runner_checkpoint)))
    assert "mmengine.logging.history_buffer.HistoryBuffer" in found  # the problem is real
    assert found <= _allowed_names(), found - _allowed_names()
    ckpt = torch.load(runner_checkpoint, map_location="cpu", weights_only=True)
    assert {"state_dict", "optimizer", "message_hub", "rng_state"} <= set(ckpt)
    assert isinstance(ckpt["message_hub"]["log_scalars"]["train/loss"], HistoryBuffer)


def test_without_the_allow_list_weights_only_load_fails(runner_checkpoint):
    with _no_safe_globals(), pytest.raises(pickle.UnpicklingError):
        torch.load(runner_checkpoint, map_location="cpu", weights_only=True)


class _GetattrPayload:
    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return getattr, (self.obj, self.name)


@pytest.mark.parametrize("obj, name", [
    (HistoryBuffer, "__subclasses__"),
    (HistoryBuffer, "__init__"),
    (collections.OrderedDict, "fromkeys"),
])
def test_getattr_is_only_allowed_for_history_buffer_statistics(tmp_path, obj, name):
    ckpt_mod.allow_mmengine_checkpoint_globals()
    path = tmp_path / "evil.pth"
    torch.save({"x": _GetattrPayload(obj, name)}, path)
    with pytest.raises(pickle.UnpicklingError, match="only allows"):
        torch.load(path, weights_only=True)


def test_history_buffer_method_returns_the_statistics():
    assert history_buffer_method(HistoryBuffer, "mean") is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError):
        history_buffer_method(HistoryBuffer, "update")
