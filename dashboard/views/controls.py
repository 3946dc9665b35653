"""Sidebar widgets: pick (region, upload, depth, variable, source), what-if sliders, take-away downloads."""

from __future__ import annotations

import io

import panel as pn
import param

from dashboard.safe import escape
from dashboard.state import (
    EXTRA_VARIABLES,
    MECHANISMS,
    MISFIT_VARIABLE,
    PERTURBATION_BOUNDS,
    REFERENCE_DIFF_VARIABLE,
    REFERENCE_VARIABLE,
    SPREAD_VARIABLE,
    VARIABLES,
    DashboardState,
    parameter_variables,
)
from dashboard.store import (
    MAX_UPLOAD_BYTES,
    ResultStore,
    csv_bytes,
    has_ensemble,
    netcdf_bytes,
    observed_sites,
    png_bytes,
)
from dashboard.style import MUTED, ON_BACKGROUND
from dashboard.tweaks import StepSlider
from proda_engine import api


def variable_groups(world: str | None, source: str | None) -> dict[str, dict[str, str]]:
    """Options of the map-variable select, grouped; the spread only where ``source`` has an ensemble
    and the misfit only where the world has observed sites."""
    extra = {}
    if has_ensemble(world, source):
        extra[_label(SPREAD_VARIABLE)] = SPREAD_VARIABLE
    try:
        if len(observed_sites(world)[0]):
            extra[_label(MISFIT_VARIABLE)] = MISFIT_VARIABLE
    except Exception:  # a world without observations: no misfit layer
        pass
    groups = {"What if": dict(VARIABLES)}
    if extra:
        groups["Uncertainty and observations"] = extra
    # the shipped reference product (0-30, 0-100, 0-200 cm; the store says so for other depths)
    groups["Reference product"] = {_label(REFERENCE_VARIABLE): REFERENCE_VARIABLE,
                                   _label(REFERENCE_DIFF_VARIABLE): REFERENCE_DIFF_VARIABLE}
    groups["Parameters of the source (21)"] = parameter_variables()
    return groups


def _label(key: str) -> str:
    return next(label for label, k in EXTRA_VARIABLES.items() if k == key)


def realised_html(mech: str, result) -> str:
    """The line under a slider: the bulk change the engine realised in the region and the SOC response,
    e.g. "K̄ +10.0 % → SOC −4.1 %" (grey for a slider at 0: its process moved only as a side effect)."""
    if result is None:
        return ""
    sym = api.BULK_SYMBOL[mech]
    asked = float(result.perturbation.get(mech, 0.0))
    got = float(result.realised.get(mech, float("nan")))
    soc = float(result.totals.get("change_pct", float("nan")))
    moved = sum(1 for v in result.perturbation.values() if v)
    if asked:
        text = f"{sym} {100 * got:+.1f} % → SOC {soc:+.1f} %" + (" (all changes)" if moved > 1 else "")
        if abs(got - asked) > api.BULK_TOLERANCE or got != got:
            text += f" · limit reached, asked {100 * asked:+.0f} %"
        style = f"color:{ON_BACKGROUND}"
    elif got == got and abs(got) >= 5e-4:
        text, style = f"{sym} {100 * got:+.1f} % as a side effect", f"color:{MUTED}"
    else:
        text, style = f"{sym} unchanged", f"color:{MUTED}"
    return f'<div class="proda-realised" style="font-size:0.8em;{style}">{escape(text)}</div>'


class Controls(pn.viewable.Viewer):
    """Widgets bound to the state (``from_param``, ``link``) plus upload and download handling."""

    state = param.ClassSelector(class_=DashboardState, constant=True, doc="The session's selection.")
    store = param.ClassSelector(class_=ResultStore, constant=True, doc="The session's results.")

    def __init__(self, state: DashboardState, store: ResultStore, **params) -> None:
        super().__init__(state=state, store=store, **params)
        self.region = pn.widgets.Select.from_param(state.param.region, name="Region", sizing_mode="stretch_width")
        self.upload = pn.widgets.FileInput(accept=".json,.geojson", multiple=False, sizing_mode="stretch_width",
                                           description=f"GeoJSON polygon in lon/lat, at most "
                                                       f"{MAX_UPLOAD_BYTES // 2**20} MB")
        pn.bind(self._on_upload, self.upload.param.value, watch=True)
        self.depth = pn.widgets.Select.from_param(state.param.depth, name="Depth interval", sizing_mode="stretch_width")
        # a grouped select (what-if maps, uncertainty/observations, the 21 parameters): ``from_param``
        # cannot group options, so the widget writes the state through a link and follows it back only
        # to values it offers
        groups = variable_groups(store.world, state.source)
        self.variable = pn.widgets.Select(label="Map variable", groups=groups, sizing_mode="stretch_width",
                                          css_classes=["variable-select"])
        if self._offered(state.variable):
            self.variable.value = state.variable
        self.variable.link(state, value="variable")
        pn.bind(self._on_state_variable, state.param.variable, watch=True)
        # a bound watcher (precedence -1) runs before the store's (precedence 1): a source without an
        # ensemble is never asked for one
        pn.bind(self._on_source, state.param.source, watch=True)
        self.source = pn.widgets.Select.from_param(state.param.source, sizing_mode="stretch_width")
        self.sites = pn.widgets.Checkbox.from_param(state.param.sites, css_classes=["show-sites"])
        # throttled: one re-solve per release / key press, not one per pixel of a drag
        self.sliders = {
            m: StepSlider.from_param(state.param[m], throttled=True, start=PERTURBATION_BOUNDS[0],
                                               end=PERTURBATION_BOUNDS[1], step=1, sizing_mode="stretch_width",
                                               css_classes=[f"slider-{m}"])
            for m in MECHANISMS
        }
        #: under each slider: the change of its bulk process the engine realised in the region
        self.realised = {m: pn.pane.HTML(pn.bind(realised_html, m, store.param.result), css_classes=[f"realised-{m}"],
                                         margin=(0, 10, 4, 10), sizing_mode="stretch_width") for m in MECHANISMS}
        self.reset = pn.widgets.Button(label="Reset perturbations", icon="refresh",
                                       sizing_mode="stretch_width")
        # an action, not a value: the button's click count means nothing to the state
        self.reset.on_click(self._on_reset)
        # a reference: the spinner follows the store's busy flag
        self.busy = pn.indicators.LoadingSpinner(value=store.param.busy, size=20, width=24, height=24)

        self.download_nc = pn.widgets.FileDownload(callback=self._netcdf, filename="proda_whatif.nc",
                                                   label="Map (netCDF)", color="primary",
                                                   sizing_mode="stretch_width", css_classes=["download-nc"])
        self.download_png = pn.widgets.FileDownload(callback=self._png, filename="proda_whatif.png",
                                                    label="Map (PNG)", sizing_mode="stretch_width",
                                                    css_classes=["download-png"])
        self.download_csv = pn.widgets.FileDownload(callback=self._csv, filename="proda_totals.csv",
                                                    label="Totals (CSV)", sizing_mode="stretch_width",
                                                    css_classes=["download-csv"])

    def __panel__(self) -> pn.Column:
        return pn.Column(*self.panel(), sizing_mode="stretch_width")

    # -- callbacks --------------------------------------------------------------------------
    def _offered(self, key: str) -> bool:
        return any(key in opts.values() for opts in self.variable.groups.values())

    def _on_state_variable(self, variable: str) -> None:
        if self._offered(variable) and self.variable.value != variable:
            self.variable.value = variable

    def _on_source(self, source: str) -> None:
        """Offer the spread only for sources with an ensemble; leave it if the new source has none."""
        self.variable.groups = variable_groups(self.store.world, source)
        if not self._offered(self.state.variable):
            self.state.variable = "soc_stock"
        self.variable.value = self.state.variable

    def _on_reset(self, event: param.parameterized.Event) -> None:
        self.state.reset_perturbations()

    def _on_upload(self, value: bytes | None) -> None:
        if value:
            self.store.add_polygon(value, self.upload.filename)

    def _current(self):
        if self.store.result is None:
            raise ValueError("no result to download yet")
        return self.store.result

    def _download(self, make) -> io.BytesIO | None:
        # a failing download shows a message; the session stays alive
        try:
            return io.BytesIO(make())
        except Exception as exc:  # any failure becomes a message
            self.store.fail(exc, "download")
            return None

    def _netcdf(self) -> io.BytesIO | None:
        return self._download(lambda: netcdf_bytes(self._current(), self.store.uncertainty))

    def _png(self) -> io.BytesIO | None:
        from dashboard.store import coastline_paths

        return self._download(lambda: png_bytes(self._current(), self.state.variable, self.store.clim(),
                                                coastline_paths(self.store.world), layer=self.store.layer))

    def _csv(self) -> io.BytesIO | None:
        return self._download(lambda: csv_bytes(self._current(), self.store.uncertainty))

    # -- layout -----------------------------------------------------------------------------
    def panel(self) -> list:
        """Sidebar contents, top to bottom."""
        return [
            pn.pane.Markdown("### Pick", margin=(0, 10)),
            self.region,
            pn.pane.Markdown("Draw a box with the map's box-select tool, or upload a GeoJSON polygon:",
                             margin=(0, 10), styles={"font-size": "0.85em"}),
            self.upload,
            self.depth, self.variable, self.source, self.sites,
            pn.Row(pn.pane.Markdown("### What if", margin=(0, 10)), self.busy),
            pn.pane.Markdown("Each slider sets the relative change of its bulk process in the selected region "
                             "(spec §(j)); the line under it shows what the engine realised.",
                             margin=(0, 10), styles={"font-size": "0.8em", "color": MUTED}),
            # slider and its realised-change line in one column (a sidebar item is a document root; the
            # line inside it can be settled with the cards when the page is built)
            *(pn.Column(self.sliders[m], self.realised[m], sizing_mode="stretch_width", margin=0)
              for m in MECHANISMS),
            self.reset,
            pn.pane.Markdown("### Take away", margin=(0, 10)),
            self.download_nc, self.download_png, self.download_csv,
        ]
