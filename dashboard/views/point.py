"""Point query: what the tapped cell holds, with its uncertainty and the observations next to it.

A tap on the map (the store's ``tap``) asks ``api.point_query`` for the map variable at the nearest land
cell under the current what-if: value ± ensemble s.d. (where the source has an ensemble), the SOC
profile (what-if, baseline, ± s.d. band) and the observed profiles within :data:`RADIUS_KM` with their
horizons and misfit (model − observation). Charts use hvPlot on the returned pandas frames.

When served, the query runs through dashboard.runner (latest-only) after each applied result (a slider step
while a point is selected re-asks it; a newer step supersedes an older query).
"""

from __future__ import annotations

import html

import holoviews as hv
import hvplot.pandas  # noqa: F401  (registers .hvplot on DataFrames)
import numpy as np
import pandas as pd
import panel as pn
import param

from dashboard import store as store_mod
from dashboard.runner import LatestFollower
from dashboard.state import variable_label
from dashboard.store import ResultStore
from dashboard.views import output_backend
from proda_engine import api

#: Observed profiles within this great-circle distance (km) of the tapped cell are listed.
RADIUS_KM = 250.0

#: Variables the point query reads from a solve; others (parameters, extra layers) ask for the stock.
POINT_VARIABLES = ("soc_stock", "soc_change", "turnover", "cue")


def query_variable(variable: str) -> str:
    """The point query's variable for a map variable (the SOC stock for layers it cannot read)."""
    return variable if variable in POINT_VARIABLES else "soc_stock"


def summary_html(q) -> str:
    """The headline: value ± s.d. with units, where, and how many members (escaped)."""
    if q is None:
        return ("<div class='proda-point-summary'>Tap the map for a point's value ± s.d., profile and nearby "
                "sites.</div>")
    label = variable_label(q.variable)
    pm = f" ± {q.sd:.3g}" if np.isfinite(q.sd) else ""
    members = (f"± s.d. over {q.n_members} ensemble members" if np.isfinite(q.sd)
               else "no ensemble for this source: no ± s.d.")
    ns, ew = ("N" if q.lat >= 0 else "S"), ("E" if q.lon >= 0 else "W")
    n_sites = len(q.sites)
    sites = (f"{n_sites} observed profile(s) within {RADIUS_KM:.0f} km; mean misfit "
             f"{np.nanmean(q.sites['misfit_kg_m3']):+.3g} kg C m-3" if n_sites else
             f"no observed profiles within {RADIUS_KM:.0f} km")
    return (f"<div class='proda-point-summary'><div class='proda-point-value'>{html.escape(label)} "
            f"{html.escape(q.depth)}: <b>{q.value:.3g}{pm}</b> {html.escape(q.units)}</div>"
            f"<div class='proda-card-sub'>cell {abs(q.lat):.2f}°{ns}, {abs(q.lon):.2f}°{ew} · "
            f"{html.escape(members)} · {html.escape(sites)}</div></div>")


def profile_chart(q) -> hv.Overlay:
    """Profile (kg C m-3, depth down): what-if with ± s.d. band, baseline dashed, observed horizons."""
    if q is None:
        return hv.Overlay([hv.Curve([], "soc_kg_m3", "depth_m")]).opts(title="point profile: tap the map")
    p = q.profile.assign(soc=q.profile["soc_g_m3"] / 1000, base=q.profile["soc_baseline_g_m3"] / 1000,
                         lo=(q.profile["soc_g_m3"] - q.profile["soc_sd_g_m3"]) / 1000,
                         hi=(q.profile["soc_g_m3"] + q.profile["soc_sd_g_m3"]) / 1000)
    opts = dict(invert_yaxis=True, xlabel="SOC density (kg C m-3)", ylabel="depth (m)")
    layers = []
    if np.isfinite(p["lo"]).any():
        ok = np.isfinite(p["lo"]) & np.isfinite(p["hi"])
        xs = np.concatenate([p["lo"][ok], p["hi"][ok][::-1]])
        ys = np.concatenate([p["depth_m"][ok], p["depth_m"][ok][::-1]])
        layers.append(hv.Polygons([{"x": xs, "y": ys}], label="± s.d. (members)").opts(
            color="#1f77b4", alpha=0.25, line_alpha=0))
    layers.append(p.hvplot.line(x="soc", y="depth_m", label="baseline", color="#7f7f7f", line_dash="dashed",
                                **opts))
    layers.append(p.hvplot.line(x="soc", y="depth_m", label="what-if", color="#1f77b4", line_width=3, **opts))
    if len(q.horizons):
        h = q.horizons.assign(site=q.horizons["profile_id"].astype(str))
        layers.append(h.hvplot.scatter(x="observed_kg_m3", y="depth_m", by="site", size=40, marker="circle",
                                       hover_cols=["modelled_kg_m3"], legend=False, **opts))
    return hv.Overlay(layers).opts(
        title=f"profile at {q.lat:.2f}°, {q.lon:.2f}° and observed horizons within {RADIUS_KM:.0f} km",
        invert_yaxis=True, legend_position="bottom_right", responsive=True, min_height=300,
        backend_opts={"plot.output_backend": output_backend()})


def site_table(q) -> pd.DataFrame:
    """Nearby observed profiles, rounded for display."""
    if q is None or not len(q.sites):
        return pd.DataFrame(columns=["profile", "km", "horizons", "observed", "modelled", "misfit", "RMSE"])
    s = q.sites
    return pd.DataFrame({"profile": s["profile_id"].astype(str), "km": s["distance_km"].round(0),
                         "horizons": s["n_horizons"], "observed": s["observed_kg_m3"].round(2),
                         "modelled": s["modelled_kg_m3"].round(2), "misfit": s["misfit_kg_m3"].round(2),
                         "RMSE": s["rmse_kg_m3"].round(2)})


class PointView(pn.viewable.Viewer):
    """The point-query card: headline, profile chart and nearby-site table."""

    query = param.Parameter(default=None, doc="The last api.point_query answer (None before a tap).")
    active = param.Boolean(default=True, doc="On screen: keep the query current (off: no engine work).")

    def __init__(self, store: ResultStore, **params) -> None:
        super().__init__(**params)
        self.store = store
        self._generation = 0
        self._follow = LatestFollower()  # one query loop at a time (runner.py)
        self._done: tuple | None = None  # the key of the query on screen
        self.summary = pn.pane.HTML(summary_html(None), css_classes=["proda-point"], sizing_mode="stretch_width")
        self.chart = pn.pane.HoloViews(profile_chart(None), sizing_mode="stretch_width", min_height=300,
                                       css_classes=["proda-point-chart"], linked_axes=False)
        self.table = pn.pane.DataFrame(site_table(None), index=False, sizing_mode="stretch_width",
                                       css_classes=["proda-point-sites"])
        self.param.watch(self._show, "query")
        store.param.watch(self._on_change, ["tap", "version"])
        self.param.watch(self._on_change, "active")

    def __panel__(self):
        return pn.Column(self.summary, self.chart, self.table, sizing_mode="stretch_width")

    def _show(self, event) -> None:
        q = event.new
        self.summary.object = summary_html(q)
        self.chart.object = profile_chart(q)
        self.table.object = site_table(q)

    def _key(self) -> tuple | None:
        tap = self.store.tap
        if tap is None:
            return None
        s = self.store.state
        region = store_mod.resolve_region(s.region, self.store.world, self.store.polygons)
        return (tap, query_variable(s.variable), s.depth, s.source, tuple(sorted(s.perturbation().items())), region)

    def compute(self, key: tuple):
        (lon, lat), variable, depth, source, pert, region = key
        with store_mod.ENGINE_LOCK:
            return api.point_query(lat, lon, variable=variable, depth=depth, perturbation=dict(pert), source=source,
                                   world=self.store.world, region=region, radius_km=RADIUS_KM)

    def _on_change(self, *events) -> None:
        try:
            key = self._key()
        except Exception as exc:
            self.store.fail(exc, "point query")
            return
        if key is None or not self.active or (self.query is not None and key == self._done):
            return
        self._generation += 1
        if not self.store.background:
            try:
                self.query, self._done = self.compute(key), key
            except Exception as exc:
                self.store.fail(exc, "point query")
            return
        param.parameterized.async_executor(self._async)

    def _answer(self, key: tuple, query) -> None:
        self.query, self._done = query, key

    async def _async(self) -> None:
        await self._follow(self.store, "point-query", lambda: self._generation, self._key, self.compute,
                           self._answer, "point query")
