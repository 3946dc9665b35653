"""Held-out evaluation of a world's parameter sources, and the baselines it compares (top layer).

The chapter's headline table (spec §(o)) compares three ways to parameterise the same CLM5 matrix
model on held-out profiles: the **default CLM5** parameters, **batch data assimilation** (one
spatially homogeneous theta fitted to all training profiles) and **PRODA** (site MCMC + neural
up-scaling). This module reproduces that comparison on a built world:

* :func:`run_world_baselines` writes the two missing parameter sources of a world from its
  *training* sites only: ``theta_batch_da.nc`` (batch DA, the same theta on every land cell) and
  ``theta_proda_two_step.nc`` (site MCMC on a subsample -> posterior means -> two-step network).
* :func:`evaluate_world` scores every available source on the **held-out test sites** (the
  spatially blocked ``split.test`` of the trained end-to-end model): modelled SOC at every observed
  horizon (nearest land cell, PCHIP from the layer nodes), pooled and per depth bin
  (R², RMSE, Nash–Sutcliffe E, ...). On twin worlds it adds the **noise ceiling** (the hidden truth
  solved at the same cells: the best any method can do against noisy observations) and
  **parameter recovery** (Pearson r between each source's theta and the truth at the test cells).

Units: SOC densities in the outputs are kg C m-3 (the model and the observation batch work in
g C m-3; we divide by 1000 once, before any metric), depths in m, theta in the unit interval.
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
import torch
import xarray as xr

from proda_engine.data.writers import atomic_write, version_attrs, write_csv_atomic, write_product, write_text_atomic
from proda_engine.grid import get_grid
from proda_engine.inference.likelihood import ObservationBatch, model_at_obs, pooled_metrics
from proda_engine.learning.config import TrainConfig
from proda_engine.learning.splits import Split, spatial_block_split
from proda_engine.learning.training import TrainedModel
from proda_engine.parameters import PARAMETER_NAMES
from proda_engine.physics import Forcing, default_params, params_from_theta, steady_state
from proda_engine.products.world import OpenWorld, WorldCells, open_world
from proda_engine.workflows import SOURCE_FOR_METHOD, SiteData, site_data, train_world

log = logging.getLogger(__name__)

#: Evaluated methods, in table order: key -> label. ``theta_<key>.nc`` is the world product of a
#: theta-based method; ``default_clm5`` is the physical preset and ``twin_truth`` the noise ceiling.
METHODS: dict[str, str] = {
    "default_clm5": "default CLM5",
    "batch_da": "batch DA",
    "proda_two_step": "PRODA two-step",
    "proda_e2e": "PRODA end to end",
    "twin_truth": "noise ceiling (twin truth)",
}
#: Depth bins of the component-control evaluation (spec §(j)), m; upper bound inclusive.
DEPTH_BINS: tuple[tuple[float, float], ...] = ((0.0, 0.3), (0.3, 1.0), (1.0, 100.0))
#: Demo-size chains for the site MCMC and batch DA baselines (configs/assimilate_demo.yaml).
DEMO_MCMC: dict[str, Any] = {"n_chains": 3, "n_test": 500, "n_formal": 1500, "min_test_accepts": 5,
                             "accept_window": [0.05, 0.9], "tempering": "none", "mode": "none"}
E2E_MODEL = f"model_{SOURCE_FOR_METHOD['end-to-end']}.pt"


# ==================================================================================================
# Sites and the held-out split
# ==================================================================================================
@dataclass
class WorldSites:
    """A world's observed sites (``site_data`` order) with the split that keeps test sites held out.

    Attributes:
        paths, cells, covariates: the world (paths, valid land cells, covariate Dataset).
        sites: every observed site, in :func:`~proda_engine.workflows.site_data` order (the order the
            end-to-end model's split indexes).
        split: train / val / test indices into ``sites``.
        split_source: ``"model_proda_e2e.pt"`` when taken from the trained model, else
            ``"spatial_block_split"`` (a fresh one, same defaults as training).
    """

    world: OpenWorld
    sites: SiteData
    split: Split
    split_source: str

    @property
    def cells(self) -> WorldCells:
        return self.world.cells

    @property
    def covariates(self) -> xr.Dataset:
        return self.world.covariates

    @property
    def products(self) -> Path:
        return self.world.spec.products

    @property
    def paths(self):
        """The built-in world's files (:class:`~proda_engine.data.world.WorldPaths`); None for catalog worlds."""
        from proda_engine.data.world import WorldPaths

        return WorldPaths.in_folder(self.world.spec.root) if self.world.spec.kind == "builtin" else None


def load_world_sites(world: str | OpenWorld, *, block_size: float = 5.0, seed: int = 0,
                     catalog: str | Path | None = None) -> WorldSites:
    """Read a world's sites and its held-out split (the e2e model's when it matches the sites).

    A model trained on a ``max_sites`` subsample indexes a different table; we detect that by the
    stored row count and fall back to a fresh spatial block split (``block_size`` degrees, 20 % test).
    """
    ow = world if isinstance(world, OpenWorld) else open_world(world, catalog=catalog)
    sd = site_data(ow)
    n = sd.observations.n_profiles
    model_path = ow.spec.products / E2E_MODEL
    split, source = None, "spatial_block_split"
    if model_path.exists():
        model = TrainedModel.load(model_path)
        n_rows = model.metadata.get("n_rows")
        if model.split is not None and n_rows == n:
            split, source = model.split, E2E_MODEL
        else:
            log.warning("%s was trained on %s rows, the world has %d sites: using a fresh spatial split",
                        model_path, n_rows, n)
    if split is None:
        s = spatial_block_split(sd.lat, sd.lon, block_size=block_size, test_fraction=0.2, val_fraction=0.1,
                                seed=seed)
        split = s
    return WorldSites(ow, sd, split, source)


# ==================================================================================================
# Baselines: batch DA and two-step PRODA from the training sites
# ==================================================================================================
def write_profile_subset(src_dir: Path, dst_dir: Path, profile_ids: Sequence[Any]) -> Path:
    """Copy the WoSIS-2019 TSVs of ``src_dir`` keeping only ``profile_ids`` (first column), verbatim.

    Why a file copy: the assimilation pipeline reads profiles from files (with its own skip
    counting and provenance checksums), so a subset folder is the least invasive way to run it on
    the training sites only. Lines are copied byte for byte, so the reader sees the same values.
    """
    keep = {str(p) for p in profile_ids}
    dst_dir.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(src_dir).glob("wosis_*.tsv")):
        atomic_write(dst_dir / f.name, lambda tmp, f=f: _copy_rows(f, tmp, keep))
    return dst_dir


def _copy_rows(src: Path, dst: Path, keep: set[str]) -> None:
    """Copy the header and the lines of ``src`` whose first tab-separated field is in ``keep``."""
    with src.open("r", encoding="utf-8") as fin, dst.open("w", encoding="utf-8") as fout:
        fout.write(fin.readline())  # header
        for line in fin:
            if line.split("\t", 1)[0] in keep:
                fout.write(line)


def homogeneous_theta_grid(theta: np.ndarray, wc: WorldCells) -> xr.DataArray:
    """(parameter, lat, lon) DataArray with the same unit-interval ``theta`` (21,) on every land cell."""
    full = np.full((wc.lat.size * wc.lon.size, len(PARAMETER_NAMES)), np.nan)
    full[wc.cells] = np.asarray(theta, float)[None, :]
    return xr.DataArray(full.reshape(wc.lat.size, wc.lon.size, -1).transpose(2, 0, 1),
                        dims=("parameter", "lat", "lon"),
                        coords={"parameter": list(PARAMETER_NAMES), "lat": wc.lat, "lon": wc.lon},
                        attrs={"units": "1", "long_name": "batch-DA posterior mean theta (homogeneous)"})


@dataclass
class Baselines:
    """Files and reports written by :func:`run_world_baselines`."""

    batch_theta_path: Path | None
    two_step_theta_path: Path | None
    two_step_model_path: Path | None
    report: dict[str, Any] = field(default_factory=dict)


def run_world_baselines(world: str = "default", *, n_sites_mcmc: int = 1000, n_sites_batch: int | None = None,
                        mcmc: dict[str, Any] | None = None, batch_mcmc: dict[str, Any] | None = None,
                        scheduler: str | None = "inline", n_workers: int = 2, batch_size: int = 100,
                        train_config: TrainConfig | None = None, seed: int = 0, batch_da: bool = True,
                        two_step: bool = True, resume: bool = True) -> Baselines:
    """Write a world's batch-DA and two-step PRODA parameter sources from its training sites.

    Args:
        world: world name (``tiny``, ``europe``, ``default``).
        n_sites_mcmc: training sites (random, seeded) given the site-level MCMC (two-step targets).
        n_sites_batch: training sites in the joint batch-DA cost (default: ``n_sites_mcmc``).
        mcmc, batch_mcmc: MCMC settings of the site runs / the batch run (default :data:`DEMO_MCMC`:
            3 chains x (500 + 1,500) iterations, no GEV mode — demo-size, not converged).
        scheduler, n_workers: Dask scheduler for the site MCMC (``"inline"`` = this process; ``None``
            = a local cluster of ``n_workers``).
        batch_size: sites per MCMC task.
        train_config: two-step network config (default: ``TrainConfig(method="two-step")``).
        seed: seeds the site subsamples and the MCMC streams.
        batch_da, two_step: which baselines to run.
        resume: reuse finished MCMC batch files of an earlier identical run (same fingerprint).

    Writes ``<world>/products/theta_batch_da.nc``, ``theta_proda_two_step.nc``,
    ``model_proda_two_step.pt``, ``train_proda_two_step.json``, ``baselines.json`` and the run
    folders under ``<world>/products/baselines/``. Never touches ``theta_proda_e2e.nc``.
    """
    from proda_engine.inference.config import AssimilateConfig
    from proda_engine.inference.pipeline import assimilate

    t0 = time.perf_counter()
    ws = load_world_sites(world)
    if ws.world.spec.kind != "builtin":
        raise ValueError(f"world {world!r}: --baselines (site MCMC, batch DA) runs on built-in worlds for now; "
                         "use `proda evaluate --folds K` on a catalog world")
    out = ws.products
    base = out / "baselines"
    forcing_path = ws.world.spec.forcing[0]
    wosis_dir = ws.world.spec.profiles[0]
    train = np.unique(ws.split.train)
    rng = np.random.default_rng(seed)
    ids = ws.sites.observations.profile_id
    report: dict[str, Any] = {"world": world, "split_source": ws.split_source, "n_train_sites": int(train.size),
                              "n_test_sites": int(ws.split.test.size)}

    def subsample(n: int) -> np.ndarray:
        return np.sort(rng.choice(train, min(n, train.size), replace=False))

    def config(mode: str, profiles: Path, run: str, chains: dict[str, Any]) -> AssimilateConfig:
        return AssimilateConfig.from_dict({
            "mode": mode, "profiles_path": str(profiles), "forcing_path": str(forcing_path),
            "max_distance_km": 100.0, "weights": "rank", "interpolation": "pchip", "closure": "conservative",
            "batch_size": batch_size, "scheduler": scheduler, "n_workers": n_workers, "seed": seed,
            "out": str(base / run), "resume": resume, "exclude_negative_e": True, "progress": False,
            "mcmc": chains})

    batch_path = two_path = model_path = None
    if batch_da:
        from proda_engine.inference.batch_da import run_batch_da

        rows = subsample(n_sites_batch or n_sites_mcmc)
        prof = write_profile_subset(wosis_dir, base / "profiles_batch", ids[rows])
        t = time.perf_counter()
        res = run_batch_da(config("batch", prof, "batch_da", {**DEMO_MCMC, **(batch_mcmc or mcmc or {})}))
        theta = np.asarray(res.theta, float)
        if not np.isfinite(theta).all():
            raise ValueError(f"batch DA on {world!r}: posterior mean is not finite ({res.report['reason']})")
        ds = homogeneous_theta_grid(theta, ws.cells).to_dataset(name="theta").assign_attrs(
            source="batch_da", method="batch data assimilation", world=world, n_sites=int(rows.size),
            run_folder=str(res.folder))
        batch_path = write_product(ds, out / "theta_batch_da.nc")
        report["batch_da"] = {"sites": int(res.report["n_sites"]), "seconds": time.perf_counter() - t,
                              "theta": dict(zip(PARAMETER_NAMES, theta.tolist(), strict=True)),
                              **{k: res.report[k] for k in ("total_cost_theta0", "total_cost_mean", "acceptance",
                                                            "rhat_flagged_parameters", "efficiency")}}
    if two_step:
        rows = subsample(n_sites_mcmc)
        prof = write_profile_subset(wosis_dir, base / "profiles_mcmc", ids[rows])
        t = time.perf_counter()
        res = assimilate(config("site", prof, "site_mcmc", {**DEMO_MCMC, **(mcmc or {})}))
        t_mcmc = time.perf_counter() - t
        post = res.posterior
        targets = xr.Dataset({"theta": post["theta"].transpose("site", "parameter")},
                             coords={"lat": ("site", post["lat"].values), "lon": ("site", post["lon"].values)})
        cfg = (train_config or TrainConfig(method="two-step")).replace(method="two-step", seed=seed)
        tr = train_world(world, method="two-step", config=cfg, targets=targets)
        two_path, model_path = tr.theta_path, tr.model_path
        report["two_step"] = {"mcmc_sites": int(res.report["n_sites"]), "usable": int(res.report["n_usable"]),
                              "mcmc_seconds": t_mcmc, "train_seconds": tr.seconds,
                              "evaluation": tr.report.get("evaluation")}
    report["seconds"] = time.perf_counter() - t0
    write_text_atomic(json.dumps({**version_attrs(), **report}, indent=2, default=str), out / "baselines.json")
    return Baselines(batch_path, two_path, model_path, report)


# ==================================================================================================
# Evaluation
# ==================================================================================================
def soc_at_sites(forcing: Forcing, cell: np.ndarray, obs: ObservationBatch, *, theta: np.ndarray | None = None,
                 chunk: int = 8192) -> np.ndarray:
    """Modelled SOC (N, K), g C m-3, at the observed depths of N sites (PCHIP from the layer nodes).

    Args:
        forcing: forcing of the world's land cells (all of them).
        cell: (N,) land-cell index of each site.
        obs: the N sites' observations.
        theta: (n_cells_total, 21) unit-interval parameters per land cell, or ``None`` for the
            default CLM5 preset (physical, sand-dependent f_S1S2).
        chunk: cells per steady-state solve (bounds memory).

    Each distinct cell is solved once (sites share cells). Failed solves give NaN.
    """
    grid = get_grid()
    ucell, inv = np.unique(np.asarray(cell), return_inverse=True)
    soc = np.full((grid.n_layers, ucell.size), np.nan)
    for s in range(0, ucell.size, chunk):
        idx = ucell[s:s + chunk]
        f = forcing.subset(idx).to(dtype=torch.float64)
        params = (default_params(f) if theta is None else
                  params_from_theta(torch.as_tensor(theta[idx], dtype=torch.float64), clamp=False))
        with torch.no_grad():
            res = steady_state(params, f, grid)
        part = res.soc.cpu().numpy()
        part[:, res.status.cpu().numpy() != 0] = np.nan
        soc[:, s:s + idx.size] = part
    # model_at_obs interpolates per column; a failed column stays NaN (nan_to_num then re-mask).
    site_soc = soc[:, inv]
    pred = np.asarray(model_at_obs(np.nan_to_num(site_soc), grid.z_node, obs.depth, obs.mask))
    pred[~np.isfinite(site_soc).all(0)] = np.nan
    return pred


def soc_metrics(model_kg: np.ndarray, obs_kg: np.ndarray) -> dict[str, float]:
    """Pooled metrics (kg C m-3) of finite pairs: :func:`pooled_metrics` plus ``r2`` (squared Pearson r)
    and ``r2_log`` (squared Pearson r of log10 values, the scatter plots' axes)."""
    m, o = np.asarray(model_kg, float).ravel(), np.asarray(obs_kg, float).ravel()
    ok = np.isfinite(m) & np.isfinite(o)
    out = pooled_metrics(m[ok], o[ok])
    out["n_missing"] = int((~ok & np.isfinite(o)).sum())  # observed horizons the method could not model
    nan = float("nan")
    out["r2"] = float(np.corrcoef(m[ok], o[ok])[0, 1] ** 2) if ok.sum() > 2 and m[ok].std() > 0 else nan
    pos = ok & (m > 0) & (o > 0)
    out["r2_log"] = (float(np.corrcoef(np.log10(m[pos]), np.log10(o[pos]))[0, 1] ** 2)
                     if pos.sum() > 2 and np.log10(m[pos]).std() > 0 else nan)
    return out


def _bin_name(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g} m"


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    # ptp, not std: a constant column read back from netCDF can have a std of ~1e-17 from rounding
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")  # e.g. batch DA: one theta everywhere has no spatial pattern to correlate
    return float(np.corrcoef(a, b)[0, 1])


@dataclass
class EvaluationResult:
    """Held-out evaluation of a world's parameter sources.

    Attributes:
        world: world name; split_source: where the held-out split came from.
        n_train_sites, n_test_sites, n_test_layers, n_test_cells: sizes (test layers = observed horizons).
        metrics: method -> ``{"all": {...}, "0-0.3 m": {...}, ...}``; each a dict of
            :func:`soc_metrics` (rmse/mae in kg C m-3, e, r2, pbias %, n, ...).
        recovery: method -> parameter -> Pearson r (theta vs twin truth over the test cells), twin worlds.
        pairs: method -> DataFrame (profile_id, depth_m, observed_kg_m3, modelled_kg_m3) for the plots.
        info: anything else (timings, files used, disjointness check).
    """

    world: str
    split_source: str
    n_train_sites: int
    n_test_sites: int
    n_test_layers: int
    n_test_cells: int
    metrics: dict[str, dict[str, dict[str, float]]]
    recovery: dict[str, dict[str, float]]
    pairs: dict[str, pd.DataFrame] = field(repr=False, default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        return {"world": self.world, "split_source": self.split_source, "n_train_sites": self.n_train_sites,
                "n_test_sites": self.n_test_sites, "n_test_layers": self.n_test_layers,
                "n_test_cells": self.n_test_cells, "labels": {k: METHODS[k] for k in self.metrics},
                "metrics": self.metrics, "recovery": self.recovery, "info": self.info}

    def table(self, part: str = "all") -> pd.DataFrame:
        """One row per method: R², RMSE (kg C m-3), E, PBIAS (%), n for ``part`` (``all`` or a depth bin)."""
        rows = []
        for k, mm in self.metrics.items():
            m = mm[part]
            rows.append({"method": METHODS[k], "R2": m["r2"], "RMSE_kg_m3": m["rmse"], "E": m["e"],
                         "R2_log": m["r2_log"], "PBIAS_pct": m["pbias"], "n": m["n"]})
        return pd.DataFrame(rows)

    def markdown(self) -> str:
        """Markdown tables: pooled metrics, E by depth bin, and parameter recovery."""
        def fmt(v: Any) -> str:
            return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (
                f"{v:.3f}" if isinstance(v, float) else str(v))

        lines = [f"Held-out evaluation, world `{self.world}`: {self.n_test_sites} test sites "
                 f"({self.n_test_layers} horizons, {self.n_test_cells} cells), split from {self.split_source}; "
                 f"{self.n_train_sites} training sites.", "",
                 "| method | R² | RMSE (kg C m⁻³) | E | R² (log) | PBIAS (%) | n |", "|---|---|---|---|---|---|---|"]
        for _, r in self.table().iterrows():
            lines.append(f"| {r['method']} | {fmt(r['R2'])} | {fmt(r['RMSE_kg_m3'])} | {fmt(r['E'])} | "
                         f"{fmt(r['R2_log'])} | {fmt(r['PBIAS_pct'])} | {r['n']} |")
        bins = [_bin_name(*b) for b in DEPTH_BINS]
        lines += ["", "Nash–Sutcliffe E / RMSE (kg C m⁻³) by depth bin:", "",
                  "| method | " + " | ".join(bins) + " |", "|---|" + "---|" * len(bins)]
        for k, mm in self.metrics.items():
            cells = [f"{fmt(mm[b]['e'])} / {fmt(mm[b]['rmse'])} (n={mm[b]['n']})" for b in bins]
            lines.append(f"| {METHODS[k]} | " + " | ".join(cells) + " |")
        if self.recovery:
            meths = list(self.recovery)
            lines += ["", "Parameter recovery: Pearson r between predicted and true theta at the test cells:", "",
                      "| parameter | " + " | ".join(METHODS[k] for k in meths) + " |", "|---|" + "---|" * len(meths)]
            for p in PARAMETER_NAMES:
                lines.append(f"| {p} | " + " | ".join(fmt(self.recovery[k].get(p)) for k in meths) + " |")
        return "\n".join(lines) + "\n"

    @property
    def labels(self) -> dict[str, str]:
        """Display label of every method key (:data:`METHODS`)."""
        return dict(METHODS)

    def write(self, out_dir: str | Path, *, figures: bool = True) -> dict[str, Path]:
        """Write ``evaluation.json``, ``evaluation.md``, ``evaluation_pairs.csv`` and the PNG figures."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {"json": write_text_atomic(json.dumps({**version_attrs(), **self.to_dict()}, indent=2,
                                                      default=_json_default),
                                           out / "evaluation.json"),
                 "markdown": write_text_atomic(self.markdown(), out / "evaluation.md")}
        if self.pairs:
            pairs = pd.concat([p.assign(method=k) for k, p in self.pairs.items()], ignore_index=True)
            files["pairs"] = write_csv_atomic(pairs, out / "evaluation_pairs.csv", index=False)
        if figures:
            from proda_engine.plot.evaluation import plot_evaluation  # evaluation sits above plot

            files.update(plot_evaluation(self, out))
        return files


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def evaluate_world(world: str = "default", *, methods: Sequence[str] | None = None,
                   max_test_sites: int | None = None, seed: int = 0, ws: WorldSites | None = None
                   ) -> EvaluationResult:
    """Score every available parameter source of ``world`` on its held-out test sites.

    Args:
        world: world name.
        methods: subset of :data:`METHODS` keys (default: all that are available; theta-based ones
            need ``<world>/products/theta_<key>.nc``, the noise ceiling needs the twin truth).
        max_test_sites: evaluate a seeded random subsample of the test sites (quick looks).
        seed: seed of that subsample.
        ws: already loaded :class:`WorldSites` (saves re-reading the profiles).

    Returns:
        :class:`EvaluationResult`; metrics in kg C m-3. Methods are solved at the test sites'
        nearest land cells; horizons whose cell fails to solve count as ``n_missing``.
    """
    t0 = time.perf_counter()
    ws = ws or load_world_sites(world)
    wc, sd, split = ws.cells, ws.sites, ws.split
    test = np.unique(split.test)
    if max_test_sites is not None and test.size > max_test_sites:
        test = np.sort(np.random.default_rng(seed).choice(test, max_test_sites, replace=False))
    used = np.unique(np.concatenate([split.train, split.val]))
    if np.intersect1d(test, used).size:
        raise ValueError("held-out test sites overlap the training/validation sites")
    obs = sd.observations.subset(test)
    cell = sd.cell[test]
    mask = obs.mask
    obs_kg = np.where(mask, obs.soc, np.nan) / 1000.0
    depth = obs.depth
    products = ws.products

    thetas: dict[str, np.ndarray | None] = {}
    for key in (methods or METHODS):
        if key not in METHODS:
            raise ValueError(f"unknown method {key!r}; choose from {list(METHODS)}")
        if key == "default_clm5":
            thetas[key] = None
        elif key == "twin_truth":
            if ws.world.truth is not None:
                thetas[key] = wc.theta_from_grid(ws.world.truth)
        else:
            f = products / f"theta_{key}.nc"
            if f.exists():
                with xr.open_dataset(f) as ds:
                    thetas[key] = wc.theta_from_grid(ds["theta"].load())
            elif methods is not None:
                raise FileNotFoundError(f"{f}: no parameter map for method {key!r} (run `proda evaluate "
                                        f"--baselines` or `proda train`)")
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    pairs: dict[str, pd.DataFrame] = {}
    for key, th in thetas.items():
        pred_kg = soc_at_sites(wc.forcing, cell, obs, theta=th) / 1000.0
        mm = {"all": soc_metrics(pred_kg[mask], obs_kg[mask])}
        for lo, hi in DEPTH_BINS:
            b = mask & (depth > lo) & (depth <= hi) if lo > 0 else mask & (depth >= lo) & (depth <= hi)
            mm[_bin_name(lo, hi)] = soc_metrics(pred_kg[b], obs_kg[b])
        metrics[key] = mm
        pairs[key] = pd.DataFrame({"profile_id": np.repeat(obs.profile_id, mask.sum(1)), "depth_m": depth[mask],
                                   "observed_kg_m3": obs_kg[mask], "modelled_kg_m3": pred_kg[mask]})
    recovery: dict[str, dict[str, float]] = {}
    truth = thetas.get("twin_truth")
    if truth is not None:
        ucell = np.unique(cell)  # each test cell once: sites sharing a cell share its theta
        for key, th in thetas.items():
            if th is None or key == "twin_truth":
                continue
            recovery[key] = {p: _pearson(th[ucell, i], truth[ucell, i]) for i, p in enumerate(PARAMETER_NAMES)}
    info = {"seconds": time.perf_counter() - t0, "test_train_overlap": 0,
            "depth_bins_m": [list(b) for b in DEPTH_BINS], "units": "kg C m-3 (rmse, mae); % (pbias)",
            "r2_definition": "squared Pearson correlation of pooled (modelled, observed) horizon pairs",
            "e_definition": "Nash-Sutcliffe 1 - SS_res / SS_tot about the observed mean, pooled"}
    return EvaluationResult(world=ws.world.name, split_source=ws.split_source,
                            n_train_sites=int(np.unique(split.train).size),
                            n_test_sites=int(test.size), n_test_layers=int(mask.sum()),
                            n_test_cells=int(np.unique(cell).size), metrics=metrics, recovery=recovery,
                            pairs=pairs, info=info)
