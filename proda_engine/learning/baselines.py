"""A pure machine-learning baseline for measured SOC profiles: covariates + depth -> SOC density.

The process-guided model predicts SOC through the CLM5 matrix model; this baseline asks how far a
flexible regression gets *without* the physics, on the same observed layers and the same
cross-validation folds. One row per observed layer: the site's covariates plus the layer's
mid-depth (m) as an extra feature ``depth_m``; the target is ``ln`` SOC density.

* **Learners** (scikit-learn, seeded, ``n_jobs`` threads):

  - ``"random_forest"``: ``RandomForestRegressor(n_estimators=300, min_samples_leaf=3,
    max_features=0.33, bootstrap=True)`` — the usual digital-soil-mapping baseline;
  - ``"gradient_boosting"``: ``HistGradientBoostingRegressor(max_iter=500, learning_rate=0.05,
    min_samples_leaf=20)`` with early stopping on a seeded 10 % of the rows (20 rounds without
    improvement): without it the boosting fits the noise, and that error also inflates the
    smearing factor below.

  ``params=`` overrides any of these keyword arguments.
* **Covariate encoding** (:class:`~proda_engine.learning.features.FeatureEncoder`, the same as the
  parameter network's): numeric columns are min–max scaled with the fit table's statistics (a
  monotone map, so trees split exactly as on raw values); columns named in ``categorical`` are
  **one-hot** encoded over the levels seen at fit time (features ``"col=level"``: no artificial
  order between, e.g., land-cover codes). A level unseen at fit time becomes an all-zero one-hot
  (logged; count them with :meth:`MLBaseline.unseen_categories`). A non-numeric column not listed
  in ``categorical`` is refused.
* **Missing values are refused**, never imputed or dropped silently: a NaN / None covariate, depth
  or target raises ``ValueError`` naming the column, the first offending row (position and index
  label) and how many rows are affected. Callers drop those rows beforehand and count them.
* **Back-transform from log** (``back_transform=``). The learner predicts ``E[ln y | x]``, so
  ``exp`` of it is the conditional **median** of a log-normal-ish SOC and underestimates the mean
  by ``1 - exp(-σ²/2)`` (12 % for σ = 0.5), which shows up as a negative PBIAS. The default
  ``"smearing"`` applies Duan's (1983) smearing estimator of the mean::

      ŷ = exp(ln-prediction) · S,   S = mean_i exp(r_i),

  with held-out log residuals ``r_i``: out-of-bag predictions for the random forest (free), 5-fold
  cross-validated predictions for gradient boosting. In-sample residuals would give S ≈ 1 because
  the learners nearly interpolate their training data. With ``groups=`` (site id per row) both
  learners use grouped 5-fold CV instead, so the layers of a site are held out together (more
  honest, 5 extra fits). ``back_transform="median"`` returns ``exp(ln-prediction)`` (S = 1).

Example
-------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> X = pd.DataFrame({"t": rng.uniform(0, 20, 400), "lc": rng.choice(["forest", "grass"], 400)})
>>> depth = rng.uniform(0.05, 1.5, 400)
>>> log_soc = 3.0 - 1.5 * depth - 0.05 * X["t"].to_numpy() + 0.5 * (X["lc"] == "forest")
>>> m = fit_ml_baseline(X, depth, log_soc, categorical=["lc"], params={"n_estimators": 50})
>>> m.feature_names
['t', 'lc=forest', 'lc=grass', 'depth_m']
>>> m.predict(X.iloc[:2], depth[:2]).shape
(2,)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from threadpoolctl import threadpool_limits

from proda_engine.learning.features import FeatureEncoder

log = logging.getLogger(__name__)

Kind = Literal["random_forest", "gradient_boosting"]
BackTransform = Literal["smearing", "median"]

#: Name of the depth feature appended to the covariates (layer mid-depth, m).
DEPTH_FEATURE = "depth_m"
#: Default hyperparameters per learner (override with ``params=``).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "random_forest": {"n_estimators": 300, "min_samples_leaf": 3, "max_features": 0.33, "bootstrap": True},
    "gradient_boosting": {"max_iter": 500, "learning_rate": 0.05, "min_samples_leaf": 20,
                          "early_stopping": True, "validation_fraction": 0.1, "n_iter_no_change": 20},
}
#: Folds of the cross-validated residuals behind the smearing factor (when not out-of-bag).
SMEARING_FOLDS = 5


@dataclass
class MLBaseline:
    """A fitted baseline: encoder + learner + log back-transform. Build it with :func:`fit_ml_baseline`.

    Attributes:
        kind: ``"random_forest"`` or ``"gradient_boosting"``.
        estimator: the fitted scikit-learn regressor (inputs: :attr:`feature_names`; output: ln SOC).
        encoder: covariate encoder fitted on the training rows.
        back_transform: ``"smearing"`` (mean, Duan) or ``"median"``.
        smearing: the factor :meth:`predict` applies after ``exp``: Duan's ``S = mean exp(r)`` over
            held-out log residuals ``r`` for ``"smearing"``, exactly 1.0 for ``"median"``.
        residual_sd: standard deviation of the log residuals (ln units): held-out ones for
            ``"smearing"``, in-sample ones (optimistic) for ``"median"``; see ``info["residual_source"]``.
        n_jobs: threads used to predict.
        info: settings and provenance (seed, hyperparameters, rows, residual source).
    """

    kind: Kind
    estimator: Any
    encoder: FeatureEncoder
    back_transform: BackTransform
    smearing: float
    residual_sd: float
    n_jobs: int = 1
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        """Learner inputs in order: encoded covariates (numeric, then one-hots), then ``depth_m``."""
        return [*self.encoder.feature_names, DEPTH_FEATURE]

    def predict_log(self, X_sites: pd.DataFrame, depth_m: ArrayLike) -> np.ndarray:
        """(N,) predicted ``ln`` SOC (the conditional mean of the log, i.e. the log of the median)."""
        table, d = _validate(X_sites, self.encoder.columns or [], self.encoder.categorical, depth_m)
        x = _design(self.encoder, table, d)
        with threadpool_limits(self.n_jobs):
            return np.asarray(self.estimator.predict(x), dtype=float)

    def predict(self, X_sites: pd.DataFrame, depth_m: ArrayLike) -> np.ndarray:
        """(N,) predicted SOC density, same units as the target before the log.

        ``exp(predict_log) * smearing`` for ``back_transform="smearing"`` (estimate of the mean),
        ``exp(predict_log)`` for ``"median"``. Rows: one per layer, covariates of its site in
        ``X_sites`` (the fit columns; extra columns are ignored), mid-depth in ``depth_m`` (m).
        """
        factor = self.smearing if self.back_transform == "smearing" else 1.0
        return np.exp(self.predict_log(X_sites, depth_m)) * factor

    def unseen_categories(self, X_sites: pd.DataFrame) -> dict[str, int]:
        """Categorical column -> rows of ``X_sites`` whose level was not seen at fit time."""
        out = {}
        for c, levels in self.encoder.categories.items():
            known = {_level_key(v) for v in levels}
            n = sum(_level_key(v) not in known for v in X_sites[c].tolist())
            if n:
                out[c] = int(n)
        return out


def _level_key(v: Any) -> Any:
    v = v.item() if isinstance(v, np.generic) else v
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _missing(values: Any) -> np.ndarray:
    """(N,) True for NaN / None / pd.NA, and for +-inf in numeric columns."""
    bad = np.array(pd.isna(values), dtype=bool)  # a copy: pandas may hand out a read-only view
    arr = np.asarray(values)
    if arr.dtype.kind in "fc":
        bad |= ~np.isfinite(arr)
    return bad


def _refuse_missing(name: str, values: Any, labels: Sequence[Any], what: str) -> None:
    bad = _missing(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what} has a missing value (NaN/None/inf) in column {name!r} at row {i} "
                         f"(index label {labels[i]!r}); {int(bad.sum())} of {bad.size} rows are missing "
                         f"{name!r}. Drop rows with missing values before the ML baseline (and count them).")


def _validate(X_sites: Any, columns: Sequence[str], categorical: Sequence[str], depth_m: ArrayLike
              ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Check shapes, refuse missing values; return the covariate columns as arrays and the depths.

    Numeric columns (including pandas nullable and bool dtypes) become float64; categorical
    columns keep their values (object array), whatever their dtype.
    """
    if not isinstance(X_sites, pd.DataFrame):
        raise TypeError(f"X_sites must be a pandas DataFrame (one row per layer), found {type(X_sites).__name__}")
    d = np.asarray(depth_m, dtype=float)
    if d.ndim != 1:
        raise ValueError(f"depth_m must be 1-D (one mid-depth per layer, m), found shape {d.shape}")
    if len(X_sites) != d.size:
        raise ValueError(f"X_sites has {len(X_sites)} rows but depth_m has {d.size}: one row per observed layer")
    absent = [c for c in columns if c not in X_sites.columns]
    if absent:
        raise KeyError(f"X_sites lacks the covariate columns {absent}")
    labels = X_sites.index.tolist()
    table: dict[str, np.ndarray] = {}
    for c in columns:
        col = X_sites[c]
        _refuse_missing(c, col, labels, "X_sites")
        if c not in categorical and pd.api.types.is_numeric_dtype(col.dtype):
            table[c] = col.to_numpy(dtype=float)
        else:
            table[c] = col.to_numpy(dtype=object) if c in categorical else col.to_numpy()
    _refuse_missing(DEPTH_FEATURE, d, labels, "depth_m")
    if (d < 0).any():
        i = int(np.flatnonzero(d < 0)[0])
        raise ValueError(f"depth_m must be >= 0 m (positive downward), found {d[i]} at row {i}")
    return table, d


def _design(encoder: FeatureEncoder, table: Mapping[str, np.ndarray], d: np.ndarray) -> np.ndarray:
    """Encoded covariates with the depth appended: (N, n_features) float64 (inputs already validated)."""
    enc = encoder.transform(table)
    if enc.index.size != d.size:  # cannot happen after _validate; guards the encoder contract
        raise RuntimeError("the covariate encoder dropped rows")
    return np.column_stack([enc.x, d])


def _estimator(kind: Kind, seed: int, n_jobs: int, params: Mapping[str, Any] | None, oob: bool) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

    kw = {**DEFAULT_PARAMS[kind], **(params or {})}
    if kind == "random_forest":
        if oob:
            kw["oob_score"] = True
        return RandomForestRegressor(random_state=seed, n_jobs=n_jobs, **kw)
    return HistGradientBoostingRegressor(random_state=seed, **kw)


def _heldout_log_residuals(kind: Kind, x: np.ndarray, y: np.ndarray, fitted: Any, seed: int, n_jobs: int,
                           params: Mapping[str, Any] | None, groups: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Log residuals ``y - ŷ`` with ``ŷ`` not fitted on the row itself, and where they came from."""
    if kind == "random_forest" and groups is None:
        pred = np.asarray(fitted.oob_prediction_, dtype=float)
        return y - pred, "out_of_bag"
    from sklearn.model_selection import GroupKFold, KFold

    if groups is not None:
        n_groups = np.unique(groups).size
        if n_groups < 2:
            raise ValueError("groups= needs at least 2 distinct sites for the smearing cross-validation")
        splitter: Any = GroupKFold(n_splits=min(SMEARING_FOLDS, n_groups))
        splits, source = splitter.split(x, y, groups), "group_kfold"
    else:
        splitter = KFold(n_splits=min(SMEARING_FOLDS, y.size), shuffle=True, random_state=seed)
        splits, source = splitter.split(x), "kfold"
    pred = np.empty_like(y)
    for tr, te in splits:
        est = _estimator(kind, seed, n_jobs, params, oob=False).fit(x[tr], y[tr])
        pred[te] = est.predict(x[te])
    return y - pred, source


def fit_ml_baseline(X_sites: pd.DataFrame, depth_m: ArrayLike, log_soc_target: ArrayLike, *,
                    categorical: Sequence[str] = (), kind: Kind = "random_forest", seed: int = 0,
                    n_jobs: int = 1, back_transform: BackTransform = "smearing",
                    params: Mapping[str, Any] | None = None, groups: ArrayLike | None = None) -> MLBaseline:
    """Fit the ML baseline on observed layers (see the module docstring for the method).

    Args:
        X_sites: (N, n_covariates) one row per observed layer: the covariates of the layer's site
            (every column is used; names must not include ``depth_m``).
        depth_m: (N,) layer mid-depth, m (>= 0, positive downward).
        log_soc_target: (N,) natural log of the observed SOC density (e.g. ln kg C m-3);
            :meth:`MLBaseline.predict` returns SOC in the same units before the log.
        categorical: columns to one-hot encode (levels seen at fit time).
        kind: ``"random_forest"`` (default) or ``"gradient_boosting"``.
        seed: seeds the learner and the smearing folds (same inputs + seed -> same model).
        n_jobs: threads for fitting and predicting.
        back_transform: ``"smearing"`` (default; Duan mean) or ``"median"``.
        params: keyword overrides of :data:`DEFAULT_PARAMS` for the scikit-learn estimator.
        groups: optional (N,) site id per row; the smearing residuals then come from grouped 5-fold
            cross-validation (a site's layers held out together) instead of out-of-bag / row folds.

    Returns:
        :class:`MLBaseline`. Raises ``ValueError`` naming the column and row of the first missing
        covariate, depth or target, ``TypeError`` for a non-numeric column not listed in
        ``categorical``, ``KeyError`` for unknown column names.
    """
    if kind not in DEFAULT_PARAMS:
        raise ValueError(f"kind must be one of {sorted(DEFAULT_PARAMS)}, found {kind!r}")
    if back_transform not in ("smearing", "median"):
        raise ValueError(f"back_transform must be 'smearing' or 'median', found {back_transform!r}")
    if not isinstance(X_sites, pd.DataFrame):
        raise TypeError(f"X_sites must be a pandas DataFrame (one row per layer), found {type(X_sites).__name__}")
    columns = [str(c) for c in X_sites.columns]
    if DEPTH_FEATURE in columns:
        raise ValueError(f"X_sites already has a column {DEPTH_FEATURE!r}; pass layer depths as depth_m only")
    categorical = [str(c) for c in categorical]
    absent = [c for c in categorical if c not in columns]
    if absent:
        raise KeyError(f"categorical columns {absent} are not columns of X_sites")
    table, d = _validate(X_sites, columns, categorical, depth_m)
    y = np.asarray(log_soc_target, dtype=float)
    if y.shape != d.shape:
        raise ValueError(f"log_soc_target must have one value per layer ({d.size}), found shape {y.shape}")
    _refuse_missing("log_soc_target", y, X_sites.index.tolist(), "log_soc_target")
    if y.size < 2 * SMEARING_FOLDS:
        raise ValueError(f"need at least {2 * SMEARING_FOLDS} layers to fit the ML baseline, found {y.size}")
    g = None
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != y.shape:
            raise ValueError(f"groups must have one entry per row ({y.size}), found shape {g.shape}")
    encoder = FeatureEncoder(categorical=categorical, scaling="minmax", columns=columns).fit(table)
    x = _design(encoder, table, d)
    oob = kind == "random_forest" and g is None and back_transform == "smearing"
    with threadpool_limits(n_jobs):
        est = _estimator(kind, seed, n_jobs, params, oob=oob).fit(x, y)
        if back_transform == "smearing":
            resid, source = _heldout_log_residuals(kind, x, y, est, seed, n_jobs, params, g)
        else:
            resid, source = y - est.predict(x), "in_sample"
    resid = resid[np.isfinite(resid)]
    smearing = float(np.mean(np.exp(resid))) if back_transform == "smearing" else 1.0
    residual_sd = float(resid.std(ddof=1)) if resid.size > 1 else float("nan")
    info = {"seed": int(seed), "params": {**DEFAULT_PARAMS[kind], **(params or {})}, "n_rows": int(y.size),
            "n_features": int(x.shape[1]), "categorical": categorical, "residual_source": source,
            "n_sites": int(np.unique(g).size) if g is not None else None}
    log.info("ML baseline %s: %d rows, %d features, smearing %.3f (%s residual s.d. %.3f)", kind, y.size,
             x.shape[1], smearing, source, residual_sd)
    return MLBaseline(kind=kind, estimator=est, encoder=encoder, back_transform=back_transform, smearing=smearing,
                      residual_sd=residual_sd, n_jobs=int(n_jobs), info=info)
