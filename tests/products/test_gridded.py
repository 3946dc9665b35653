"""Gridded forward run and totals: invariants of the products on the tiny twin world.

Stand-in ensembles are the twin truth plus perturbed copies (labelled ``standin``), not trained output.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import xarray as xr

from proda_engine import api
from proda_engine.grid import DEPTH_INTERVALS
from proda_engine.parameters import N_PARAMS, to_physical
from proda_engine.products.gridded import (
    INTERVALS,
    ParameterSet,
    coarse_fragment_stocks,
    default_regions,
    gridded_products,
    group_summaries,
    regional_totals,
    suffix,
    totals_table,
    write_products,
)
from proda_engine.products.regions import Region, total_pg


@pytest.fixture(scope="module")
def standin_members(world):
    """Twin truth plus two perturbed copies (stand-ins for trained ensemble members)."""
    th = world.cells.theta_from_grid(world.truth)
    rng = np.random.default_rng(7)
    return np.stack([th] + [np.clip(th + rng.normal(0, 0.03, th.shape), 0.01, 0.99) for _ in range(2)])


@pytest.fixture(scope="module")
def products(world, standin_members):
    return gridded_products(world, standin_members, keep_members=True, chunk_size=37)


def test_uncorrected_stocks_match_the_landed_map_product(world):
    """Chunked, cached solves reproduce proda_engine.products.maps (no coarse fragments)."""
    ds = gridded_products(world, world.truth, coarse_fragments=False, chunk_size=33)
    forcing = api.read_forcing(world.paths.forcing)
    ref = api.simulate(forcing, world.truth)
    for k in INTERVALS:
        np.testing.assert_allclose(ds[f"soc_stock_{suffix(k)}"], ref[f"soc_stock_{suffix(k)}"], rtol=1e-10)
    for k in ("cue", "decomposition", "environment", "transport", "allocation", "input"):
        np.testing.assert_allclose(ds[k], ref[k], rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(ds["soc"], ref["soc"] / 1000.0, rtol=1e-6, atol=1e-9)


def test_totals_equal_sum_of_map_times_area_per_member(world, products):
    area = world.area
    for m in range(products.sizes["member"]):
        for d, k in enumerate(INTERVALS):
            stock = products[f"soc_stock_{suffix(k)}_member"].values[m].astype(float)
            expect = total_pg(stock, area)
            # members are stored as float32 maps; totals are accumulated in float64
            assert products["soc_total"].sel(region="globe").values[m, d] == pytest.approx(expect, rel=1e-6)


def test_totals_of_mean_map_equal_mean_of_member_totals(world, products):
    tot = regional_totals(products["soc_stock_whole"].values, world, {"globe": Region()})["globe"]
    assert tot == pytest.approx(float(products["soc_total"].sel(region="globe", depth="whole").mean()), rel=1e-12)
    assert tot == pytest.approx(float(np.nansum(products["soc_stock_whole"].values * 1000 * world.area) / 1e15),
                                rel=1e-12)


def test_stocks_monotone_in_depth(products):
    s = [products[f"soc_stock_{suffix(k)}_member"].values for k in INTERVALS]
    for a, b in itertools.pairwise(s):
        assert np.all(b >= a - 1e-6)
    t = products["soc_total"].values
    assert np.all(np.diff(t, axis=-1) >= 0)


def test_turnover_is_uncorrected_stock_over_input(world):
    ds = gridded_products(world, world.truth, coarse_fragments=False)
    np.testing.assert_allclose(ds["turnover"], ds["soc_stock_whole"] * 1000.0 / ds["input"], rtol=1e-12)
    np.testing.assert_allclose(ds["turnover_0_30cm"], ds["soc_stock_0_30cm"] * 1000.0 / ds["input"], rtol=1e-12)


def test_coarse_fragment_correction_by_increment(world):
    raw = gridded_products(world, world.truth, coarse_fragments=False)
    cor = gridded_products(world, world.truth)
    cf = {d: world.fields[f"Coarse_Fragments_v_{d}cm"].values.astype(float) for d in (0, 30, 100)}
    k = {d: 1 - cf[d] / 100 for d in cf}
    s = {i: raw[f"soc_stock_{suffix(i)}"].values for i in INTERVALS}
    np.testing.assert_allclose(cor["soc_stock_0_30cm"], s["0-30cm"] * k[0], rtol=1e-12)
    np.testing.assert_allclose(cor["soc_stock_0_100cm"] - cor["soc_stock_0_30cm"], (s["0-100cm"] - s["0-30cm"]) * k[30],
                               rtol=1e-10)
    np.testing.assert_allclose(cor["soc_stock_whole"] - cor["soc_stock_0_100cm"], (s["whole"] - s["0-100cm"]) * k[100],
                               rtol=1e-10)
    assert np.all(cor["soc_stock_whole"].values < s["whole"])
    # a cell without the covariate is left uncorrected
    out = coarse_fragment_stocks({i: np.array([1.0, 2.0, 3.0, 4.0][j:j + 1]) for j, i in enumerate(INTERVALS)},
                                 np.full((3, 1), np.nan))
    assert [float(v[0]) for v in out.values()] == [1.0, 2.0, 3.0, 4.0]


def test_ensemble_mean_sd_and_parameter_maps(world, products, standin_members):
    m = products["soc_stock_whole_member"].values.astype(float)
    np.testing.assert_allclose(products["soc_stock_whole"], m.mean(0), rtol=1e-6)
    np.testing.assert_allclose(products["soc_stock_whole_sd"], m.std(0, ddof=1), rtol=1e-4, atol=1e-6)
    th = world.to_grid(standin_members.mean(0).T)
    np.testing.assert_allclose(products["theta"], th, rtol=1e-12)
    np.testing.assert_allclose(np.moveaxis(products["parameter_value"].values, 0, -1),
                               to_physical(np.moveaxis(th, 0, -1), clamp=False), rtol=1e-12)
    assert products["soc"].dtype == np.float32 and products["soc"].attrs["units"] == "kg C m-3"
    assert products.sizes["parameter"] == N_PARAMS


def test_presets_and_homogeneous_theta(world):
    d = gridded_products(world, "default")
    assert "theta" not in d and d.attrs["parameters"] == "default CLM5"
    h = gridded_products(world, np.full(21, 0.5))
    mid = gridded_products(world, "midpoint")
    np.testing.assert_allclose(h["soc_stock_whole"], mid["soc_stock_whole"])
    # a homogeneous DataArray (batch-DA-like) broadcasts too
    da = xr.DataArray(np.full(21, 0.5), dims="parameter")
    np.testing.assert_allclose(gridded_products(world, da)["soc_stock_whole"], mid["soc_stock_whole"])


def test_member_dim_dataarray(world, standin_members):
    grids = np.stack([world.to_grid(m.T) for m in standin_members[:2]])
    da = xr.DataArray(grids, dims=("draw", "parameter", "lat", "lon"),
                      coords={"lat": world.cells.lat, "lon": world.cells.lon})
    ps = ParameterSet(da, world, member_dim="draw")
    assert ps.n_members == 2
    np.testing.assert_allclose(ps.member(1), standin_members[1])


def test_regions_totals_and_group_summaries(world, products):
    regs = default_regions(world)
    assert "globe" in regs and any(k.startswith("koppen:") for k in regs)
    tab = totals_table(products)
    g = tab[(tab.region == "globe") & (tab.quantity == "soc_whole")].iloc[0]
    assert g["mean"] == pytest.approx(float(products["soc_total"].sel(region="globe", depth="whole").mean()))
    assert g["sd"] > 0
    # the Köppen groups partition the cells, so their totals add up to the globe
    kop = [r for r in products["region"].values if str(r).startswith("koppen:")]
    s = products["soc_total"].sel(region=kop, depth="whole").sum("region")
    np.testing.assert_allclose(s, products["soc_total"].sel(region="globe", depth="whole"), rtol=1e-12)
    cin = products["input_total"].sel(region="globe").values
    assert np.all(cin > 0)
    gs = group_summaries(products, world)
    row = gs[(gs.grouping == "koppen") & (gs.variable == "turnover") & (gs.n_cells > 0)].iloc[0]
    assert row.p2_5 <= row.p50 <= row.p97_5
    box = Region("box", (5.0, 7.0, 45.0, 47.0), "box")
    assert regional_totals(products["soc_stock_whole"].values, world, {"b": box})["b"] < \
        regional_totals(products["soc_stock_whole"].values, world, {"g": Region()})["g"]


def test_write_and_cli(world, tmp_path, monkeypatch):
    from proda_engine.cli import main

    p = write_products(gridded_products(world, world.truth), tmp_path / "a.nc")
    with xr.open_dataset(p) as ds:
        assert ds["soc_stock_whole"].attrs["units"] == "kg C m-2"
        assert set(ds["depth"].values) == set(DEPTH_INTERVALS)
    out = tmp_path / "map.nc"
    assert main(["map", "--world", "tiny", "--out", str(out)]) == 0
    with xr.open_dataset(out) as ds:
        assert "proda_version" in ds.attrs and ds.attrs["world"] == "tiny"
    assert (tmp_path / "map_totals.csv").exists()
