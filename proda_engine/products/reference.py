"""Comparison with reference SOC maps (spec §(n) chapter): the shipped Sanderman et al. (2017) map, or any
SoilGrids, WISE30sec or HWSD-style product named in the catalog.

**The shipped reference** (catalog source ``sanderman2017_socs``, :data:`DEFAULT_REFERENCE`):
``assets/reference/whrc_socs_0p5.nc``, SOC stocks 0-30, 0-100 and 0-200 cm (kg C m-2, year 2010 AD) of
Sanderman, Hengl & Fiske (2017), PNAS 114:9575, doi:10.1073/pnas.1706103114 (github.com/whrc/Soil-Carbon-Debt,
MIT licence), aggregated from 5 arc-minutes to 0.5 degree (``scripts/build_reference_map.py``). It opens
without a catalog entry too (a user catalog that lacks it still gets it).

A reference map is read through the catalog (kind ``reference_map``; netCDF or lat/lon GeoTIFF via
:func:`proda_engine.data.read_covariates`), resampled to the model grid, and compared by depth
interval with the gridded products (:func:`proda_engine.products.gridded.gridded_products`) or with any
(lat, lon) stock map (:func:`compare_stock_map`, used by ``api.reference_comparison``): area-weighted
totals over the cells both have, the difference map, the spatial (Pearson) correlation, RMSE and mean
bias, globally and per region (continents, Köppen groups, land-cover groups: :func:`compare_reference_regions`).
Totals follow the products' convention (full cell area, :func:`proda_engine.products.regions.cell_area`).

Resampling (:func:`resample_to_grid`):

* **finer reference** (e.g. SoilGrids 250 m / 1 km, WISE30sec 30"): area-weighted block mean of the
  finite reference cells whose centres fall inside each model cell (weights cos(lat), the area of a
  regular lat/lon cell up to a constant), i.e. the stock-conserving average;
* **coarser or equal reference**: nearest-neighbour lookup of the model cell centre.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import xarray as xr

from proda_engine.products.gridded import INTERVALS, GridWorld, default_regions, suffix
from proda_engine.products.regions import PG, Region, cell_area, region_mask

#: Catalog name of the shipped reference map (Sanderman, Hengl & Fiske 2017).
DEFAULT_REFERENCE = "sanderman2017_socs"
#: Shipped reference maps: catalog name -> (file, short label, citation).
SHIPPED_REFERENCES: dict[str, tuple[Path, str, str]] = {
    DEFAULT_REFERENCE: (
        Path(__file__).resolve().parents[2] / "assets" / "reference" / "whrc_socs_0p5.nc",
        "Sanderman et al. 2017",
        "Sanderman, J., Hengl, T., Fiske, G.J. (2017) Soil carbon debt of 12,000 years of human land use. "
        "PNAS 114(36), 9575-9580. doi:10.1073/pnas.1706103114",
    ),
}

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


def open_reference(name: str | None = None, catalog=None) -> xr.Dataset:
    """Open a ``reference_map`` source of the data catalog (scale factors and valid ranges applied).

    ``name`` defaults to the shipped :data:`DEFAULT_REFERENCE`; a shipped map the catalog does not list
    is read from its file. ``attrs['label']`` carries a short label for tables and plots.
    """
    from proda_engine.data import load_catalog, read_covariates

    name = name or DEFAULT_REFERENCE
    cat = catalog or load_catalog(check_files=False)
    if name not in cat.names() and name in SHIPPED_REFERENCES:
        path, label, citation = SHIPPED_REFERENCES[name]
        ds = read_covariates(path)
        ds.attrs.update(source_name=name, label=label, citation=citation)
        return ds
    src = cat.source(name)
    if src.kind != "reference_map":
        raise ValueError(f"catalog source {name!r}: expected kind 'reference_map', found {src.kind!r}")
    ds = cat.open(name)
    label = SHIPPED_REFERENCES[name][1] if name in SHIPPED_REFERENCES else name
    ds.attrs.setdefault("label", label)
    if name in SHIPPED_REFERENCES:
        ds.attrs.setdefault("citation", SHIPPED_REFERENCES[name][2])
    elif src.attribution:
        ds.attrs.setdefault("citation", src.attribution)
    return ds


def available_references(catalog=None) -> list[str]:
    """Names of catalog ``reference_map`` sources whose files exist, plus the shipped ones."""
    from proda_engine.data import load_catalog

    cat = catalog or load_catalog(check_files=False)
    names = [n for n in cat.names("reference_map") if cat.available(n)]
    return names + [n for n, (p, _, _) in SHIPPED_REFERENCES.items() if n not in names and p.exists()]


def reference_map(depth: str = "0-100cm", name: str | None = None, catalog=None) -> xr.DataArray:
    """One depth interval of a reference map on its own grid (kg C m-2; NaN where it has no data).

    ``attrs``: ``units``, ``long_name``, ``interval``, ``label`` and ``citation`` of the reference.

    >>> reference_map("0-30cm").attrs["label"]        # doctest: +SKIP
    'Sanderman et al. 2017'
    """
    ds = open_reference(name, catalog)
    variables = guess_intervals(ds)
    if depth not in variables:
        raise ValueError(f"reference {ds.attrs.get('source_name', name)!r} has no {depth!r} map; it has "
                         f"{sorted(variables)}")
    da = ds[variables[depth]].where(np.isfinite(ds[variables[depth]]))
    da.attrs.update(units=da.attrs.get("units", "kg C m-2"), interval=depth, label=ds.attrs.get("label", ""),
                    citation=ds.attrs.get("citation", ""),
                    long_name=f"{ds.attrs.get('label', 'reference')} SOC stock {depth}")
    return da.rename(f"reference_{suffix(depth)}")


def _stats(mod: np.ndarray, ref: np.ndarray, area: np.ndarray, sel: np.ndarray) -> dict[str, float | int]:
    """Totals (Pg C) and agreement of two stock maps (kg C m-2) over ``sel`` cells where both are finite."""
    both = sel & np.isfinite(ref) & np.isfinite(mod)
    m, r, a = mod[both], ref[both], area[both]
    mp = float((m * 1000.0 * a).sum() / PG)
    rp = float((r * 1000.0 * a).sum() / PG)
    corr = float(np.corrcoef(m, r)[0, 1]) if m.size > 2 and r.std() > 0 and m.std() > 0 else float("nan")
    return {"model_pg": mp, "reference_pg": rp, "difference_pg": mp - rp, "r": corr,
            "rmse": float(np.sqrt(np.mean((m - r) ** 2))) if m.size else float("nan"),
            "bias": float(np.mean(m - r)) if m.size else float("nan"),
            "model_mean": float(np.average(m, weights=a)) if m.size else float("nan"),
            "reference_mean": float(np.average(r, weights=a)) if m.size else float("nan"),
            "n_cells": int(both.sum())}


@dataclass
class ReferenceComparison:
    """A stock map compared with a reference map on the model grid.

    ``maps``: ``model``, ``reference`` (resampled) and ``difference`` (model - reference) in kg C m-2 (NaN
    where either is missing); ``totals``: the region's row (``model_pg``, ``reference_pg``, ``difference_pg``,
    ``r``, ``rmse``, ``bias``, area-weighted ``model_mean``/``reference_mean`` kg C m-2, ``n_cells``);
    ``table``: one such row per region (globe, continents, Köppen and land-cover groups).
    """

    maps: xr.Dataset
    totals: dict[str, float | int | str]
    table: object = None  # pandas DataFrame
    attrs: dict[str, str] = field(default_factory=dict)


def compare_stock_map(stock: np.ndarray, lat: np.ndarray, lon: np.ndarray, reference: xr.DataArray, *,
                      region: Region | None = None, regions: Mapping[str, Region] | None = None,
                      fields: xr.Dataset | None = None, method: str = "auto",
                      label: str | None = None) -> ReferenceComparison:
    """Compare a (lat, lon) stock map (kg C m-2) with a reference DataArray (any regular lat/lon grid).

    ``region`` selects the cells of ``totals`` and of the maps (default: the globe); ``regions`` (name ->
    Region, default globe only) the rows of ``table``; ``fields`` holds continent/Köppen/land cover for
    named regions. Totals: sum of stock x 1000 x cell area (:func:`cell_area`) / 1e15 over cells where
    both maps are finite.
    """
    import pandas as pd

    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    mod = np.asarray(stock, dtype=float)
    ref = resample_to_grid(reference, lat, lon, method=method)
    area = cell_area(lat, lon)
    label = label or str(reference.attrs.get("label", "reference"))
    region = region or Region()
    sel = region_mask(region, lat, lon, fields)
    both = sel & np.isfinite(ref) & np.isfinite(mod)
    totals: dict[str, float | int | str] = {"region": region.label, "reference": label,
                                            **_stats(mod, ref, area, sel)}
    rows = []
    for key, reg in (dict(regions) if regions is not None else {"globe": Region()}).items():
        rows.append({"region": key, "label": reg.label, **_stats(mod, ref, area,
                                                                  region_mask(reg, lat, lon, fields))})
    interval = str(reference.attrs.get("interval", ""))
    units = {"units": "kg C m-2"}
    maps = xr.Dataset(
        {"model": (("lat", "lon"), np.where(sel & np.isfinite(mod), mod, np.nan),
                   {**units, "long_name": f"model SOC stock {interval}".strip()}),
         "reference": (("lat", "lon"), np.where(sel & np.isfinite(ref), ref, np.nan),
                       {**units, "long_name": f"{label} SOC stock {interval}, resampled to the model grid".strip()}),
         "difference": (("lat", "lon"), np.where(both, mod - ref, np.nan),
                        {**units, "long_name": f"model - {label} {interval}".strip()})},
        coords={"lat": ("lat", lat, {"units": "degrees_north"}), "lon": ("lon", lon, {"units": "degrees_east"})},
        attrs={"reference": label, "citation": str(reference.attrs.get("citation", "")), "interval": interval,
               "resampling": method})
    return ReferenceComparison(maps=maps, totals=totals, table=pd.DataFrame(rows),
                               attrs={"reference": label, "interval": interval})


def compare_reference(products: xr.Dataset, reference: xr.Dataset, world: GridWorld | None = None, *,
                      variables: Mapping[str, str] | None = None, method: str = "auto",
                      scale: float = 1.0, label: str | None = None):
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
        bias, area-weighted model_mean / reference_mean in kg C m-2, n_cells; totals over cells where both
        are finite) and a Dataset with ``reference_<i>`` (resampled) and ``difference_<i>`` (model -
        reference) maps in kg C m-2. Per-region rows: :func:`compare_reference_regions`.
    """
    import pandas as pd

    label = label or str(reference.attrs.get("label", "reference"))
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
        rows.append({"interval": interval, "reference": label, "variable": var,
                     **_stats(mod, ref, area, np.ones(mod.shape, bool))})
        maps[f"reference_{suffix(interval)}"] = (("lat", "lon"), ref,
                                                 {"units": "kg C m-2", "long_name": f"{label} SOC stock {interval}, "
                                                  "resampled to the model grid"})
        maps[f"difference_{suffix(interval)}"] = (("lat", "lon"), np.where(both, mod - ref, np.nan),
                                                  {"units": "kg C m-2", "long_name": f"model - {label}, {interval}"})
    maps.attrs.update({"reference": label, "resampling": method})
    return pd.DataFrame(rows), maps


def compare_reference_regions(products: xr.Dataset, reference: xr.Dataset, world: GridWorld, *,
                              regions: Mapping[str, Region] | None = None,
                              variables: Mapping[str, str] | None = None, method: str = "auto",
                              label: str | None = None):
    """Per region and interval: model and reference totals (Pg C), difference, r, RMSE, bias, area-weighted
    means (kg C m-2) and cell counts, over the cells both maps have.

    ``regions`` defaults to :func:`~proda_engine.products.gridded.default_regions` (globe, continents,
    Köppen groups A-E, land-cover groups). Returns a pandas DataFrame (interval, region, label, ...).
    """
    import pandas as pd

    variables = dict(variables) if variables is not None else guess_intervals(reference)
    regions = dict(regions) if regions is not None else default_regions(world)
    label = label or str(reference.attrs.get("label", "reference"))
    lat, lon = products["lat"].values, products["lon"].values
    parts = []
    for interval, var in variables.items():
        da = reference[var]
        da.attrs.setdefault("interval", interval)
        res = compare_stock_map(products[f"soc_stock_{suffix(interval)}"].values, lat, lon, da, regions=regions,
                                fields=world.fields, method=method, label=label)
        parts.append(res.table.assign(interval=interval, reference=label))
    tab = pd.concat(parts, ignore_index=True)
    first = ["interval", "region", "label", "reference"]
    return tab[first + [c for c in tab.columns if c not in first]]


def write_reference_comparison(products: xr.Dataset, world: GridWorld, out: str | PathLike, *,
                               name: str | None = None, catalog=None, plot: bool = False):
    """``proda map --reference``: compare products with a reference map and write, next to ``out``,
    ``<stem>_reference.csv`` (totals per interval), ``<stem>_reference_regions.csv`` (per region) and
    ``<stem>_reference.nc`` (resampled reference and difference maps; the figure
    ``<stem>_reference.png`` is :func:`proda_engine.plot.write_reference_figure` of that dataset).
    Returns (files: name -> path, the totals table).

    Raises:
        ValueError: ``plot=True`` (kept for callers of the earlier signature): products do not draw.
    """
    from proda_engine.data.writers import write_csv_atomic, write_product

    if plot:
        raise ValueError("write_reference_comparison no longer draws: call proda_engine.plot.write_reference_figure"
                         "(xr.open_dataset(files['maps']), table, out)")

    ref = open_reference(name, catalog)
    label = str(ref.attrs.get("label", name or DEFAULT_REFERENCE))
    variables = {k: v for k, v in guess_intervals(ref).items() if f"soc_stock_{suffix(k)}" in products}
    tab, maps = compare_reference(products, ref, world, variables=variables, label=label)
    regions = compare_reference_regions(products, ref, world, variables=variables, label=label)
    maps.attrs.update(citation=str(ref.attrs.get("citation", "")), source_name=str(ref.attrs.get("source_name", "")))
    o = Path(out)
    files = {"totals": o.with_name(o.stem + "_reference.csv"),
             "regions": o.with_name(o.stem + "_reference_regions.csv"),
             "maps": o.with_name(o.stem + "_reference.nc")}
    write_csv_atomic(tab, files["totals"], index=False)
    write_csv_atomic(regions, files["regions"], index=False)
    write_product(maps, files["maps"])
    return files, tab
