"""Sensitivity bars: the spec §(j) "+1 % bulk-process" effect of each mechanism on the regional SOC total
of the selected depth (Pg C), ± s.d. over the source's ensemble members: the numbers of
``proda sensitivity --region ... --depth ...``."""

from __future__ import annotations

import math

import holoviews as hv
import panel as pn
import param

from dashboard.store import ResultStore
from dashboard.views import output_backend
from proda_engine import api


def sensitivity_rows(sensitivity: dict | None, labels: dict[str, str]) -> list[tuple[str, float, str, float]]:
    """(label, +1 % effect, sign, s.d.) per mechanism; zero bars while computing or unavailable."""
    if not sensitivity:
        return [(f"{label} ({m})", 0.0, "pending", 0.0) for m, label in labels.items()]
    rows = []
    for m, v in sensitivity.items():
        sd = v.get("plus1pct_sd_pg", float("nan"))
        rows.append((f"{labels[m]} ({m})", v["plus1pct_pg"], "gain" if v["plus1pct_pg"] >= 0 else "loss",
                     sd if sd is not None and math.isfinite(sd) else 0.0))
    return rows


def sensitivity_title(sensitivity: dict | None, note: str, region: str, depth: str) -> str:
    if sensitivity is None:
        return "+1 % effects: computing (first time per source: 61 solves per member)"
    if not sensitivity:
        return "+1 % effects need unit-interval parameters (not a preset)" if note else "+1 % effects: none"
    # short enough for a half-width plot (Bokeh titles do not wrap): what and where; the axis says the rest
    return f"+1 % effects · {region}, {depth}"


#: The plotted quantity (hover and value axis)
EFFECT = hv.Dimension("effect", label="SOC change for +1 % of the bulk process", unit="Pg C")


def sensitivity_axis(sensitivity: dict | None) -> str:
    """The value axis: the quantity, its unit and, for an ensemble, what the error bars are."""
    label = EFFECT.pprint_label
    n = next(iter(sensitivity.values())).get("n_members", 1) if sensitivity else 1
    return f"{label}, ± s.d. of {n} members" if n > 1 else label


class SensitivityView(pn.viewable.Viewer):
    """Horizontal bars with error bars from ``store.sensitivity`` (once per region/depth/source, cached)."""

    store = param.ClassSelector(class_=ResultStore, constant=True, doc="The session's results.")

    def __init__(self, store: ResultStore, **params) -> None:
        super().__init__(store=store, **params)
        self.labels = api.mechanisms()
        # a DynamicMap of a bound function: HoloViews follows the store's parameters (a Params stream) and
        # updates the figure in place (its structure, bars + error bars, never changes)
        self.dmap = hv.DynamicMap(pn.bind(self._plot, store.param.sensitivity, store.param.sensitivity_note))
        self.pane = pn.pane.HoloViews(
            self.dmap.opts(hv.opts.Bars(backend_opts={"plot.output_backend": output_backend()})),
            sizing_mode="stretch_width", min_height=300, css_classes=["proda-sensitivity"], linked_axes=False,
        )

    def __panel__(self) -> pn.pane.HoloViews:
        return self.pane

    def _plot(self, sensitivity, sensitivity_note="") -> hv.Overlay:
        kdim = hv.Dimension("mechanism")
        vdim = EFFECT
        rows = sensitivity_rows(sensitivity, self.labels)
        result = self.store.result
        region = result.totals["region"] if result is not None else ""
        title = sensitivity_title(sensitivity, sensitivity_note, region, self.store.state.depth)
        bars = hv.Bars([r[:3] for r in rows], kdims=[kdim], vdims=[vdim, "sign"]).opts(
            invert_axes=True, framewise=True, responsive=True, min_height=300, title=title,
            color="sign", cmap={"gain": "#2c7fb8", "loss": "#d95f0e", "pending": "#bbbbbb"}, tools=["hover"],
            show_grid=True, show_legend=False, xlabel="", ylabel=sensitivity_axis(sensitivity),
        )
        errors = hv.ErrorBars([(r[0], r[1], r[3]) for r in rows], kdims=[kdim], vdims=[vdim, "sd"]).opts(
            invert_axes=True, color="#1f2328", line_width=1.5)
        return (bars * errors).opts(framewise=True, responsive=True, min_height=300, title=title,
                                    fontsize={"title": "10pt"})
