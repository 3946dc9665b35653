"""Views: HoloViews plots and Panel panes that only read a :class:`~dashboard.store.ResultStore`.

The Bokeh backend is loaded here once. WebGL is off unless ``PRODA_DASHBOARD_WEBGL=1``: image glyphs
gain nothing from it, and in headless Chromium (tests, benchmarks) it costs ~1 s per repaint.
"""

from __future__ import annotations

import os

import holoviews as hv

hv.extension("bokeh", logo=False)


def webgl_enabled() -> bool:
    """``PRODA_DASHBOARD_WEBGL=1`` turns Bokeh's WebGL output on (default: canvas)."""
    return os.environ.get("PRODA_DASHBOARD_WEBGL", "0").strip().lower() in ("1", "true", "yes", "on")


def output_backend() -> str:
    return "webgl" if webgl_enabled() else "canvas"


# process-wide: HoloViews reads this when it creates each Bokeh figure
hv.renderer("bokeh").webgl = webgl_enabled()
