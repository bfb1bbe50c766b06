"""Keyed randomness: the sampler stream, the keyed dataset, RNG state in checkpoints, and an exact
in-process resume of a model WITH dropout on augmented data."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import MODELS
from torch import nn

from bevdistill.data import SyntheticBEVDataset
from bevdistill.engine import randomness
from bevdistill.engine.randomness import (
    KeyedDataset,
    KeyedInfiniteSampler,
    RNGStateHook,
    capture_rng_state,
    restore_rng_state,
)
from bevdistill.engine.runner import load_experiment, make_runner
from bevdistill.models.detector import PillarBEVDetector


def take(it, n):
    return list(itertools.islice(it, n))


# --- sampler ---------------------------------------------------------------------------------


def test_sampler_passes_are_permutations_with_unique_draw_keys():
    sampler = KeyedInfiniteSampler(range(5), seed=3)
    draws = take(iter(sampler), 15)
    assert [d for _, d in draws] == list(range(15))
    passes = [sorted(i for i, _ in draws[k:k + 5]) for k in (0, 5, 10)]
    assert passes == [list(range(5))] * 3
    orders = [[i for i, _ in draws[k:k + 5]] for k in (0, 5, 10)]
    assert len({tuple(o) for o in orders}) > 1  # reshuffled per pass


def test_sampler_skip_equals_consuming():
    full = take(iter(KeyedInfiniteSampler(range(7), seed=1)), 30)
    skipped = KeyedInfiniteSampler(range(7), seed=1)
    skipped.skip(12)
    assert take(iter(skipped), 18) == full[12:]


def test_sampler_ranks_split_one_global_stream(monkeypatch):
    streams = []
    for rank in (0, 1):
        monkeypatch.setattr(randomness, "get_dist_info", lambda r=rank: (r, 2))
        streams.append(take(iter(KeyedInfiniteSampler(range(6), seed=0)), 6))
    monkeypatch.setattr(randomness, "get_dist_info", lambda: (0, 1))
    single = take(iter(KeyedInfiniteSampler(range(6), seed=0)), 12)
    assert streams[0] == single[0::2] and streams[1] == single[1::2]


def test_sampler_rejects_empty_dataset_and_negative_skip():
    with pytest.raises(ValueError, match="empty dataset"):
        KeyedInfiniteSampler([], seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        KeyedInfiniteSampler(range(3), seed=0).skip(-1)


# --- keyed dataset -----------------------------------------------------------------------------


class GlobalRNGDataset(torch.utils.data.Dataset):
    """Augments with the global torch RNG, as many third-party datasets do."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return index + torch.rand(())


def test_keyed_dataset_is_a_function_of_the_key_and_leaves_global_rng_alone():
    ds = KeyedDataset(GlobalRNGDataset(), seed=5)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a, b = ds[(2, 10)], ds[(2, 10)]
    assert torch.equal(torch.get_rng_state(), before)
    assert float(a) == float(b)
    assert float(ds[(2, 14)]) != float(a)  # same index, another draw: another augmentation


def test_keyed_dataset_gives_synthetic_dataset_a_fresh_augmentation_per_pass():
    inner = SyntheticBEVDataset(split="train", num_samples=2, seed=0, augment=True,
                                point_cloud_range=[-16, -16, -5, 16, 16, 3])
    ds = KeyedDataset(inner, seed=0)
    first = ds[(1, 1)]["inputs"]["points"]
    again = ds[(1, 1)]["inputs"]["points"]
    next_pass = ds[(1, 3)]["inputs"]["points"]  # draw 3 // len 2 = pass 1
    assert torch.equal(first, again)
    assert not (first.shape == next_pass.shape and torch.equal(first, next_pass))


def test_rng_state_roundtrip_covers_torch_numpy_python():
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    restore_rng_state(state)
    got = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_rng_hook_restores_the_saved_state_only_when_resuming():
    hook, checkpoint = RNGStateHook(), {"meta": {"iter": 4}}
    torch.manual_seed(0)
    hook.before_save_checkpoint(None, checkpoint)
    expected = torch.rand(4)  # what the uninterrupted run draws next

    class FakeRunner:
        iter = 0  # load_from: a new run that only takes the weights

    hook.after_load_checkpoint(FakeRunner, checkpoint)
    torch.manual_seed(1)
    hook.before_train_iter(FakeRunner, 0)
    assert not torch.equal(torch.rand(4), expected)
    FakeRunner.iter = 4  # resume: the loop continues at the checkpoint's iteration
    hook.after_load_checkpoint(FakeRunner, checkpoint)
    hook.before_train_iter(FakeRunner, 4)
    assert torch.equal(torch.rand(4), expected)


# --- exact resume with dropout and augmentation, in process ----------------------------------


@MODELS.register_module(name="DropoutPillarBEVDetectorForTests", force=True)
class DropoutPillarBEVDetector(PillarBEVDetector):
    """The real detector plus dropout on the BEV features: the model-side randomness to restore."""

    def __init__(self, p: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.feat_dropout = nn.Dropout(p)

    def extract_feat(self, inputs):
        return self.feat_dropout(super().extract_feat(inputs))


class RaiseAtIter(Hook):
    priority = "LOWEST"

    def __init__(self, at_iter: int):
        self.at_iter = at_iter

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at_iter:
            raise RuntimeError("simulated crash")


def _experiment():
    exp = load_experiment("train_student_ci", {
        "train_dataset.num_samples": 3,  # 3 samples, batch 2: passes cross batches
        "val_dataset.num_samples": 1,
        "schedule.checkpoint_interval": 2,
        "schedule.max_iters": 5,
    })
    exp.model.type = "DropoutPillarBEVDetectorForTests"
    return exp


def _weights(runner):
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


def _crash_then_resume(tmp_path, name):
    crashed = make_runner(_experiment(), tmp_path / name)
    crashed.register_hook(RaiseAtIter(3))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train()
    resumed = make_runner(_experiment(), tmp_path / name, resume=True)
    resumed.train()
    return resumed


def test_resume_is_exact_with_dropout_and_augmentation(tmp_path, monkeypatch):
    reference = make_runner(_experiment(), tmp_path / "ref")
    reference.train()
    expected = _weights(reference)

    loads = []
    original = SyntheticBEVDataset.__getitem__
    monkeypatch.setattr(SyntheticBEVDataset, "__getitem__",
                        lambda self, i: loads.append(i) or original(self, i))
    resumed = _crash_then_resume(tmp_path, "run")
    got = _weights(resumed)
    assert resumed.iter == 5
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
    # crashed run: 3 iterations x 2 samples (+ no val); resumed: iterations 3..5 x 2 + 1 val.
    # mmengine's own loop would re-read the 2 skipped batches (4 more loads).
    assert len(loads) == 3 * 2 + 3 * 2 + 1


def test_without_rng_restore_the_resumed_run_differs(tmp_path, monkeypatch):
    """Guards the test above: dropout really draws, so skipping the restore must show."""
    reference = make_runner(_experiment(), tmp_path / "ref")
    reference.train()
    expected = _weights(reference)
    monkeypatch.setattr(RNGStateHook, "before_train_iter", lambda *a, **k: None)
    got = _weights(_crash_then_resume(tmp_path, "run"))
    assert any(not torch.equal(expected[k], got[k]) for k in expected)
