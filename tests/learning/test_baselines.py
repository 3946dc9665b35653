"""ML baseline (covariates + depth -> SOC): learns a known relation, back-transforms to the mean,
is seeded, encodes categories, and refuses missing values loudly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from proda_engine.learning.baselines import DEPTH_FEATURE, MLBaseline, fit_ml_baseline
from proda_engine.skill import skill_metrics

A, B, C = 3.0, 1.2, 0.08  # ln SOC = A - B depth + C x  (SOC in kg C m-3, depth in m)


def _layers(rng, n_sites, n_layers=4, noise=0.0, lc_effect=None):
    """One row per layer: site covariates repeated, mid-depths 0.05..1.5 m, ln SOC target."""
    x = rng.uniform(0.0, 20.0, n_sites)
    other = rng.normal(0.0, 1.0, n_sites)  # an irrelevant covariate
    lc = rng.choice(["forest", "grass", "crop"], n_sites)
    site = np.repeat(np.arange(n_sites), n_layers)
    depth = np.sort(rng.uniform(0.05, 1.5, (n_sites, n_layers)), axis=1).ravel()
    X = pd.DataFrame({"x": x[site], "other": other[site], "lc": lc[site]})
    log_soc = A - B * depth + C * X["x"].to_numpy()
    if lc_effect is not None:
        log_soc = log_soc + X["lc"].map(lc_effect).to_numpy()
    log_soc = log_soc + rng.normal(0.0, noise, log_soc.size) if noise else log_soc
    return X, depth, log_soc, site


@pytest.mark.parametrize("kind", ["random_forest", "gradient_boosting"])
def test_learns_a_known_depth_and_covariate_relation(rng, kind):
    X, depth, y, _ = _layers(rng, 400)
    X = X[["x", "other"]]  # the relevant covariate and an irrelevant one
    train, test = np.arange(300 * 4), np.arange(300 * 4, 400 * 4)  # held-out sites
    m = fit_ml_baseline(X.iloc[train], depth[train], y[train], kind=kind)
    assert isinstance(m, MLBaseline) and m.kind == kind
    s = skill_metrics(np.exp(y[test]), m.predict(X.iloc[test], depth[test]))
    s_log = skill_metrics(y[test], m.predict_log(X.iloc[test], depth[test]))
    assert s["r2"] > 0.9 and s_log["r2"] > 0.9
    # Noise-free data: held-out log residuals are small, so the smearing factor is close to 1.
    assert m.smearing == pytest.approx(1.0, abs=0.02)
    # The fitted surface has the right signs: deeper -> less carbon, larger x -> more.
    row = X.iloc[[0, 0]]
    assert np.diff(m.predict(row, np.array([0.1, 1.2])))[0] < 0
    hi_x = row.assign(x=[2.0, 18.0])
    assert np.diff(m.predict(hi_x, np.array([0.3, 0.3])))[0] > 0


@pytest.mark.parametrize("kind", ["random_forest", "gradient_boosting"])
def test_smearing_back_transform_removes_the_log_normal_bias(rng, kind):
    # ln SOC has N(0, 0.5^2) noise: exp(E[ln y]) is the median, which is below the mean by
    # 1 - exp(-0.5^2 / 2) = 11.75 %. Duan smearing should bring held-out PBIAS back to ~0.
    sigma = 0.5
    X, depth, y, _ = _layers(rng, 1500, noise=sigma)
    train, test = np.arange(1000 * 4), np.arange(1000 * 4, 1500 * 4)
    obs = np.exp(y[test])
    mean_model = fit_ml_baseline(X.iloc[train], depth[train], y[train], categorical=["lc"], kind=kind,
                                 params={"n_estimators": 150} if kind == "random_forest" else None)
    median_model = fit_ml_baseline(X.iloc[train], depth[train], y[train], categorical=["lc"], kind=kind,
                                   back_transform="median",
                                   params={"n_estimators": 150} if kind == "random_forest" else None)
    pb_mean = skill_metrics(obs, mean_model.predict(X.iloc[test], depth[test]))["pbias"]
    pb_median = skill_metrics(obs, median_model.predict(X.iloc[test], depth[test]))["pbias"]
    # Tolerances: PBIAS of 2000 log-normal layers has a sampling s.d. of ~1.2 %, and held-out
    # residuals also carry the learner's own error, so smearing over-corrects by a few %.
    assert abs(pb_mean) < 4.0
    assert pb_median < -7.0
    # Same seed, same learner: the two back-transforms differ only by the factor.
    np.testing.assert_allclose(mean_model.predict_log(X.iloc[test], depth[test]),
                               median_model.predict_log(X.iloc[test], depth[test]))
    assert mean_model.smearing == pytest.approx(np.exp(sigma**2 / 2), rel=0.06)
    assert mean_model.residual_sd == pytest.approx(sigma, rel=0.15)
    assert median_model.smearing == 1.0
    assert mean_model.info["residual_source"] == ("out_of_bag" if kind == "random_forest" else "kfold")


def test_grouped_smearing_holds_out_whole_sites(rng):
    X, depth, y, site = _layers(rng, 150, noise=0.3)
    m = fit_ml_baseline(X, depth, y, categorical=["lc"], groups=site, params={"n_estimators": 60})
    assert m.info["residual_source"] == "group_kfold" and m.info["n_sites"] == 150
    assert m.smearing > 1.0
    with pytest.raises(ValueError, match="groups"):
        fit_ml_baseline(X, depth, y, categorical=["lc"], groups=site[:-1])


def test_deterministic_for_a_seed(rng):
    X, depth, y, _ = _layers(rng, 100, noise=0.2)
    kw = {"categorical": ["lc"], "params": {"n_estimators": 40}}
    a = fit_ml_baseline(X, depth, y, seed=3, **kw).predict(X, depth)
    b = fit_ml_baseline(X, depth, y, seed=3, n_jobs=2, **kw).predict(X, depth)
    c = fit_ml_baseline(X, depth, y, seed=4, **kw).predict(X, depth)
    np.testing.assert_allclose(a, b, rtol=1e-12)  # threads change only the summation order of the trees
    assert not np.array_equal(a, c)
    g1 = fit_ml_baseline(X, depth, y, kind="gradient_boosting", seed=5, categorical=["lc"]).predict(X, depth)
    g2 = fit_ml_baseline(X, depth, y, kind="gradient_boosting", seed=5, categorical=["lc"]).predict(X, depth)
    np.testing.assert_array_equal(g1, g2)


def test_categorical_covariates_are_one_hot_and_their_effect_is_learned(rng):
    effect = {"forest": 0.6, "grass": 0.0, "crop": -0.4}
    X, depth, y, _ = _layers(rng, 600, lc_effect=effect)
    m = fit_ml_baseline(X, depth, y, categorical=["lc"])
    assert m.feature_names == ["x", "other", "lc=crop", "lc=forest", "lc=grass", DEPTH_FEATURE]
    # Same site covariates and depth, only the land cover differs: the log difference is the effect.
    row = pd.DataFrame({"x": [10.0] * 3, "other": [0.0] * 3, "lc": ["forest", "grass", "crop"]})
    ln = m.predict_log(row, np.full(3, 0.4))
    assert ln[0] - ln[1] == pytest.approx(0.6, abs=0.15)
    assert ln[2] - ln[1] == pytest.approx(-0.4, abs=0.15)
    # Integer class codes are categories too (one-hot, no order); an unseen level is counted, not fatal.
    Xk = X.assign(lc=X["lc"].map({"forest": 3, "grass": 7, "crop": 12}))
    mk = fit_ml_baseline(Xk, depth, y, categorical=["lc"], params={"n_estimators": 30})
    assert [f for f in mk.feature_names if f.startswith("lc=")] == ["lc=3", "lc=7", "lc=12"]
    new = Xk.iloc[:5].assign(lc=[3, 99, 99, 7, 12.0])
    assert mk.unseen_categories(new) == {"lc": 2}
    assert np.isfinite(mk.predict(new, depth[:5])).all()
    # A text column not declared categorical is refused.
    with pytest.raises(TypeError, match="'lc'"):
        fit_ml_baseline(X, depth, y)


def test_missing_values_are_refused_naming_column_and_row(rng):
    X, depth, y, _ = _layers(rng, 30)
    X.index = [f"L{i}" for i in range(len(X))]
    bad = X.copy()
    bad.loc["L17", "x"] = np.nan
    bad.loc["L20", "x"] = np.nan
    with pytest.raises(ValueError, match=r"column 'x' at row 17 \(index label 'L17'\); 2 of 120 rows"):
        fit_ml_baseline(bad, depth, y, categorical=["lc"])
    bad_lc = X.copy()
    bad_lc.loc["L4", "lc"] = None
    with pytest.raises(ValueError, match=r"column 'lc' at row 4 \(index label 'L4'\)"):
        fit_ml_baseline(bad_lc, depth, y, categorical=["lc"])
    d = depth.copy()
    d[9] = np.nan
    with pytest.raises(ValueError, match=r"'depth_m' at row 9"):
        fit_ml_baseline(X, d, y, categorical=["lc"])
    t = y.copy()
    t[2] = -np.inf  # ln 0
    with pytest.raises(ValueError, match=r"'log_soc_target' at row 2"):
        fit_ml_baseline(X, depth, t, categorical=["lc"])
    m = fit_ml_baseline(X, depth, y, categorical=["lc"], params={"n_estimators": 20})
    with pytest.raises(ValueError, match=r"column 'x' at row 17"):
        m.predict(bad, depth)


def test_inputs_are_checked(rng):
    X, depth, y, _ = _layers(rng, 30)
    with pytest.raises(ValueError, match="depth_m"):
        fit_ml_baseline(X.assign(depth_m=1.0), depth, y, categorical=["lc"])
    with pytest.raises(ValueError, match="rows"):
        fit_ml_baseline(X.iloc[:-1], depth, y, categorical=["lc"])
    with pytest.raises(KeyError, match="soil"):
        fit_ml_baseline(X, depth, y, categorical=["soil"])
    with pytest.raises(ValueError, match="kind"):
        fit_ml_baseline(X, depth, y, categorical=["lc"], kind="svm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        fit_ml_baseline(X, -depth, y, categorical=["lc"])
    m = fit_ml_baseline(X, depth, y, categorical=["lc"], params={"n_estimators": 20})
    with pytest.raises(KeyError, match="'other'"):
        m.predict(X.drop(columns="other"), depth)
