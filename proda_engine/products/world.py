"""Loading a built world for fast products: land cells stacked once, cached beside the world.

Reading and validating the global forcing netCDF takes seconds to tens of seconds; the dashboard
and the what-if engine only need the valid land cells as tensors. The first load validates through
:func:`proda_engine.data.read_forcing`, then stores the stacked cells in ``forcing_cells.npz`` next
to the world (float32, as in the file; keyed on the forcing file's size and modification time),
so later processes start in about a second.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from proda_engine.data import read_forcing
from proda_engine.data.parameter_files import align_theta_to_grid, normalise_parameter_names
from proda_engine.parameters import N_PARAMS
from proda_engine.physics import Forcing

_FIELDS = ("tsoi", "w_scalar", "o_scalar", "fpi", "altmax", "altmax_lastyear", "nbedrock", "inputs", "sand", "npp")
CACHE_VERSION = "1"


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


def load_world_cells(forcing_path: str | os.PathLike, *, dtype: torch.dtype = torch.float64,
                     cache: bool = True) -> WorldCells:
    """Valid cells of a world's forcing file, through the ``forcing_cells.npz`` cache when fresh."""
    path = Path(forcing_path)
    npz = path.with_name("forcing_cells.npz")
    if cache and npz.exists():
        with np.load(npz) as z:
            if str(z["stamp"]) == _stamp(path):
                arrays = {k: z[k] for k in z.files}
                t = {k: (None if k not in arrays else torch.as_tensor(arrays[k]))
                     for k in _FIELDS}
                f = Forcing(**{k: (v if v is None or k == "nbedrock" else v.to(dtype)) for k, v in t.items()})
                return WorldCells(f, arrays["cells"], arrays["lat"], arrays["lon"])
    ds = read_forcing(path)
    forcing, cells = Forcing.from_dataset(ds, dtype=dtype)
    wc = WorldCells(forcing, cells, np.asarray(ds["lat"].values), np.asarray(ds["lon"].values))
    if cache:
        payload = {k: getattr(forcing, k).numpy().astype(np.float32 if k != "nbedrock" else np.int64)
                   for k in _FIELDS if getattr(forcing, k) is not None}
        fd, tmp = tempfile.mkstemp(dir=npz.parent, prefix=".forcing_cells.", suffix=".npz")
        os.close(fd)
        try:
            np.savez(tmp, stamp=_stamp(path), cells=cells, lat=wc.lat, lon=wc.lon, **payload)
            os.replace(tmp, npz)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return wc
