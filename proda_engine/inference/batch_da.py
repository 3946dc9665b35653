"""Batch data assimilation: one spatially homogeneous parameter set for all profiles (chapter).

The chapter's baseline fits a single θ to **all** profiles jointly: the cost of a proposal is the
sum of the site costs (spec §(k)) over every site,

    J_batch(θ) = Σ_s J_s(θ),

sampled by the same MCMC engine as the site-level runs (:func:`~proda_engine.inference.mcmc.run_mcmc`
with ``n_sites = 1``): each chain's proposal is broadcast to every site, solved in chunks of
``batch_chunk_sites`` sites (memory bound: a chunk holds chains x sites steady states), and summed.
Sites whose cost at θ = 0.5 is not finite are excluded up front (counted), so a single bad profile
cannot make every proposal fail.

The chapter ran 3 chains of 50,000 test + 200,000 formal iterations and then pushed 1,000
posterior draws through the model, averaging the predictions; ``batch_draws`` does the latter
(0 = evaluate the posterior mean only).

Output ``batch_da.nc``: ``theta`` (parameter) posterior mean in unit space, ``theta_sd``,
``theta_mode``, ``rhat`` (parameter), ``acceptance`` (chain), and per-site fit at the posterior
mean (``efficiency``, ``rmse``, ``model_soc``), plus the total cost at θ = 0.5 and at the mean.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from proda_engine.data.writers import write_text_atomic
from proda_engine.grid import get_grid
from proda_engine.inference.config import AssimilateConfig
from proda_engine.inference.likelihood import ObservationBatch, efficiency, rmse
from proda_engine.inference.mcmc import MCMCConfig, MCMCResult, run_mcmc
from proda_engine.inference.runs import (
    REPORT_FILE,
    json_default,
    parameter_coords,
    single_threaded,
    start_run,
    summary_stats,
)
from proda_engine.inference.site_da import SiteCostFn, make_site_cost_fn
from proda_engine.inference.sites import SiteData, load_sites
from proda_engine.parameters import N_PARAMS
from proda_engine.physics import Forcing

BATCH_DA_FILE = "batch_da.nc"
EXCLUDED_THETA0 = "cost_not_finite_at_theta0"


class JointCost:
    """``cost(theta (n, D), site (n,)) -> (n,)``: the summed site cost for each proposal row.

    The ``site`` argument of the MCMC contract is ignored (there is one "site": the whole set).
    The sites are split into chunks of ``chunk_sites``; each chunk has its own site-cost function
    (so each keeps its gathered forcing cached across iterations) and is solved for all proposal
    rows at once. Any non-finite site cost makes the row's cost NaN (the proposal is rejected, as a
    failed solve is in the site-level runs).
    """

    def __init__(self, config: AssimilateConfig, sites: SiteData) -> None:
        forcing, _ = Forcing.from_dataset(sites.forcing, only_valid=False)
        self._setup(forcing, sites.obs, get_grid(config.grid), config.weights, config.interpolation,
                    config.closure, config.backend, config.batch_chunk_sites)

    @classmethod
    def from_forcing(cls, forcing: Forcing, obs: ObservationBatch, *, grid: str = "clm5_20", weights: str = "rank",
                     interpolation: str = "pchip", closure: str = "conservative", backend: str = "auto",
                     chunk_sites: int = 256) -> JointCost:
        """The joint cost of sites already in memory (``forcing`` cells aligned with ``obs`` profiles)."""
        self = cls.__new__(cls)
        self._setup(forcing, obs, get_grid(grid), weights, interpolation, closure, backend, chunk_sites)
        return self

    def _setup(self, forcing: Forcing, obs: ObservationBatch, grid, weights, interpolation, closure, backend,
               chunk_sites) -> None:
        self.n_sites = obs.n_profiles
        chunk = max(1, int(chunk_sites))
        self.chunks: list[tuple[np.ndarray, SiteCostFn]] = []
        for start in range(0, self.n_sites, chunk):
            idx = np.arange(start, min(start + chunk, self.n_sites))
            fn = make_site_cost_fn(forcing.subset(idx), obs.subset(idx), grid, weights,
                                   method=interpolation, closure=closure, backend=backend)
            self.chunks.append((idx, fn))
        self.n_evals = 0

    def site_costs(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-site costs (n, S) and predictions (n, S, K) for each row of ``theta`` (n, D)."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        n = theta.shape[0]
        costs = np.empty((n, self.n_sites))
        preds: list[np.ndarray] = []
        for idx, fn in self.chunks:
            # row-major (proposal, site) pairs: proposal r is solved at every site of the chunk
            j, p = fn(np.repeat(theta, idx.size, axis=0), np.tile(np.arange(idx.size), n))
            costs[:, idx] = j.reshape(n, idx.size)
            preds.append(p.reshape(n, idx.size, -1))
        self.n_evals += n * self.n_sites
        return costs, np.concatenate(preds, axis=1)

    def __call__(self, theta: np.ndarray, site: np.ndarray) -> np.ndarray:
        costs, _ = self.site_costs(theta)
        return costs.sum(axis=1)  # NaN if any site failed


@dataclass
class BatchDAResult:
    """Outcome of :func:`run_batch_da`.

    Attributes:
        folder: run folder; dataset: the ``batch_da.nc`` content; report: ``report.json`` content.
        mcmc: the raw MCMC result (one "site").
    """

    folder: Path
    dataset: xr.Dataset
    report: dict[str, Any]
    mcmc: MCMCResult

    @property
    def theta(self) -> np.ndarray:
        """(21,) posterior mean in unit space."""
        return self.dataset["theta"].values


def _draws(res: MCMCResult, n: int) -> np.ndarray:
    """Up to ``n`` stored posterior samples of the chosen chain (evenly spaced)."""
    if res.samples is None or n == 0:
        return np.empty((0, N_PARAMS))
    c = int(res.chosen_chain[0]) if res.chosen_chain[0] >= 0 else int(np.argmax(res.n_samples[0]))
    s = res.samples[0, c]
    s = s[np.isfinite(s).all(axis=1)].astype(np.float64)
    if s.shape[0] == 0:
        return np.empty((0, N_PARAMS))
    pick = np.unique(np.linspace(0, s.shape[0] - 1, min(n, s.shape[0])).round().astype(int))
    return s[pick]


def batch_da_theta(forcing: Forcing, obs: ObservationBatch, mcmc: MCMCConfig | dict[str, Any], *,
                   closure: str = "conservative", weights: str = "rank") -> tuple[np.ndarray, dict[str, Any]]:
    """One homogeneous theta fitted to sites in memory (the batch-DA baseline without files).

    Sites whose cost is not finite at theta = 0.5 are excluded first (counted), as in :func:`run_batch_da`.
    Returns the posterior mean theta (21,) and a small report (sites, exclusions, status, acceptance).
    """
    mc = mcmc if isinstance(mcmc, MCMCConfig) else MCMCConfig.from_dict(dict(mcmc))
    with single_threaded():
        joint = JointCost.from_forcing(forcing, obs, closure=closure, weights=weights)
        c0, _ = joint.site_costs(np.full((1, N_PARAMS), 0.5))
        keep = np.flatnonzero(np.isfinite(c0[0]))
        if keep.size == 0:
            raise ValueError("batch DA: no site has a finite cost at theta = 0.5")
        if keep.size < obs.n_profiles:
            joint = JointCost.from_forcing(forcing.subset(keep), obs.subset(keep), closure=closure, weights=weights)
        res = run_mcmc(joint, 1, mc, site_ids=[0])
    report = {"n_sites": int(keep.size), EXCLUDED_THETA0: int(obs.n_profiles - keep.size),
              "status": int(res.status[0]), "reason": str(res.reason[0])}
    return np.asarray(res.mean[0], float), report


def run_batch_da(config: AssimilateConfig | dict[str, Any]) -> BatchDAResult:
    """Fit one parameter set to all profiles jointly; write ``batch_da.nc`` and ``report.json``.

    Runs in this process (one chain set; the cost evaluation is already batched over sites), using
    the same loading, weights, closure and MCMC settings as the site-level pipeline.
    """
    cfg = config if isinstance(config, AssimilateConfig) else AssimilateConfig.from_dict(config)
    t0 = time.perf_counter()
    sites = load_sites(cfg)
    folder, fp = start_run(cfg, sites, extra={"mode": "batch"})
    mcmc_cfg = cfg.mcmc.model_copy(update={"progress": cfg.progress, "keep_samples": cfg.batch_draws > 0})

    with single_threaded():
        # Screen: sites that fail at theta0 would make every proposal fail.
        joint = JointCost(cfg, sites)
        c0, _ = joint.site_costs(np.full((1, N_PARAMS), 0.5))
        good = np.isfinite(c0[0])
        excluded = {EXCLUDED_THETA0: int((~good).sum())} if (~good).any() else {}
        keep = np.flatnonzero(good)
        if keep.size == 0:
            raise ValueError("batch DA: no site has a finite cost at theta = 0.5")
        if not good.all():
            sites = dataclasses.replace(sites, obs=sites.obs.subset(keep), forcing=sites.forcing.isel(site=keep),
                                        profile_id=sites.profile_id[keep])
            joint = JointCost(cfg, sites)
        res = run_mcmc(joint, 1, mcmc_cfg, site_ids=[0])
        mean = res.mean[0]
        costs_mean, pred_mean = joint.site_costs(mean[None, :]) if np.isfinite(mean).all() else (
            np.full((1, sites.n_sites), np.nan), np.full((1, *sites.obs.soc.shape), np.nan))
        costs_0, _ = joint.site_costs(np.full((1, N_PARAMS), 0.5))
        draws = _draws(res, cfg.batch_draws)
        pred_draws = None
        if draws.shape[0]:
            acc = np.zeros(sites.obs.soc.shape)
            n_ok = np.zeros(sites.obs.soc.shape)
            for d in draws:  # one draw at a time: memory stays at one (S, K) prediction
                cj, pj = joint.site_costs(d[None, :])
                ok = np.isfinite(cj[0])[:, None] & np.isfinite(pj[0])
                acc += np.where(ok, pj[0], 0.0)
                n_ok += ok
            with np.errstate(invalid="ignore", divide="ignore"):
                pred_draws = np.where(n_ok > 0, acc / np.maximum(n_ok, 1), np.nan)

    ds = _dataset(res, sites, costs_0[0], costs_mean[0], pred_mean[0], pred_draws, draws.shape[0], cfg, fp)
    folder.write_dataset(ds, BATCH_DA_FILE)
    report = {
        "mode": "batch",
        "n_profiles_read": sites.n_profiles_read,
        "skipped_profiles": sites.skipped,
        "excluded_sites": excluded,
        "n_sites": int(sites.n_sites),
        "status": int(res.status[0]),
        "reason": str(res.reason[0]),
        "failed_chains_by_reason": res.reason_counts(),
        "total_cost_theta0": float(np.sum(costs_0[0])),
        "total_cost_mean": float(np.sum(costs_mean[0])),
        "rhat_flagged_parameters": [p for p, r in zip(res.parameter_names, res.rhat[0], strict=True)
                                    if not r < cfg.mcmc.rhat_threshold],
        "acceptance": summary_stats(res.acceptance[0][np.isfinite(res.acceptance[0])]),
        "efficiency": summary_stats(ds["efficiency"].values[np.isfinite(ds["efficiency"].values)]),
        "e_negative_sites": int(np.sum(ds["efficiency"].values < 0)),
        "site_solves": int(joint.n_evals),
        "timing_seconds": {"total": round(time.perf_counter() - t0, 2)},
        "reader_report": sites.reader_report,
        "sites_failed_at_mean": int(np.sum(~np.isfinite(costs_mean[0]))),
    }
    write_text_atomic(json.dumps(report, indent=2, default=json_default) + "\n", folder.file(REPORT_FILE))
    return BatchDAResult(folder=folder.path, dataset=ds, report=report, mcmc=res)


def _dataset(res: MCMCResult, sites: SiteData, j0: np.ndarray, jm: np.ndarray, pred: np.ndarray,
             pred_draws: np.ndarray | None, n_draws: int, cfg: AssimilateConfig, fp: str) -> xr.Dataset:
    obs = sites.obs
    with np.errstate(invalid="ignore"):
        e = efficiency(pred, obs.soc, obs.mask)
        r = rmse(pred, obs.soc, obs.mask)

    def var(dims: tuple[str, ...], data: Any, long_name: str, units: str = "1") -> xr.Variable:
        return xr.Variable(dims, data, {"long_name": long_name, "units": units})

    data = {
        "theta": var(("parameter",), res.mean[0], "batch-DA posterior mean of theta (unit interval)"),
        "theta_sd": var(("parameter",), res.sd[0], "posterior standard deviation of theta"),
        "theta_mode": var(("parameter",), res.mode[0], "GEV-fit mode of theta (original 'MLE')"),
        "rhat": var(("parameter",), res.rhat[0], "Gelman-Rubin potential scale reduction"),
        "acceptance": var(("chain",), res.acceptance[0], "formal-run acceptance rate"),
        "chain_reason": var(("chain",), res.chain_reason[0].astype(str), "chain failure reason"),
        "cost_theta0": var(("site",), j0, "site cost J at theta = 0.5"),
        "cost_mean": var(("site",), jm, "site cost J at the posterior mean"),
        "obs_depth": var(("site", "obs_layer"), obs.depth, "observed layer mid-depth", "m"),
        "obs_soc": var(("site", "obs_layer"), obs.soc, "observed SOC density", "g C m-3"),
        "model_soc": var(("site", "obs_layer"), pred, "modelled SOC at the posterior mean", "g C m-3"),
        "efficiency": var(("site",), e, "Nash-Sutcliffe E of the posterior-mean prediction"),
        "rmse": var(("site",), r, "RMSE of the posterior-mean prediction", "g C m-3"),
    }
    if pred_draws is not None:
        with np.errstate(invalid="ignore"):
            data["model_soc_draws"] = var(("site", "obs_layer"), pred_draws,
                                          f"mean modelled SOC over {n_draws} posterior draws", "g C m-3")
            data["efficiency_draws"] = var(("site",), efficiency(pred_draws, obs.soc, obs.mask),
                                           "Nash-Sutcliffe E of the draw-averaged prediction")
    ds = xr.Dataset(data, coords={"site": np.arange(obs.n_profiles), "chain": np.arange(res.acceptance.shape[1]),
                                  "profile_id": ("site", sites.profile_id)})
    ds = ds.assign_coords(parameter_coords())
    for name in ("site_lat", "site_lon", "cell_lat", "cell_lon", "distance_km"):
        if name in sites.forcing.coords:
            ds = ds.assign_coords({name: ("site", np.asarray(sites.forcing[name].values, dtype=float))})
    ds.attrs = {
        "title": "PRODA batch data assimilation: one parameter set for all profiles",
        "parameter_space": "unit interval theta in (0, 1); physical = lower + theta (upper - lower)",
        "status": int(res.status[0]),
        "total_cost_theta0": float(np.sum(j0)),
        "total_cost_mean": float(np.sum(jm)),
        "n_draws": int(n_draws),
        "fingerprint": fp,
        "assimilate_config": json.dumps(cfg.to_dict(), default=str),
        "mcmc_config": json.dumps(res.config),
    }
    return ds
