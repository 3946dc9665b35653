"""Spatial k-fold cross-validation of a world's parameter sources beside a pure machine-learning baseline.

For measured profiles (a catalog world without a twin truth) one held-out split is one block draw's
luck, so :func:`cross_validate_world` repeats the comparison over ``k`` spatially blocked folds
(:func:`~proda_engine.learning.splits.spatial_kfold`, optional great-circle buffer between test and
training sites). In every fold, on the same held-out sites and layers:

* **default CLM5**: the model with CLM5's default parameters (no training);
* **batch DA**: one spatially homogeneous theta fitted by MCMC to all of the fold's training sites
  jointly (:func:`~proda_engine.inference.batch_da.batch_da_theta`; demo-size chains, as
  ``proda evaluate --baselines``);
* **PRODA two-step** (when the world has site posteriors, ``proda assimilate --world NAME`` writes
  ``<world>/products/assimilate/posterior.nc``): the network regressed on the posterior means of the
  fold's usable training sites, then the model run at the test sites;
* **PRODA end to end**: the network trained through the differentiable model on the fold's training
  sites (early stopping on validation blocks carved from them), then the model run at the test sites;
* **ML baseline**: a random forest (or gradient boosting) on the same covariates plus layer depth,
  target log SOC density (:mod:`proda_engine.learning.baselines`): what pure machine learning does
  with the same information.

Skill (:mod:`proda_engine.skill`) is reported per fold, as mean ± s.d. over folds, pooled over all
out-of-fold predictions, and per depth bin: R² (coefficient of determination ``1 - SS_res/SS_tot``),
squared Pearson r, RMSE (kg C m-3) and PBIAS (%, positive = model too high), each labelled.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from proda_engine.data import write_text_atomic
from proda_engine.data.writers import version_attrs
from proda_engine.evaluation import _json_default, soc_at_sites
from proda_engine.learning.config import TrainConfig
from proda_engine.learning.ensembles import train_ensemble
from proda_engine.learning.splits import Split, spatial_kfold
from proda_engine.learning.training import train_end_to_end
from proda_engine.products.world import OpenWorld, open_world
from proda_engine.skill import depth_bin_table, fold_summary, skill_metrics

log = logging.getLogger(__name__)

#: Methods of the cross-validation, in table order: key -> label.
CV_METHODS: dict[str, str] = {
    "default_clm5": "default CLM5",
    "batch_da": "batch DA (one theta for all training sites)",
    "proda_two_step": "PRODA two-step (site MCMC posteriors -> network)",
    "proda_e2e": "PRODA end to end",
    "ml_baseline": "ML baseline (random forest: covariates + depth -> log SOC)",
}


@dataclass
class CrossValResult:
    """Per-fold and summary skill of each method (kg C m-3 for RMSE, % for PBIAS).

    Attributes:
        world: world name and provenance (``world_kind``, ``data_kind``).
        folds: one dict per fold: sizes and ``metrics[method]`` (:func:`~proda_engine.skill.skill_metrics`).
        summary: method -> :func:`~proda_engine.skill.fold_summary` over folds (``r2_mean``, ``r2_sd``, ...).
        pooled: method -> skill of all out-of-fold predictions together.
        depth_bins: method -> :func:`~proda_engine.skill.depth_bin_table` of the pooled predictions.
        predictions: observed and predicted SOC per held-out layer, all methods (for plots and checks).
        info: settings and site counts (dropped sites by reason, buffer-dropped sites per fold).
    """

    world: dict[str, str]
    folds: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]
    pooled: dict[str, dict[str, float]]
    depth_bins: dict[str, pd.DataFrame]
    predictions: pd.DataFrame = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per method: mean ± s.d. over folds of R², Pearson r², RMSE, PBIAS, and pooled R²."""
        rows = []
        for k, s in self.summary.items():
            rows.append({"method": CV_METHODS[k], "R2_mean": s.get("r2_mean"), "R2_sd": s.get("r2_sd"),
                         "pearson_r2_mean": s.get("pearson_r2_mean"), "RMSE_mean": s.get("rmse_mean"),
                         "PBIAS_mean": s.get("pbias_mean"), "PBIAS_sd": s.get("pbias_sd"),
                         "R2_pooled": self.pooled[k]["r2"], "R2_log_pooled": self.pooled[k]["r2_log"],
                         "n_layers": self.pooled[k]["n"]})
        return pd.DataFrame(rows)

    def markdown(self) -> str:
        """Markdown tables: the fold summary and the depth bins (pooled out-of-fold predictions)."""
        def f(v: Any, spec: str = ".3f") -> str:
            return "–" if v is None or not np.isfinite(v) else format(v, spec)

        i = self.info
        lines = [f"Spatial {i['n_folds']}-fold cross-validation, world `{self.world['world']}` "
                 f"({self.world['data_kind']}): {i['n_sites']} sites, {i['n_layers']} layers; "
                 f"{i['block_size_deg']:g}° blocks, buffer {i['buffer_km']:g} km "
                 f"({i['buffer_dropped_total']} training sites inside the buffer left out over all folds).", "",
                 "R² = 1 − SS_res/SS_tot on held-out layers (kg C m⁻³); r² = squared Pearson correlation; "
                 "PBIAS = 100 Σ(model − obs)/Σ obs (positive: model too high). Mean ± s.d. over folds; "
                 "'pooled' = all out-of-fold predictions together.", "",
                 "| method | R² | r² | RMSE (kg C m⁻³) | PBIAS (%) | R² pooled | R² (log) pooled | layers |",
                 "|---|---|---|---|---|---|---|---|"]
        for _, r in self.table().iterrows():
            lines.append(f"| {r['method']} | {f(r['R2_mean'])} ± {f(r['R2_sd'])} | {f(r['pearson_r2_mean'])} | "
                         f"{f(r['RMSE_mean'], '.2f')} | {f(r['PBIAS_mean'], '+.1f')} ± {f(r['PBIAS_sd'], '.1f')} | "
                         f"{f(r['R2_pooled'])} | {f(r['R2_log_pooled'])} | {int(r['n_layers'])} |")
        iv = self.info.get("interval")
        if iv:
            lines += ["", f"PRODA end to end, {iv['members']}-member bootstrap ensemble: "
                      f"{100 * iv['coverage']:.1f} % of {iv['n']} held-out layers inside the {100 * iv['level']:.0f} % "
                      "predictive interval (members' spread + observation error from validation residuals, log "
                      "space); per fold " + ", ".join(f"{100 * c:.0f} %" for c in iv["per_fold"]) + "."]
        bins = list(next(iter(self.depth_bins.values())).index)
        lines += ["", "By depth (pooled out-of-fold): R² / PBIAS % (layers)", "",
                  "| method | " + " | ".join(bins) + " |", "|---|" + "---|" * len(bins)]
        for k, tab in self.depth_bins.items():
            cells = [f"{f(tab.loc[b, 'r2'])} / {f(tab.loc[b, 'pbias'], '+.1f')} ({int(tab.loc[b, 'n'])})"
                     for b in bins]
            lines.append(f"| {CV_METHODS[k]} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"world": self.world, "folds": self.folds, "summary": self.summary, "pooled": self.pooled,
                "depth_bins": {k: v.reset_index().to_dict(orient="records") for k, v in self.depth_bins.items()},
                "labels": {k: CV_METHODS[k] for k in self.summary}, "info": self.info}

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """``crossval.json``, ``crossval.md`` and ``crossval_predictions.csv`` (atomically)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps({**version_attrs(), **self.to_dict()}, indent=2, default=_json_default)
        files = {"json": write_text_atomic(text, out / "crossval.json"),
                 "markdown": write_text_atomic(self.markdown(), out / "crossval.md")}
        files["predictions"] = write_text_atomic(self.predictions.to_csv(index=False),
                                                 out / "crossval_predictions.csv")
        return files


def layer_rows(table: pd.DataFrame, obs, sites: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One row per observed layer of ``sites``: the site's covariates, the layer's depth (m) and SOC (g C m-3)."""
    o = obs.subset(sites)
    counts = o.mask.sum(1)
    rows = table.iloc[np.repeat(sites, counts)].reset_index(drop=True)
    return rows, o.depth[o.mask], o.soc[o.mask]


def _posterior_by_site(path: Path, sd) -> np.ndarray | None:
    """(N, 21) usable posterior-mean theta per site of ``sd`` (NaN where a site has none), or None."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        return None
    with xr.open_dataset(path) as ds:
        ids = [str(v) for v in ds["profile_id"].values]
        theta = ds["theta"].transpose("site", "parameter").values
    row = {pid: i for i, pid in enumerate(ids)}
    out = np.full((sd.observations.n_profiles, theta.shape[1]), np.nan)
    for j, pid in enumerate(sd.observations.profile_id):
        i = row.get(str(pid))
        if i is not None:
            out[j] = theta[i]
    return out if np.isfinite(out).all(1).any() else None


def _two_step_fold(posterior, sd, fold, cols, ow, cfg, seed, f_test, local, obs_t, mask, frow) -> np.ndarray:
    """Two-step PRODA in one fold: regress the fold's usable training posteriors, predict the test sites."""
    from proda_engine.learning.training import train_two_step

    fit = np.concatenate([fold.train, fold.val])
    have = fit[np.isfinite(posterior[fit]).all(1)]
    frow["two_step_sites"] = int(have.size)
    if have.size < 20:
        frow["two_step_note"] = f"only {have.size} training sites with a usable posterior"
        return np.full(int(mask.sum()), np.nan)
    tcfg = cfg.replace(method="two-step", loss="mse", seed=seed + fold.k, n_members=1, bias_weight=0.0)
    # the fold's own train / validation blocks, restricted to the sites with a usable posterior
    pos_val = np.flatnonzero(np.isin(have, fold.val))
    pos_train = np.flatnonzero(~np.isin(have, fold.val))
    if pos_val.size == 0:  # no posterior in the validation blocks: early-stop on one training site's block mate
        pos_val, pos_train = pos_train[-1:], pos_train[:-1]
    split = Split(train=pos_train, val=pos_val, test=np.zeros(0, np.int64))
    model = train_two_step(sd.table.iloc[have].reset_index(drop=True), posterior[have], config=tcfg,
                           split=split, covariates=cols, categorical=list(ow.categorical))
    theta = model.predict_theta(sd.table.iloc[fold.test].reset_index(drop=True))
    return soc_at_sites(f_test, local, obs_t, theta=theta)[mask] / 1000.0


#: Two-sided central interval of the ensemble's predictive distribution whose coverage is reported.
INTERVAL = 0.90


def _interval_coverage(models, thetas, sd, fold, obs_t, f_test, local, obs_kg, mask) -> dict[str, float]:
    """Share of held-out layers inside the ensemble's 90 % predictive interval (log space).

    Predictive distribution of ln SOC at a layer: mean and variance of the members' ln predictions plus
    an observation-error variance s², the mean squared log residual of the members' mean prediction on
    the fold's *validation* sites (never the test sites): ``ln o ~ N(mean ln p_m, var ln p_m + s²)``.
    """
    from scipy.stats import norm

    val = fold.val
    obs_v = sd.observations.subset(val)
    vmask = obs_v.mask
    f_val = sd.forcing.subset(val)
    v_tab = sd.table.iloc[val].reset_index(drop=True)
    lv = np.array([np.log(soc_at_sites(f_val, np.arange(val.size), obs_v, theta=m.predict_theta(v_tab))[vmask])
                   for m in models])
    resid = np.log(obs_v.soc[vmask]) - lv.mean(0)
    s2 = float(np.nanmean(resid**2))
    lt = np.array([np.log(soc_at_sites(f_test, local, obs_t, theta=th)[mask] / 1000.0) for th in thetas])
    mu, var = lt.mean(0), lt.var(0, ddof=1) + s2
    z = norm.ppf(0.5 + INTERVAL / 2)
    lo, hi = np.exp(mu - z * np.sqrt(var)), np.exp(mu + z * np.sqrt(var))
    ok = np.isfinite(lo) & np.isfinite(hi)
    inside = (obs_kg >= lo) & (obs_kg <= hi)
    return {"coverage": float(inside[ok].mean()), "n": int(ok.sum()), "obs_error_sd_log": float(np.sqrt(s2)),
            "ensemble_sd_log_median": float(np.median(np.sqrt(lt.var(0, ddof=1)))), "level": INTERVAL,
            "members": len(models)}


def cross_validate_world(world: str | OpenWorld | None = None, *, catalog: str | Path | None = None,
                         n_folds: int = 5, block_size: float = 2.0, buffer_km: float = 0.0, seed: int = 0,
                         methods: Sequence[str] | None = None, train_config: TrainConfig | None = None,
                         ml_kind: str = "random_forest", max_distance_km: float | None = None,
                         posterior_path: str | Path | None = None,
                         progress: Callable[[str], None] | None = None) -> CrossValResult:
    """Spatially blocked k-fold cross-validation of default CLM5, PRODA end to end and an ML baseline.

    Args:
        world: a built-in or catalog world (its observed profiles are the data).
        n_folds, block_size, buffer_km, seed: :func:`~proda_engine.learning.splits.spatial_kfold`
            (blocks in degrees; training sites closer than ``buffer_km`` to a test site are left out).
        methods: subset of :data:`CV_METHODS` (default all).
        train_config: end-to-end training settings (default: for measured profiles (catalog worlds)
            :func:`~proda_engine.workflows.measured_train_config`, for twins
            :func:`~proda_engine.workflows.default_train_config`).
        ml_kind: ``"random_forest"`` or ``"gradient_boosting"``.
        posterior_path: site-MCMC posterior (``proda assimilate``'s ``posterior.nc``) for PRODA two-step
            (default ``<world>/products/assimilate/posterior.nc``; two-step is left out when it is absent).
        progress: called with a short text after each fold and method.
    """
    from proda_engine.learning.baselines import fit_ml_baseline
    from proda_engine.workflows import default_train_config, measured_train_config, site_data

    t0 = time.perf_counter()
    ow = world if isinstance(world, OpenWorld) else open_world(world, catalog=catalog)
    methods = list(methods or CV_METHODS)
    unknown = [m for m in methods if m not in CV_METHODS]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; choose from {list(CV_METHODS)}")
    cfg = train_config or (measured_train_config() if ow.spec.kind == "catalog" else default_train_config())
    sd = site_data(ow, max_distance_km=max_distance_km, seed=seed)
    posterior = _posterior_by_site(posterior_path or ow.spec.products / "assimilate" / "posterior.nc", sd)
    if "proda_two_step" in methods and posterior is None:
        methods.remove("proda_two_step")
        log.info("no site posteriors for world %r: PRODA two-step left out (run `proda assimilate --world`)",
                 ow.name)
    n = sd.observations.n_profiles
    if n < 2 * n_folds:
        raise ValueError(f"world {ow.name!r}: {n} usable sites are too few for {n_folds} folds")
    folds = spatial_kfold(sd.lat, sd.lon, n_folds=n_folds, block_size=block_size, buffer_km=buffer_km,
                          val_fraction=0.1, seed=seed)
    cols = list(ow.covariate_names)
    fold_rows: list[dict[str, Any]] = []
    preds: list[pd.DataFrame] = []
    for fold in folds:
        test = fold.test
        obs_t = sd.observations.subset(test)
        mask = obs_t.mask
        obs_kg = obs_t.soc[mask] / 1000.0
        depth = obs_t.depth[mask]
        site_ids = np.repeat(obs_t.profile_id, mask.sum(1))
        frow: dict[str, Any] = {"fold": fold.k, "n_train": int(fold.train.size), "n_val": int(fold.val.size),
                                "n_test": int(test.size), "n_buffer_dropped": int(fold.buffer.size),
                                "n_test_layers": int(mask.sum()), "metrics": {}}
        local = np.arange(test.size)
        f_test = sd.forcing.subset(test)
        for m in methods:
            t = time.perf_counter()
            if m == "default_clm5":
                pred = soc_at_sites(f_test, local, obs_t, theta=None)[mask] / 1000.0
            elif m == "batch_da":
                from proda_engine.evaluation import DEMO_MCMC
                from proda_engine.inference.batch_da import batch_da_theta

                fit = np.concatenate([fold.train, fold.val])
                theta0, rep = batch_da_theta(sd.forcing.subset(fit), sd.observations.subset(fit),
                                             {**DEMO_MCMC, "seed": seed + fold.k, "progress": False})
                frow["batch_da"] = {**rep, "theta": theta0.tolist()}
                pred = soc_at_sites(f_test, local, obs_t, theta=np.tile(theta0, (test.size, 1)))[mask] / 1000.0
            elif m == "proda_two_step":
                pred = _two_step_fold(posterior, sd, fold, cols, ow, cfg, seed, f_test, local, obs_t, mask, frow)
            elif m == "proda_e2e":
                split = Split(train=fold.train, val=fold.val, test=test, buffer=fold.buffer)
                kw = {"lat": sd.lat, "lon": sd.lon, "split": split, "covariates": cols,
                      "categorical": list(ow.categorical)}
                fcfg = cfg.replace(seed=seed + fold.k)
                if fcfg.n_members > 1:
                    models = train_ensemble(sd.table, forcing_sites=sd.forcing, observations=sd.observations,
                                            config=fcfg, **kw).members
                else:
                    models = [train_end_to_end(sd.table, sd.forcing, sd.observations, config=fcfg, **kw)]
                t_tab = sd.table.iloc[test].reset_index(drop=True)
                thetas = [mod.predict_theta(t_tab) for mod in models]
                # the product's rule: the map is the members' mean theta (workflows.train_world)
                theta = np.clip(np.mean(thetas, axis=0), 0.0, 1.0)
                pred = soc_at_sites(f_test, local, obs_t, theta=theta)[mask] / 1000.0
                frow["e2e_best_epoch"] = [mod.metadata.get("best_epoch") for mod in models]
                if len(models) > 1:
                    frow["interval"] = _interval_coverage(models, thetas, sd, fold, obs_t, f_test, local, obs_kg,
                                                          mask)
            else:  # ML baseline on the training and validation sites' layers
                fit_sites = np.concatenate([fold.train, fold.val])
                x_fit, d_fit, soc_fit = layer_rows(sd.table[cols], sd.observations, fit_sites)
                groups = np.repeat(fit_sites, sd.observations.mask[fit_sites].sum(1))
                ml = fit_ml_baseline(x_fit, d_fit, np.log(soc_fit / 1000.0), categorical=list(ow.categorical),
                                     kind=ml_kind, seed=seed + fold.k, groups=groups)
                x_t, d_t, _ = layer_rows(sd.table[cols], sd.observations, test)
                pred = np.asarray(ml.predict(x_t, d_t), float)
            frow["metrics"][m] = skill_metrics(obs_kg, pred)
            frow.setdefault("seconds", {})[m] = time.perf_counter() - t
            preds.append(pd.DataFrame({"fold": fold.k, "method": m, "profile_id": site_ids, "depth_m": depth,
                                       "observed_kg_m3": obs_kg, "predicted_kg_m3": pred}))
            if progress is not None:
                progress(f"fold {fold.k + 1}/{n_folds} {CV_METHODS[m]}: R2 {frow['metrics'][m]['r2']:.3f}")
        fold_rows.append(frow)
    allp = pd.concat(preds, ignore_index=True)
    summary = {m: fold_summary([fr["metrics"][m] for fr in fold_rows]) for m in methods}
    pooled, bins = {}, {}
    for m in methods:
        p = allp[allp["method"] == m]
        pooled[m] = skill_metrics(p["observed_kg_m3"], p["predicted_kg_m3"])
        bins[m] = depth_bin_table(p["observed_kg_m3"], p["predicted_kg_m3"], p["depth_m"])
    cover = [fr["interval"] for fr in fold_rows if "interval" in fr]
    if cover:
        n_c = sum(c["n"] for c in cover)
        interval = {"level": INTERVAL, "coverage": sum(c["coverage"] * c["n"] for c in cover) / n_c, "n": n_c,
                    "members": cover[0]["members"], "per_fold": [c["coverage"] for c in cover]}
    else:
        interval = None
    info = {"interval": interval, "n_folds": n_folds, "block_size_deg": block_size, "buffer_km": buffer_km,
            "seed": seed,
            "n_sites": int(n), "n_layers": int(sd.observations.mask.sum()),
            "buffer_dropped_total": int(sum(fr["n_buffer_dropped"] for fr in fold_rows)),
            "sites": {k: v for k, v in sd.report.items() if k != "reader"}, "reader": sd.report["reader"],
            "train_config": cfg.to_dict() if hasattr(cfg, "to_dict") else str(cfg), "ml_kind": ml_kind,
            "seconds": time.perf_counter() - t0,
            "definitions": {"r2": "1 - SS_res/SS_tot on held-out layers", "pearson_r2": "squared Pearson r",
                            "rmse": "kg C m-3", "pbias": "100 sum(model - obs) / sum(obs), %, + = model too high"}}
    return CrossValResult(world=ow.spec.provenance(), folds=fold_rows, summary=summary, pooled=pooled,
                          depth_bins=bins, predictions=allp, info=info)
