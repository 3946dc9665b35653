"""Skill metrics: definitions checked on hand-computed cases, then their statistical meaning."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from proda_engine.skill import METRIC_KEYS, depth_bin_table, fold_summary, skill_metrics


def test_perfect_prediction():
    o = np.array([0.5, 2.0, 7.0, 11.0, 30.0])
    m = skill_metrics(o, o.copy())
    assert m["r2"] == 1.0 and m["pearson_r2"] == pytest.approx(1.0) and m["r2_log"] == 1.0
    assert m["rmse"] == 0.0 and m["mae"] == 0.0 and m["bias"] == 0.0 and m["pbias"] == 0.0
    assert m["n"] == m["n_log"] == 5
    assert tuple(m) == METRIC_KEYS


def test_predicting_the_observed_mean_scores_zero():
    o = np.array([1.0, 2.0, 6.0, 11.0])
    m = skill_metrics(o, np.full(4, o.mean()))
    assert m["r2"] == pytest.approx(0.0, abs=1e-15)
    assert m["pbias"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(m["pearson_r2"])  # a constant prediction has no correlation
    # ... and predicting worse than the mean is negative.
    assert skill_metrics(o, o.mean() + 2 * (o.mean() - o))["r2"] < 0


def test_hand_computed_example():
    # obs 2 4 6 8, pred 3 3 7 9: e = 1 -1 1 1, SS_res = 4, mean(obs) = 5, SS_tot = 9+1+1+9 = 20.
    m = skill_metrics([2.0, 4.0, 6.0, 8.0], [3.0, 3.0, 7.0, 9.0])
    assert m["r2"] == pytest.approx(1 - 4 / 20)
    assert m["rmse"] == pytest.approx(1.0) and m["mae"] == pytest.approx(1.0)
    assert m["bias"] == pytest.approx(0.5)
    assert m["pbias"] == pytest.approx(100 * 2 / 20)  # sum(pred - obs) = 2, sum(obs) = 20
    # Pearson: do = -3 -1 1 3, dp = -2.5 -2.5 1.5 3.5; sum do*dp = 22, sum do^2 = 20, sum dp^2 = 27.
    assert m["pearson_r2"] == pytest.approx(22**2 / (20 * 27))
    assert m["pearson_r2"] >= m["r2"]


def test_log_space_r2_by_hand():
    e = math.e
    # ln obs = 0 1 2; ln pred = 0 2 2 -> SS_res = 1, SS_tot = 2.
    assert skill_metrics([1.0, e, e**2], [1.0, e**2, e**2])["r2_log"] == pytest.approx(0.5)
    # ln pred = the mean of ln obs -> 0.
    assert skill_metrics([1.0, e, e**2], [e, e, e])["r2_log"] == pytest.approx(0.0, abs=1e-15)
    # Non-positive values are left out of the log metrics only.
    m = skill_metrics([0.0, 1.0, e, e**2], [1.0, 1.0, e**2, e**2])
    assert m["n"] == 4 and m["n_log"] == 3 and m["r2_log"] == pytest.approx(0.5)


def test_pbias_sign_positive_when_the_model_is_too_high():
    o = np.array([3.0, 5.0, 10.0, 20.0])
    hi, lo = skill_metrics(o, 1.1 * o), skill_metrics(o, 0.8 * o)
    assert hi["pbias"] == pytest.approx(10.0) and hi["bias"] > 0
    assert lo["pbias"] == pytest.approx(-20.0) and lo["bias"] < 0
    # A proportional error is perfectly correlated but does not have r2 = 1.
    assert lo["pearson_r2"] == pytest.approx(1.0) and lo["r2"] < 1.0


def test_non_finite_pairs_are_left_out_and_shapes_must_match():
    m = skill_metrics([1.0, 2.0, np.nan, 4.0, 5.0], [1.0, 2.0, 3.0, np.inf, 5.0])
    assert m["n"] == 3 and m["r2"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        skill_metrics([1.0, 2.0], [1.0, 2.0, 3.0])


def test_undefined_metrics_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = skill_metrics([], [])
        const = skill_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
        zero_sum = skill_metrics([-1.0, 1.0], [0.0, 0.0])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in METRIC_KEYS if k not in ("n", "n_log"))
    assert math.isnan(const["r2"]) and math.isnan(const["pearson_r2"]) and const["rmse"] > 0
    assert math.isnan(zero_sum["pbias"])


def test_r2_estimates_one_minus_noise_to_signal_variance(rng):
    # pred = obs + independent noise: r2 -> 1 - var(noise) / var(obs) = 1 - 1/4; Pearson r^2 -> 4/5.
    o = rng.normal(10.0, 2.0, 200_000)
    p = o + rng.normal(0.0, 1.0, o.size)
    m = skill_metrics(o, p)
    assert m["r2"] == pytest.approx(0.75, abs=0.01)
    assert m["pearson_r2"] == pytest.approx(0.8, abs=0.01)
    assert m["rmse"] == pytest.approx(1.0, abs=0.01)
    assert m["mae"] == pytest.approx(math.sqrt(2 / math.pi), abs=0.01)  # E|N(0,1)|
    # Multiplicative log-normal error: r2_log -> 1 - 0.3^2 / 0.6^2.
    lo = rng.normal(1.0, 0.6, 200_000)
    m = skill_metrics(np.exp(lo), np.exp(lo + rng.normal(0.0, 0.3, lo.size)))
    assert m["r2_log"] == pytest.approx(0.75, abs=0.01)


def test_depth_bins_take_each_layer_once_with_closed_upper_edges():
    depth = np.array([0.0, 0.1, 0.3, 0.31, 1.0, 1.2, 3.0])
    obs = np.array([10.0, 8.0, 6.0, 5.0, 3.0, 2.0, 1.0])
    pred = np.array([11.0, 8.0, 5.0, 5.0, 3.5, 2.0, 1.5])
    t = depth_bin_table(obs, pred, depth)
    assert list(t.index) == ["0-30 cm", "30-100 cm", ">100 cm"]
    assert list(t["n"]) == [3, 2, 2]  # 0 and 0.3 in the first bin, 1.0 in the second
    assert t["n"].sum() == depth.size
    for (_, row), (lo, hi), sel in zip(t.iterrows(), ((0.0, 0.3), (0.3, 1.0), (1.0, np.inf)),
                                       ([0, 1, 2], [3, 4], [5, 6])):
        assert (row["depth_top_m"], row["depth_bottom_m"]) == (lo, hi)
        ref = skill_metrics(obs[sel], pred[sel])
        for k in ("rmse", "mae", "pbias", "r2"):
            assert row[k] == pytest.approx(ref[k])
    # Hand check, 0-30 cm: e = 1 0 -1 -> rmse sqrt(2/3), pbias 0.
    assert t.loc["0-30 cm", "rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert t.loc["0-30 cm", "pbias"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="equal length"):
        depth_bin_table(obs, pred, depth[:-1])


def test_fold_summary_mean_and_sample_sd():
    folds = [{"r2": 0.5, "rmse": 2.0, "n": 10, "n_log": 9},
             {"r2": 0.7, "rmse": 4.0, "n": 12, "n_log": 12},
             {"r2": float("nan"), "rmse": 3.0, "n": 1, "n_log": 1}]
    s = fold_summary(folds)
    assert s["n_folds"] == 3 and s["n"] == 23 and s["n_log"] == 22
    assert s["r2_mean"] == pytest.approx(0.6) and s["r2_sd"] == pytest.approx(math.sqrt(0.02))  # NaN fold ignored
    assert s["rmse_mean"] == pytest.approx(3.0) and s["rmse_sd"] == pytest.approx(1.0)  # ddof = 1
    one = fold_summary([skill_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])])
    assert one["r2_mean"] == pytest.approx(0.5) and math.isnan(one["r2_sd"])
