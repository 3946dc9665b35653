"""Vendored coastlines and the TopoJSON decoder (no network, no geodata package)."""

from __future__ import annotations

import numpy as np

from proda_engine.data.outlines import (
    COASTLINES_110M,
    coastlines_from_topojson,
    decode_topojson,
    load_coastlines,
    split_antimeridian,
)


def test_vendored_coastlines_are_small_and_sane():
    assert COASTLINES_110M.stat().st_size < 200_000
    lines = load_coastlines()
    assert len(lines) > 100
    pts = np.concatenate(lines)
    assert pts.shape[1] == 2
    assert pts[:, 0].min() >= -180 and pts[:, 0].max() <= 180
    assert pts[:, 1].min() >= -90 and pts[:, 1].max() <= 90
    # no line jumps across the map (antimeridian split) -> no full-width stripes when drawn
    for line in lines:
        assert np.abs(np.diff(line[:, 0])).max(initial=0) < 180
    # Chukotka (east of 180) and Fiji/Alaska (west of -170) are both present
    assert (pts[:, 0] < -170).any() and (pts[:, 0] > 170).any()


def test_split_antimeridian():
    ring = np.array([[170.0, 60], [179.0, 61], [-179.0, 62], [-170.0, 63], [-179.5, 64], [175.0, 64], [172.0, 65]])
    parts = split_antimeridian(ring)
    assert len(parts) == 3
    assert all(np.abs(np.diff(p[:, 0])).max() < 180 for p in parts)
    pole = np.array([[-180.0, -85], [-180.0, -90], [180.0, -90], [180.0, -85]])
    assert split_antimeridian(pole) == []


def test_topojson_decoder_delta_and_reversed_arcs():
    topo = {
        "type": "Topology",
        "transform": {"scale": [1.0, 1.0], "translate": [10.0, 20.0]},
        "arcs": [[[0, 0], [2, 0], [0, 2]], [[2, 2], [-2, 0], [0, -2]]],
        "objects": {
            "land": {
                "type": "GeometryCollection",
                "geometries": [
                    {"type": "Polygon", "arcs": [[0, 1]], "id": "001", "properties": {"name": "square"}},
                    {"type": "MultiPolygon", "arcs": [[[~1, ~0]]]},
                ],
            }
        },
    }
    feats = decode_topojson(topo, "land")
    ring = feats[0]["polygons"][0][0]
    np.testing.assert_allclose(ring, [[10, 20], [12, 20], [12, 22], [10, 22], [10, 20]])
    assert feats[0]["id"] == "001" and feats[0]["name"] == "square"
    rev = feats[1]["polygons"][0][0]
    np.testing.assert_allclose(rev, ring[::-1])
    lines = coastlines_from_topojson(topo)
    assert len(lines) == 2 and lines[0][0] == [10.0, 20.0]
