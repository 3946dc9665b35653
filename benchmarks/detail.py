"""Zoom for detail: latency of ``api.detail_map`` (0.05° what-if over a view) in-process.

For a view of ``--span`` x ``--span`` degrees centred on (``--lon``, ``--lat``) of the world: the first
detail (cold tiles), the same view again (tile cache), the what-if of a new slider position (new multipliers:
new tiles), the SOC change (the what-if minus the baseline, both cached by then), a pan by half a view
(half the tiles new) and a zoom into the view (every tile cached). Ratios against the coarse what-if of the
whole world, measured in the same run.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/detail.py [--world default] [--span 10] [--lon 10 --lat 50]
"""

from __future__ import annotations

import argparse
import time


def _timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default=None, help="world name (default: the default world)")
    ap.add_argument("--span", type=float, default=10.0, help="view width and height, degrees")
    ap.add_argument("--lon", type=float, default=10.0, help="view centre longitude")
    ap.add_argument("--lat", type=float, default=50.0, help="view centre latitude")
    args = ap.parse_args()

    from proda_engine import api
    from proda_engine.products.highres import TILE_CACHE

    world, h = args.world, args.span / 2
    bbox = (args.lon - h, args.lon + h, args.lat - h, args.lat + h)
    api.world_engine(world)
    _, t_coarse0 = _timed(api.what_if, {"A": 0.0}, world=world)
    res, t_coarse = _timed(api.what_if, {"A": 0.05}, world=world)
    rows = []
    # the process's first detail loads the compiled kernels and dask: measured apart, on a 1° view elsewhere
    da, t = _timed(api.detail_map, (args.lon + 3 * h, args.lon + 3 * h + 1, args.lat - 0.5, args.lat + 0.5),
                   world=world)
    rows.append(("first detail of the process (1° view elsewhere)", t, da))
    da, t = _timed(api.detail_map, bbox, world=world)
    rows.append(("first view (cold tiles), baseline", t, da))
    da, t = _timed(api.detail_map, bbox, world=world)
    rows.append(("same view again (tile cache)", t, da))
    da, t = _timed(api.detail_map, bbox, multipliers=res.multipliers, world=world)
    rows.append(("slider step: CUE +5 % (new multipliers)", t, da))
    da, t = _timed(api.detail_map, bbox, variable="soc_change", multipliers=res.multipliers, world=world)
    rows.append(("SOC change of that step (both cached)", t, da))
    pan = (bbox[0] + h, bbox[1] + h, bbox[2], bbox[3])
    da, t = _timed(api.detail_map, pan, multipliers=res.multipliers, world=world)
    rows.append(("pan by half a view (half the tiles new)", t, da))
    zoom = (args.lon - h / 2, args.lon + h / 2, args.lat - h / 2, args.lat + h / 2)
    da, t = _timed(api.detail_map, zoom, multipliers=res.multipliers, world=world)
    rows.append(("zoom into the view (all cached)", t, da))
    print(f"world {api.world_name() if world is None else world}; view {args.span:g}° x {args.span:g}° at "
          f"({args.lon:g}, {args.lat:g}); coarse what-if of the whole world: baseline {t_coarse0 * 1000:.0f} ms, "
          f"CUE +5 % {t_coarse * 1000:.0f} ms")
    for label, t, da in rows:
        print(f"  {label:<45s} {t * 1000:8.0f} ms   {da.shape[0]}x{da.shape[1]} grid, {da.attrs['n_cells']:,} land "
              f"cells")
    print(f"  tile cache: {len(TILE_CACHE)} tiles, {TILE_CACHE.nbytes / 1e6:.1f} MB, {TILE_CACHE.stats}")


if __name__ == "__main__":
    main()
