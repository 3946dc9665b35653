"""Batch DA: one parameter set for all profiles, on the site-level MCMC code path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from proda_engine.inference.batch_da import BATCH_DA_FILE, JointCost, run_batch_da
from proda_engine.inference.config import AssimilateConfig
from proda_engine.inference.pipeline import assimilate
from proda_engine.inference.sites import load_sites
from proda_engine.parameters import N_PARAMS, PARAMETER_NAMES
from tests.inference.test_pipeline import base_config, twin_world

BDA_MCMC = {"n_test": 60, "n_formal": 200, "mode": "none", "min_test_accepts": 2, "accept_window": [0.0, 1.0]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return twin_world(tmp_path_factory)


def test_joint_cost_is_the_sum_of_site_costs_whatever_the_chunking(world, tmp_path):
    cfg = AssimilateConfig.from_dict(base_config(world, tmp_path / "x", max_sites=7))
    sites = load_sites(cfg)
    theta = np.random.default_rng(0).uniform(0.3, 0.7, (3, N_PARAMS))
    one = JointCost(cfg, sites)                                  # a single chunk
    three = JointCost(cfg.replace(batch_chunk_sites=3), sites)   # chunks of 3, 3, 1 sites
    c1, p1 = one.site_costs(theta)
    c3, _ = three.site_costs(theta)
    assert c1.shape == (3, 7) and p1.shape[:2] == (3, 7)
    np.testing.assert_allclose(c1, c3, rtol=1e-12)
    np.testing.assert_allclose(one(theta, np.zeros(3, dtype=int)), c1.sum(axis=1), rtol=1e-12)


def test_batch_da_returns_one_theta_and_lowers_the_total_cost(world, tmp_path):
    cfg = base_config(world, tmp_path / "bda", mode="batch", mcmc=BDA_MCMC, max_sites=16, batch_chunk_sites=8,
                      batch_draws=5, seed=2)
    res = assimilate(cfg)  # mode: batch dispatches to run_batch_da
    ds = xr.load_dataset(res.folder / BATCH_DA_FILE)
    assert ds["theta"].dims == ("parameter",) and ds.sizes["parameter"] == N_PARAMS
    assert list(ds["parameter"].values) == list(PARAMETER_NAMES)
    theta = ds["theta"].values
    assert np.isfinite(theta).all() and ((theta > 0) & (theta < 1)).all()
    assert ds.sizes["site"] == 16 and "efficiency_draws" in ds
    rep = json.loads((res.folder / "report.json").read_text())
    assert rep["total_cost_mean"] < rep["total_cost_theta0"]
    np.testing.assert_allclose(rep["total_cost_mean"], float(ds["cost_mean"].sum()), rtol=1e-12)
    assert rep["n_sites"] + sum(sum(v.values()) for v in rep["skipped_profiles"].values()) == rep["n_profiles_read"]
    assert (res.folder / "config.yaml").is_file() and (res.folder / "provenance.json").is_file()
    np.testing.assert_array_equal(res.theta, theta)


def test_batch_da_is_deterministic_for_a_seed(world, tmp_path):
    kw = {"mcmc": BDA_MCMC | {"n_formal": 60, "n_test": 30}, "max_sites": 5, "seed": 4}
    a = run_batch_da(base_config(world, tmp_path / "a", **kw))
    b = run_batch_da(base_config(world, tmp_path / "b", **kw))
    np.testing.assert_array_equal(a.theta, b.theta)
