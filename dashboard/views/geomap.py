"""The projected map: the store's :class:`~dashboard.store.MapLayer` on an offline basemap.

Equal Earth by default (equal-area: what a global total is made of reads fairly), Robinson, Plate
Carrée and two polar caps (:data:`dashboard.geo.PROJECTIONS`). Layers, bottom to top: ocean (the
globe's outline), land, the data image, lakes, coastlines, country borders, the graticule, then
observed sites, misfit points, the region box and the tapped cell.

Speed (see docs/dashboard.md, "Maps, projections ..."): the values are never re-projected. The image
is a fixed pixel grid in projected coordinates whose pixels know their grid cell
(:func:`dashboard.geo.pixel_map`, computed once per grid and projection); a slider step gathers the new
values into it (< 1 ms) and, as the lon/lat map did, writes them straight into each rendered plot's
``ColumnDataSource`` when nothing but the values changed. The basemap is projected once per
projection and cached.

Zoom for detail: given a :class:`~dashboard.views.detail.DetailView`, the view (``RangeXY``, inverse-projected
to a lon/lat box) is reported to it and its 0.05° answer, drawn in this projection in the worker thread, is
shown above the basemap (:class:`~dashboard.views.detail.DetailLayer`).

Hover shows the value, its lon/lat and (where the source has an ensemble and the variable is the SOC
stock) the ensemble s.d. of the baseline stock; a tap asks the point query (value ± s.d. of the current
what-if, profile, observed profiles nearby: :mod:`dashboard.views.point`).
"""

from __future__ import annotations

import weakref

import holoviews as hv
import numpy as np
import panel as pn
import param

from dashboard import geo
from dashboard.state import BOX_PREFIX, parse_box_key
from dashboard.store import MapLayer, ResultStore, color_limits, ensemble_spread, observed_sites, world_extent
from dashboard.views import colorbar_hook, output_backend
from dashboard.views.detail import DetailLayer, DetailView

#: Largest frame of the map (px); demo mode asks for more. A fixed frame, not a responsive one: a
#: responsive figure with a fixed aspect lost its height in the browser on its first update (a tap
#: squashed the globe into a strip; the lon/lat map shows the same).
MAX_HEIGHT, MAX_WIDTH = 540, 860

#: Land colour: the plot background, seen where the basemap image is transparent and there is no data.
LAND = "#f1efe9"
MISFIT_CMAP = "RdBu_r"

_X = hv.Dimension("x", label="x (projected)", unit="m")
_Y = hv.Dimension("y", label="y (projected)", unit="m")


def projected_image(layer: MapLayer, pmap: geo.PixelMap, spread: np.ndarray | None = None) -> hv.Image:
    """The layer's values gathered into the projected pixel grid, with lon/lat (and s.d.) for hover."""
    x0, y0, x1, y1 = pmap.bounds
    vdim = hv.Dimension(layer.variable.replace(":", "_"), label=layer.label, unit=layer.units)
    # hv.Image wants rows from the bottom (y ascending) when given as (xs, ys, array)
    img = pmap.apply(layer.values)
    data = [img, pmap.lon.astype(np.float32), pmap.lat.astype(np.float32)]
    vdims = [vdim, hv.Dimension("lon", label="longitude", unit="°E"), hv.Dimension("lat", label="latitude",
                                                                                       unit="°N")]
    if spread is not None:
        data.append(pmap.apply(spread))
        vdims.append(hv.Dimension("sd", label="ensemble s.d. (baseline)", unit=layer.units))
    xs = np.linspace(x0, x1, pmap.shape[1] * 2 + 1)[1::2]
    ys = np.linspace(y1, y0, pmap.shape[0] * 2 + 1)[1::2]
    return hv.Image((xs, ys[::-1], *[a[::-1] for a in data]), kdims=[_X, _Y], vdims=vdims)


def _hide_axes(plot, element) -> None:
    """Projected metres mean nothing to a reader: the graticule does the job of the axes."""
    for ax in ("xaxis", "yaxis"):
        for a in plot.handles.get(ax, []) if isinstance(plot.handles.get(ax), list) else [plot.handles.get(ax)]:
            if a is not None:
                a.visible = False


class _Frame(param.Parameterized):
    n = param.Integer(0)


class GeoMapView(pn.viewable.Viewer):
    """The projected map of a :class:`ResultStore`; ``projection`` is a key of :data:`geo.PROJECTIONS`."""

    projection = param.Selector(default=geo.DEFAULT_PROJECTION, objects=list(geo.PROJECTIONS))
    max_height = param.Integer(default=MAX_HEIGHT, doc="Tallest the map's frame gets (px).")
    max_width = param.Integer(default=MAX_WIDTH, doc="Widest the map's frame gets (px).")

    def __init__(self, store: ResultStore, detail: DetailView | None = None, **params) -> None:
        super().__init__(**params)
        self.store = store
        self.detail = detail
        # one detail layer for every projection's overlay (its frames read the current projection)
        self.detail_layer = DetailLayer(detail, "image", self._detail_image, self._no_detail) if detail else None
        self.extent = world_extent(store.world)
        self._sources: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._shown: tuple | None = None
        self.stats = {"renders": 0, "swaps": 0}
        self._frame = _Frame()
        self.tap_stream = hv.streams.Tap(x=None, y=None)
        self.tap_stream.add_subscriber(self._on_tap)
        self.bounds_stream = hv.streams.BoundsXY(bounds=None)
        self.bounds_stream.add_subscriber(self._on_bounds)
        self.range_stream = hv.streams.RangeXY()
        self.range_stream.add_subscriber(self._on_range)
        self.pane = pn.pane.HoloViews(self._overlay(), css_classes=["proda-map", "proda-geomap"],
                                      linked_axes=False)
        self.param.watch(self._rebuild, ["projection", "max_height", "max_width"])
        store.param.watch(self._on_layer, "layer")

    def __panel__(self):
        return self.pane

    def _aspect(self) -> float:
        """Width / height of the projected extent (with the 2 % pad on each side)."""
        x0, x1, y0, y1 = self.bounds()
        pad = 0.04 * max(x1 - x0, y1 - y0)
        return float((x1 - x0 + pad) / max(y1 - y0 + pad, 1e-9))

    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the map's frame: the projection's aspect within the maximum box."""
        aspect = self._aspect()
        width = min(self.max_width, int(self.max_height * aspect))
        return width, int(width / aspect)

    def _rebuild(self, *events) -> None:
        self.pane.object = self._overlay()

    # -- geometry ----------------------------------------------------------------------------
    def pixel_map(self, layer: MapLayer | None = None) -> geo.PixelMap | None:
        layer = layer or self.store.layer
        if layer is None:
            return None
        return geo.pixel_map(self.projection, layer.lon, layer.lat)

    def bounds(self) -> tuple[float, float, float, float]:
        """Projected (x0, x1, y0, y1) of the world's extent in the current projection."""
        return geo.view_extent(self.projection, self.extent)

    def lonlat(self, x: float, y: float) -> tuple[float, float] | None:
        lon, lat = geo.to_lonlat(self.projection, x, y)
        if not (np.isfinite(lon[0]) and np.isfinite(lat[0])):
            return None
        return float(lon[0]), float(lat[0])

    # -- updates ----------------------------------------------------------------------------
    def _on_layer(self, event: param.parameterized.Event) -> None:
        layer = event.new
        if layer is None:
            return
        if (layer.signature, self.projection) == self._shown and self.swap_data(layer):
            return
        self._frame.n += 1

    def swap_data(self, layer: MapLayer) -> bool:
        """Write the layer's projected values into every live rendered image; False if there is none."""
        live = [src for src in list(self._sources.values()) if src.document is not None]
        if not live or any("image" not in src.data for src in live):
            return False
        from panel.io.document import unlocked

        pmap = self.pixel_map(layer)
        # apply() gives the top row first; the Bokeh source holds the bottom row first (as HoloViews sends it)
        img = np.ascontiguousarray(pmap.apply(layer.values)[::-1])
        with unlocked():
            for src in live:
                # one column: Bokeh then sends only "image" (a ColumnDataChanged event naming it); assigning a
                # new dict would resend the lon/lat (and s.d.) hover columns, 2-3x the bytes of a step
                src.data["image"] = [img]
        self.stats["swaps"] += 1
        return True

    def _capture_source(self, plot, element) -> None:
        src = plot.handles.get("source")
        if src is not None:
            self._sources[id(src)] = src

    def _on_tap(self, x: float | None, y: float | None) -> None:
        if x is None or y is None:
            return
        ll = self.lonlat(x, y)
        if ll is not None:
            self.store.set_tap(*ll)

    def _on_range(self, x_range, y_range) -> None:
        """The plot's projected view -> the detail's lon/lat view (the box around the view's edges)."""
        if self.detail is None:
            return
        if x_range is None or y_range is None or None in (*x_range, *y_range):
            self.detail.set_view(None)
            return
        (x0, x1), (y0, y1) = x_range, y_range
        t = np.linspace(0, 1, 25)
        xs = np.concatenate([x0 + (x1 - x0) * t, np.full_like(t, x1), x0 + (x1 - x0) * t, np.full_like(t, x0)])
        ys = np.concatenate([np.full_like(t, y0), y0 + (y1 - y0) * t, np.full_like(t, y1), y0 + (y1 - y0) * t])
        lon, lat = geo.to_lonlat(self.projection, xs, ys)
        if np.isnan(lon).any():  # the view reaches off the globe: it shows the globe's edge, not a small area
            self.detail.set_view(None)
            return
        self.detail.set_view((float(lon.min()), float(lon.max()), float(lat.min()), float(lat.max())), self.projection)

    def _detail_image(self, image) -> hv.Image:
        """The detail's projected pixels (computed in the worker thread), if they are in this projection."""
        if image.projection != self.projection:
            return self._no_detail()
        vdim = hv.Dimension("detail", label=f"{self.store.layer.label if self.store.layer else 'value'} at 0.05°",
                            unit=self.store.layer.units if self.store.layer else "")
        return hv.Image((image.xs, image.ys, image.image), kdims=[_X, _Y], vdims=[vdim])

    def _no_detail(self) -> hv.Image:
        """The detail layer while hidden: 2 x 2 empty cells over the projected extent."""
        x0, x1, y0, y1 = self.bounds()
        return hv.Image(np.full((2, 2), np.nan, np.float32), bounds=(x0, y0, x1, y1), kdims=[_X, _Y],
                        vdims=["detail"])

    def _on_bounds(self, bounds) -> None:
        if bounds is None:
            return
        x0, y0, x1, y1 = bounds
        t = np.linspace(0, 1, 25)
        xs = np.concatenate([x0 + (x1 - x0) * t, np.full_like(t, x1), x0 + (x1 - x0) * t, np.full_like(t, x0)])
        ys = np.concatenate([np.full_like(t, y0), y0 + (y1 - y0) * t, np.full_like(t, y1), y0 + (y1 - y0) * t])
        lon, lat = geo.to_lonlat(self.projection, xs, ys)
        if not np.isfinite(lon).any():
            return
        self.store.select_box(float(np.nanmin(lon)), float(np.nanmin(lat)), float(np.nanmax(lon)),
                              float(np.nanmax(lat)))

    # -- elements ---------------------------------------------------------------------------
    def _spread(self, layer: MapLayer) -> np.ndarray | None:
        """Baseline ensemble s.d. of the stock for hover (only under the SOC stock, where it applies)."""
        if layer.variable != "soc_stock":
            return None
        s = self.store.state
        try:
            sd = ensemble_spread(self.store.world, s.source, s.depth)
        except Exception:  # hover extra only: never break the map
            return None
        if sd is None or sd.shape != layer.values.shape:
            return None
        return np.asarray(sd.values, np.float32)

    def _image_opts(self, layer: MapLayer, spread: bool = False) -> dict:
        title = f"{layer.label} ({layer.units})" if layer.units else layer.label
        tips = [(title, "@image{0.000}"), ("lon, lat", "@{lon}{0.00}°E, @{lat}{0.00}°N")]
        if spread:
            tips.insert(1, (f"± ensemble s.d. (baseline, {layer.units})", "@{sd}{0.000}"))
        return dict(cmap=layer.cmap, clim=layer.clim, colorbar=True, clipping_colors={"NaN": "transparent"},
                    title=f"{layer.title} · {geo.PROJECTIONS[self.projection].split(' (')[0]}",
                    tools=["hover", "tap", "box_select"], active_tools=["wheel_zoom"],
                    alpha=0.55 if not layer.colorbar else 1.0, hover_tooltips=tips,
                    hooks=[colorbar_hook(title, layer.colorbar), self._capture_source, _hide_axes])

    def _image(self, n: int) -> hv.Image:
        layer = self.store.layer
        self.stats["renders"] += 1
        x0, x1, y0, y1 = self.bounds()
        if layer is None:
            return hv.Image(np.full((2, 2), np.nan, np.float32), bounds=(x0, y0, x1, y1), kdims=[_X, _Y])
        self._shown = (layer.signature, self.projection)
        spread = self._spread(layer)
        return projected_image(layer, self.pixel_map(layer), spread).opts(**self._image_opts(layer, spread is not None))

    def _points(self, lon, lat, vdims_data: dict, vdims: list) -> hv.Points:
        x, y = geo.to_projected(self.projection, np.asarray(lon, float), np.asarray(lat, float))
        ok = np.isfinite(x) & np.isfinite(y)
        cols = {"x": x[ok], "y": y[ok], "lon": np.asarray(lon, float)[ok], "lat": np.asarray(lat, float)[ok]}
        cols.update({k: np.asarray(v)[ok] for k, v in vdims_data.items()})
        return hv.Points(cols, kdims=[_X, _Y], vdims=["lon", "lat", *vdims])

    def _sites(self, sites: bool) -> hv.Points:
        lon = lat = soc = np.empty(0)
        if sites:
            try:
                lon, lat, soc = observed_sites(self.store.world)
            except Exception as exc:
                self.store.fail(exc, "observed sites")
        return self._points(lon, lat, {"soc": soc}, [hv.Dimension("soc", label="observed topsoil SOC",
                                                                  unit="kg C m-3")]).opts(
            color="#111111", size=2.5, alpha=0.55, tools=["hover"])

    def _misfit(self, misfit) -> hv.Points:
        shown = misfit is not None and len(misfit) > 0
        vd = [hv.Dimension("misfit_kg_m3", label="model − observation", unit="kg C m-3"),
              hv.Dimension("n_horizons", label="horizons")]
        if shown:
            s = self.store.state
            clim = color_limits(self.store.world, s.source, s.depth, "misfit")
            pts = self._points(misfit["lon"], misfit["lat"], {"misfit_kg_m3": misfit["misfit_kg_m3"],
                                                               "n_horizons": misfit["n_horizons"]}, vd)
        else:
            clim = (-1.0, 1.0)
            pts = self._points([], [], {"misfit_kg_m3": [], "n_horizons": []}, vd)
        return pts.opts(color="misfit_kg_m3", cmap=MISFIT_CMAP, clim=clim, colorbar=True, size=6,
                        line_color="#333333", line_width=0.4, tools=["hover"], colorbar_position="right",
                        hooks=[colorbar_hook("model − observation (kg C m-3)", shown)])

    def _outline(self, region: str) -> hv.Path:
        data = []
        if region.startswith(BOX_PREFIX):
            try:
                lon0, lon1, lat0, lat1 = parse_box_key(region)
                t = np.linspace(0, 1, 50)
                lon = np.concatenate([lon0 + (lon1 - lon0) * t, np.full_like(t, lon1), lon1 - (lon1 - lon0) * t,
                                      np.full_like(t, lon0)])
                lat = np.concatenate([np.full_like(t, lat0), lat0 + (lat1 - lat0) * t, np.full_like(t, lat1),
                                      lat1 - (lat1 - lat0) * t])
                x, y = geo.to_projected(self.projection, lon, lat)
                data = [np.column_stack([x, y])]
            except ValueError:
                data = []
        return hv.Path(data, kdims=[_X, _Y]).opts(color="#d62728", line_width=2, line_dash="dashed")

    def _marker(self, profile_cell) -> hv.Points:
        lon, lat = ([profile_cell[0]], [profile_cell[1]]) if profile_cell is not None else ([], [])
        return self._points(lon, lat, {}, []).opts(color="#d62728", marker="x", size=14, line_width=3)

    def basemap_layer(self) -> hv.RGB:
        """The static basemap above the data (:func:`geo.basemap_image`: ocean, lakes, coasts, borders,
        graticule; land transparent over the plot's land-coloured background), at the frame's pixel size."""
        x0, x1, y0, y1 = self.bounds()
        pad = 0.02 * max(x1 - x0, y1 - y0)
        ext = (x0 - pad, x1 + pad, y0 - pad, y1 + pad)
        width, height = self.frame_size()
        img = geo.basemap_image(self.projection, ext, width, height)
        return hv.RGB(img, bounds=(ext[0], ext[2], ext[1], ext[3]), kdims=[_X, _Y],
                      vdims=["R", "G", "B", "A"])

    def _overlay(self) -> hv.Overlay:
        """The whole map for the current projection (rebuilt when the projection changes)."""
        store = self.store
        self._shown = None
        self._sources = weakref.WeakValueDictionary()
        image = hv.DynamicMap(self._image, streams=[hv.streams.Params(self._frame, ["n"])])
        self.tap_stream.source = image
        self.bounds_stream.source = image
        self.range_stream.source = image
        over = self.basemap_layer()
        layers = image * over
        if self.detail is not None:
            # the 0.05° detail (dashboard.views.detail) above the basemap bitmap: the bitmap has the globe's
            # pixel size, so zoomed in its coast pixels are coarse blocks; the detail's land cells cover them
            # and its NaN (sea) cells let the ocean show
            self.detail.set_view(None)
            layers = layers * self.detail_layer.dmap
        outline = hv.DynamicMap(self._outline, streams=[hv.streams.Params(store.state, ["region"])])
        marker = hv.DynamicMap(self._marker, streams=[hv.streams.Params(store, ["profile_cell"])])
        sites = hv.DynamicMap(self._sites, streams=[hv.streams.Params(store.state, ["sites"])])
        misfit = hv.DynamicMap(self._misfit, streams=[hv.streams.Params(store, ["misfit"])])
        x0, x1, y0, y1 = self.bounds()
        pad = 0.02 * max(x1 - x0, y1 - y0)
        width, height = self.frame_size()
        return (layers * sites * misfit * outline * marker).opts(
            hv.opts.Overlay(xlim=(x0 - pad, x1 + pad), ylim=(y0 - pad, y1 + pad), frame_width=width,
                            frame_height=height, xaxis=None, yaxis=None,
                            bgcolor=LAND, backend_opts={"plot.output_backend": output_backend()}))
