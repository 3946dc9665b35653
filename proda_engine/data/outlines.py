"""Vendored coastline outlines for offline maps, and a small TopoJSON decoder.

The dashboard must draw coastlines with no network (cartopy/geoviews features download Natural Earth
at render time). ``assets/geo/coastlines_110m.json`` holds Natural Earth 1:110m land outlines (public
domain; via npm ``world-atlas@2.0.2``, ISC), decoded by :func:`decode_topojson` and split at the
antimeridian by :func:`split_antimeridian`, as a plain JSON list of ``[[lon, lat], ...]`` line strings
in degrees (lon -180..180).

>>> lines = load_coastlines()
>>> len(lines) > 100 and lines[0].shape[1] == 2
True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

#: Repository ``assets/geo`` folder (vendored outlines).
GEO_ASSETS = Path(__file__).resolve().parents[2] / "assets" / "geo"
COASTLINES_110M = GEO_ASSETS / "coastlines_110m.json"


def decode_arcs(topology: dict[str, Any]) -> list[np.ndarray]:
    """Decode the quantized, delta-encoded TopoJSON arcs to absolute lon/lat arrays (n, 2), degrees.

    TopoJSON stores each arc as integer deltas: the cumulative sum gives quantized positions, then
    ``position * transform.scale + transform.translate`` gives coordinates.
    """
    tr = topology.get("transform")
    out = []
    for arc in topology["arcs"]:
        a = np.asarray(arc, dtype=float)
        if tr is not None:
            a = np.cumsum(a, axis=0) * np.asarray(tr["scale"]) + np.asarray(tr["translate"])
        out.append(a)
    return out


def _ring(arc_ids: list[int], arcs: list[np.ndarray]) -> np.ndarray:
    """Join arcs into one ring; a negative index ``~i`` means arc ``i`` reversed."""
    parts = []
    for k, i in enumerate(arc_ids):
        a = arcs[i] if i >= 0 else arcs[~i][::-1]
        # consecutive arcs share their joining point: keep it once
        parts.append(a if k == 0 else a[1:])
    return np.concatenate(parts, axis=0)


def decode_topojson(topology: dict[str, Any], obj: str) -> list[dict[str, Any]]:
    """Decode one TopoJSON object into features ``{"id", "name", "polygons"}``.

    ``polygons`` is a list of polygons, each a list of rings (first = exterior, rest = holes), each an
    (n, 2) array of lon/lat degrees. Only (Multi)Polygon geometries are handled (all world-atlas has).
    """
    arcs = decode_arcs(topology)
    geoms = topology["objects"][obj]
    geoms = geoms["geometries"] if geoms["type"] == "GeometryCollection" else [geoms]
    feats = []
    for g in geoms:
        if g["type"] == "Polygon":
            polys = [g["arcs"]]
        elif g["type"] == "MultiPolygon":
            polys = g["arcs"]
        else:
            continue
        feats.append(
            {
                "id": g.get("id"),
                "name": (g.get("properties") or {}).get("name"),
                "polygons": [[_ring(r, arcs) for r in poly] for poly in polys],
            }
        )
    return feats


def split_antimeridian(line: np.ndarray, *, max_jump: float = 180.0, pole_lat: float = 89.9) -> list[np.ndarray]:
    """Split a lon/lat line wherever consecutive points jump by more than ``max_jump`` degrees of longitude.

    Rings that cross +-180 (Chukotka, Fiji) or enclose a pole (Antarctica) would otherwise draw
    full-width horizontal stripes in a plain lon/lat plot. Points on the pole edge (|lat| >=
    ``pole_lat``) are dropped too, which removes Antarctica's closing segment along the map bottom.
    """
    keep = np.abs(line[:, 1]) < pole_lat
    jump = np.abs(np.diff(line[:, 0])) > max_jump
    # a cut after point i when the step i -> i+1 jumps, or either point sits on the pole edge
    cut = jump | ~keep[:-1] | ~keep[1:]
    pieces, start = [], 0
    for i in np.flatnonzero(cut):
        pieces.append(line[start : i + 1])
        start = i + 1
    pieces.append(line[start:])
    return [p[np.abs(p[:, 1]) < pole_lat] for p in pieces if (np.abs(p[:, 1]) < pole_lat).sum() >= 2]


def coastlines_from_topojson(topology: dict[str, Any], obj: str = "land", ndigits: int = 3) -> list[list[list[float]]]:
    """Land outlines as JSON-ready line strings, split at the antimeridian and rounded to ``ndigits``."""
    lines: list[list[list[float]]] = []
    for feat in decode_topojson(topology, obj):
        for poly in feat["polygons"]:
            for ring in poly:
                for piece in split_antimeridian(ring):
                    lines.append(np.round(piece, ndigits).tolist())
    return lines


def load_coastlines(path: str | Path | None = None) -> list[np.ndarray]:
    """Load the vendored coastlines: a list of (n, 2) float arrays of [lon, lat] in degrees.

    Needs no network and no geodata package; ``path`` defaults to ``assets/geo/coastlines_110m.json``.
    """
    p = Path(path) if path is not None else COASTLINES_110M
    with open(p, encoding="utf-8") as fh:
        data = json.load(fh)
    lines = data["lines"] if isinstance(data, dict) else data
    return [np.asarray(line, dtype=float) for line in lines]
