"""Map projections, the offline basemap and the precomputed lon/lat -> projected-pixel mapping.

Projecting a raster with GeoViews/cartopy on every slider step costs more than the solve (the
architecture note measured it), so the projected map never re-projects values. Instead, once per
(grid, projection, pixel width) :func:`pixel_map` inverse-projects the centre of every output pixel
with cartopy to lon/lat and stores the index of the grid cell it falls in; a step is then one gather,
``out[valid] = values.ravel()[index]`` (a few ms for ~250,000 pixels), and the image keeps the same
bytes as the lon/lat one (the pixel grid is sized like the data grid).

The basemap (Natural Earth 1:110m land, lakes, borders; ``assets/geo/basemap_110m.json``, built by
``scripts/build_basemap.py``) and the graticule are projected once per projection with cartopy's
``project_geometry`` (which cuts at the antimeridian and the projection's boundary) and cached.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Repository ``assets/geo`` folder (shipped Natural Earth layers, see its SOURCES.md).
GEO_ASSETS = Path(__file__).resolve().parents[1] / "assets" / "geo"
BASEMAP = GEO_ASSETS / "basemap_110m.json"

#: Projection keys (URL values) -> labels, in the order the select offers them. Equal Earth is the
#: default for global maps: equal-area, so the eye compares stocks per area fairly.
PROJECTIONS: dict[str, str] = {
    "equal_earth": "Equal Earth (equal-area)",
    "robinson": "Robinson",
    "plate_carree": "Plate Carrée (lon/lat)",
    "north_polar": "North polar (stereographic, > 40°N)",
    "south_polar": "South polar (stereographic, < 50°S)",
}
DEFAULT_PROJECTION = "equal_earth"

#: Latitude limit of the polar views (degrees): the view shows the cap poleward of it.
POLAR_LIMIT = {"north_polar": 40.0, "south_polar": -50.0}

#: Pixel width bounds of the projected image (the data grid's column count, within these).
MIN_WIDTH, MAX_WIDTH = 360, 1100


def crs(key: str):
    """The cartopy CRS of a projection key (:data:`PROJECTIONS`)."""
    import cartopy.crs as ccrs

    if key == "equal_earth":
        return ccrs.EqualEarth()
    if key == "robinson":
        return ccrs.Robinson()
    if key == "plate_carree":
        return ccrs.PlateCarree()
    if key == "north_polar":
        return ccrs.NorthPolarStereo()
    if key == "south_polar":
        return ccrs.SouthPolarStereo()
    raise ValueError(f"unknown projection {key!r}; expected one of {list(PROJECTIONS)}")


@functools.lru_cache(maxsize=16)
def _crs(key: str):
    return crs(key)


def to_projected(key: str, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lon/lat degrees -> projected x, y (m; degrees for Plate Carrée)."""
    import cartopy.crs as ccrs

    pts = _crs(key).transform_points(ccrs.PlateCarree(), np.asarray(lon, float), np.asarray(lat, float))
    return pts[..., 0], pts[..., 1]


def to_lonlat(key: str, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Projected x, y -> lon/lat degrees; NaN where the point is off the globe."""
    import cartopy.crs as ccrs

    x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
    pts = ccrs.PlateCarree().transform_points(_crs(key), x, y)
    lon, lat = pts[..., 0], pts[..., 1]
    bad = ~(np.isfinite(lon) & np.isfinite(lat)) | (np.abs(lat) > 90.0001)
    # a round trip tells points off the globe (cartopy returns a clipped lon/lat for some of them)
    back = _crs(key).transform_points(ccrs.PlateCarree(), np.where(bad, 0, lon), np.where(bad, 0, lat))
    scale = max(float(np.nanmax(np.abs(_crs(key).x_limits))), 1.0)
    bad |= np.hypot(back[..., 0] - x, back[..., 1] - y) > 1e-6 * scale
    return np.where(bad, np.nan, lon), np.where(bad, np.nan, lat)


def view_extent(key: str, lon_extent: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Projected (x0, x1, y0, y1) of a lon/lat box (lon0, lon1, lat0, lat1): the box's edges projected
    (densely, since straight lon/lat edges curve) and bounded. Polar views cover their cap."""
    lon0, lon1, lat0, lat1 = lon_extent
    if key in POLAR_LIMIT:
        lim = POLAR_LIMIT[key]
        lat0, lat1 = (max(lat0, lim), 90.0) if lim > 0 else (-90.0, min(lat1, lim))
        if lat1 <= lat0:  # a world outside the cap: show the cap anyway
            lat0, lat1 = (lim, 90.0) if lim > 0 else (-90.0, lim)
        lon0, lon1 = -180.0, 180.0
    t = np.linspace(0, 1, 181)
    lon = np.concatenate([lon0 + (lon1 - lon0) * t, np.full_like(t, lon1), lon1 - (lon1 - lon0) * t,
                          np.full_like(t, lon0)])
    lat = np.concatenate([np.full_like(t, lat0), lat0 + (lat1 - lat0) * t, np.full_like(t, lat1),
                          lat1 - (lat1 - lat0) * t])
    if key in POLAR_LIMIT:  # the cap is the circle of the limit latitude
        lim = lat0 if POLAR_LIMIT[key] > 0 else lat1
        lon, lat = np.linspace(-180, 180, 721), np.full(721, lim)
    x, y = to_projected(key, lon, lat)
    ok = np.isfinite(x) & np.isfinite(y)
    return float(x[ok].min()), float(x[ok].max()), float(y[ok].min()), float(y[ok].max())


@dataclass(frozen=True, eq=False)
class PixelMap:
    """Which grid cell each pixel of the projected image shows.

    ``index`` holds the flat (row-major, ``(lat, lon)``) grid index of every pixel in ``valid`` (the
    pixels whose centre falls inside a grid cell); :meth:`apply` turns a (lat, lon) array into the
    projected image (rows bottom to top, as ``hv.Image`` with explicit bounds expects them after a flip).
    """

    projection: str
    bounds: tuple[float, float, float, float]  # x0, y0, x1, y1 of the image (projected units)
    shape: tuple[int, int]  # (rows, cols) of the image
    grid_shape: tuple[int, int]  # (lat, lon) of the data grid
    valid: np.ndarray  # (rows * cols,) bool
    index: np.ndarray  # (valid.sum(),) int64 flat index into the data grid
    lon: np.ndarray  # (rows, cols) lon of each pixel centre, NaN off the globe (for hover and taps)
    lat: np.ndarray

    def apply(self, values: np.ndarray) -> np.ndarray:
        """(lat, lon) values -> (rows, cols) float32 projected image, top row first; NaN off the data."""
        if values.shape != self.grid_shape:
            raise ValueError(f"values of shape {values.shape} do not match the mapped grid {self.grid_shape}")
        out = np.full(self.shape[0] * self.shape[1], np.nan, dtype=np.float32)
        out[self.valid] = values.reshape(-1)[self.index]
        return out.reshape(self.shape)


def grid_index(coord: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the cell (of a regular grid of ``centres``, either direction) containing each coordinate,
    -1 outside the grid or for NaN."""
    n = centres.size
    if n == 1:
        return np.where(np.isfinite(coord), 0, -1)
    step = (centres[-1] - centres[0]) / (n - 1)
    with np.errstate(invalid="ignore"):
        i = np.floor((coord - centres[0]) / step + 0.5)
    ok = np.isfinite(i) & (i >= 0) & (i < n)
    return np.where(ok, i, -1).astype(np.int64)


@functools.lru_cache(maxsize=24)
def _pixel_map(key: str, lon_t: tuple, lat_t: tuple, width: int) -> PixelMap:
    lon, lat = np.asarray(lon_t), np.asarray(lat_t)
    dlon = abs(lon[1] - lon[0]) if lon.size > 1 else 0.5
    dlat = abs(lat[1] - lat[0]) if lat.size > 1 else 0.5
    box = (lon.min() - dlon / 2, lon.max() + dlon / 2, lat.min() - dlat / 2, lat.max() + dlat / 2)
    x0, x1, y0, y1 = view_extent(key, box)
    height = max(round(float(width * (y1 - y0) / max(x1 - x0, 1e-9))), 2)
    xs = x0 + (np.arange(width) + 0.5) * (x1 - x0) / width
    ys = y1 - (np.arange(height) + 0.5) * (y1 - y0) / height  # top row first
    X, Y = np.meshgrid(xs, ys)
    plon, plat = to_lonlat(key, X.ravel(), Y.ravel())
    # longitudes of the grid may be 0..360: bring the pixel's longitude into the grid's range
    if lon.max() > 180:
        plon = np.where(plon < 0, plon + 360, plon)
    ix, iy = grid_index(plon, lon), grid_index(plat, lat)
    valid = (ix >= 0) & (iy >= 0)
    if key in POLAR_LIMIT:  # only the cap (the square's corners reach lower latitudes)
        lim = POLAR_LIMIT[key]
        with np.errstate(invalid="ignore"):
            valid &= (plat >= lim) if lim > 0 else (plat <= lim)
    index = iy[valid] * lon.size + ix[valid]
    return PixelMap(key, (x0, y0, x1, y1), (height, width), (lat.size, lon.size), valid, index,
                    plon.reshape(height, width), plat.reshape(height, width))


def pixel_width(lon: np.ndarray, key: str = DEFAULT_PROJECTION) -> int:
    """Pixels across the image: about one per grid column (the same bytes as the lon/lat image), within
    [:data:`MIN_WIDTH`, :data:`MAX_WIDTH`]; polar caps get the width of the globe's columns."""
    n = lon.size if key not in POLAR_LIMIT else int(lon.size * 0.6)
    return int(np.clip(n, MIN_WIDTH, MAX_WIDTH))


def pixel_map(key: str, lon: np.ndarray, lat: np.ndarray, width: int | None = None) -> PixelMap:
    """The cached :class:`PixelMap` of a (lat, lon) grid in projection ``key`` (computed once per
    grid, projection and width: ~0.1-0.3 s for the 0.5° globe, then a dictionary look-up)."""
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    width = width or pixel_width(lon, key)
    return _pixel_map(key, tuple(np.round(lon, 6)), tuple(np.round(lat, 6)), int(width))


# ---------------------------------------------------------------------------------------------
# basemap and graticule
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def basemap_lonlat() -> dict[str, list]:
    """The shipped Natural Earth layers in lon/lat: ``land`` and ``lakes`` (polygons: lists of rings),
    ``borders`` (lines)."""
    with open(BASEMAP, encoding="utf-8") as fh:
        data = json.load(fh)
    return {k: data[k] for k in ("land", "lakes", "borders")}


def _unwrap(ring: list) -> np.ndarray:
    """A ring that jumps across the antimeridian (Fiji, Chukotka: 179.9 -> -179.9) made continuous (each
    jump of more than 180° undone by ±360°, so Chukotka sits at 190°E while Portugal stays at -9°E), which
    cartopy then cuts at the projection's edge; without this shapely sees a polygon spanning the globe
    and the map gets a band at that latitude. Rings around a pole (Antarctica) are left alone."""
    a = np.asarray(ring, float)
    if a.shape[0] < 2 or np.abs(a[:, 1]).max() >= 85:
        return a
    step = np.diff(a[:, 0])
    fix = np.concatenate([[0.0], np.cumsum(np.where(step > 180, -360.0, np.where(step < -180, 360.0, 0.0)))])
    if not fix.any():
        return a
    a = a.copy()
    a[:, 0] += fix
    return a


def _polygons(rings_list: list) -> list:
    import shapely

    out = []
    for rings in rings_list:
        try:
            rings = [_unwrap(r) for r in rings]
            poly = shapely.Polygon(rings[0], rings[1:])
            out.append(poly if poly.is_valid else poly.buffer(0))
        except (ValueError, shapely.errors.GEOSException):
            continue
    return out


def _polys_to_paths(geoms) -> list[dict]:
    """Shapely (Multi)Polygons -> ``hv.Polygons`` data: dicts of x, y and holes."""
    out = []
    for g in geoms:
        for p in getattr(g, "geoms", [g]):
            if p.is_empty or p.geom_type != "Polygon":
                continue
            ext = np.asarray(p.exterior.coords)
            holes = [np.asarray(r.coords) for r in p.interiors]
            out.append({"x": ext[:, 0], "y": ext[:, 1], "holes": [holes]})
    return out


def _lines_to_paths(geoms) -> list[np.ndarray]:
    out = []
    for g in geoms:
        for ln in getattr(g, "geoms", [g]):
            if not ln.is_empty and ln.geom_type in ("LineString", "LinearRing"):
                out.append(np.asarray(ln.coords))
    return out


@functools.lru_cache(maxsize=1)
def coastline_lines() -> list[list]:
    """The shipped 1:110m coastlines (lon/lat lines already split at the antimeridian and pole edge)."""
    with open(GEO_ASSETS / "coastlines_110m.json", encoding="utf-8") as fh:
        data = json.load(fh)
    return data["lines"] if isinstance(data, dict) else data


@functools.lru_cache(maxsize=8)
def basemap(key: str) -> dict[str, list]:
    """The basemap projected to ``key`` (cached per projection): ``ocean`` (the globe's outline as a
    polygon), ``land``, ``lakes`` (``hv.Polygons`` data) and ``borders``, ``coast`` (``hv.Path`` data)."""
    import cartopy.crs as ccrs
    import shapely

    proj, pc = _crs(key), ccrs.PlateCarree()
    src = basemap_lonlat()
    land = _polygons(src["land"])
    lakes = _polygons(src["lakes"])
    pland = [proj.project_geometry(g, pc) for g in land]
    plakes = [proj.project_geometry(g, pc) for g in lakes]
    borders = [proj.project_geometry(shapely.LineString(b), pc) for b in src["borders"] if len(b) > 1]
    # coastlines from the outlines split at the antimeridian and the pole edge (no line along -90°)
    coast = [proj.project_geometry(shapely.LineString(c), pc) for c in coastline_lines() if len(c) > 1]
    boundary = np.asarray(proj.boundary.coords)
    if key in POLAR_LIMIT:  # the cap's circle, not the projection's whole (huge) domain
        lim = POLAR_LIMIT[key]
        x, y = to_projected(key, np.linspace(-180, 180, 361), np.full(361, lim))
        boundary = np.column_stack([x, y])
    return {"ocean": [{"x": boundary[:, 0], "y": boundary[:, 1], "holes": [[]]}],
            "land": _polys_to_paths(pland), "lakes": _polys_to_paths(plakes),
            "borders": _lines_to_paths(borders), "coast": _lines_to_paths(coast)}


def join_parts(parts: list[np.ndarray]) -> np.ndarray:
    """Many (n, 2) lines or rings as one NaN-separated array: one Bokeh glyph instead of one HoloViews
    sub-path per piece (the 1:110m basemap has ~1,000 pieces; rendered one by one they took ~40 s per
    session, joined ~0.3 s)."""
    parts = [np.asarray(p, float) for p in parts if len(p) > 1]
    if not parts:
        return np.empty((0, 2))
    gap = np.full((1, 2), np.nan)
    return np.concatenate([q for p in parts for q in (p, gap)][:-1])


@functools.lru_cache(maxsize=8)
def basemap_joined(key: str) -> dict[str, np.ndarray]:
    """The basemap of ``key`` as NaN-separated arrays per layer: ``ocean``, ``land`` (exteriors),
    ``water`` (lakes and the holes of land polygons, e.g. the Caspian), ``coast``, ``borders``,
    ``graticule``; what the map views draw (one glyph each)."""
    bm = basemap(key)
    ring = lambda d: np.column_stack([d["x"], d["y"]])  # noqa: E731
    holes = [h for d in bm["land"] for hs in d["holes"] for h in hs]
    return {"ocean": join_parts([ring(d) for d in bm["ocean"]]), "land": join_parts([ring(d) for d in bm["land"]]),
            "water": join_parts([ring(d) for d in bm["lakes"]] + holes), "coast": join_parts(bm["coast"]),
            "borders": join_parts(bm["borders"]), "graticule": join_parts(graticule(key))}


@functools.lru_cache(maxsize=8)
def graticule(key: str, step: float = 30.0) -> list[np.ndarray]:
    """Meridians and parallels every ``step`` degrees, projected (``hv.Path`` data)."""
    lines = []
    lat = np.linspace(-90, 90, 181)
    for lon0 in np.arange(-180, 180 + 1e-9, step):
        lines.append(np.column_stack([np.full_like(lat, lon0), lat]))
    lon = np.linspace(-180, 180, 361)
    for lat0 in np.arange(-90 + step, 90, step):
        lines.append(np.column_stack([lon, np.full_like(lon, lat0)]))
    out = []
    for ln in lines:
        if key in POLAR_LIMIT:  # inside the cap only
            lim = POLAR_LIMIT[key]
            ln = ln[ln[:, 1] >= lim] if lim > 0 else ln[ln[:, 1] <= lim]
            if len(ln) < 2:
                continue
        x, y = to_projected(key, ln[:, 0], ln[:, 1])
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() > 1:
            out.append(np.column_stack([x[ok], y[ok]]))
    return out


# ---------------------------------------------------------------------------------------------
# the basemap as one static image (what the map draws)
# ---------------------------------------------------------------------------------------------

#: Colours of the rasterised basemap (hex): ocean and lakes, outside the globe, coast, borders, graticule.
OCEAN_COLOR, OUTSIDE_COLOR = "#dbe7f1", "#ffffff"
COAST_COLOR, BORDER_COLOR, GRATICULE_COLOR = "#3c3c3c", "#8a8a8a", "#b0b0b0"


def _fig_rgba(width: int, height: int, extent: tuple[float, float, float, float], draw, antialiased: bool):
    """Render ``draw(ax)`` into an (height, width, 4) uint8 RGBA array over ``extent`` (x0, x1, y0, y1)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    fig.patch.set_alpha(0.0)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.patch.set_alpha(0.0)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    draw(ax, antialiased)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


@functools.lru_cache(maxsize=16)
def basemap_image(key: str, extent: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """The basemap of ``key`` over ``extent`` as one (height, width, 4) uint8 RGBA image, top row first, drawn
    *above* the data: white outside the globe, ocean and lakes filled, land transparent (the plot's
    background is the land colour, so land without data shows it), coastlines, borders and graticule.

    One image instead of ~1,000 vector pieces: drawn as vectors the 1:110m basemap made the browser take
    ~10 s per page and ~0.5 s per repaint (measured); this is ~0.3 s once per (projection, extent, size)
    on the server and one bitmap in the page. Fills are drawn without antialiasing, lines with it.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Polygon as MplPolygon

    bm = basemap_joined(key)

    def split(arr: np.ndarray) -> list[np.ndarray]:
        cut = np.flatnonzero(np.isnan(arr[:, 0]))
        parts = [q[np.isfinite(q[:, 0])] for q in np.split(arr, cut)] if arr.size else []
        return [q for q in parts if len(q) > 1]

    def fills(ax, aa: bool) -> None:
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((extent[0], extent[2]), extent[1] - extent[0], extent[3] - extent[2],
                               facecolor=OUTSIDE_COLOR, edgecolor="none", antialiased=False))
        for ring in split(bm["ocean"]):
            ax.add_patch(MplPolygon(ring, closed=True, facecolor=OCEAN_COLOR, edgecolor="none", antialiased=aa))
        for ring in split(bm["land"]):  # a key colour, made transparent below
            ax.add_patch(MplPolygon(ring, closed=True, facecolor="#ff00ff", edgecolor="none", antialiased=aa))
        for ring in split(bm["water"]):
            ax.add_patch(MplPolygon(ring, closed=True, facecolor=OCEAN_COLOR, edgecolor="none", antialiased=aa))

    def lines(ax, aa: bool) -> None:
        for name, color, lw in (("graticule", GRATICULE_COLOR, 0.5), ("borders", BORDER_COLOR, 0.5),
                                ("water", COAST_COLOR, 0.5), ("coast", COAST_COLOR, 0.8)):
            ax.add_collection(LineCollection(split(bm[name]), colors=color, linewidths=lw, antialiased=aa))
        for ring in split(bm["ocean"]):  # the globe's edge
            ax.plot(ring[:, 0], ring[:, 1], color="#9fb3c8", lw=1.0)

    base = _fig_rgba(width, height, extent, fills, False)
    land = (base[..., 0] == 255) & (base[..., 1] == 0) & (base[..., 2] == 255)
    base[land, 3] = 0
    over = _fig_rgba(width, height, extent, lines, True).astype(np.float32) / 255.0
    a = over[..., 3:4]
    out = base.astype(np.float32) / 255.0
    out_a = a + out[..., 3:4] * (1 - a)
    rgb = (over[..., :3] * a + out[..., :3] * out[..., 3:4] * (1 - a)) / np.maximum(out_a, 1e-6)
    return (np.concatenate([rgb, out_a], axis=-1) * 255).round().astype(np.uint8)
