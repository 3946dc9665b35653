"""What one point of the map holds: value +- ensemble s.d., the SOC profile and the observed profiles nearby.

A tap on the dashboard's map asks :func:`point_query` (through ``api.point_query``) for the valid land
cell nearest to (lat, lon):

* the map variable's value there under the current request (``soc_stock``, ``soc_change``, ``turnover``
  or ``cue`` of the depth interval), and its across-member s.d. where the source has an ensemble (every
  member solved under the *same* request key as the mean map, as :class:`~.layers.MemberEnsemble` does);
* the SOC profile of that cell (g C m-3 at the layer nodes), perturbed and baseline, with the members'
  s.d. of the perturbed profile;
* the observed profiles within ``radius_km`` (great-circle distance), each with the model at its
  horizons (PCHIP from the nodes, spec §(i)) and its misfit, model minus observation (kg C m-3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from proda_engine.inference.likelihood import model_at_obs
from proda_engine.products.regions import Region
from proda_engine.products.whatif import CellResults, WhatIfEngine

#: Map variables a point query can read from a solve, with units.
POINT_VARIABLES: dict[str, str] = {"soc_stock": "kg C m-2", "soc_change": "kg C m-2", "turnover": "yr",
                                   "cue": "1"}

#: Mean Earth radius (km) for great-circle distances.
EARTH_RADIUS_KM = 6371.0088


@dataclass
class PointQuery:
    """The answer to a tap (see the module docstring); ``sd`` is NaN without an ensemble."""

    lat: float
    lon: float
    variable: str
    depth: str
    units: str
    value: float
    sd: float
    n_members: int
    profile: pd.DataFrame  # depth_m, soc_g_m3, soc_baseline_g_m3, soc_sd_g_m3
    sites: pd.DataFrame = field(default_factory=pd.DataFrame)  # per nearby site (see site_rows)
    horizons: pd.DataFrame = field(default_factory=pd.DataFrame)  # per observed horizon of those sites

    def text(self) -> str:
        """One line: ``"SOC stock 0-100cm: 12.3 ± 0.8 kg C m-2 at 10.25°N, 20.75°E"``."""
        pm = f" ± {self.sd:.3g}" if np.isfinite(self.sd) else ""
        ns = "N" if self.lat >= 0 else "S"
        ew = "E" if self.lon >= 0 else "W"
        return (f"{self.variable} {self.depth}: {self.value:.3g}{pm} {self.units} at "
                f"{abs(self.lat):.2f}°{ns}, {abs(self.lon):.2f}°{ew}")


def cell_value(res: CellResults, base: CellResults, variable: str, depth: str, cell: int) -> float:
    """The map variable at one cell of a solve: stock (kg C m-2), change vs ``base`` (kg C m-2), turnover
    (yr) or CUE (1) of the depth interval."""
    if variable == "soc_stock":
        return float(res.stocks[depth][cell])
    if variable == "soc_change":
        return float(res.stocks[depth][cell] - base.stocks[depth][cell])
    if variable == "turnover":
        return float(res.turnover[depth][cell])
    if variable == "cue":
        return float(res.cue[depth][cell])
    raise ValueError(f"point query reads one of {sorted(POINT_VARIABLES)}, not {variable!r}")


def great_circle_km(lat0: float, lon0: float, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Haversine distance (km) from (lat0, lon0) to each (lat, lon), degrees in, R = 6,371.0088 km."""
    p0, p = np.deg2rad(lat0), np.deg2rad(np.asarray(lat, float))
    dlat = p - p0
    dlon = np.deg2rad(np.asarray(lon, float) - lon0)
    h = np.sin(dlat / 2) ** 2 + np.cos(p0) * np.cos(p) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(h, 1.0)))


def nearby_sites(sites, engine: WhatIfEngine, res: CellResults, lat: float, lon: float, *,
                 radius_km: float = 250.0, max_sites: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Observed profiles within ``radius_km`` of (lat, lon), nearest first (at most ``max_sites``).

    Returns (per site: profile_id, lat, lon, distance_km, n_horizons, observed_kg_m3 and modelled_kg_m3
    means over its horizons, misfit_kg_m3 = mean(model - observation), rmse_kg_m3; per horizon:
    profile_id, depth_m, observed_kg_m3, modelled_kg_m3). The model is the site's nearest land cell
    (its own cell, not the tapped one), interpolated to the horizon mid-depths with PCHIP.
    """
    prof = sites.profiles
    d = great_circle_km(lat, lon, prof["lat"].to_numpy(), prof["lon"].to_numpy())
    near = np.flatnonzero(d <= radius_km)
    near = near[np.argsort(d[near], kind="stable")][:max_sites]
    cols = ["profile_id", "lat", "lon", "distance_km", "n_horizons", "observed_kg_m3", "modelled_kg_m3",
            "misfit_kg_m3", "rmse_kg_m3"]
    if near.size == 0:
        return pd.DataFrame(columns=cols), pd.DataFrame(columns=["profile_id", "depth_m", "observed_kg_m3",
                                                                  "modelled_kg_m3"])
    idx = np.sort(near)
    obs = sites.observations.subset(idx)
    cells = prof["cell"].to_numpy()[idx]
    model = np.asarray(model_at_obs(res.soc[:, cells], engine.grid.z_node, obs.depth, obs.mask)) / 1000.0
    observed = obs.soc / 1000.0
    m = obs.mask
    horizons = pd.DataFrame({"profile_id": np.repeat(obs.profile_id, m.sum(1)), "depth_m": obs.depth[m],
                             "observed_kg_m3": observed[m], "modelled_kg_m3": model[m]})
    diff = np.where(m, model - observed, np.nan)
    with np.errstate(invalid="ignore"):
        per = pd.DataFrame({
            "profile_id": obs.profile_id, "lat": prof["lat"].to_numpy()[idx], "lon": prof["lon"].to_numpy()[idx],
            "distance_km": d[idx], "n_horizons": m.sum(1),
            "observed_kg_m3": np.nanmean(np.where(m, observed, np.nan), 1),
            "modelled_kg_m3": np.nanmean(np.where(m, model, np.nan), 1),
            "misfit_kg_m3": np.nanmean(diff, 1), "rmse_kg_m3": np.sqrt(np.nanmean(diff ** 2, 1)),
        })
    return per.sort_values("distance_km", kind="stable").reset_index(drop=True)[cols], horizons


def point_query(engine: WhatIfEngine, lat: float, lon: float, *, variable: str = "soc_stock",
                depth: str = "0-100cm", source: str | None = None,
                perturbation: Mapping[str, float] | None = None, region: Region | None = None,
                members=None, sites=None, radius_km: float = 250.0, max_sites: int = 8,
                space: str = "bulk") -> PointQuery:
    """Everything a tap shows (module docstring). ``members``: a :class:`~.layers.MemberEnsemble` or None;
    ``sites``: a :class:`~.sites.SiteSet` or None (no observed profiles then)."""
    if variable not in POINT_VARIABLES:
        raise ValueError(f"point query reads one of {sorted(POINT_VARIABLES)}, not {variable!r}")
    source = engine._check_source(source)
    key = engine.resolve(source, perturbation, space=space, region=region)
    res = engine._results_for(source, key)
    base = engine.baseline(source)
    cell = engine.nearest_cell(lat, lon)
    flat_lat, flat_lon = engine.cell_coordinates()
    value = cell_value(res, base, variable, depth, cell)
    sd, n, prof_sd = float("nan"), 0, np.full(res.soc.shape[0], np.nan)
    if members is not None:
        pert_m, base_m = members.results(key), members.results(None)
        vals = np.array([cell_value(p, b, variable, depth, cell) for p, b in zip(pert_m, base_m)], float)
        ok = vals[np.isfinite(vals)]
        n = int(vals.size)
        sd = float(ok.std(ddof=1)) if ok.size > 1 else float("nan")
        with np.errstate(invalid="ignore"):
            prof_sd = np.nanstd(np.stack([p.soc[:, cell].astype(float) for p in pert_m]), 0, ddof=1)
    profile = pd.DataFrame({"depth_m": np.asarray(engine.grid.z_node, float),
                            "soc_g_m3": res.soc[:, cell].astype(float),
                            "soc_baseline_g_m3": base.soc[:, cell].astype(float), "soc_sd_g_m3": prof_sd})
    site_rows = horizons = pd.DataFrame()
    if sites is not None:
        site_rows, horizons = nearby_sites(sites, engine, res, float(flat_lat[cell]), float(flat_lon[cell]),
                                           radius_km=radius_km, max_sites=max_sites)
    return PointQuery(lat=float(flat_lat[cell]), lon=float(flat_lon[cell]), variable=variable, depth=depth,
                      units=POINT_VARIABLES[variable], value=value, sd=sd, n_members=n, profile=profile,
                      sites=site_rows, horizons=horizons)
