"""Regions, cell areas and area-weighted totals (spec §(i) "Global aggregation", §(n)).

A region is a boolean mask on the product grid. Named regions come from the world's covariates
(continent, Köppen, land cover) or from geometry (a lat/lon box, CONUS, a GeoJSON polygon).

**One convention for totals** (:data:`TOTALS_CONVENTION`), used by ``proda map``, ``proda world``,
``proda sensitivity``, ``api.what_if`` and the dashboard's cards and downloads alike:

* the stock of a cell is the model's fine-earth SOC stock with every depth increment multiplied by
  (1 - CF/100), CF the coarse-fragment volume at 0, 30 and 100 cm (spec §(i);
  :func:`~proda_engine.products.gridded.coarse_fragment_stocks`, the only place it is applied);
* every land cell counts with its full cell area (the spec's spherical trapezoid, :func:`cell_area`):
  the land fraction only decides which cells are land when a world is built (GLOBE land fraction
  >= 0.5) and never weights a total, as in the original;
* cells that fail the spec §(i) plausibility limits are dropped (NaN in every map, left out of totals).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import xarray as xr

EARTH_RADIUS_M = 6_371_008.8  # spec §(i)
PG = 1e15  # g per Pg
#: The totals convention every product records (``totals_convention`` attribute); see the module docstring.
TOTALS_CONVENTION = (
    "Pg C = sum over valid land cells of stock [kg C m-2] x 1000 x cell area [m2] / 1e15; stock = model "
    "fine-earth SOC with each depth increment x (1 - CF/100), CF = coarse fragments at 0, 30 and 100 cm "
    "(spec (i)); full cell area (spherical trapezoid), no land-fraction weighting; cells failing the spec (i) "
    "plausibility limits dropped"
)

#: Köppen main groups as code ranges of Beck et al. (2018) classes 1..30 (Af Am Aw | BWh BWk BSh BSk |
#: Csa..Cfc | Dsa..Dfd | ET EF), the numbering the original PRODA and the default world use. The spec
#: folds E into D for its summaries (D: 17-30); here polar is its own group.
KOPPEN_GROUPS: dict[str, tuple[int, int]] = {"A": (1, 3), "B": (4, 7), "C": (8, 16), "D": (17, 28), "E": (29, 30)}
KOPPEN_LABELS = {"A": "tropical", "B": "arid", "C": "temperate", "D": "cold", "E": "polar"}
CONUS_BOX = (-125.0, -66.5, 24.5, 49.5)  # lon_min, lon_max, lat_min, lat_max

#: Land-cover groups of ESA CCI top-level classes (1..22), as in spec §(n): 1-4 agriculture; 5-10 and
#: 16-17 forest; 11-15 grassland/shrubland; 18 wetland; 19 and above other (urban, bare, water, ice).
LANDCOVER_GROUPS: dict[str, tuple[int, ...]] = {
    "agriculture": (1, 2, 3, 4),
    "forest": (5, 6, 7, 8, 9, 10, 16, 17),
    "grass_shrub": (11, 12, 13, 14, 15),
    "wetland": (18,),
    "other": (19, 20, 21, 22),
}


def cell_area(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Area of regular lat/lon cells (m2), (lat, lon): the spec's spherical trapezoid.

    area = 1/2 (L_top + L_bot) H with L = 2 pi R cos(|lat +- dlat/2|) / 360 * dlon and
    H = pi R / 180 * dlat (R = 6,371,008.8 m).
    """
    lat = np.asarray(lat, dtype=float)
    dlat = float(np.abs(np.diff(lat)).mean()) if lat.size > 1 else 0.5
    dlon = float(np.abs(np.diff(np.asarray(lon, dtype=float))).mean()) if np.size(lon) > 1 else 0.5
    top = np.clip(np.abs(lat + dlat / 2), 0, 90)
    bot = np.clip(np.abs(lat - dlat / 2), 0, 90)
    ltop = 2 * np.pi * EARTH_RADIUS_M * np.cos(np.deg2rad(top)) / 360.0 * dlon
    lbot = 2 * np.pi * EARTH_RADIUS_M * np.cos(np.deg2rad(bot)) / 360.0 * dlon
    h = np.pi * EARTH_RADIUS_M / 180.0 * dlat
    return np.repeat((0.5 * (ltop + lbot) * h)[:, None], np.size(lon), axis=1)


@dataclass(frozen=True)
class Region:
    """A named region: ``kind`` is globe | continent | koppen | landcover | box | conus | polygon."""

    kind: str = "globe"
    value: str | tuple[float, float, float, float] | None = None
    label: str = "Globe"


def box_mask(lat: np.ndarray, lon: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Cells whose centre lies in (lon_min, lon_max, lat_min, lat_max); handles boxes across 180°."""
    lon_min, lon_max, lat_min, lat_max = box
    la = (lat >= lat_min) & (lat <= lat_max)
    lo = (lon >= lon_min) & (lon <= lon_max) if lon_min <= lon_max else (lon >= lon_min) | (lon <= lon_max)
    return la[:, None] & lo[None, :]


#: A ring: (lon, lat) positions in degrees; a polygon: its exterior ring, then its holes.
Ring = list[tuple[float, float]]
PolygonRings = list[Ring]
_POLYGON_TYPES = ("Polygon", "MultiPolygon")


def parse_geojson(geojson: str | bytes | Mapping, *, other_geometries: str = "error") -> list[PolygonRings]:
    """The one GeoJSON parser: a Polygon, MultiPolygon, Feature or FeatureCollection -> validated polygons.

    Every position is ``[lon, lat]`` (an optional third value, e.g. elevation, is dropped) of finite
    numbers within lon -180..180 and lat -90..90 degrees (RFC 7946); every ring has at least four
    positions; every polygon at least one ring (the exterior, then holes). Error messages name what
    is wrong and never repeat the input's text (they are shown to users as they are).

    Args:
        geojson: GeoJSON text (str or UTF-8 bytes) or an already parsed mapping.
        other_geometries: ``"error"`` (every geometry must be a (Multi)Polygon) or ``"skip"`` (other
            geometries, e.g. Points of a FeatureCollection, are left out; at least one polygon must remain).

    Returns:
        One entry per polygon (a MultiPolygon gives several), each a list of rings of (lon, lat) tuples.

    Raises:
        ValueError: not JSON, not a GeoJSON object, no (Multi)Polygon, or a malformed ring or position.

    >>> parse_geojson('{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}')
    [[[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 0.0)]]]
    """
    if other_geometries not in ("error", "skip"):
        raise ValueError(f"other_geometries: expected 'error' or 'skip', found {other_geometries!r}")
    obj = _geojson_object(geojson)
    geoms = _geojson_geometries(obj)
    polygons = [g for g in geoms if isinstance(g, Mapping) and g.get("type") in _POLYGON_TYPES]
    if not polygons or (other_geometries == "error" and len(polygons) != len(geoms)):
        raise ValueError("the GeoJSON must contain Polygon or MultiPolygon geometries (lon/lat)")
    out: list[PolygonRings] = []
    for geom in polygons:
        coords = geom.get("coordinates")
        if geom["type"] == "Polygon":
            out.append(_polygon_rings(coords))
            continue
        if not isinstance(coords, list) or not coords:
            raise ValueError("a MultiPolygon needs at least one polygon")
        out += [_polygon_rings(p) for p in coords]
    return out


def _geojson_object(geojson: str | bytes | Mapping) -> Mapping:
    """The top-level GeoJSON object, parsed from text when needed."""
    if isinstance(geojson, Mapping):
        return geojson
    if isinstance(geojson, bytes | bytearray):
        try:
            geojson = bytes(geojson).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("not a GeoJSON file: not UTF-8 text") from exc
    if not isinstance(geojson, str):
        raise ValueError(f"GeoJSON: expected text or a mapping, found {type(geojson).__name__}")
    try:
        obj = json.loads(geojson)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a GeoJSON file: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    if not isinstance(obj, Mapping):
        raise ValueError("not a GeoJSON object")
    return obj


def _geojson_geometries(obj: Mapping) -> list[object]:
    """The geometry objects of a FeatureCollection, a Feature or a bare geometry (unchecked)."""
    if obj.get("type") == "FeatureCollection":
        features = obj.get("features")
        features = features if isinstance(features, list) else []
        return [f.get("geometry") or {} for f in features if isinstance(f, Mapping)]
    if obj.get("type") == "Feature":
        return [obj.get("geometry") or {}]
    return [obj]


def _polygon_rings(rings: object) -> PolygonRings:
    """A Polygon's ``coordinates``: a non-empty list of rings of at least four positions."""
    if not isinstance(rings, list) or not rings:
        raise ValueError("a Polygon needs at least one ring of positions")
    out = []
    for ring in rings:
        if not isinstance(ring, list) or len(ring) < 4:
            raise ValueError("every ring needs at least 4 positions (closed)")
        out.append([_position(p) for p in ring])
    return out


def _position(pos: object) -> tuple[float, float]:
    """``[lon, lat]`` or ``[lon, lat, z]`` of finite numbers (not booleans) in degrees -> (lon, lat)."""
    if not (isinstance(pos, list) and 2 <= len(pos) <= 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in pos)):
        raise ValueError("every position must be [lon, lat] with finite numbers")
    if not (-180 <= pos[0] <= 180 and -90 <= pos[1] <= 90):
        raise ValueError("positions must be lon/lat degrees (lon -180..180, lat -90..90)")
    return float(pos[0]), float(pos[1])


def polygon_mask(lat: np.ndarray, lon: np.ndarray, geojson: str | Mapping) -> np.ndarray:
    """Cells whose centre is inside a GeoJSON (Multi)Polygon / Feature / FeatureCollection (lon/lat).

    Parsed by :func:`parse_geojson`; other geometries of a collection (points, lines) are skipped.
    """
    import shapely

    polygons = [shapely.Polygon(rings[0], rings[1:]) for rings in parse_geojson(geojson, other_geometries="skip")]
    geom = shapely.union_all(polygons)
    LON, LAT = np.meshgrid(lon, lat)
    return shapely.contains_xy(geom, LON, LAT)


def region_mask(region: Region, lat: np.ndarray, lon: np.ndarray, fields: xr.Dataset | None = None) -> np.ndarray:
    """Boolean (lat, lon) mask of ``region`` on the grid; ``fields`` holds continent/Köppen/land cover."""
    lat, lon = np.asarray(lat), np.asarray(lon)
    shape = (lat.size, lon.size)
    if region.kind == "globe":
        return np.ones(shape, bool)
    if region.kind in ("box", "conus"):
        return box_mask(lat, lon, CONUS_BOX if region.kind == "conus" else tuple(region.value))  # type: ignore[arg-type]
    if region.kind == "polygon":
        return polygon_mask(lat, lon, region.value)  # type: ignore[arg-type]
    if fields is None:
        raise ValueError(f"region kind {region.kind!r} needs the world's covariate fields")
    if region.kind == "continent":
        da = fields["continent"]
        names = str(da.attrs.get("flag_meanings", "")).split()
        codes = list(da.attrs.get("flag_values", range(len(names))))
        want = str(region.value).replace(" ", "_")
        if want not in names:
            raise ValueError(f"unknown continent {region.value!r}; expected one of {names}")
        return np.asarray(da.values == codes[names.index(want)])
    if region.kind == "koppen":
        lo, hi = KOPPEN_GROUPS[str(region.value)]
        v = fields["Koppen_Climate_2018"].values
        return np.asarray((v >= lo) & (v <= hi))
    if region.kind == "landcover":
        return np.isin(fields["ESA_Land_Cover"].values, LANDCOVER_GROUPS[str(region.value)])
    raise ValueError(f"unknown region kind {region.kind!r}")


def total_pg(stock_kg_m2: np.ndarray, area_m2: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Area-weighted total in Pg C: sum(stock [kg m-2] x 1000 x area [m2]) / 1e15 over finite cells."""
    v = np.asarray(stock_kg_m2, dtype=float)
    ok = np.isfinite(v) if mask is None else np.isfinite(v) & mask
    return float((v[ok] * 1000.0 * area_m2[ok]).sum() / PG)
