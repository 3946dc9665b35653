"""Gridded (or per-site) steady-state runs as CF-annotated xarray Datasets (spec §(i), §(n)).

Takes the *normalised forcing Dataset* (see :func:`proda_engine.data.read_forcing`) and parameters
(unit-interval ``theta`` or a named preset), solves every valid cell with the structured solver,
and puts the results back on the grid with named dimensions, ``units`` and ``long_name``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import xarray as xr

from proda_engine.data.parameter_files import (
    SOURCE_ATTR,
    align_theta_to_grid,
    normalise_parameter_names,
    parameter_file_attrs,
)
from proda_engine.grid import DEPTH_INTERVALS, Grid, get_grid
from proda_engine.parameters import N_PARAMS, PARAMETER_NAMES, PARAMETERS
from proda_engine.physics import Forcing, Status, default_params, params_from_theta, steady_state
from proda_engine.physics import diagnostics as dg
from proda_engine.physics.transfer import POOL_LONG_NAMES, POOLS

PRESETS = ("midpoint", "default")

#: (name, long_name, units) of the bulk diagnostics written to products.
DIAGNOSTICS: dict[str, tuple[str, str]] = {
    "input": ("total carbon input to litter and CWD (C_in)", "g C m-2 yr-1"),
    "allocation": ("input allocation: apparent beta of the realised input profile", "1"),
    "decomposition": ("stock-weighted baseline decomposition rate of SOC pools (K)", "yr-1"),
    "environment": ("stock-weighted environmental modifier <xi_T><xi_W>xi_D (Xi)", "1"),
    "cue": ("microbial carbon use efficiency, flux weighted (A)", "1"),
    "transport": ("stock-weighted vertical transport rate (V)", "yr-1"),
}


def _interval_suffix(name: str) -> str:
    return name.replace("-", "_")


def theta_for_cells(theta: xr.DataArray | np.ndarray | None, forcing_ds: xr.Dataset, cells: np.ndarray,
                    preset: str | None) -> np.ndarray | None:
    """Unit-interval theta (C, 21) for the valid cells, from a DataArray aligned with the forcing.

    ``theta`` may have dims ``(parameter,)`` (one set for all cells) or the forcing's spatial dims
    plus ``parameter``; names and longitudes are matched by
    :func:`~proda_engine.data.parameter_files.normalise_parameter_names` and
    :func:`~proda_engine.data.parameter_files.align_theta_to_grid` (0..360 or -180..180).
    Returns None for the ``default`` preset (physical values, no theta form).
    """
    if theta is None:
        if preset == "default":
            return None
        if preset in (None, "midpoint"):
            return np.full((len(cells), N_PARAMS), 0.5)
        raise ValueError(f"preset must be one of {PRESETS}, found {preset!r}")
    if isinstance(theta, np.ndarray):
        arr = np.asarray(theta, dtype=float)
        if arr.shape == (N_PARAMS,):
            return np.broadcast_to(arr, (len(cells), N_PARAMS)).copy()
        if arr.shape == (len(cells), N_PARAMS):
            return arr
        raise ValueError(f"theta: expected shape (21,) or ({len(cells)}, 21), found {arr.shape}")
    src = str(theta.attrs.get(SOURCE_ATTR, "theta"))
    theta = normalise_parameter_names(theta, file=src)
    if theta.dims == ("parameter",):
        return np.broadcast_to(theta.values, (len(cells), N_PARAMS)).astype(float)
    spatial = list(forcing_ds["nbedrock"].dims)
    if {"lat", "lon"} <= set(spatial):
        # the forcing's own grid in either longitude convention, cell for cell (read_forcing wraps to -180..180)
        theta = align_theta_to_grid(theta, forcing_ds["lat"].values, forcing_ds["lon"].values, file=src,
                                    target="the forcing grid")
    missing = [d for d in spatial if d not in theta.dims]
    if missing:
        raise ValueError(f"{src}: variable 'theta': expected dims {[*spatial, 'parameter']}, found {theta.dims}")
    for d in spatial:
        if theta.sizes[d] != forcing_ds.sizes[d]:
            raise ValueError(f"{src}: dimension {d!r}: expected {forcing_ds.sizes[d]} entries (the forcing grid), "
                             f"found {theta.sizes[d]}")
    flat = np.asarray(theta.transpose(*spatial, "parameter").values, dtype=float).reshape(-1, N_PARAMS)
    out = flat[cells]
    bad = ~np.isfinite(out).all(1)
    if bad.any():
        raise ValueError(f"theta: {int(bad.sum())} valid forcing cells have no (finite) parameters")
    return out


def unstack(values: np.ndarray, cells: np.ndarray, forcing_ds: xr.Dataset, lead_dims: tuple[str, ...] = (),
            lead_coords: Mapping[str, np.ndarray] | None = None, fill: float = np.nan) -> xr.DataArray:
    """Put (..., C) values back on the forcing's spatial dims, NaN (or ``fill``) elsewhere."""
    spatial = list(forcing_ds["nbedrock"].dims)
    shape = tuple(forcing_ds.sizes[d] for d in spatial)
    n = int(np.prod(shape))
    lead = values.shape[:-1]
    full = np.full((*lead, n), fill, dtype=values.dtype if np.issubdtype(values.dtype, np.floating) else float)
    full[..., cells] = values
    coords = {d: forcing_ds[d] for d in spatial if d in forcing_ds.coords}
    coords.update(lead_coords or {})
    return xr.DataArray(full.reshape(*lead, *shape), dims=(*lead_dims, *spatial), coords=coords)


def steady_state_dataset(
    forcing_ds: xr.Dataset,
    theta: xr.DataArray | np.ndarray | None = None,
    *,
    preset: str | None = None,
    grid: Grid | None = None,
    closure: str = "conservative",
    include_pools: bool = False,
    device: str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> xr.Dataset:
    """Solve the steady state for every valid cell and return the products as a Dataset.

    Variables: ``soc`` (layer, ...) g C m-3; ``soc_stock_<interval>`` kg C m-2 for 0-30, 0-100,
    0-200 cm and the whole profile; ``turnover`` yr; the six bulk diagnostics; ``respiration`` and
    ``mass_balance_residual``; ``status`` (0 ok); ``theta`` when per-cell parameters were given; and,
    with ``include_pools``, ``pools`` (pool, layer, ...) g C m-3 in the spec's pool order.
    """
    grid = grid or get_grid()
    forcing, cells = Forcing.from_dataset(forcing_ds, dtype=dtype, device=device)
    th = theta_for_cells(theta, forcing_ds, cells, preset)
    params = default_params(forcing) if th is None else params_from_theta(th, dtype=dtype, device=device)
    res = steady_state(params, forcing, grid, closure=closure)
    with torch.no_grad():
        stocks = dg.stocks(res)
        diags = dg.bulk_diagnostics(res, forcing)
        resp = dg.respiration(res)
        mb = dg.mass_balance_residual(res, forcing)
    np_ = lambda t: t.detach().cpu().numpy()  # noqa: E731
    layer_coords = {"layer": np.arange(1, grid.n_layers + 1)}
    out = xr.Dataset()
    out["soc"] = unstack(np_(res.soc), cells, forcing_ds, ("layer",), layer_coords).assign_attrs(
        units="g C m-3", long_name="soil organic carbon density (S1+S2+S3) at layer nodes")
    for name, (top, bottom) in DEPTH_INTERVALS.items():
        label = "whole profile" if bottom is None else f"{int(top * 100)}-{int(bottom * 100)} cm"
        stock = unstack(np_(stocks[name]) / 1000.0, cells, forcing_ds)
        out[f"soc_stock_{_interval_suffix(name)}"] = stock.assign_attrs(units="kg C m-2",
                                                                        long_name=f"SOC stock {label}")
        out[f"turnover_{_interval_suffix(name)}"] = unstack(
            np_(stocks[name] / dg.total_input(forcing)), cells, forcing_ds).assign_attrs(
            units="yr", long_name=f"bulk SOC turnover time {label} (stock / total input)")
    out["turnover"] = out["turnover_whole"].copy().assign_attrs(units="yr", long_name="bulk SOC turnover time")
    for key, (long_name, units) in DIAGNOSTICS.items():
        out[key] = unstack(np_(diags[key]), cells, forcing_ds).assign_attrs(units=units, long_name=long_name)
    out["respiration"] = unstack(np_(resp), cells, forcing_ds).assign_attrs(
        units="g C m-2 yr-1", long_name="heterotrophic respiration")
    out["mass_balance_residual"] = unstack(np_(mb), cells, forcing_ds).assign_attrs(
        units="1", long_name="(input - respiration - transport outflow) / input")
    out["status"] = unstack(res.status.cpu().numpy().astype(np.int8), cells, forcing_ds, fill=-1).astype(
        np.int8).assign_attrs(long_name="solver status per cell", flag_values=[-1, 0, 1, 2, 3],
                              flag_meanings="not_simulated ok nonfinite negative invalid_input")
    if th is not None and theta is not None and not (isinstance(theta, xr.DataArray) and theta.dims == ("parameter",)):
        out["theta"] = unstack(th.T.copy(), cells, forcing_ds, ("parameter",),
                               {"parameter": np.array(PARAMETER_NAMES)}).assign_attrs(
            units="1", long_name="unit-interval parameters")
    if include_pools:
        out["pools"] = unstack(np_(res.pools).astype(np.float32), cells, forcing_ds, ("pool", "layer"),
                               {"pool": np.array(POOLS), **layer_coords}).assign_attrs(
            units="g C m-3", long_name="carbon density per pool and layer",
            pool_long_names=", ".join(POOL_LONG_NAMES))
    out = out.assign_coords(
        z_node=("layer", grid.z_node, {"units": "m", "long_name": "layer node depth"}),
        dz=("layer", grid.dz, {"units": "m", "long_name": "layer thickness"}),
    )
    counts = {Status(int(k)).name: int(v) for k, v in zip(*np.unique(res.status.cpu().numpy(), return_counts=True))}
    latlon = {"lat": forcing_ds["lat"].values, "lon": forcing_ds["lon"].values} if (
        "lat" in forcing_ds.coords and "lon" in forcing_ds.coords) else {}
    out.attrs.update({
        "title": "PRODA / CLM5 matrix model steady state",
        "grid": grid.name,
        **parameter_file_attrs(closure, grid.name, **latlon),
        "parameters": "default CLM5 preset" if th is None else ("midpoint theta=0.5" if theta is None else "theta"),
        "status_counts": str(counts),
        "Conventions": "CF-1.8",
    })
    return out


def parameter_metadata() -> xr.Dataset:
    """The parameter table as a Dataset (parameter dim) with bounds and units, for product files."""
    return xr.Dataset(
        {
            "lower": ("parameter", [p.lower for p in PARAMETERS]),
            "upper": ("parameter", [p.upper for p in PARAMETERS]),
            "units": ("parameter", [p.units for p in PARAMETERS]),
            "group": ("parameter", [p.group for p in PARAMETERS]),
        },
        coords={"parameter": list(PARAMETER_NAMES)},
    )
