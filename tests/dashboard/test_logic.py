"""Fast tests of the dashboard's state, store and views without a browser (tiny world, real engine)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.models import ColorBar, LinearColorMapper

from proda_engine import api


@pytest.fixture(scope="module")
def app(world):
    from dashboard.app import build_app

    return build_app(world)


def test_state_mirrors_the_api(world):
    from dashboard.state import MECHANISMS, URL_PARAMS, VARIABLES, DashboardState

    st = DashboardState(world=world)
    assert tuple(api.mechanisms()) == MECHANISMS
    assert st.source == next(iter(api.parameter_sources(world)))
    assert list(st.param.depth.objects) == api.depth_intervals()
    assert set(VARIABLES.values()) <= {"soc_stock", "soc_change", "turnover", "cue"}
    assert set(URL_PARAMS) == {"region", "depth", "variable", "source", "sites", *MECHANISMS}
    st.param.update(A=5, NPP=-10)
    assert st.perturbation() == {"A": 0.05, "NPP": -0.1}
    st.reset_perturbations()
    assert st.perturbation() == {}


def test_box_keys_round_trip_and_reject_garbage():
    from dashboard.state import box_key, parse_box_key

    key = box_key(5.0, 8.25, 45.5, 47.0)
    assert parse_box_key(key) == (5.0, 8.25, 45.5, 47.0)
    for bad in ("box:1,2,3", "box:a,b,c,d", "box:0,10,50,40", "globe"):
        with pytest.raises(ValueError):
            parse_box_key(bad)


def test_geojson_upload_validation():
    from dashboard.store import MAX_UPLOAD_BYTES, parse_geojson_upload

    ring = [[6.0, 45.5], [8.5, 45.5], [8.5, 47.5], [6.0, 47.5], [6.0, 45.5]]
    feature = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    collection = {"type": "FeatureCollection", "features": [feature]}
    region = parse_geojson_upload(json.dumps(collection).encode(), "alps.geojson")
    assert region.kind == "polygon" and region.label == "upload alps"
    with pytest.raises(ValueError, match="too large"):
        parse_geojson_upload(b" " * (MAX_UPLOAD_BYTES + 1), "big.json")
    with pytest.raises(ValueError, match="not a GeoJSON"):
        parse_geojson_upload(b"{oops", "x.json")
    with pytest.raises(ValueError, match="Polygon"):
        parse_geojson_upload(json.dumps({"type": "Point", "coordinates": [7, 46]}).encode(), "p.json")
    with pytest.raises(ValueError, match="empty"):
        parse_geojson_upload(b"", "e.json")


def test_color_limits_are_fixed_and_ordered(world):
    from dashboard.store import color_limits

    src = next(iter(api.parameter_sources(world)))
    for var in ("soc_stock", "turnover", "cue"):
        lo, hi = color_limits(world, src, "0-100cm", var)
        assert lo < hi
    lo, hi = color_limits(world, src, "0-100cm", "soc_change")
    assert lo == -hi and hi > 0
    assert color_limits(world, src, "0-30cm", "soc_stock")[1] < color_limits(world, src, "whole", "soc_stock")[1]


def test_store_follows_state_and_depth_order(app):
    st, store = app.state, app.store
    totals = {}
    for depth in ("0-30cm", "0-100cm", "0-200cm", "whole"):
        st.depth = depth
        totals[depth] = store.result.totals["total_pg"]
    assert totals["0-30cm"] < totals["0-100cm"] < totals["0-200cm"] < totals["whole"]
    st.depth = "0-100cm"
    st.A = 5
    assert store.result.totals["change_pg"] > 0 and store.result.perturbation["A"] == pytest.approx(0.05)
    st.reset_perturbations()
    assert store.result.totals["change_pg"] == 0


def test_views_render_and_colour_scale_stays_fixed(app):
    doc = Document()
    root = app.map.pane.get_root(doc)
    doc.add_root(root)
    mapper = next(iter(root.select({"type": LinearColorMapper})))
    before = (mapper.low, mapper.high)
    app.state.A = 20
    assert (mapper.low, mapper.high) == before  # slider moves never rescale the colours
    app.state.variable = "soc_change"
    assert mapper.low == -mapper.high
    assert "change" in next(iter(root.select({"type": ColorBar}))).title
    app.state.param.update(A=0, variable="soc_stock")
    for view in (app.profile, app.sensitivity, app.totals):
        view.pane.get_root(Document())
    assert "Pg C" in app.totals.cards["total"].object


def test_tap_box_and_profile(app):
    store = app.store
    store.set_tap(7.1, 46.3)
    assert store.profile is not None and store.profile_baseline is not None
    assert abs(store.profile.attrs["lat"] - 46.3) <= 0.5 and abs(store.profile.attrs["lon"] - 7.1) <= 0.5
    globe = store.result.totals["total_pg"]
    app.map._on_bounds((5.0, 45.0, 7.0, 47.0))  # what the BoundsXY stream delivers: (l, b, r, t)
    assert app.state.region.startswith("box:")
    assert 0 < store.result.totals["total_pg"] < globe
    assert app.state.region in app.controls.region.options.values()
    app.state.region = "globe"


def test_failures_become_messages_not_exceptions(app):
    store = app.store
    good = store.result
    app.state.region = "box:nonsense"
    assert "what-if failed" in store.message and app.alert.visible
    assert store.result is good  # the last good result stays on screen
    app.state.region = "globe"
    assert store.message == "" and not app.alert.visible
    assert store.add_polygon(b"{broken", "broken.json") is None
    assert "GeoJSON upload failed" in store.message
    app.state.region = "globe"


def test_downloads_are_valid(app):
    import netCDF4
    import xarray as xr
    from PIL import Image

    from dashboard.store import csv_bytes, netcdf_bytes, png_bytes

    res = app.store.result
    nc = netCDF4.Dataset("mem.nc", memory=netcdf_bytes(res))
    with xr.open_dataset(xr.backends.NetCDF4DataStore(nc)) as ds:
        np.testing.assert_allclose(ds["soc_stock"].values, res.maps["soc_stock"].values)
    assert csv_bytes(res).decode().startswith("key,value")
    img = Image.open(io.BytesIO(png_bytes(res, "soc_stock", (0.0, 50.0))))
    assert img.format == "PNG" and img.size[0] > 400
    assert app.controls._netcdf().getvalue()[:4] == b"\x89HDF"


def test_sessions_do_not_share_region_choices(world):
    from dashboard.app import build_app

    a, b = build_app(world), build_app(world)
    a.store.select_box(5.0, 45.0, 6.0, 46.0)
    assert a.state.region.startswith("box:")
    assert b.state.region == "globe"
    assert not any(k.startswith("box:") for k in b.state.param.region.objects)


def test_site_comparison_reaches_the_store(world):
    from dashboard.app import build_app

    app = build_app(world)
    rows, metrics = app.store.comparison
    assert len(rows) > 50 and np.isfinite(metrics["e"])
    app.state.source = "twin_truth"
    rows, metrics = app.store.comparison
    assert metrics["e"] > 0.5  # the twin's observations are the truth plus noise
    app.state.A = 20
    rows2, _ = app.store.comparison
    assert not np.allclose(rows2["modelled_kg_m3"], rows["modelled_kg_m3"])  # follows the perturbation
    overlay = app.map._sites(True)
    assert len(overlay) == len(api.observed_sites(world))
