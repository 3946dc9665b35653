"""What-if engine: invariants of totals, signs of mechanism responses, caching."""

from pathlib import Path

import numpy as np
import pytest

from proda_engine import api
from proda_engine.products.regions import Region, cell_area, total_pg
from proda_engine.products.whatif import WhatIfEngine, perturb_theta, perturbation_key

FIX = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "clm5" / "case.clm2.h0.clim.nc"


@pytest.fixture(scope="module")
def engine():
    ds = api.read_forcing(FIX)
    n = int(ds["valid"].sum())
    rng = np.random.default_rng(3)
    return WhatIfEngine(ds, {"twin": rng.uniform(0.3, 0.7, (n, 21)), "midpoint": np.full((n, 21), 0.5)})


def test_cell_area_sums_to_earth_surface():
    lat = -89.75 + 0.5 * np.arange(360)
    lon = -179.75 + 0.5 * np.arange(720)
    assert cell_area(lat, lon).sum() == pytest.approx(4 * np.pi * 6_371_008.8**2, rel=1e-4)


def test_totals_equal_map_times_area(engine):
    r = engine.what_if({}, depth="0-100cm")
    expect = np.nansum(r.maps.soc_stock.values * 1000 * engine.area) / 1e15
    assert r.totals["total_pg"] == pytest.approx(expect, rel=1e-12)
    assert r.totals["change_pg"] == 0.0
    assert total_pg(r.maps.soc_stock.values, engine.area) == pytest.approx(expect)


def test_depth_totals_are_monotone(engine):
    t = [engine.what_if({}, depth=d).totals["total_pg"] for d in ("0-30cm", "0-100cm", "0-200cm", "whole")]
    assert t == sorted(t)


@pytest.mark.parametrize(("mech", "sign"), [("A", 1), ("K", 1), ("NPP", 1), ("Xi", -1)])
def test_mechanism_signs(engine, mech, sign):
    """CUE up -> SOC up; longer turnover times (K theta up) -> SOC up; more input -> more SOC;
    stronger environmental modifiers (Q10, w_s, deeper e-folding) -> faster decay -> less SOC."""
    r = engine.what_if({mech: 0.05}, depth="whole")
    assert np.sign(r.totals["change_pg"]) == sign


def test_input_scaling_is_exactly_linear(engine):
    r = engine.what_if({"NPP": 0.10}, depth="0-30cm")
    assert r.totals["change_pct"] == pytest.approx(10.0, rel=1e-9)


def test_cache_makes_repeats_free(engine):
    engine.what_if({"A": 0.123})
    solves = engine.stats["solves"]
    engine.what_if({"A": 0.123}, region=Region("box", (-90, 90, -60, 60), "box"))
    assert engine.stats["solves"] == solves


def test_perturbation_semantics():
    th = np.full((2, 21), 0.5)
    out = perturb_theta(th, perturbation_key({"A": 0.1, "I": 1.5}))
    assert out[0, 10] == pytest.approx(0.55) and out[0, 0] == 0.5 and out[0, 20] == pytest.approx(0.98)
    with pytest.raises(ValueError, match="unknown mechanism"):
        perturbation_key({"CUE": 0.1})


def test_profile_and_regions(engine):
    prof = engine.profile(52.5, 0.0)
    assert prof.soc.dims == ("depth",) and prof.attrs["lat"] == 52.5
    g = engine.what_if({}, region=Region("box", (-1, 1, 50, 55), "box"))
    assert 0 < g.totals["n_cells"] < engine.what_if({}).totals["n_cells"]


def test_default_clm5_source_perturbs_physical_values():
    ds = api.read_forcing(FIX)
    n = int(ds["valid"].sum())
    eng = WhatIfEngine(ds, {"default_clm5": "default", "mid": np.full((n, 21), 0.5)})
    base = eng.what_if({}, source="default_clm5", depth="whole").totals
    up = eng.what_if({"A": 0.5}, source="default_clm5", depth="whole").totals  # fractions stay valid
    assert base["total_pg"] > 0 and up["change_pg"] > 0
    assert eng.what_if({"NPP": 0.2}, source="default_clm5").totals["change_pct"] == pytest.approx(20.0, rel=1e-9)


def test_physical_perturbation_keeps_parameters_valid():
    import torch

    from proda_engine.products.whatif import perturb_physical

    p = {n: torch.tensor([v]) for n, v in {"beta": 0.95, "fcwdl2": 0.76, "fl1s1": 0.45, "fl2s1": 0.5, "fl3s2": 0.5,
                                             "fs1s2": 0.7, "fs1s3": 0.004, "fs2s1": 0.42, "fs2s3": 0.03,
                                             "fs3s1": 0.45}.items()}
    out = perturb_physical(p, perturbation_key({"I": 0.5, "A": 0.5}))
    assert float(out["beta"]) < 1.0
    assert float(out["fcwdl2"]) <= 1.0 and float(out["fs1s2"] + out["fs1s3"]) <= 1.0 + 1e-12


def test_cached_operator_pieces_give_the_same_answer_as_a_fresh_solve():
    """Moving one slider reuses the other mechanisms' operator pieces; the result must not depend
    on the path taken through the cache."""
    ds = api.read_forcing(FIX)
    n = int(ds["valid"].sum())
    th = np.random.default_rng(5).uniform(0.2, 0.8, (n, 21))
    warm = WhatIfEngine(ds, {"s": th})
    for pert in ({}, {"A": 0.1}, {"K": -0.2}, {"A": 0.1, "K": -0.2}, {"Xi": 0.1, "K": -0.2}, {"V": 0.3, "K": 0.1}):
        got = warm.cell_results("s", pert)
        ref = WhatIfEngine(ds, {"s": th}).cell_results("s", pert)
        for k in got.stocks:
            np.testing.assert_allclose(got.stocks[k], ref.stocks[k], rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(got.cue, ref.cue, rtol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(got.status, ref.status)


def test_partial_parameter_mapping_equals_the_full_table():
    """Only the perturbed groups' columns are re-mapped per request; the values must equal mapping the
    whole perturbed table (including clamps: theta near 1 pushed above it, beta above 0.98)."""
    from proda_engine.physics import params_from_theta

    ds = api.read_forcing(FIX)
    n = int(ds["valid"].sum())
    th = np.random.default_rng(11).uniform(0.0, 1.0, (n, 21))
    th[:, 0] = 0.999
    eng = WhatIfEngine(ds, {"s": th})
    for pert in ({}, {"A": 0.3}, {"I": 0.5, "K": -0.5}, {"Xi": 0.2, "V": -0.1, "NPP": 0.3}, {"A": -0.5, "K": 0.5}):
        key = perturbation_key(pert)
        got = eng._params("s", key)
        ref = params_from_theta(perturb_theta(th, key), clamp=False)
        assert set(got) == set(ref)
        for name in ref:
            np.testing.assert_allclose(got[name].numpy(), ref[name].numpy(), rtol=1e-15, atol=0, err_msg=name)


def test_cached_pieces_stay_within_their_byte_budget():
    """Stepping one mechanism through many values must not grow the piece cache without bound; a
    small budget evicts old pieces and the answers stay the same as with everything cached."""
    from proda_engine.products.whatif import _nbytes

    ds = api.read_forcing(FIX)
    n = int(ds["valid"].sum())
    th = np.random.default_rng(7).uniform(0.2, 0.8, (n, 21))
    small = WhatIfEngine(ds, {"s": th}, parts_budget=200_000)
    big = WhatIfEngine(ds, {"s": th})
    for q in np.linspace(-0.3, 0.3, 13):
        for pert in ({"K": q}, {"Xi": q, "A": 0.1}):
            a, b = small.cell_results("s", pert), big.cell_results("s", pert)
            np.testing.assert_allclose(a.stocks["whole"], b.stocks["whole"], rtol=1e-12, equal_nan=True)
        assert small._parts_bytes == sum(_nbytes(v) for v in small._parts.values())
        assert small._parts_bytes <= 200_000 or len(small._parts) == 1
    assert len(big._parts) > len(small._parts)
