"""Real-browser tests of zoom for detail (issue 17 item 2; tiny world, Debian Chromium): wheel-zooming the map
brings the 0.05° detail with its status line; a slider
step while zoomed updates the coarse image first and then the detail; zooming out hides it."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from dashboard.views.detail import view_cells

from .helpers import open_app, settled_box

pytestmark = pytest.mark.ui

#: The tiny world is 5° x 5° (10,000 cells at 0.05°): with this cap the whole map is "zoom in" and a 2° view
#: gets its detail.
MAX_CELLS = 2_500

def _wheel(page: Page, app, done, delta: float, what: str) -> None:
    """Wheel-zoom the map (its active tool) over the middle of the world, one notch at a time, until ``done()``."""
    box = settled_box(page, ".proda-map .bk-Canvas")
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5)
    for _ in range(25):
        if done():
            return
        page.mouse.wheel(0, delta)
        page.wait_for_timeout(400)  # Bokeh reports the new ranges once the wheel rests
    assert done(), f"wheel zoom did not reach {what}"


def _step_slider(page: Page) -> None:
    handle = page.locator(".noUi-handle").first
    handle.focus()
    page.keyboard.press("ArrowRight")


@pytest.mark.parametrize("projection", ["plate_carree", "equal_earth"])
def test_zoom_brings_detail_and_a_slider_step_updates_it(page: Page, served, wait, artifacts, projection):
    url, apps = served
    app = open_app(page, url + f"?projection={projection}", apps, wait)
    app.detail.max_cells = MAX_CELLS
    status = page.locator(".proda-detail-status").first
    expect(status).to_contain_text("zoom in for 0.05° detail")
    pane = app.map.pane if projection == "plate_carree" else app.geomap.pane
    wait(lambda: pane._plots, page, what="the map rendered")
    _wheel(page, app, lambda: app.detail.bbox is not None and view_cells(app.detail.bbox) <= MAX_CELLS, -120,
           "a view small enough for detail")
    wait(lambda: app.detail.data is not None, page, timeout=60, what="the 0.05° detail")
    expect(status).to_contain_text("0.05° detail (derived forcing)")
    expect(status).to_contain_text("baseline")
    wait(lambda: "…" not in app.detail.status, page, timeout=60, what="the zoom settled")
    first = app.detail.data
    assert first.attrs["resolution_deg"] == pytest.approx(0.05) and first.attrs["n_cells"] > 100
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / f"detail-{projection}.png"))

    swaps = (app.map if projection == "plate_carree" else app.geomap).stats["swaps"]
    _step_slider(page)  # CUE +1 %
    wait(lambda: app.store.result.perturbation.get("A") == pytest.approx(0.01), page, what="CUE +1 % solved")
    wait(lambda: app.detail.data.attrs["multipliers"] != first.attrs["multipliers"], page, timeout=60,
         what="the detail of the step")
    assert first.attrs["multipliers"] == "none (baseline)" and app.detail.data.attrs["multipliers"].startswith("A=1.")
    assert (app.map if projection == "plate_carree" else app.geomap).stats["swaps"] > swaps  # coarse as before
    expect(status).to_contain_text("what-if applied")
    page.screenshot(path=str(artifacts / f"detail-{projection}-step.png"))

    # zoom back out: the view holds too many cells again and the detail goes
    _wheel(page, app, lambda: app.detail.bbox is None or view_cells(app.detail.bbox) > MAX_CELLS, 300,
           "a view too large for detail")
    wait(lambda: app.detail.data is None, page, timeout=30, what="the detail hidden")
    expect(status).to_contain_text("zoom in for 0.05° detail")
