"""What-if engine: invariants of totals, signs of mechanism responses, realised bulk changes, caching."""

from pathlib import Path

import numpy as np
import pytest

from proda_engine import api
from proda_engine.products.regions import Region, cell_area, total_pg
from proda_engine.products.whatif import (
    BULK_TOLERANCE,
    MECHANISMS,
    WhatIfEngine,
    perturb_theta,
    perturbation_key,
)

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


@pytest.mark.parametrize(("mech", "sign"), [("A", 1), ("K", -1), ("Xi", -1), ("NPP", 1)])
def test_mechanism_signs(engine, mech, sign):
    """Bulk processes (the default): CUE up -> SOC up; faster baseline decomposition (K̄ up) -> SOC down;
    a stronger environmental modifier (ξ̄ up) -> faster decay -> SOC down; more input -> more SOC."""
    r = engine.what_if({mech: 0.05}, depth="whole")
    assert np.sign(r.totals["change_pg"]) == sign


@pytest.mark.parametrize(("mech", "sign"), [("A", 1), ("K", 1), ("NPP", 1), ("Xi", -1)])
def test_theta_space_signs(engine, mech, sign):
    """The spec's theta-space perturbation (``space="theta"``): K theta up lengthens the turnover times,
    so SOC rises; Q10, w_s and a deeper e-folding speed decay."""
    r = engine.what_if({mech: 0.05}, depth="whole", space="theta")
    assert np.sign(r.totals["change_pg"]) == sign


@pytest.mark.parametrize("region", [None, Region("box", (-180, 180, 0, 90), "north")])
@pytest.mark.parametrize("mech", ["A", "K", "Xi", "V", "I", "NPP"])
def test_bulk_request_is_realised_in_the_region(engine, mech, region):
    """The region's mean relative change of the bulk process equals the request within the tolerance;
    the realised values, multipliers and the converged flag come back with the result."""
    for r in (0.1, -0.1, 0.25):
        res = engine.what_if({mech: r}, depth="whole", region=region)
        assert res.totals["bulk_converged"] == 1, (mech, r, res.realised)
        assert abs(res.realised[mech] - r) <= BULK_TOLERANCE
        assert res.totals[f"realised_{mech}"] == res.realised[mech]
        assert res.multipliers[mech] != 1.0
        assert all(res.multipliers[m] == 1.0 for m in MECHANISMS if m != mech)


def test_joint_bulk_request(engine):
    res = engine.what_if({"K": 0.1, "A": -0.05, "NPP": 0.2}, depth="whole")
    for m, r in (("K", 0.1), ("A", -0.05), ("NPP", 0.2)):
        assert abs(res.realised[m] - r) <= BULK_TOLERANCE
    assert res.totals["bulk_iterations"] <= 8


def test_decay_multipliers_act_on_the_same_rate(engine):
    """k = K x xi: multiplying the baseline rates or the environmental modifier by the same factor gives
    the same steady state (``space="multiplier"``), while the bulk diagnostics tell them apart."""
    k = engine.what_if({"K": 0.1}, depth="whole", space="multiplier")
    x = engine.what_if({"Xi": 0.1}, depth="whole", space="multiplier")
    np.testing.assert_allclose(k.maps.soc_stock.values, x.maps.soc_stock.values, rtol=1e-12, equal_nan=True)
    assert k.realised["K"] > 0.09 and abs(k.realised["Xi"]) < 0.05
    assert x.realised["Xi"] > 0.09 and abs(x.realised["K"]) < 0.05


def test_multiplier_guards():
    import torch

    from proda_engine.products.whatif import BETA_MAX, MAX_DONOR_EFFICIENCY, apply_multipliers

    p = {n: torch.tensor([v], dtype=torch.float64) for n, v in {"beta": 0.95, "fl1s1": 0.45, "fl2s1": 0.5, "fl3s2": 0.5,
                                             "fs1s2": 0.3, "fs1s3": 0.004, "fs2s1": 0.42, "fs2s3": 0.03,
                                             "fs3s1": 0.45, "fcwdl2": 0.76, "taucwd": 3.0, "taul1": 0.05,
                                             "taul2": 0.2, "tau4s1": 0.14, "tau4s2": 5.0, "tau4s3": 222.0}.items()}
    out = apply_multipliers(p, (3.0, 2.0, 1.0, 1.0, 1.5, 1.0))
    assert float(out["fl1s1"]) == pytest.approx(MAX_DONOR_EFFICIENCY)
    assert float(out["fs2s1"] + out["fs2s3"]) == pytest.approx(MAX_DONOR_EFFICIENCY)
    assert float(out["fs2s1"] / out["fs2s3"]) == pytest.approx(0.42 / 0.03)  # rescaled together
    assert float(out["fcwdl2"]) == 0.76  # CWD fragmentation is not microbial
    assert float(out["tau4s3"]) == pytest.approx(111.0) and float(out["taul1"]) == pytest.approx(0.025)
    assert float(out["beta"]) == pytest.approx(BETA_MAX)


def test_unreachable_request_is_reported_not_hidden(engine):
    """CUE +300 % cannot be realised under the donor guard: the engine stops and says so (here every cell
    even leaves the plausible range, so nothing is realised at all)."""
    res = engine.what_if({"A": 3.0}, depth="whole")
    assert res.totals["bulk_converged"] == 0 and not res.realised["A"] >= 3.0 - BULK_TOLERANCE


def test_turnover_and_cue_follow_the_depth_interval(engine):
    t = {d: engine.what_if({}, depth=d).totals for d in ("0-30cm", "0-100cm", "whole")}
    assert t["0-30cm"]["turnover_mean_yr"] < t["0-100cm"]["turnover_mean_yr"] < t["whole"]["turnover_mean_yr"]
    assert len({round(v["cue_mean"], 9) for v in t.values()}) == 3
    base = engine.baseline()
    ok = base.valid
    assert t["whole"]["turnover_median_yr"] == pytest.approx(float(np.median(base.turnover["whole"][ok])))
    a = engine.cell_area[ok]
    assert t["0-30cm"]["cue_area_mean"] == pytest.approx(float((base.cue["0-30cm"][ok] * a).sum() / a.sum()))


def test_coarse_fragments_are_applied_once(engine):
    """Stocks and totals are the fine-earth model stock with each increment x (1 - CF/100)."""
    import xarray as xr

    from proda_engine.products.gridded import coarse_fragment_stocks

    cf = xr.Dataset({v: (("lat", "lon"), np.full(engine.shape, c)) for v, c in
                     (("Coarse_Fragments_v_0cm", 10.0), ("Coarse_Fragments_v_30cm", 20.0),
                      ("Coarse_Fragments_v_100cm", 40.0))}, coords={"lat": engine.lat, "lon": engine.lon})
    eng = WhatIfEngine(None, dict(engine.sources), fields=cf,
                       cells=(engine.forcing, engine.cells, engine.lat, engine.lon))
    res = eng.baseline()
    ref = coarse_fragment_stocks({k: v * 1000 for k, v in res.raw_stocks.items()}, eng.cf)
    for d in ("0-30cm", "0-100cm", "0-200cm", "whole"):
        np.testing.assert_allclose(res.stocks[d], ref[d] / 1000, rtol=1e-12)
        assert eng.what_if({}, depth=d).totals["total_pg"] < engine.what_if({}, depth=d).totals["total_pg"]
    assert res.stocks["0-30cm"] == pytest.approx(0.9 * res.raw_stocks["0-30cm"])


def test_input_scaling_is_exactly_linear(engine):
    r = engine.what_if({"NPP": 0.10}, depth="0-30cm")
    assert r.totals["change_pct"] == pytest.approx(10.0, rel=1e-9)


def test_cache_makes_repeats_free(engine):
    engine.what_if({"A": 0.123})
    solves = engine.stats["solves"]
    engine.what_if({"A": 0.123}, depth="whole")
    engine.what_if({"A": 0.123}, region=Region("box", (-90, 90, -60, 60), "box"), space="theta")
    engine.what_if({"A": 0.123}, region=Region("box", (-80, 90, -60, 60), "box"), space="theta")
    assert engine.stats["solves"] == solves + 1


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
    lean = WhatIfEngine(ds, {"s": th}, lean=True)
    for space in ("theta", "multiplier"):
        for pert in ({}, {"A": 0.1}, {"K": -0.2}, {"A": 0.1, "K": -0.2}, {"Xi": 0.1, "K": -0.2}, {"V": 0.3, "K": 0.1},
                     {"I": 0.05, "NPP": 0.1}):
            got = warm.cell_results("s", pert, space=space)
            refs = [WhatIfEngine(ds, {"s": th}).cell_results("s", pert, space=space)]
            if space == "multiplier":  # the lean path assembles every operator afresh
                refs.append(lean.cell_results("s", pert, space=space))
            for ref in refs:
                for k in got.stocks:
                    np.testing.assert_allclose(got.stocks[k], ref.stocks[k], rtol=1e-10, equal_nan=True)
                    np.testing.assert_allclose(got.cue[k], ref.cue[k], rtol=1e-10, equal_nan=True)
                for k in got.diagnostics:
                    np.testing.assert_allclose(got.diagnostics[k], ref.diagnostics[k], rtol=1e-10, equal_nan=True)
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
            a, b = small.cell_results("s", pert, space="theta"), big.cell_results("s", pert, space="theta")
            np.testing.assert_allclose(a.stocks["whole"], b.stocks["whole"], rtol=1e-12, equal_nan=True)
        assert small._parts_bytes == sum(_nbytes(v) for v in small._parts.values())
        assert small._parts_bytes <= 200_000 or len(small._parts) == 1
    assert len(big._parts) > len(small._parts)


def test_change_compares_the_same_cells(engine):
    """Cells that leave the plausible range under a request are counted and left out of both sides of the
    change (a total over fewer cells is not a loss of carbon)."""
    res = engine.what_if({"I": 0.5}, depth="whole")
    base, pert = engine.baseline(), engine.cell_results(None, {"I": 0.5})
    both = base.valid & pert.valid
    assert res.totals["n_cells_dropped"] == int((base.valid & ~pert.valid).sum()) > 0
    expect = total_pg(engine.to_grid(np.where(both, pert.stocks["whole"] - base.stocks["whole"], np.nan)),
                      engine.area)
    assert res.totals["change_pg"] == pytest.approx(expect, rel=1e-9)
    assert engine.what_if({}, depth="whole").totals["n_cells_dropped"] == 0
