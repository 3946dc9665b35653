"""Zoom for detail without a browser (tiny world, real engine): the map's view drives the 0.05° detail, which
follows the what-if's multipliers, hides when zoomed out, and keeps the coarse slider path untouched."""

from __future__ import annotations

import numpy as np
import pytest
from bokeh.document import Document

from proda_engine import api


@pytest.fixture(scope="module")
def app(world):
    from dashboard.app import build_app

    app = build_app(world)
    app.detail.max_cells = 2_500  # the tiny world is 5° x 5° (10,000 cells at 0.05°): a 2° view qualifies
    return app


def test_snap_view_clips_and_widens_to_fine_cells():
    from dashboard.views.detail import snap_view, view_cells

    extent = (5.0, 10.0, 45.0, 50.0)
    assert snap_view((6.01, 7.99, 46.02, 47.97), extent) == (6.0, 8.0, 46.0, 48.0)
    assert snap_view((4.0, 6.0, 49.0, 55.0), extent) == (5.0, 6.0, 49.0, 50.0)
    assert snap_view((11.0, 12.0, 46.0, 47.0), extent) is None
    assert view_cells((6.0, 8.0, 46.0, 48.0)) == 1_600


def test_zoom_shows_the_detail_and_a_slider_step_updates_it(app, world):
    detail, store = app.detail, app.store
    doc = Document()
    doc.add_root(app.map.pane.get_root(doc))
    assert detail.data is None and detail.status.startswith("zoom in for 0.05° detail")
    app.map._on_range((5.0, 10.0), (45.0, 50.0))  # the whole world: too many cells
    assert detail.data is None and "10,000 cells" in detail.status
    app.map._on_range((6.02, 7.98), (46.03, 47.96))
    da = detail.data
    assert da is not None and da.shape == (40, 40)
    assert detail.status.startswith("0.05° detail (derived forcing) · ") and "baseline" in detail.status
    assert detail.clim == tuple(store.layer.clim) and detail.cmap == store.layer.cmap
    # the detail is the engine's view of the same request
    ref = api.detail_map((6.0, 8.0, 46.0, 48.0), world=world, source=store.state.source)
    np.testing.assert_array_equal(da.values, ref.values)
    swaps = app.map.stats["swaps"]
    app.state.K = 10  # a slider step: the coarse layer as before, then the detail of the new multipliers
    assert app.map.stats["swaps"] == swaps + 1
    assert "what-if applied" in detail.status
    new = detail.data
    ok = np.isfinite(new.values) & np.isfinite(da.values)
    assert ok.sum() > 0 and (new.values[ok] < da.values[ok]).all()  # K̄ +10 %: less SOC in every cell
    assert new.attrs["multipliers"] == ", ".join(f"{m}={v:.6g}" for m, v in store.result.multipliers.items())
    app.map._on_range((5.0, 10.0), (45.0, 50.0))  # zoomed back out: hidden
    assert detail.data is None and detail.status.startswith("zoom in")
    app.state.K = 0


def test_layers_without_detail_say_so(app):
    app.map._on_range((6.0, 8.0), (46.0, 48.0))
    assert app.detail.data is not None
    app.state.variable = "param:q10"
    assert app.detail.data is None and "no 0.05° detail for this map layer" in app.detail.status
    app.state.param.update(variable="cue", depth="0-30cm")
    assert app.detail.data is None and "whole profile" in app.detail.status
    app.state.depth = "whole"
    assert app.detail.data is not None and app.detail.data.attrs["units"] == "1"
    app.state.param.update(variable="soc_stock", depth="0-100cm")
    app.map._on_range(None, None)
    assert app.detail.data is None


def test_projected_map_draws_the_detail_in_its_projection(app):
    from dashboard import geo

    app.geo.projection = "equal_earth"
    gm = app.geomap
    doc = Document()
    doc.add_root(gm.pane.get_root(doc))
    x, y = geo.to_projected("equal_earth", np.array([6.0, 8.0]), np.array([46.0, 48.0]))
    gm._on_range((float(x[0]), float(x[1])), (float(y[0]), float(y[1])))
    da, image = app.detail.data, app.detail.image
    assert da is not None and app.detail.status.startswith("0.05° detail")
    assert image is not None and image.projection == "equal_earth"
    assert image.n_pixels > 0.5 * image.image.size  # the view's pixels show fine cells
    v = image.image[np.isfinite(image.image)]
    assert set(np.unique(v)) <= set(np.unique(da.values[np.isfinite(da.values)]))  # each pixel is one fine cell
    # a pixel shows the fine cell under its centre
    j, i = np.argwhere(np.isfinite(image.image))[len(v) // 2]
    lon, lat = geo.to_lonlat("equal_earth", image.xs[i], image.ys[j])
    assert image.image[j, i] == da.sel(lon=lon[0], lat=lat[0], method="nearest").item()
    app.geo.projection = "plate_carree"
    app.map._on_range((6.0, 8.0), (46.0, 48.0))  # the lon/lat map: the same box, no projected pixels
    assert app.detail.image is None and app.detail.data is not None


def test_a_new_detail_is_swapped_in_with_the_coarse_colours(app):
    """A new detail (slider step, variable) goes into the rendered image's data and colour mapper, never through
    a HoloViews re-render (which re-laid the responsive lon/lat figure out)."""
    from bokeh.models import LinearColorMapper

    doc = Document()
    doc.add_root(app.map.pane.get_root(doc))
    layer = app.map.detail_layer
    app.map._on_range((6.0, 8.0), (46.0, 48.0))
    renders, swaps = layer.stats["renders"], layer.stats["swaps"]
    app.state.variable = "soc_change"
    app.state.A = 10
    assert layer.stats["renders"] == renders and layer.stats["swaps"] >= swaps + 2
    src = next(iter(layer._sources.values()))
    mapper = layer._mappers[id(src)]
    assert isinstance(mapper, LinearColorMapper) and (mapper.low, mapper.high) == app.store.layer.clim
    assert mapper.low == -mapper.high  # the change's diverging scale, as the coarse layer
    np.testing.assert_array_equal(src.data["image"][0], app.detail.data.values)
    assert src.data["x"] == [6.0] and src.data["dw"] == [pytest.approx(2.0)]
    app.state.param.update(A=0, variable="soc_stock")
    app.map._on_range(None, None)
    assert np.isnan(src.data["image"][0]).all()
