"""The lon/lat map: the store's current :class:`~dashboard.store.MapLayer` + coastlines + overlays.

Rendering choices (measured; see docs/dashboard.md and the ecosystem guide §3.4):

* **Plain ``hv.Image`` at 0.5° and coarser, Datashader ``rasterize`` below** :data:`RASTERIZE_BELOW`
  degrees. At 0.5° the globe is 720x360 cells, which ``rasterize`` would ship unchanged (it does not
  upsample), and without it zoom and pan stay in the browser. A finer grid (e.g. a 1/12° world is
  37 MB as float32) is aggregated to the plot's pixel size on the server instead.
* **A slider step swaps only the image data.** When the new layer has the same signature (variable,
  grid, colour limits, title) as the one on screen, the view writes the new float32 array straight
  into each rendered plot's ``ColumnDataSource`` instead of re-running the DynamicMap: no HoloViews
  re-render, no colour-mapper or axis changes, and Bokeh sends just the new ``image`` column. Any
  other change (variable, depth, source, region outline) re-renders through the DynamicMap.
* Colour limits are fixed per (source, depth, variable) from the baseline (``store.color_limits``), so a
  slider move changes colours, never the scale.
* **Zoom for detail**: given a :class:`~dashboard.views.detail.DetailView`, the plot's view (``RangeXY``) is
  reported to it and its 0.05° answer is drawn above the image (:class:`~dashboard.views.detail.DetailLayer`).
"""

from __future__ import annotations

import weakref

import holoviews as hv
import numpy as np
import panel as pn
import param

from dashboard.state import BOX_PREFIX, parse_box_key
from dashboard.store import MapLayer, ResultStore, coastline_polyline, color_limits, observed_sites, world_extent
from dashboard.views import colorbar_hook, output_backend
from dashboard.views.detail import DetailLayer, DetailView, detail_image

#: Tallest the map gets (px): keeps small, square worlds from filling several screens.
MAX_HEIGHT = 600

#: Grids finer than this (degrees) are rasterized with Datashader; coarser ones ship as a plain image.
RASTERIZE_BELOW = 0.25

#: Diverging colours of the misfit points: model above observation is red.
MISFIT_CMAP = "RdBu_r"

_LON = hv.Dimension("lon", label="longitude", unit="°E")
_LAT = hv.Dimension("lat", label="latitude", unit="°N")


def use_rasterize(layer: MapLayer | None) -> bool:
    """Datashader only where it saves bytes: grids finer than :data:`RASTERIZE_BELOW` degrees."""
    return layer is not None and layer.resolution < RASTERIZE_BELOW


def layer_image(layer: MapLayer) -> hv.Image:
    """The bare ``hv.Image`` of a layer (no options): what the plot shows and what a data swap sends."""
    vdim = hv.Dimension(layer.variable.replace(":", "_"), label=layer.label, unit=layer.units)
    return hv.Image((layer.lon, layer.lat, layer.values), kdims=[_LON, _LAT], vdims=[vdim])


class _Frame(param.Parameterized):
    """Counter that re-renders the image DynamicMap (bumped only when a data swap is not enough)."""

    n = param.Integer(0)


class MapView:
    """Builds the map and wires taps and box selections back into the store."""

    def __init__(self, store: ResultStore, detail: DetailView | None = None) -> None:
        self.store = store
        self.detail = detail
        self.extent = world_extent(store.world)
        lon0, lon1, lat0, lat1 = self.extent
        self.aspect = float(np.clip((lon1 - lon0) / max(lat1 - lat0, 1e-6), 1.0, 2.6))
        self.rasterized = use_rasterize(store.layer)
        #: Bokeh data sources of the rendered image, one per document showing this view (weak: a
        #: closed session's document must not be kept alive by this list)
        self._sources: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._shown: tuple | None = None  # signature of the layer the plots were rendered with
        self.stats = {"renders": 0, "swaps": 0}
        self._frame = _Frame()

        self.image = hv.DynamicMap(self._image, streams=[hv.streams.Params(self._frame, ["n"])])
        shown = self.image
        if self.rasterized:
            from holoviews.operation.datashader import rasterize

            # precompute: the grid is indexed once per frame, not on every zoom
            shown = rasterize(self.image, precompute=True, aggregator="mean").opts(**self._image_opts())
        self.shown = shown
        coast = hv.Path([coastline_polyline(store.world)], kdims=["lon", "lat"]).opts(
            color="#222222", line_width=0.7, alpha=0.8)
        outline = hv.DynamicMap(self._outline, streams=[hv.streams.Params(store.state, ["region"])])
        marker = hv.DynamicMap(self._marker, streams=[hv.streams.Params(store, ["profile_cell"])])
        sites = hv.DynamicMap(self._sites, streams=[hv.streams.Params(store.state, ["sites"])])
        misfit = hv.DynamicMap(self._misfit, streams=[hv.streams.Params(store, ["misfit"])])

        # linked streams: coordinates arrive in lon/lat (the image's axes)
        self.tap_stream = hv.streams.Tap(source=shown, x=None, y=None)
        self.tap_stream.add_subscriber(lambda x, y: store.set_tap(x, y))
        self.bounds_stream = hv.streams.BoundsXY(source=shown, bounds=None)
        self.bounds_stream.add_subscriber(self._on_bounds)

        layers = shown
        if detail is not None:  # the 0.05° detail over the view (dashboard.views.detail), above the coarse image
            self.detail_layer = DetailLayer(detail, "data", lambda da: detail_image(da, [_LON, _LAT]), self._no_detail)
            layers = shown * self.detail_layer.dmap
            self.range_stream = hv.streams.RangeXY(source=shown)
            self.range_stream.add_subscriber(self._on_range)
        self.overlay = (layers * coast * sites * misfit * outline * marker).opts(
            hv.opts.Overlay(xlim=(lon0, lon1), ylim=(lat0, lat1), responsive=True, aspect=self.aspect,
                            min_height=260, max_height=MAX_HEIGHT,
                            backend_opts={"plot.output_backend": output_backend()}),
        )
        # cap the width too: with a fixed aspect, the width is what decides the height
        self.pane = pn.pane.HoloViews(self.overlay, sizing_mode="stretch_width", min_height=260,
                                      max_width=int(MAX_HEIGHT * self.aspect) + 160,
                                      css_classes=["proda-map"], linked_axes=False)
        store.param.watch(self._on_layer, "layer")

    # -- updates ----------------------------------------------------------------------------
    def _on_layer(self, event: param.parameterized.Event) -> None:
        layer = event.new
        if layer is None:
            return
        if not self.rasterized and layer.signature == self._shown and self.swap_data(layer):
            return
        self._frame.n += 1  # a different kind of map: re-render through HoloViews

    def swap_data(self, layer: MapLayer) -> bool:
        """Write the layer's values into every live rendered image; False if there is none."""
        live = [src for src in list(self._sources.values()) if src.document is not None]
        if not live:
            return False
        from panel.io.document import unlocked

        img = layer_image(layer).dimension_values(2, flat=False)  # Bokeh's row order, as HoloViews sends it
        if any("image" not in src.data for src in live):
            return False
        # unlocked(): when served this runs in a callback without the document lock; Panel then
        # dispatches the change to the session itself (as it does for its own model updates)
        with unlocked():
            for src in live:
                # a new dict: Bokeh sends the changed columns; x, y, dw, dh stay the same tiny lists
                src.data = {**src.data, "image": [img]}
        self.stats["swaps"] += 1
        return True

    def _capture_source(self, plot, element) -> None:
        """Hook: remember each rendered plot's image data source (one per session document)."""
        src = plot.handles.get("source")
        if src is not None:
            self._sources[id(src)] = src

    def _on_range(self, x_range, y_range) -> None:
        """The plot's view (lon/lat axes) -> the detail's view; the whole world when not zoomed."""
        if x_range is None or y_range is None or None in (*x_range, *y_range):
            self.detail.set_view(None)
            return
        self.detail.set_view((x_range[0], x_range[1], y_range[0], y_range[1]))

    def _no_detail(self) -> hv.Image:
        """The detail layer while hidden: 2 x 2 empty cells over the world."""
        lon0, lon1, lat0, lat1 = self.extent
        return hv.Image(np.full((2, 2), np.nan, dtype=np.float32), bounds=(lon0, lat0, lon1, lat1),
                        kdims=[_LON, _LAT], vdims=["detail"])

    def _on_bounds(self, bounds: tuple[float, float, float, float] | None) -> None:
        if bounds is None:
            return
        lon_min, lat_min, lon_max, lat_max = bounds
        self.store.select_box(lon_min, lat_min, lon_max, lat_max)

    # -- elements -------------------------------------------------------------------------
    def _image_opts(self, layer: MapLayer | None = None) -> dict:
        layer = layer or self.store.layer
        if layer is None:
            return {}
        colorbar_title = f"{layer.label} ({layer.units})"
        # colorbar=True always (it is created with the first frame only); the hook hides it when unused
        return dict(cmap=layer.cmap, clim=layer.clim, colorbar=True, clipping_colors={"NaN": "transparent"},
                    title=layer.title, bgcolor="#e3ebf3", tools=["hover", "tap", "box_select"],
                    active_tools=["wheel_zoom"], alpha=0.55 if not layer.colorbar else 1.0,
                    hooks=[colorbar_hook(colorbar_title, layer.colorbar), self._capture_source])

    def _image(self, n: int) -> hv.Image:
        layer = self.store.layer
        self.stats["renders"] += 1
        if layer is None:
            lon0, lon1, lat0, lat1 = self.extent
            return hv.Image(np.full((2, 2), np.nan, dtype=np.float32), bounds=(lon0, lat0, lon1, lat1),
                            kdims=[_LON, _LAT], vdims=["value"])
        self._shown = layer.signature
        img = layer_image(layer)
        # under rasterize the options go on the operation's output (set in __init__ and kept current by
        # re-rendering); on the plain image they go here
        return img if self.rasterized else img.opts(**self._image_opts(layer))

    def _outline(self, region: str) -> hv.Path:
        """Outline of a drawn box region (an empty path otherwise)."""
        data = []
        if region.startswith(BOX_PREFIX):
            try:
                lon0, lon1, lat0, lat1 = parse_box_key(region)
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

    def _misfit(self, misfit) -> hv.Points:
        """Model minus observation per site (mean over its horizons), diverging colours around zero."""
        vdims = [hv.Dimension("misfit_kg_m3", label="model − observation", unit="kg C m-3"),
                 hv.Dimension("n_horizons", label="horizons"),
                 hv.Dimension("observed_kg_m3", label="observed (mean)", unit="kg C m-3")]
        # the same options for every frame (the colour bar must exist from the first one); empty frames
        # hide it
        shown = misfit is not None and len(misfit) > 0
        if shown:
            s = self.store.state
            clim = color_limits(self.store.world, s.source, s.depth, "misfit")
            pts = hv.Points(misfit, kdims=["lon", "lat"], vdims=vdims)
        else:
            clim = (-1.0, 1.0)
            pts = hv.Points(np.empty((0, 5)), kdims=["lon", "lat"], vdims=vdims)
        return pts.opts(color="misfit_kg_m3", cmap=MISFIT_CMAP, clim=clim, colorbar=True, size=6,
                        line_color="#333333", line_width=0.4, tools=["hover"],
                        hooks=[colorbar_hook("model − observation (kg C m-3)", shown)])

    def _marker(self, profile_cell) -> hv.Points:
        """Cross on the land cell whose profile is shown (the nearest one to the tap)."""
        pts = [tuple(profile_cell)] if profile_cell is not None else []
        return hv.Points(pts, kdims=["lon", "lat"]).opts(color="#d62728", marker="x", size=14, line_width=3)
