"""The PRODA what-if dashboard: ``create_app()`` builds one session's app; ``serve()`` runs the server.

Launch::

    panel serve dashboard/app.py --address 127.0.0.1 --port 5006      # or
    python -m dashboard.app                                           # same, via serve()
    PRODA_WORLD=tiny panel serve dashboard/app.py                     # the 10x10 test world

Everything per session (state, store, views) is built by :func:`build_app`; what sessions share
(the engine, named regions, colour limits, sensitivities) lives in per-process caches.
"""

from __future__ import annotations

import gc
import logging
import os

import panel as pn
import param
from panel.io.state import set_curdoc

from dashboard import store as store_mod
from dashboard.state import BOX_PREFIX, URL_PARAMS, DashboardState, box_label
from dashboard.store import ResultStore
from dashboard.views.controls import Controls
from dashboard.views.map import MapView
from dashboard.views.profile import ProfileView
from dashboard.views.scatter import ScatterView
from dashboard.views.scenario import ScenarioView
from dashboard.views.sensitivity import SensitivityView
from dashboard.views.totals import TotalsView
from proda_engine import api

log = logging.getLogger(__name__)

TITLE = "PRODA — global soil carbon"

CSS = """
.proda-card { border-radius: 8px; padding: 8px 12px; background: #f6f8fa; border: 1px solid #d0d7de;
              min-width: 150px; }
.proda-card-title { font-size: 0.8em; color: #57606a; text-transform: uppercase; letter-spacing: 0.03em; }
.proda-card-value { font-size: 1.45em; font-weight: 600; color: #1f2328; white-space: nowrap; }
.proda-card-sub { font-size: 0.8em; color: #57606a; }
.proda-card.up .proda-card-value { color: #1a7f37; }
.proda-card.down .proda-card-value { color: #cf222e; }
"""


def _exception_handler(exc: BaseException) -> None:
    """Last line of defence for any callback: log and tell the user, keep the session alive."""
    log.warning("dashboard callback failed: %s", exc, exc_info=exc)
    if pn.state.notifications is not None:
        pn.state.notifications.error(f"Something went wrong: {exc}", duration=8000)


pn.extension(notifications=True, raw_css=[CSS], exception_handler=_exception_handler, sizing_mode="stretch_width")


def warm(world: str | None = None) -> None:
    """Build/load the world and precompute what the first page needs (baseline, colour limits,
    named regions, coastlines, the default sensitivity), so the first session shows quickly."""
    state = DashboardState(world=world)
    store_mod.named_regions(world)
    store_mod.world_extent(world)
    store_mod.coastline_polyline(world)
    for variable in ("soc_stock", "soc_change", "turnover", "cue"):
        store_mod.color_limits(world, state.source, state.depth, variable)
    if store_mod.has_ensemble(world, state.source):  # solves every member once: do it before any session
        store_mod.ensemble_spread(world, state.source, state.depth)
    region = store_mod.resolve_region(state.region, world)
    store_mod.sensitivity(world, region, state.depth, state.source)
    # compile (or load from numba's cache) the transient kernels, so a first scenario run does not wait
    api.scenario(world, warming=1.0, years=1, source=state.source, coarsen=None, max_cells=200,
                 map_years=(), equilibrium=False)
    try:  # the variable select asks whether the world has observed sites (parsed once, then cached)
        store_mod.observed_sites(world)
    except Exception as exc:  # a world without observations still serves
        log.info("no observed sites for the dashboard: %s", exc)
    # one throwaway session document: the first real session no longer pays the process's one-time
    # plotting costs (HoloViews/Bokeh first renders), which made it ~2 s slower than the next ones
    from bokeh.document import Document

    build_app(world).template.server_doc(Document())
    # everything loaded so far (world, caches, modules: ~600,000 objects) lives as long as the server;
    # out of the collector's sight, a full collection no longer walks it (~300 ms pauses every few
    # sessions or slider steps before, measured)
    gc.collect()
    gc.freeze()


class DashboardTemplate(pn.template.FastListTemplate):
    """FastListTemplate that attaches its ~30 roots to a session document in one go.

    Bokeh re-walks the document's whole model graph (~420 models) after every ``add_root`` unless the
    document's model set is frozen; the template adds each sidebar and main item as its own root, so a
    new session paid ~30 full walks (about half of the server's page build, profiled). Inside one
    ``freeze()`` the walk happens once, when the last root is in.
    """

    #: Panes whose model is re-rendered on every slider step (the cards); see :meth:`_settle`.
    live_panes = param.List(default=[], doc="Panes updated on every step, settled when the page is built.")

    def _init_doc(self, doc=None, comm=None, title=None, notebook=False, location=True):
        target = doc if doc is not None else pn.state.curdoc
        if target is None:
            return super()._init_doc(doc, comm, title, notebook, location)
        with target.models.freeze():
            out = super()._init_doc(target, comm, title, notebook, location)
        # models know their document only once the frozen set is recomputed; the settle needs it
        with target.models.freeze(), set_curdoc(target):
            self._settle()
        return out

    def _settle(self) -> None:
        """Re-apply each live pane's properties once while the page is still being built.

        Panel's first update of an HTML pane after the template rendered it adds the theme's
        stylesheet (an ``ImportedStyleSheet`` model): a new model reference, so Bokeh re-walked all
        ~420 models of the document once per card on the first slider step after a page load
        (~80-130 ms each, ~0.6 s for the step; profiled) and the browser re-applied the styles. Done
        here, before the page is sent and inside one frozen model set, it costs one walk (~80 ms).
        """
        for pane in self.live_panes:
            pane.param.trigger("object")


class DashboardApp(param.Parameterized):
    """One session: state -> store -> views -> template. Tests read ``state`` and ``store`` directly."""

    def __init__(self, world: str | None = None, sync_url: bool = True, **params) -> None:
        super().__init__(**params)
        self.world = world
        served = pn.state.curdoc is not None and pn.state.curdoc.session_context is not None
        self.state = DashboardState(world=world)
        if sync_url and served and pn.state.location is not None:
            # before the store exists, so a shared URL is applied without solving the defaults first
            pn.state.location.sync(self.state, URL_PARAMS)
        self._check_region()
        if self.state.region.startswith(BOX_PREFIX):  # a box from a shared URL: offer it in the list
            self.state.add_region_choice(self.state.region, box_label(self.state.region))
        self.store = ResultStore(self.state, world=world, background=served)
        self.controls = Controls(self.state, self.store)
        self.map = MapView(self.store)
        self.totals = TotalsView(self.store)
        self.profile = ProfileView(self.store)
        self.sensitivity = SensitivityView(self.store)
        self.scatter = ScatterView(self.store)
        self.scenario = ScenarioView(self.state, world=world, polygons=self.store.polygons, background=served)
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, css_classes=["proda-alert"])
        self.store.param.watch(self._on_message, "message")
        self.template = self._template()

    def _check_region(self) -> None:
        """A region from a URL that this session cannot resolve (malformed box, someone else's
        polygon) falls back to the globe with a message instead of an empty page."""
        try:
            store_mod.resolve_region(self.state.region, self.world)
        except ValueError as exc:
            self.state.region = "globe"
            self._startup_message = f"region from the URL ignored: {exc}"
        else:
            self._startup_message = ""

    def _on_tab(self, event: param.parameterized.Event) -> None:
        self.store.want_comparison = event.new == 1

    def _on_message(self, event: param.parameterized.Event) -> None:
        self.alert.object = event.new
        self.alert.visible = bool(event.new)
        if event.new and pn.state.notifications is not None:
            pn.state.notifications.error(event.new, duration=6000)

    def _template(self) -> pn.template.FastListTemplate:
        if self._startup_message:
            self.store.message = self._startup_message
        world = api.world_name() if self.world is None else self.world
        map_card = pn.Column(self.alert, self.map.pane, sizing_mode="stretch_width")
        # the scatter sits in a tab: its comparison is computed only while it is on screen (after the map)
        self.tabs = pn.Tabs(("Sensitivity", self.sensitivity.pane), ("Observed vs modelled", self.scatter.pane),
                            dynamic=True, sizing_mode="stretch_width", css_classes=["proda-tabs"])
        self.tabs.param.watch(self._on_tab, "active")
        charts_row = pn.Row(self.profile.pane, self.tabs, sizing_mode="stretch_width")
        # the scenario's summary, trajectory and change map get a full-width row of their own; it and the
        # chart row are built after the page has loaded (defer_load), so cards and map show first
        # (a plain function: a Parameterized's method would be re-run on every change of its parameters)
        scenario_panel = self.scenario.panel()
        scenario_row = pn.panel(lambda: scenario_panel, defer_load=True, sizing_mode="stretch_width")
        charts = pn.panel(lambda: charts_row, defer_load=True, sizing_mode="stretch_width")
        footer = pn.pane.Markdown(
            f"World **{world}** · perturbations are relative changes of each mechanism group; the engine "
            "re-solves every land cell's steady state (`proda_engine.api.what_if`). Tap the map for a "
            "profile; use the box-select tool to total a box.",
            styles={"font-size": "0.85em", "color": "#57606a"},
        )
        # busy_indicator=None: the sidebar's spinner follows the solve itself; the template's header
        # spinner follows every server callback and switched off 150-450 ms after the new map had
        # arrived (measured in the browser), so a finished step still looked busy
        return DashboardTemplate(
            title=TITLE, sidebar=[*self.controls.panel(), self.scenario.controls()],
            main=[self.totals.pane, map_card, charts, scenario_row, footer], busy_indicator=None,
            live_panes=[*self.totals.cards.values(), self.totals.ensemble],
            sidebar_width=330, accent_base_color="#2f6f4f", header_background="#2f6f4f", main_max_width="1500px",
        )


def build_app(world: str | None = None) -> DashboardApp:
    """A fresh app object for one session (tests keep a handle on it)."""
    return DashboardApp(world=world)


def create_app(world: str | None = None) -> pn.template.FastListTemplate:
    """The servable template of a fresh per-session app."""
    return build_app(world).template


def serve(port: int = 5006, address: str = "127.0.0.1", show: bool = False, world: str | None = None,
          **kwargs) -> None:
    """Warm the engine, then serve the dashboard (blocking). Binds to 127.0.0.1 unless told otherwise."""
    if world is not None:
        os.environ["PRODA_WORLD"] = world  # api.world_name() and the footer follow the served world
    warm(world)
    origins = kwargs.pop("websocket_origin", [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"])

    def session() -> pn.template.FastListTemplate:
        # a plain function (not functools.partial): pn.serve only calls FunctionType objects per session
        return create_app(world)

    pn.serve(session, port=port, address=address, show=show, title=TITLE, websocket_origin=origins, **kwargs)


if pn.state.served:
    # `panel serve dashboard/app.py`: the module runs once per session; warm() is cached after the first
    warm()
    create_app().servable(title=TITLE)

if __name__ == "__main__":
    serve()
