"""Reference-map comparison: resampling (block mean / nearest) and the comparison table, with a
synthetic fine-grid reference built from the twin truth's products."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from proda_engine.data import read_covariates
from proda_engine.plot import plot_reference
from proda_engine.products.gridded import gridded_products
from proda_engine.products.highres import fine_coords
from proda_engine.products.reference import compare_reference, guess_intervals, resample_to_grid


@pytest.fixture(scope="module")
def products(world):
    return gridded_products(world, world.truth)


def _fine(world, maps: dict[str, np.ndarray], factor: int, noise: float = 0.0, seed: int = 0) -> xr.Dataset:
    """A fine-grid reference: each model cell split factor x factor, with optional noise that averages
    to zero inside every block under the cos(lat) weights (so the block mean is the model value)."""
    lat, lon = fine_coords(world.cells.lat, factor), fine_coords(world.cells.lon, factor)
    rng = np.random.default_rng(seed)
    out = {}
    for name, m in maps.items():
        f = np.repeat(np.repeat(m, factor, 0), factor, 1)
        if noise:
            e = rng.normal(0, noise, f.shape)
            w = np.cos(np.deg2rad(lat))[:, None] * np.ones_like(e)
            shape = (m.shape[0], factor, m.shape[1], factor)
            mean = (e * w).reshape(shape).sum((1, 3)) / w.reshape(shape).sum((1, 3))
            e -= np.repeat(np.repeat(mean, factor, 0), factor, 1)
            f = f * (1 + e)
        out[name] = (("lat", "lon"), f, {"units": "kg C m-2"})
    return xr.Dataset(out, coords={"lat": lat, "lon": lon})


def test_block_mean_of_a_finer_reference_recovers_the_model(world, products, tmp_path):
    maps = {"soc_0_30cm": products["soc_stock_0_30cm"].values, "soc_0_100cm": products["soc_stock_0_100cm"].values}
    ref = _fine(world, maps, 5, noise=0.2)
    path = tmp_path / "ref.nc"
    ref.to_netcdf(path)
    cov = read_covariates(path)  # the catalog's reader for reference_map sources
    assert guess_intervals(cov) == {"0-30cm": "soc_0_30cm", "0-100cm": "soc_0_100cm"}
    tab, diff = compare_reference(products, cov, world, label="synthetic")
    t = tab.set_index("interval")
    for k in ("0-30cm", "0-100cm"):
        assert t.loc[k, "r"] == pytest.approx(1.0, abs=1e-9)
        assert t.loc[k, "difference_pg"] == pytest.approx(0.0, abs=1e-9 * t.loc[k, "model_pg"])
        assert np.nanmax(np.abs(diff[f"difference_{k.replace('-', '_')}"].values)) < 1e-9
    assert t.loc["0-30cm", "n_cells"] == world.n_cells
    plot_reference(diff, tab, tmp_path / "diff.png")


def test_block_mean_is_area_weighted_and_skips_nan():
    lat_f = np.array([60.25, 60.75, 61.25, 61.75])
    ref = xr.DataArray(np.array([[1.0, 3.0], [np.nan, 5.0], [2.0, 2.0], [4.0, 4.0]]), dims=("lat", "lon"),
                       coords={"lat": lat_f, "lon": [0.25, 0.75]})
    out = resample_to_grid(ref, np.array([60.5, 61.5]), np.array([0.5, 1.5]))
    w = np.cos(np.deg2rad(lat_f))
    assert out[0, 0] == pytest.approx((w[0] * 4 + w[1] * 5) / (2 * w[0] + w[1]))
    assert out[1, 0] == pytest.approx((2 * w[2] * 2 + 2 * w[3] * 4) / (2 * w[2] + 2 * w[3]))
    assert out[1, 0] < 3.0  # the equatorward (larger) cells, holding 2, weigh more
    assert np.isnan(out[:, 1]).all()  # no reference data in the second column


def test_coarser_reference_uses_nearest(world, products):
    m = products["soc_stock_0_30cm"].values
    coarse = m.reshape(5, 2, 5, 2).mean((1, 3))
    lat, lon = world.cells.lat.reshape(5, 2).mean(1), world.cells.lon.reshape(5, 2).mean(1)
    ref = xr.Dataset({"ocs_0-30cm": (("lat", "lon"), coarse)}, coords={"lat": lat, "lon": lon})
    tab, diff = compare_reference(products, ref)
    expect = np.repeat(np.repeat(coarse, 2, 0), 2, 1)
    np.testing.assert_allclose(diff["reference_0_30cm"].values, expect)
    assert 0.0 < tab.iloc[0].r < 1.0
    # the refined 1-degree reference conserves the stock only approximately (areas differ by latitude)
    assert tab.iloc[0].reference_pg == pytest.approx(tab.iloc[0].model_pg, rel=1e-3)


# --------------------------------------------------------------------------------------------
# the shipped reference map: Sanderman, Hengl & Fiske (2017)


def test_shipped_reference_map_variables_units_ranges():
    from proda_engine.data import load_catalog
    from proda_engine.products.reference import DEFAULT_REFERENCE, SHIPPED_REFERENCES, open_reference, reference_map
    from proda_engine.products.regions import cell_area

    path = SHIPPED_REFERENCES[DEFAULT_REFERENCE][0]
    assert path.exists() and path.stat().st_size < 1e6  # committed: keep it compact
    src = load_catalog().source(DEFAULT_REFERENCE)
    assert src.kind == "reference_map" and "10.1073/pnas.1706103114" in src.attribution and "MIT" in src.licence
    ds = open_reference()
    assert ds.attrs["label"] == "Sanderman et al. 2017"
    assert guess_intervals(ds) == {"0-30cm": "soc_0_30cm", "0-100cm": "soc_0_100cm", "0-200cm": "soc_0_200cm"}
    maps = {k: reference_map(k) for k in ("0-30cm", "0-100cm", "0-200cm")}
    for da in maps.values():
        assert da.attrs["units"] == "kg C m-2" and da.dims == ("lat", "lon") and da.shape == (360, 720)
        assert "pnas" in da.attrs["citation"].lower()
        v = da.values[np.isfinite(da.values)]
        assert 60_000 < v.size < 70_000 and v.min() >= 0 and v.max() < 330
    a, b, c = (maps[k].values for k in ("0-30cm", "0-100cm", "0-200cm"))
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(c)
    assert np.all(b[ok] >= a[ok] - 0.01) and np.all(c[ok] >= b[ok] - 0.01)  # deeper intervals hold more
    area = cell_area(maps["0-30cm"]["lat"].values, maps["0-30cm"]["lon"].values)
    tot = {k: float(np.nansum(m.values * 1000.0 * area) / 1e15) for k, m in maps.items()}
    assert 850 < tot["0-30cm"] < 1100 and 2000 < tot["0-100cm"] < 2600 and 3300 < tot["0-200cm"] < 4100
    # tropical forest soils hold more than deserts
    at = lambda la, lo: float(maps["0-100cm"].sel(lat=la, lon=lo, method="nearest"))  # noqa: E731
    assert at(-3.1, -60.0) > 3 * at(23.0, 12.0)
    with pytest.raises(ValueError, match="no 'whole' map"):
        reference_map("whole")


def test_stock_map_comparison_totals_equal_a_direct_computation(world, products):
    from proda_engine.products.gridded import default_regions
    from proda_engine.products.reference import compare_stock_map, reference_map
    from proda_engine.products.regions import cell_area, region_mask

    ref = reference_map("0-100cm")
    lat, lon = world.cells.lat, world.cells.lon
    stock = products["soc_stock_0_100cm"].values
    regions = default_regions(world)
    res = compare_stock_map(stock, lat, lon, ref, regions=regions, fields=world.fields)
    # same 0.5-degree grid: the resampled reference is the file's values at the world's cells
    direct_ref = ref.sel(lat=xr.DataArray(lat, dims="lat"), lon=xr.DataArray(lon, dims="lon")).values
    np.testing.assert_allclose(res.maps["reference"].values, direct_ref)
    both = np.isfinite(stock) & np.isfinite(direct_ref)
    area = cell_area(lat, lon)
    assert res.totals["model_pg"] == pytest.approx((stock[both] * 1000 * area[both]).sum() / 1e15, rel=1e-12)
    assert res.totals["reference_pg"] == pytest.approx((direct_ref[both] * 1000 * area[both]).sum() / 1e15, rel=1e-12)
    assert res.totals["difference_pg"] == pytest.approx(res.totals["model_pg"] - res.totals["reference_pg"])
    assert res.totals["n_cells"] == int(both.sum()) > 0
    np.testing.assert_allclose(res.maps["difference"].values[both], stock[both] - direct_ref[both])
    # per-region rows: each is the same sum over the region's cells; the Köppen groups partition the land
    tab = res.table.set_index("region")
    for key, reg in regions.items():
        m = region_mask(reg, lat, lon, world.fields) & both
        assert tab.loc[key, "model_pg"] == pytest.approx((stock[m] * 1000 * area[m]).sum() / 1e15, abs=1e-12)
    kop = [k for k in tab.index if k.startswith("koppen:")]
    assert tab.loc[kop, "reference_pg"].sum() == pytest.approx(tab.loc["globe", "reference_pg"], rel=1e-9)
    # a region restricts the maps and totals
    sub = compare_stock_map(stock, lat, lon, ref, region=regions["koppen:C"], fields=world.fields)
    assert sub.totals["model_pg"] == pytest.approx(tab.loc["koppen:C", "model_pg"])
    assert np.isnan(sub.maps["model"].values[~region_mask(regions["koppen:C"], lat, lon, world.fields)]).all()


def test_products_against_the_shipped_reference(world, products, tmp_path):
    from proda_engine.products.reference import compare_reference_regions, open_reference, write_reference_comparison

    ref = open_reference()
    tab, _ = compare_reference(products, ref, world)
    assert list(tab["interval"]) == ["0-30cm", "0-100cm", "0-200cm"]
    assert (tab["reference"] == "Sanderman et al. 2017").all()
    assert (tab["n_cells"] == world.n_cells).all()  # the reference covers every cell of the Alps
    regions = compare_reference_regions(products, ref, world)
    g = regions[regions.region == "globe"].set_index("interval")
    for _, row in tab.iterrows():
        assert g.loc[row.interval, "model_pg"] == pytest.approx(row.model_pg)
        assert g.loc[row.interval, "reference_pg"] == pytest.approx(row.reference_pg)
    assert {"landcover:forest", "koppen:C", "continent:Europe"} <= set(regions["region"])
    files, _ = write_reference_comparison(products, world, tmp_path / "map.nc", plot=False)
    assert {p.name for p in files.values()} == {"map_reference.csv", "map_reference_regions.csv", "map_reference.nc"}
    back = xr.open_dataset(files["maps"])
    assert {"reference_0_30cm", "difference_0_100cm"} <= set(back.data_vars)
    assert "pnas" in back.attrs["citation"].lower()


def test_api_reference_comparison_for_a_source():
    from proda_engine import api

    da = api.reference_map("0-30cm")
    assert da.attrs["label"] == "Sanderman et al. 2017"
    rc = api.reference_comparison("twin_truth", "0-30cm", "koppen:C", world="tiny")
    eng = api.world_engine("tiny")
    stock = api.what_if({}, depth="0-30cm", source="twin_truth", world="tiny").maps["soc_stock"].values
    m = np.isfinite(rc.maps["model"].values)
    np.testing.assert_allclose(rc.maps["model"].values[m], stock[m])
    assert rc.totals["region"].startswith("Köppen C") and rc.totals["n_cells"] == int(m.sum()) > 0
    assert rc.maps["difference"].attrs["units"] == "kg C m-2"
    tab = rc.table.set_index("region")
    assert tab.loc["koppen:C", "model_pg"] == pytest.approx(rc.totals["model_pg"])
    assert eng.lat.size == rc.maps.sizes["lat"]
    full = api.reference_table(world="tiny", sources=["twin_truth", "default_clm5"])
    assert set(full["source"]) == {"twin_truth", "default_clm5"}
    assert set(full["interval"]) == {"0-30cm", "0-100cm", "0-200cm"}
