"""The front door: small, documented functions returning xarray/pandas (never tensors).

The dashboard and notebooks use only this module.

>>> from proda_engine import api
>>> api.parameter_table()[0]["name"]
'diffus'
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import numpy as np
import xarray as xr

from proda_engine import __version__
from proda_engine.grid import DEPTH_INTERVALS
from proda_engine.parameters import GROUP_LABELS, physical_table

__all__ = ["DEPTH_INTERVALS", "GROUP_LABELS", "__version__", "parameter_table", "read_forcing", "simulate"]


def parameter_table(theta: np.ndarray | None = None) -> list[dict[str, object]]:
    """The 21-parameter table (name, bounds, CLM5 default, units, group, doc[, value at theta])."""
    return physical_table(theta)


def read_forcing(paths: str | PathLike | Sequence[str | PathLike], **kw) -> xr.Dataset:
    """Read CLM5-history-style forcing into the normalised forcing Dataset (validated)."""
    from proda_engine.data import read_forcing as _read

    return _read(paths, **kw)


def simulate(
    forcing: xr.Dataset | str | PathLike | Sequence[str | PathLike],
    theta: xr.DataArray | np.ndarray | None = None,
    *,
    preset: str | None = None,
    closure: str = "conservative",
    grid: str = "clm5_20",
    include_pools: bool = False,
    device: str = "cpu",
    float32: bool = False,
) -> xr.Dataset:
    """Steady state for every valid cell of ``forcing`` (a normalised Dataset or CLM5-style files).

    Parameters are unit-interval ``theta`` (dims ``parameter`` or spatial + ``parameter``), or a preset:
    ``midpoint`` (theta = 0.5, the MCMC start) or ``default`` (CLM5 defaults, sand-dependent S1
    fractions). Returns SOC by layer (g C m-3), stocks by depth interval (kg C m-2), turnover (yr),
    the six bulk diagnostics, respiration, the mass-balance residual and a per-cell status.
    """
    import torch

    from proda_engine.grid import get_grid
    from proda_engine.products.maps import steady_state_dataset

    ds = forcing if isinstance(forcing, xr.Dataset) else read_forcing(forcing, n_layers=get_grid(grid).n_layers)
    return steady_state_dataset(ds, theta, preset=preset, grid=get_grid(grid), closure=closure,
                                include_pools=include_pools, device=device,
                                dtype=torch.float32 if float32 else torch.float64)
