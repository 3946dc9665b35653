"""Compare: the current what-if (A) against a second parameter source or a pinned what-if state (B).

``mode``: ``"side"`` shows A and B side by side on the same projection with linked zoom (one HoloViews
layout, shared axes); ``"diff"`` shows A − B on a diverging scale. Both give the totals of A and B (Pg
C) and their difference. B is ``source_b`` under ``pert_b``: another source with the current sliders
(``follow=True``), or a state pinned with :meth:`CompareView.pin` (e.g. the baseline, or CUE +10 %).
B is solved through ``api.what_if`` through dashboard.runner (latest-only) when served.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from dashboard import geo
from dashboard import store as store_mod
from dashboard.runner import LatestFollower
from dashboard.safe import escape
from dashboard.state import VARIABLES, variable_label
from dashboard.store import MapLayer, ResultStore, make_layer
from dashboard.views import output_backend
from dashboard.views.geomap import LAND, projected_image
from proda_engine import api

MODES = {"off": "off", "side by side (linked zoom)": "side", "difference A − B": "diff"}


def describe(source: str | None, pert: dict[str, float]) -> str:
    """``"PRODA end to end, A +10 %"``: a source and its non-zero what-if changes."""
    label = api.SOURCE_LABELS.get(source, source or "?")
    changes = ", ".join(f"{k} {v * 100:+.0f} %" for k, v in sorted(pert.items()) if v)
    return f"{label}, {changes}" if changes else f"{label}, baseline"


def difference_layer(a: MapLayer, b: MapLayer) -> MapLayer:
    """A − B on the same grid, diverging colours symmetric about zero (98th percentile of |A − B|)."""
    if a.values.shape != b.values.shape:
        raise ValueError(f"A and B are on different grids: {a.values.shape} vs {b.values.shape}")
    d = (a.values - b.values).astype(np.float32)
    fin = np.abs(d[np.isfinite(d)])
    half = float(np.percentile(fin, 98)) if fin.size else 1.0
    half = half if half > 0 else 1.0
    return MapLayer(variable=f"{a.variable}_diff", values=d, lon=a.lon, lat=a.lat, label=f"A − B: {a.label}",
                    units=a.units, title=f"A − B: {a.label}", clim=(-half, half), cmap="RdBu_r")


class CompareView(pn.viewable.Viewer):
    """Side-by-side or difference maps of A (the session's current result) and B."""

    mode = param.Selector(default="off", objects=list(MODES.values()))
    source_b = param.Selector(default=None, objects=[], allow_None=True, label="B: parameter source")
    follow = param.Boolean(default=True, label="B uses the current sliders",
                           doc="B = source_b under the current what-if; off: B keeps the pinned what-if.")
    pert_b = param.Dict(default={}, doc="B's what-if when not following the sliders (pinned).")
    result_b = param.Parameter(default=None, doc="api.what_if answer for B.")
    totals = param.String(default="")

    def __init__(self, store: ResultStore, projection: str = geo.DEFAULT_PROJECTION, **params) -> None:
        super().__init__(**params)
        self.store = store
        self.projection = projection
        sources = api.parameter_sources(store.world)
        self.param.source_b.objects = list(sources)
        if self.source_b is None:
            self.source_b = store.state.source
        self._generation = 0
        self._follow = LatestFollower()  # one query loop at a time (runner.py)
        self.plot = pn.pane.HoloViews(None, linked_axes=True,
                                      css_classes=["proda-compare-plot"], visible=False)
        self.summary = pn.pane.Markdown("", css_classes=["proda-compare-totals"])
        self.param.watch(self._on_change, ["mode", "source_b", "follow", "pert_b"])
        store.param.watch(self._on_change, ["version"])
        self.param.watch(self._draw, ["result_b"])
        if self.mode != "off":  # a mode from a shared link: solve B now
            self._on_change()

    def pin(self) -> None:
        """Pin the current what-if (sliders and source) as B."""
        s = self.store.state
        self.param.update(source_b=s.source, pert_b=s.perturbation(), follow=False)

    def controls(self) -> pn.Column:
        sources = api.parameter_sources(self.store.world)
        pin = pn.widgets.Button(label="Pin current what-if as B", css_classes=["proda-compare-pin"])
        pin.on_click(lambda _e: self.pin())
        return pn.Column(
            pn.widgets.RadioButtonGroup.from_param(self.param.mode, options=MODES, css_classes=["proda-compare-mode"]),
            pn.widgets.Select.from_param(self.param.source_b, options={sources[k]: k for k in sources},
                                         css_classes=["proda-compare-source"]),
            pn.widgets.Checkbox.from_param(self.param.follow), pin, sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Column(self.controls(), self.summary, self.plot, sizing_mode="stretch_width")

    # -- B ------------------------------------------------------------------------------
    def b_request(self) -> tuple:
        s = self.store.state
        pert = s.perturbation() if self.follow else dict(self.pert_b)
        region = store_mod.resolve_region(s.region, self.store.world, self.store.polygons)
        return (self.source_b, tuple(sorted(pert.items())), s.depth, region)

    def compute_b(self, key: tuple):
        source, pert, depth, region = key
        with store_mod.ENGINE_LOCK:
            return api.what_if(dict(pert), region=region, depth=depth, source=source, world=self.store.world)

    def _on_change(self, *events) -> None:
        if self.mode == "off" or self.store.result is None:
            self.plot.visible = False
            self.summary.object = ""
            return
        self._generation += 1
        if not self.store.background:
            try:
                self.result_b = self.compute_b(self.b_request())
            except Exception as exc:
                self.store.fail(exc, "comparison B")
            return
        param.parameterized.async_executor(self._async)

    async def _async(self) -> None:
        await self._follow(self.store, "compare-b", lambda: self._generation, self.b_request, self.compute_b,
                           lambda _req, res: setattr(self, "result_b", res), "comparison B")

    # -- drawing ---------------------------------------------------------------------------
    def layers(self) -> tuple[MapLayer, MapLayer]:
        """(A, B) layers of the map variable (the SOC stock for variables B does not have), one scale."""
        s = self.store.state
        var = s.variable if s.variable in VARIABLES.values() else "soc_stock"
        a_da, b_da = self.store.result.maps[var], self.result_b.maps[var]
        clim = store_mod.color_limits(self.store.world, s.source, s.depth, var)
        a = make_layer(a_da, var, clim, "A: " + describe(s.source, s.perturbation()))
        b_pert = dict(self.b_request()[1])
        b = make_layer(b_da, var, clim, "B: " + describe(self.source_b, b_pert))
        return a, b

    def _map(self, layer: MapLayer, width: int = 620) -> hv.Overlay:
        """One projected map (fixed frame, basemap image on top; see :mod:`dashboard.views.geomap`)."""
        pmap = geo.pixel_map(self.projection, layer.lon, layer.lat)
        x0, y0, x1, y1 = pmap.bounds
        height = int(width * (y1 - y0) / max(x1 - x0, 1e-9))
        img = projected_image(layer, pmap).opts(
            cmap=layer.cmap, clim=layer.clim, colorbar=True, clipping_colors={"NaN": "transparent"},
            tools=["hover"], title=layer.title,
            hover_tooltips=[(f"{layer.label} ({layer.units})", "@image{0.000}"),
                            ("lon, lat", "@{lon}{0.00}°E, @{lat}{0.00}°N")])
        base = hv.RGB(geo.basemap_image(self.projection, (x0, x1, y0, y1), width, height), bounds=(x0, y0, x1, y1),
                      vdims=["R", "G", "B", "A"])
        return (img * base).opts(xaxis=None, yaxis=None, frame_width=width, frame_height=height, bgcolor=LAND,
                                 xlim=(x0, x1), ylim=(y0, y1), backend_opts={"plot.output_backend": output_backend()})

    def _draw(self, *events) -> None:
        if self.mode == "off" or self.result_b is None or self.store.result is None:
            return
        a, b = self.layers()
        ta, tb = self.store.result.totals["total_pg"], self.result_b.totals["total_pg"]
        s = self.store.state
        self.totals = (f"**A** {describe(s.source, s.perturbation())}: **{ta:,.0f} Pg C** · "
                       f"**B** {describe(self.source_b, dict(self.b_request()[1]))}: **{tb:,.0f} Pg C** · "
                       f"**A − B: {ta - tb:+,.1f} Pg C** ({100 * (ta - tb) / tb:+.1f} %) — "
                       f"{escape(variable_label(a.variable))}, {s.depth}, region {escape(s.region)}")
        self.summary.object = self.totals
        if self.mode == "side":
            fig = (self._map(a, 270) + self._map(b, 270)).opts(shared_axes=True)
        else:
            fig = self._map(difference_layer(a, b), 520)
        self.plot.object = fig
        self.plot.visible = True
