"""Point query (issue 17): the value at a tapped cell equals the map's, its s.d. is the members' spread,
and nearby observed profiles come with the model at their horizons (tiny world, real engine)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from proda_engine import api
from proda_engine.products.layers import MemberEnsemble
from proda_engine.products.pointquery import great_circle_km, point_query


@pytest.fixture(scope="module")
def engine():
    return api.world_engine("tiny")


@pytest.fixture(scope="module")
def members(engine):
    src = next(iter(engine.sources))
    theta = np.asarray(engine.sources[src], float)
    rng = np.random.default_rng(1)
    return MemberEnsemble(engine, [(theta + 0.04 * rng.standard_normal(theta.shape)).clip(0.01, 0.97)
                                   for _ in range(3)])


def test_great_circle_distance():
    assert great_circle_km(0.0, 0.0, np.array([0.0]), np.array([1.0]))[0] == pytest.approx(111.195, rel=1e-3)
    assert great_circle_km(10.0, 20.0, np.array([10.0]), np.array([20.0]))[0] == 0.0


@pytest.mark.parametrize("variable", ["soc_stock", "soc_change", "turnover", "cue"])
def test_value_matches_the_map_and_sd_is_the_member_spread(engine, members, variable):
    pert = {"A": 0.1}
    res = engine.what_if(pert, depth="0-30cm")
    q = point_query(engine, 47.3, 7.6, variable=variable, depth="0-30cm", perturbation=pert, members=members)
    expect = float(res.maps[variable].sel(lat=q.lat, lon=q.lon).values)
    assert q.value == pytest.approx(expect, rel=1e-5, abs=1e-9)
    assert abs(q.lat - 47.3) <= 0.25 and abs(q.lon - 7.6) <= 0.25 and q.n_members == 3
    assert np.isfinite(q.sd) and q.sd > 0
    if variable == "soc_stock":  # the same spread as the ensemble's map under the same request
        key = engine.resolve(next(iter(engine.sources)), pert, region=None)
        sd_map = members.spread("0-30cm", "x", key)
        assert q.sd == pytest.approx(float(sd_map.sel(lat=q.lat, lon=q.lon)), rel=1e-5)
    assert variable.split("_")[0] in q.text() and "±" in q.text()


def test_without_members_there_is_no_sd_and_profile_is_the_cell(engine):
    q = point_query(engine, 46.0, 8.0, perturbation={"K": 0.1})
    assert np.isnan(q.sd) and q.n_members == 0 and "±" not in q.text()
    prof = api.profile(46.0, 8.0, perturbation={"K": 0.1}, world="tiny")
    np.testing.assert_allclose(q.profile["soc_g_m3"], prof["soc"].values, rtol=1e-6)
    assert (q.profile["soc_g_m3"] < q.profile["soc_baseline_g_m3"]).any()  # faster decay: less SOC
    with pytest.raises(ValueError, match="point query reads"):
        point_query(engine, 46.0, 8.0, variable="param:q10")


def test_nearby_sites_through_the_api():
    sites = api.observed_sites("tiny")
    lat, lon = float(sites["lat"].iloc[0]), float(sites["lon"].iloc[0])
    q = api.point_query(lat, lon, world="tiny", radius_km=150.0, max_sites=5)
    assert isinstance(q.sites, pd.DataFrame) and 1 <= len(q.sites) <= 5
    assert q.sites["distance_km"].is_monotonic_increasing and (q.sites["distance_km"] <= 150.0).all()
    h = q.horizons[q.horizons["profile_id"] == q.sites["profile_id"].iloc[0]]
    assert len(h) == q.sites["n_horizons"].iloc[0]
    np.testing.assert_allclose(q.sites["misfit_kg_m3"].iloc[0],
                               (h["modelled_kg_m3"] - h["observed_kg_m3"]).mean(), rtol=1e-6)
    far = api.point_query(lat, lon, world="tiny", radius_km=0.001)
    assert len(far.sites) <= 1
