"""Site-level data assimilation at scale: profiles → forcing → batched MCMC → run folder.

:func:`assimilate` runs the PRODA site-level MCMC (spec §(k), §(l)) for every usable profile:

1. **Read** the observed profiles (every dropped profile counted by the reader's reason) and the
   forcing; preprocess the layers into a padded :class:`ObservationBatch` (spec §(k): SOC = 0 / NaN
   layers dropped, profiles with < 2 layers skipped, counted).
2. **Sample** the forcing at the nearest valid cell of each profile (great-circle distance);
   profiles farther than ``max_distance_km`` are skipped with a reason.
3. **Batch**: sites are cut, in profile order, into batches of ``batch_size``. Each batch is one
   task (:func:`run_batch`): build the batched cost on the batch's sites, run the vectorised MCMC
   (all sites x chains advance together), solve once at the posterior mean and compute each
   profile's Nash–Sutcliffe E, RMSE and the original's "R²" from that prediction.
4. **Write** each finished batch to ``batches/batch_00012.nc`` atomically as it completes. A rerun
   with ``resume`` reuses every batch file that exists, is readable and carries the run's
   fingerprint (a hash of the science settings and the input checksums), so an interrupted run
   loses at most the batches in flight.
5. **Combine** the batches into ``posterior.nc`` (dims ``site``, ``parameter``, ``chain``,
   ``obs_layer``) and write ``report.json`` with every count by reason.

Step 1 is :func:`proda_engine.inference.sites.load_sites`; the run folder, ``provenance.json`` and the
report helpers are :mod:`proda_engine.inference.runs`, shared with batch assimilation (:mod:`.batch_da`,
where ``mode: batch`` goes).

The random streams are keyed by (seed, site index, chain) (see :mod:`.mcmc`), and the tasks are
pure functions of their inputs run single-threaded, so a Dask run and an inline run with the same
seed and batch size give bit-identical posteriors.

Run folder (``config.out``)::

    config.yaml        the validated configuration
    provenance.json    package/library versions, input sha256, command line, fingerprint
    batches/           batch_00000.nc, ... (one per task; xarray, MCMCResult.to_dataset + fit)
    posterior.nc       all sites; ``theta`` = posterior mean in unit space (NaN where not usable)
    report.json        counts: skipped profiles by reason, failed chains/sites, E < 0, R-hat flags

Example
-------
>>> cfg = AssimilateConfig.from_dict({"profiles_path": "wosis/", "forcing_path": "forcing.nc",
...     "mcmc": {"n_test": 300, "n_formal": 600}, "scheduler": "inline", "out": "runs/demo"})
>>> res = assimilate(cfg)                                    # doctest: +SKIP
>>> res.posterior["theta"].dims                              # doctest: +SKIP
('site', 'parameter')
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from proda_engine.data.writers import write_product, write_text_atomic
from proda_engine.distributed import get_client, map_as_completed
from proda_engine.grid import get_grid
from proda_engine.inference.batch_da import run_batch_da
from proda_engine.inference.config import AssimilateConfig
from proda_engine.inference.likelihood import ObservationBatch, efficiency, r2_legacy, rmse
from proda_engine.inference.mcmc import STATUS_FAILED, run_mcmc
from proda_engine.inference.runs import (
    BATCH_DIR,
    REPORT_FILE,
    json_default,
    parameter_coords,
    single_threaded,
    start_run,
    summary_stats,
)
from proda_engine.inference.site_da import make_site_cost_fn
from proda_engine.inference.sites import SiteData, load_sites
from proda_engine.parameters import PARAMETER_NAMES
from proda_engine.physics import Forcing

log = logging.getLogger(__name__)

POSTERIOR_FILE = "posterior.nc"

#: Site exclusion reasons in ``posterior.nc`` (``exclusion`` variable).
EXCLUDED_FAILED = "mcmc_failed"
EXCLUDED_MEAN_SOLVE = "posterior_mean_solve_failed"
EXCLUDED_E_NEGATIVE = "efficiency_below_zero"


# --------------------------------------------------------------------------------------------------
# One task: one batch of sites
# --------------------------------------------------------------------------------------------------
@dataclass
class BatchTask:
    """Everything one batch needs (picklable; shipped to a Dask worker).

    Attributes:
        index: batch number (file ``batch_{index:05d}.nc``).
        site_index: (n,) global site indices: they key the random streams and the output ``site``.
        profile_id: (n,) profile identifiers.
        obs: the batch's observations.
        forcing: the batch's per-site forcing Dataset (dim ``site``).
        config: the run's configuration.
        fingerprint: the run's fingerprint, stored in the batch file.
    """

    index: int
    site_index: np.ndarray
    profile_id: np.ndarray
    obs: ObservationBatch
    forcing: xr.Dataset
    config: AssimilateConfig
    fingerprint: str


def run_batch(task: BatchTask) -> xr.Dataset:
    """Run the site-level MCMC for one batch and return its dataset (see :func:`batch_dataset`)."""
    cfg = task.config
    t0 = time.perf_counter()
    with single_threaded():
        grid = get_grid(cfg.grid)
        forcing, _ = Forcing.from_dataset(task.forcing, only_valid=False)
        cost_fn = make_site_cost_fn(forcing, task.obs, grid, cfg.weights, method=cfg.interpolation,
                                    closure=cfg.closure, backend=cfg.backend)
        # The run has its own progress bar; a bar per task would garble it.
        mcmc_cfg = cfg.mcmc.model_copy(update={"progress": False})
        res = run_mcmc(cost_fn, task.obs.n_profiles, mcmc_cfg, site_ids=task.site_index, obs=task.obs.soc)
        pred, j_mean = _predict_at_mean(cost_fn, res.mean, res.status != STATUS_FAILED, task.obs.soc.shape)
    ds = batch_dataset(task, res.to_dataset(), pred, j_mean)
    ds.attrs.update({"n_steps": int(res.n_steps), "n_jitter": int(res.n_jitter),
                     "wall_seconds": round(time.perf_counter() - t0, 3)})
    return ds


def _predict_at_mean(cost_fn: Callable, mean: np.ndarray, ok: np.ndarray, shape: tuple[int, int]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Modelled SOC at the observation depths and the cost J at each site's posterior mean.

    A site whose solve at the posterior mean is not OK (cost NaN) gets NaN predictions.
    """
    pred = np.full(shape, np.nan)
    j = np.full(shape[0], np.nan)
    rows = np.flatnonzero(ok & np.isfinite(mean).all(axis=1))
    if rows.size:
        jj, pp = cost_fn(mean[rows], rows)
        good = np.isfinite(jj)
        pred[rows[good]] = pp[good]
        j[rows] = jj
    return pred, j


def batch_dataset(task: BatchTask, mcmc_ds: xr.Dataset, pred: np.ndarray, j_mean: np.ndarray) -> xr.Dataset:
    """The batch file: MCMC summaries plus observations, posterior-mean prediction and fit.

    Dims ``site`` (global index), ``parameter``, ``chain``, ``obs_layer``. Fit statistics
    (Nash–Sutcliffe E, RMSE, the original "R²" about the modelled mean) are computed from the
    prediction at the posterior mean (the parameter set that is carried forward to the NN).
    """
    obs = task.obs
    e = efficiency(pred, obs.soc, obs.mask)
    r = rmse(pred, obs.soc, obs.mask)
    r2 = r2_legacy(pred, obs.soc, obs.mask)
    ok_pred = np.isfinite(pred).any(axis=1)
    e, r, r2 = (np.where(ok_pred, x, np.nan) for x in (e, r, r2))
    so, sl = ("site", "obs_layer"), ("site",)

    def var(dims: tuple[str, ...], data: np.ndarray, long_name: str, units: str = "1") -> xr.Variable:
        return xr.Variable(dims, data, {"long_name": long_name, "units": units})

    ds = mcmc_ds.assign_coords(site=np.asarray(task.site_index, dtype=np.int64))
    ds = ds.assign({
        "obs_depth": var(so, obs.depth, "observed layer mid-depth", "m"),
        "obs_soc": var(so, obs.soc, "observed SOC density", "g C m-3"),
        "model_soc": var(so, pred, "modelled SOC density at the posterior mean", "g C m-3"),
        "n_layers": var(sl, obs.n_layers.astype(np.int64), "valid observed layers", "count"),
        "efficiency": var(sl, e, "Nash-Sutcliffe efficiency E of the posterior-mean prediction"),
        "rmse": var(sl, r, "RMSE of the posterior-mean prediction", "g C m-3"),
        "r2_legacy": var(sl, r2, "original code's R2 (SS_tot about the modelled mean) [quirk]"),
        "cost_mean": var(sl, j_mean, "cost J at the posterior mean"),
    })
    ds = ds.assign_coords(profile_id=("site", np.asarray(task.profile_id).astype(str)))
    for name in ("site_lat", "site_lon", "cell_lat", "cell_lon", "distance_km"):
        if name in task.forcing.coords:
            ds = ds.assign_coords({name: ("site", np.asarray(task.forcing[name].values, dtype=float),
                                          dict(task.forcing[name].attrs))})
    ds.attrs.update({"batch": int(task.index), "fingerprint": task.fingerprint})
    return ds


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------
@dataclass
class AssimilationResult:
    """Outcome of :func:`assimilate`.

    Attributes:
        folder: the run folder.
        posterior: the combined dataset (also in ``posterior.nc``).
        report: the counts (also in ``report.json``).
        n_batches: batches of the run; ``n_batches_computed`` ran now, ``n_batches_reused`` were
            read from an earlier (interrupted) run.
    """

    folder: Path
    posterior: xr.Dataset
    report: dict[str, Any]
    n_batches: int
    n_batches_computed: int
    n_batches_reused: int

    @property
    def theta(self) -> xr.DataArray:
        """Posterior means (site, parameter) in unit space; NaN where the site is not usable."""
        return self.posterior["theta"]


def batch_path(folder: Path, index: int) -> Path:
    return folder / BATCH_DIR / f"batch_{index:05d}.nc"


def _read_batch(path: Path, fingerprint: str, site_index: np.ndarray) -> xr.Dataset | None:
    """The batch file if it exists, is readable and belongs to this run; None to (re)compute.

    Raises:
        ValueError: the file belongs to a run with another fingerprint (config or inputs changed).
    """
    if not path.exists():
        return None
    try:
        ds = xr.load_dataset(path)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        log.warning("batch file %s is unreadable (%s): recomputing it", path.name, exc)
        return None
    if ds.attrs.get("fingerprint") != fingerprint:
        raise ValueError(f"{path}: written by a run with another configuration or other inputs "
                         f"(fingerprint {str(ds.attrs.get('fingerprint'))[:12]}…, this run "
                         f"{fingerprint[:12]}…); use a new 'out' folder")
    if ds.sizes.get("site") != site_index.size or not np.array_equal(ds["site"].values, site_index):
        log.warning("batch file %s holds other sites: recomputing it", path.name)
        return None
    return ds


def assimilate(config: AssimilateConfig | dict[str, Any], *,
               on_batch_written: Callable[[int, Path], None] | None = None) -> Any:
    """Run a data-assimilation job described by ``config`` (see the module docstring).

    ``mode: batch`` dispatches to :func:`proda_engine.inference.batch_da.run_batch_da`.

    Args:
        config: :class:`AssimilateConfig` or a mapping for :meth:`AssimilateConfig.from_dict`.
        on_batch_written: called as ``f(batch_index, path)`` after each batch file is written
            (progress hooks; tests use it to interrupt a run).

    Returns:
        :class:`AssimilationResult` (site mode) or
        :class:`~proda_engine.inference.batch_da.BatchDAResult` (batch mode).
    """
    cfg = config if isinstance(config, AssimilateConfig) else AssimilateConfig.from_dict(config)
    if cfg.mode == "batch":
        return run_batch_da(cfg)
    t_start = time.perf_counter()
    sites = load_sites(cfg)
    folder, fp = start_run(cfg, sites)
    groups = sites.batches(cfg.batch_size)

    done: dict[int, xr.Dataset] = {}
    for b, idx in enumerate(groups):
        ds = _read_batch(batch_path(folder.path, b), fp, idx)
        if ds is not None:
            done[b] = ds
    n_reused = len(done)
    todo = [b for b in range(len(groups)) if b not in done]

    def tasks() -> Iterator[tuple[BatchTask]]:
        for b in todo:
            idx = groups[b]
            yield (BatchTask(b, idx, sites.profile_id[idx], sites.obs.subset(idx),
                             sites.forcing.isel(site=idx), cfg, fp),)

    n_done_sites = sum(int(groups[b].size) for b in done)
    acc = [float(np.nanmean(ds["acceptance"].values)) for ds in done.values() if np.isfinite(ds["acceptance"]).any()]
    t_compute = time.perf_counter()
    with tqdm(total=sites.n_sites, initial=n_done_sites, unit="site", desc="assimilate",
              disable=not cfg.progress) as bar:
        if todo:
            with get_client(cfg.scheduler, cfg.n_workers) as client:
                for b, ds in map_as_completed(run_batch, tasks(), client=client, max_in_flight=cfg.in_flight,
                                              keys=todo):
                    path = write_product(ds, batch_path(folder.path, b))
                    done[b] = ds
                    a = ds["acceptance"].values
                    if np.isfinite(a).any():
                        acc.append(float(np.nanmean(a)))
                    bar.update(int(groups[b].size))
                    bar.set_postfix(acc=f"{np.mean(acc):.2f}" if acc else "-", batches=f"{len(done)}/{len(groups)}")
                    if on_batch_written is not None:
                        on_batch_written(b, path)
    compute_s = time.perf_counter() - t_compute

    posterior = combine_batches([done[b] for b in range(len(groups))], cfg, sites, fp)
    folder.write_dataset(posterior, POSTERIOR_FILE)
    report = build_report(posterior, cfg, sites, n_batches=len(groups), n_reused=n_reused,
                          compute_seconds=compute_s, total_seconds=time.perf_counter() - t_start)
    write_text_atomic(json.dumps(report, indent=2, default=json_default) + "\n", folder.file(REPORT_FILE))
    return AssimilationResult(folder=folder.path, posterior=posterior, report=report, n_batches=len(groups),
                              n_batches_computed=len(todo), n_batches_reused=n_reused)


# --------------------------------------------------------------------------------------------------
# Combining and reporting
# --------------------------------------------------------------------------------------------------
def site_exclusion(ds: xr.Dataset, exclude_negative_e: bool) -> np.ndarray:
    """Per-site exclusion reason ('' = usable): failed MCMC, failed solve at the mean, or E < 0."""
    status = ds["status"].values
    e = ds["efficiency"].values
    mean_ok = np.isfinite(ds["model_soc"].values).any(axis=1)
    out = np.full(status.shape, "", dtype=object)
    out[status == STATUS_FAILED] = EXCLUDED_FAILED
    out[(out == "") & ~mean_ok] = EXCLUDED_MEAN_SOLVE
    if exclude_negative_e:
        with np.errstate(invalid="ignore"):
            out[(out == "") & (e < 0)] = EXCLUDED_E_NEGATIVE
    return out.astype(str)


def combine_batches(batches: list[xr.Dataset], config: AssimilateConfig, sites: SiteData, fingerprint: str
                    ) -> xr.Dataset:
    """Concatenate the batch datasets into the run's ``posterior.nc`` dataset.

    ``theta`` is the posterior mean in unit space where the site is usable and NaN elsewhere (the
    "cleansed" NN target table); ``theta_mean`` keeps every site's posterior mean.
    """
    ds = xr.concat(batches, dim="site", data_vars="all", coords="different", compat="equals",
                   combine_attrs="drop")
    ds = ds.rename({"mean": "theta_mean", "sd": "theta_sd", "mode": "theta_mode"})
    excl = site_exclusion(ds, config.exclude_negative_e)
    usable = excl == ""
    theta = np.where(usable[:, None], ds["theta_mean"].values, np.nan)
    ds["theta"] = (("site", "parameter"), theta,
                   {"long_name": "posterior mean of theta where the site is usable (NaN otherwise)", "units": "1"})
    ds["usable"] = ("site", usable, {"long_name": "site passes the status and E >= 0 checks"})
    ds["exclusion"] = ("site", excl, {"long_name": "why the site is not usable ('' = usable)"})
    ds = ds.assign_coords(parameter_coords())
    ds = ds.assign_coords(
        lat=("site", ds["site_lat"].values, {"units": "degrees_north", "long_name": "profile latitude"}),
        lon=("site", ds["site_lon"].values, {"units": "degrees_east", "long_name": "profile longitude"}))
    ds = ds.assign_coords(batch=("site", np.concatenate([np.full(b.sizes["site"], b.attrs.get("batch", -1))
                                                          for b in batches]).astype(np.int64)))
    ds.attrs = {
        "title": "PRODA site-level data assimilation: posterior summaries per profile",
        "parameter_space": "unit interval theta in (0, 1); physical = lower + theta (upper - lower)",
        "fingerprint": fingerprint,
        "assimilate_config": json.dumps(config.to_dict(), default=str),
        "n_sites": int(ds.sizes["site"]),
    }
    return ds


def build_report(posterior: xr.Dataset, config: AssimilateConfig, sites: SiteData, *, n_batches: int,
                 n_reused: int, compute_seconds: float, total_seconds: float) -> dict[str, Any]:
    """Counts by reason for ``report.json``."""
    status = posterior["status"].values
    chain_reason = posterior["chain_reason"].values.astype(str)
    site_reason = posterior["reason"].values.astype(str)
    excl = posterior["exclusion"].values.astype(str)
    ok = status != STATUS_FAILED
    rhat = posterior["rhat"].values
    with np.errstate(invalid="ignore"):
        flagged = ok & ~posterior["rhat_ok"].values
        per_param = {p: int(np.sum(ok & ~(rhat[:, j] < config.mcmc.rhat_threshold)))
                     for j, p in enumerate(PARAMETER_NAMES)}
    acc = posterior["acceptance"].values
    e = posterior["efficiency"].values
    skipped_total = sum(sum(v.values()) for v in sites.skipped.values())
    return {
        "mode": "site",
        "n_profiles_read": sites.n_profiles_read,
        "n_profiles_skipped": int(skipped_total),
        "skipped_profiles": sites.skipped,
        "n_sites": int(status.size),
        "sites": {"ok": int(np.sum(status == 0)), "partial": int(np.sum(status == 1)),
                  "failed": int(np.sum(status == STATUS_FAILED))},
        "failed_sites_by_reason": dict(Counter(r for r, s in zip(site_reason, status, strict=True)
                                               if s == STATUS_FAILED and r)),
        "failed_chains_by_reason": dict(Counter(r for r in chain_reason.ravel() if r)),
        "excluded_by_reason": dict(Counter(x for x in excl if x)),
        "n_usable": int(np.sum(excl == "")),
        "e_negative_excluded": int(np.sum(excl == EXCLUDED_E_NEGATIVE)),
        "e_negative_excluded_enabled": bool(config.exclude_negative_e),
        "rhat_threshold": config.mcmc.rhat_threshold,
        "rhat_flagged_sites": int(flagged.sum()),
        "rhat_flagged_by_parameter": per_param,
        "acceptance": summary_stats(acc[np.isfinite(acc)]),
        "efficiency": summary_stats(e[np.isfinite(e)]),
        "batches": {"total": n_batches, "reused": n_reused, "computed": n_batches - n_reused,
                    "batch_size": config.batch_size},
        "timing_seconds": {"compute": round(compute_seconds, 2), "total": round(total_seconds, 2)},
        "reader_report": sites.reader_report,
        "created_utc": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
    }
