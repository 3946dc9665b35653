"""Sensitivity bars: the +1 % effect of each mechanism on the regional SOC total (Pg C)."""

from __future__ import annotations

import holoviews as hv
import panel as pn

from dashboard.store import ResultStore
from dashboard.views import output_backend
from proda_engine import api


class SensitivityView:
    """Horizontal bars from ``store.sensitivity`` (computed once per region/depth/source and cached)."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self.labels = api.mechanisms()
        self.dmap = hv.DynamicMap(self._plot, streams=[hv.streams.Params(store, ["sensitivity"])])
        self.pane = pn.pane.HoloViews(
            self.dmap.opts(hv.opts.Bars(backend_opts={"plot.output_backend": output_backend()})),
            sizing_mode="stretch_width", min_height=300, css_classes=["proda-sensitivity"], linked_axes=False,
        )

    def _plot(self, sensitivity) -> hv.Bars:
        kdim = hv.Dimension("mechanism")
        vdim = hv.Dimension("effect", label="SOC change for +1 %", unit="Pg C")
        if sensitivity is None:
            # zero bars rather than an empty element: the categorical axis must exist from the first
            # frame, or Bokeh cannot switch a numeric axis to factors later
            rows = [(f"{label} ({m})", 0.0, "pending") for m, label in self.labels.items()]
            title = "sensitivity: computing…"
        else:
            rows = [(f"{self.labels[m]} ({m})", v["plus1pct_pg"], "gain" if v["plus1pct_pg"] >= 0 else "loss")
                    for m, v in sensitivity.items()]
            st = self.store.state
            title = f"+1 % per mechanism — {st.depth}"
        return hv.Bars(rows, kdims=[kdim], vdims=[vdim, "sign"]).opts(
            invert_axes=True, framewise=True, responsive=True, min_height=300, title=title,
            color="sign", cmap={"gain": "#2c7fb8", "loss": "#d95f0e", "pending": "#bbbbbb"}, tools=["hover"],
            show_grid=True, show_legend=False,
            xlabel="", ylabel="SOC change for +1 % (Pg C)",
        )
