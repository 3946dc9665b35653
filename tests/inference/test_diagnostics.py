"""R-hat, ESS and GEV mode (spec §(l) post-processing)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from proda_engine.inference.diagnostics import effective_sample_size, gelman_rubin, gev_mode, kde_mode


def test_gelman_rubin_matches_hand_formula_and_detects_shift():
    rng = np.random.default_rng(0)
    chains = [rng.normal(size=(500, 2)) for _ in range(3)]
    r = gelman_rubin(chains)
    x = np.stack(chains)  # (C, n, D)
    c, n = x.shape[:2]
    means = x.mean(axis=1)
    b = n / (c - 1) * ((means - means.mean(axis=0)) ** 2).sum(axis=0)
    w = ((x - means[:, None]) ** 2).sum(axis=(0, 1)) / (c * (n - 1))
    np.testing.assert_allclose(r, np.sqrt(((n - 1) / n * w + b / n) / w))
    assert (r < 1.02).all()
    chains[0] = chains[0] + 1.0
    assert (gelman_rubin(chains) > 1.1).all()


def test_gelman_rubin_unequal_lengths_standard_vs_legacy():
    rng = np.random.default_rng(1)
    chains = [rng.normal(size=n) for n in (300, 400, 200)]
    std = gelman_rubin(chains)
    assert std == pytest.approx(gelman_rubin([c[-200:] for c in chains]))  # truncated to the common n
    leg = gelman_rubin(chains, legacy=True)  # n from the last chain, all draws kept
    means = np.array([c.mean() for c in chains])
    n = 200
    b = n / 2 * ((means - means.mean()) ** 2).sum()
    w = sum(((c - c.mean()) ** 2).sum() for c in chains) / (3 * (n - 1))
    assert leg == pytest.approx(np.sqrt(((n - 1) / n * w + b / n) / w))
    with pytest.raises(ValueError):
        gelman_rubin([chains[0]])


def test_effective_sample_size_ar1():
    rng = np.random.default_rng(2)
    n, phi = 40000, 0.8
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    expected = n * (1 - phi) / (1 + phi)
    assert effective_sample_size(x) == pytest.approx(expected, rel=0.15)
    iid = rng.normal(size=(5000, 2))
    np.testing.assert_allclose(effective_sample_size(iid), 5000, rtol=0.15)


@pytest.mark.parametrize("k", [-0.2, 0.0, 0.2])
def test_gev_mode_recovers_analytic_mode(k):
    rng = np.random.default_rng(3)
    mu, sigma = 0.5, 0.05
    x = stats.genextreme(-k, mu, sigma).rvs(4000, random_state=rng)  # scipy's c = -k
    expected = mu if k == 0 else mu + sigma * ((1 + k) ** (-k) - 1) / k
    mode, fallback = gev_mode(x, return_flag=True)
    assert not fallback
    assert mode == pytest.approx(expected, abs=0.15 * sigma)


def test_gev_mode_normal_samples_and_fallback_flag():
    rng = np.random.default_rng(4)
    x = rng.normal(0.4, 0.05, size=(3000, 3))
    modes, flags = gev_mode(x, return_flag=True)
    np.testing.assert_allclose(modes, 0.4, atol=0.02)
    assert not flags.any()
    m, fb = gev_mode(np.full(50, 0.3), return_flag=True)  # degenerate: no fit possible, flagged
    assert fb and m == pytest.approx(0.3)
    assert kde_mode(rng.normal(0.2, 0.01, 2000)) == pytest.approx(0.2, abs=0.005)
