"""The base grid: loading the committed base file, the world's land mask, block coarsening, and the
helpers every derivation shares (named random streams, smooth noise fields, global standardisation,
the logistic function, CF-style variables and scattering cell values onto the grid).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage

from proda_engine.data.geosources import block_mode
from proda_engine.data.world.tables import BASE_WORLD, HWSD_FIELDS


def named_rng(seed: int, name: str) -> np.random.Generator:
    """An independent random stream per named field, so adding a field never shifts the others."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function 1 / (1 + e^-x) (dimensionless)."""
    return 1.0 / (1.0 + np.exp(-x))


def smooth_noise(seed: int, name: str, shape: tuple[int, int], sigma_cells: float) -> np.ndarray:
    """Spatially smooth standard-normal field on the global grid (wraps in longitude).

    White noise blurred by a Gaussian of ``sigma_cells`` cells, then rescaled to unit variance. Made
    on the whole globe before any region is cut out, so a region is exactly a subset of the globe.
    """
    white = named_rng(seed, name).standard_normal(shape)
    f = ndimage.gaussian_filter(white, sigma=sigma_cells, mode=("nearest", "wrap"))
    return (f - f.mean()) / f.std()


def zscore(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Standardise over the land cells of the **whole globe** (fixed reference for every region)."""
    v = x[mask]
    return (x - v.mean()) / v.std()


def nc_var(dims: tuple[str, ...], data: np.ndarray, units: str, long_name: str, **attrs: Any) -> xr.Variable:
    """An :class:`xarray.Variable` carrying ``units``, ``long_name`` and any further attributes."""
    return xr.Variable(dims, data, {"units": units, "long_name": long_name, **attrs})


def scatter_cells(values: np.ndarray, ii: np.ndarray, jj: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Put cell values (..., C) on a (..., nlat, nlon) float32 grid filled with NaN."""
    out = np.full((*values.shape[:-1], *shape), np.nan, dtype=np.float32)
    out[..., ii, jj] = values
    return out


def load_base(path: str | os.PathLike | None = None) -> xr.Dataset:
    """Load the committed 0.5-degree base world (see :mod:`proda_engine.data.world`) into memory."""
    p = Path(path) if path is not None else BASE_WORLD
    if not p.exists():
        raise FileNotFoundError(f"{p}: base world file not found; rebuild it with scripts/build_base_world.py")
    with xr.open_dataset(p) as ds:
        return ds.load()


def land_mask(base: xr.Dataset, exclude_antarctica: bool = True) -> np.ndarray:
    """World land cells: >= 50 % land (GLOBE), not open water in MODIS (large lakes), optionally lat > -60."""
    lat = base["lat"].values[:, None]
    m = (base["land_fraction"].values >= 0.5) & (base["igbp"].values != 0)
    if exclude_antarctica:
        m &= lat > -60.0
    return m


def global_npp_total(base: xr.Dataset | None = None, exclude_antarctica: bool = True) -> float:
    """Global land NPP of the base world, Pg C/yr: sum of NPP x cell area x land fraction over land cells."""
    b = load_base() if base is None else base
    m = land_mask(b, exclude_antarctica)
    area = b["cell_area"].values[:, None] * b["land_fraction"].values
    return float(np.nansum((b["npp"].values * area)[m]) / 1e15)


def coarsen_base(base: xr.Dataset, k: int) -> xr.Dataset:
    """Aggregate the base world by k x k blocks: area-weighted means, modal classes, summed areas."""
    lf = base["land_fraction"].values
    area = base["cell_area"].values[:, None] * np.ones_like(lf)
    w = np.where(np.isfinite(base["tas"].values[0]), area * np.maximum(lf, 1e-3), 0.0)

    def wmean(a: np.ndarray) -> np.ndarray:
        num = np.nan_to_num(a) * w
        *lead, h, wd = a.shape
        s = num.reshape(*lead, h // k, k, wd // k, k).sum(axis=(-3, -1))
        d = w.reshape(h // k, k, wd // k, k).sum(axis=(-3, -1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(d > 0, s / d, np.nan)

    lat = base["lat"].values.reshape(-1, k).mean(axis=1)
    lon = base["lon"].values.reshape(-1, k).mean(axis=1)
    a_sum = area.reshape(lat.size, k, lon.size, k).sum(axis=(1, 3))
    out = {
        "land_fraction": (("lat", "lon"), (lf * area).reshape(lat.size, k, lon.size, k).sum(axis=(1, 3)) / a_sum),
        "cell_area": (("lat",), a_sum[:, 0]),
    }
    for v in ("elevation", "elevation_std", "npp"):
        out[v] = (("lat", "lon"), wmean(base[v].values))
    # HWSD topsoil: weighted by the soil area of the sub-cells (area x HWSD soil fraction); NaN only
    # where no sub-cell holds a soil
    area_w = None
    if "hwsd_sand" in base:
        frac = np.nan_to_num(base["hwsd_fraction"].values.astype(np.float64)) if "hwsd_fraction" in base else 1.0
        area_w = area * np.where(np.isfinite(base["hwsd_sand"].values), np.maximum(frac, 1e-6), 0.0)
    for v in (*HWSD_FIELDS, "hwsd_fraction"):
        if v not in base:
            continue
        a = base[v].values.astype(np.float64)
        wv = area_w if v != "hwsd_fraction" else area
        num = (np.nan_to_num(a) * wv).reshape(lat.size, k, lon.size, k).sum(axis=(1, 3))
        den = wv.reshape(lat.size, k, lon.size, k).sum(axis=(1, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[v] = (("lat", "lon"), np.where(den > 0, num / den, np.nan))
    for v in ("tas", "pr"):
        out[v] = (("month", "lat", "lon"), np.stack([wmean(x) for x in base[v].values]))
    for v in ("koppen", "igbp", "country", "continent"):
        a = base[v].values
        out[v] = (("lat", "lon"), block_mode(a, k, np.unique(a), ignore=(0,), fallback=0))
    ds = xr.Dataset(out, coords={"lat": lat, "lon": lon, "month": base["month"].values})
    for v in ds.data_vars:
        ds[v].attrs = dict(base[v].attrs)
    return ds

