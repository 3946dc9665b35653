"""Comparison with reference SOC maps (SoilGrids, WISE30sec, HWSD-style products; spec §(n) chapter).

A reference map is read through the catalog (kind ``reference_map``; netCDF or lat/lon GeoTIFF via
:func:`proda_engine.data.read_covariates`), resampled to the model grid, and compared by depth
interval with the gridded products (:func:`proda_engine.products.gridded.gridded_products`):
area-weighted totals over the cells both have, the difference map, the spatial (Pearson) correlation,
RMSE and mean bias.

Resampling (:func:`resample_to_grid`):

* **finer reference** (e.g. SoilGrids 250 m / 1 km, WISE30sec 30"): area-weighted block mean of the
  finite reference cells whose centres fall inside each model cell (weights cos(lat), the area of a
  regular lat/lon cell up to a constant), i.e. the stock-conserving average;
* **coarser or equal reference**: nearest-neighbour lookup of the model cell centre.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from os import PathLike

import numpy as np
import xarray as xr

from proda_engine.products.gridded import INTERVALS, World, suffix
from proda_engine.products.regions import PG, cell_area

#: Patterns that identify the depth interval of a reference variable name (e.g. ``soc_0_30cm``,
#: ``ocs_0-30cm_mean``, ``stock_0_100``).
INTERVAL_PATTERNS: dict[str, str] = {"0-30cm": r"0[-_]30(cm)?(?!\d)", "0-100cm": r"0[-_]100(cm)?(?!\d)",
                                     "0-200cm": r"0[-_]200(cm)?(?!\d)"}


def _step(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x)).mean()) if x.size > 1 else np.nan


def _edges(c: np.ndarray) -> np.ndarray:
    d = _step(c)
    d = 0.5 if not np.isfinite(d) else d
    return np.concatenate([c - d / 2, [c[-1] + d / 2]])


def resample_to_grid(ref: xr.DataArray, lat: np.ndarray, lon: np.ndarray, *, method: str = "auto") -> np.ndarray:
    """Resample a (lat, lon) reference map onto a regular target grid given by cell centres.

    ``method``: ``"auto"`` (block mean when the reference is finer, else nearest), ``"block_mean"``
    or ``"nearest"``. Target cells without any finite reference value are NaN. Both grids must use
    ascending latitude and longitude in -180..180 (as :func:`read_covariates` returns them).
    """
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    rlat = np.asarray(ref["lat"].values, float)
    rlon = np.asarray(ref["lon"].values, float)
    vals = np.asarray(ref.transpose("lat", "lon").values, dtype=float)
    finer = (_step(rlat) < _step(lat) - 1e-9) if rlat.size > 1 and lat.size > 1 else False
    if method == "auto":
        method = "block_mean" if finer else "nearest"
    if method == "nearest":
        ilat = np.clip(np.searchsorted(rlat, lat), 1, max(rlat.size - 1, 1))
        ilat = np.where(np.abs(rlat[ilat - 1] - lat) <= np.abs(rlat[np.minimum(ilat, rlat.size - 1)] - lat),
                        ilat - 1, ilat)
        ilon = np.clip(np.searchsorted(rlon, lon), 1, max(rlon.size - 1, 1))
        ilon = np.where(np.abs(rlon[ilon - 1] - lon) <= np.abs(rlon[np.minimum(ilon, rlon.size - 1)] - lon),
                        ilon - 1, ilon)
        out = vals[np.ix_(ilat, ilon)]
        # a target centre outside the reference's extent gets NaN, not the edge value
        dlat, dlon = _step(rlat), _step(rlon)
        out[(lat < rlat[0] - dlat / 2) | (lat > rlat[-1] + dlat / 2), :] = np.nan
        out[:, (lon < rlon[0] - dlon / 2) | (lon > rlon[-1] + dlon / 2)] = np.nan
        return out
    if method != "block_mean":
        raise ValueError(f"method must be 'auto', 'block_mean' or 'nearest', found {method!r}")
    ely, elx = _edges(lat), _edges(lon)
    iy = np.searchsorted(ely, rlat, side="right") - 1
    ix = np.searchsorted(elx, rlon, side="right") - 1
    oky = (iy >= 0) & (iy < lat.size)
    okx = (ix >= 0) & (ix < lon.size)
    w_lat = np.cos(np.deg2rad(rlat))  # area of a regular lat/lon cell is proportional to cos(lat)
    W = np.where(np.isfinite(vals), w_lat[:, None], 0.0) * oky[:, None] * okx[None, :]
    V = np.where(np.isfinite(vals), vals, 0.0) * W
    tgt = (np.where(oky, iy, 0)[:, None] * lon.size + np.where(okx, ix, 0)[None, :]).ravel()
    num = np.bincount(tgt, weights=V.ravel(), minlength=lat.size * lon.size)
    den = np.bincount(tgt, weights=W.ravel(), minlength=lat.size * lon.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / den, np.nan)
    return out.reshape(lat.size, lon.size)


def guess_intervals(ds: xr.Dataset) -> dict[str, str]:
    """interval -> variable name of a reference Dataset, from names like ``soc_0_30cm``."""
    out: dict[str, str] = {}
    for name in ds.data_vars:
        if name == "valid":
            continue
        for interval, pat in INTERVAL_PATTERNS.items():
            if re.search(pat, str(name)) and interval not in out:
                out[interval] = str(name)
    return out


def open_reference(name: str, catalog=None) -> xr.Dataset:
    """Open a ``reference_map`` source of the data catalog (scale factors and valid ranges applied)."""
    from proda_engine.data import load_catalog

    cat = catalog or load_catalog(check_files=False)
    src = cat.source(name)
    if src.kind != "reference_map":
        raise ValueError(f"catalog source {name!r}: expected kind 'reference_map', found {src.kind!r}")
    return cat.open(name)


def available_references(catalog=None) -> list[str]:
    """Names of catalog ``reference_map`` sources whose files exist."""
    from proda_engine.data import load_catalog

    cat = catalog or load_catalog(check_files=False)
    return [n for n in cat.names("reference_map") if cat.available(n)]


def compare_reference(products: xr.Dataset, reference: xr.Dataset, world: World | None = None, *,
                      variables: Mapping[str, str] | None = None, method: str = "auto",
                      scale: float = 1.0, label: str = "reference"):
    """Compare the ensemble-mean stock maps with a reference map by depth interval.

    Args:
        products: a :func:`gridded_products` Dataset (``soc_stock_<interval>`` in kg C m-2).
        reference: Dataset with one (lat, lon) stock variable per interval (kg C m-2 after ``scale``).
        world: unused except for its grid check (the products carry lat/lon); may be None.
        variables: interval -> reference variable; default :func:`guess_intervals`.
        scale: multiply reference values (e.g. 0.1 for SoilGrids ``ocs`` in t ha-1 x 10 -> kg m-2,
            if the catalog did not already apply it).

    Returns:
        (table, maps): a pandas DataFrame (interval, model_pg, reference_pg, difference_pg, r, rmse,
        bias, n_cells; totals over cells where both are finite) and a Dataset with ``reference_<i>``
        (resampled) and ``difference_<i>`` (model - reference) maps in kg C m-2.
    """
    import pandas as pd

    variables = dict(variables) if variables is not None else guess_intervals(reference)
    if not variables:
        raise ValueError(f"reference: no variable recognised as a depth interval among {list(reference.data_vars)}; "
                         "pass variables={'0-30cm': name, ...}")
    lat, lon = products["lat"].values, products["lon"].values
    area = cell_area(lat, lon)
    maps = xr.Dataset(coords={"lat": products["lat"], "lon": products["lon"]})
    rows = []
    for interval, var in variables.items():
        if interval not in INTERVALS:
            raise ValueError(f"unknown interval {interval!r}; expected one of {list(INTERVALS)}")
        ref = resample_to_grid(reference[var], lat, lon, method=method) * scale
        mod = np.asarray(products[f"soc_stock_{suffix(interval)}"].values, dtype=float)
        both = np.isfinite(ref) & np.isfinite(mod)
        mp = float((mod[both] * 1000.0 * area[both]).sum() / PG)
        rp = float((ref[both] * 1000.0 * area[both]).sum() / PG)
        r = float(np.corrcoef(mod[both], ref[both])[0, 1]) if both.sum() > 2 and ref[both].std() > 0 \
            and mod[both].std() > 0 else float("nan")
        rows.append({"interval": interval, "reference": label, "variable": var, "model_pg": mp, "reference_pg": rp,
                     "difference_pg": mp - rp, "r": r,
                     "rmse": float(np.sqrt(np.mean((mod[both] - ref[both]) ** 2))) if both.any() else np.nan,
                     "bias": float(np.mean(mod[both] - ref[both])) if both.any() else np.nan,
                     "n_cells": int(both.sum())})
        maps[f"reference_{suffix(interval)}"] = (("lat", "lon"), ref,
                                                 {"units": "kg C m-2", "long_name": f"{label} SOC stock {interval}, "
                                                  "resampled to the model grid"})
        maps[f"difference_{suffix(interval)}"] = (("lat", "lon"), np.where(both, mod - ref, np.nan),
                                                  {"units": "kg C m-2", "long_name": f"model - {label}, {interval}"})
    maps.attrs.update({"reference": label, "resampling": method})
    return pd.DataFrame(rows), maps


def plot_reference(maps: xr.Dataset, table, path: str | PathLike) -> object:
    """Difference maps per interval with the totals and correlation in the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [v for v in maps.data_vars if str(v).startswith("difference_")]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, v, (_, row) in zip(axes[0], names, table.iterrows()):
        d = maps[v].values
        lim = float(np.nanpercentile(np.abs(d), 98)) if np.isfinite(d).any() else 1.0
        im = ax.pcolormesh(maps["lon"], maps["lat"], d, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="auto")
        ax.set_title(f"{row.interval}: model {row.model_pg:.1f} vs ref {row.reference_pg:.1f} Pg, r = {row.r:.2f}",
                     fontsize=8)
        fig.colorbar(im, ax=ax, label="kg C m-2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
