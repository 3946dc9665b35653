"""Component control: how much of the SOC pattern each mechanism's spatial variation explains
(spec §(j) "Component control").

Nine experiments per cell (gridded) or per observation site (evaluation):

==  =================  ======================================================================
 1  PRODA              the parameter sets as given (network members)
 2  A_homogeneous      group A (CUE / transfers, theta 11-19) replaced by theta_bar
 3  I_homogeneous      group I (beta, theta 21) replaced by theta_bar
 4  K_homogeneous      group K (turnover times, theta 5-10) replaced by theta_bar
 5  V_homogeneous      group V (bio/cryoturbation, theta 1-2) replaced by theta_bar
 6  Xi_homogeneous     group Xi (Q10, e-folding, w_s; theta 3, 4, 20) replaced by theta_bar
 7  NPP_perturbed      inputs x (1 + s 2 sigma_NPP / mu_NPP), s = +-1 at random per cell
 8  all_homogeneous    theta_bar for all 21 (a batch-DA-like baseline)
 9  default_CLM5       the default CLM5 parameters
==  =================  ======================================================================

theta_bar is a single unit-interval vector: by default the across-cell (gridded) or across-site
(evaluation) mean of the member's theta; the spec's original uses the across-site mean of the
site-level MCMC "MLE" estimates — pass it as ``theta_bar`` to reproduce that.

The NPP experiment needs the covariates ``cesm2_npp`` (mu) and ``cesm2_npp_std`` (sigma). The
factor is clipped at ``min_factor`` (default 0: a negative carbon input is not physical) and the
number of clipped cells is recorded. Note: in the synthetic default world ``cesm2_npp_std`` is the
*seasonal* s.d. of monthly NPP, so 2 sigma / mu often exceeds 1 there; pass ``npp_rel_sd`` (e.g. an
interannual coefficient of variation) to run the experiment as intended.

Outputs: :func:`component_control` (global stocks by interval per experiment and member),
:func:`evaluate_component_control` (modelled vs observed SOC by depth bin, spec metrics) and
:func:`explained_variation` (100 E pooled over all depths; drawn against the global stock by
:func:`proda_engine.plot.plot_explained_variation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from proda_engine.grid import Grid, get_grid
from proda_engine.parameters import GROUPS, N_PARAMS
from proda_engine.products.gridded import (
    INTERVALS,
    CellSolver,
    GridWorld,
    ParameterSet,
    cell_totals,
    simulate_member,
)

EXPERIMENTS: tuple[str, ...] = ("PRODA", "A_homogeneous", "I_homogeneous", "K_homogeneous", "V_homogeneous",
                                "Xi_homogeneous", "NPP_perturbed", "all_homogeneous", "default_CLM5")
EXPERIMENT_LABELS: dict[str, str] = {
    "PRODA": "PRODA", "A_homogeneous": "A homogeneous", "I_homogeneous": "I homogeneous",
    "K_homogeneous": "K homogeneous", "V_homogeneous": "V homogeneous", "Xi_homogeneous": "Xi homogeneous",
    "NPP_perturbed": "NPP perturbed", "all_homogeneous": "all homogeneous", "default_CLM5": "default CLM5",
}
#: Depth bins of the evaluation (m), spec §(j): [0, 0.3], (0.3, 1], (1, 100] and all depths pooled.
DEPTH_BINS: dict[str, tuple[float, float]] = {"0-0.3m": (0.0, 0.3), "0.3-1m": (0.3, 1.0), "1-100m": (1.0, 100.0),
                                              "all": (0.0, np.inf)}


def experiment_theta(theta: np.ndarray, experiment: str, theta_bar: np.ndarray) -> np.ndarray | None:
    """Parameters of one experiment: (C, 21), or None for ``default_CLM5`` (preset)."""
    if experiment == "default_CLM5":
        return None
    out = np.array(theta, dtype=float, copy=True)
    if experiment in ("PRODA", "NPP_perturbed"):
        return out
    if experiment == "all_homogeneous":
        out[:] = theta_bar
        return out
    group = experiment.removesuffix("_homogeneous")
    if group not in GROUPS:
        raise ValueError(f"unknown experiment {experiment!r}; expected one of {list(EXPERIMENTS)}")
    idx = list(GROUPS[group])
    out[:, idx] = theta_bar[idx]
    return out


def npp_factor(rel_sd: np.ndarray, rng: np.random.Generator, *, k: float = 2.0,
               min_factor: float = 0.0) -> tuple[np.ndarray, int]:
    """Input multiplier 1 + s k sigma/mu with s = +-1 drawn with equal probability per cell.

    Returns the factor (C,) clipped at ``min_factor`` and the number of clipped cells. Cells without
    sigma/mu (NaN) keep factor 1.
    """
    s = rng.choice(np.array([-1.0, 1.0]), size=np.shape(rel_sd))
    f = 1.0 + s * k * np.nan_to_num(np.asarray(rel_sd, dtype=float), nan=0.0)
    clipped = int((f < min_factor).sum())
    return np.maximum(f, min_factor), clipped


def world_npp_rel_sd(world: GridWorld) -> np.ndarray | None:
    """sigma_NPP / mu_NPP at the world's cells from ``cesm2_npp_std`` / ``cesm2_npp``, or None."""
    mu, sd = world.field_at_cells("cesm2_npp"), world.field_at_cells("cesm2_npp_std")
    if mu is None or sd is None:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mu > 0, sd / mu, np.nan)


def component_control(world: GridWorld, params: ParameterSet | np.ndarray | xr.DataArray, *,
                      experiments: Sequence[str] = EXPERIMENTS, theta_bar: np.ndarray | None = None,
                      npp_rel_sd: np.ndarray | None = None, seed: int = 0, member_dim: str = "member",
                      grid: Grid | None = None, closure: str | None = None, chunk_size: int = 20000,
                      coarse_fragments: bool = True, min_npp_factor: float = 0.0) -> xr.Dataset:
    """Gridded component control: global SOC totals (Pg C, coarse-fragment corrected) by depth interval
    for each experiment and member.

    Returns:
        Dataset with ``soc_total`` (experiment, member, depth) Pg C, ``input_total`` (experiment,
        member) Pg C yr-1, ``n_cells`` (experiment, member) and attrs (theta_bar, NPP clipping).
    """
    ps = params if isinstance(params, ParameterSet) else ParameterSet(params, world, member_dim=member_dim)
    if ps.is_default:
        raise ValueError("component control needs unit-interval parameter sets (members), not the default preset")
    closure = ps.resolve_closure(closure)  # None: the default, refusing parameters recorded with another
    grid = ps.resolve_grid(grid)
    cf = world.coarse_fragments() if coarse_fragments else None
    area = world.cell_areas
    glob = np.ones((1, world.n_cells), bool)
    rel_sd = world_npp_rel_sd(world) if npp_rel_sd is None else np.asarray(npp_rel_sd, dtype=float)
    if "NPP_perturbed" in experiments and rel_sd is None:
        raise ValueError("NPP_perturbed needs the covariates cesm2_npp and cesm2_npp_std (or npp_rel_sd)")
    E, M = len(experiments), ps.n_members
    tot = np.full((E, M, len(INTERVALS)), np.nan)
    cin = np.full((E, M), np.nan)
    ncell = np.zeros((E, M), np.int64)
    clipped: list[int] = []
    default_cache: dict[str, np.ndarray] | None = None
    tbars = []
    for m, theta in ps.iter_members():
        tb = np.asarray(theta.mean(0) if theta_bar is None else theta_bar, dtype=float)
        tbars.append(tb)
        for e, exp in enumerate(experiments):
            scale = None
            if exp == "NPP_perturbed":
                scale, nclip = npp_factor(rel_sd, np.random.default_rng([seed, m]), min_factor=min_npp_factor)
                clipped.append(nclip)
            if exp == "default_CLM5" and default_cache is not None:
                res = default_cache
            else:
                res = simulate_member(world, experiment_theta(theta, exp, tb), grid=grid, closure=closure,
                                      chunk_size=chunk_size, cf=cf, input_scale=scale, diagnostics=())
                if exp == "default_CLM5":
                    default_cache = res  # member-independent
            for d, k in enumerate(INTERVALS):
                tot[e, m, d] = cell_totals(res[f"stock_{k}"], area, glob)[0]
            cin[e, m] = cell_totals(np.where(res["valid"], res["input"], np.nan), area, glob, factor=1e-15)[0]
            ncell[e, m] = int(res["valid"].sum())
    return xr.Dataset(
        {
            "soc_total": (("experiment", "member", "depth"), tot,
                          {"units": "Pg C", "long_name": "global SOC total (coarse-fragment corrected)"}),
            "input_total": (("experiment", "member"), cin, {"units": "Pg C yr-1", "long_name": "carbon input"}),
            "n_cells": (("experiment", "member"), ncell, {"long_name": "valid cells"}),
            "theta_bar": (("member", "parameter"), np.stack(tbars), {"units": "1",
                                                                      "long_name": "homogeneous theta"}),
        },
        coords={"experiment": list(experiments), "member": np.asarray(ps.members), "depth": list(INTERVALS),
                "experiment_label": ("experiment", [EXPERIMENT_LABELS[x] for x in experiments])},
        attrs={"world": world.name, "parameters": ps.label, "seed": seed, "closure": closure, "soil_grid": grid.name,
               "theta_bar": "across-cell mean per member" if theta_bar is None else "given",
               "npp_factor": f"1 + s 2 sigma/mu, s = +-1 at random per cell, clipped at {min_npp_factor}",
               "npp_clipped_cells": str(clipped)},
    )


# -------------------------------------------------------------------------------------------------
# Evaluation against observations
# -------------------------------------------------------------------------------------------------
def _site_table(obs):
    """Unique sites in order of first appearance with their lat/lon, and padded (S, K) arrays."""
    import pandas as pd

    need = {"site", "lat", "lon", "depth_m", "soc_density"}
    missing = need - set(obs.columns)
    if missing:
        raise ValueError(f"observations: missing column(s) {sorted(missing)}; expected {sorted(need)}")
    obs = obs.reset_index(drop=True)
    sites = pd.unique(obs["site"])
    first = obs.groupby("site", sort=False).first().loc[sites]
    pos = {s: i for i, s in enumerate(sites)}
    si = obs["site"].map(pos).to_numpy()
    k = obs.groupby("site", sort=False).cumcount().to_numpy()
    K = int(k.max()) + 1 if len(k) else 0
    depth = np.full((len(sites), K), np.nan)
    soc = np.full((len(sites), K), np.nan)
    depth[si, k] = obs["depth_m"].to_numpy(float)
    soc[si, k] = obs["soc_density"].to_numpy(float)
    return sites, first["lat"].to_numpy(float), first["lon"].to_numpy(float), depth, soc


def nearest_cells(world: GridWorld, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Index into the world's valid cells of the cell nearest to each (lat, lon) (great-circle-ish)."""
    LA, LO = np.meshgrid(world.cells.lat, world.cells.lon, indexing="ij")
    clat, clon = LA.reshape(-1)[world.cells.cells], LO.reshape(-1)[world.cells.cells]
    out = np.empty(len(lat), np.int64)
    for i, (a, b) in enumerate(zip(lat, lon)):
        d = (clat - a) ** 2 + (((clon - b + 180) % 360 - 180) * np.cos(np.deg2rad(a))) ** 2
        out[i] = int(np.argmin(d))
    return out


def _site_thetas(site_theta, sites, member_dim: str) -> np.ndarray:
    """(M, S, 21) from an array (S, 21) / (M, S, 21) or a DataArray with dims site, parameter[, member]."""
    if isinstance(site_theta, xr.DataArray):
        da = site_theta
        if "site" in da.coords:
            da = da.sel(site=list(sites))
        dims = [d for d in (member_dim, "site", "parameter") if d in da.dims]
        a = np.asarray(da.transpose(*dims).values, dtype=float)
    else:
        a = np.asarray(site_theta, dtype=float)
    if a.ndim == 2:
        a = a[None]
    if a.shape[1:] != (len(sites), N_PARAMS):
        raise ValueError(f"site_theta: expected ({len(sites)}, 21) or (M, {len(sites)}, 21), found {a.shape}")
    return a


def evaluate_component_control(world: GridWorld, observations, site_theta, *,
                               experiments: Sequence[str] = EXPERIMENTS, theta_bar: np.ndarray | None = None,
                               npp_rel_sd: np.ndarray | None = None, seed: int = 0, member_dim: str = "member",
                               bins: Mapping[str, tuple[float, float]] = DEPTH_BINS, method: str = "pchip",
                               grid: Grid | None = None, closure: str = "conservative",
                               min_npp_factor: float = 0.0):
    """Evaluation version of component control: modelled SOC at every observed layer (PCHIP of the
    20 node values, spec §(i); no coarse-fragment correction at sites) against the observations,
    by depth bin, with the spec's metrics (:func:`~proda_engine.inference.likelihood.pooled_metrics`).

    Args:
        observations: pandas DataFrame with columns ``site``, ``lat``, ``lon``, ``depth_m`` (layer
            mid-depth, m) and ``soc_density`` (g C m-3).
        site_theta: parameters at the sites in order of first appearance: (S, 21), (M, S, 21) or a
            DataArray with dims ``site``, ``parameter`` and optionally ``member_dim``.
        theta_bar: homogeneous theta (21,); default the across-site mean per member.
        npp_rel_sd: sigma/mu of NPP per site; default from the nearest world cell's covariates.

    Returns:
        pandas DataFrame, one row per (member, experiment, bin) with rmse, mae, e, e_abs, d, d_abs,
        rsr, pbias, lin_ccc and n.
    """
    import pandas as pd

    from proda_engine.inference.likelihood import model_at_obs, pooled_metrics

    grid = grid or get_grid()
    sites, lat, lon, depth, soc_obs = _site_table(observations)
    thetas = _site_thetas(site_theta, sites, member_dim)
    idx = nearest_cells(world, lat, lon)
    forcing = world.cells.forcing.subset(idx).to(dtype=torch.float64)
    solver = CellSolver(forcing, grid, closure)
    if npp_rel_sd is None:
        rel = world_npp_rel_sd(world)
        npp_rel_sd = None if rel is None else rel[idx]
    rows = []
    default_soc = None
    for m, theta in enumerate(thetas):
        tb = np.asarray(theta.mean(0) if theta_bar is None else theta_bar, dtype=float)
        for exp in experiments:
            scale = None
            if exp == "NPP_perturbed":
                if npp_rel_sd is None:
                    raise ValueError("NPP_perturbed needs cesm2_npp/cesm2_npp_std covariates or npp_rel_sd")
                scale, _ = npp_factor(npp_rel_sd, np.random.default_rng([seed, m]), min_factor=min_npp_factor)
            if exp == "default_CLM5" and default_soc is not None:
                soc = default_soc
            else:
                sol = solver.solve(experiment_theta(theta, exp, tb), input_scale=scale, diagnostics=())
                soc = np.where(sol.valid[None], sol.soc, np.nan)
                if exp == "default_CLM5":
                    default_soc = soc
            model = np.asarray(model_at_obs(soc, grid.z_node, depth, np.isfinite(soc_obs), method=method))
            for b, (lo, hi) in bins.items():
                inb = (depth >= lo) & (depth <= hi) if lo == 0.0 else (depth > lo) & (depth <= hi)
                met = pooled_metrics(np.where(inb, model, np.nan), np.where(inb, soc_obs, np.nan))
                rows.append({"member": m, "experiment": exp, "bin": b, **met})
    return pd.DataFrame(rows)


def explained_variation(evaluation) -> object:
    """100 E (Nash-Sutcliffe, all depths pooled) per experiment: median and 16th/84th percentiles
    over members, as a pandas DataFrame."""
    import pandas as pd

    ev = evaluation[evaluation["bin"] == "all"]
    rows = []
    for exp, sub in ev.groupby("experiment", sort=False):
        v = 100.0 * sub["e"].to_numpy(float)
        rows.append({"experiment": exp, "explained_pct_median": float(np.nanmedian(v)),
                     "explained_pct_p16": float(np.nanpercentile(v, 16)),
                     "explained_pct_p84": float(np.nanpercentile(v, 84))})
    return pd.DataFrame(rows)
