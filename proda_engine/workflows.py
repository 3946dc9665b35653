"""End-to-end workflows over a built world (top layer, beside the API).

* the twin experiment: the world builder's synthetic observations solved by the physics
  (:mod:`proda_engine.data` cannot import the physics, so the builder takes the solver as a function);
* training: a world's observed profiles -> nearest land cell's forcing and covariates -> network
  (two-step on MCMC posterior means, or end to end through the differentiable solver) -> theta for
  every land cell, written as ``<world>/products/theta_<source>.nc`` (a dashboard parameter source)
  with the model file and a JSON report.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.spatial import cKDTree

from proda_engine.data import read_profiles, write_netcdf_atomic, write_text_atomic
from proda_engine.data.world import (
    CATEGORICAL_COVARIATES,
    COVARIATE_NAMES,
    WorldPaths,
    ensure_world,
    make_twin_profiles,
)
from proda_engine.inference.likelihood import ObservationBatch
from proda_engine.learning.config import TrainConfig
from proda_engine.learning.training import TrainedModel, train_end_to_end, train_two_step
from proda_engine.parameters import PARAMETER_NAMES
from proda_engine.physics import Forcing, solve_theta
from proda_engine.products.sites import nearest_land_cell, unit_vectors
from proda_engine.products.world import WorldCells, load_world_cells


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


log = logging.getLogger(__name__)

SOURCE_FOR_METHOD = {"end-to-end": "proda_e2e", "two-step": "proda_two_step"}

#: End-to-end defaults measured on the default world (docs/evaluation.md; configs/train_e2e.yaml):
#: squared error of log SOC (the spec's relative-error cost biased totals ~30 % low on noisy data).
E2E_DEFAULTS: dict[str, Any] = {"method": "end-to-end", "loss": "log_mse", "batch_size": 1024, "lr": 2e-3,
                                "max_epochs": 40, "patience": 8}


def default_train_config(method: str = "end-to-end", **overrides: Any) -> TrainConfig:
    """The project's default training setup for ``method`` (end to end: :data:`E2E_DEFAULTS`)."""
    base = dict(E2E_DEFAULTS) if method == "end-to-end" else {"method": method}
    base.update(overrides)
    return TrainConfig.from_dict(base)


@dataclass
class SiteData:
    """Sites with observations, aligned row by row: covariates, forcing, observations, cell index."""

    table: pd.DataFrame  # covariates (60 names) + lat/lon of the site
    forcing: Forcing
    observations: ObservationBatch
    cell: np.ndarray  # index into WorldCells (valid land cells)
    lat: np.ndarray
    lon: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)


def covariate_table(cov: xr.Dataset, wc: WorldCells, rows: np.ndarray | None = None) -> pd.DataFrame:
    """The 60 covariates of the world's land cells (rows = WorldCells order) as a DataFrame."""
    names = [n for n in COVARIATE_NAMES if n in cov]
    flat = {n: np.asarray(cov[n].values, dtype=float).reshape(-1)[wc.cells] for n in names}
    df = pd.DataFrame(flat)
    return df if rows is None else df.iloc[rows].reset_index(drop=True)


def site_data(paths: WorldPaths, wc: WorldCells, cov: xr.Dataset, *, profiles_dir: Path | None = None,
              max_sites: int | None = None, seed: int = 0) -> SiteData:
    """Observed profiles of a world with their nearest land cell's forcing and covariates."""
    ps = read_profiles(profiles_dir or paths.wosis_dir)
    obs = ObservationBatch.from_layers(ps.layers)
    prof = ps.profiles.set_index("profile_id").loc[obs.profile_id]
    lat = prof["latitude"].to_numpy(float)
    lon = prof["longitude"].to_numpy(float)
    keep = np.arange(obs.n_profiles)
    if max_sites is not None and max_sites < keep.size:
        keep = np.sort(np.random.default_rng(seed).choice(keep.size, max_sites, replace=False))
        obs = obs.subset(keep)
        lat, lon = lat[keep], lon[keep]
    cell, dist_km = nearest_land_cell(wc.lat, wc.lon, wc.cells, lat, lon)
    table = covariate_table(cov, wc, cell)
    table["site_lat"], table["site_lon"] = lat, lon
    report = {"reader": ps.report.to_dict(), "skipped_in_preprocessing": len(obs.skipped),
              "sites": int(obs.n_profiles), "max_cell_distance_km": float(dist_km.max())}
    return SiteData(table=table, forcing=wc.forcing.subset(cell), observations=obs, cell=cell, lat=lat, lon=lon,
                    report=report)


def predict_grid(model: TrainedModel, cov: xr.Dataset, wc: WorldCells) -> xr.DataArray:
    """theta (parameter, lat, lon) for every land cell; NaN where a covariate is missing or off land."""
    table = covariate_table(cov, wc)
    theta = model.predict_theta(table)
    full = np.full((wc.lat.size * wc.lon.size, len(PARAMETER_NAMES)), np.nan)
    full[wc.cells] = theta
    return xr.DataArray(full.reshape(wc.lat.size, wc.lon.size, -1).transpose(2, 0, 1),
                        dims=("parameter", "lat", "lon"),
                        coords={"parameter": list(PARAMETER_NAMES), "lat": wc.lat, "lon": wc.lon},
                        attrs={"units": "1", "long_name": "network-predicted unit-interval parameters"})


def fill_missing_cells(theta: xr.DataArray, wc: WorldCells) -> xr.DataArray:
    """Land cells whose covariates are missing get the nearest predicted cell's parameters (counted)."""
    flat = theta.transpose("lat", "lon", "parameter").values.reshape(-1, theta.sizes["parameter"])
    cells = flat[wc.cells]
    bad = ~np.isfinite(cells).all(1)
    if bad.any():
        la2, lo2 = np.meshgrid(wc.lat, wc.lon, indexing="ij")
        la, lo = la2.reshape(-1)[wc.cells], lo2.reshape(-1)[wc.cells]
        tree = cKDTree(unit_vectors(la[~bad], lo[~bad]))
        _, nn = tree.query(unit_vectors(la[bad], lo[bad]))
        cells[bad] = cells[~bad][nn]
        flat[wc.cells] = cells
        theta = theta.copy(data=flat.reshape(theta.sizes["lat"], theta.sizes["lon"], -1).transpose(2, 0, 1))
    theta.attrs["cells_filled_from_neighbour"] = int(bad.sum())
    return theta


@dataclass
class WorldTraining:
    model: TrainedModel
    theta_path: Path
    model_path: Path
    seconds: float
    report: dict[str, Any]


def _fit_block_size(config: TrainConfig, lat: np.ndarray, lon: np.ndarray, min_blocks: int = 10) -> TrainConfig:
    """Shrink the spatial-split block on small (regional) worlds so there are enough blocks to split
    80/20 and then 90/10; the globe keeps the configured size. Logged, never silent."""
    def n_blocks(b: float) -> int:
        return len(set(zip(np.floor(lat / b).astype(int), np.floor(lon / b).astype(int))))

    block = config.block_size
    while n_blocks(block) < min_blocks and block > 0.25:
        block /= 2
    if block != config.block_size:
        log.warning("spatial split: %.2f-degree blocks give fewer than %d blocks on this world; using %.3g degrees",
                    config.block_size, min_blocks, block)
        config = config.replace(block_size=block)
    return config


def train_world(world: str = "default", *, method: str = "end-to-end", config: TrainConfig | None = None,
                max_sites: int | None = None, targets: xr.Dataset | None = None,
                profiles_dir: Path | None = None) -> WorldTraining:
    """Train PRODA on a world's observations and write its parameter map as a dashboard source.

    ``method="two-step"`` needs ``targets``: an MCMC posterior Dataset with ``theta`` (site, parameter)
    and ``lat``/``lon`` per site (``proda assimilate`` writes one).

    ``config.n_members > 1`` trains an ensemble (bootstrap resamples of the training sites, one shared
    split and encoder): the parameter map is the members' mean theta, and every member's map goes to
    ``theta_<source>_members.nc`` (the dashboard's ensemble spread and +/- sd cards read it).
    """
    t0 = time.perf_counter()
    config = config or TrainConfig()
    default_loss = {"end-to-end": ("cost", ("cost", "log_mse")), "two-step": ("mse", ("mse", "proda"))}
    loss = config.loss
    if method in default_loss and loss not in default_loss[method][1]:
        loss = default_loss[method][0]  # a config written for the other method
    config = config.replace(method=method, loss=loss)
    paths = build_twin_world(world).paths if profiles_dir is None else ensure_world(world)
    wc = load_world_cells(paths.forcing)
    with xr.open_dataset(paths.covariates) as ds:
        cov = ds.load()
    covariates = [n for n in COVARIATE_NAMES if n in cov]
    categorical = [n for n in CATEGORICAL_COVARIATES if n in covariates]
    from proda_engine.learning.ensembles import train_ensemble

    ensemble = config.n_members > 1
    if method == "end-to-end":
        sd = site_data(paths, wc, cov, profiles_dir=profiles_dir, max_sites=max_sites, seed=config.seed)
        config = _fit_block_size(config, sd.lat, sd.lon)
        kw = {"config": config, "lat": sd.lat, "lon": sd.lon, "covariates": covariates, "categorical": categorical}
        if ensemble:
            members = train_ensemble(sd.table, forcing_sites=sd.forcing, observations=sd.observations, **kw).members
        else:
            members = [train_end_to_end(sd.table, sd.forcing, sd.observations, **kw)]
        report = sd.report
    elif method == "two-step":
        if targets is None:
            raise ValueError("two-step training needs MCMC posterior targets (run `proda assimilate` first)")
        lat = np.asarray(targets["lat"].values, float)
        lon = np.asarray(targets["lon"].values, float)
        cell, _ = nearest_land_cell(wc.lat, wc.lon, wc.cells, lat, lon)
        table = covariate_table(cov, wc, cell)
        th = targets["theta"].transpose("site", "parameter").values
        kw = {"config": config, "lat": lat, "lon": lon, "covariates": covariates, "categorical": categorical}
        if ensemble:
            members = train_ensemble(table, targets_theta=th, **kw).members
        else:
            members = [train_two_step(table, th, **kw)]
        report = {"sites": int(th.shape[0])}
    else:
        raise ValueError(f"method must be 'end-to-end' or 'two-step', found {method!r}")
    model = members[0]
    source = SOURCE_FOR_METHOD[method]
    out = paths.root / "products"
    if ensemble:
        thetas = [fill_missing_cells(predict_grid(m, cov, wc), wc) for m in members]
        stack = xr.concat(thetas, dim="member").assign_coords(member=np.arange(len(members)))
        write_netcdf_atomic(stack.to_dataset(name="theta").assign_attrs(
            source=source, method=method, world=world, n_members=len(members),
            bootstrap=int(config.bootstrap)), out / f"theta_{source}_members.nc")
        theta = stack.mean("member").clip(0.0, 1.0)
        report["members"] = [m.metadata.get("evaluation") for m in members]
    else:
        theta = fill_missing_cells(predict_grid(model, cov, wc), wc)
        # a members file from an earlier ensemble no longer describes this map
        (out / f"theta_{source}_members.nc").unlink(missing_ok=True)
    theta_path = write_netcdf_atomic(theta.to_dataset(name="theta").assign_attrs(
        source=source, method=method, world=world), out / f"theta_{source}.nc")
    model_path = model.save(out / f"model_{source}.pt")
    report.update({"method": method, "seconds": time.perf_counter() - t0,
                   "evaluation": model.metadata.get("evaluation"), "dropped": model.metadata.get("dropped")})
    write_text_atomic(json.dumps(report, indent=2, default=str), out / f"train_{source}.json")
    return WorldTraining(model, theta_path, model_path, time.perf_counter() - t0, report)
