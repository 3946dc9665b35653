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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.spatial import cKDTree

from proda_engine.data import RunFolder, read_profiles, write_text_atomic
from proda_engine.data.parameter_files import parameter_file_attrs
from proda_engine.data.world import WorldPaths, ensure_world, make_twin_profiles
from proda_engine.data.writers import version_attrs, write_product
from proda_engine.inference.likelihood import ObservationBatch
from proda_engine.learning.config import TrainConfig
from proda_engine.learning.training import TrainedModel, train_end_to_end, train_two_step
from proda_engine.parameters import PARAMETER_NAMES
from proda_engine.physics import Forcing, solve_theta
from proda_engine.products.sites import nearest_land_cell, unit_vectors
from proda_engine.products.world import OpenWorld, WorldCells, open_world


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


#: What the first ``proda serve`` of a world trains when it has no PRODA map yet: a bootstrap ensemble of
#: five members (so every card, the change, the profile and the sensitivity show +- s.d. from the first
#: run), each a narrower network trained for fewer epochs on a subsample of :data:`FIRST_RUN_SITES`
#: sites, with the minibatch bias term (a short log-space fit is biased low): it fits the first-run
#: budget measured in docs/dashboard.md. ``proda train`` trains the full single model or a larger ensemble.
FIRST_RUN_DEFAULTS: dict[str, Any] = {**E2E_DEFAULTS, "hidden": [128, 256, 256, 128], "max_epochs": 10,
                                      "patience": 3, "n_members": 5, "bias_weight": 1.0}
#: Sites the first run trains on (a random subsample; None: all).
FIRST_RUN_SITES: int | None = 30000


def first_run_config(**overrides: Any) -> TrainConfig:
    """:data:`FIRST_RUN_DEFAULTS` with ``overrides`` (e.g. ``n_members``, ``max_epochs``)."""
    return TrainConfig.from_dict({**FIRST_RUN_DEFAULTS, **overrides})


def default_train_config(method: str = "end-to-end", **overrides: Any) -> TrainConfig:
    """The project's default training setup for ``method`` (end to end: :data:`E2E_DEFAULTS`)."""
    base = dict(E2E_DEFAULTS) if method == "end-to-end" else {"method": method}
    base.update(overrides)
    return TrainConfig.from_dict(base)


#: End-to-end defaults for worlds of measured profiles (catalog worlds), chosen by spatial 5-fold
#: cross-validation on the 1,060 FEBR profiles (docs/evaluation.md): a smaller network with weight decay
#: for 10^3-10^4 sites, the minibatch bias term (bias_weight) so totals follow the observed mean rather than
#: the median, and a 5-member bootstrap ensemble (better held-out R², and the +- s.d. the products show).
MEASURED_E2E_DEFAULTS: dict[str, Any] = {**E2E_DEFAULTS, "hidden": [128, 128], "weight_decay": 1e-4,
                                         "bias_weight": 1.0, "n_members": 5}


def measured_train_config(**overrides: Any) -> TrainConfig:
    """:data:`MEASURED_E2E_DEFAULTS` with ``overrides``: end to end on measured profiles."""
    return TrainConfig.from_dict({**MEASURED_E2E_DEFAULTS, **overrides})


@dataclass
class SiteData:
    """Sites with observations, aligned row by row: covariates, forcing, observations, cell index."""

    table: pd.DataFrame  # the world's covariates at each site's cell + lat/lon of the site
    forcing: Forcing
    observations: ObservationBatch
    cell: np.ndarray  # index into the world's (masked) land cells, OpenWorld.cells
    lat: np.ndarray
    lon: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)


def covariate_table(ow: OpenWorld, rows: np.ndarray | None = None) -> pd.DataFrame:
    """The world's covariates at its land cells (rows = ``ow.cells`` order) as a DataFrame."""
    cells = ow.cells.cells
    flat = {n: np.asarray(ow.covariates[n].values, dtype=float).reshape(-1)[cells] for n in ow.covariate_names}
    df = pd.DataFrame(flat)
    return df if rows is None else df.iloc[rows].reset_index(drop=True)


#: Sites farther than this from every land cell of a catalog world are dropped (km); a 0.5 degree cell's
#: centre is at most ~40 km from any point of it, so 100 km keeps coastal sites and refuses misplaced ones.
DEFAULT_MAX_DISTANCE_KM = 100.0


def world_profiles(ow: OpenWorld, profiles: Path | Sequence[Path] | None = None, *, min_layers: int = 1):
    """The world's observed profiles (a :class:`~proda_engine.data.ProfileSet`).

    A built-in world writes its twin observations first if needed. ``min_layers=1`` keeps
    single-layer profiles (end-to-end training, evaluation); site MCMC uses 2.
    """
    spec = ow.spec
    if profiles is None:
        if spec.kind == "builtin":
            build_twin_world(spec.name)
        if not spec.profiles:
            raise ValueError(f"world {spec.name!r} has no observed profiles: add 'profiles: SOURCE' to its entry "
                             f"in {spec.catalog}")
        profiles = list(spec.profiles)
        layout = spec.profiles_layout
    else:
        layout = None
    paths = [profiles] if isinstance(profiles, (str, Path)) else list(profiles)
    return read_profiles(paths[0] if len(paths) == 1 else paths, layout=layout, min_layers=min_layers)


def site_data(ow: OpenWorld, *, profiles: Path | Sequence[Path] | None = None, max_sites: int | None = None,
              seed: int = 0, max_distance_km: float | None = None, min_layers: int = 1) -> SiteData:
    """Observed profiles of a world with their nearest land cell's forcing and covariates.

    A site takes the nearest forcing-valid cell (great-circle distance). It is dropped, and counted by
    reason in ``report["sites_dropped"]``, when that cell is farther than ``max_distance_km`` (default
    :data:`DEFAULT_MAX_DISTANCE_KM` for catalog worlds, no limit for built-in twins, whose sites sit on
    cells) or when a covariate is missing there (the reason names the covariate). Nothing is imputed.
    """
    ps = world_profiles(ow, profiles, min_layers=min_layers)
    obs = ObservationBatch.from_layers(ps.layers, min_layers=min_layers)
    prof = ps.profiles.set_index("profile_id").loc[obs.profile_id]
    lat = prof["latitude"].to_numpy(float)
    lon = prof["longitude"].to_numpy(float)
    if max_distance_km is None and ow.spec.kind == "catalog":
        max_distance_km = DEFAULT_MAX_DISTANCE_KM
    fc = ow.forcing_cells
    fcell, dist_km = nearest_land_cell(fc.lat, fc.lon, fc.cells, lat, lon)
    reason = np.full(lat.size, "", dtype=object)
    if max_distance_km is not None:
        reason[dist_km > max_distance_km] = f"farther than {max_distance_km:g} km from a land cell of the forcing"
    miss = ow.missing_covariate[fcell]
    no_cov = (reason == "") & (miss != "")
    reason[no_cov] = np.array([f"covariate {m} missing at the site's cell" for m in miss[no_cov]], dtype=object)
    cell_of = ow.cell_of_forcing_cell()[fcell]
    if ow.spec.kind == "builtin":
        # a built-in world keeps cells without covariates (their parameters are filled for the maps), so
        # its sites there are dropped here too, with the same reason
        cell_of = np.where(reason == "", cell_of, -1)
    reason[(reason == "") & (cell_of < 0)] = "cell masked in the world"
    keep = np.flatnonzero(reason == "")
    dropped = pd.Series(reason[reason != ""]).value_counts().to_dict() if (reason != "").any() else {}
    if dropped:
        log.warning("world %r: %d of %d sites dropped: %s", ow.name, lat.size - keep.size, lat.size, dropped)
    if max_sites is not None and max_sites < keep.size:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_sites, replace=False))
    obs = obs.subset(keep)
    lat, lon, cell = lat[keep], lon[keep], cell_of[keep]
    table = covariate_table(ow, cell)
    table["site_lat"], table["site_lon"] = lat, lon
    single = int((obs.mask.sum(1) == 1).sum())
    report = {"reader": ps.report.to_dict(), "skipped_in_preprocessing": len(obs.skipped),
              "sites_read": int(reason.size), "sites_dropped": {str(k): int(v) for k, v in dropped.items()},
              "sites": int(obs.n_profiles), "single_layer_sites": single,
              "multi_layer_sites": int(obs.n_profiles) - single,
              "max_cell_distance_km": float(dist_km[keep].max()) if keep.size else float("nan"),
              "max_distance_km": max_distance_km}
    return SiteData(table=table, forcing=ow.cells.forcing.subset(cell), observations=obs, cell=cell, lat=lat,
                    lon=lon, report=report)


def check_model_covariates(model: TrainedModel, ow: OpenWorld, model_name: str = "the model") -> None:
    """Refuse to predict with covariates other than the ones the model was trained on."""
    enc = model.encoder
    have, cats = set(ow.covariate_names), set(ow.categorical)
    missing = [c for c in (enc.columns or []) if c not in have]
    if missing:
        raise ValueError(f"{model_name} was trained on covariates {enc.columns}; world {ow.name!r} "
                         f"({', '.join(map(str, ow.spec.covariates))}) lacks {missing}; found {ow.covariate_names}")
    wrong = [c for c in enc.categorical if c not in cats] + [c for c in cats & set(enc.columns or [])
                                                             if c not in enc.categorical]
    if wrong:
        raise ValueError(f"{model_name}: covariate(s) {sorted(set(wrong))} are categorical in one of the model "
                         f"(categorical {enc.categorical}) and world {ow.name!r} (categorical {ow.categorical}), "
                         "not in both")


def predict_grid(model: TrainedModel, ow: OpenWorld) -> xr.DataArray:
    """theta (parameter, lat, lon) for every land cell of the world; NaN off its cells.

    Categories unseen at fit time are counted per covariate in ``attrs["unseen_categories"]``.
    """
    check_model_covariates(model, ow)
    wc = ow.cells
    table = covariate_table(ow)
    enc = model.encoder.transform(table)
    theta = np.full((enc.n_rows, len(PARAMETER_NAMES)), np.nan)
    theta[enc.index] = model.predict_encoded(enc.x)
    full = np.full((wc.lat.size * wc.lon.size, len(PARAMETER_NAMES)), np.nan)
    full[wc.cells] = theta
    return xr.DataArray(full.reshape(wc.lat.size, wc.lon.size, -1).transpose(2, 0, 1),
                        dims=("parameter", "lat", "lon"),
                        coords={"parameter": list(PARAMETER_NAMES), "lat": wc.lat, "lon": wc.lon},
                        attrs={"units": "1", "long_name": "network-predicted unit-interval parameters",
                               "unseen_categories": json.dumps(enc.unknown),
                               "cells_nan_covariate": int(enc.dropped.get("nan_covariate", 0))})


def fill_missing_cells(theta: xr.DataArray, wc: WorldCells) -> xr.DataArray:
    """Built-in worlds only: land cells whose covariates are missing get the nearest predicted cell's
    parameters (counted in ``cells_filled_from_neighbour``). Catalog worlds mask such cells instead."""
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


def theta_map(model: TrainedModel, ow: OpenWorld) -> xr.DataArray:
    """The parameter map of a trained model on a world (built-in worlds fill their few uncovered cells)."""
    theta = predict_grid(model, ow)
    return fill_missing_cells(theta, ow.cells) if ow.spec.kind == "builtin" else theta


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
                profiles_dir: Path | None = None, catalog: str | Path | None = None, out: Path | None = None,
                max_distance_km: float | None = None) -> WorldTraining:
    """Train PRODA on a world's observations and write its parameter map as a dashboard source.

    ``world`` is a built-in world or one of a catalog's ``worlds:`` (``catalog`` or ``$PRODA_CATALOG``).
    The network's inputs are the world's own covariates (the model records them and their encodings).

    ``method="two-step"`` needs ``targets``: an MCMC posterior Dataset with ``theta`` (site, parameter)
    and ``lat``/``lon`` per site (``proda assimilate`` writes one).

    ``config.n_members > 1`` trains an ensemble (bootstrap resamples of the training sites, one shared
    split and encoder): the parameter map is the members' mean theta, and every member's map goes to
    ``theta_<source>_members.nc`` (the dashboard's ensemble spread and +/- sd cards read it).

    Writes ``<world>/products/theta_<source>.nc``, ``model_<source>.pt``, ``train_<source>.json``, the
    validated config ``train_<source>/config.yaml`` and, when ``out`` is given, the parameter map there too.
    """
    t0 = time.perf_counter()
    config = config or TrainConfig()
    default_loss = {"end-to-end": ("cost", ("cost", "log_mse")), "two-step": ("mse", ("mse", "proda"))}
    loss = config.loss
    if method in default_loss and loss not in default_loss[method][1]:
        loss = default_loss[method][0]  # a config written for the other method
    config = config.replace(method=method, loss=loss)
    ow = open_world(world, catalog=catalog)
    covariates, categorical = list(ow.covariate_names), list(ow.categorical)
    from proda_engine.learning.ensembles import train_ensemble

    ensemble = config.n_members > 1
    if method == "end-to-end":
        sd = site_data(ow, profiles=profiles_dir, max_sites=max_sites, seed=config.seed,
                       max_distance_km=max_distance_km)
        if sd.observations.n_profiles == 0:
            raise ValueError(f"world {ow.name!r}: no usable site ({sd.report['sites_dropped']})")
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
        cell, _ = nearest_land_cell(ow.cells.lat, ow.cells.lon, ow.cells.cells, lat, lon)
        table = covariate_table(ow, cell)
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
    prod = ow.spec.products
    attrs = parameter_file_attrs("conservative", "clm5_20", lat=ow.cells.lat, lon=ow.cells.lon,
                                 **ow.spec.provenance(), source=source, method=method,
                                 covariates=json.dumps(covariates))
    if ensemble:
        thetas = [theta_map(m, ow) for m in members]
        stack = xr.concat(thetas, dim="member").assign_coords(member=np.arange(len(members)))
        write_product(stack.to_dataset(name="theta").assign_attrs(
            n_members=len(members), bootstrap=int(config.bootstrap), **attrs), prod / f"theta_{source}_members.nc")
        theta = stack.mean("member").clip(0.0, 1.0)
        theta.attrs.update(thetas[0].attrs)
        report["members"] = [m.metadata.get("evaluation") for m in members]
    else:
        theta = theta_map(model, ow)
        # a members file from an earlier ensemble no longer describes this map
        (prod / f"theta_{source}_members.nc").unlink(missing_ok=True)
    theta_ds = theta.to_dataset(name="theta").assign_attrs(**attrs)
    theta_path = write_product(theta_ds, prod / f"theta_{source}.nc")
    if out is not None:
        write_product(theta_ds, Path(out))
    model_path = model.save(prod / f"model_{source}.pt")
    # the validated config of this run (after the world's block-size fit): TrainConfig.from_yaml reads it back
    config_path = RunFolder.create(f"train_{source}", root=prod, exist_ok=True).write_config(config.to_dict())
    report.update({"method": method, "seconds": time.perf_counter() - t0, "world": ow.spec.provenance(),
                   "world_report": ow.report, "covariates": covariates, "categorical": categorical,
                   "unseen_categories": json.loads(theta.attrs.get("unseen_categories", "{}")),
                   "evaluation": model.metadata.get("evaluation"), "dropped": model.metadata.get("dropped"),
                   "config_path": str(config_path)})
    write_text_atomic(json.dumps({**version_attrs(), **report}, indent=2, default=str), prod / f"train_{source}.json")
    return WorldTraining(model, theta_path, model_path, time.perf_counter() - t0, report)
