"""World-level workflows on the tiny world: twin observations, end-to-end training, the API source."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from proda_engine import api, session
from proda_engine.data import read_profiles
from proda_engine.learning.config import TrainConfig
from proda_engine.workflows import build_twin_world, train_world


@pytest.fixture(scope="module")
def tiny():
    return build_twin_world("tiny")


def test_twin_observations_read_back_through_the_wosis_reader(tiny):
    ps = read_profiles(tiny.paths.wosis_dir)
    assert ps.layout == "wosis_2019"
    report = ps.report.to_dict()
    assert len(ps.profiles) == report["n_profiles_kept"] > 40  # ~81 sites sampled on the 100 cells
    # every dropped layer is counted by reason: litter layers, missing orgc / bulk density were injected
    dropped = report["layers_dropped"]
    assert report["n_layers_read"] - report["n_layers_kept"] == sum(dropped.values())
    assert {"litter_layer", "missing_orgc", "missing_bulk_density"} <= set(dropped)


def test_end_to_end_training_writes_a_dashboard_source(tiny):
    cfg = TrainConfig(hidden=(32, 32), max_epochs=6, patience=6, block_size=1.0, batch_size=64, seed=1)
    res = train_world("tiny", method="end-to-end", config=cfg)
    with xr.open_dataset(res.theta_path) as ds:
        th = ds["theta"].values
    land = np.isfinite(th).all(0)
    assert land.sum() == 100 and (th[:, land] >= 1e-4).all() and (th[:, land] <= 1).all()
    api.world_engine.cache_clear()
    assert "proda_e2e" in api.parameter_sources("tiny")
    r = api.what_if({"A": 0.1}, world="tiny", source="proda_e2e")
    assert r.totals["change_pg"] > 0


def test_training_writes_its_validated_config(tiny):
    """train_<source>/config.yaml next to the products is the config the model was trained with. (Placed
    before the ensemble test, which leaves the tiny world's products as they were.)"""
    cfg = TrainConfig(hidden=(8,), max_epochs=1, patience=1, block_size=1.0, batch_size=64, seed=3)
    res = train_world("tiny", method="end-to-end", config=cfg, max_sites=30)
    path = res.theta_path.parent / "train_proda_e2e" / "config.yaml"
    assert res.report["config_path"] == str(path)
    saved = TrainConfig.from_yaml(path)
    assert saved == res.model.config
    assert saved.method == "end-to-end" and saved.hidden == (8,) and saved.seed == 3


def test_ensemble_training_writes_members_and_feeds_the_spread(tiny):
    """n_members > 1: a bootstrap ensemble; the map is the members' mean and the members file gives
    the dashboard its ensemble spread and +/- sd of regional totals."""
    cfg = TrainConfig(hidden=(16, 16), max_epochs=3, patience=3, block_size=1.0, batch_size=64, seed=2, n_members=2)
    res = train_world("tiny", method="end-to-end", config=cfg)
    members = res.theta_path.with_name("theta_proda_e2e_members.nc")
    with xr.open_dataset(members) as ds, xr.open_dataset(res.theta_path) as mean:
        assert ds.sizes["member"] == 2
        assert not np.allclose(ds["theta"].isel(member=0), ds["theta"].isel(member=1), equal_nan=True)
        np.testing.assert_allclose(ds["theta"].mean("member").values, mean["theta"].values, rtol=1e-12)
    api.world_engine.cache_clear()
    assert api.has_ensemble("proda_e2e", "tiny")
    tot = api.ensemble_totals(world="tiny", source="proda_e2e", depth="0-100cm")
    assert tot["n_members"] == 2 and tot["sd_pg"] > 0


def test_observed_sites_and_comparison(tiny):
    sites = api.observed_sites("tiny")
    assert {"profile_id", "lat", "lon", "n_layers", "obs_topsoil_kg_m3"} <= set(sites.columns) and len(sites) > 40
    rows, metrics = api.site_comparison(world="tiny", source="twin_truth")
    assert len(rows) > 100 and np.isfinite(rows["modelled_kg_m3"]).all()
    # the twin's observations are the truth plus ~30 % noise: the truth explains most of the variation
    assert metrics["e"] > 0.5
    mid, _ = api.site_comparison(world="tiny", source="midpoint")
    assert np.abs(mid["modelled_kg_m3"] - mid["observed_kg_m3"]).mean() > np.abs(
        rows["modelled_kg_m3"] - rows["observed_kg_m3"]).mean()


def test_block_size_adapts_to_small_worlds():
    from proda_engine.workflows import _fit_block_size

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(45, 50, 80), rng.uniform(5, 10, 80)
    assert _fit_block_size(TrainConfig(), lat, lon).block_size < 5.0
    glat, glon = rng.uniform(-60, 80, 5000), rng.uniform(-180, 180, 5000)
    assert _fit_block_size(TrainConfig(), glat, glon).block_size == 5.0


def test_observed_sites_are_cached_on_disk_and_refreshed_when_files_change(tiny):
    """Parsing every profile is slow on the globe, so the matched site set is kept in the world's
    cache folder; it is reused while the WoSIS files are unchanged and rebuilt when they change."""
    import os

    session.site_set.cache_clear()
    first = api.observed_sites("tiny")
    cache = tiny.paths.root / "cache" / "sites.pkl"
    assert cache.exists()
    t0 = cache.stat().st_mtime_ns
    session.site_set.cache_clear()
    again = api.observed_sites("tiny")
    assert cache.stat().st_mtime_ns == t0  # reused, not rewritten
    pd.testing.assert_frame_equal(first, again)
    tsv = next(tiny.paths.wosis_dir.glob("*.tsv"))
    os.utime(tsv, ns=(tsv.stat().st_atime_ns, tsv.stat().st_mtime_ns + 1_000_000_000))
    session.site_set.cache_clear()
    api.observed_sites("tiny")
    assert cache.stat().st_mtime_ns != t0  # a changed input file rebuilds the cache
