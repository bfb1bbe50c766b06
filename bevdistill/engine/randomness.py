"""Keyed randomness, so that a resumed run repeats an uninterrupted one bit for bit.

Why this exists. mmengine seeds the global RNGs once, at start-up, and never saves them; on
resume, ``IterBasedTrainLoop`` re-reads (and so re-augments) every batch it already trained on,
to move the dataloader forward. Both break exactness: the resumed run's augmentation and
dropout draw different numbers from the ones the uninterrupted run drew. The design here:

* Augmentation randomness is a pure function of *where* a sample sits in the data stream,
  not of how many numbers were drawn before it. ``KeyedInfiniteSampler`` yields
  ``(index, draw)`` pairs, ``draw`` being the sample's position in the global (all-rank)
  stream; ``KeyedDataset`` hands the wrapped dataset the pass number ``draw // len`` through
  its ``set_epoch`` (``SyntheticBEVDataset`` seeds its augmentation generator from
  ``(seed, index, epoch)``, so each pass sees a fresh augmentation), and for datasets that draw
  from the global RNGs instead it seeds torch, numpy and ``random`` from ``(seed, index, draw)``
  around ``__getitem__``, then puts the caller's RNG states back.
  The same sample therefore gets the same augmentation in any process, worker or rank, and
  loading data never disturbs the training process's own RNG stream.
* Skipping consumed batches costs nothing: ``FastForwardIterBasedTrainLoop`` moves the keyed
  sampler to the resume position instead of loading ``iter`` batches (mmengine's default,
  kept as a fallback for other samplers).
* Model randomness (dropout) comes from the global RNGs, whose states ``RNGStateHook`` saves in
  every checkpoint (``checkpoint['rng_state']``). mmengine calls ``after_load_checkpoint``
  inside ``Runner.resume``, *before* the loop skips batches, so the hook only stashes the
  states there and restores them at the first ``before_train_iter``: the moment the
  uninterrupted run's state equals the saved one. The hook also saves and restores the RNG
  states around validation, so validating (which creates dataloader iterators that draw a
  seed) never shifts the training stream.

Limits: under DDP only rank 0 saves checkpoints, so every rank restores rank 0's model-RNG
state. That is exact when ranks share the seed (``diff_rank_seed=False``, the default here)
and consume their RNG alike (dropout on equal-size BEV maps); the data stream stays exact
regardless, because it is keyed.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import DATA_SAMPLERS, DATASETS, HOOKS, LOOPS
from mmengine.runner import IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from torch.utils.data import Dataset, Sampler

RNG_STATE_KEY = "rng_state"


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers; hashing decorrelates neighbouring keys (unlike ``seed + i``)."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states as plain types and tensors (loadable with ``weights_only=True``)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Seed torch, numpy and ``random`` for the block, then restore the caller's states."""
    saved = capture_rng_state()
    try:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        yield
    finally:
        restore_rng_state(saved)


@DATA_SAMPLERS.register_module()
class KeyedInfiniteSampler(Sampler):
    """An endless, rank-sliced shuffled stream that yields ``(index, draw)`` pairs.

    Pass ``p`` of the stream is a permutation seeded by ``(seed, p)``. ``draw`` is the
    position in the global stream before rank slicing, so keys are unique across ranks.
    ``skip(n)`` moves this rank's next draw forward by ``n`` without loading anything.
    """

    def __init__(self, dataset: Sized, shuffle: bool = True, seed: int | None = None) -> None:
        self.rank, self.world_size = get_dist_info()
        self.size = len(dataset)
        if self.size == 0:
            raise ValueError("KeyedInfiniteSampler got an empty dataset; give it num_samples > 0")
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.start = 0  # local draws already consumed (set on resume)

    def skip(self, num_draws: int) -> None:
        """Start the next iteration ``num_draws`` local draws further (used on resume)."""
        if num_draws < 0:
            raise ValueError(f"num_draws must be >= 0, got {num_draws}")
        self.start = int(num_draws)

    def _order(self, pass_idx: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        g = torch.Generator().manual_seed(derive_seed(self.seed, pass_idx))
        return torch.randperm(self.size, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        first = self.rank + self.start * self.world_size  # global position of our next draw
        pass_idx = first // self.size
        order = self._order(pass_idx)
        for draw in itertools.count(first, self.world_size):
            if draw // self.size != pass_idx:
                pass_idx = draw // self.size
                order = self._order(pass_idx)
            yield order[draw % self.size], draw

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: the stream is endless and its passes are keyed by position."""


@DATASETS.register_module()
class KeyedDataset(Dataset):
    """Wraps a dataset so that item ``(index, draw)`` is drawn under RNGs seeded by the key.

    ``dataset`` is a dataset or a config dict. A plain integer index (validation, direct use)
    is keyed as ``(index, -1)``. ``metainfo`` and ``len`` are the wrapped dataset's.
    """

    def __init__(self, dataset: Dataset | dict, seed: int = 0) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self.seed = int(seed)

    @property
    def metainfo(self) -> dict:
        return dict(getattr(self.dataset, "metainfo", {}))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if isinstance(key, tuple):
            index, draw = key
        else:
            index, draw = key, -1
        if hasattr(self.dataset, "set_epoch"):
            # Datasets that key their own augmentation on an epoch get the stream's pass.
            self.dataset.set_epoch(max(draw, 0) // len(self.dataset))
        with isolated_rng(derive_seed(self.seed, index, draw)):
            return self.dataset[index]


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Saves the global RNG states in checkpoints and restores them exactly where they were saved.

    Priority ABOVE_NORMAL so the restore at ``before_train_iter`` runs before any hook that
    might draw random numbers.
    """

    priority = "ABOVE_NORMAL"

    def __init__(self) -> None:
        self._pending: tuple[dict | None, int] | None = None
        self._before_val: dict | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[RNG_STATE_KEY] = capture_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Runs inside Runner.resume, before the train loop skips consumed batches; restoring
        # now would let anything drawn during that skip shift the stream, so only stash it.
        self._pending = (checkpoint.get(RNG_STATE_KEY), checkpoint.get("meta", {}).get("iter", -1))

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is None:
            return
        state, saved_iter = self._pending
        self._pending = None
        if runner.iter != saved_iter:
            return  # weights loaded to start a new run (load_from), not a resume
        if state is None:
            print_log(
                "the resumed checkpoint has no 'rng_state' (not written by bevdistill's "
                "RNGStateHook): the resumed run will not repeat the interrupted one exactly",
                logger="current",
                level=logging.WARNING,
            )
            return
        restore_rng_state(state)

    def before_val(self, runner) -> None:
        self._before_val = capture_rng_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            restore_rng_state(self._before_val)
            self._before_val = None


@LOOPS.register_module()
class FastForwardIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` that resumes by moving a keyed sampler, not by loading batches.

    mmengine's loop calls ``next(dataloader)`` ``iter`` times after a resume, which generates
    and augments every skipped sample again (minutes for a long run on synthetic data). When the
    sampler has ``skip()`` (``KeyedInfiniteSampler``) this loop tells it where to start and
    rebuilds the iterator; otherwise it falls back to mmengine's behaviour.
    """

    def run(self) -> torch.nn.Module:
        # Same sequence as IterBasedTrainLoop.run; only the skip of consumed batches differs.
        self.runner.call_hook("before_train")
        self.runner.call_hook("before_train_epoch")
        if self._iter > 0:
            self._advance_data(self._iter)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            self.run_iter(next(self.dataloader_iterator))
            self._decide_current_val_interval()
            if (
                self.runner.val_loop is not None
                and self._iter >= self.val_begin
                and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)
            ):
                self.runner.val_loop.run()
        self.runner.call_hook("after_train_epoch")
        self.runner.call_hook("after_train")
        return self.runner.model

    def _advance_data(self, num_batches: int) -> None:
        sampler = getattr(self.dataloader, "sampler", None)
        batch_size = self.dataloader.batch_size
        if hasattr(sampler, "skip") and batch_size:
            sampler.skip(num_batches * batch_size)
            self.dataloader_iterator = _InfiniteDataloaderIterator(self.dataloader)
            print_log(
                f"resume: moved the keyed sampler past {num_batches} trained batches "
                "(no data reloaded)",
                logger="current",
            )
            return
        print_log(
            f"resume: re-reading {num_batches} batches to skip them (sampler "
            f"{type(sampler).__name__} cannot skip; use KeyedInfiniteSampler)",
            logger="current",
            level=logging.WARNING,
        )
        for _ in range(num_batches):
            next(self.dataloader_iterator)


__all__ = [
    "FastForwardIterBasedTrainLoop",
    "KeyedDataset",
    "KeyedInfiniteSampler",
    "RNGStateHook",
    "capture_rng_state",
    "derive_seed",
    "isolated_rng",
    "restore_rng_state",
]
