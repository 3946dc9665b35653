"""Climate-scenario panel: warming and NPP sliders, a horizon, and the transient answer for the region.

The sidebar card holds the controls and a "Run scenario" button (a 100-year monthly run is seconds,
not a slider-step's milliseconds, so it runs on demand, in a worker thread, with a progress bar).
The result tab shows the region's SOC change over time (one line per parameter source; optionally
PRODA against homogeneous parameters and default CLM5 — the seeds' experiment) and the map of the
change at the horizon. Everything goes through :func:`proda_engine.api.scenario`.
"""

from __future__ import annotations

import asyncio

import holoviews as hv
import numpy as np
import panel as pn
import param
import xarray as xr

from dashboard.safe import escape, plain
from dashboard.state import DashboardState
from dashboard.store import coastline_polyline, resolve_region, world_extent
from dashboard.views import output_backend
from proda_engine import api

#: At most this many cells per run (half when comparing three sources): the finest regular lattice
#: of the region that fits is used. ~20 s per source and 4,000 cells for a century on one thread.
MAX_CELLS = 4000

#: Parameter sources the comparison adds (when the world has them), after the selected one.
COMPARE_WITH = ("homogeneous_mean", "default_clm5")

SOURCE_LABELS = {"homogeneous_mean": "homogeneous (mean PRODA θ)", "default_clm5": "default CLM5"}

_COLORS = ("#2f6f4f", "#d95f0e", "#6a51a3", "#2c7fb8")


class ScenarioView(pn.viewable.Viewer):
    """One session's scenario controls and result (never shared between sessions)."""

    warming = param.Number(default=2.0, bounds=(0.0, 6.0), step=0.5, doc="soil warming at the horizon, K")
    amplified = param.Boolean(default=True, doc="polar amplification (x2 at the poles)")
    npp = param.Integer(default=10, bounds=(-30, 30), doc="carbon input change at the horizon, %")
    horizon = param.Integer(default=100, bounds=(10, 200), step=10, doc="years simulated (linear ramp)")
    compare = param.Boolean(default=False, doc="also homogeneous parameters and default CLM5")
    result = param.Parameter(default=None, doc="xr.Dataset of the last run")
    running = param.Boolean(default=False)
    progress = param.Integer(default=0, bounds=(0, 100))
    message = param.String(default="")

    def __init__(self, state: DashboardState, world: str | None = None, polygons: dict | None = None,
                 background: bool = False, **params) -> None:
        super().__init__(**params)
        self.state, self.world, self.polygons, self.background = state, world, polygons or {}, background
        self._frac = [0.0]
        # an action, not a value: a click starts a run (see run())
        self.button = pn.widgets.Button(label=pn.bind(_button_label, self.param.running), color="primary",
                                        icon="player-play", disabled=self.param.running,
                                        css_classes=["proda-run-scenario"])
        self.button.on_click(self._on_click)
        self.bar = pn.indicators.Progress(value=self.param.progress, max=100, visible=self.param.running,
                                          sizing_mode="stretch_width", height=12)
        self.status = pn.pane.Markdown("", css_classes=["proda-scenario-status"], styles={"font-size": "0.85em"})
        # whole figures are swapped on a new result (the number of curves changes with the sources,
        # which a DynamicMap overlay cannot follow)
        self.trajectory = pn.pane.HoloViews(pn.bind(self._curves, self.param.result), sizing_mode="stretch_width",
                                            min_height=300, css_classes=["proda-scenario-trajectory"],
                                            linked_axes=False)
        self.map = pn.pane.HoloViews(pn.bind(self._map, self.param.result), sizing_mode="stretch_width",
                                     min_height=300, css_classes=["proda-scenario-map"], linked_axes=False)
        self.summary = pn.pane.Markdown(self._summary_text, css_classes=["proda-scenario-summary"])

    def __panel__(self) -> pn.Column:
        return self.panel()

    # -- controls --------------------------------------------------------------------------
    def controls(self) -> pn.Card:
        w = pn.widgets
        widgets = [
            w.FloatSlider.from_param(self.param.warming, name="Soil warming (K)", css_classes=["proda-sc-warming"]),
            w.Checkbox.from_param(self.param.amplified, name="polar amplification"),
            w.IntSlider.from_param(self.param.npp, name="Carbon input (NPP) change (%)", css_classes=["proda-sc-npp"]),
            w.IntSlider.from_param(self.param.horizon, name="Horizon (years, linear ramp)",
                                   css_classes=["proda-sc-horizon"]),
            w.Checkbox.from_param(self.param.compare, name="compare: homogeneous parameters, default CLM5",
                                  css_classes=["proda-sc-compare"]),
            self.button, self.bar,
        ]
        return pn.Card(*widgets, title="Climate scenario", collapsed=False, sizing_mode="stretch_width",
                       css_classes=["proda-scenario-card"])

    def panel(self) -> pn.Column:
        """Main-area row: heading, summary, and (once a run has a result) trajectory chart and change map.

        The two charts join the row with the first result: before it they only said "press Run
        scenario", yet cost every new session two HoloViews renders (~0.12 s of the server's event loop,
        ~60 Bokeh models, a world-wide coastline and their drawing in the page; measured)."""
        charts = pn.Row(sizing_mode="stretch_width", css_classes=["proda-scenario-charts"])
        row = pn.Column(pn.pane.Markdown("### Climate scenario", margin=(0, 10)), self.summary, charts,
                        sizing_mode="stretch_width", css_classes=["proda-scenario"])
        if self.result is not None:
            charts[:] = [self.trajectory, self.map]
        else:
            def show(event: param.parameterized.Event) -> None:
                if event.new is not None and not len(charts):
                    charts[:] = [self.trajectory, self.map]

            self.param.watch(show, "result")
        return row

    # -- running -----------------------------------------------------------------------------
    def _sources(self) -> list[str]:
        sources = [self.state.source]
        if self.compare:
            avail = set(api.parameter_sources(self.world)) | {"homogeneous_mean"}
            sources += [s for s in COMPARE_WITH if s in avail and s not in sources]
        return sources

    def _call(self) -> xr.Dataset:
        region = resolve_region(self.state.region, self.world, self.polygons)
        return api.scenario(self.world, warming=self.warming, amplification=1.0 if self.amplified else 0.0,
                            npp=self.npp / 100.0, years=self.horizon, source=self._sources(), coarsen=None,
                            max_cells=MAX_CELLS // 2 if self.compare else MAX_CELLS, region=region, seasonal=False,
                            map_years=(self.horizon,), progress=self._on_progress)

    def _on_click(self, event: param.parameterized.Event) -> None:
        self.run()

    def _on_progress(self, frac: float) -> None:
        self._frac[0] = frac  # read by the event loop; never touch widgets from the worker thread

    def run(self) -> None:
        """Run the scenario for the current region and source (inline in tests, in a thread when served)."""
        if self.running:
            return
        if not self.background:
            self.param.update(running=True, message="", progress=0)
            try:
                self.result = self._call()
            except Exception as exc:  # a failed run is a message, not a dead session
                self.message = str(exc)
            finally:
                self.param.update(running=False, progress=100)
            return
        param.parameterized.async_executor(self._run_async)

    async def _run_async(self) -> None:
        self._frac[0] = 0.0
        self.param.update(running=True, message="", progress=0)
        try:
            # the run only reads the shared engine (forcing, parameter tables): no engine lock, so the
            # what-if sliders stay live while it runs
            task = asyncio.ensure_future(asyncio.to_thread(self._call))
            while not task.done():
                await asyncio.sleep(0.25)
                self.progress = round(100 * self._frac[0])
            self.result = task.result()
        except Exception as exc:
            self.message = str(exc)
        finally:
            self.param.update(running=False, progress=100)

    # -- display -----------------------------------------------------------------------------
    @param.depends("result", "running", "progress", "message")
    def _summary_text(self) -> str:
        # a Markdown pane: the error, the region's label (an uploaded file's name) and the source labels
        # come from outside and go in through escape()
        if self.message:
            return f"**Scenario failed:** {escape(self.message)}"
        if self.running:
            return f"Running the scenario… {self.progress} %"
        ds = self.result
        if ds is None:
            return ("Set warming, carbon input and horizon in the sidebar's **Climate scenario** card and press "
                    "**Run scenario**: every cell of the selected region (a regular lattice of at most "
                    f"{MAX_CELLS:,} cells) is stepped month by month from its steady state.")
        src = str(ds.source.values[0])
        d = float(ds.soc_change_global.sel(source=src).isel(year=-1))
        base = float(ds.soc_initial_global.sel(source=src))
        eq = float(ds.soc_change_equilibrium_global.sel(source=src))
        years = int(ds.year.values[-1])
        lines = [
            f"**{escape(ds.attrs.get('selection', 'region'))}**, {escape(_label(src))}: SOC (whole profile) "
            f"changes by **{d:+.3g} Pg C** ({100 * d / base:+.2f} %) after {years} years of "
            f"+{ds.attrs['scenario_warming']:.1f} K and {100 * ds.attrs['scenario_npp']:+.0f} % carbon input; "
            f"committed change at the new steady state {eq:+.3g} Pg C.",
        ]
        for s in ds.source.values[1:]:
            ds_ = float(ds.soc_change_global.sel(source=s).isel(year=-1))
            lines.append(f"{escape(_label(str(s)))}: {ds_:+.3g} Pg C.")
        c = int(ds.attrs["coarsen"])
        lattice = "every land cell" if c == 1 else f"1 cell in {c} in latitude and longitude, area-weighted"
        lines.append(f"<small>{int(ds.attrs['n_cells']):,} cells ({lattice}); annual-mean operators, "
                     "backward-Euler monthly steps from the steady state.</small>")
        return "  \n".join(lines)

    def _curves(self, result) -> hv.Overlay:
        vdim = hv.Dimension("change", label="SOC change", unit="Pg C")
        kdim = hv.Dimension("year", label="years from now")
        if result is None:
            curves = [hv.Curve([(0, 0.0)], kdim, vdim, label="no run yet")]
            title = "SOC change over time: press Run scenario"
        else:
            curves = []
            for i, s in enumerate(result.source.values):
                y = np.concatenate([[0.0], result.soc_change_global.sel(source=s).values])
                x = np.concatenate([[0], result.year.values])
                curves.append(hv.Curve((x, y), kdim, vdim, label=_label(str(s))).opts(color=_COLORS[i % 4]))
            title = f"SOC change — {plain(result.attrs.get('selection', ''), 80)}"  # drawn as text
        return hv.Overlay(curves).opts(
            hv.opts.Curve(responsive=True, min_height=300, line_width=2, tools=["hover"], show_grid=True,
                          yformatter="%.3g", framewise=True, backend_opts={"plot.output_backend": output_backend()}),
            hv.opts.Overlay(title=title, legend_position="bottom_left", responsive=True, min_height=300,
                            framewise=True),
        )

    def _map(self, result) -> hv.Overlay:
        lon0, lon1, lat0, lat1 = world_extent(self.world)
        coast = hv.Path([coastline_polyline(self.world)], kdims=["lon", "lat"]).opts(color="#444", line_width=0.6)
        if result is None:
            img = hv.Image(np.zeros((2, 2)), bounds=(lon0, lat0, lon1, lat1), kdims=["lon", "lat"])  # white on RdBu
            title = "SOC change map at the horizon"
            clim = (-1.0, 1.0)
        else:
            src = result.source.values[0]
            da = result.soc_change_map.sel(source=src).isel(map_year=-1)
            ok = np.isfinite(da.values)
            rows, cols = np.flatnonzero(ok.any(1)), np.flatnonzero(ok.any(0))
            da = da.isel(lat=slice(rows.min(), rows.max() + 1), lon=slice(cols.min(), cols.max() + 1))
            v = np.nanpercentile(np.abs(da.values), 98) if ok.any() else 1.0
            clim = (-float(v or 1.0), float(v or 1.0))
            vd = hv.Dimension("soc_change", label="SOC change", unit="kg C m-2")
            img = hv.Image((da.lon.values, da.lat.values, da.values), kdims=["lon", "lat"], vdims=[vd])
            title = f"SOC change after {int(result.map_year.values[-1])} years — {_label(str(src))}"
        return (img.opts(cmap="RdBu", clim=clim, colorbar=True, responsive=True, min_height=300, tools=["hover"],
                         clabel="SOC change (kg C m-2)", framewise=True,
                         backend_opts={"plot.output_backend": output_backend()})
                * coast).opts(title=title, responsive=True, min_height=300, framewise=True,
                              xlim=(lon0, lon1), ylim=(lat0, lat1))


def _button_label(running: bool) -> str:
    return "Running…" if running else "Run scenario"


def _label(source: str) -> str:
    """Display name of a parameter source (the API's labels, plus the comparison's own)."""
    return SOURCE_LABELS.get(source) or api.parameter_sources().get(source, source)
