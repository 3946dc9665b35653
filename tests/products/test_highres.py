"""High-resolution (Dask-chunked) products: refinement conserves totals, tiling does not change
results, the sub-grid variability is deterministic and mean preserving."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from proda_engine.products.gridded import gridded_products
from proda_engine.products.highres import (
    BANDS,
    SubGrid,
    fine_coords,
    hash_normal,
    highres_products,
    highres_totals,
    run_highres,
    write_highres,
)


@pytest.fixture(scope="module")
def coarse(world):
    return gridded_products(world, world.truth)


def test_fine_coords_split_cells():
    c = np.array([0.25, 0.75])
    np.testing.assert_allclose(fine_coords(c, 5), 0.05 + 0.1 * np.arange(10))


def test_hash_normals_are_standard_and_reproducible():
    iy, ix = np.meshgrid(np.arange(300), np.arange(300), indexing="ij")
    z = hash_normal(iy, ix, 0, 1)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    np.testing.assert_array_equal(z[5:9, 7:11], hash_normal(iy[5:9, 7:11], ix[5:9, 7:11], 0, 1))
    assert np.corrcoef(z.ravel(), hash_normal(iy, ix, 0, 2).ravel())[0, 1] < 0.01


def test_pure_refinement_conserves_totals(world, coarse, tmp_path):
    ds = highres_products(world, world.truth, factor=4, tile=3, subgrid=None)
    assert ds["soc_stock_whole"].chunks is not None  # lazy until written
    assert set(BANDS) <= set(ds.data_vars)
    tot = highres_totals(ds)
    g = coarse["soc_total"].sel(region="globe", member=0)
    for k in ("0-30cm", "0-100cm", "0-200cm", "whole"):
        assert tot[f"soc_{k}"] == pytest.approx(float(g.sel(depth=k)), rel=2e-5)
    assert tot["n_cells"] == world.n_cells * 16
    fine = ds["soc_stock_whole"].values.reshape(10, 4, 10, 4)
    np.testing.assert_allclose(fine.min((1, 3)), fine.max((1, 3)))  # every block uniform
    np.testing.assert_allclose(fine[:, 0, :, 0], coarse["soc_stock_whole"].values, rtol=1e-6)


def test_tiling_does_not_change_the_subgrid_world(world):
    a = highres_products(world, world.truth, factor=3, tile=2)["soc_stock_0_30cm"].values
    b = highres_products(world, world.truth, factor=3, tile=7)["soc_stock_0_30cm"].values
    np.testing.assert_array_equal(a, b)
    assert np.nanstd(a.reshape(10, 3, 10, 3), axis=(1, 3)).min() > 0  # sub-grid variability present


def test_subgrid_inputs_are_mean_preserving(world, coarse, tmp_path):
    out = run_highres(world, world.truth, tmp_path / "hr.nc", factor=10, tile=5, subgrid=SubGrid(seed=3))
    cin = float(coarse["input_total"].sel(region="globe", member=0))
    assert out["input"] == pytest.approx(cin, rel=0.01)  # 10,000 lognormal draws, sigma 0.2
    assert out["land_cells"] == out["n_cells"] == 10_000
    with xr.open_dataset(tmp_path / "hr.nc") as f:
        assert f["soc_stock_whole"].attrs["units"] == "kg C m-2"
        assert f.attrs["refinement_factor"] == 10


@pytest.mark.slow
def test_distributed_cluster_writes_the_same_products(world, tmp_path):
    from proda_engine.distributed import get_client

    ds = highres_products(world, world.truth, factor=4, tile=4)
    write_highres(ds, tmp_path / "a.nc", scheduler="synchronous")
    with get_client(n_workers=2):
        write_highres(highres_products(world, world.truth, factor=4, tile=4), tmp_path / "b.nc",
                      scheduler="distributed")
    with xr.open_dataset(tmp_path / "a.nc") as a, xr.open_dataset(tmp_path / "b.nc") as b:
        np.testing.assert_array_equal(a["soc_stock_whole"].values, b["soc_stock_whole"].values)
