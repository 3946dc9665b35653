"""Reference-map comparison: resampling (block mean / nearest) and the comparison table, with a
synthetic fine-grid reference built from the twin truth's products."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from proda_engine.data import read_covariates
from proda_engine.products.gridded import gridded_products
from proda_engine.products.highres import fine_coords
from proda_engine.products.reference import compare_reference, guess_intervals, plot_reference, resample_to_grid


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
