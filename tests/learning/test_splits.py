"""Spatially blocked split: whole blocks per subset, 80/20 and 90/10 shares, seeded, optional buffer."""

from __future__ import annotations

import numpy as np
import pytest

from proda_engine.learning import Split, block_ids, min_distance, spatial_block_split


@pytest.fixture
def sites(rng):
    # Clustered like real profile collections: dense regions plus scattered sites.
    centres = rng.uniform([-50, -170], [65, 170], (40, 2))
    pick = rng.integers(0, 40, 3000)
    lat = np.clip(centres[pick, 0] + rng.normal(0, 4, 3000), -89.9, 89.9)
    lon = (centres[pick, 1] + rng.normal(0, 6, 3000) + 180) % 360 - 180
    return lat, lon


def test_subsets_partition_the_sites_and_never_share_a_block(sites):
    lat, lon = sites
    s = spatial_block_split(lat, lon, block_size=5.0, seed=0)
    allidx = np.concatenate([s.train, s.val, s.test])
    np.testing.assert_array_equal(np.sort(allidx), np.arange(lat.size))
    blocks = {k: set(s.block[getattr(s, k)]) for k in ("train", "val", "test")}
    assert not blocks["train"] & blocks["test"]
    assert not blocks["val"] & blocks["test"]
    assert not blocks["train"] & blocks["val"]


def test_proportions_within_tolerance(sites):
    lat, lon = sites
    for seed in range(5):
        s = spatial_block_split(lat, lon, block_size=5.0, seed=seed)
        n = lat.size
        assert abs(s.test.size / n - 0.2) < 0.03
        assert abs(s.val.size / (n - s.test.size) - 0.1) < 0.03


def test_deterministic_for_a_seed_and_different_across_seeds(sites):
    lat, lon = sites
    a = spatial_block_split(lat, lon, seed=7)
    b = spatial_block_split(lat, lon, seed=7)
    c = spatial_block_split(lat, lon, seed=8)
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert not np.array_equal(a.test, c.test)


def test_buffer_keeps_training_sites_one_block_away_from_test_sites(sites):
    lat, lon = sites
    plain = spatial_block_split(lat, lon, block_size=5.0, seed=2)
    # Without a buffer, neighbouring blocks can put train and test sites close together...
    assert min_distance(lat, lon, plain.test, plain.train) < 5.0
    s = spatial_block_split(lat, lon, block_size=5.0, seed=2, buffer=5.0)
    # ...with buffer = block size, no training or validation site lies within one block size.
    assert min_distance(lat, lon, s.test, s.train) >= 5.0
    assert min_distance(lat, lon, s.test, s.val) >= 5.0
    np.testing.assert_array_equal(s.test, plain.test)
    assert s.buffer.size > 0 and s.counts()["buffer"] == s.buffer.size
    assert s.n_sites == lat.size


def test_block_ids_wrap_longitude_and_cover_poles():
    b = block_ids(np.array([0.0, 0.0, 90.0, -90.0]), np.array([-180.0, 180.0, 0.0, 179.99]), 5.0)
    assert b[0] == b[1]  # -180 and 180 are the same meridian
    assert len(set(b)) == 3
    with pytest.raises(ValueError):
        block_ids(np.array([np.nan]), np.array([0.0]))


def test_too_few_blocks_is_an_error():
    with pytest.raises(ValueError, match="too few"):
        spatial_block_split(np.array([1.0, 1.5, 2.0]), np.array([1.0, 1.2, 1.4]), block_size=5.0)


def test_bootstrap_resamples_training_sites_only(sites):
    lat, lon = sites
    s = spatial_block_split(lat, lon, seed=0)
    b = s.bootstrap(11)
    assert b.train.size == s.train.size
    assert np.isin(b.train, s.train).all()
    assert np.unique(b.train).size < s.train.size  # with replacement
    np.testing.assert_array_equal(b.val, s.val)
    np.testing.assert_array_equal(b.test, s.test)
    np.testing.assert_array_equal(s.bootstrap(11).train, b.train)
    rt = Split.from_dict(b.to_dict())
    np.testing.assert_array_equal(rt.train, b.train)
