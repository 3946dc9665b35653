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

import panel as pn
import param

from dashboard.state import MECHANISMS, DashboardState
from dashboard.store import ResultStore
from dashboard.views.geomap import GeoMapView

DEMO_CSS = """
.proda-demo-caption { font-size: 1.9em; font-weight: 600; color: #1f2328; }
.proda-demo-text { font-size: 1.15em; color: #444c56; }
.proda-demo-number { font-size: 2.6em; font-weight: 700; color: #2f6f4f; line-height: 1.1; }
.proda-demo-number.down { color: #cf222e; }
.proda-demo-label { font-size: 1.0em; color: #57606a; text-transform: uppercase; letter-spacing: 0.04em; }
.proda-demo-note { font-size: 0.85em; color: #57606a; }
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


def parse_step(raw: str | None) -> int:
    """``step`` from a URL (1-based) -> 0-based index, clamped to the sequence; junk gives the first step."""
    try:
        n = int(str(raw).strip())
    except (TypeError, ValueError):
        return 0
    return min(max(n, 1), len(STEPS)) - 1


def big_numbers(totals: dict | None) -> tuple[str, str]:
    """(total, change) as large HTML numbers (Pg C)."""
    if not totals:
        return "–", "–"
    t, c, pct = totals["total_pg"], totals["change_pg"], totals["change_pct"]
    tone = "down" if c < 0 else ""
    pct_s = f" ({pct:+.1f} %)" if isinstance(pct, float) and math.isfinite(pct) else ""
    return (f"<div class='proda-demo-label'>total SOC</div><div class='proda-demo-number'>{t:,.0f} Pg C</div>",
            f"<div class='proda-demo-label'>change vs today</div>"
            f"<div class='proda-demo-number {tone}'>{c:+,.0f} Pg C{pct_s}</div>")


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
        self.main = pn.Column(self.map, sizing_mode="stretch_both")
        store.param.watch(self._numbers, ["result"])
        self.param.watch(self._apply, "step")
        if scenario is not None:
            scenario.param.watch(self._scenario_done, ["result", "running"])
        self._apply()
        self._numbers()

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
        side = pn.Column(self.total, self.change, self.extra, self.note, width=360)
        return pn.Column(header, pn.Row(self.main, side, sizing_mode="stretch_both"), sizing_mode="stretch_both",
                         css_classes=["proda-demo"], stylesheets=[DEMO_CSS])
