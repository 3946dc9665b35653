"""Zoom for detail (issue 17 item 2): the 0.05° view-only what-if of :mod:`proda_engine.products.highres`.

Physics first: a view is the same cells of the whole product, bit for bit; multipliers of 1 are the
baseline; pure refinement of a what-if keeps the coarse what-if's totals; a faster decay lowers every cell's
stock. Then the guard (too many cells) and the tile cache (a second view solves nothing)."""

from __future__ import annotations

import numpy as np
import pytest

from proda_engine.products import highres
from proda_engine.products.highres import BANDS, TILE_CACHE, SubGrid, highres_products, view_detail
from proda_engine.products.multipliers import MECHANISMS, NO_CHANGE
from proda_engine.products.regions import cell_area
from proda_engine.products.whatif import WhatIfEngine

K_UP = dict(zip(MECHANISMS, (1.0, 1.1, 1.0, 1.0, 1.0, 1.0)))
#: A view over part of the tiny world (10 x 10 cells of 0.5°, lon 5-10 °E, lat 45-50 °N), off the tile edges.
BBOX = (6.1, 8.4, 46.3, 47.9)
#: A view on coarse-cell edges: its fine cells are exactly those of 5 x 4 coarse cells.
ALIGNED = (6.0, 8.5, 46.0, 48.0)


@pytest.fixture(scope="module")
def theta(world):
    return world.cells.theta_from_grid(world.truth)


def _values(ds) -> np.ndarray:
    return np.stack([ds[b].values for b in BANDS])


def test_view_is_the_same_cells_of_the_whole_product(world, theta):
    mult = dict(zip(MECHANISMS, (1.05, 1.1, 0.9, 1.2, 1.1, 1.05)))
    full = highres_products(world, theta, factor=4, tile=3, multipliers=mult)
    view = highres_products(world, theta, factor=4, tile=3, multipliers=mult, bbox=BBOX)
    lat, lon = view["lat"].values, view["lon"].values
    assert lat.min() < BBOX[2] + 0.125 and lat.max() > BBOX[3] - 0.125  # every cell the box touches, no more
    assert lon.min() < BBOX[0] + 0.125 and lon.max() > BBOX[1] - 0.125
    assert view.sizes["lat"] * view.sizes["lon"] < full.sizes["lat"] * full.sizes["lon"] / 3
    same = full.sel(lat=lat, lon=lon)
    np.testing.assert_array_equal(_values(view), _values(same))  # bit-identical, NaNs in the same places
    assert np.isfinite(view["soc_stock_whole"].values).sum() > 0


def test_multipliers_of_one_are_the_baseline(world, theta):
    a = highres_products(world, theta, factor=3, tile=4, bbox=BBOX)
    b = highres_products(world, theta, factor=3, tile=4, bbox=BBOX, multipliers=NO_CHANGE)
    np.testing.assert_array_equal(_values(a), _values(b))


def test_pure_refinement_of_a_what_if_keeps_the_coarse_what_if(world, theta):
    """With ``subgrid=None`` every fine cell is its coarse cell: the fine what-if's box total equals the coarse
    what-if's total of the same cells. Tolerance 2e-5: the fine path stores the forcing in float32 and its
    stocks in float32 (the coarse engine runs float64 throughout); the sub-cell areas sum to the coarse
    cell's area (spherical trapezoids are additive), so the quadrature adds only rounding."""
    f = world.cells
    eng = WhatIfEngine(None, {"truth": theta}, fields=world.fields, cells=(f.forcing, f.cells, f.lat, f.lon))
    coarse = eng.what_if({"K": 0.1, "NPP": -0.1, "A": 0.05}, depth="0-100cm", source="truth")
    assert coarse.multipliers is not None and coarse.multipliers["K"] != 1.0
    fine = highres_products(world, theta, factor=4, tile=3, subgrid=None, multipliers=coarse.multipliers,
                            bbox=ALIGNED)["soc_stock_0_100cm"]
    stock_c = coarse.maps["soc_stock"].sel(lat=slice(*ALIGNED[2:]), lon=slice(*ALIGNED[:2]))
    assert stock_c.size == fine.size / 16  # the box's coarse cells, each split 4 x 4
    area_c = cell_area(stock_c["lat"].values, stock_c["lon"].values)
    area_f = cell_area(fine["lat"].values, fine["lon"].values)
    total_c = np.nansum(stock_c.values * area_c)
    total_f = np.nansum(fine.values.astype(float) * area_f)
    assert total_f == pytest.approx(total_c, rel=2e-5)
    blocks = fine.values.reshape(stock_c.shape[0], 4, stock_c.shape[1], 4)
    np.testing.assert_allclose(blocks[:, 0, :, 0], stock_c.values, rtol=2e-5)


def test_faster_decay_lowers_every_valid_cells_stock(world, theta):
    base = highres_products(world, theta, factor=4, tile=3, bbox=BBOX)["soc_stock_whole"].values
    faster = highres_products(world, theta, factor=4, tile=3, bbox=BBOX, multipliers=K_UP)["soc_stock_whole"].values
    ok = np.isfinite(base) & np.isfinite(faster)
    assert ok.sum() > 0.9 * np.isfinite(base).sum()
    assert (faster[ok] < base[ok]).all()


def test_view_detail_refuses_too_many_cells(world, theta):
    with pytest.raises(ValueError, match=r"zoom in further for 0\.05° detail"):
        view_detail(world, theta, (5.0, 10.0, 45.0, 50.0), max_cells=9_999)
    with pytest.raises(ValueError, match="does not intersect"):
        view_detail(world, theta, (100.0, 101.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="whole profile"):
        view_detail(world, theta, BBOX, variable="cue", depth="0-30cm")


def test_view_detail_is_cached_per_tile(world, theta, monkeypatch):
    TILE_CACHE.clear()
    solves = []
    real = highres._tile_products
    monkeypatch.setattr(highres, "_tile_products", lambda *a: solves.append(1) or real(*a))
    a = view_detail(world, theta, BBOX, multipliers=K_UP)
    n = len(solves)
    assert n > 0 and len(TILE_CACHE) == n
    b = view_detail(world, theta, BBOX, multipliers=K_UP)
    assert len(solves) == n  # no second solve
    np.testing.assert_array_equal(a.values, b.values)
    assert a.attrs["units"] == "kg C m-2" and a.attrs["resolution_deg"] == pytest.approx(0.05)
    assert a.attrs["n_cells"] == int(np.isfinite(a.values).sum()) > 0
    # another multiplier is another tile; panning to a box inside the first reuses every tile
    view_detail(world, theta, BBOX, multipliers=NO_CHANGE)
    assert len(solves) == 2 * n
    view_detail(world, theta, (6.6, 7.4, 46.6, 47.4), multipliers=K_UP)
    assert len(solves) == 2 * n
    change = view_detail(world, theta, BBOX, variable="soc_change", multipliers=K_UP)
    assert len(solves) == 2 * n  # the what-if minus the baseline: both already cached
    np.testing.assert_allclose(change.values, a.values - view_detail(world, theta, BBOX).values, atol=1e-6)
    assert np.nanmax(change.values) < 0


def test_subgrid_changes_the_view_but_not_its_mean_input(world, theta):
    plain = view_detail(world, theta, BBOX, subgrid=None)
    varied = view_detail(world, theta, BBOX, subgrid=SubGrid())
    assert np.nanstd(varied.values) > np.nanstd(plain.values)


def test_api_detail_map_applies_the_coarse_what_ifs_multipliers():
    from proda_engine import api

    res = api.what_if({"K": 0.1}, world="tiny")
    a = api.detail_map(BBOX, perturbation={"K": 0.1}, world="tiny")
    b = api.detail_map(BBOX, multipliers=res.multipliers, world="tiny")
    np.testing.assert_array_equal(a.values, b.values)
    assert a.attrs["units"] == "kg C m-2" and a.attrs["resolution_deg"] == pytest.approx(0.05)
    assert "DERIVED" in a.attrs["provenance"] and "sub-grid" in a.attrs["provenance"]
    assert a.attrs["world"] == "tiny" and a.attrs["source"] == res.totals["source"]
    assert a.attrs["multipliers"].startswith("A=1, K=1.0")
    base = api.detail_map(BBOX, world="tiny")
    ok = np.isfinite(a.values) & np.isfinite(base.values)
    assert (a.values[ok] < base.values[ok]).all()
    with pytest.raises(ValueError, match="zoom in further"):
        api.detail_map((5.0, 10.0, 45.0, 50.0), world="tiny", max_cells=1000)
