"""Covariate-category importance by randomisation (spec §(m) "Permutation importance").

Covariates are grouped into five categories (texture, chemistry, climate, vegetation, geography).
For each category and repeat, **all** of its columns are replaced at **all** sites by a single
U(0, 1) draw in min-max-scaled space (so a raw column gets min + u (max - min); a categorical
column gets one category drawn from those observed); this is a randomisation, not a true
permutation. The predictor is re-run and, for each mechanism group (A, Tau = K, Xi, V, I), the
Pearson r between prediction and target, pooled over the group's parameters and all sites, is
divided by the benchmark r of the intact table. Mean and s.d. of that ratio over repeats are
reported: a ratio near 1 means the category does not matter for the group.

This is the model-agnostic form: any ``predict(table) -> theta (N, 21)`` works (a trained network
ensemble's mean, a regression, an analytic test function). For models of
:mod:`proda_engine.learning` (encoded inputs, one-hot categories) see
:func:`proda_engine.learning.permutation_importance`, which randomises in the encoded space.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from proda_engine.parameters import GROUPS

#: Mechanism groups of the test (K labelled "Tau" as in the original), 0-based parameter indices.
IMPORTANCE_GROUPS: dict[str, tuple[int, ...]] = {("Tau" if g == "K" else g): idx for g, idx in GROUPS.items()}

#: Category membership by covariate-name pattern (spec §(m) table); matched case-sensitively
#: against the world's covariate names (e.g. ``Clay_Content_30cm`` -> texture).
CATEGORY_PATTERNS: dict[str, tuple[str, ...]] = {
    "texture": (r"^Bulk_Density", r"^Clay_Content", r"^Coarse_Fragments", r"^Sand_Content", r"^Silt_Content",
                r"^Texture_USDA", r"^USDA_Suborder", r"^WRB_Subgroup"),
    "chemistry": (r"^CEC", r"^Garde_Acid", r"^pH_Water", r"^SWC_v_Wilting_Point"),
    "climate": (r"^BIO\d+$", r"^Koppen_Climate"),
    "vegetation": (r"^ESA_Land_Cover$", r"^cesm2_npp$", r"^cesm2_npp_std$", r"^cesm2_vegc$"),
    "geography": (r"^Lon$", r"^Lat$", r"^Abs_Depth_to_Bedrock$", r"^Occurrence_R_Horizon$", r"^nbedrock$",
                  r"^Elevation$"),
}
#: Categorical covariates (codes, not magnitudes) of the world's covariate table.
CATEGORICAL: tuple[str, ...] = ("ESA_Land_Cover", "Garde_Acid", "Texture_USDA_0cm", "Texture_USDA_30cm",
                                "Texture_USDA_100cm", "USDA_Suborder", "WRB_Subgroup", "Koppen_Climate_2018")


def default_categories(names: Iterable[str]) -> dict[str, list[str]]:
    """Assign covariate names to the five categories by :data:`CATEGORY_PATTERNS`; unmatched names
    (e.g. ``continent``, ``cell_area``: not network inputs) are left out."""
    names = list(names)
    return {cat: [n for n in names if any(re.search(p, n) for p in pats)] for cat, pats in CATEGORY_PATTERNS.items()}


def _pooled_r(pred: np.ndarray, target: np.ndarray) -> float:
    a, b = np.asarray(pred, float).ravel(), np.asarray(target, float).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _group_r(pred: np.ndarray, target: np.ndarray, idx: Sequence[int], pool: str) -> float:
    if pool == "flatten":
        return _pooled_r(pred[:, list(idx)], target[:, list(idx)])
    rs = [_pooled_r(pred[:, i], target[:, i]) for i in idx]
    return float(np.nanmean(rs)) if np.isfinite(rs).any() else float("nan")


def category_importance(predict: Callable[[Any], np.ndarray], table: Any, *, targets: np.ndarray | None = None,
                        categories: Mapping[str, Sequence[str]] | None = None, n_repeats: int = 1000,
                        seed: int = 0, categorical: Iterable[str] = CATEGORICAL, pool: str = "flatten",
                        groups: Mapping[str, Sequence[int]] = IMPORTANCE_GROUPS):
    """Randomisation test of covariate categories (see the module docstring).

    Args:
        predict: ``predict(table) -> (N, 21)`` unit-interval parameters; receives a copy of the table
            (pandas DataFrame) with one category randomised.
        table: covariate table (pandas DataFrame or mapping of equal-length columns), raw units.
        targets: (N, 21) targets (e.g. MCMC posterior means); default the benchmark prediction
            itself (then the benchmark r is 1 and the ratio is the correlation with it).
        categories: category -> covariate names; default :func:`default_categories` of the columns.
        n_repeats: draws per category (1,000 in the original).
        categorical: columns treated as categories (a random observed value instead of a U(0, 1) draw).
        pool: ``"flatten"`` pools the group's parameters into one correlation (spec); ``"mean"``
            averages per-parameter correlations (insensitive to differences between parameter means).

    Returns:
        pandas DataFrame with columns category, group, n_covariates, benchmark_r, ratio_mean, ratio_sd.
    """
    import pandas as pd

    if pool not in ("flatten", "mean"):
        raise ValueError(f"pool must be 'flatten' or 'mean', found {pool!r}")
    df = table.copy() if isinstance(table, pd.DataFrame) else pd.DataFrame({k: np.asarray(v) for k, v in table.items()})
    categories = dict(categories) if categories is not None else default_categories(df.columns)
    cats = set(categorical)
    missing = sorted({c for cols in categories.values() for c in cols} - set(df.columns))
    if missing:
        raise ValueError(f"categories name covariates absent from the table: {missing}")
    base = np.asarray(predict(df.copy()), dtype=float)
    if base.ndim != 2 or base.shape[0] != len(df):
        raise ValueError(f"predict: expected an (N, 21) array for N = {len(df)} rows, found shape {base.shape}")
    y = base if targets is None else np.asarray(targets, dtype=float)
    r0 = {g: _group_r(base, y, idx, pool) for g, idx in groups.items()}
    lo = {c: float(np.nanmin(df[c].to_numpy(float))) for c in df.columns if c not in cats}
    hi = {c: float(np.nanmax(df[c].to_numpy(float))) for c in df.columns if c not in cats}
    levels = {c: pd.unique(df[c].dropna()) for c in df.columns if c in cats}
    rng = np.random.default_rng(seed)
    rows = []
    for cat, cols in categories.items():
        ratios = {g: np.full(n_repeats, np.nan) for g in groups}
        if cols:
            for rep in range(n_repeats):
                x = df.copy()
                u = rng.uniform()  # one draw for the whole category (the original's randomisation)
                for c in cols:
                    if c in cats:
                        x[c] = levels[c][rng.integers(len(levels[c]))] if len(levels[c]) else np.nan
                    else:
                        x[c] = lo[c] + u * (hi[c] - lo[c])
                p = np.asarray(predict(x), dtype=float)
                for g, idx in groups.items():
                    ratios[g][rep] = _group_r(p, y, idx, pool) / r0[g]
        for g in groups:
            v = ratios[g]
            fin = v[np.isfinite(v)]
            rows.append({"category": cat, "group": g, "n_covariates": len(cols), "benchmark_r": r0[g],
                         "ratio_mean": float(fin.mean()) if fin.size else float("nan"),
                         "ratio_sd": float(fin.std(ddof=1)) if fin.size > 1 else float("nan")})
    return pd.DataFrame(rows)


def covariate_table_at_cells(fields, cells: np.ndarray, names: Sequence[str] | None = None):
    """The world's covariates at the given flat (lat, lon) cell indices as a pandas DataFrame
    (default: every covariate assigned to a category)."""
    import pandas as pd

    names = list(names) if names is not None else [n for cols in default_categories(fields.data_vars).values()
                                                   for n in cols]
    return pd.DataFrame({n: np.asarray(fields[n].values, dtype=float).reshape(-1)[cells] for n in names})
