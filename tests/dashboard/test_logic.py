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
    assert app.store.comparison is None  # not computed while the scatter is not on screen
    app.store.want_comparison = True
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


# ---------------------------------------------------------------------------------------------
# extra map layers: parameters, ensemble spread, misfit at sites; data swap; Datashader path
# ---------------------------------------------------------------------------------------------


def _image_source(root, shape: tuple[int, int] | None = None):
    """The image glyph's source; with ``shape``, the one whose image has it (the map also holds the 0.05°
    detail layer's image, which on the tiny world is on screen from the start)."""
    from bokeh.models import ColumnDataSource, GlyphRenderer
    from bokeh.models import Image as ImageGlyph

    rend = next(r for r in root.select({"type": GlyphRenderer}) if isinstance(r.glyph, ImageGlyph)
                and (shape is None or np.shape(r.data_source.data["image"][0]) == shape))
    assert isinstance(rend.data_source, ColumnDataSource)
    return rend.data_source


def test_api_parameter_map(world):
    from proda_engine.parameters import PARAMETER_INDEX, PARAMETERS

    da = api.parameter_map("q10", "twin_truth", world)
    p = PARAMETERS[PARAMETER_INDEX["q10"]]
    assert da.dims == ("lat", "lon") and da.attrs["units"] == p.units and "Q10" in da.attrs["long_name"]
    land = np.isfinite(da.values)
    eng = api.world_engine(world)
    np.testing.assert_array_equal(land, np.isfinite(eng.to_grid(np.ones(eng.cells.size))))  # NaN off land only
    theta = da["theta"].values[land]
    assert ((theta > 0) & (theta <= 1)).all()
    np.testing.assert_allclose(da.values[land], p.lower + theta * (p.upper - p.lower))
    up = api.parameter_map("q10", "twin_truth", world, perturbation={"Xi": 0.2}, space="theta")
    assert np.nanmean(up["theta"].values) > np.nanmean(da["theta"].values)  # what the solve used
    # bulk space: K̄ +20 % divides every turnover time by the realised multiplier (> 1)
    tau0 = api.parameter_map("tau4s3", "twin_truth", world)
    fast = api.parameter_map("tau4s3", "twin_truth", world, perturbation={"K": 0.2})
    assert fast.attrs["multiplier"] > 1.0
    np.testing.assert_allclose(fast.values, tau0.values / fast.attrs["multiplier"], rtol=1e-12)
    dflt = api.parameter_map("efolding", "default_clm5", world)
    assert np.nanmax(dflt.values) == pytest.approx(10.0)  # CLM5's default, outside the prior
    with pytest.raises(ValueError, match="unknown parameter"):
        api.parameter_map("nope", None, world)


def test_api_ensemble_spread_and_totals(world):
    assert api.ensemble_spread("0-100cm", "midpoint", world) is None  # no ensemble product
    assert api.ensemble_totals(source="midpoint", world=world) is None
    sd = api.ensemble_spread("0-100cm", "twin_truth", world)
    assert sd.attrs["units"] == "kg C m-2" and sd.attrs["n_members"] == 4
    land = np.isfinite(api.what_if(None, source="twin_truth", world=world).maps["soc_stock"].values)
    assert (sd.values[land] > 0).all() and np.isnan(sd.values[~np.isfinite(sd.values)]).all()
    tot = api.ensemble_totals(source="twin_truth", depth="0-100cm", world=world)
    assert tot["n_members"] == 4 and tot["sd_pg"] > 0 and tot["mean_pg"] > 0


def test_api_site_misfit(world):
    mis = api.site_misfit("twin_truth", None, world=world)
    rows, _ = api.site_comparison(source="twin_truth", world=world)
    assert len(mis) == rows["profile_id"].nunique() and {"lat", "lon", "misfit_kg_m3"} <= set(mis.columns)
    one = rows[rows["profile_id"] == mis["profile_id"].iloc[0]]
    assert mis["misfit_kg_m3"].iloc[0] == pytest.approx((one["modelled_kg_m3"] - one["observed_kg_m3"]).mean())
    more = api.site_misfit("twin_truth", {"A": 0.2}, world=world)
    assert more["misfit_kg_m3"].mean() > mis["misfit_kg_m3"].mean()  # more CUE, more modelled SOC


def test_slider_step_swaps_image_data_only(world):
    from dashboard.app import build_app

    app = build_app(world)
    doc = Document()
    root = app.map.pane.get_root(doc)
    doc.add_root(root)
    src = _image_source(root, app.store.layer.values.shape)
    mapper = next(iter(root.select({"type": LinearColorMapper})))
    renders, before = app.map.stats["renders"], (mapper.low, mapper.high)
    app.state.A = 10
    assert app.map.stats["renders"] == renders and app.map.stats["swaps"] == 1  # no HoloViews re-render
    shown = src.data["image"][0]
    expected = app.store.result.maps["soc_stock"].values.astype(np.float32)
    np.testing.assert_array_equal(np.isnan(shown), np.isnan(expected))
    assert np.nanmax(np.abs(np.sort(shown[np.isfinite(shown)]) - np.sort(expected[np.isfinite(expected)]))) == 0
    assert (mapper.low, mapper.high) == before
    app.state.variable = "param:q10"  # a different kind of map: a real re-render
    assert app.map.stats["renders"] == renders + 1
    assert app.store.layer.units == "1" and "Q10" in app.store.layer.title


def test_parameter_layer_follows_perturbation_with_fixed_limits(world):
    from dashboard.app import build_app

    app = build_app(world)
    app.state.param.update(source="twin_truth", variable="param:tau4s3")
    layer0 = app.store.layer
    app.state.K = 20
    layer1 = app.store.layer
    assert layer1.clim == layer0.clim and layer1.signature == layer0.signature
    assert np.nanmean(layer1.values) < np.nanmean(layer0.values)  # K̄ +20 %: faster decay, shorter tau
    assert "Parameters of the source (21)" in app.controls.variable.groups
    assert len(app.controls.variable.groups["Parameters of the source (21)"]) == 21


def test_ensemble_variable_and_card_only_where_an_ensemble_exists(world):
    from dashboard.app import build_app
    from dashboard.state import SPREAD_VARIABLE

    app = build_app(world)
    offered = lambda: any(SPREAD_VARIABLE in g.values() for g in app.controls.variable.groups.values())  # noqa: E731
    assert app.state.source != "twin_truth" and not offered() and not app.totals.ensemble.visible
    app.state.source = "twin_truth"
    assert offered() and app.totals.ensemble.visible and "±" in app.totals.ensemble.object
    app.state.variable = SPREAD_VARIABLE
    assert app.store.layer.variable == SPREAD_VARIABLE and app.store.layer.clim[0] == 0.0
    assert "4 members" in app.store.layer.title
    app.state.source = "midpoint"  # no ensemble: the variable is withdrawn, the map falls back
    assert not offered() and app.state.variable == "soc_stock" and app.store.message == ""
    assert app.store.layer.variable == "soc_stock" and not app.totals.ensemble.visible


def test_misfit_layer_points_and_diverging_limits(world):
    from dashboard.app import build_app
    from dashboard.store import color_limits

    app = build_app(world)
    app.state.variable = "misfit"
    mis = app.store.misfit
    assert len(mis) > 10 and app.store.layer.cmap == "Greys" and not app.store.layer.colorbar
    lo, hi = color_limits(world, app.state.source, app.state.depth, "misfit")
    assert lo == -hi > -np.inf and hi > 0
    pts = app.map._misfit(mis)
    assert len(pts) == len(mis)
    doc = Document()
    doc.add_root(app.map.pane.get_root(doc))  # renders with the points layer
    app.state.variable = "soc_stock"
    assert app.store.misfit is None


def test_fine_grid_is_rasterized_and_coarse_grid_is_not(world):
    """Datashader path: a synthetic 0.1° layer goes through rasterize; 0.5° stays a plain image."""
    import holoviews as hv

    from dashboard.app import build_app
    from dashboard.store import make_layer
    from dashboard.views.map import MapView, use_rasterize

    app = build_app(world)
    assert not use_rasterize(app.store.layer) and not app.map.rasterized  # the 0.5° test world
    lon = np.arange(-29.95, 30.0, 0.1)
    lat = np.arange(-14.95, 15.0, 0.1)
    values = np.sin(np.deg2rad(lat))[:, None] * np.cos(np.deg2rad(lon))[None, :]
    import xarray as xr

    da = xr.DataArray(values, dims=("lat", "lon"), coords={"lat": lat, "lon": lon}, attrs={"units": "1"})
    fine = make_layer(da, "soc_stock", (-1.0, 1.0), "synthetic 0.1°")
    assert fine.resolution == pytest.approx(0.1) and use_rasterize(fine)
    app.store.layer = fine
    view = MapView(app.store)
    assert view.rasterized
    fig = hv.render(view.overlay.opts(responsive=False, width=400, height=250, clone=True))
    src = _image_source(fig)
    assert src.data["image"][0].shape != values.shape  # aggregated to the plot, not the native grid
    renders = view.stats["renders"]
    app.store.layer = make_layer(da * 2, "soc_stock", (-1.0, 1.0), "synthetic 0.1°")
    assert view.stats["renders"] == renders + 1 and view.stats["swaps"] == 0  # rasterize: re-render path


def test_scenario_panel_runs_and_reports_signs(world):
    """The scenario card's run (inline here, a worker thread when served): warming alone loses SOC
    (Q10 > 1), more carbon input alone gains it; the chart, map and summary follow the result."""
    from bokeh.document import Document as _Doc

    from dashboard.app import build_app

    app = build_app(world)
    sc = app.scenario
    sc.param.update(warming=3.0, npp=0, horizon=10, amplified=False)
    sc.run()
    assert sc.message == "" and not sc.running and sc.progress == 100
    ds = sc.result
    assert ds.sizes["year"] == 10 and list(ds.source.values) == [app.state.source]
    warm = ds.soc_change_global.values[0]
    assert warm[-1] < 0 and np.all(np.diff(warm) < 0)  # a ramp of warming: loss growing every year
    assert "Pg C" in sc.summary.object and "-" in sc.summary.object
    sc.param.update(warming=0.0, npp=20, compare=True)
    sc.run()
    assert sc.message == ""
    gain = sc.result.soc_change_global
    assert set(gain.source.values) >= {app.state.source, "homogeneous_mean"}
    assert (gain.isel(year=-1).values > 0).all()
    # both plots render with the result (trajectory: one curve per source)
    for pane in (sc.trajectory, sc.map):
        pane.get_root(_Doc())
    assert len(sc.trajectory.object) == gain.sizes["source"]  # the shown figure has one curve per source
    # a region with no land is a message, not an exception
    app.state.region = "box:170.0,171.0,-89.0,-88.0"
    sc.run()
    assert "no land" in sc.message or "no land cell" in sc.message
    app.state.region = "globe"


# ---------------------------------------------------------------------------------------------
# honest what-if: bulk-process sliders, realised changes, ensemble +-, provenance, the spec's bars
# ---------------------------------------------------------------------------------------------


def test_sliders_mean_their_bulk_process_and_show_what_was_realised(world):
    """K̄ +10 % lowers SOC; the line under the slider shows the realised K̄ change and the SOC change;
    an unmoved slider shows its process's side effect, not a request."""
    from dashboard.app import build_app

    app = build_app(world)
    app.state.param.update(source="twin_truth", K=10)
    res = app.store.result
    assert res.totals["change_pg"] < 0 and abs(res.realised["K"] - 0.10) <= api.BULK_TOLERANCE
    line = app.controls.realised["K"].object
    assert "K̄ &#43;10.0 %" in line and "SOC &#45;" in line
    assert "side effect" in app.controls.realised["Xi"].object or "unchanged" in app.controls.realised["Xi"].object
    app.state.param.update(K=0, A=10)
    assert app.store.result.totals["change_pg"] > 0 and "CUE &#43;10.0 %" in app.controls.realised["A"].object


def test_ensemble_uncertainty_on_cards_profile_and_downloads(world):
    """With an ensemble, every card, the change and the tapped profile carry +- s.d. over the members
    (phase 2 of a request), and the downloads carry them and where the numbers come from."""
    from dashboard.app import build_app
    from dashboard.store import csv_bytes

    app = build_app(world)
    app.state.source = "twin_truth"  # the test world's ensemble source
    app.store.set_tap(7.1, 46.3)
    app.state.NPP = 10
    unc = app.store.uncertainty
    assert unc is not None and unc["n_members"] == 4 and unc["total_pg_sd"] > 0
    assert unc["change_pct_mean"] == pytest.approx(10.0, rel=1e-6)  # carbon input: exactly linear in every member
    assert unc["profile_sd"].shape == unc["profile_mean"].shape and np.nanmax(unc["profile_sd"]) > 0
    for card in ("total", "change", "turnover-mean", "turnover-median", "cue"):
        assert "±" in app.totals.cards[card].object, card
    assert "synthetic twin world" in app.totals.provenance.object
    text = csv_bytes(app.store.result, unc).decode()
    for key in ("note,", "world,", "totals_convention,", "realised_NPP,", "ensemble_total_pg_sd,"):
        assert key in text, key
    import holoviews as hv

    fig = app.profile._plot(app.store.profile, app.store.profile_baseline)
    assert any(isinstance(el, hv.Polygons) for el in fig)  # the members' band around the what-if profile


def test_sensitivity_is_the_spec_method_and_presets_get_a_note(world):
    from dashboard.app import build_app

    app = build_app(world)
    app.state.source = "twin_truth"
    sens = app.store.sensitivity
    assert set(sens) == {"A", "K", "Xi", "V", "I", "NPP"} and sens["A"]["n_members"] == 4
    assert sens["K"]["plus1pct_pg"] < 0 < sens["A"]["plus1pct_pg"] and sens["A"]["plus1pct_sd_pg"] > 0
    same = api.sensitivity(region="globe", depth=app.state.depth, source="twin_truth", world=world)
    assert sens["A"]["plus1pct_pg"] == same["A"]["plus1pct_pg"]
    app.state.source = "default_clm5"
    assert app.store.sensitivity == {} and "unit-interval" in app.store.sensitivity_note
    assert app.store.message == ""


def test_reference_layers_compare_the_source_with_the_shipped_map(app):
    """The reference product and the source's difference from it are map layers; the difference is the
    source's stock minus the reference on the same cells; depths the product lacks fall back with a note."""
    from dashboard.state import REFERENCE_DIFF_VARIABLE, REFERENCE_VARIABLE

    st, store = app.state, app.store
    st.param.update(depth="0-100cm", variable=REFERENCE_VARIABLE)
    ref = store.layer
    assert ref.variable == REFERENCE_VARIABLE and "reference" in ref.label.lower() and "Pg C" in ref.title
    st.variable = REFERENCE_DIFF_VARIABLE
    rc = api.reference_comparison(st.source, "0-100cm", "globe", world=app.world)
    diff = rc.maps["difference"].values
    ok = np.isfinite(diff)
    assert ok.any()
    assert np.allclose(store.layer.values[ok], diff[ok], rtol=1e-5, atol=1e-5)
    assert np.allclose(diff[ok], (rc.maps["model"].values - rc.maps["reference"].values)[ok])
    assert store.layer.clim[0] == -store.layer.clim[1]
    st.depth = "whole"
    assert store.layer.variable == "soc_stock" and "reference product covers" in store.message
    st.param.update(depth="0-100cm", variable="soc_stock")
