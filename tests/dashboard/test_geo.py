"""Maps (issue 17) without a browser: projections and the pixel mapping, the offline basemap, the URL keys,
the projected map's data swap, tap and box, point query, compare and demo views (tiny world, real engine)."""

from __future__ import annotations

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.models import ColorBar, ColumnDataSource

from dashboard import geo

GLOBE_LON = np.arange(-179.75, 180, 0.5)
GLOBE_LAT = np.arange(-89.75, 90, 0.5)


# ---------------------------------------------------------------------------------------------
# projections, pixel mapping, basemap
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(geo.PROJECTIONS))
def test_pixel_map_puts_each_pixel_in_its_cell(key):
    pm = geo.pixel_map(key, GLOBE_LON, GLOBE_LAT)
    lat2, lon2 = np.meshgrid(GLOBE_LAT, GLOBE_LON, indexing="ij")
    img_lat = pm.apply(lat2.astype(np.float32))
    img_lon = pm.apply(lon2.astype(np.float32))
    ok = np.isfinite(img_lat)
    assert ok.sum() == pm.valid.sum() > 0.5 * pm.valid.size
    # the cell a pixel shows contains the pixel's own lon/lat (cell half-width 0.25°, float32 slack)
    assert np.nanmax(np.abs(img_lat - pm.lat)) <= 0.2501
    dlon = np.abs((img_lon - pm.lon + 180) % 360 - 180)
    assert np.nanmax(dlon) <= 0.2501
    # about one pixel per grid column: the image costs no more bytes than the lon/lat grid
    assert pm.shape[0] * pm.shape[1] <= 1.2 * GLOBE_LON.size * GLOBE_LAT.size
    with pytest.raises(ValueError, match="do not match"):
        pm.apply(np.zeros((3, 3), np.float32))


def test_equal_earth_is_equal_area():
    """Pixels of Equal Earth cover equal areas: the share of pixels in a latitude band is the band's
    share of the sphere's area, sin(lat1) - sin(lat0) over 2 (Plate Carrée over-counts the poles)."""
    for key, tol in (("equal_earth", 0.01), ("plate_carree", None)):
        pm = geo.pixel_map(key, GLOBE_LON, GLOBE_LAT)
        lat = pm.lat[np.isfinite(pm.lat)]
        share = np.mean(np.abs(lat) > 60)
        true = 1 - np.sin(np.deg2rad(60))
        if tol is None:
            assert share > true + 0.15
        else:
            assert share == pytest.approx(true, abs=tol)


def test_lonlat_round_trip_and_off_globe_is_nan():
    for key in geo.PROJECTIONS:
        lon, lat = (np.array([20.0, -75.5]), np.array([10.0, 72.0])) if key != "south_polar" else (
            np.array([20.0, -75.5]), np.array([-60.0, -80.0]))
        x, y = geo.to_projected(key, lon, lat)
        lon2, lat2 = geo.to_lonlat(key, x, y)
        np.testing.assert_allclose(lon2, lon, atol=1e-6)
        np.testing.assert_allclose(lat2, lat, atol=1e-6)
    lon, lat = geo.to_lonlat("equal_earth", 1e9, 1e9)
    assert np.isnan(lon[0]) and np.isnan(lat[0])
    with pytest.raises(ValueError, match="unknown projection"):
        geo.crs("mercator-ish")


@pytest.mark.parametrize("key", ["equal_earth", "robinson", "north_polar"])
def test_basemap_is_offline_projected_and_has_no_globe_wide_bands(key):
    bm = geo.basemap(key)
    assert len(bm["land"]) > 100 and len(bm["lakes"]) > 10 and len(bm["borders"]) > 100 and bm["coast"]
    x0, x1, _, _ = geo.view_extent(key, (-180, 180, -90, 90))
    width = x1 - x0
    wide = [p for p in bm["land"] if p["x"].max() - p["x"].min() > 0.5 * width]
    # only Antarctica may span the map (a ring crossing the antimeridian used to make a band: Fiji)
    assert all(p["y"].max() < 0 for p in wide) if key != "north_polar" else True
    assert len(geo.graticule(key)) >= 8


def test_basemap_asset_names_its_sources():
    text = (geo.GEO_ASSETS / "SOURCES.md").read_text()
    assert "basemap_110m.json" in text and "public domain" in text
    assert set(geo.basemap_lonlat()) == {"land", "lakes", "borders"}


# ---------------------------------------------------------------------------------------------
# URL keys
# ---------------------------------------------------------------------------------------------


def test_geo_state_checks_url_values_and_writes_only_changes():
    from dashboard.geostate import GEO_URL_PARAMS, GeoState, default_projection

    assert default_projection((-180, 180, -90, 90)) == "equal_earth"
    assert default_projection((5, 10, 45, 50)) == "plate_carree"
    st = GeoState((-180, 180, -90, 90))
    assert st.url_query() == {}  # defaults stay out of links
    values, ignored = st.validate_query({"projection": "robinson", "compare": "diff", "demo": "1", "step": "3"})
    assert values == {"projection": "robinson", "compare": "diff", "demo": True, "step": 3} and ignored == []
    st.param.update(**values)
    assert st.url_query() == {"projection": "robinson", "compare": "diff", "demo": "1", "step": "3"}
    bad = dict.fromkeys(GEO_URL_PARAMS.values(), "<script>")
    assert st.validate_query(bad) == ({}, list(GEO_URL_PARAMS.values()))
    assert st.validate_query({"step": "99"})[1] == ["step"] and st.validate_query({"step": "٣"})[1] == ["step"]


# ---------------------------------------------------------------------------------------------
# views on the tiny world
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(world):
    from dashboard.app import build_app

    return build_app(world)


def _image_source(root) -> ColumnDataSource:
    """The data image's source (not the basemap bitmap's, whose image is packed RGBA, uint32)."""
    return next(s for s in root.select({"type": ColumnDataSource})
                if "image" in s.data and np.asarray(s.data["image"][0]).dtype != np.uint32)


def test_regional_world_defaults_to_lon_lat_and_switches_projection(app):
    from dashboard.views.geomap import GeoMapView

    assert app.geo.projection == "plate_carree" and app.map_slot[0] is app.map.pane
    app.geo.projection = "equal_earth"
    assert isinstance(app.geomap, GeoMapView) and app.map_slot[0] is app.geomap.pane
    app.geo.projection = "plate_carree"
    assert app.map_slot[0] is app.map.pane


def test_projected_map_swaps_only_the_image_and_keeps_units(world):
    from dashboard.app import build_app
    from dashboard.views.geomap import GeoMapView

    app = build_app(world)
    view = GeoMapView(app.store, projection="equal_earth")
    doc = Document()
    root = view.pane.get_root(doc)
    doc.add_root(root)
    src = _image_source(root)
    assert {"lon", "lat"} <= set(src.data)  # hover reads lon/lat per pixel
    bars = [cb for cb in root.select({"type": ColorBar}) if cb.visible]
    assert [cb.title for cb in bars] == ["SOC stock (kg C m-2)"]  # units on the bar; misfit bar hidden
    renders = view.stats["renders"]
    app.state.A = 10
    assert view.stats["renders"] == renders and view.stats["swaps"] == 1
    pm = view.pixel_map()
    expected = pm.apply(app.store.layer.values)[::-1]
    np.testing.assert_array_equal(src.data["image"][0], expected)
    app.state.variable = "turnover"  # another kind of map: re-rendered
    assert view.stats["renders"] == renders + 1
    app.state.param.update(A=0, variable="soc_stock")


def test_tap_and_box_arrive_in_lon_lat(world):
    from dashboard.app import build_app
    from dashboard.views.geomap import GeoMapView

    app = build_app(world)
    view = GeoMapView(app.store, projection="robinson")
    x, y = geo.to_projected("robinson", np.array([7.1]), np.array([46.3]))
    view._on_tap(float(x[0]), float(y[0]))
    assert app.store.tap == pytest.approx((7.1, 46.3), abs=1e-6)
    assert abs(app.store.profile.attrs["lat"] - 46.3) <= 0.5
    view._on_tap(1e9, 1e9)  # off the globe: ignored
    assert app.store.tap == pytest.approx((7.1, 46.3), abs=1e-6)
    (x0, x1), (y0, y1) = geo.to_projected("robinson", np.array([5.2, 7.0]), np.array([45.2, 47.0]))
    view._on_bounds((x0, y0, x1, y1))
    assert app.state.region.startswith("box:")
    lon0, lon1, lat0, lat1 = (float(v) for v in app.state.region[4:].split(","))
    assert lon0 == pytest.approx(5.2, abs=0.3) and lat1 == pytest.approx(47.0, abs=0.3)
    assert lon1 == pytest.approx(7.0, abs=0.3) and lat0 == pytest.approx(45.2, abs=0.3)


def test_point_view_shows_value_pm_sd_and_nearby_sites(world):
    from dashboard.app import build_app
    from dashboard.views.point import PointView

    from .conftest import ENSEMBLE_SOURCE

    app = build_app(world)
    app.state.source = ENSEMBLE_SOURCE
    view = PointView(app.store)
    sites = app.store.state  # noqa: F841  (the state drives the query's variable and depth)
    from proda_engine import api

    obs = api.observed_sites(world)
    app.store.set_tap(float(obs["lon"].iloc[0]), float(obs["lat"].iloc[0]))
    q = view.query
    assert q is not None and np.isfinite(q.sd) and q.n_members >= 2
    assert "±" in view.summary.object and "kg C m-2" in view.summary.object
    assert len(q.sites) >= 1 and len(view.table.object) == len(q.sites)
    app.state.A = 10  # a slider step re-asks the query
    assert view.query is not q and view.query.value > q.value
    view.active = False
    before = view.query
    app.state.A = 20
    assert view.query is before  # off screen: no engine work


def test_compare_side_by_side_and_difference(world):
    from dashboard.app import build_app
    from dashboard.views.compare import CompareView, difference_layer

    app = build_app(world)
    view = CompareView(app.store, projection="equal_earth")
    app.state.A = 10
    view.pin()  # B = CUE +10 %
    app.state.A = 0
    view.mode = "diff"
    a, b = view.layers()
    d = difference_layer(a, b)
    assert np.nanmax(d.values) <= 0 and np.nanmin(d.values) < 0  # A (baseline) has less SOC than B
    assert d.clim[0] == -d.clim[1]
    ta, tb = app.store.result.totals["total_pg"], view.result_b.totals["total_pg"]
    assert tb > ta and f"{ta:,.0f} Pg C" in view.totals and "A − B" in view.totals
    view.mode = "side"
    import holoviews as hv

    assert isinstance(view.plot.object, hv.Layout) and len(view.plot.object) == 2
    hv.render(view.plot.object)  # renders (shared axes: linked zoom)


def test_demo_steps_drive_the_state(world):
    from dashboard.app import build_app
    from dashboard.views.demo import STEPS, DemoView, parse_step

    assert parse_step("2") == 1 and parse_step("x") == 0 and parse_step("99") == len(STEPS) - 1
    app = build_app(world)
    demo = DemoView(app.state, app.store, app.scenario)
    assert "Pg C" in demo.total.object
    demo.go(1)  # CUE +10 %
    assert app.state.A == 10 and app.state.variable == "soc_change"
    assert "+" in demo.change.object and "Pg C" in demo.change.object
    # the big numbers are the cards' numbers (one formatter: the same total reads the same on both pages)
    import html
    import re

    from dashboard.views.totals import card_contents
    cards = card_contents(app.store.result.totals)
    card_total = re.search(r"proda-card-value\">([^<]*) Pg C", cards["total"]).group(1)
    card_change = html.unescape(re.search(r"proda-card-value\">([^<]*) Pg C", cards["change"]).group(1))
    assert f">{card_total} Pg C<" in demo.total.object and f">{card_change} Pg C" in demo.change.object
    demo.go(0)
    assert app.state.A == 0


@pytest.mark.parametrize("size, aspect, arrangement", [((1500, 1250), 2.05, "below"), ((1920, 1080), 2.05, "below"),
                                                      ((1500, 1250), 0.8, "beside"), ((2560, 700), 2.05, "beside")])
def test_demo_map_fits_the_window(size, aspect, arrangement):
    """The demo page puts the numbers where the map gets the larger frame, and the frame fits the window."""
    from dashboard.views.demo import DEMO_HEADER_PX, DEMO_SIDE_PX, demo_layout

    where, max_w, max_h = demo_layout(*size, aspect)
    assert where == arrangement
    assert max_w <= size[0] and max_h <= size[1] - DEMO_HEADER_PX
    width = min(max_w, int(max_h * aspect))
    # a wide globe on a 1500 x 1250 screen: the map is at least 1.3x as wide as with the numbers beside it
    if size == (1500, 1250) and aspect > 2:
        assert width >= 1.3 * min(1500 - DEMO_SIDE_PX, int((1250 - DEMO_HEADER_PX) * aspect))


def test_basemap_image_is_one_bitmap_with_transparent_land():
    """The basemap drawn above the data: ocean filled, land transparent (the data shows), white outside."""
    ext = geo.view_extent("equal_earth", (-180, 180, -90, 90))
    img = geo.basemap_image("equal_earth", ext, 500, 245)
    assert img.shape == (245, 500, 4) and img.dtype == np.uint8

    def pixel(lon: float, lat: float) -> np.ndarray:
        x, y = geo.to_projected("equal_earth", np.array([lon]), np.array([lat]))
        col = int((x[0] - ext[0]) / (ext[1] - ext[0]) * 500)
        row = int((ext[3] - y[0]) / (ext[3] - ext[2]) * 245)  # top row first
        return img[row, col]

    assert pixel(20.0, 10.0)[3] == 0  # Chad: land, transparent
    assert tuple(pixel(-25.0, -35.0)) == (0xDB, 0xE7, 0xF1, 255)  # South Atlantic (off the graticule)
    assert tuple(img[0, 0]) == (255, 255, 255, 255)  # outside the globe
    assert pixel(170.0, -17.5)[3] == 255  # no band of "land" across the Pacific at Fiji's latitude
