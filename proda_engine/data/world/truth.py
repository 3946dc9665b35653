"""The hidden truth of the twin experiment: unit-interval CLM5 parameters that are smooth functions of
the world's drivers (:data:`TRUTH_DESIGN`, :func:`truth_theta`), and the ``truth_parameters.nc``
dataset (:func:`truth_dataset`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from proda_engine.data.world.base import nc_var, sigmoid, zscore
from proda_engine.data.world.covariates import Surface
from proda_engine.parameters import PARAMETER_NAMES, PARAMETERS

# Truth parameters: theta = 0.05 + 0.9 sigmoid(c + sum_k b_k z_k + s noise). (c, coefficients on the
# standardised drivers, noise s.d.); drivers: T = MAT, P = log MAP, A = aridity, C = clay (0 cm),
# H = pH, N = log NPP, E = elevation, F = permafrost (0/1), B = log depth to bedrock.
TRUTH_DESIGN: dict[str, tuple[float, dict[str, float], float]] = {
    # The offsets c were calibrated (docs/world.md) so that the truth's global SOC lands in the
    # observed ranges with the conservative closure: ~790 Pg (0-30 cm), ~1,350 Pg (0-1 m), ~2,330 Pg
    # (whole profile), highest in boreal/tundra soils, lowest in deserts. With the HWSD soil (world-1.2.0)
    # only tau4s3's offset moved (-1.1 -> -0.7: 735 -> 787 / 1,228 -> 1,352 / 2,031 -> 2,334 Pg).
    "diffus": (-3.0, {}, 0.08),  # weakly identifiable: ~constant
    "cryo": (-2.0, {}, 0.08),  # weakly identifiable: ~constant
    "q10": (-1.0, {"T": -0.6, "F": 0.5}, 0.3),
    "efolding": (2.5, {"A": 0.35, "C": -0.2, "T": 0.15}, 0.35),
    "taucwd": (0.0, {"T": -0.5, "A": 0.25}, 0.3),
    "taul1": (0.0, {"T": -0.3, "N": 0.2}, 0.3),
    "taul2": (0.0, {"T": -0.3, "C": 0.15}, 0.3),
    "tau4s1": (-0.3, {"C": 0.3, "H": -0.2}, 0.3),
    "tau4s2": (-1.0, {"C": 0.35, "T": -0.3}, 0.35),
    "tau4s3": (-0.7, {"T": -0.6, "C": 0.3, "F": 0.6}, 0.35),  # -1.1 before the HWSD soil (world-1.2.0)
    "fl1s1": (-1.0, {"C": 0.3, "N": 0.2}, 0.3),
    "fl2s1": (-1.0, {"C": 0.25, "T": -0.15}, 0.3),
    "fl3s2": (-1.0, {"C": 0.3, "H": -0.2}, 0.3),
    "fs1s2": (-1.0, {"C": 0.45}, 0.25),
    "fs1s3": (0.0, {}, 0.08),  # weakly identifiable: ~constant
    "fs2s1": (0.0, {"T": 0.2, "H": 0.2}, 0.3),
    "fs2s3": (-0.8, {"C": 0.35, "F": 0.2}, 0.3),
    "fs3s1": (0.0, {"T": 0.2}, 0.3),
    "fcwdl2": (0.0, {"P": 0.25}, 0.3),
    "wscaling": (1.0, {"A": 0.4, "P": -0.2}, 0.3),
    "beta": (1.0, {"A": 0.35, "E": -0.15, "B": 0.15}, 0.3),
}


def truth_theta(s: Surface, seed: int = 0) -> np.ndarray:
    """Hidden unit-interval parameters (21, lat, lon), smooth functions of the covariates.

    theta_p = 0.05 + 0.9 sigmoid(c_p + sum_k b_pk z_k + s_p eta_p), with z_k standardised climate,
    soil and vegetation drivers and eta_p a smooth (sigma = 3 deg) noise field; so theta stays in
    (0.05, 0.95). ``diffus``, ``cryo`` and ``fs1s3`` are nearly constant (weakly identifiable).
    """
    ref = s.ref
    drivers = {
        "T": s.z_t,
        "P": s.z_p,
        "A": np.clip(s.arid, -3, 3),
        "C": zscore(s.soil["clay_0"], ref),
        "H": zscore(s.soil["ph_0"], ref),
        "N": zscore(np.log1p(s.npp), ref),
        "E": s.z_elev,
        "F": s.permafrost.astype(float),
        "B": zscore(np.log(s.depth_to_bedrock_m), ref),
    }
    out = np.empty((len(PARAMETER_NAMES), *s.mat.shape))
    for i, name in enumerate(PARAMETER_NAMES):
        c, coefs, sd = TRUTH_DESIGN[name]
        x = c + sum(b * np.clip(drivers[k], -3, 3) for k, b in coefs.items())
        x = x + sd * s.noise(f"theta_{name}", 3.0)
        out[i] = 0.05 + 0.9 * sigmoid(x)
    return out


def truth_dataset(theta: np.ndarray, sl: tuple[slice, slice], mask: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                  attrs: dict[str, Any]) -> xr.Dataset:
    """``truth_parameters.nc`` of the region ``sl``: ``theta`` (parameter, lat, lon), NaN off ``mask``,
    with each parameter's bounds and units as coordinates and :data:`TRUTH_DESIGN` in the attributes."""
    th = np.where(mask[None], theta[:, sl[0], sl[1]], np.nan)
    return xr.Dataset(
        {
            "theta": nc_var(
                ("parameter", "lat", "lon"),
                th.astype(np.float64),
                "1",
                "hidden true unit-interval parameters of the twin experiment",
            )
        },
        coords={
            "parameter": ("parameter", list(PARAMETER_NAMES)),
            "lower": ("parameter", np.array([p.lower for p in PARAMETERS])),
            "upper": ("parameter", np.array([p.upper for p in PARAMETERS])),
            "units": ("parameter", [p.units for p in PARAMETERS]),
            "lat": ("lat", lat, {"units": "degrees_north"}),
            "lon": ("lon", lon, {"units": "degrees_east"}),
        },
        attrs={**attrs, "design": json.dumps({k: [c, b, s] for k, (c, b, s) in TRUTH_DESIGN.items()})},
    )
