"""The twin experiment, wired: the world builder's synthetic observations solved by the physics.

:mod:`proda_engine.data` cannot import the physics, so the world builder takes the solver as a
function; this module provides it and the one-call ``build_twin_world`` used by ``proda world``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from proda_engine.data.world import WorldPaths, ensure_world, make_twin_profiles
from proda_engine.physics import Forcing, solve_theta


def twin_solver(theta: np.ndarray, forcing_ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Steady-state SOC (L, C) in g C m-3 and the per-cell status for sites of a normalised forcing."""
    forcing, _ = Forcing.from_dataset(forcing_ds, only_valid=False)
    res = solve_theta(np.asarray(theta, dtype=float), forcing)
    return res.soc, res.status


@dataclass
class TwinWorld:
    paths: WorldPaths
    build_seconds: float
    twin: dict[str, Any] | None


def build_twin_world(name: str = "default", region: str | None = None, *, n_sites: int | None = None,
                     seed: int = 0, rebuild_twin: bool = False, **options: Any) -> TwinWorld:
    """Build (or reuse) a world and its twin WoSIS-2019 observations; returns paths and timings."""
    t0 = time.perf_counter()
    paths = ensure_world(name, region=region, seed=seed, **options)
    marker = paths.wosis_dir / "wosis_201909_profiles.tsv"
    twin = None
    if rebuild_twin or not marker.exists() or marker.stat().st_mtime < paths.manifest.stat().st_mtime:
        twin = make_twin_profiles(paths, twin_solver, n_sites=n_sites, seed=seed)
    return TwinWorld(paths=paths, build_seconds=time.perf_counter() - t0, twin=twin)
