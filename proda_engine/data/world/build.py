"""Building a world: normalised options and their cache key, the netCDF encodings, and
:func:`build_world`, which derives the surface from the base file and writes ``forcing.nc``,
``covariates.nc``, ``truth_parameters.nc``, ``sites.csv``, ``horizons.csv`` and ``manifest.json``
atomically (through :mod:`proda_engine.data.writers`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from proda_engine.data.world.base import coarsen_base, load_base
from proda_engine.data.world.covariates import covariate_dataset, derive_surface
from proda_engine.data.world.forcing import derive_forcing_cells, forcing_dataset
from proda_engine.data.world.sites import sample_sites
from proda_engine.data.world.soils import SOIL_SOURCES
from proda_engine.data.world.tables import (
    BASE_WORLD,
    BUILDER_VERSION,
    FILL,
    GRID_NAME,
    WorldPaths,
    resolve_region,
)
from proda_engine.data.world.truth import truth_dataset, truth_theta
from proda_engine.data.writers import atomic_write, sha256_file, write_netcdf_atomic, write_text_atomic

#: BitRound mantissa bits of the forcing variables (lossy compression below the forcing's accuracy).
FORCING_BITS: dict[str, int] = {"TSOI": 16, "W_SCALAR": 10, "O_SCALAR": 10, "FPI_vr": 10, "CELLSAND": 10}


def world_options(
    region: str | tuple | None = None,
    resolution: float = 0.5,
    seed: int = 0,
    exclude_antarctica: bool = True,
    n_sites: int | None = None,
) -> dict[str, Any]:
    """Normalised build options (what the cache key hashes besides the base file and builder version)."""
    box = resolve_region(region)
    k = resolution / 0.5
    if abs(k - round(k)) > 1e-9 or round(k) < 1 or 360 % round(k) or 720 % round(k):
        raise ValueError(f"resolution must be 0.5 x an integer dividing 360 (0.5, 1, 1.5, 2, ...), got {resolution}")
    return {
        "region": [float(b) for b in box],
        "region_name": region if isinstance(region, str) else None,
        "resolution": float(resolution),
        "seed": int(seed),
        "exclude_antarctica": bool(exclude_antarctica),
        "n_sites": None if n_sites is None else int(n_sites),
    }


def cache_key(base_sha: str, opts: dict[str, Any]) -> str:
    """SHA-256 over (base file checksum, :data:`BUILDER_VERSION`, normalised options): a world's identity."""
    blob = json.dumps({"base": base_sha, "builder": BUILDER_VERSION, "options": opts}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def nc_encoding(ds: xr.Dataset, bits: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """zlib + shuffle for every variable; optional BitRound to ``bits`` mantissa bits per variable.

    Floating-point variables get ``_FillValue`` = :data:`FILL` (in their own precision), integer
    variables and coordinates none. BitRound's ``significant_digits`` counts *binary* digits: 10 bits
    is a relative error below 5e-4, 16 bits below 8e-6 (0.002 K on TSOI).
    """
    enc: dict[str, dict[str, Any]] = {}
    for v, da in ds.data_vars.items():
        e: dict[str, Any] = {"zlib": True, "complevel": 4, "shuffle": True}
        if np.issubdtype(da.dtype, np.floating):
            e["_FillValue"] = np.float32(FILL) if da.dtype == np.float32 else FILL
            if bits and v in bits:
                e.update(significant_digits=bits[v], quantize_mode="BitRound")
        else:
            e["_FillValue"] = None
        enc[v] = e
    for c in ds.coords:
        enc[c] = {"_FillValue": None}
    return enc


def region_slices(lat: np.ndarray, lon: np.ndarray, box: tuple[float, float, float, float]) -> tuple[slice, slice]:
    """Row and column slices of the grid cells whose centres lie in ``box`` (lon_min, lon_max, lat_min, lat_max)."""
    lon_min, lon_max, lat_min, lat_max = box
    ii = np.flatnonzero((lat >= lat_min) & (lat <= lat_max))
    jj = np.flatnonzero((lon >= lon_min) & (lon <= lon_max))
    if ii.size == 0 or jj.size == 0:
        raise ValueError(f"region {box} contains no grid cell centres")
    return slice(ii[0], ii[-1] + 1), slice(jj[0], jj[-1] + 1)


def build_world(
    out_dir: str | os.PathLike,
    region: str | tuple[float, float, float, float] | None = None,
    resolution: float = 0.5,
    seed: int = 0,
    exclude_antarctica: bool = True,
    n_sites: int | None = None,
    base_path: str | os.PathLike | None = None,
) -> WorldPaths:
    """Derive the world files (:mod:`proda_engine.data.world`) into ``out_dir`` from the base file; returns their paths.

    Args:
        out_dir: folder to write (created).
        region: a name in :data:`REGIONS` or (lon_min, lon_max, lat_min, lat_max); None = globe.
        resolution: grid spacing in degrees, 0.5 x an integer (coarser grids aggregate the base
            world by blocks before deriving).
        seed: seed of every synthetic random field (same seed -> identical files).
        exclude_antarctica: drop cells south of 60 S from the land mask.
        n_sites: number of synthetic profile sites.
        base_path: alternative base file (default: the committed one).

    Deterministic: the same options and base file give byte-identical arrays.
    """
    t0 = time.perf_counter()
    opts = world_options(region, resolution, seed, exclude_antarctica, n_sites)
    out = WorldPaths.in_folder(out_dir)
    out.root.mkdir(parents=True, exist_ok=True)
    base = load_base(base_path)
    k = round(resolution / 0.5)
    if k > 1:
        base = coarsen_base(base, k)
    surface = derive_surface(base, seed, exclude_antarctica)
    theta = truth_theta(surface, seed)

    lat_all, lon_all = base["lat"].values, base["lon"].values
    sl = region_slices(lat_all, lon_all, tuple(opts["region"]))
    lat, lon = lat_all[sl[0]], lon_all[sl[1]]
    mask = surface.mask[sl]
    if not mask.any():
        raise ValueError(f"region {opts['region']} contains no land cells")
    ii_r, jj_r = np.nonzero(mask)
    ii_g, jj_g = ii_r + sl[0].start, jj_r + sl[1].start
    fc = derive_forcing_cells(surface, (ii_g, jj_g))
    attrs = {
        "title": "PRODA default world (synthetic CLM5-like climatology derived from real offline sources)",
        "source": "proda_engine.data.world.build_world from assets/world/base_world_0p5.nc; see docs/world.md",
        "builder_version": BUILDER_VERSION,
        "options": json.dumps(opts),
        "Conventions": "CF-1.8",
        "grid": GRID_NAME,
    }
    fds = forcing_dataset(fc, ii_r, jj_r, lat, lon, attrs)
    write_netcdf_atomic(fds, out.forcing, encoding=nc_encoding(fds, FORCING_BITS))

    cds = covariate_dataset(surface, sl, mask, lat, lon, base["cell_area"].values[sl[0]], attrs)
    write_netcdf_atomic(cds, out.covariates, encoding=nc_encoding(cds))
    tds = truth_dataset(theta, sl, mask, lat, lon, attrs)
    write_netcdf_atomic(tds, out.truth, encoding=nc_encoding(tds))

    sites, horizons = sample_sites(cds, n_sites=n_sites, seed=seed)
    atomic_write(out.sites, partial(sites.to_csv, index=False))
    atomic_write(out.horizons, partial(horizons.to_csv, index=False))
    elapsed = time.perf_counter() - t0
    manifest = {
        "builder_version": BUILDER_VERSION,
        "options": opts,
        "base_sha256": sha256_file(Path(base_path) if base_path else BASE_WORLD),
        "n_land_cells": int(mask.sum()),
        "soil_source_cells": {
            name: int(((surface.soil_source[sl] == c) & mask).sum()) for c, name in SOIL_SOURCES.items()
        },
        "n_sites": len(sites),
        "build_seconds": round(elapsed, 2),
        "files": {n: p.name for n, p in asdict(out).items() if n not in ("root", "manifest")},
    }
    manifest["key"] = cache_key(manifest["base_sha256"], opts)
    write_text_atomic(json.dumps(manifest, indent=2), out.manifest)
    return out
