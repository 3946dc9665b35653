"""The one GeoJSON parser (products.regions.parse_geojson) and the masks and regions built on it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from proda_engine import api
from proda_engine.products.regions import parse_geojson, polygon_mask

SQUARE = [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]]
HOLE = [[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0], [1.0, 1.0]]


def test_every_container_gives_the_same_rings():
    poly = {"type": "Polygon", "coordinates": [SQUARE, HOLE]}
    want = [[[tuple(p) for p in SQUARE], [tuple(p) for p in HOLE]]]
    feature = {"type": "Feature", "properties": {}, "geometry": poly}
    for obj in (poly, feature, {"type": "FeatureCollection", "features": [feature]}):
        assert parse_geojson(obj) == want
        assert parse_geojson(json.dumps(obj)) == want
        assert parse_geojson(json.dumps(obj).encode()) == want
    multi = {"type": "MultiPolygon", "coordinates": [[SQUARE], [[[x + 10, y] for x, y in SQUARE]]]}
    assert [len(p) for p in parse_geojson(multi)] == [1, 1]
    z = {"type": "Polygon", "coordinates": [[[x, y, 100.0] for x, y in SQUARE]]}  # elevation dropped
    assert parse_geojson(z) == [[[tuple(p) for p in SQUARE]]]


@pytest.mark.parametrize(("obj", "message"), [
    ("{oops", "not a GeoJSON file"),
    ("[1, 2]", "not a GeoJSON object"),
    ({"type": "Point", "coordinates": [1, 2]}, "Polygon or MultiPolygon"),
    ({"type": "FeatureCollection", "features": []}, "Polygon or MultiPolygon"),
    ({"type": "Polygon", "coordinates": []}, "at least one ring"),
    ({"type": "MultiPolygon", "coordinates": []}, "at least one polygon"),
    ({"type": "Polygon", "coordinates": [SQUARE[:3]]}, "at least 4 positions"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, float("nan")], [0, 0]]]}, "finite numbers"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, True], [0, 0]]]}, "finite numbers"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [200, 0], [1, 1], [0, 0]]]}, "lon/lat degrees"),
])
def test_clear_errors(obj, message):
    with pytest.raises(ValueError, match=message):
        parse_geojson(obj)


def test_mask_and_region():
    lat = np.array([0.5, 2.0, 3.5, 6.0])
    lon = np.array([0.5, 2.0, 3.5, 12.0])
    m = polygon_mask(lat, lon, {"type": "Polygon", "coordinates": [SQUARE, HOLE]})
    want = np.zeros((4, 4), bool)
    want[:3, :3] = True
    want[1, 1] = False  # the hole's centre
    np.testing.assert_array_equal(m, want)
    # the mask and the region constructor skip other geometries of a collection (as before the one
    # parser); asked to, the constructor refuses them at once (the dashboard's upload does)
    mixed = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [12.0, 6.0]}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [SQUARE, HOLE]}}]}
    np.testing.assert_array_equal(polygon_mask(lat, lon, mixed), want)
    with pytest.raises(ValueError, match="Polygon or MultiPolygon"):
        api.polygon_region(json.dumps(mixed), other_geometries="error")
    assert api.polygon_region(json.dumps(mixed)).kind == "polygon"
    region = api.polygon_region(json.dumps({"type": "Polygon", "coordinates": [SQUARE]}), "square")
    assert region.kind == "polygon" and region.label == "square"
    with pytest.raises(ValueError, match="other_geometries"):
        parse_geojson({"type": "Polygon", "coordinates": [SQUARE]}, other_geometries="keep")
