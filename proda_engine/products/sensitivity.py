"""Marginal "+1 % bulk-process" sensitivity of the global SOC stock and turnover (spec §(j)).

For each mechanism group G in A (microbial CUE / transfers), K (baseline decomposition), Xi
(environmental modifiers), V (vertical transport), I (input allocation) and NPP (carbon input), and
11 levels q = -0.20, -0.16, ..., +0.20:

1. theta_i <- theta_i (1 + q) for every i in G, in unit-interval space, then the spec's clamp
   (theta in [1e-4, 1], beta's theta <= 0.98); for NPP the four inputs are scaled by (1 + q).
2. Every cell is re-solved: coarse-fragment-corrected whole-profile stock S_c, bulk turnover
   tau_c = S_c(uncorrected) / C_in, and the group's bulk metric B_c: CUE for A, K_bar for K,
   xi_bar for Xi, V_bar for V, apparent beta I_bar for I, C_in for NPP.
3. S_G(q) = sum_c S_c a_c (Pg C, area weighted), T_G(q) = mean_c tau_c (yr, unweighted) and
   R_G(q) = mean_c (B_c(q) - B_c(0)) / B_c(0), all over the cells valid at every level.
4. Least squares ln(S_G(q)/S_G(0)) = a + b ln(1 + R_G(q)); the "+1 %" effect is
   dS = S_G(0) (1.01^b - 1) Pg C; the relative process change that doubles SOC is
   exp((ln 2 - a)/b) - 1 and the one that raises it by 10 % is exp((ln 1.1 - a)/b) - 1. The same
   fit is made for turnover.
5. Per ensemble member, then mean +- s.d. over members.

**Sign convention.** b is the elasticity of SOC with respect to the *bulk metric* B, not with
respect to theta. Higher CUE -> more carbon retained -> b > 0 for A. Higher K_bar means faster
baseline decomposition -> b < 0 for K (raising the K-group theta lengthens the turnover times,
lowers K_bar and raises SOC: both R and ln S change sign). Higher xi_bar (faster environmental
decay) -> b < 0 for Xi. SOC is linear in the inputs, so for NPP R(q) = q and S(q) = S(0)(1 + q)
exactly: b = 1 and dS = 1 % of the stock; turnover does not change (b_T = 0).

The solves reuse cached parts across levels (see :class:`~proda_engine.products.gridded.CellSolver`),
and are done in batches of cells so memory stays bounded on the global grid.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from proda_engine.data.parameter_files import parameter_file_attrs
from proda_engine.grid import Grid
from proda_engine.products.gridded import (
    CellSolver,
    ParameterSet,
    World,
    coarse_fragment_stocks,
)
from proda_engine.products.regions import PG
from proda_engine.products.whatif import MECHANISM_LABELS, MECHANISMS, perturb_theta

#: The 11 relative perturbation levels (index 5 is 0).
LEVELS: np.ndarray = np.round(np.linspace(-0.20, 0.20, 11), 10)
#: Bulk metric B of each group (keys of :data:`proda_engine.products.gridded.DIAGNOSTICS`).
GROUP_METRIC: dict[str, str] = {"A": "cue", "K": "decomposition", "Xi": "environment", "V": "transport",
                                "I": "allocation", "NPP": "input"}
METRIC_LABEL: dict[str, str] = {"A": "CUE", "K": "K̄", "Xi": "ξ̄", "V": "V̄", "I": "Ī", "NPP": "C_in"}


@dataclass
class SensitivityResult:
    """Curves and fitted effects of the marginal sensitivity.

    Attributes:
        curves: Dataset (member, group, level): ``stock`` S_G(q) Pg C, ``turnover`` T_G(q) yr,
            ``process_change`` R_G(q) (relative), ``n_cells``.
        table: pandas DataFrame, one row per (member, group), with the fits and effects.
    """

    curves: xr.Dataset
    table: object

    def summary(self):
        """Mean and s.d. (ddof = 1) over members per group, as a pandas DataFrame."""
        import pandas as pd

        t = self.table
        cols = [c for c in t.columns if c not in ("member", "group")]
        rows = []
        for g in MECHANISMS:
            sub = t[t["group"] == g]
            if not len(sub):
                continue
            row = {"group": g, "label": MECHANISM_LABELS[g], "metric": METRIC_LABEL[g], "n_members": len(sub)}
            for c in cols:
                v = sub[c].to_numpy(dtype=float)
                row[f"{c}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                row[f"{c}_sd"] = float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else float("nan")
            rows.append(row)
        return pd.DataFrame(rows)

    def write(self, folder: str | PathLike, *, plots: bool = True) -> dict[str, Path]:
        """Write ``sensitivity_members.csv``, ``sensitivity_summary.csv`` / ``.json``,
        ``sensitivity_curves.nc`` and (with ``plots``) ``sensitivity_plus1pct.png`` and
        ``sensitivity_curves.png`` into ``folder``."""
        from proda_engine.data import write_netcdf_atomic, write_text_atomic

        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        out = {"members_csv": d / "sensitivity_members.csv", "summary_csv": d / "sensitivity_summary.csv",
               "summary_json": d / "sensitivity_summary.json", "curves_nc": d / "sensitivity_curves.nc"}
        summ = self.summary()
        write_text_atomic(self.table.to_csv(index=False), out["members_csv"])
        write_text_atomic(summ.to_csv(index=False), out["summary_csv"])
        write_text_atomic(json.dumps({"attrs": {k: str(v) for k, v in self.curves.attrs.items()},
                                      "groups": json.loads(summ.to_json(orient="records"))}, indent=2),
                          out["summary_json"])
        write_netcdf_atomic(self.curves, out["curves_nc"])
        if plots:
            out["bar_png"] = plot_plus1pct(self, d / "sensitivity_plus1pct.png")
            out["curves_png"] = plot_curves(self, d / "sensitivity_curves.png")
        return out


def fit_elasticity(r: np.ndarray, y: np.ndarray, y0: float) -> dict[str, float]:
    """Least-squares ln(y/y0) = a + b ln(1 + r) and the derived effects.

    Returns ``a``, ``b``, ``plus1pct`` = y0 (1.01^b - 1) (units of y), ``change_for_double`` =
    exp((ln 2 - a)/b) - 1 and ``change_for_plus10pct`` = exp((ln 1.1 - a)/b) - 1 (relative process
    changes; NaN when b is 0 or the process did not change).
    """
    r = np.asarray(r, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(r) & np.isfinite(y) & (r > -1) & (y > 0)
    nan = float("nan")
    if ok.sum() < 2 or not y0 > 0:
        return {"a": nan, "b": nan, "plus1pct": nan, "change_for_double": nan, "change_for_plus10pct": nan}
    x = np.log1p(r[ok])
    t = np.log(y[ok] / y0)
    if np.ptp(x) < 1e-12:
        return {"a": nan, "b": nan, "plus1pct": nan, "change_for_double": nan, "change_for_plus10pct": nan}
    b, a = np.polyfit(x, t, 1)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        dbl = float(np.expm1((np.log(2.0) - a) / b)) if abs(b) > 1e-12 else nan
        p10 = float(np.expm1((np.log(1.1) - a) / b)) if abs(b) > 1e-12 else nan
    return {"a": float(a), "b": float(b), "plus1pct": float(y0 * (1.01**b - 1.0)), "change_for_double": dbl,
            "change_for_plus10pct": p10}


def _member_curves(world: World, theta: np.ndarray, groups: Sequence[str], levels: np.ndarray, *,
                   grid: Grid, closure: str, chunk_size: int, cf: np.ndarray | None):
    """Per-cell stock (kg C m-2, CF corrected), turnover (yr), metric B and validity for every
    (group, level), shape (G, Q, C)."""
    C = world.n_cells
    G, Q = len(groups), len(levels)
    stock = np.full((G, Q, C), np.nan)
    tau = np.full((G, Q, C), np.nan)
    B = np.full((G, Q, C), np.nan)
    valid = np.zeros((G, Q, C), bool)
    for s in range(0, C, chunk_size):
        sl = slice(s, min(s + chunk_size, C))
        solver = CellSolver(world.cells.forcing.subset(sl).to(dtype=torch.float64), grid, closure)
        th = theta[sl]
        for gi, g in enumerate(groups):
            metric = GROUP_METRIC[g]
            for qi, q in enumerate(levels):
                if g == "NPP":
                    sol = solver.solve(th, input_scale=1.0 + q, diagnostics=(metric,))
                else:
                    key = tuple(float(q) if m == g else 0.0 for m in MECHANISMS)
                    sol = solver.solve(perturb_theta(th, key), diagnostics=(metric,))
                corr = coarse_fragment_stocks(sol.stocks, None if cf is None else cf[:, sl])
                stock[gi, qi, sl] = corr["whole"] / 1000.0
                tau[gi, qi, sl] = sol.turnover("whole")
                B[gi, qi, sl] = sol.diagnostics[metric]
                valid[gi, qi, sl] = sol.valid
    return stock, tau, B, valid


def marginal_sensitivity(world: World, params: ParameterSet | np.ndarray | xr.DataArray, *,
                         groups: Sequence[str] = MECHANISMS, levels: Sequence[float] | np.ndarray = LEVELS,
                         member_dim: str = "member", grid: Grid | None = None, closure: str | None = None,
                         chunk_size: int = 20000, coarse_fragments: bool = True,
                         cell_mask: np.ndarray | None = None) -> SensitivityResult:
    """The spec §(j) marginal sensitivity for every ensemble member (see the module docstring).

    Args:
        world: a loaded world (:func:`~proda_engine.products.gridded.load_world`).
        params: unit-interval parameter sets (anything :class:`ParameterSet` accepts except the
            default-CLM5 preset, which has no unit-interval form).
        groups: mechanism groups to perturb; levels: relative perturbations (must include 0).
        grid, closure: None: the defaults, refusing parameters recorded with another closure or
            soil grid; given explicitly: used (a warning if the parameters record another).
        cell_mask: optional (C,) bool restricting the aggregation to a region's cells.
    """
    ps = params if isinstance(params, ParameterSet) else ParameterSet(params, world, member_dim=member_dim)
    if ps.is_default:
        raise ValueError("marginal sensitivity perturbs unit-interval theta; the default-CLM5 preset has none")
    levels = np.asarray(levels, dtype=float)
    zero = np.flatnonzero(np.isclose(levels, 0.0))
    if zero.size != 1:
        raise ValueError(f"levels must contain 0 exactly once, found {levels.tolist()}")
    i0 = int(zero[0])
    unknown = set(groups) - set(MECHANISMS)
    if unknown:
        raise ValueError(f"unknown group(s) {sorted(unknown)}; expected some of {list(MECHANISMS)}")
    closure = ps.resolve_closure(closure)
    grid = ps.resolve_grid(grid)
    cf = world.coarse_fragments() if coarse_fragments else None
    area = world.cell_areas
    sel = np.ones(world.n_cells, bool) if cell_mask is None else np.asarray(cell_mask, bool)
    M, G, Q = ps.n_members, len(groups), len(levels)
    S = np.full((M, G, Q), np.nan)
    T = np.full((M, G, Q), np.nan)
    R = np.full((M, G, Q), np.nan)
    N = np.zeros((M, G), np.int64)
    rows = []
    t0 = time.perf_counter()
    for m, theta in ps.iter_members():
        stock, tau, B, valid = _member_curves(world, theta, groups, levels, grid=grid, closure=closure,
                                              chunk_size=chunk_size, cf=cf)
        for gi, g in enumerate(groups):
            # Compare like with like: only cells valid at every level of this group.
            ok = valid[gi].all(0) & sel
            N[m, gi] = int(ok.sum())
            S[m, gi] = (stock[gi][:, ok] * area[ok]).sum(1) * 1000.0 / PG
            T[m, gi] = tau[gi][:, ok].mean(1) if ok.any() else np.nan
            b0 = B[gi, i0]
            use = ok & np.isfinite(b0) & (b0 > 0) & np.isfinite(B[gi]).all(0)
            with np.errstate(divide="ignore", invalid="ignore"):
                R[m, gi] = ((B[gi][:, use] - b0[use]) / b0[use]).mean(1) if use.any() else np.nan
            fs = fit_elasticity(R[m, gi], S[m, gi], S[m, gi, i0])
            ft = fit_elasticity(R[m, gi], T[m, gi], T[m, gi, i0])
            rows.append({
                "member": int(ps.members[m]), "group": g,
                "stock_pg": S[m, gi, i0], "turnover_mean_yr": T[m, gi, i0],
                "elasticity_stock": fs["b"], "intercept_stock": fs["a"], "plus1pct_stock_pg": fs["plus1pct"],
                "change_for_double_stock": fs["change_for_double"],
                "change_for_plus10pct_stock": fs["change_for_plus10pct"],
                "elasticity_turnover": ft["b"], "intercept_turnover": ft["a"],
                "plus1pct_turnover_yr": ft["plus1pct"], "change_for_double_turnover": ft["change_for_double"],
                "change_for_plus10pct_turnover": ft["change_for_plus10pct"],
                "process_change_at_plus20pct": R[m, gi, -1], "n_cells": N[m, gi],
            })
    import pandas as pd

    curves = xr.Dataset(
        {
            "stock": (("member", "group", "level"), S, {"units": "Pg C", "long_name":
                                                         "global whole-profile SOC (coarse-fragment corrected)"}),
            "turnover": (("member", "group", "level"), T, {"units": "yr", "long_name":
                                                            "mean bulk turnover (unweighted over valid cells)"}),
            "process_change": (("member", "group", "level"), R, {"units": "1", "long_name":
                                                                  "mean relative change of the group's bulk metric"}),
            "n_cells": (("member", "group"), N, {"long_name": "cells valid at every level"}),
        },
        coords={"member": np.asarray(ps.members), "group": list(groups),
                "level": ("level", levels, {"units": "1", "long_name": "relative perturbation q"}),
                "metric": ("group", [METRIC_LABEL[g] for g in groups])},
        attrs={"world": world.name, "parameters": ps.label, "n_members": M,
               **parameter_file_attrs(closure, grid.name, lat=world.cells.lat, lon=world.cells.lon),
               "method": "theta_i <- theta_i (1+q) in unit space (clamped); NPP scales inputs; "
                         "ln(S/S0) = a + b ln(1+R)",
               "seconds": round(time.perf_counter() - t0, 2), "solves_per_member": G * (Q - 1) + 1},
    )
    return SensitivityResult(curves=curves, table=pd.DataFrame(rows))


# -------------------------------------------------------------------------------------------------
# Figures
# -------------------------------------------------------------------------------------------------
def plot_plus1pct(res: SensitivityResult, path: str | PathLike) -> Path:
    """Bar chart of the +1 % effects on the global stock (Pg C) and mean turnover (yr), mean +- s.d."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = res.summary()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = [f"{g}\n({m})" for g, m in zip(s["group"], s["metric"])]
    for ax, col, unit, title in ((axes[0], "plus1pct_stock_pg", "Pg C", "SOC stock"),
                                 (axes[1], "plus1pct_turnover_yr", "yr", "mean turnover")):
        v = s[f"{col}_mean"].to_numpy(float)
        e = np.nan_to_num(s[f"{col}_sd"].to_numpy(float))
        ax.bar(labels, v, yerr=e, color=["#1b9e77" if x >= 0 else "#d95f02" for x in v], capsize=3)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylabel(f"change for +1 % of the bulk process ({unit})")
        ax.set_title(f"{title} ({res.curves.attrs.get('world', '')}, {int(res.curves.attrs.get('n_members', 1))} "
                     f"member(s))")
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def plot_curves(res: SensitivityResult, path: str | PathLike) -> Path:
    """Response curves: S(q)/S(0) and T(q)/T(0) against 1 + R(q) (log-log), median with the
    16th-84th percentile band over members."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = res.curves
    i0 = int(np.argmin(np.abs(c["level"].values)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    colors = plt.get_cmap("tab10")
    for ax, var, title in ((axes[0], "stock", "global SOC stock"), (axes[1], "turnover", "mean turnover")):
        for gi, g in enumerate(c["group"].values):
            x = 1.0 + c["process_change"].values[:, gi, :]
            y = c[var].values[:, gi, :] / c[var].values[:, gi, i0:i0 + 1]
            xm, ym = np.nanmedian(x, 0), np.nanmedian(y, 0)
            ax.plot(xm, ym, "o-", ms=3, color=colors(gi), label=f"{g} ({c['metric'].values[gi]})")
            if x.shape[0] > 1:
                ax.fill_between(xm, np.nanpercentile(y, 16, 0), np.nanpercentile(y, 84, 0), color=colors(gi),
                                alpha=0.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("1 + R (relative change of the bulk process)")
        ax.set_ylabel(f"{title} relative to q = 0")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
