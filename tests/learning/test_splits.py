"""Spatially blocked split: whole blocks per subset, 80/20 and 90/10 shares, seeded, optional buffer."""

from __future__ import annotations

import numpy as np
import pytest

from proda_engine.learning import Split, block_ids, min_distance, spatial_block_split
from proda_engine.learning.splits import (
    EARTH_RADIUS_KM,
    great_circle_km,
    min_distance_km,
    nearest_km,
    spatial_kfold,
)


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


# --------------------------------------------------------------------------------------------------
# Spatially blocked k-fold cross-validation
# --------------------------------------------------------------------------------------------------
def _brute_nearest_km(lat, lon, a, b):
    d = great_circle_km(lat[a][:, None], lon[a][:, None], lat[b][None, :], lon[b][None, :])
    return d.min(axis=1)


def test_great_circle_distance_on_known_arcs():
    # A quarter meridian is pi/2 R; one degree of the equator is 2 pi R / 360; across the date line
    # 179.9 E and 179.9 W are 0.2 degrees apart, not 359.8.
    assert great_circle_km(0.0, 0.0, 90.0, 0.0) == pytest.approx(np.pi / 2 * EARTH_RADIUS_KM, rel=1e-12)
    assert great_circle_km(0.0, 0.0, 0.0, 1.0) == pytest.approx(2 * np.pi * EARTH_RADIUS_KM / 360, rel=1e-12)
    assert great_circle_km(0.0, 179.9, 0.0, -179.9) == pytest.approx(0.2 * 2 * np.pi * EARTH_RADIUS_KM / 360)
    # At 60 degrees latitude a degree of longitude is about half a degree of the equator.
    assert great_circle_km(60.0, 0.0, 60.0, 1.0) == pytest.approx(0.5 * 111.195, rel=1e-3)
    assert great_circle_km(10.0, 20.0, 10.0, 20.0) == 0.0


def test_nearest_km_matches_brute_force(sites):
    lat, lon = sites
    a, b = np.arange(0, 3000, 7), np.arange(3, 3000, 11)
    np.testing.assert_allclose(nearest_km(lat, lon, a, b), _brute_nearest_km(lat, lon, a, b), rtol=1e-12)
    assert min_distance_km(lat, lon, a, b[:0]) == np.inf


def test_kfold_test_sets_partition_the_sites_and_each_fold_is_a_partition(sites):
    lat, lon = sites
    folds = spatial_kfold(lat, lon, n_folds=5, block_size=5.0, val_fraction=0.1, seed=0)
    assert [f.k for f in folds] == list(range(5))
    tests = np.concatenate([f.test for f in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(lat.size))  # disjoint and covering
    for f in folds:
        every = np.concatenate([f.train, f.val, f.test, f.buffer])
        np.testing.assert_array_equal(np.sort(every), np.arange(lat.size))
        assert f.n_buffer_dropped == 0 and f.val.size > 0


def test_kfold_never_shares_a_block_between_train_val_and_test(sites):
    lat, lon = sites
    block = block_ids(lat, lon, 5.0)
    for f in spatial_kfold(lat, lon, n_folds=4, block_size=5.0, val_fraction=0.15, seed=3):
        b_train, b_val, b_test = set(block[f.train]), set(block[f.val]), set(block[f.test])
        assert not b_train & b_test
        assert not b_val & b_test
        assert not b_train & b_val


def test_kfold_balances_site_counts_as_far_as_blocks_allow(sites):
    lat, lon = sites
    _, per_block = np.unique(block_ids(lat, lon, 5.0), return_counts=True)
    for seed in range(3):
        sizes = np.array([f.test.size for f in spatial_kfold(lat, lon, n_folds=5, block_size=5.0, seed=seed)])
        assert sizes.max() - sizes.min() <= per_block.max()
        assert np.all(np.abs(sizes / lat.size - 0.2) < 0.03)


def test_kfold_validation_share_is_about_val_fraction(sites):
    lat, lon = sites
    for f in spatial_kfold(lat, lon, n_folds=5, block_size=5.0, val_fraction=0.1, seed=1):
        assert abs(f.val.size / (f.val.size + f.train.size) - 0.1) < 0.03
        s = f.to_split()
        np.testing.assert_array_equal(s.test, f.test)
        assert s.info["fold"] == f.k


def test_kfold_buffer_keeps_train_and_val_buffer_km_away_and_drops_exactly_the_near_sites(sites):
    lat, lon = sites
    buffer_km = 300.0
    plain = spatial_kfold(lat, lon, n_folds=5, block_size=5.0, val_fraction=0.1, seed=2)
    buffered = spatial_kfold(lat, lon, n_folds=5, block_size=5.0, val_fraction=0.1, seed=2, buffer_km=buffer_km)
    for p, f in zip(plain, buffered):
        # Without a buffer neighbouring blocks put training sites close to test sites ...
        assert min_distance_km(lat, lon, p.train, p.test) < buffer_km
        # ... with it, no training or validation site is within buffer_km (brute-force haversine).
        assert _brute_nearest_km(lat, lon, f.train, f.test).min() >= buffer_km
        assert _brute_nearest_km(lat, lon, f.val, f.test).min() >= buffer_km
        np.testing.assert_array_equal(f.test, p.test)  # the buffer never changes the test set
        # Exactly the non-test sites nearer than buffer_km were dropped, and counted.
        cand = np.concatenate([p.train, p.val])
        near = cand[_brute_nearest_km(lat, lon, cand, p.test) < buffer_km]
        np.testing.assert_array_equal(f.buffer, np.sort(near))
        assert f.n_buffer_dropped == near.size > 0
        assert f.counts()["buffer"] == f.n_buffer_dropped


def test_kfold_buffer_works_across_the_date_line():
    # Two clusters at the same latitudes, 179.9 E and 179.9 W: each site has a partner 0.2 degrees
    # (22 km) away across 180 degrees, in another 1-degree block. A third cluster is far away.
    rng = np.random.default_rng(0)
    lat_pairs = rng.uniform(0.1, 0.9, 20)
    lat = np.concatenate([lat_pairs, lat_pairs, rng.uniform(40.1, 40.9, 20)])
    lon = np.concatenate([np.full(20, 179.9), np.full(20, -179.9), rng.uniform(10.1, 10.9, 20)])
    folds = spatial_kfold(lat, lon, n_folds=3, block_size=1.0, buffer_km=50.0, seed=0)
    east, west, far = (set(range(i, i + 20)) for i in (0, 20, 40))
    for f in folds:
        assert min_distance_km(lat, lon, f.train, f.test) >= 50.0
        test = set(f.test.tolist())
        assert test in (east, west, far)  # three blocks of 20 sites, one per fold
        if test == east:
            assert set(f.buffer.tolist()) == west and set(f.train.tolist()) == far
        if test == far:
            assert f.n_buffer_dropped == 0


def test_kfold_deterministic_for_a_seed_and_different_across_seeds(sites):
    lat, lon = sites
    a = spatial_kfold(lat, lon, seed=7, val_fraction=0.1, buffer_km=100.0)
    b = spatial_kfold(lat, lon, seed=7, val_fraction=0.1, buffer_km=100.0)
    c = spatial_kfold(lat, lon, seed=8, val_fraction=0.1, buffer_km=100.0)
    for fa, fb in zip(a, b):
        for k in ("train", "val", "test", "buffer"):
            np.testing.assert_array_equal(getattr(fa, k), getattr(fb, k))
    assert any(not np.array_equal(fa.test, fc.test) for fa, fc in zip(a, c))


def test_kfold_errors_are_explicit():
    lat, lon = np.array([1.0, 1.5, 20.0]), np.array([1.0, 1.2, 40.0])
    with pytest.raises(ValueError, match="too few"):
        spatial_kfold(lat, lon, n_folds=3, block_size=5.0)
    with pytest.raises(ValueError, match="n_folds"):
        spatial_kfold(lat, lon, n_folds=1)
    # A buffer wider than the globe leaves nothing to train on.
    with pytest.raises(ValueError, match="no training site"):
        spatial_kfold(lat, lon, n_folds=2, block_size=5.0, buffer_km=25_000.0)
