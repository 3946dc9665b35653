"""Demo mode: a full-screen map with large numbers and a short guided sequence, driven by the URL.

``?demo=1`` opens the page at step 1, ``?demo=1&step=3`` at step 3 (a presenter opens a step directly).
Each step of :data:`STEPS` sets the state (map variable, the six what-if sliders) or, for the warming
step, runs a climate scenario (``api.scenario`` through the session's :class:`ScenarioView`) and shows
its change map and summary instead of the steady-state map. "Next" and "Back" move through the steps
and write ``step`` back into the URL.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import ClassVar

import panel as pn
import param
from panel.reactive import ReactiveHTML

from dashboard.state import MECHANISMS, DashboardState
from dashboard.store import ResultStore
from dashboard.style import MUTED, ON_BACKGROUND, TEXT
from dashboard.views.geomap import GeoMapView
from dashboard.views.totals import plus_minus

DEMO_CSS = f"""
.proda-demo-caption {{ font-size: 1.9em; font-weight: 600; color: {ON_BACKGROUND}; }}
.proda-demo-text {{ font-size: 1.15em; color: {TEXT}; }}
.proda-demo-number {{ font-size: 2.6em; font-weight: 700; line-height: 1.1;
                      color: var(--success-text-color, #2f6f4f); }}
.proda-demo-number.down {{ color: var(--danger-text-color, #cf222e); }}
.proda-demo-label {{ font-size: 1.0em; color: {MUTED}; text-transform: uppercase; letter-spacing: 0.04em; }}
.proda-demo-note {{ font-size: 0.85em; color: {MUTED}; }}
"""
if DEMO_CSS not in pn.config.raw_css:  # the app's own CSS is global too (pn.extension(raw_css=...))
    pn.config.raw_css.append(DEMO_CSS)


@dataclass(frozen=True)
class Step:
    """One step of the guided sequence."""

    caption: str
    text: str
    variable: str = "soc_stock"
    perturbation: dict[str, int] = field(default_factory=dict)  # whole percent per mechanism
    scenario: dict | None = None  # ScenarioView parameters: warming (K), npp (%), horizon (yr)


STEPS: tuple[Step, ...] = (
    Step("Soil carbon today", "Steady-state SOC stock, 0–100 cm, with PRODA's spatially varying parameters."),
    Step("Microbial CUE +10 %", "Microbes keep more of what they eat: more carbon stays in the soil.",
         variable="soc_change", perturbation={"A": 10}),
    Step("Faster decomposition: K +10 %", "Every pool turns over 10 % faster: the soil loses carbon.",
         variable="soc_change", perturbation={"K": 10}),
    Step("More plant input: NPP +10 %", "Ten per cent more carbon input from plants.",
         variable="soc_change", perturbation={"NPP": 10}),
    Step("+2 K warming, 100 years", "A linear 2 K soil warming over a century (transient run, monthly steps, "
         "a lattice of cells).", variable="soc_change", scenario={"warming": 2.0, "npp": 0, "horizon": 100}),
)


class Viewport(ReactiveHTML):
    """The browser window's inner size (px), reported on load and (debounced) on resize.

    The projected map has a fixed frame (a responsive one lost its height on updates, see
    :mod:`dashboard.views.geomap`), so the demo page asks the browser how much room there is and sizes
    the map to it: on a presenter's large screen the map fills the page instead of its top half.
    A ReactiveHTML script, not an ES-module component: those are fetched from ``blob:`` URLs, which the
    served app's Content-Security-Policy (``connect-src 'self'``) refuses.
    """

    inner_width = param.Integer(default=0, bounds=(0, None), doc="window.innerWidth (px); 0 until reported")
    inner_height = param.Integer(default=0, bounds=(0, None), doc="window.innerHeight (px); 0 until reported")

    _template = '<div id="viewport" class="proda-viewport"></div>'

    _scripts: ClassVar[dict[str, str]] = {
        "render": """
          state.report = () => {
            data.inner_width = Math.round(window.innerWidth);
            data.inner_height = Math.round(window.innerHeight);
          };
          state.onResize = () => { clearTimeout(state.timer); state.timer = setTimeout(state.report, 250); };
          window.addEventListener("resize", state.onResize);
          state.report();
        """,
        "remove": 'window.removeEventListener("resize", state.onResize);',
    }


#: Room the demo page keeps around the map (px): the header rows above, the numbers beside (a column) or
#: below (a row), and margins.
#: The map's figure is its frame plus the colour bar and the toolbar (~150 px wide together).
DEMO_HEADER_PX, DEMO_SIDE_PX, DEMO_BELOW_PX, DEMO_MARGIN_PX = 140, 560, 200, 200
#: The map's frame never gets smaller than this (px), whatever the window reports.
DEMO_MIN_HEIGHT, DEMO_MIN_WIDTH = 320, 560


def _frame(max_width: int, max_height: int, aspect: float) -> tuple[int, int]:
    """The frame (width, height) of a map of ``aspect`` (width / height) inside the box."""
    width = min(max_width, int(max_height * aspect))
    return width, int(width / aspect)


def demo_layout(inner_width: int, inner_height: int, aspect: float) -> tuple[str, int, int]:
    """Where the big numbers go and the map's box for a window of the given inner size (px).

    Returns ``(arrangement, max_width, max_height)``: ``"beside"`` (numbers in a column right of the map)
    or ``"below"`` (numbers in a row under it), whichever gives the map the larger frame: a wide
    Equal Earth globe (aspect ~2) on a tall screen grows by taking the full width and putting the
    numbers underneath, instead of leaving the lower half of the page empty.
    """
    usable_h = inner_height - DEMO_HEADER_PX
    boxes = {
        "beside": (max(DEMO_MIN_WIDTH, inner_width - DEMO_SIDE_PX), max(DEMO_MIN_HEIGHT, usable_h)),
        "below": (max(DEMO_MIN_WIDTH, inner_width - DEMO_MARGIN_PX), max(DEMO_MIN_HEIGHT, usable_h - DEMO_BELOW_PX)),
    }
    area = {k: (lambda f: f[0] * f[1])(_frame(*box, aspect)) for k, box in boxes.items()}
    best = max(boxes, key=lambda k: (area[k], k == "beside"))  # a tie keeps the numbers beside
    return (best, *boxes[best])


def parse_step(raw: str | None) -> int:
    """``step`` from a URL (1-based) -> 0-based index, clamped to the sequence; junk gives the first step."""
    try:
        n = int(str(raw).strip())
    except (TypeError, ValueError):
        return 0
    return min(max(n, 1), len(STEPS)) - 1


def big_numbers(totals: dict | None) -> tuple[str, str]:
    """(total, change) as large HTML numbers (Pg C), formatted as the dashboard's cards format them
    (:func:`dashboard.views.totals.plus_minus`): the same total reads as the same number on both pages."""
    if not totals:
        return "–", "–"
    t, c, pct = totals["total_pg"], totals["change_pg"], totals["change_pct"]
    tone = "down" if c < 0 else ""
    pct_s = f" ({plus_minus(pct, None, sign=True)} %)" if isinstance(pct, float) and math.isfinite(pct) else ""
    return (f"<div class='proda-demo-label'>total SOC</div>"
            f"<div class='proda-demo-number'>{plus_minus(t, None)} Pg C</div>",
            f"<div class='proda-demo-label'>change vs today</div>"
            f"<div class='proda-demo-number {tone}'>{plus_minus(c, None, sign=True)} Pg C{pct_s}</div>")


class DemoView(pn.viewable.Viewer):
    """The demo page of one session (state, store and scenario belong to the session's app)."""

    step = param.Integer(default=0, bounds=(0, len(STEPS) - 1))

    def __init__(self, state: DashboardState, store: ResultStore, scenario=None, projection: str = "equal_earth",
                 **params) -> None:
        super().__init__(**params)
        self.state, self.store, self.scenario = state, store, scenario
        self.map = GeoMapView(store, projection=projection, max_height=700, max_width=1000)
        self.caption = pn.pane.HTML("", css_classes=["proda-demo-caption"])
        self.text = pn.pane.HTML("", css_classes=["proda-demo-text"])
        self.total = pn.pane.HTML("", css_classes=["proda-demo-total"])
        self.change = pn.pane.HTML("", css_classes=["proda-demo-change"])
        self.note = pn.pane.HTML("", css_classes=["proda-demo-note"])
        self.back = pn.widgets.Button(label="◀ Back", width=110, css_classes=["proda-demo-back"])
        self.next = pn.widgets.Button(label="Next ▶", color="primary", width=110, css_classes=["proda-demo-next"])
        self.back.on_click(lambda _e: self.go(self.step - 1))
        self.next.on_click(lambda _e: self.go(self.step + 1))
        self.counter = pn.pane.HTML("", css_classes=["proda-demo-counter"])
        self.extra = pn.Column(sizing_mode="stretch_width")  # the scenario's summary in the warming step
        self.main = pn.Column(self.map, sizing_mode=None)  # as wide as the map: the flex box wraps the numbers
        self.viewport = Viewport(width=0, height=0, margin=0)
        self.arrangement = "beside"
        self.side = pn.Column(self.total, self.change, self.extra, self.note, width=360,
                              css_classes=["proda-demo-numbers"])
        self.body = pn.FlexBox(self.main, self.side, flex_wrap="wrap", align_content="flex-start",
                               sizing_mode="stretch_width")
        self.viewport.param.watch(self._fit, ["inner_width", "inner_height"])
        store.param.watch(self._numbers, ["result"])
        self.param.watch(self._apply, "step")
        if scenario is not None:
            scenario.param.watch(self._scenario_done, ["result", "running"])
        self._apply()
        self._numbers()

    def _fit(self, *events) -> None:
        """Size the map's frame to the window the browser reported (one re-render, not per step)."""
        vp = self.viewport
        if vp.inner_width and vp.inner_height:
            arrangement, width, height = demo_layout(vp.inner_width, vp.inner_height, self._map_aspect())
            self.map.param.update(max_width=width, max_height=height)
            self._arrange(arrangement)

    def _map_aspect(self) -> float:
        """Width / height of the map's frame (the projection's shape)."""
        width, height = self.map.frame_size()
        return width / max(height, 1)

    def _arrange(self, arrangement: str) -> None:
        """Record where the numbers go; the browser places them: the map and the numbers sit in a
        wrapping flex box, so a map sized for "below" leaves no room beside it and the numbers wrap under
        it. (Moving the panes between two layouts from Python left them drawn at the old place.)"""
        self.arrangement = arrangement

    def go(self, step: int) -> None:
        self.step = min(max(step, 0), len(STEPS) - 1)

    def _apply(self, *events) -> None:
        s = STEPS[self.step]
        self.caption.object = html.escape(s.caption)
        self.text.object = html.escape(s.text)
        self.counter.object = f"step {self.step + 1} / {len(STEPS)}"
        self.back.disabled, self.next.disabled = self.step == 0, self.step == len(STEPS) - 1
        values = {m: s.perturbation.get(m, 0) for m in MECHANISMS}
        self.state.param.update(variable=s.variable, **values)
        if s.scenario is not None and self.scenario is not None:
            self.scenario.param.update(**s.scenario, compare=False)
            self.main[:] = [self.scenario.map]
            self.extra[:] = [self.scenario.summary]
            self.total.object = self.change.object = ""
            self.note.object = "running the scenario…"
            self.scenario.run()
        else:
            self.main[:] = [self.map]
            self.extra[:] = []
            self._numbers()

    def _numbers(self, *events) -> None:
        if STEPS[self.step].scenario is not None:
            return
        res = self.store.result
        self.total.object, self.change.object = big_numbers(res.totals if res is not None else None)
        note = res.totals.get("note", "") if res is not None else ""
        self.note.object = html.escape(str(note))

    def _scenario_done(self, *events) -> None:
        if STEPS[self.step].scenario is None or self.scenario is None:
            return
        if self.scenario.running:
            self.note.object = "running the scenario…"
            return
        self.note.object = html.escape(self.scenario.message) if self.scenario.message else ""

    def __panel__(self):
        header = pn.Row(pn.Column(self.caption, self.text, sizing_mode="stretch_width"),
                        pn.Row(self.back, self.counter, self.next), sizing_mode="stretch_width")
        return pn.Column(self.viewport, header, self.body, sizing_mode="stretch_both",
                         css_classes=["proda-demo"], stylesheets=[DEMO_CSS])
