"""Skill of predicted against measured SOC: pooled, per depth bin, and over cross-validation folds.

Pure functions on arrays; nothing here knows about models or files. Pairs where either value is not
finite are left out (and not counted in ``n``). Argument order is ``(obs, pred)`` everywhere in
this module (:func:`~proda_engine.inference.likelihood.pooled_metrics` takes ``(model, obs)``).

With observations ``o_i``, predictions ``p_i``, residuals ``e_i = p_i - o_i`` and means ``ō, p̄``
over the ``n`` finite pairs:

=============== ======================================================================================
key             definition
=============== ======================================================================================
``n``           number of finite (obs, pred) pairs used
``r2``          coefficient of determination ``1 - SS_res / SS_tot``, ``SS_res = Σ e²``,
                ``SS_tot = Σ (o - ō)²`` (about the mean of the *observations*). 1 = perfect, 0 = no
                better than predicting ``ō`` everywhere, negative = worse. Identical to the
                Nash–Sutcliffe efficiency, so no separate ``nse`` key is returned.
``pearson_r2``  squared Pearson correlation ``cov(o, p)² / (var o · var p)``: how well a *linear
                rescaling* of the predictions would do; insensitive to bias and scale, so
                ``pearson_r2 >= r2`` always.
``rmse``        ``sqrt(mean e²)``, same units as the inputs (callers pass kg C m-3)
``mae``         ``mean |e|``, same units as the inputs
``bias``        ``mean e = p̄ - ō``, same units as the inputs (positive = model too high)
``pbias``       percent bias ``100 · Σ (p - o) / Σ o``, %. **Sign: positive = model too high**
                (over-estimates the observed total), negative = too low. NaN if ``Σ o = 0``.
``r2_log``      ``r2`` of ``ln p`` against ``ln o`` over the pairs with ``o > 0`` and ``p > 0``
                (SOC density is roughly log-normal: a few carbon-rich layers dominate ``r2``,
                ``r2_log`` weights relative errors equally)
``n_log``       number of pairs used by ``r2_log``
=============== ======================================================================================

Undefined values (``SS_tot = 0``, a constant prediction for ``pearson_r2``, ``n = 0``) are NaN,
never a warning or a division by zero.

Example
-------
>>> m = skill_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
>>> round(m["r2"], 6), round(m["pbias"], 4), m["n"]
(0.5, 16.6667, 3)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

#: Metric keys returned by :func:`skill_metrics`, in table order.
METRIC_KEYS: tuple[str, ...] = ("n", "r2", "pearson_r2", "rmse", "mae", "bias", "pbias", "r2_log", "n_log")
#: Default depth bins of :func:`depth_bin_table`, m (the evaluation's 0–30 cm, 30–100 cm, > 1 m).
DEFAULT_DEPTH_BINS: tuple[tuple[float, float], ...] = ((0.0, 0.3), (0.3, 1.0), (1.0, float("inf")))

_NAN = float("nan")


def _pairs(obs: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    o = np.asarray(obs, dtype=float)
    p = np.asarray(pred, dtype=float)
    if o.shape != p.shape:
        raise ValueError(f"obs and pred must have the same shape, found {o.shape} and {p.shape}")
    o, p = o.ravel(), p.ravel()
    ok = np.isfinite(o) & np.isfinite(p)
    return o[ok], p[ok]


def _ratio(a: float, b: float) -> float:
    return a / b if b != 0 else _NAN


def _r2(o: np.ndarray, p: np.ndarray) -> float:
    if o.size == 0:
        return _NAN
    ss_tot = float(((o - o.mean()) ** 2).sum())
    return 1.0 - _ratio(float(((p - o) ** 2).sum()), ss_tot) if ss_tot > 0 else _NAN


def _pearson_r2(o: np.ndarray, p: np.ndarray) -> float:
    if o.size < 2:
        return _NAN
    do, dp = o - o.mean(), p - p.mean()
    var_o, var_p = float((do**2).sum()), float((dp**2).sum())
    if var_o <= 0 or var_p <= 0:
        return _NAN
    return float((do * dp).sum()) ** 2 / (var_o * var_p)


def skill_metrics(obs: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """Pooled skill of ``pred`` against ``obs`` (see the module docstring for every key).

    Args:
        obs: observed values (any shape; e.g. SOC density, kg C m-3).
        pred: predictions, same shape and units.

    Returns:
        dict with :data:`METRIC_KEYS`: ``n`` and ``n_log`` as int, the rest as float (NaN where
        undefined). ``pbias`` is in %, positive when the model is too high.

    >>> skill_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])["r2"]   # predicting the observed mean
    0.0
    """
    o, p = _pairs(obs, pred)
    n = int(o.size)
    if n == 0:
        return {k: (0 if k in ("n", "n_log") else _NAN) for k in METRIC_KEYS}
    e = p - o
    pos = (o > 0) & (p > 0)
    return {
        "n": n,
        "r2": _r2(o, p),
        "pearson_r2": _pearson_r2(o, p),
        "rmse": float(np.sqrt((e**2).mean())),
        "mae": float(np.abs(e).mean()),
        "bias": float(e.mean()),
        "pbias": 100.0 * _ratio(float(e.sum()), float(o.sum())),
        "r2_log": _r2(np.log(o[pos]), np.log(p[pos])),
        "n_log": int(pos.sum()),
    }


def _bin_label(lo: float, hi: float) -> str:
    def cm(v: float) -> str:
        return f"{v * 100:g}"

    return f">{cm(lo)} cm" if not np.isfinite(hi) else f"{cm(lo)}-{cm(hi)} cm"


def depth_bin_table(obs: ArrayLike, pred: ArrayLike, depth_m: ArrayLike,
                    bins: Sequence[tuple[float, float]] = DEFAULT_DEPTH_BINS) -> pd.DataFrame:
    """:func:`skill_metrics` per depth bin, one row per bin.

    A layer (mid-depth ``d``, m) belongs to bin ``(lo, hi)`` when ``lo < d <= hi``; the first bin
    also takes ``d == lo`` (so a layer at 0.3 m is in 0–30 cm, as in :mod:`proda_engine.evaluation`).
    Overlapping bins count a layer in each; layers outside every bin are in no row.

    Args:
        obs, pred: (N,) observed and predicted values (e.g. kg C m-3).
        depth_m: (N,) layer mid-depth, m.
        bins: ``(lo, hi)`` pairs in m; ``hi`` may be ``inf``.

    Returns:
        DataFrame with one row per bin, index ``bin`` (label such as ``"0-30 cm"``, ``">100 cm"``),
        columns ``depth_top_m``, ``depth_bottom_m`` and every key of :data:`METRIC_KEYS`.
    """
    o = np.asarray(obs, dtype=float).ravel()
    p = np.asarray(pred, dtype=float).ravel()
    d = np.asarray(depth_m, dtype=float).ravel()
    if not (o.size == p.size == d.size):
        raise ValueError(f"obs, pred and depth_m must have equal length, found {o.size}, {p.size}, {d.size}")
    rows = []
    for i, (lo, hi) in enumerate(bins):
        if not lo < hi:
            raise ValueError(f"depth bin {(lo, hi)} must have lo < hi")
        inside = (d > lo) & (d <= hi)
        if i == 0:
            inside |= d == lo
        rows.append({"bin": _bin_label(lo, hi), "depth_top_m": float(lo), "depth_bottom_m": float(hi),
                     **skill_metrics(o[inside], p[inside])})
    return pd.DataFrame(rows, columns=["bin", "depth_top_m", "depth_bottom_m", *METRIC_KEYS]).set_index("bin")


def fold_summary(metrics: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Mean and standard deviation of each metric over cross-validation folds.

    For every numeric key ``k`` of the fold dicts (e.g. from :func:`skill_metrics`) the result has
    ``k_mean`` and ``k_sd`` (sample s.d., ``ddof = 1``; NaN with a single fold), computed over the
    folds where ``k`` is finite (a fold with an undefined ``r2`` does not drag the mean to NaN);
    count keys ``n`` and ``n_log`` are **summed** into ``n`` / ``n_log`` instead. ``n_folds`` is
    the number of dicts. This is the mean of per-fold skill; the pooled skill of all out-of-fold
    predictions is :func:`skill_metrics` on their concatenation (both are worth reporting).

    >>> s = fold_summary([{"r2": 0.5, "n": 10}, {"r2": 0.7, "n": 12}])
    >>> round(s["r2_mean"], 6), round(s["r2_sd"], 6), s["n"], s["n_folds"]
    (0.6, 0.141421, 22, 2)
    """
    folds = list(metrics)
    out: dict[str, float] = {"n_folds": len(folds)}
    keys: list[str] = []
    for f in folds:
        keys += [k for k in f if k not in keys]
    for k in keys:
        vals = [f[k] for f in folds if k in f]
        if not all(isinstance(v, int | float | np.integer | np.floating) for v in vals):
            continue
        if k in ("n", "n_log"):
            out[k] = int(sum(int(v) for v in vals))
            continue
        v = np.asarray(vals, dtype=float)
        v = v[np.isfinite(v)]
        out[f"{k}_mean"] = float(v.mean()) if v.size else _NAN
        out[f"{k}_sd"] = float(v.std(ddof=1)) if v.size > 1 else _NAN
    return out
