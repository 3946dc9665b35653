"""Cards with the regional totals: SOC stock, change vs baseline, turnover (mean, median), CUE, and,
where the source has an ensemble, the members' baseline total as mean ± s.d. (hidden otherwise).

Each card is its own pane with its own CSS class, written by one watcher only (no shared panes).
"""

from __future__ import annotations

import math

import panel as pn
import param

from dashboard.safe import escape
from dashboard.store import ResultStore

CARDS: tuple[str, ...] = ("total", "change", "turnover-mean", "turnover-median", "cue")


def _fmt(value: float, spec: str) -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def card_html(title: str, value: str, sub: str = "", tone: str = "") -> str:
    """One card (HTML styled by the app's stylesheet); every text, e.g. an uploaded polygon's name in
    ``sub``, goes through :func:`dashboard.safe.escape`."""
    tone = tone if tone in ("up", "down") else ""
    return (f'<div class="proda-card {tone}"><div class="proda-card-title">{escape(title)}</div>'
            f'<div class="proda-card-value">{escape(value)}</div>'
            f'<div class="proda-card-sub">{escape(sub)}</div></div>')


def card_contents(totals: dict | None) -> dict[str, str]:
    """HTML per card for a totals dict (``WhatIfResult.totals``)."""
    if totals is None:
        return {k: card_html(k, "–") for k in CARDS}
    change = totals["change_pg"]
    tone = "up" if change > 0 else "down" if change < 0 else ""
    region = f"{totals['region']}, {totals['depth']}"
    return {
        "total": card_html("Total SOC", f"{_fmt(totals['total_pg'], ',.2f')} Pg C",
                           f"{region} · baseline {_fmt(totals['baseline_pg'], ',.2f')}"),
        "change": card_html("Change vs baseline", f"{_fmt(change, '+,.3f')} Pg C",
                            f"{_fmt(totals['change_pct'], '+.2f')} %", tone),
        "turnover-mean": card_html("Mean turnover", f"{_fmt(totals['turnover_mean_yr'], ',.0f')} yr",
                                   f"{totals['n_cells']:,} cells · {_fmt(totals['area_mkm2'], ',.2f')} M km²"),
        "turnover-median": card_html("Median turnover", f"{_fmt(totals['turnover_median_yr'], ',.0f')} yr",
                                     "bulk SOC / input"),
        "cue": card_html("Mean CUE", _fmt(totals["cue_mean"], ".3f"), "microbial carbon use efficiency"),
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


class TotalsView:
    """A row of five cards following ``store.result``."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self.cards = {k: pn.pane.HTML("", css_classes=[f"card-{k}"], sizing_mode="stretch_width", margin=(4, 6),
                                      min_width=150)
                      for k in CARDS}
        self.ensemble = pn.pane.HTML("", css_classes=["card-ensemble"], sizing_mode="stretch_width", margin=(4, 6),
                                     min_width=150, visible=False)
        # a Row shares the width evenly between the cards
        self.pane = pn.Row(*self.cards.values(), self.ensemble, sizing_mode="stretch_width",
                           css_classes=["proda-cards"])
        store.param.watch(self._update, ["result"])
        store.param.watch(self._update_ensemble, ["ensemble"])
        self._update()
        self._update_ensemble()

    def _update_ensemble(self, *events: param.parameterized.Event) -> None:
        ens = self.store.ensemble
        if ens:
            self.ensemble.object = ensemble_card(ens, self.store.state.depth)
        self.ensemble.visible = bool(ens)

    def _update(self, *events: param.parameterized.Event) -> None:
        result = self.store.result
        for k, text in card_contents(result.totals if result is not None else None).items():
            self.cards[k].object = text
