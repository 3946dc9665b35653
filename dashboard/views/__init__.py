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


def colorbar_hook(title: str, visible: bool = True):
    """A plot hook keeping a colour bar's title (label and units) current and hiding it when it means nothing.

    HoloViews creates a colour bar once, with the first frame; the hook runs on every frame. Points coloured
    by a column keep their bar as ``color_colorbar`` (the misfit points), images as ``colorbar``.
    """

    def hook(plot, element) -> None:
        cbar = plot.handles.get("colorbar") or plot.handles.get("color_colorbar")
        if cbar is not None:
            if cbar.title != title:
                cbar.title = title
            if cbar.visible != visible:
                cbar.visible = visible

    return hook
