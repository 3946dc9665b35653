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
import ipaddress
import logging
import os
import threading
import time
import urllib.parse

import panel as pn
import param
from panel.theme import THEMES

from dashboard import store as store_mod
from dashboard.geostate import GEO_URL_PARAMS, GeoState
from dashboard.runner import RUNNER
from dashboard.safe import escape, ignored_notice, url_query
from dashboard.state import BOX_PREFIX, URL_PARAMS, DashboardState, box_label
from dashboard.store import ResultStore
from dashboard.style import CSS, MUTED, TABS_CSS
from dashboard.tweaks import DashboardTemplate, drop_location_sync, session_document, skip_mathjax_for_html_panes
from dashboard.views.compare import CompareView
from dashboard.views.controls import Controls
from dashboard.views.demo import STEPS as DEMO_STEPS
from dashboard.views.demo import DemoView
from dashboard.views.detail import DetailView
from dashboard.views.geomap import GeoMapView
from dashboard.views.map import MapView
from dashboard.views.point import PointView
from dashboard.views.profile import ProfileView
from dashboard.views.scatter import ScatterView
from dashboard.views.scenario import ScenarioView
from dashboard.views.sensitivity import SensitivityView
from dashboard.views.totals import TotalsView
from proda_engine import api

log = logging.getLogger(__name__)

TITLE = "PRODA — global soil carbon"


def _exception_handler(exc: BaseException) -> None:
    """Last line of defence for any callback: log and tell the user, keep the session alive."""
    log.warning("dashboard callback failed: %s", exc, exc_info=exc)
    if pn.state.notifications is not None:  # notifications render HTML: the text goes through escape()
        pn.state.notifications.error(escape(f"Something went wrong: {exc}"), duration=8000)


pn.extension(notifications=True, raw_css=[CSS], exception_handler=_exception_handler, sizing_mode="stretch_width")
skip_mathjax_for_html_panes()  # no LaTeX anywhere in the dashboard's text: not 1.8 MB of MathJax per page


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
    # the default sensitivity solves 61 steady states per member the first time (minutes on the globe,
    # then cached on disk): in its own thread, so the server starts and the bars follow when ready
    key = store_mod.sensitivity_job_key(world, region, state.depth, state.source)
    RUNNER.submit("warm", "sensitivity", store_mod.sensitivity, world, region, state.depth, state.source,
                  key=key, lane="slow").add_done_callback(_log_warm_sensitivity)
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
    tune_gc()


#: Young collections (gen 1) between two full ones; CPython's default is 10.
GC_FULL_EVERY = 100


def tune_gc(full_every: int = GC_FULL_EVERY) -> tuple[int, int, int]:
    """Fewer full (generation 2) collections in the server process; returns the previous thresholds.

    After :func:`gc.freeze` the collector's "long-lived" count is only what was made since (the open
    sessions, ~34,000 objects each), so its 25 %-growth rule let a full collection through about every
    second page build, 25-300 ms on the event loop that builds every session (measured: 5 full
    collections in 8 page loads, 827 ms of them; a page that caught one took 2.1-2.4 s instead of
    ~1.8 s). A full collection now waits for ``full_every`` generation-1 collections instead of 10
    (~700,000 net allocations instead of ~70,000): one in 11 page loads measured. Young generations and
    reference counting are as before, so garbage without cycles is freed at once and a closed
    session's cycles go at the next full collection."""
    before = gc.get_threshold()
    gc.set_threshold(before[0], before[1], int(full_every))
    return before


def _log_warm_sensitivity(fut) -> None:
    """Log how the warm-up's sensitivity ended (sessions waiting on the same job get its outcome too)."""
    exc = None if fut.cancelled() else fut.exception()
    if isinstance(exc, ValueError):  # a preset source: the bars say why
        log.info("no default sensitivity: %s", exc)
    elif exc is not None:  # the sessions retry and show the error
        log.warning("default sensitivity failed: %s", exc, exc_info=exc)


class DashboardApp(param.Parameterized):
    """One session: state -> store -> views -> template. Tests read ``state`` and ``store`` directly."""

    def __init__(self, world: str | None = None, sync_url: bool = True, **params) -> None:
        super().__init__(**params)
        self.world = world
        self._url_theme: str | None = None  # a checked ``?theme=`` (see _apply_url)
        doc = session_document()  # this session's document, never another thread's
        served = doc is not None
        self.state = DashboardState(world=world)
        self.geo, self.geomap = GeoState(store_mod.world_extent(world)), None  # projection, compare, demo
        notice = ""
        if sync_url and served:
            # before the store exists, so a shared URL is applied without solving the defaults first
            notice = self._apply_url()
        self._check_region()
        self._startup_message = notice or self._startup_message
        if self.state.region.startswith(BOX_PREFIX):  # a box from a shared URL: offer it in the list
            self.state.add_region_choice(self.state.region, box_label(self.state.region))
        self.store = ResultStore(self.state, world=world, background=served)
        if served:  # a closed tab frees its queued engine work (Bokeh destroys the session after it is unused)
            store = self.store
            doc.on_session_destroyed(lambda session_context: store.close())
        self.controls = Controls(self.state, self.store)
        self.detail = DetailView(self.store)  # 0.05° detail over the view, shared by both maps
        self.map = MapView(self.store, detail=self.detail)
        self.totals = TotalsView(self.store)
        self.profile = ProfileView(self.store)
        self.sensitivity = SensitivityView(self.store)
        self.scatter = ScatterView(self.store)
        self.point = PointView(self.store, active=False)
        self.compare = CompareView(self.store, mode=self.geo.compare, projection=self._compare_projection())
        self.geo.param.watch(self._on_geo, ["projection", "compare"])
        self.compare.param.watch(lambda e: setattr(self.geo, "compare", e.new), "mode")
        self.scenario = ScenarioView(self.state, world=world, polygons=self.store.polygons, background=served)
        # the alert is a Markdown pane (it renders HTML): _on_message gives it escaped text only
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, css_classes=["proda-alert"])
        self.store.param.watch(self._on_message, "message")
        self.template = self._template()

    # -- the URL ---------------------------------------------------------------------------
    def _apply_url(self) -> str:
        """Read a shared link once, apply the values that pass :meth:`DashboardState.validate_query`,
        and from then on write the state into the URL. Returns the notice for ignored keys ("" if none).

        Not Panel's ``location.sync``: it parses the query with ``parse_query`` (``"?A=²"`` raised and
        failed the page with a 500, ``"[...]"`` became a Python object), applies everything or nothing in
        one ``param.update``, and ``region``/``variable`` accept any value (``check_on_set=False``), so an
        unknown region went straight into the store and, through the error message, into the page as HTML.
        """
        request = session_document().session_context.request
        parts = urllib.parse.urlsplit(getattr(request, "uri", None) or "")
        raw = url_query(parts.query)
        values, ignored = self.state.validate_query(raw)
        geo_values, geo_ignored = self.geo.validate_query(raw)
        self.geo.param.update(**geo_values)
        ignored += geo_ignored
        theme = raw.get("theme", "").strip("'\"")
        self._url_theme = theme if theme in THEMES else None
        if "theme" in raw and self._url_theme is None:
            ignored.append("theme")
        self.state.param.update(**values)
        if request is not None:
            # Panel builds the session's Location from the request's URI when it is first used and parses
            # the query itself: it only ever sees the checked values (the proxy keeps this attribute)
            request.uri = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(self._url_query())))
        loc = pn.state.location
        if loc is not None:
            # when the page connects, the browser reports its own (raw) search; Panel's watcher would parse
            # it for ``location.sync`` (unused here) and raise on values like "²": this session does not need it
            drop_location_sync(loc)
        self.state.param.watch(self._write_url, list(URL_PARAMS))
        self.geo.param.watch(self._write_url, list(GEO_URL_PARAMS))
        pn.state.onload(self._write_url)  # after that report: the URL shows the state's values again
        return ignored_notice(ignored) if ignored else ""

    def _url_query(self) -> dict[str, str]:
        query = {**self.state.url_query(), **self.geo.url_query()}
        if self._url_theme:
            query["theme"] = self._url_theme
        return query

    def _write_url(self, *events: param.parameterized.Event) -> None:
        """The state's values (only those) become the URL's query: a link shares what is on screen."""
        loc = pn.state.location
        if loc is None:
            return
        search = "?" + urllib.parse.urlencode(self._url_query())
        if loc.search != search:
            loc.search = search

    def _check_region(self) -> None:
        """A region this session cannot resolve (a box whose cells are all off the grid, ...) falls
        back to the globe with a message instead of an empty page."""
        try:
            store_mod.resolve_region(self.state.region, self.world)
        except ValueError as exc:
            self.state.region = "globe"
            self._startup_message = f"region ignored: {exc}"
        else:
            self._startup_message = ""

    def _on_tab(self, event: param.parameterized.Event) -> None:
        self.store.want_comparison = event.new == 1
        self.point.active = event.new == 2

    # -- the map: projection, compare, demo (dashboard.geostate) ------------------------------
    def _compare_projection(self) -> str:
        return self.geo.projection

    def _map_view(self) -> pn.viewable.Viewable:
        """The lon/lat map (MapView) for Plate Carrée, else the projected map (GeoMapView)."""
        if self.geo.projection == "plate_carree":
            return self.map.pane
        if self.geomap is None:
            self.geomap = GeoMapView(self.store, detail=self.detail, projection=self.geo.projection)
        self.geomap.projection = self.geo.projection
        return self.geomap.pane

    def _on_geo(self, event: param.parameterized.Event) -> None:
        if not hasattr(self, "map_slot"):  # the demo page has its own map
            return
        if event.name == "projection":
            self.map_slot[:] = [self._map_view()]
            self.compare.projection = self._compare_projection()
            self.compare._draw()
        else:
            self.compare.mode = event.new
            if event.new != "off":
                self.tabs.active = 3

    def _demo(self) -> pn.viewable.Viewable:
        """The full-screen demo page (``?demo=1&step=N``); the step follows the URL both ways."""
        projection = self.geo.projection if self.geo.projection != "plate_carree" else "equal_earth"
        demo = DemoView(self.state, self.store, self.scenario, projection=projection,
                        step=min(self.geo.step, len(DEMO_STEPS)) - 1)
        demo.param.watch(lambda e: setattr(self.geo, "step", e.new + 1), "step")
        self.demo = demo
        return pn.Column(demo, sizing_mode="stretch_both", css_classes=["proda-demo-page"])

    def _on_message(self, event: param.parameterized.Event) -> None:
        """The store's message (plain text, may carry file, region or variable names from outside)
        into the alert and a notification: both render HTML, so only :func:`escape`'s output goes in."""
        text = escape(event.new)
        self.alert.object = text
        self.alert.visible = bool(text)
        if text:
            self._notify(text)

    @staticmethod
    def _notify(text: str) -> None:
        """An error notification with escaped ``text``; one raised while the session is being built
        (e.g. the link's notice) waits for the page to load, or the browser never sees it."""
        if pn.state.notifications is None:
            return
        if session_document() is not None and not pn.state.loaded:
            pn.state.onload(lambda: pn.state.notifications.error(text, duration=8000))
        else:
            pn.state.notifications.error(text, duration=6000)

    def _profile_slot(self) -> pn.Column:
        """The profile chart's place: a line of text until the first tap, then the chart.

        Before a tap the chart was an empty figure saying "tap the map": a HoloViews render (~0.05 s of the
        server's event loop per new session, ~40 Bokeh models) for a sentence."""
        if self.store.profile is not None:
            return pn.Column(self.profile.pane, sizing_mode="stretch_width")
        hint = pn.pane.Markdown("**SOC profile**: tap the map for the profile of a cell (what-if and baseline).",
                                min_height=300, sizing_mode="stretch_width", css_classes=["proda-profile-hint"])
        slot = pn.Column(hint, sizing_mode="stretch_width")

        def show(event: param.parameterized.Event) -> None:
            if event.new is not None and slot.objects[0] is hint:
                slot[:] = [self.profile.pane]

        self.store.param.watch(show, "profile")
        return slot

    def _template(self) -> pn.template.BaseTemplate:
        if self._startup_message:
            self.store.message = self._startup_message
        world = api.world_name() if self.world is None else self.world
        if self.geo.demo:
            return self._demo()
        self.map_slot = pn.Column(self._map_view(), sizing_mode="stretch_width")
        projection = pn.widgets.Select.from_param(self.geo.param.projection, width=280,
                                                  css_classes=["proda-projection"])
        map_card = pn.Column(self.alert, projection, self.map_slot, self.detail.status_pane,
                             sizing_mode="stretch_width")
        # the scatter sits in a tab: its comparison is computed only while it is on screen (after the map)
        self.tabs = pn.Tabs(("Sensitivity", self.sensitivity.pane), ("Observed vs modelled", self.scatter.pane),
                            ("Point query", self.point), ("Compare", self.compare),
                            dynamic=True, sizing_mode="stretch_width", css_classes=["proda-tabs"],
                            stylesheets=[TABS_CSS])
        if self.geo.compare != "off":
            self.tabs.active = 3
        self.tabs.param.watch(self._on_tab, "active")
        self.profile_slot = self._profile_slot()
        charts_row = pn.Row(self.profile_slot, self.tabs, sizing_mode="stretch_width")
        # the scenario's summary, trajectory and change map get a full-width row of their own; it and the
        # chart row are built after the page has loaded (defer_load), so cards and map show first
        # (a plain function: a Parameterized's method would be re-run on every change of its parameters)
        scenario_panel = self.scenario.panel()
        scenario_row = pn.panel(lambda: scenario_panel, defer_load=True, sizing_mode="stretch_width")
        charts = pn.panel(lambda: charts_row, defer_load=True, sizing_mode="stretch_width")
        footer = pn.pane.Markdown(
            f"World **{escape(world)}** · each slider sets the relative change of a bulk process (spec §(j)) in the "
            "selected region; the engine finds the multiplier that realises it and re-solves every land cell's "
            "steady state (`proda_engine.api.what_if`). Totals: coarse-fragment corrected, full cell areas, one "
            "convention with `proda map`. Tap the map for a profile; use the box-select tool to total a box.",
            styles={"font-size": "0.85em", "color": MUTED},
        )
        # busy_indicator=None: the sidebar's spinner follows the solve itself; the template's header
        # spinner follows every server callback and switched off 150-450 ms after the new map had
        # arrived (measured in the browser), so a finished step still looked busy
        return DashboardTemplate(
            title=TITLE, sidebar=[*self.controls.panel(), self.scenario.controls()],
            main=[self.totals.pane, map_card, charts, scenario_row, footer], busy_indicator=None,
            live_panes=[*self.totals.cards.values(), self.totals.ensemble, self.totals.provenance,
                        *self.controls.realised.values()],
            sidebar_width=330, header_background="#2f6f4f", main_max_width="1500px",
            theme=self._url_theme or "default",
        )


def build_app(world: str | None = None) -> DashboardApp:
    """A fresh app object for one session (tests keep a handle on it)."""
    return DashboardApp(world=world)


def create_app(world: str | None = None) -> pn.template.BaseTemplate:
    """The servable template of a fresh per-session app."""
    return build_app(world).template


#: Content-Security-Policy of every response of :func:`serve` (see docs/dashboard.md, "Serving beyond
#: this machine"). Measured in Chromium against the served app:
#:
#: * ``script-src`` needs ``'unsafe-inline'`` (Bokeh's document bootstrap and Panel's template are inline
#:   scripts whose text changes per session, so no hash or nonce fits, plus inline event handlers) and
#:   ``'unsafe-eval'`` (BokehJS builds functions with ``new Function``): without either the page stays
#:   blank. ``blob:`` is Panel's ES-module shim (module code it creates itself). No other host may serve
#:   script, so an injected ``<script src=...>`` from elsewhere would not load.
#: * ``style-src`` needs ``'unsafe-inline'`` (thousands of inline styles); the template's font and icon
#:   style sheets come from Google Fonts and jsDelivr (style and font only, never script).
#: * everything else stays on this origin: images, fetches and the websocket (``connect-src 'self'``),
#:   no plugins, no ``<base>`` rewrites, no form posts elsewhere, no framing (clickjacking).
#:
#: So the policy does not replace escaping (:mod:`dashboard.safe`): it limits what injected markup
#: could load or send elsewhere.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:",
    "style-src 'self' 'unsafe-inline' https://fonts.googleapis.com https://cdn.jsdelivr.net",
    "font-src 'self' data: https://fonts.gstatic.com https://cdn.jsdelivr.net",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))

#: Headers added to every HTTP response of :func:`serve`.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def security_headers_transform():
    """A Tornado output transform (class) that adds :data:`SECURITY_HEADERS` to every response."""
    from tornado.web import OutputTransform

    class SecurityHeaders(OutputTransform):
        def transform_first_chunk(self, status_code, headers, chunk, finishing):
            for name, value in SECURITY_HEADERS.items():
                headers.setdefault(name, value)
            return status_code, headers, chunk

    return SecurityHeaders


def is_loopback(address: str) -> bool:
    """Whether binding to ``address`` keeps the server on this machine (``localhost``, 127.x, ::1)."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost
        return False


def websocket_origins(address: str, port: int, allowed: list[str] | None = None) -> list[str]:
    """The ``host[:port]`` values a page's ``Origin`` may have to open this server's websocket.

    Loopback: ``localhost:port`` and ``127.0.0.1:port`` (plus ``allowed``). A specific other address
    or host name: ``address:port`` unless ``allowed`` says otherwise. A wildcard bind (``0.0.0.0``,
    ``::``) cannot be guessed from (the browser reaches it by a name we do not know, often through a
    proxy): ``allowed`` is required. ``*`` (any site may drive a session) is refused.
    """
    allowed = [a.strip() for a in (allowed or []) if a and a.strip()]
    if "*" in allowed:
        raise ValueError("allow_websocket_origin '*' would let any web site open sessions; name the hosts")
    if is_loopback(address):
        return list(dict.fromkeys([f"localhost:{port}", f"127.0.0.1:{port}", *allowed]))
    if allowed:
        return allowed
    host = address.strip()
    if host in ("", "0.0.0.0", "::", "[::]"):
        raise ValueError(f"serving on all interfaces ({host or 'all'}) needs the host name(s) browsers use, e.g. "
                         "allow_websocket_origin=['soil.example.org'] (proda serve --allow-websocket-origin)")
    return [f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"]


def server_options(address: str = "127.0.0.1", port: int = 5006,
                   allow_websocket_origin: list[str] | None = None) -> dict:
    """Keyword arguments of ``pn.serve`` for a safe server: bind address and port, the websocket
    origins (:func:`websocket_origins`) and the security headers (:data:`SECURITY_HEADERS`)."""
    return dict(address=address, port=port, websocket_origin=websocket_origins(address, port, allow_websocket_origin),
                transforms=[security_headers_transform()])


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """In a forked server process: exit when the supervising parent has gone (tornado's supervisor does not
    pass its SIGTERM on, so the children of a stopped server kept serving)."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(0)


def served_settings() -> dict[str, object]:
    """Bokeh settings of the served dashboard (:func:`serve`); returns what was set.

    Bokeh validates every new session's document twice (when the application creates it and again when
    the page is embedded): developer checks (empty layouts, sizing hints) that walk all ~360 models,
    ~40 ms each time on this machine, on the one event loop that builds every session. The tests (which
    serve through ``pn.serve`` directly) keep them; the served app skips them unless ``BOKEH_VALIDATE_DOC``
    asks for them.
    """
    from bokeh.settings import settings

    if "BOKEH_VALIDATE_DOC" in os.environ:
        return {}
    settings.perform_document_validation.set_value(False)
    return {"perform_document_validation": False}


def serve(port: int = 5006, address: str = "127.0.0.1", show: bool = False, world: str | None = None,
          allow_websocket_origin: list[str] | None = None, num_procs: int = 1, **kwargs) -> None:
    """Warm the engine, then serve the dashboard (blocking). Binds to 127.0.0.1 unless told otherwise.

    On any other address the websocket origins are explicit (:func:`websocket_origins`; a wildcard
    bind needs ``allow_websocket_origin``), and every response carries :data:`SECURITY_HEADERS`.

    ``num_procs`` > 1 forks that many server processes sharing the port (Bokeh's ``num_procs``; each builds
    its sessions on its own event loop and core) and warms each one *after* the fork: numba's GNU OpenMP
    layer refuses to run in a child forked after the parent used it ("fork() called from a process already
    using GNU OpenMP, this is unsafe"), and the runner's worker threads do not exist in a child, so a
    warm-up before the fork left the children unable to solve. Each process holds its own engine and
    caches (no result is shared between processes).
    """
    legacy = kwargs.pop("websocket_origin", None)  # pn.serve's name for the same list
    options = server_options(address, port, allow_websocket_origin or legacy)
    served_settings()
    if world is not None:
        os.environ["PRODA_WORLD"] = world  # api.world_name() and the footer follow the served world
    if not is_loopback(address):
        log.warning("serving beyond this machine on %s:%s; websocket origins allowed: %s", address, port,
                    ", ".join(options["websocket_origin"]))

    def session() -> pn.template.BaseTemplate:
        # a plain function (not functools.partial): pn.serve only calls FunctionType objects per session
        return create_app(world)

    if num_procs == 1:
        warm(world)
        pn.serve(session, show=show, title=TITLE, **options, **kwargs)
        return
    # tornado forks in the server's constructor; the parent stays there supervising the children, and each
    # child continues here: warm it, then start serving (the port answers once its first child is warm)
    server = pn.serve(session, show=False, title=TITLE, start=False, num_procs=num_procs, **options, **kwargs)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True, name="proda-parent-watch").start()
    warm(world)
    server.start()
    server.io_loop.start()


if pn.state.served:
    # `panel serve dashboard/app.py`: the module runs once per session; warm() is cached after the first
    warm()
    create_app().servable(title=TITLE)

if __name__ == "__main__":
    serve()
