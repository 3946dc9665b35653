"""SOC profile of the tapped cell: baseline (dashed) and perturbed, depth downwards, with a ± s.d. band
over the ensemble members where the source has an ensemble."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from dashboard.store import ResultStore
from dashboard.views import output_backend

_SOC = hv.Dimension("soc", label="SOC density", unit="kg C m-3")
_DEPTH = hv.Dimension("depth", label="depth", unit="m")


def _curve(ds, label: str) -> hv.Curve:
    # engine units are g C m-3; kg C m-3 reads better next to stocks in kg C m-2
    soc = np.asarray(ds["soc"].values, dtype=float) / 1000.0
    return hv.Curve((soc, np.asarray(ds["depth"].values, dtype=float)), kdims=[_SOC], vdims=[_DEPTH], label=label)


class ProfileView(pn.viewable.Viewer):
    """The pane's object is a reference to :meth:`_figure` bound to the store's profile, baseline profile and
    uncertainty: the whole figure is replaced on a change, because the first frame ("tap the map", one
    empty curve) and a profile (two curves) differ in structure, which a DynamicMap cannot follow (its
    title and legend stayed those of the first frame)."""

    store = param.ClassSelector(class_=ResultStore, constant=True, doc="The session's results.")

    def __init__(self, store: ResultStore, **params) -> None:
        super().__init__(store=store, **params)
        figure = pn.bind(self._figure, store.param.profile, store.param.profile_baseline, store.param.uncertainty)
        self.pane = pn.pane.HoloViews(figure, sizing_mode="stretch_width", min_height=300,
                                      css_classes=["proda-profile"], linked_axes=False)

    def __panel__(self) -> pn.pane.HoloViews:
        return self.pane

    def _figure(self, profile, profile_baseline, uncertainty=None) -> hv.Overlay:
        # ``uncertainty`` is read by _plot from the store; it is an argument so a new one redraws
        return self._plot(profile, profile_baseline).opts(
            hv.opts.Overlay(framewise=True, responsive=True, min_height=300, legend_position="bottom_right",
                            backend_opts={"plot.output_backend": output_backend()}))

    def _plot(self, profile, profile_baseline) -> hv.Overlay:
        common = dict(framewise=True, invert_yaxis=True, tools=["hover"], show_grid=True)
        if profile is None:
            empty = hv.Curve([], kdims=[_SOC], vdims=[_DEPTH]).opts(**common)
            return hv.Overlay([empty]).opts(title="SOC profile: tap the map", framewise=True)
        title = f"SOC profile at {profile.attrs['lat']:.2f}°N, {profile.attrs['lon']:.2f}°E"
        layers = []
        if profile_baseline is not None:
            layers.append(_curve(profile_baseline, "baseline").opts(color="#7f7f7f", line_dash="dashed",
                                                                    line_width=2, **common))
        unc = self.store.uncertainty
        if unc is not None and unc.get("profile_sd") is not None:
            band = _band(unc["profile_mean"], unc["profile_sd"], unc["depth_m"])
            layers.insert(0, band.opts(color="#1f77b4", alpha=0.25, line_alpha=0, invert_yaxis=True))
            title += f" (± s.d. over {unc['n_members']} members)"
        layers.append(_curve(profile, "what-if").opts(color="#1f77b4", line_width=3, **common))
        return hv.Overlay(layers).opts(title=title, framewise=True)


def _band(mean, sd, depth) -> hv.Polygons:
    """The ± s.d. band of the members' what-if profile (kg C m-3) as one polygon, depth downwards."""
    mean, sd, depth = (np.asarray(a, dtype=float) for a in (mean, sd, depth))
    lo, hi = (mean - sd) / 1000.0, (mean + sd) / 1000.0
    ok = np.isfinite(lo) & np.isfinite(hi)
    xs = np.concatenate([lo[ok], hi[ok][::-1]])
    ys = np.concatenate([depth[ok], depth[ok][::-1]])
    return hv.Polygons([{"soc": xs, "depth": ys}], kdims=[_SOC, _DEPTH], label="± s.d. (members)")
