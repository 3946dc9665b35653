"""The lon/lat map: current variable as a plain ``hv.Image`` + coastlines + selection outlines.

Why a plain ``hv.Image`` on lon/lat axes (equivalent to PlateCarree) and no Datashader: at 0.5° the
whole globe is 720x360 cells, which rasterize would ship unchanged anyway, and without it zoom and
pan stay in the browser instead of costing a server round trip (see the ecosystem guide, §3.4).
Values are sent as float32 (half the bytes of the engine's float64; the map needs no more).

Colour limits are fixed per (source, depth, variable) from the baseline (``store.color_limits``),
so a slider move changes colours, never the scale.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn

from dashboard.state import BOX_PREFIX, parse_box_key
from dashboard.store import ResultStore, coastline_paths, observed_sites, world_extent
from dashboard.views import output_backend

#: Tallest the map gets (px): keeps small, square worlds from filling several screens.
MAX_HEIGHT = 600

#: Colour map per variable (Bokeh/colorcet names HoloViews understands).
CMAPS: dict[str, str] = {"soc_stock": "viridis", "soc_change": "RdBu", "turnover": "plasma", "cue": "cividis"}


def _colorbar_title_hook(title: str):
    """HoloViews creates the colour bar once; this hook (run on every frame) keeps its title current."""

    def hook(plot, element) -> None:
        cbar = plot.handles.get("colorbar")
        if cbar is not None and cbar.title != title:
            cbar.title = title

    return hook


class MapView:
    """Builds the map DynamicMap and wires taps and box selections back into the store."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self.extent = world_extent(store.world)
        lon0, lon1, lat0, lat1 = self.extent
        self.aspect = float(np.clip((lon1 - lon0) / max(lat1 - lat0, 1e-6), 1.0, 2.6))

        self.image = hv.DynamicMap(self._image, streams=[hv.streams.Params(store, ["result"]),
                                                         hv.streams.Params(store.state, ["variable"])])
        coast = hv.Path([p for p in coastline_paths(store.world)], kdims=["lon", "lat"]).opts(
            color="#222222", line_width=0.7, alpha=0.8)
        outline = hv.DynamicMap(self._outline, streams=[hv.streams.Params(store, ["result"])])
        marker = hv.DynamicMap(self._marker, streams=[hv.streams.Params(store, ["profile"])])
        sites = hv.DynamicMap(self._sites, streams=[hv.streams.Params(store.state, ["sites"])])

        # linked streams: coordinates arrive in lon/lat (the image's axes)
        self.tap_stream = hv.streams.Tap(source=self.image, x=None, y=None)
        self.tap_stream.add_subscriber(lambda x, y: store.set_tap(x, y))
        self.bounds_stream = hv.streams.BoundsXY(source=self.image, bounds=None)
        self.bounds_stream.add_subscriber(self._on_bounds)

        self.overlay = (self.image * coast * sites * outline * marker).opts(
            hv.opts.Overlay(xlim=(lon0, lon1), ylim=(lat0, lat1), responsive=True, aspect=self.aspect,
                            min_height=260, max_height=MAX_HEIGHT,
                            backend_opts={"plot.output_backend": output_backend()}),
        )
        # cap the width too: with a fixed aspect, the width is what decides the height
        self.pane = pn.pane.HoloViews(self.overlay, sizing_mode="stretch_width", min_height=260,
                                      max_width=int(MAX_HEIGHT * self.aspect) + 160,
                                      css_classes=["proda-map"], linked_axes=False)

    # -- stream callbacks -----------------------------------------------------------------
    def _on_bounds(self, bounds: tuple[float, float, float, float] | None) -> None:
        if bounds is None:
            return
        lon_min, lat_min, lon_max, lat_max = bounds
        self.store.select_box(lon_min, lat_min, lon_max, lat_max)

    # -- elements -------------------------------------------------------------------------
    def _image(self, result, variable: str) -> hv.Image:
        store = self.store
        label = store.variable_label(variable)
        if result is None:
            lon0, lon1, lat0, lat1 = self.extent
            return hv.Image(np.full((2, 2), np.nan, dtype=np.float32), bounds=(lon0, lat0, lon1, lat1),
                            kdims=["lon", "lat"], vdims=[variable])
        da = result.maps[variable]
        units = da.attrs.get("units", "")
        vdim = hv.Dimension(variable, label=label, unit=units)
        img = hv.Image((da["lon"].values, da["lat"].values, np.asarray(da.values, dtype=np.float32)),
                       kdims=[hv.Dimension("lon", label="longitude", unit="°E"),
                              hv.Dimension("lat", label="latitude", unit="°N")], vdims=[vdim])
        depth = result.totals.get("depth", "")
        depth_txt = f", {depth}" if variable in ("soc_stock", "soc_change") else ""
        title = f"{label}{depth_txt} ({units})"
        return img.opts(
            cmap=CMAPS.get(variable, "viridis"), clim=store.clim(variable), colorbar=True,
            clipping_colors={"NaN": "transparent"}, title=title, bgcolor="#e3ebf3",
            tools=["hover", "tap", "box_select"], active_tools=["wheel_zoom"],
            hooks=[_colorbar_title_hook(f"{label} ({units})")],
        )

    def _outline(self, result) -> hv.Path:
        """Outline of a drawn box region (an empty path otherwise)."""
        key = self.store.state.region
        data = []
        if key.startswith(BOX_PREFIX):
            try:
                lon0, lon1, lat0, lat1 = parse_box_key(key)
                data = [np.array([[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]])]
            except ValueError:
                data = []
        return hv.Path(data, kdims=["lon", "lat"]).opts(color="#d62728", line_width=2, line_dash="dashed")

    def _sites(self, sites: bool) -> hv.Points:
        """Observed profile locations (when the toggle is on), coloured by observed topsoil SOC."""
        data = []
        if sites:
            try:
                lon, lat, soc = observed_sites(self.store.world)
                data = np.column_stack([lon, lat, soc])
            except Exception as exc:  # a world without observations: say so, keep the map
                self.store.fail(exc, "observed sites")
        return hv.Points(data, kdims=["lon", "lat"], vdims=[hv.Dimension("soc", label="observed topsoil SOC",
                                                                          unit="kg C m-3")]).opts(
            color="#111111", size=2.5, alpha=0.55, tools=["hover"])

    def _marker(self, profile) -> hv.Points:
        """Cross on the land cell whose profile is shown (the nearest one to the tap)."""
        pts = [(profile.attrs["lon"], profile.attrs["lat"])] if profile is not None else []
        return hv.Points(pts, kdims=["lon", "lat"]).opts(color="#d62728", marker="x", size=14, line_width=3)
