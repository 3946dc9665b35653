"""Observed vs modelled SOC at the observed sites of the current region (kg C m-3, log axes).

The model is each site's nearest land cell for the current source and perturbation, interpolated to
the observed horizon depths (PCHIP); the title carries the pooled Nash–Sutcliffe efficiency and RMSE.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from dashboard.store import ResultStore
from dashboard.views import output_backend

MAX_POINTS = 4000  # horizons drawn; enough to see the cloud, small enough to stay fast


class ScatterView(pn.viewable.Viewer):
    """Scatter of ``store.comparison`` with a 1:1 line."""

    store = param.ClassSelector(class_=ResultStore, constant=True, doc="The session's results.")

    def __init__(self, store: ResultStore, **params) -> None:
        super().__init__(store=store, **params)
        # a DynamicMap of a bound function: HoloViews follows the store's parameters (a Params stream) and
        # updates the figure in place (its structure, scatter + 1:1 line, never changes)
        self.dmap = hv.DynamicMap(pn.bind(self._plot, store.param.comparison))
        self.pane = pn.pane.HoloViews(
            self.dmap.opts(hv.opts.Scatter(backend_opts={"plot.output_backend": output_backend()})),
            sizing_mode="stretch_width", min_height=300, css_classes=["proda-scatter"], linked_axes=False)

    def __panel__(self) -> pn.pane.HoloViews:
        return self.pane

    def _plot(self, comparison) -> hv.Overlay:
        x = hv.Dimension("observed", label="observed SOC", unit="kg C m-3")
        y = hv.Dimension("modelled", label="modelled SOC", unit="kg C m-3")
        if comparison is None or len(comparison[0]) == 0:
            pts = np.empty((0, 2))
            title = "observed vs modelled: no sites in this region"
        else:
            rows, metrics = comparison
            pts = rows[["observed_kg_m3", "modelled_kg_m3"]].to_numpy(float)
            pts = pts[np.isfinite(pts).all(1) & (pts > 0).all(1)]
            if len(pts) > MAX_POINTS:
                pts = pts[np.random.default_rng(0).choice(len(pts), MAX_POINTS, replace=False)]
            e, rmse = metrics.get("e", np.nan), metrics.get("rmse", np.nan)
            title = f"observed vs modelled ({rows['profile_id'].nunique()} sites): E = {e:.2f}, RMSE = {rmse:.1f}"
        lo, hi = (float(pts.min()), float(pts.max())) if len(pts) else (0.1, 100.0)
        one = hv.Curve([(lo, lo), (hi, hi)], x, y).opts(color="#888888", line_dash="dashed")
        return (hv.Scatter(pts, x, y).opts(size=3, alpha=0.35, color="#2f6f4f", logx=True, logy=True)
                * one.opts(logx=True, logy=True)).opts(title=title, responsive=True, min_height=300, framewise=True)
