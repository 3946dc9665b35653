"""Build ``assets/geo/basemap_110m.json``: Natural Earth 1:110m land, lakes and country borders, offline.

Inputs (both from ordinary package registries, nothing downloaded at run time):

* ``world-atlas@2.0.2`` from npm (``npm pack world-atlas@2.0.2``; ISC, Natural Earth public domain):
  ``land-110m.json`` (land polygons) and ``countries-110m.json`` (borders = arcs shared by two countries);
* cartopy's wheel (BSD-3; Natural Earth public domain): ``cartopy/tests/lakes_shapefile/ne_110m_lakes.shp``.

Usage::

    python scripts/build_basemap.py /path/to/world-atlas/package [out.json]
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from proda_engine.data.outlines import decode_arcs, decode_topojson

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "assets" / "geo" / "basemap_110m.json"
NDIGITS = 3


def _r(a: np.ndarray) -> list[list[float]]:
    return np.round(np.asarray(a, float), NDIGITS).tolist()


def land_polygons(topo: dict) -> list[list[list[list[float]]]]:
    """Polygons (exterior ring first, then holes) of the ``land`` object, lon/lat degrees."""
    return [[_r(ring) for ring in poly] for f in decode_topojson(topo, "land") for poly in f["polygons"]]


def border_lines(topo: dict) -> list[list[list[float]]]:
    """Arcs used by two country geometries (land borders; coast arcs are used once)."""
    uses: Counter[int] = Counter()

    def walk(x) -> None:
        if isinstance(x, int):
            uses[x if x >= 0 else ~x] += 1
        else:
            for y in x:
                walk(y)

    for g in topo["objects"]["countries"]["geometries"]:
        walk(g.get("arcs", []))
    arcs = decode_arcs(topo)
    return [_r(arcs[i]) for i, n in sorted(uses.items()) if n >= 2]


def lake_polygons(shp: Path) -> list[list[list[list[float]]]]:
    """Lake polygons from a Natural Earth shapefile (pure-Python pyshp, no GDAL)."""
    import shapefile

    out = []
    for shape in shapefile.Reader(str(shp)).shapes():
        pts = np.asarray(shape.points, float)
        parts = [*shape.parts, len(pts)]
        rings = [pts[a:b] for a, b in itertools.pairwise(parts)]
        out.append([_r(r) for r in rings])
    return out


def main() -> None:
    pkg = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else OUT
    import cartopy

    lakes = Path(cartopy.__file__).parent / "tests" / "lakes_shapefile" / "ne_110m_lakes.shp"
    data = {
        "source": "Natural Earth 1:110m (public domain) via npm world-atlas@2.0.2 (land, borders) and the "
                  "cartopy 0.25 wheel (ne_110m_lakes); built by scripts/build_basemap.py",
        "land": land_polygons(json.loads((pkg / "land-110m.json").read_text())),
        "borders": border_lines(json.loads((pkg / "countries-110m.json").read_text())),
        "lakes": lake_polygons(lakes),
    }
    out.write_text(json.dumps(data, separators=(",", ":")))
    print(f"{out}: {out.stat().st_size / 1e3:.0f} kB, {len(data['land'])} land polygons, "
          f"{len(data['borders'])} border arcs, {len(data['lakes'])} lakes")


if __name__ == "__main__":
    main()
