"""Opening a world for products (:class:`OpenWorld`): land cells stacked once, cached beside the world.

Which files make a world is :class:`~proda_engine.data.worlds.WorldSpec`; the same cells on the lat/lon grid
for gridded products are :class:`~proda_engine.products.gridded.GridWorld` (glossary: docs/architecture.md).

Reading and validating the global forcing netCDF takes seconds to tens of seconds; the dashboard
and the what-if engine only need the valid land cells as tensors. The first load validates through
:func:`proda_engine.data.read_forcing`, then stores the stacked cells in ``forcing_cells.npz`` next
to the world (float32, as in the file; keyed on the forcing file's size and modification time),
so later processes start in about a second.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from proda_engine.data import read_covariates, read_forcing, write_text_atomic
from proda_engine.data.parameter_files import align_theta_to_grid, normalise_parameter_names
from proda_engine.data.worlds import WorldSpec, resolve_world
from proda_engine.data.writers import version_attrs, write_npz_atomic
from proda_engine.parameters import N_PARAMS
from proda_engine.physics import Forcing

_FIELDS = ("tsoi", "w_scalar", "o_scalar", "fpi", "altmax", "altmax_lastyear", "nbedrock", "inputs", "sand", "npp")
CACHE_VERSION = "1"
log = logging.getLogger(__name__)


@dataclass
class WorldCells:
    """The valid land cells of a world: forcing tensors and where the cells sit on the grid."""

    forcing: Forcing
    cells: np.ndarray  # flat (lat, lon) row-major indices of the cells
    lat: np.ndarray
    lon: np.ndarray

    def theta_from_grid(self, theta: xr.DataArray) -> np.ndarray:
        """(C, 21) unit-interval parameters of the cells from a (parameter, lat, lon) DataArray.

        Names (``w-scaling``, ...) and longitudes (0..360 or -180..180) are matched by
        :func:`~proda_engine.data.parameter_files.align_theta_to_grid`; another grid is an error.
        """
        theta = normalise_parameter_names(theta)
        if "lat" not in theta.dims and "latitude" not in theta.dims:
            raise ValueError(f"{theta.attrs.get('source_file', 'theta')}: variable 'theta': expected dims "
                             f"(parameter, lat, lon), found {list(theta.dims)}")
        theta = align_theta_to_grid(theta, self.lat, self.lon, target="the world grid")
        flat = np.asarray(theta.transpose("lat", "lon", "parameter").values, dtype=float).reshape(-1, N_PARAMS)
        out = flat[self.cells]
        if not np.isfinite(out).all():
            raise ValueError(f"theta: {int((~np.isfinite(out).all(1)).sum())} land cells have no parameters")
        return out


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{CACHE_VERSION}-{st.st_size}-{st.st_mtime_ns}"


def load_world_cells(forcing_path: str | os.PathLike | Sequence[str | os.PathLike], *,
                     dtype: torch.dtype = torch.float64, cache: bool = True, cache_path: Path | None = None,
                     read_options: Mapping[str, Any] | None = None) -> WorldCells:
    """Valid cells of a world's forcing file(s), through the ``forcing_cells.npz`` cache when fresh.

    The cache sits next to a single forcing file unless ``cache_path`` says where (a user's data
    folder is never written to: catalog worlds keep it in their cache folder).
    """
    paths = [Path(forcing_path)] if isinstance(forcing_path, (str, os.PathLike)) else [Path(p) for p in forcing_path]
    path = paths[0]
    npz = Path(cache_path) if cache_path is not None else path.with_name("forcing_cells.npz")
    stamp = "|".join(_stamp(p) for p in paths)
    if cache and npz.exists():
        with np.load(npz) as z:
            if str(z["stamp"]) == stamp:
                arrays = {k: z[k] for k in z.files}
                t = {k: (None if k not in arrays else torch.as_tensor(arrays[k]))
                     for k in _FIELDS}
                f = Forcing(**{k: (v if v is None or k == "nbedrock" else v.to(dtype)) for k, v in t.items()})
                return WorldCells(f, arrays["cells"], arrays["lat"], arrays["lon"])
    ds = read_forcing(paths if len(paths) > 1 else path, **dict(read_options or {}))
    forcing, cells = Forcing.from_dataset(ds, dtype=dtype)
    wc = WorldCells(forcing, cells, np.asarray(ds["lat"].values), np.asarray(ds["lon"].values))
    if cache:
        payload = {k: getattr(forcing, k).numpy().astype(np.float32 if k != "nbedrock" else np.int64)
                   for k in _FIELDS if getattr(forcing, k) is not None}
        write_npz_atomic(npz, stamp=stamp, cells=cells, lat=wc.lat, lon=wc.lon, **payload)
    return wc


# ---------------------------------------------------------------------------------------------
# Opening a world: cells, covariates on the cells, twin truth
# ---------------------------------------------------------------------------------------------
@dataclass
class OpenWorld:
    """A world read into memory: what training, evaluation, maps and the what-if engine share.

    Attributes:
        spec: the world's files (:class:`~proda_engine.data.worlds.WorldSpec`).
        cells: the land cells the products cover. For a catalog world, cells where a covariate is missing
            are *masked* (not in ``cells``; NaN in every map), never imputed; a built-in world keeps every
            forcing-valid cell (its few cells without covariates take the nearest cell's parameters,
            counted in the parameter map's ``cells_filled_from_neighbour``).
        forcing_cells: every forcing-valid cell (sites are matched to these first, so a site whose own cell
            lacks a covariate is dropped with that covariate named rather than moved to another cell).
        missing_covariate: per ``forcing_cells`` cell, the first covariate missing there ("" if none).
        covariates: covariate Dataset on the forcing grid (nearest covariate cell when the grids differ).
        covariate_names, categorical: the network's inputs, in order.
        truth: twin-truth theta (parameter, lat, lon) when the world has one.
        report: counts (cells masked per covariate, grid matching).
    """

    spec: WorldSpec
    cells: WorldCells
    forcing_cells: WorldCells
    missing_covariate: np.ndarray
    covariates: xr.Dataset
    covariate_names: list[str]
    categorical: list[str]
    truth: xr.DataArray | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    def cell_of_forcing_cell(self) -> np.ndarray:
        """Index into :attr:`cells` of each ``forcing_cells`` cell (-1 where masked)."""
        pos = np.full(self.forcing_cells.cells.size, -1, dtype=np.int64)
        lookup = {int(c): i for i, c in enumerate(self.cells.cells)}
        for j, c in enumerate(self.forcing_cells.cells):
            pos[j] = lookup.get(int(c), -1)
        return pos


def _nearest_index(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest ``src`` coordinate for each ``dst`` value (both ascending 1-D) and the gap."""
    j = np.clip(np.searchsorted(src, dst), 1, max(src.size - 1, 1))
    if src.size == 1:
        return np.zeros(dst.size, dtype=np.int64), np.abs(dst - src[0])
    left = np.abs(dst - src[j - 1]) <= np.abs(dst - src[j])
    idx = np.where(left, j - 1, j)
    return idx, np.abs(dst - src[idx])


def covariates_on_grid(cov: xr.Dataset, lat: np.ndarray, lon: np.ndarray) -> tuple[xr.Dataset, dict[str, Any]]:
    """Covariates on another regular lat/lon grid: the nearest covariate cell on each axis.

    The same grid comes back unchanged. Target cells farther than one covariate cell (in lat or lon)
    from every covariate cell are NaN: outside the covariate file's extent, nothing is invented.
    """
    clat, clon = np.asarray(cov["lat"].values, float), np.asarray(cov["lon"].values, float)
    if clat.size == lat.size and clon.size == lon.size and np.allclose(clat, lat, atol=1e-6) \
            and np.allclose(clon, lon, atol=1e-6):
        return cov, {"covariate_grid": "same as the forcing"}
    dlat = float(np.abs(np.diff(clat)).mean()) if clat.size > 1 else 180.0
    dlon = float(np.abs(np.diff(clon)).mean()) if clon.size > 1 else 360.0
    ii, gap_i = _nearest_index(clat, lat)
    jj, gap_j = _nearest_index(clon, lon)
    out_i, out_j = gap_i > dlat, gap_j > dlon
    data = {}
    for name in cov.data_vars:
        if name == "valid":
            continue
        v = np.asarray(cov[name].values, dtype=float)[np.ix_(ii, jj)]
        v[out_i, :] = np.nan
        v[:, out_j] = np.nan
        data[name] = xr.DataArray(v, dims=("lat", "lon"), attrs=dict(cov[name].attrs))
    ds = xr.Dataset(data, coords={"lat": ("lat", lat, {"units": "degrees_north"}),
                                  "lon": ("lon", lon, {"units": "degrees_east"})}, attrs=dict(cov.attrs))
    note = (f"nearest covariate cell: covariates {clat.size}x{clon.size} ({dlat:.3g} x {dlon:.3g} deg) "
            f"-> forcing {lat.size}x{lon.size}")
    return ds, {"covariate_grid": note}


def _missing_names(cov: xr.Dataset, names: Sequence[str], flat_cells: np.ndarray) -> np.ndarray:
    """Per cell, the first covariate (in ``names`` order) that is NaN there, or ""."""
    out = np.full(flat_cells.size, "", dtype=object)
    for n in reversed(list(names)):  # reversed: the first missing name wins
        bad = ~np.isfinite(np.asarray(cov[n].values, dtype=float).reshape(-1)[flat_cells])
        out[bad] = n
    return out


def _subset_cells(wc: WorldCells, keep: np.ndarray) -> WorldCells:
    if keep.all():
        return wc
    idx = np.flatnonzero(keep)
    return WorldCells(wc.forcing.subset(idx), wc.cells[idx], wc.lat, wc.lon)


def open_world(world: str | WorldSpec | None = None, *, catalog: str | os.PathLike | None = None,
               dtype: torch.dtype = torch.float64) -> OpenWorld:
    """Read a world (built-in or from a catalog's ``worlds:``) into an :class:`OpenWorld`.

    Catalog worlds use every variable their covariate source holds (or the ``variables`` it lists);
    categorical ones come from the catalog's ``categorical`` or the netCDF attribute ``categorical = 1``.
    """
    spec = world if isinstance(world, WorldSpec) else resolve_world(world, catalog)
    if spec.kind == "builtin":
        wc = load_world_cells(spec.forcing[0], dtype=dtype)
        with xr.open_dataset(spec.covariates[0]) as ds:
            cov = ds.load()
        names = [n for n in (spec.covariate_variables or ()) if n in cov]
        categorical = [n for n in spec.categorical if n in names]
        report: dict[str, Any] = {"covariate_grid": "same as the forcing"}
    else:
        wc = load_world_cells(list(spec.forcing), dtype=dtype, cache_path=spec.cache / "forcing_cells.npz",
                              read_options=spec.forcing_options)
        raw = read_covariates(list(spec.covariates), variables=spec.covariate_variables,
                              categorical=spec.categorical, units=spec.covariate_units,
                              **dict(spec.covariate_options))
        names = [n for n in raw.data_vars if n != "valid"]
        categorical = [n for n in names if int(raw[n].attrs.get("categorical", 0)) == 1]
        cov, report = covariates_on_grid(raw, wc.lat, wc.lon)
    missing = _missing_names(cov, names, wc.cells)
    report["n_forcing_cells"] = int(wc.cells.size)
    counts = {n: int((missing == n).sum()) for n in names if (missing == n).any()}
    if spec.kind == "catalog":
        keep = missing == ""
        cells = _subset_cells(wc, keep)
        report["cells_masked_missing_covariate"] = counts
        if counts:
            log.warning("world %r: %d of %d land cells masked for a missing covariate (first missing: %s)",
                        spec.name, int((~keep).sum()), wc.cells.size, counts)
        if cells.cells.size == 0:
            raise ValueError(f"world {spec.name!r}: no land cell of the forcing ({', '.join(map(str, spec.forcing))}) "
                             f"has every covariate of {', '.join(map(str, spec.covariates))}; cells missing "
                             f"each (first missing): {counts}")
    else:
        cells = wc
        report["cells_without_covariate"] = counts
    truth = None
    if spec.truth is not None and Path(spec.truth).exists():
        with xr.open_dataset(spec.truth) as ds:
            truth = ds["theta"].load()
    report["n_cells"] = int(cells.cells.size)
    if spec.kind == "catalog":
        spec.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(json.dumps({**version_attrs(), **spec.provenance(), "fingerprint": spec.fingerprint(),
                                      "covariates": names, "categorical": categorical, "report": report},
                                     indent=2, default=str), spec.root / "world.json")
    return OpenWorld(spec=spec, cells=cells, forcing_cells=wc, missing_covariate=missing, covariates=cov,
                     covariate_names=names, categorical=categorical, truth=truth, report=report)

