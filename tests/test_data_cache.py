"""SyntheticBEVDataset's on-disk scan cache (cache_dir): same items, generated once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bevdistill.data import dataset as dataset_module
from bevdistill.data.dataset import SyntheticBEVDataset

RANGE = (-32.0, -32.0, -5.0, 32.0, 32.0, 3.0)


def _items_equal(a: dict, b: dict) -> None:
    assert torch.equal(a["inputs"]["points"], b["inputs"]["points"])
    for key in ("gt_boxes", "gt_labels", "num_points", "visible"):
        assert torch.equal(a["data_samples"][key], b["data_samples"][key]), key
    for key in ("sample_idx", "source", "seed"):
        assert a["data_samples"][key] == b["data_samples"][key], key
        assert type(a["data_samples"][key]) is type(b["data_samples"][key]), key


def test_cached_items_equal_generated_ones_and_are_not_regenerated(tmp_path, monkeypatch):
    kwargs = dict(split="train", num_samples=2, seed=5, point_cloud_range=RANGE, augment=True)
    plain = SyntheticBEVDataset(**kwargs)
    first = SyntheticBEVDataset(**kwargs, cache_dir=tmp_path)
    for i in range(2):
        _items_equal(first[i], plain[i])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.endswith(".npz") for f in files)

    def no_generation(*args, **kwargs):
        raise AssertionError("the scan should have been read from the cache")

    monkeypatch.setattr(dataset_module, "simulate_sample", no_generation)
    second = SyntheticBEVDataset(**kwargs, cache_dir=tmp_path)
    for i in range(2):
        _items_equal(second[i], plain[i])  # augmentation still applied after loading
    with pytest.raises(AssertionError, match="read from the cache"):
        SyntheticBEVDataset(**kwargs)[0]  # without cache_dir it would generate


def test_cache_key_depends_on_generation_settings(tmp_path):
    a = SyntheticBEVDataset(num_samples=1, seed=5, cache_dir=tmp_path)
    b = SyntheticBEVDataset(num_samples=1, seed=5, cache_dir=tmp_path, min_points=9)
    c = SyntheticBEVDataset(num_samples=1, seed=6, cache_dir=tmp_path)
    paths = {a.cache_path(0), b.cache_path(0), c.cache_path(0)}
    assert len(paths) == 3
    assert SyntheticBEVDataset(num_samples=1, seed=5).cache_path(0) is None
    assert a.cache_path(0) == SyntheticBEVDataset(num_samples=1, seed=5, cache_dir=tmp_path
                                                  ).cache_path(0)


def test_no_temporary_files_left(tmp_path):
    ds = SyntheticBEVDataset(num_samples=1, seed=5, cache_dir=tmp_path)
    ds.raw_sample(0)
    assert [p.name for p in tmp_path.iterdir()] == [ds.cache_path(0).name]
    assert np.load(ds.cache_path(0))["points"].dtype == np.float32
