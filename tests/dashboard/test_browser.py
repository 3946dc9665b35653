"""Real-browser tests: Panel server in a thread, Debian Chromium via Playwright, no mocks.

Assertions wait on the Python state of the session's app (the factory appends it to ``apps``) and
add one DOM check on an element only one callback writes.
"""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from proda_engine import api

from .helpers import activate_tool, open_app, settled_box

pytestmark = pytest.mark.ui




def _select(page: Page, option: str):
    """The <select> that offers ``option`` (Panel widgets live in shadow DOM; locators pierce it)."""
    return page.locator("select").filter(has=page.locator(f"option[value='{option}']"))


def test_page_loads_map_and_totals(page: Page, served, wait, artifacts):
    url, apps = served
    app = open_app(page, url, apps, wait)
    expect(page.locator(".card-total").first).to_contain_text("Pg C")
    assert app.store.result.totals["total_pg"] > 0
    assert app.store.message == ""
    expect(page.locator(".noUi-handle")).to_have_count(6 + 3)  # six what-if mechanisms, three scenario sliders
    wait(lambda: app.store.sensitivity is not None, page, what="sensitivity")
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "dashboard-load.png"))


def test_cue_slider_raises_total(page: Page, served, wait, artifacts):
    url, apps = served
    app = open_app(page, url, apps, wait)
    base = app.store.result.totals["total_pg"]
    handle = page.locator(".noUi-handle").first  # the first slider is microbial CUE (A)
    handle.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    wait(lambda: app.state.A == 5 and app.store.result.perturbation["A"] == pytest.approx(0.05), page,
         what="CUE +5 % solved")
    totals = app.store.result.totals
    assert totals["total_pg"] > base
    assert totals["change_pg"] > 0 and totals["change_pct"] > 0
    expect(page.locator(".card-change").first).to_contain_text("+")
    expect(page.locator(".card-change").first).to_contain_text("Pg C")
    # the URL carries the perturbation (shareable state)
    wait(lambda: "A=5" in page.url, page, what="URL sync")
    page.screenshot(path=str(artifacts / "dashboard-cue-plus5.png"))


def test_decomposition_up_lowers_soc_with_realised_change_and_uncertainty(page: Page, served, wait, artifacts):
    """The K slider raises the region's K̄ (faster decay): SOC falls; the line under the slider shows the
    realised K̄ change and the SOC change; with an ensemble source the cards show ± s.d."""
    url, apps = served
    app = open_app(page, url, apps, wait)
    label = api.parameter_sources()["twin_truth"]  # the test world's ensemble source
    _select(page, label).select_option(label)
    wait(lambda: app.store.result.totals["source"] == "twin_truth" and app.store.uncertainty is not None, page,
         what="ensemble source solved")
    handle = page.locator(".noUi-handle").nth(1)  # the second slider is K̄
    handle.focus()
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    wait(lambda: app.state.K == 10 and app.store.result.perturbation["K"] == pytest.approx(0.10), page,
         what="K̄ +10 % solved")
    res = app.store.result
    assert res.totals["change_pg"] < 0 and abs(res.realised["K"] - 0.10) <= 5e-4
    expect(page.locator(".realised-K").first).to_contain_text("K̄ +10.0 % → SOC -")
    wait(lambda: app.store.uncertainty is not None and app.store.uncertainty.get("change_pg_sd", 0) > 0, page,
         what="members solved under K̄ +10 %")
    expect(page.locator(".card-change").first).to_contain_text("±")
    expect(page.locator(".card-total").first).to_contain_text("±")
    expect(page.locator(".proda-source-note").first).to_contain_text("synthetic twin")
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "dashboard-k-plus10.png"))


def test_depth_interval_orders_totals(page: Page, served, wait):
    url, apps = served
    app = open_app(page, url, apps, wait)
    totals = {}
    for depth in ("0-30cm", "0-100cm", "whole"):
        _select(page, depth).select_option(depth)
        wait(lambda d=depth: app.store.result.totals["depth"] == d, page, what=f"depth {depth}")
        totals[depth] = app.store.result.totals["total_pg"]
    assert totals["0-30cm"] < totals["0-100cm"] < totals["whole"]
    expect(page.locator(".card-total").first).to_contain_text("whole")


def test_tap_shows_profile(page: Page, served, wait, artifacts):
    url, apps = served
    app = open_app(page, url, apps, wait)
    assert app.store.profile is None
    wait(lambda: app.store.result is not None, page, what="the first result")
    box = settled_box(page, ".proda-map .bk-Canvas")  # a click on a layout still shifting can miss the map
    page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5)
    wait(lambda: app.store.profile is not None, page, what="profile after tap")
    prof = app.store.profile
    assert prof["soc"].sizes["depth"] > 5 and float(prof["soc"].max()) > 0
    assert app.store.profile_baseline is not None
    expect(page.locator(".proda-profile").first).to_be_visible()
    assert "SOC profile at" in app.profile.pane.object.opts.get().kwargs.get("title", "")
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "dashboard-tap-profile.png"))


def test_box_selection_updates_totals(page: Page, served, wait, artifacts):
    url, apps = served
    app = open_app(page, url, apps, wait)
    wait(lambda: app.store.result is not None, page, what="the first result")
    globe_total = app.store.result.totals["total_pg"]
    activate_tool(page, ".proda-map", "box-select")
    b = settled_box(page, ".proda-map .bk-Canvas")
    x0, y0 = b["x"] + b["width"] * 0.3, b["y"] + b["height"] * 0.3
    x1, y1 = b["x"] + b["width"] * 0.6, b["y"] + b["height"] * 0.7
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=8)
    page.mouse.up()
    try:
        wait(lambda: app.state.region.startswith("box:"), page, what="the drawn box as the region")
    except AssertionError as err:  # say what the server saw of the gesture
        page.screenshot(path=str(artifacts / "dashboard-box-failed.png"))
        raise AssertionError(f"{err}; the map's box stream holds {app.map.bounds_stream.bounds!r}, "
                             f"region {app.state.region!r}, canvas {b}") from None
    wait(lambda: app.store.result.totals["region"].startswith("box"), page, what="box region solved")
    totals = app.store.result.totals
    assert 0 < totals["total_pg"] < globe_total
    assert totals["n_cells"] > 0
    expect(page.locator(".card-total").first).to_contain_text("box")
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "dashboard-box.png"))


def test_netcdf_download_is_valid(page: Page, served, wait):
    import netCDF4
    import xarray as xr

    url, apps = served
    app = open_app(page, url, apps, wait)
    with page.expect_download(timeout=20_000) as info:
        page.locator(".download-nc button").first.click()
    download = info.value
    assert download.suggested_filename == "proda_whatif.nc"
    data = open(download.path(), "rb").read()
    nc = netCDF4.Dataset("download.nc", memory=data)  # open the bytes in memory
    with xr.open_dataset(xr.backends.NetCDF4DataStore(nc)) as ds:
        assert {"soc_stock", "soc_change", "turnover", "cue"} <= set(ds.data_vars)
        assert ds["soc_stock"].attrs["units"] == "kg C m-2"
        assert ds.attrs["total_total_pg"] == pytest.approx(app.store.result.totals["total_pg"])


def test_csv_download(page: Page, served, wait):
    url, apps = served
    open_app(page, url, apps, wait)
    with page.expect_download(timeout=20_000) as info:
        page.locator(".download-csv button").first.click()
    text = open(info.value.path(), encoding="utf-8").read()
    assert text.splitlines()[0] == "key,value" and "total_pg" in text


def test_two_sessions_keep_independent_state(browser, served, wait):
    url, apps = served
    ctx1, ctx2 = browser.new_context(), browser.new_context()
    try:
        p1, p2 = ctx1.new_page(), ctx2.new_page()
        a1 = open_app(p1, url, apps, wait, n=1)
        a2 = open_app(p2, url, apps, wait, n=2)
        assert a1 is not a2 and a1.state is not a2.state
        p1.locator(".noUi-handle").first.focus()
        p1.keyboard.press("ArrowRight")
        p1.keyboard.press("ArrowRight")
        wait(lambda: a1.store.result.perturbation["A"] == pytest.approx(0.02), p1, what="session 1 solved")
        _select(p2, "whole").select_option("whole")
        wait(lambda: a2.store.result.totals["depth"] == "whole", p2, what="session 2 solved")
        assert a2.state.A == 0 and a2.store.result.totals["change_pg"] == 0
        assert a1.state.depth == "0-100cm" and a1.store.result.totals["depth"] == "0-100cm"
    finally:
        ctx1.close()
        ctx2.close()


def test_url_state_is_applied(page: Page, served, wait):
    url, apps = served
    app = open_app(page, f"{url}?NPP=10&depth=whole&variable=soc_change", apps, wait)
    assert (app.state.NPP, app.state.depth, app.state.variable) == (10, "whole", "soc_change")
    assert app.store.result.totals["change_pct"] == pytest.approx(10.0, rel=1e-6)  # inputs scale linearly
    expect(page.locator(".card-change").first).to_contain_text("+10.0 %")


def test_bad_upload_shows_message_and_session_survives(page: Page, served, wait, tmp_path):
    url, apps = served
    app = open_app(page, url, apps, wait)
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    page.locator("input[type=file]").set_input_files(str(bad))
    wait(lambda: "GeoJSON upload failed" in app.store.message, page, what="upload error message")
    expect(page.locator(".proda-alert").first).to_contain_text("not a GeoJSON")
    # a valid polygon afterwards still works: the session is alive
    poly = tmp_path / "alps.geojson"
    ring = [[6.0, 45.5], [8.5, 45.5], [8.5, 47.5], [6.0, 47.5], [6.0, 45.5]]
    poly.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    page.locator("input[type=file]").set_input_files(str(poly))
    wait(lambda: app.state.region.startswith("polygon:") and app.store.result.totals["region"] == "upload alps",
         page, what="polygon region")
    assert app.store.result.totals["n_cells"] > 0
    assert app.store.message == ""


def test_parameter_map_variable(page: Page, served, wait, artifacts):
    url, apps = served
    app = open_app(page, url, apps, wait)
    label = "Q10 (q10) [Xi]"
    _select(page, label).select_option(label)
    wait(lambda: app.store.layer.variable == "param:q10", page, what="parameter map")
    assert app.store.layer.units == "1" and app.store.message == ""
    clim = app.store.layer.clim
    # the re-render for the new variable may land a tick after the store: wait for it before stepping
    wait(lambda: app.map._shown == app.store.layer.signature, page, what="parameter map rendered")
    swaps = app.map.stats["swaps"]
    handle = page.locator(".noUi-handle").nth(2)  # environmental modifiers (Xi) moves Q10
    handle.focus()
    page.keyboard.press("ArrowRight")
    wait(lambda: app.store.result.perturbation["Xi"] == pytest.approx(0.01), page, what="Xi +1 % solved")
    wait(lambda: app.map.stats["swaps"] > swaps, page, what="image data swapped")
    assert app.store.layer.clim == clim  # the scale stays fixed
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "dashboard-parameter-q10.png"))


def test_misfit_layer_and_scatter_tab(page: Page, served, wait, artifacts):
    url, apps = served
    app = open_app(page, url, apps, wait)
    label = "model − observation at sites"
    _select(page, label).select_option(label)
    wait(lambda: app.store.misfit is not None and app.store.layer.variable == "misfit", page, what="misfit layer")
    assert len(app.store.misfit) > 10 and app.store.comparison is None  # scatter tab not open yet
    page.get_by_text("Observed vs modelled").first.click()
    wait(lambda: app.store.comparison is not None, page, what="comparison after opening the tab")
    expect(page.locator(".proda-scatter .bk-Canvas").first).to_be_visible(timeout=10_000)
    page.wait_for_timeout(600)
    page.screenshot(path=str(artifacts / "dashboard-misfit.png"))


def test_scenario_panel_runs_in_the_browser(page: Page, served, wait, artifacts):
    """Press "Run scenario": the run happens in a worker thread (the page stays live), then the
    summary, trajectory chart and change map show the region's SOC change."""
    url, apps = served
    app = open_app(page, url, apps, wait)
    app.scenario.horizon = 20  # keep the test short; the slider default is a century
    page.locator(".proda-run-scenario button").first.click()
    wait(lambda: app.scenario.running or app.scenario.result is not None, page, what="scenario started")
    wait(lambda: app.scenario.result is not None and not app.scenario.running, page, timeout=120,
         what="scenario finished")
    assert app.scenario.message == ""
    ds = app.scenario.result
    assert ds.sizes["year"] == 20
    change = float(ds.soc_change_global.isel(source=0, year=-1))
    assert change != 0.0
    expect(page.locator(".proda-scenario-summary").first).to_contain_text("Pg C")
    expect(page.locator(".proda-scenario-trajectory .bk-Canvas").first).to_be_visible()
    page.locator(".proda-scenario-trajectory").first.scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    page.screenshot(path=str(artifacts / "dashboard-scenario.png"))
