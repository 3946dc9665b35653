"""The world's CLM5-history-like forcing: soil temperature, water, oxygen and N-limitation scalars,
active layer, bedrock, sand and carbon inputs of the land cells (:func:`derive_forcing_cells`), and
the ``forcing.nc`` dataset written from them (:func:`forcing_dataset`).

Not to be confused with :mod:`proda_engine.data.forcing`, the reader every forcing file (this one
included) goes through.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from proda_engine.data.world.base import nc_var, scatter_cells, sigmoid
from proda_engine.data.world.climate import soil_temperature
from proda_engine.data.world.covariates import Surface
from proda_engine.data.world.tables import DAYS_IN_MONTH, GRID_NAME, INPUT_SPLIT_BY_IGBP, SOIL_DEPTHS_CM
from proda_engine.grid import get_grid


def active_layer(t_air: np.ndarray, p: np.ndarray, mat: np.ndarray, sand0: np.ndarray) -> np.ndarray:
    """Maximum active-layer thickness ALT, m (C,), by Stefan's relation; 10 m without permafrost.

    ALT = E sqrt(TDD) (clipped to 0..3 m) where MAT < -1 degC, with TDD the thawing degree-days of the
    snow-damped surface (x0.7 in months below 0 degC with > 10 mm precipitation), degC d, and
    E = 0.03 (0.85 + 0.3 sand/100) m (degC d)^-0.5 (sand conducts). ``t_air`` degC and ``p`` mm are (12, C).
    """
    ts = np.where((t_air < 0) & (p > 10.0), 0.7 * t_air, t_air)
    tdd = (np.maximum(ts, 0.0) * DAYS_IN_MONTH[:, None]).sum(axis=0)
    e_coef = 0.03 * (0.85 + 0.3 * sand0 / 100.0)
    return np.where(mat < -1.0, np.clip(e_coef * np.sqrt(tdd), 0.0, 3.0), 10.0)


def water_scalar(wet_rel: np.ndarray, tsoi_c: np.ndarray, z: np.ndarray) -> np.ndarray:
    """CLM5 ``W_SCALAR`` (12, L, C), 0..1: bucket wetness, buffered with depth, reduced when frozen.

    w_top = 0.05 + 0.95 wet_rel^0.7 blends into the annual mean (+10 % of the remainder) with weight
    1 - exp(-z / 0.6 m); frozen layers are multiplied by clip(1 + T/5 degC, 0.1, 1).
    """
    w_top = 0.05 + 0.95 * np.clip(wet_rel, 0, 1) ** 0.7  # (12, C)
    a = (1.0 - np.exp(-z / 0.6))[None, :, None]
    w_deep = np.clip(w_top.mean(axis=0) + 0.1 * (1.0 - w_top.mean(axis=0)), 0, 1)[None, None, :]
    w = (1.0 - a) * w_top[:, None, :] + a * w_deep
    frost = np.clip(1.0 + tsoi_c / 5.0, 0.1, 1.0)
    return np.clip(w * np.where(tsoi_c < 0, frost, 1.0), 0.0, 1.0)


def oxygen_scalar(wetness: np.ndarray, wet_rel: np.ndarray, z: np.ndarray) -> np.ndarray:
    """CLM5 ``O_SCALAR`` (12, L, C), 0.2..1: anoxia grows with depth in wet soils.

    o = 1 - 0.7 wetness (0.6 + 0.4 wet_rel) (1 - exp(-z / 0.25 m)) - 0.05 (1 - exp(-z / 2 m)).
    """
    zf = (1.0 - np.exp(-z / 0.25))[None, :, None]
    o = 1.0 - 0.7 * wetness[None, None, :] * (0.6 + 0.4 * wet_rel[:, None, :]) * zf
    o = o - 0.05 * (1.0 - np.exp(-z / 2.0))[None, :, None]
    return np.clip(o, 0.2, 1.0)


def n_limitation(mat: np.ndarray, t_air: np.ndarray, fpi_noise: np.ndarray, z: np.ndarray) -> np.ndarray:
    """CLM5 ``FPI_vr`` (12, L, C), 0.3..1: N limitation, weaker in warm climates, stronger in the
    growing season and near the root-dense surface.

    FPI = 0.45 + 0.4 sigmoid((MAT - 10) / 6) + 0.08 eta - 0.1 sigmoid((T - 5) / 3) + 0.1 (1 - exp(-z / 1 m)).
    """
    fpi_base = 0.45 + 0.4 * sigmoid((mat - 10.0) / 6.0) + 0.08 * fpi_noise
    grow = sigmoid((t_air - 5.0) / 3.0)
    fpi = fpi_base[None, None, :] - 0.1 * grow[:, None, :] + 0.1 * (1.0 - np.exp(-z / 1.0))[None, :, None]
    return np.clip(fpi, 0.3, 1.0)


def sand_by_layer(sand_d: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Sand (%) per layer (L, C): the 0 / 30 / 100 cm values ``sand_d`` (3, C) linear in depth, constant below 1 m."""
    zd = np.array(SOIL_DEPTHS_CM) / 100.0
    wgt = np.clip(np.interp(z, zd, [0.0, 1.0, 2.0]), 0, 2)
    lo = np.floor(wgt).astype(int).clip(0, 1)
    fr = (wgt - lo)[:, None]
    return (1 - fr) * sand_d[lo] + fr * sand_d[lo + 1]


def derive_forcing_cells(s: Surface, idx: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """Forcing for the land cells ``idx`` of the surface ``s`` (row, col index arrays): arrays with cells last.

    Returns TSOI (K), W_SCALAR, O_SCALAR, FPI_vr (12, L, C), ALTMAX (12, C), nbedrock (C,),
    CELLSAND (L, C) and the four inputs and NPP (C,), g C m-2 yr-1.
    """
    z = get_grid(GRID_NAME).z_node
    ii, jj = idx
    t_air = s.t_air[:, ii, jj]
    p = s.p[:, ii, jj]
    wet_rel = s.wet_rel[:, ii, jj]
    mat = s.mat[ii, jj]
    tsoi_c = soil_temperature(t_air, p, wet_rel.mean(axis=0), z)
    alt = active_layer(t_air, p, mat, s.soil["sand_0"][ii, jj])
    # below the active layer of permafrost the ground stays frozen all year
    frozen_below = (mat < -1.0)[None, None, :] & (z[None, :, None] > alt[None, None, :])
    tsoi_c = np.where(frozen_below, np.minimum(tsoi_c, -0.1), tsoi_c)
    npp = s.npp[ii, jj]
    split = INPUT_SPLIT_BY_IGBP[s.igbp[ii, jj]].T  # (4, C)
    return {
        "TSOI": (tsoi_c + 273.15),
        "W_SCALAR": water_scalar(wet_rel, tsoi_c, z),
        "O_SCALAR": oxygen_scalar(s.wetness[ii, jj], wet_rel, z),
        "FPI_vr": n_limitation(mat, t_air, s.fpi_noise[ii, jj], z),
        "ALTMAX": np.broadcast_to(alt, (12, alt.size)).copy(),
        "nbedrock": s.nbedrock[ii, jj],
        "CELLSAND": sand_by_layer(np.stack([s.soil[f"sand_{d}"][ii, jj] for d in SOIL_DEPTHS_CM]), z),
        "input_cwd": npp * split[0],
        "input_litter1": npp * split[1],
        "input_litter2": npp * split[2],
        "input_litter3": npp * split[3],
        "NPP": npp,
    }


def time_coords() -> dict[str, Any]:
    """CLM-style monthly time axis (noleap): stamps at the end of each month, with bounds."""
    edges = np.concatenate([[0.0], np.cumsum(DAYS_IN_MONTH)])
    bounds = np.stack([edges[:-1], edges[1:]], axis=1)
    return {"time": edges[1:], "time_bounds": bounds}


def forcing_dataset(
    fc: dict[str, np.ndarray], ii: np.ndarray, jj: np.ndarray, lat: np.ndarray, lon: np.ndarray, attrs: dict[str, Any]
) -> xr.Dataset:
    """The ``forcing.nc`` dataset of a region: the cell arrays ``fc`` of :func:`derive_forcing_cells`
    scattered to the region grid (rows ``ii``, columns ``jj``; NaN elsewhere, float32), with CLM5 history
    names, units, ``ZSOI``/``DZSOI`` of the ``clm5_20`` grid and a noleap monthly time axis with bounds.
    """
    shape = (lat.size, lon.size)
    g = get_grid(GRID_NAME)
    tc = time_coords()
    S = lambda a: scatter_cells(np.asarray(a, dtype=np.float32), ii, jj, shape)  # noqa: E731
    T4 = ("time", "levsoi", "lat", "lon")
    T3 = ("time", "lat", "lon")
    nb = np.full(shape, np.nan, dtype=np.float32)
    nb[ii, jj] = fc["nbedrock"]
    v = {
        "TSOI": nc_var(T4, S(fc["TSOI"]), "K", "soil temperature (vegetated landunits)"),
        "W_SCALAR": nc_var(T4, S(fc["W_SCALAR"]), "unitless", "Moisture (dryness) inhibition of decomposition"),
        "O_SCALAR": nc_var(
            T4, S(fc["O_SCALAR"]), "unitless", "fraction by which decomposition is reduced due to anoxia"
        ),
        "FPI_vr": nc_var(T4, S(fc["FPI_vr"]), "proportion", "fraction of potential immobilization"),
        "ALTMAX": nc_var(T3, S(fc["ALTMAX"]), "m", "maximum annual active layer thickness"),
        "ALTMAX_LASTYEAR": nc_var(T3, S(fc["ALTMAX"]), "m", "maximum prior year active layer thickness"),
        "nbedrock": nc_var(("lat", "lon"), nb, "unitless", "index of the deepest soil layer above bedrock (1-based)"),
        "CELLSAND": nc_var(("levsoi", "lat", "lon"), S(fc["CELLSAND"]), "%", "sand content"),
        "input_cwd": nc_var(
            ("lat", "lon"), S(fc["input_cwd"]), "gC/m^2/yr", "annual carbon input to coarse woody debris"
        ),
        "input_litter1": nc_var(
            ("lat", "lon"), S(fc["input_litter1"]), "gC/m^2/yr", "annual carbon input to metabolic litter"
        ),
        "input_litter2": nc_var(
            ("lat", "lon"), S(fc["input_litter2"]), "gC/m^2/yr", "annual carbon input to cellulose litter"
        ),
        "input_litter3": nc_var(
            ("lat", "lon"), S(fc["input_litter3"]), "gC/m^2/yr", "annual carbon input to lignin litter"
        ),
        "NPP": nc_var(("lat", "lon"), S(fc["NPP"]), "gC/m^2/yr", "net primary production"),
        "ZSOI": nc_var(("levsoi",), g.z_node.astype(np.float32), "m", "soil layer node depth"),
        "DZSOI": nc_var(("levsoi",), g.dz.astype(np.float32), "m", "soil layer thickness"),
        "time_bounds": xr.Variable(("time", "hist_interval"), tc["time_bounds"]),
    }
    ds = xr.Dataset(
        v,
        coords={
            "time": (
                "time",
                tc["time"],
                {
                    "units": "days since 0001-01-01 00:00:00",
                    "calendar": "noleap",
                    "bounds": "time_bounds",
                    "long_name": "time",
                },
            ),
            "lat": ("lat", lat, {"units": "degrees_north", "long_name": "coordinate latitude"}),
            "lon": ("lon", lon, {"units": "degrees_east", "long_name": "coordinate longitude"}),
        },
        attrs=attrs,
    )
    return ds
