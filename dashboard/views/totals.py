"""Cards with the regional totals of the selected depth interval: SOC stock, change vs baseline, turnover
(mean and median over cells as the spec defines them, the area-weighted mean beside them), CUE (the same
statistics), and, where the source has an ensemble, the members' baseline total; every card shows
± s.d. over the ensemble members once they are solved (``store.uncertainty``). A line above the cards
says which world and data the numbers come from.

Each card is its own pane with its own CSS class, its object bound to the store (no shared panes).
"""

from __future__ import annotations

import math

import panel as pn
import param

from dashboard.safe import escape
from dashboard.store import ResultStore, provenance
from proda_engine import api

CARDS: tuple[str, ...] = ("total", "change", "turnover-mean", "turnover-median", "cue")


def _fmt(value: float, spec: str) -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def _decimals(value: float, sd: float | None, most: int) -> int:
    """Decimals that show one significant digit of the s.d. (three of the value without one), at most
    ``most``."""
    ref, digits = (sd, 0) if sd is not None and math.isfinite(sd) and sd > 0 else (abs(value), 2)
    if not math.isfinite(ref) or ref == 0:
        return min(2, most)
    return int(min(most, max(0, digits - math.floor(math.log10(ref)))))


def plus_minus(value: float, sd: float | None, sign: bool = False, most: int = 2) -> str:
    """``value ± sd`` with decimals from the s.d. (:func:`_decimals`), or the value alone without one."""
    if value is None or not math.isfinite(value):
        return "–"
    dec = _decimals(value, sd, most)
    text = format(value, f"{'+' if sign else ''},.{dec}f")
    return text if sd is None or not math.isfinite(sd) else f"{text} ± {format(sd, f',.{dec}f')}"


def card_html(title: str, value: str, sub: str = "", tone: str = "") -> str:
    """One card (HTML styled by the app's stylesheet); every text, e.g. an uploaded polygon's name in
    ``sub``, goes through :func:`dashboard.safe.escape`."""
    tone = tone if tone in ("up", "down") else ""
    return (f'<div class="proda-card {tone}"><div class="proda-card-title">{escape(title)}</div>'
            f'<div class="proda-card-value">{escape(value)}</div>'
            f'<div class="proda-card-sub">{escape(sub)}</div></div>')


def card_contents(totals: dict | None, uncertainty: dict | None = None) -> dict[str, str]:
    """HTML per card for a totals dict (``WhatIfResult.totals``) and, when solved, the ensemble's
    ``api.ensemble_what_if`` (its s.d. goes next to each value; "± …" while the members are solved)."""
    if totals is None:
        return {k: card_html(k, "–") for k in CARDS}
    u = uncertainty or {}

    def sd(name: str) -> float | None:
        return u.get(f"{name}_sd")

    change = totals["change_pg"]
    tone = "up" if change > 0 else "down" if change < 0 else ""
    depth = totals["depth"]
    region = f"{totals['region']}, {depth}"
    members = f" · ± s.d. over {u['n_members']} members" if u else ""
    return {
        "total": card_html("Total SOC", f"{plus_minus(totals['total_pg'], sd('total_pg'))} Pg C",
                           f"{region} · baseline {plus_minus(totals['baseline_pg'], None)}{members}"),
        "change": card_html("Change vs baseline", f"{plus_minus(change, sd('change_pg'), sign=True)} Pg C",
                            f"{plus_minus(totals['change_pct'], sd('change_pct'), sign=True)} %"
                            + (f" · {totals['n_cells_dropped']:,} cells left the plausible range (excluded)"
                               if totals.get("n_cells_dropped") else ""), tone),
        "turnover-mean": card_html(f"Mean turnover {depth}",
                                   f"{plus_minus(totals['turnover_mean_yr'], sd('turnover_mean_yr'), most=1)} yr",
                                   f"area-weighted {_fmt(totals['turnover_area_mean_yr'], ',.0f')} yr · "
                                   f"{totals['n_cells']:,} cells · {_fmt(totals['area_mkm2'], ',.2f')} M km²"),
        "turnover-median": card_html(f"Median turnover {depth}",
                                     f"{plus_minus(totals['turnover_median_yr'], sd('turnover_median_yr'), most=1)} yr",
                                     "stock / input, unweighted over cells (spec)"),
        "cue": card_html(f"Mean CUE {depth}", plus_minus(totals["cue_mean"], sd("cue_mean"), most=3),
                         f"median {_fmt(totals['cue_median'], '.3f')} · area-weighted "
                         f"{_fmt(totals['cue_area_mean'], '.3f')}"),
    }


def ensemble_card(ensemble: dict | None, depth: str = "") -> str:
    """The ensemble card: unperturbed regional total over the members, mean ± s.d. (Pg C)."""
    if not ensemble:
        return card_html("Ensemble baseline", "–")
    sd = ensemble["sd_pg"]
    # two significant digits of the s.d. decide the decimals of both numbers
    dec = max(0, 1 - math.floor(math.log10(sd))) if sd and math.isfinite(sd) and sd > 0 else 1
    value = f"{_fmt(ensemble['mean_pg'], f',.{dec}f')} ± {_fmt(sd, f',.{dec}f')} Pg C"
    return card_html("Ensemble baseline", value,
                     f"{ensemble['n_members']} members (mean ± s.d.){', ' + depth if depth else ''}")


def provenance_html(info: dict[str, str]) -> str:
    """The line above the cards: which world and data the numbers come from."""
    kind = "synthetic twin world" if info.get("world_kind") == "builtin" else "catalog world"
    return (f'<div class="proda-provenance"><b>Numbers from</b> {escape(kind)} '
            f'<b>{escape(info.get("world", ""))}</b> · {escape(info.get("source_label", ""))}: '
            f'{escape(info.get("note", ""))}</div>')


def card_for(key: str, result: api.WhatIfResult | None, uncertainty: dict | None) -> str:
    """HTML of one card (``key`` in :data:`CARDS`) for the store's result and ensemble uncertainty."""
    return card_contents(result.totals if result is not None else None, uncertainty)[key]


class TotalsView(pn.viewable.Viewer):
    """A provenance line and a row of cards following ``store.result`` and ``store.uncertainty``.

    Every pane's object is a reference (``pn.bind`` on the store's parameters): param recomputes it when
    they change and only an object that really differs reaches the browser.
    """

    store = param.ClassSelector(class_=ResultStore, constant=True, doc="The session's results.")

    def __init__(self, store: ResultStore, **params) -> None:
        super().__init__(store=store, **params)
        result, unc = store.param.result, store.param.uncertainty
        self.cards = {k: pn.pane.HTML(pn.bind(card_for, k, result, unc), css_classes=[f"card-{k}"],
                                      sizing_mode="stretch_width", margin=(4, 6), min_width=150)
                      for k in CARDS}
        self.ensemble = pn.pane.HTML(pn.bind(self._ensemble_html, store.param.ensemble), css_classes=["card-ensemble"],
                                     sizing_mode="stretch_width", margin=(4, 6), min_width=150,
                                     visible=pn.bind(bool, store.param.ensemble))
        self.provenance = pn.pane.HTML(pn.bind(self._provenance_html, result), css_classes=["proda-source-note"],
                                       sizing_mode="stretch_width", margin=(0, 6))
        # a Row shares the width evenly between the cards
        self.row = pn.Row(*self.cards.values(), self.ensemble, sizing_mode="stretch_width", css_classes=["proda-cards"])
        self.pane = pn.Column(self.provenance, self.row, sizing_mode="stretch_width")

    def __panel__(self) -> pn.Column:
        return self.pane

    def _ensemble_html(self, ensemble: dict | None) -> str:
        # the depth of the moment the ensemble arrived (the store replaces the ensemble on a new depth)
        return ensemble_card(ensemble, self.store.state.depth) if ensemble else ""

    def _provenance_html(self, result: api.WhatIfResult | None) -> str:
        return provenance_html(provenance(self.store.world, result.totals["source"])) if result is not None else ""
