"""Zoom for detail (issue 17): the current what-if at 0.05° over the map's view, on top of the coarse map.

One :class:`DetailView` per session is shared by both maps (only one is on screen). The map tells it its
view (``set_view``: a lon/lat box from the plot's ``RangeXY``); when the view holds at most
:attr:`DetailView.max_cells` cells at 0.05° (250,000 by default: a 25° x 25° view), the view asks
``api.detail_map`` for the map's variable under the **same bulk multipliers** the coarse what-if realised
(``store.result.multipliers``), through the runner's ``slow`` lane, latest-only per session. The answer is
drawn with the coarse layer's colour map and limits, without any server work per zoom or pan: the lon/lat
map shows the fine cells as a plain ``hv.Image`` (at most 250,000 cells, the bytes of the coarse globe image);
the projected map gets an image in projected coordinates whose pixels were inverse-projected to their fine
cell once per answer, in the runner's worker thread (:func:`project_detail`, the way ``geo.pixel_map`` maps the
coarse grid). Measured against Datashader (docs/dashboard.md, "Zoom for detail"): ``rasterize`` compiled its
kernels on the first zoom of a process (1.6 s for an image, 12.8 s for a projected ``QuadMesh``) on the server's
event loop, stalling every session, then cost 80-210 ms of that loop per zoom event. Zooming back out hides the
detail.

A slider step changes nothing on the coarse path: the store applies the step (the map swaps its image data as
before), then this view sees the new ``version`` and asks for the detail of the new multipliers; the detail
of the previous step stays on screen, marked "updating", until the new one arrives. Detail tiles are cached in
the engine (:data:`proda_engine.products.highres.TILE_CACHE`), so panning back or returning to a slider
position is a look-up.

The fine forcing is derived (nearest-neighbour refinement + synthetic sub-grid variability), and the status
line says so next to every detail.
"""

from __future__ import annotations

import html
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import holoviews as hv
import numpy as np
import panel as pn
import param

from dashboard import store as store_mod
from dashboard.runner import LatestFollower
from dashboard.store import ResultStore, world_extent
from proda_engine import api

#: Resolution of the detail (degrees).
RESOLUTION = 0.05
#: Map variables with a 0.05° detail (the what-if's own maps; CUE of the whole profile only).
DETAIL_VARIABLES = ("soc_stock", "soc_change", "turnover", "cue")
ZOOM_IN = f"zoom in for {RESOLUTION:g}° detail"


def snap_view(bbox: tuple[float, float, float, float], extent: tuple[float, float, float, float],
              resolution: float = RESOLUTION) -> tuple[float, float, float, float] | None:
    """The view ``(lon0, lon1, lat0, lat1)`` clipped to the world's ``extent`` and widened to whole fine cells
    (edges on the world's fine grid), so nearby views ask the same request; None if it misses the world."""
    lon0, lon1, lat0, lat1 = bbox
    e_lon0, e_lon1, e_lat0, e_lat1 = extent
    lon0, lon1 = max(lon0, e_lon0), min(lon1, e_lon1)
    lat0, lat1 = max(lat0, e_lat0), min(lat1, e_lat1)
    if not (lon0 < lon1 and lat0 < lat1):
        return None

    def down(v: float, origin: float) -> float:
        return round(origin + math.floor((v - origin) / resolution + 1e-9) * resolution, 6)

    def up(v: float, origin: float) -> float:
        return round(origin + math.ceil((v - origin) / resolution - 1e-9) * resolution, 6)

    return down(lon0, e_lon0), up(lon1, e_lon0), down(lat0, e_lat0), up(lat1, e_lat0)


def view_cells(bbox: tuple[float, float, float, float], resolution: float = RESOLUTION) -> int:
    """Fine cells in a (snapped) view."""
    lon0, lon1, lat0, lat1 = bbox
    return round((lon1 - lon0) / resolution) * round((lat1 - lat0) / resolution)


def detail_image(da, kdims) -> hv.Image:
    """The detail DataArray as an ``hv.Image`` (lon/lat axes; rows ascending)."""
    lat, lon, values = da["lat"].values, da["lon"].values, da.values
    if lat.size > 1 and lat[1] < lat[0]:
        lat, values = lat[::-1], values[::-1]
    vdim = hv.Dimension("detail", label=f"{da.attrs.get('long_name', da.name)} at {RESOLUTION:g}°",
                        unit=da.attrs.get("units", ""))
    return hv.Image((lon, lat, values), kdims=kdims, vdims=[vdim])


@dataclass(frozen=True)
class ProjectedDetail:
    """The detail as an image in projected coordinates (:func:`project_detail`)."""

    projection: str
    xs: np.ndarray  # pixel centres, ascending
    ys: np.ndarray  # pixel centres, ascending (row 0 of ``image`` is ys[0])
    image: np.ndarray  # (len(ys), len(xs)) float32, NaN off the data

    @property
    def n_pixels(self) -> int:
        return int(np.isfinite(self.image).sum())


def project_detail(da, projection: str, width: int | None = None) -> ProjectedDetail:
    """The detail's fine cells drawn into a pixel grid over their projected extent: each pixel centre is
    inverse-projected (``geo.to_lonlat``) and shows the fine cell that contains it (NaN off the grid or the
    globe). ``width``: pixels across (default two per fine column, within 200..1000)."""
    from dashboard import geo

    lat, lon = np.asarray(da["lat"].values, float), np.asarray(da["lon"].values, float)
    values = np.asarray(da.values, np.float32)
    dlon = float(np.abs(np.diff(lon)).mean()) if lon.size > 1 else RESOLUTION
    dlat = float(np.abs(np.diff(lat)).mean()) if lat.size > 1 else RESOLUTION
    box = (lon.min() - dlon / 2, lon.max() + dlon / 2, lat.min() - dlat / 2, lat.max() + dlat / 2)
    x0, x1, y0, y1 = geo.view_extent(projection, box)
    width = int(width or np.clip(2 * lon.size, 200, 1000))
    height = max(round(width * (y1 - y0) / max(x1 - x0, 1e-9)), 2)
    xs = x0 + (np.arange(width) + 0.5) * (x1 - x0) / width
    ys = y0 + (np.arange(height) + 0.5) * (y1 - y0) / height
    X, Y = np.meshgrid(xs, ys)
    plon, plat = geo.to_lonlat(projection, X.ravel(), Y.ravel())
    if lon.max() > 180:  # a 0..360 grid
        plon = np.where(plon < 0, plon + 360, plon)
    ix, iy = geo.grid_index(plon, lon), geo.grid_index(plat, lat)  # the coarse pixel map's cell lookup
    ok = (ix >= 0) & (iy >= 0)
    image = np.full(X.size, np.nan, np.float32)
    image[ok] = values[iy[ok], ix[ok]]
    return ProjectedDetail(projection, xs, ys, image.reshape(height, width))


class _Frame(param.Parameterized):
    """Counter that re-renders a detail layer (only when a data swap is not enough)."""

    n = param.Integer(0)


class DetailLayer:
    """A map's detail layer: ``element(detail.<name>)`` coloured as the coarse layer, ``empty()`` while hidden
    (a 2 x 2 image: the first page and the global slider path pay nothing for the layer).

    A new detail is **swapped** into the rendered image's ``ColumnDataSource`` (image, position and size) and
    its colour mapper (the coarse layer's limits and palette), as the maps swap a slider step's values:
    re-rendering the layer through HoloViews re-laid the responsive lon/lat figure out and squashed it into a
    strip, and costs more. It renders through HoloViews only the first time.
    """

    def __init__(self, detail: DetailView, name: str, element: Callable[[object], hv.Image],
                 empty: Callable[[], hv.Image]) -> None:
        self.detail, self.name, self.element, self.empty = detail, name, element, empty
        self._sources: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._mappers: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # colour mapper per source
        self._frame = _Frame()
        self.stats = {"renders": 0, "swaps": 0}
        self.dmap = hv.DynamicMap(self._draw, streams=[hv.streams.Params(self._frame, ["n"])])
        detail.param.watch(self._on_value, [name])

    def _image(self) -> hv.Image:
        value = getattr(self.detail, self.name)
        return self.empty() if value is None else self.element(value)

    def _draw(self, n: int) -> hv.Image:
        self.stats["renders"] += 1
        return self._image().opts(cmap=self.detail.cmap, clim=self.detail.clim, colorbar=False,
                                  clipping_colors={"NaN": "transparent"}, tools=["hover"], hooks=[self._capture])

    def _capture(self, plot, element) -> None:
        src, mapper = plot.handles.get("source"), plot.handles.get("color_mapper")
        if src is not None and mapper is not None:
            self._sources[id(src)] = src
            self._mappers[id(src)] = mapper

    def _rerender(self, *events) -> None:
        self._frame.n += 1

    def _on_value(self, event) -> None:
        if not self.swap():
            self._rerender()

    def swap(self) -> bool:
        """Write the current detail into every live rendered image; False if there is none."""
        live = [src for src in list(self._sources.values()) if src.document is not None]
        if not live:
            return False
        img = self._image()
        l, b, r, t = img.bounds.lbrt()
        data = {"image": [img.dimension_values(2, flat=False)], "x": [l], "y": [b], "dw": [r - l], "dh": [t - b]}
        if any(set(src.data) != set(data) for src in live):
            return False
        from holoviews.plotting.util import process_cmap
        from panel.io.document import unlocked

        low, high = self.detail.clim
        palette = process_cmap(self.detail.cmap, 256)
        with unlocked():
            for src in live:
                src.data = data
                mapper = self._mappers.get(id(src))
                if mapper is None:
                    continue
                if (mapper.low, mapper.high) != (low, high):  # the coarse layer's limits and colours
                    mapper.update(low=low, high=high)
                if list(mapper.palette) != palette:
                    mapper.palette = palette
        self.stats["swaps"] += 1
        return True


class DetailView(param.Parameterized):
    """The 0.05° detail of one session's what-if over the map's view (see the module docstring)."""

    max_cells = param.Integer(default=api.DETAIL_MAX_CELLS, bounds=(1, None),
                              doc="Largest view (fine cells) that gets a detail; larger views ask to zoom in.")
    bbox = param.Tuple(default=None, length=4, allow_None=True,
                       doc="The map's view (lon0, lon1, lat0, lat1), snapped to the fine grid; None: whole map.")
    data = param.Parameter(default=None, doc="The api.detail_map DataArray on screen (None: hidden).")
    image = param.Parameter(default=None, doc="The detail drawn in the projected map's projection "
                                              "(ProjectedDetail; None on the lon/lat map or hidden).")
    cmap = param.Parameter(default="viridis", doc="Colour map of the coarse layer (the detail matches it).")
    clim = param.Tuple(default=(0.0, 1.0), length=2, doc="Colour limits of the coarse layer.")
    status = param.String(default=ZOOM_IN, doc="One line under the map: what the detail shows, or why none.")

    def __init__(self, store: ResultStore, **params) -> None:
        super().__init__(**params)
        self.store = store
        self.extent = world_extent(store.world)
        self._generation = 0
        self._follow = LatestFollower()  # one query loop at a time (runner.py)
        self._done: tuple | None = None  # the request whose answer is on screen
        self.projection = "plate_carree"  # of the map that reported the view last (the one on screen)
        self.stats = {"requests": 0, "answers": 0}
        self.status_pane = pn.pane.HTML(self._status_html(), css_classes=["proda-detail-status"],
                                        sizing_mode="stretch_width", margin=(0, 10))
        self.param.watch(lambda e: setattr(self.status_pane, "object", self._status_html()), "status")
        self.param.watch(self._on_change, ["bbox", "max_cells"])
        store.param.watch(self._on_change, "version")

    def _status_html(self) -> str:
        return f"<div class='proda-detail-status'>{html.escape(self.status)}</div>"

    # -- the view ---------------------------------------------------------------------------
    def set_view(self, bbox: tuple[float, float, float, float] | None, projection: str = "plate_carree") -> None:
        """The map's lon/lat view (None: the whole map, e.g. after a reset or a new projection) and the map's
        projection (``plate_carree``: the lon/lat map)."""
        snapped = None if bbox is None else snap_view(tuple(float(v) for v in bbox), self.extent)
        self.projection = projection
        if snapped != self.bbox:
            self.bbox = snapped
        elif snapped is not None:
            self._on_change()  # same box, maybe another projection

    def request(self) -> tuple | None:
        """(bbox, variable, depth, source, multipliers) of the detail to show, or None (see :meth:`reason`)."""
        return self._request()[0]

    def _request(self) -> tuple[tuple | None, str]:
        bbox, layer, result = self.bbox, self.store.layer, self.store.result
        if bbox is None or layer is None or result is None:
            return None, ZOOM_IN
        n = view_cells(bbox)
        if n > self.max_cells:
            return None, f"{ZOOM_IN} (this view: {n:,} cells at {RESOLUTION:g}°, at most {self.max_cells:,})"
        if layer.variable not in DETAIL_VARIABLES:
            return None, f"no {RESOLUTION:g}° detail for this map layer (SOC stock, change, turnover and CUE have one)"
        depth = self.store.state.depth
        if layer.variable == "cue" and depth != "whole":
            return None, f"{RESOLUTION:g}° CUE is of the whole profile: choose depth 'whole' for detail"
        if result.multipliers is None:
            return None, f"no {RESOLUTION:g}° detail for a theta-space request"
        mult = tuple(sorted((k, round(float(v), 12)) for k, v in result.multipliers.items()))
        return (bbox, layer.variable, depth, result.totals.get("source"), mult, self.projection), ""

    # -- requests ---------------------------------------------------------------------------
    def compute(self, key: tuple | None):
        """The engine call (runs in the runner's slow lane when served)."""
        if key is None:
            return None
        bbox, variable, depth, source, mult, projection = key
        da = api.detail_map(bbox, variable=variable, depth=depth, source=source, multipliers=dict(mult),
                            world=self.store.world, max_cells=self.max_cells)
        # the projected map's pixels, here in the worker thread (not on the server's event loop)
        return da, (None if projection == "plate_carree" else project_detail(da, projection))

    def _on_change(self, *events) -> None:
        try:
            key, reason = self._request()
        except Exception as exc:  # never break the coarse map
            self.store.fail(exc, "0.05° detail")
            return
        if key is None:
            self._generation += 1  # an answer still on its way is dropped
            self._done = None
            with store_mod.held():
                self.param.update(data=None, image=None, status=reason)
            return
        if key == self._done:
            return
        self._generation += 1
        self.stats["requests"] += 1
        self.status = (f"updating {RESOLUTION:g}° detail…" if self.data is not None
                       else f"computing {RESOLUTION:g}° detail…")
        if not self.store.background:
            try:
                self._answer(key, self.compute(key))
            except Exception as exc:
                self.store.fail(exc, "0.05° detail")
            return
        param.parameterized.async_executor(self._async)

    def _answer(self, key: tuple | None, answer) -> None:
        # held like the store's results: the layers' swaps then reach the page as one message, and a swap never
        # patches a served document outside its lock (Bokeh refused that before the page had loaded)
        with store_mod.held():
            self._show(key, answer)

    def _show(self, key: tuple | None, answer) -> None:
        self._done = key
        if answer is None:
            self.param.update(data=None, image=None, status=ZOOM_IN)
            return
        da, image = answer
        self.stats["answers"] += 1
        layer = self.store.layer
        applied = "what-if applied" if any(v != 1.0 for _, v in key[4]) else "baseline (no what-if)"
        self.param.update(data=da, image=image, cmap=layer.cmap, clim=tuple(layer.clim),
                          status=f"{RESOLUTION:g}° detail (derived forcing) · {da.attrs['n_cells']:,} cells · "
                                 f"{applied}")

    async def _async(self) -> None:
        await self._follow(self.store, "detail", lambda: self._generation, self.request, self.compute,
                           self._answer, "0.05° detail", lane="slow")
