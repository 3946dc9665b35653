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

The solves run on the what-if engine (``space="theta"``, its cached operator pieces shared across
levels), in batches of cells so memory stays bounded on the global grid. They are kept per cell
(:class:`CellCurves`), so one set of 61 solves per member serves every region and depth interval:
``proda sensitivity --region ... --depth ...`` and the dashboard's bars (``api.sensitivity``) aggregate
the same curves with the same code (:func:`sensitivity_from_curves`).
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
    INTERVALS,
    GridWorld,
    ParameterSet,
    coarse_fragment_stocks,
)
from proda_engine.products.regions import PG, TOTALS_CONVENTION
from proda_engine.products.whatif import MECHANISM_LABELS, MECHANISMS, WhatIfEngine

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

    def write(self, folder: str | PathLike) -> dict[str, Path]:
        """Write ``sensitivity_members.csv``, ``sensitivity_summary.csv`` / ``.json`` and
        ``sensitivity_curves.nc`` into ``folder`` (the figures: :func:`proda_engine.plot.write_sensitivity_figures`)."""
        from proda_engine.data.writers import write_csv_atomic, write_product, write_text_atomic

        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        out = {"members_csv": d / "sensitivity_members.csv", "summary_csv": d / "sensitivity_summary.csv",
               "summary_json": d / "sensitivity_summary.json", "curves_nc": d / "sensitivity_curves.nc"}
        summ = self.summary()
        write_csv_atomic(self.table, out["members_csv"], index=False)
        write_csv_atomic(summ, out["summary_csv"], index=False)
        write_text_atomic(json.dumps({"attrs": {k: str(v) for k, v in self.curves.attrs.items()},
                                      "groups": json.loads(summ.to_json(orient="records"))}, indent=2),
                          out["summary_json"])
        write_product(self.curves, out["curves_nc"])
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


@dataclass
class CellCurves:
    """Per-cell results of the spec's perturbation levels for one parameter set (one member).

    Region and depth are chosen afterwards (:func:`sensitivity_from_curves`), so one set of solves
    serves every region and depth interval.

    Attributes:
        groups, levels: the perturbed groups and the relative levels q.
        raw: (G, Q, 4, C) float32 fine-earth SOC stock per depth interval (kg C m-2), NaN where invalid.
        metric: (G, Q, C) float32 the group's bulk metric B.
        cin: (C,) the unperturbed carbon input C_in (g C m-2 yr-1).
    """

    groups: tuple[str, ...]
    levels: np.ndarray
    raw: np.ndarray
    metric: np.ndarray
    cin: np.ndarray


def cell_curves(engine: WhatIfEngine, source: str, *, groups: Sequence[str] = MECHANISMS,
                levels: Sequence[float] | np.ndarray = LEVELS) -> CellCurves:
    """Solve every (group, level) of the spec's theta-space perturbation with the what-if engine.

    theta_i <- theta_i (1 + q) in unit space, clamped (``space="theta"``); NPP scales the inputs.
    """
    levels = np.asarray(levels, dtype=float)
    C = engine.forcing.n_cells
    G, Q = len(groups), len(levels)
    raw = np.full((G, Q, len(INTERVALS), C), np.nan, np.float32)
    metric = np.full((G, Q, C), np.nan, np.float32)
    for gi, g in enumerate(groups):
        for qi, q in enumerate(levels):
            res = engine.cell_results(source, {g: float(q)} if q else None, space="theta")
            for di, d in enumerate(INTERVALS):
                raw[gi, qi, di] = res.raw_stocks[d]
            metric[gi, qi] = res.diagnostics[GROUP_METRIC[g]]
    cin = engine.forcing.inputs.sum(0).numpy().astype(float)
    return CellCurves(tuple(groups), levels, raw, metric, cin)


def world_cell_curves(world: GridWorld, theta: np.ndarray, *, grid: Grid, closure: str, chunk_size: int = 20000,
                      groups: Sequence[str] = MECHANISMS,
                      levels: Sequence[float] | np.ndarray = LEVELS) -> CellCurves:
    """:func:`cell_curves` for every cell of a world, ``chunk_size`` cells per engine (bounded memory)."""
    parts = []
    C = world.n_cells
    for s in range(0, C, chunk_size):
        sl = slice(s, min(s + chunk_size, C))
        forcing = world.cells.forcing.subset(sl).to(dtype=torch.float64)
        eng = WhatIfEngine(None, {"member": theta[sl]}, grid=grid, closure=closure, cache_size=2,
                           cells=(forcing, world.cells.cells[sl], world.cells.lat, world.cells.lon))
        parts.append(cell_curves(eng, "member", groups=groups, levels=levels))
    return CellCurves(tuple(groups), np.asarray(levels, float), np.concatenate([p.raw for p in parts], -1),
                      np.concatenate([p.metric for p in parts], -1), np.concatenate([p.cin for p in parts]))


def sensitivity_from_curves(curves: Sequence[CellCurves], *, area: np.ndarray, cf: np.ndarray | None,
                            cell_mask: np.ndarray | None = None, depth: str = "whole",
                            members: Sequence[int] | None = None,
                            attrs: dict | None = None) -> SensitivityResult:
    """Aggregate per-cell curves over a region and depth interval and fit (spec §(j) steps 4-7).

    S_G(q): area-weighted CF-corrected stock of the interval (Pg C); T_G(q): unweighted mean turnover of
    the interval (raw stock / C_in, yr); R_G(q): mean relative change of the bulk metric; all over the
    cells of the region valid at every level of the group. ``baseline_stock_pg`` is the unperturbed total
    over every cell valid at the baseline: the number ``proda map`` and the dashboard's cards report.
    """
    import pandas as pd

    if depth not in INTERVALS:
        raise ValueError(f"unknown depth interval {depth!r}; expected one of {list(INTERVALS)}")
    c0 = curves[0]
    groups, levels = c0.groups, c0.levels
    i0 = int(np.flatnonzero(np.isclose(levels, 0.0))[0])
    di = INTERVALS.index(depth)
    M, G, Q = len(curves), len(groups), len(levels)
    sel = np.ones(c0.raw.shape[-1], bool) if cell_mask is None else np.asarray(cell_mask, bool)
    members = list(range(M)) if members is None else list(members)
    S, T, R = (np.full((M, G, Q), np.nan) for _ in range(3))
    N = np.zeros((M, G), np.int64)
    rows = []
    for m, cc in enumerate(curves):
        for gi, g in enumerate(groups):
            raw = cc.raw[gi].astype(np.float64)  # (Q, 4, C)
            ok0 = np.isfinite(raw[i0, -1]) & sel  # valid at the baseline: the map's and cards' cells
            base = coarse_fragment_stocks({k: raw[i0, i, ok0] for i, k in enumerate(INTERVALS)},
                                          None if cf is None else cf[:, ok0])[depth]
            ok = np.isfinite(raw[:, -1]).all(0) & sel
            N[m, gi] = int(ok.sum())
            stocks = coarse_fragment_stocks({k: raw[:, i, ok] for i, k in enumerate(INTERVALS)},
                                            None if cf is None else cf[:, ok])
            S[m, gi] = (stocks[depth] * area[ok]).sum(1) * 1000.0 / PG
            scale = (1.0 + levels)[:, None] if g == "NPP" else np.ones((Q, 1))
            with np.errstate(divide="ignore", invalid="ignore"):
                tau = raw[:, di, ok] * 1000.0 / (cc.cin[ok][None, :] * scale)
            T[m, gi] = tau.mean(1) if ok.any() else np.nan
            B = cc.metric[gi].astype(np.float64)
            b0 = B[i0]
            use = ok & np.isfinite(b0) & (b0 > 0) & np.isfinite(B).all(0)
            with np.errstate(divide="ignore", invalid="ignore"):
                R[m, gi] = ((B[:, use] - b0[use]) / b0[use]).mean(1) if use.any() else np.nan
            fs = fit_elasticity(R[m, gi], S[m, gi], S[m, gi, i0])
            ft = fit_elasticity(R[m, gi], T[m, gi], T[m, gi, i0])
            rows.append({
                "member": int(members[m]), "group": g,
                "baseline_stock_pg": float((base * area[ok0]).sum() * 1000.0 / PG),
                "stock_pg": S[m, gi, i0], "turnover_mean_yr": T[m, gi, i0],
                "elasticity_stock": fs["b"], "intercept_stock": fs["a"], "plus1pct_stock_pg": fs["plus1pct"],
                "change_for_double_stock": fs["change_for_double"],
                "change_for_plus10pct_stock": fs["change_for_plus10pct"],
                "elasticity_turnover": ft["b"], "intercept_turnover": ft["a"],
                "plus1pct_turnover_yr": ft["plus1pct"], "change_for_double_turnover": ft["change_for_double"],
                "change_for_plus10pct_turnover": ft["change_for_plus10pct"],
                "process_change_at_plus20pct": R[m, gi, -1], "n_cells": N[m, gi],
            })
    label = "whole-profile" if depth == "whole" else depth
    curves_ds = xr.Dataset(
        {
            "stock": (("member", "group", "level"), S, {"units": "Pg C", "long_name":
                                                         f"regional {label} SOC (coarse-fragment corrected)"}),
            "turnover": (("member", "group", "level"), T, {
                "units": "yr", "long_name": f"mean {label} bulk turnover (unweighted over valid cells)"}),
            "process_change": (("member", "group", "level"), R, {"units": "1", "long_name":
                                                                  "mean relative change of the group's bulk metric"}),
            "n_cells": (("member", "group"), N, {"long_name": "cells valid at every level"}),
        },
        coords={"member": np.asarray(members), "group": list(groups),
                "level": ("level", levels, {"units": "1", "long_name": "relative perturbation q"}),
                "metric": ("group", [METRIC_LABEL[g] for g in groups])},
        attrs={"n_members": M, "depth": depth, "totals_convention": TOTALS_CONVENTION,
               "method": "theta_i <- theta_i (1+q) in unit space (clamped); NPP scales inputs; "
                         "ln(S/S0) = a + b ln(1+R)", **(attrs or {})},
    )
    return SensitivityResult(curves=curves_ds, table=pd.DataFrame(rows))


def marginal_sensitivity(world: GridWorld, params: ParameterSet | np.ndarray | xr.DataArray, *,
                         groups: Sequence[str] = MECHANISMS, levels: Sequence[float] | np.ndarray = LEVELS,
                         member_dim: str = "member", grid: Grid | None = None, closure: str | None = None,
                         chunk_size: int = 20000, coarse_fragments: bool = True,
                         cell_mask: np.ndarray | None = None, depth: str = "whole",
                         region_label: str = "Globe") -> SensitivityResult:
    """The spec §(j) marginal sensitivity for every ensemble member (see the module docstring).

    Args:
        world: a loaded world (:func:`~proda_engine.products.gridded.load_grid_world`).
        params: unit-interval parameter sets (anything :class:`ParameterSet` accepts except the
            default-CLM5 preset, which has no unit-interval form).
        groups: mechanism groups to perturb; levels: relative perturbations (must include 0).
        grid, closure: None: the defaults, refusing parameters recorded with another closure or
            soil grid; given explicitly: used (a warning if the parameters record another).
        cell_mask: optional (C,) bool restricting the aggregation to a region's cells (``region_label``
            names it); depth: the stock interval (the spec: ``whole``).
    """
    ps = params if isinstance(params, ParameterSet) else ParameterSet(params, world, member_dim=member_dim)
    if ps.is_default:
        raise ValueError("marginal sensitivity perturbs unit-interval theta; the default-CLM5 preset has none")
    levels = np.asarray(levels, dtype=float)
    if np.flatnonzero(np.isclose(levels, 0.0)).size != 1:
        raise ValueError(f"levels must contain 0 exactly once, found {levels.tolist()}")
    unknown = set(groups) - set(MECHANISMS)
    if unknown:
        raise ValueError(f"unknown group(s) {sorted(unknown)}; expected some of {list(MECHANISMS)}")
    closure = ps.resolve_closure(closure)
    grid = ps.resolve_grid(grid)
    cf = world.coarse_fragments() if coarse_fragments else None
    t0 = time.perf_counter()
    curves = [world_cell_curves(world, theta, grid=grid, closure=closure, chunk_size=chunk_size, groups=groups,
                                levels=levels) for _, theta in ps.iter_members()]
    provenance = world.spec.provenance() if getattr(world, "spec", None) is not None else {"world": world.name}
    attrs = {"world": world.name, **provenance, "parameters": ps.label, "region": region_label,
             **parameter_file_attrs(closure, grid.name, lat=world.cells.lat, lon=world.cells.lon),
             "seconds": round(time.perf_counter() - t0, 2), "solves_per_member": len(groups) * (len(levels) - 1) + 1}
    return sensitivity_from_curves(curves, area=world.cell_areas, cf=cf, cell_mask=cell_mask, depth=depth,
                                   members=ps.members, attrs=attrs)
