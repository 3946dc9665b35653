"""Vectorised MCMC engine (spec §(l)): statistical recovery first, then control logic."""

from __future__ import annotations

import numpy as np
import pytest

from proda_engine.inference.mcmc import (
    STATUS_FAILED,
    STATUS_OK,
    MCMCConfig,
    batched_cholesky,
    run_mcmc,
)

SMALL = {"n_test": 200, "n_formal": 600, "progress": False, "mode": "none", "min_test_accepts": 0}


def linear_gaussian(n_sites: int, d: int, k: int = 8, seed: int = 0):
    """Per site y = G θ + noise, data exactly at the truth μ (well inside the box), flat prior on the
    box: the posterior is N(μ, σ² (GᵀG)⁻¹) (truncation negligible), scaled so that sd ≈ 0.05."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n_sites, k, d))
    mu = rng.uniform(0.35, 0.65, size=(n_sites, d))
    p = np.einsum("ski,skj->sij", g, g)
    s2 = 0.05**2 / np.mean([np.mean(np.diag(np.linalg.inv(p[i]))) for i in range(n_sites)])
    y = np.einsum("skd,sd->sk", g, mu)
    cov = np.linalg.inv(p / s2)

    def cost_fn(theta: np.ndarray, site: np.ndarray):
        pred = np.einsum("nkd,nd->nk", g[site], theta)
        return ((pred - y[site]) ** 2).sum(axis=1) / (2 * s2), pred

    return cost_fn, mu, np.sqrt(np.einsum("sii->si", cov)), y


def gaussian_cost(mu: float, sd: float):
    def cost_fn(theta: np.ndarray, site: np.ndarray) -> np.ndarray:
        return 0.5 * (((theta - mu) / sd) ** 2).sum(axis=1)

    return cost_fn


# ---------------------------------------------------------------- statistical recovery
def test_recovers_linear_gaussian_posterior_for_many_sites():
    n_sites, d = 8, 3
    cost_fn, mu, sd, y = linear_gaussian(n_sites, d)
    cfg = MCMCConfig(n_test=1000, n_formal=4000, seed=3, progress=False, mode="gev")
    res = run_mcmc(cost_fn, n_sites, cfg, n_params=d, obs=y)
    assert (res.status == STATUS_OK).all() and res.reason_counts() == {}
    z = (res.mean - mu) / sd
    assert np.abs(z).max() < 0.3  # Monte-Carlo error ~0.05 sd at this chain length
    ratio = res.sd / sd
    assert 0.8 < ratio.min() and ratio.max() < 1.2
    assert 0.93 < ratio.mean() < 1.07
    assert (res.rhat < 1.1).all() and res.rhat_ok.all()
    assert ((res.acceptance > 0.1) & (res.acceptance < 0.5)).all()
    assert np.abs(res.mode - mu).max() < 0.5 * sd.max()  # symmetric posterior: mode ~ mean
    assert (res.chosen_chain >= 0).all() and np.isfinite(res.chain_rmse).all()


def test_log_tempering_sharpens_the_posterior():
    """ln(t+2) is ~8 over the second half of a 4000-step formal run, so the sd shrinks by about
    1/sqrt(8) ≈ 0.35: the original's 'posterior' is much narrower than the Bayesian one."""
    n_sites, d = 4, 3
    cost_fn, mu, sd, y = linear_gaussian(n_sites, d, seed=1)
    cfg = MCMCConfig(n_test=1000, n_formal=4000, seed=5, progress=False, mode="none", tempering="log",
                     min_test_accepts=0)
    res = run_mcmc(cost_fn, n_sites, cfg, n_params=d, obs=y)
    assert (res.status == STATUS_OK).all()
    assert (res.sd / sd).max() < 0.6
    assert np.abs((res.mean - mu) / sd).max() < 0.3


def test_original_configuration_runs_with_legacy_bookkeeping():
    cfg = MCMCConfig.original(**SMALL)
    assert cfg.tempering == "log" and cfg.posterior == "accepted" and cfg.scale_mode == "s_over_d"
    res = run_mcmc(gaussian_cost(0.5, 0.05), 3, cfg, n_params=3)
    assert (res.status == STATUS_OK).all()
    assert np.all(res.sd < 0.05)  # tempered
    assert np.abs(res.mean - 0.5).max() < 0.05


# ---------------------------------------------------------------- acceptance control and failures
def test_bad_large_scale_triggers_low_acceptance_restarts_and_counted_failure():
    # adapt_start = n_formal: no adaptation, so the acceptance rate is set by s alone.
    cfg = MCMCConfig(scale_s=30.0, max_restarts=2, adapt_start=600, **SMALL)
    res = run_mcmc(gaussian_cost(0.5, 0.02), 2, cfg, n_params=2)
    assert (res.status == STATUS_FAILED).all()
    assert res.reason_counts() == {"acceptance rate below 0.1 after 2 restarts": 6}
    assert (res.n_restarts == 3).all()
    np.testing.assert_allclose(res.scale_s, 30.0 * 0.7**3)
    assert res.to_dataset()["status"].values.tolist() == [STATUS_FAILED] * 2
    # a milder mistake is repaired by the same control: s shrinks until the rate is in the window
    ok = run_mcmc(gaussian_cost(0.5, 0.02), 2, MCMCConfig(**(SMALL | {"scale_s": 10.0, "adapt_start": 600,
                                                                      "max_restarts": 5})), n_params=2)
    assert (ok.status == STATUS_OK).all() and (ok.n_restarts >= 1).all()
    np.testing.assert_allclose(ok.scale_s, 10.0 * 0.7**ok.n_restarts)


def test_flat_cost_triggers_high_acceptance_failure():
    cfg = MCMCConfig(max_restarts=1, **SMALL)
    res = run_mcmc(lambda th, site: np.zeros(len(th)), 2, cfg, n_params=2)
    assert res.reason_counts() == {"acceptance rate above 0.5 after 1 restarts": 6}
    np.testing.assert_allclose(res.scale_s, 2.4 * 2.0**2)


def test_small_scale_recovers_after_doubling():
    res = run_mcmc(gaussian_cost(0.5, 0.05), 3, MCMCConfig(scale_s=0.3, **SMALL), n_params=3)
    assert (res.status == STATUS_OK).all()
    assert (res.n_restarts >= 1).all()
    np.testing.assert_allclose(res.scale_s, 0.3 * 2.0**res.n_restarts)
    assert ((res.acceptance >= 0.1) & (res.acceptance <= 0.5)).all()


def test_test_run_check_shrinks_steps_then_fails_clean_but_disables_in_legacy():
    strict = SMALL | {"min_test_accepts": 10**6, "max_restarts": 2}
    res = run_mcmc(gaussian_cost(0.5, 0.05), 2, MCMCConfig(**strict), n_params=3)
    assert res.reason_counts() == {"test run: fewer than 1000000 accepts after 2 step reductions": 6}
    np.testing.assert_allclose(res.step_a, 5.0 * 1.1**2)
    legacy = run_mcmc(gaussian_cost(0.5, 0.05), 2, MCMCConfig(legacy=True, **strict), n_params=3)
    assert (legacy.status == STATUS_OK).all()  # third failure: a reset to 5, check disabled
    assert (legacy.n_test_retries == 3).all() and np.all(legacy.step_a == 5.0)


def test_failed_evaluations_are_rejected_and_counted():
    def truncated(theta: np.ndarray, site: np.ndarray) -> np.ndarray:
        j = gaussian_cost(0.55, 0.05)(theta, site)
        j[theta[:, 0] > 0.6] = np.nan  # e.g. a singular solve
        return j

    res = run_mcmc(truncated, 2, MCMCConfig(keep_samples=True, **SMALL), n_params=2)
    assert (res.status == STATUS_OK).all()
    assert (res.n_failed_proposals > 0).all()
    assert np.nanmax(res.samples[..., 0]) <= 0.6
    assert res.samples.shape == (2, 3, res.samples.shape[2], 2)


def test_site_with_failed_initial_cost_is_flagged_not_fatal():
    def cost_fn(theta: np.ndarray, site: np.ndarray) -> np.ndarray:
        j = gaussian_cost(0.5, 0.05)(theta, site)
        j[site == 1] = np.inf
        return j

    res = run_mcmc(cost_fn, 3, MCMCConfig(**SMALL), n_params=2)
    assert res.status.tolist() == [STATUS_OK, STATUS_FAILED, STATUS_OK]
    assert res.reason[1] == "initial cost not finite (theta0 evaluation failed)"
    assert np.isnan(res.mean[1]).all() and np.isfinite(res.mean[[0, 2]]).all()


# ---------------------------------------------------------------- determinism
def test_same_seed_same_result_and_batching_invariance():
    n_sites, d = 6, 3
    cost_fn, _, _, y = linear_gaussian(n_sites, d, seed=2)
    cfg = MCMCConfig(**(SMALL | {"mode": "gev"}), seed=11)
    a = run_mcmc(cost_fn, n_sites, cfg, n_params=d, obs=y)
    b = run_mcmc(cost_fn, n_sites, cfg, n_params=d, obs=y)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.mode, b.mode)

    def subset(idx: np.ndarray):
        return lambda theta, site: cost_fn(theta, idx[site])

    parts = [np.array([4, 0]), np.array([1, 2, 3, 5])]
    for idx in parts:
        r = run_mcmc(subset(idx), idx.size, cfg, n_params=d, obs=y[idx], site_ids=idx)
        for field in ("mean", "sd", "mode", "rhat", "acceptance", "chosen_chain", "n_accepted"):
            np.testing.assert_array_equal(getattr(r, field), getattr(a, field)[idx], err_msg=field)

    c = run_mcmc(cost_fn, n_sites, MCMCConfig(**(SMALL | {"mode": "gev"}), seed=12), n_params=d, obs=y)
    assert not np.array_equal(a.mean, c.mean)


# ---------------------------------------------------------------- config, storage, output
def test_config_validation_and_from_dict():
    cfg = MCMCConfig.from_dict({"n_chains": 2, "accept_window": [0.15, 0.5]})
    assert cfg.accept_window == (0.15, 0.5)
    assert MCMCConfig().adapt_start_resolved == 4000
    assert MCMCConfig(n_formal=1000).adapt_start_resolved == 100
    with pytest.raises(ValueError, match="unknown"):
        MCMCConfig.from_dict({"n_chain": 2})
    for bad in ({"tempering": "exp"}, {"accept_window": (0.6, 0.5)}, {"burn_in": 1.0}, {"n_formal": 1}):
        with pytest.raises(ValueError):
            MCMCConfig(**bad)
    assert MCMCConfig.from_dict(cfg.to_dict()) == cfg


def test_accepted_posterior_mode_and_dataset_output():
    cfg = MCMCConfig(**(SMALL | {"posterior": "accepted", "keep_samples": True}), seed=1)
    res = run_mcmc(gaussian_cost(0.5, 0.05), 2, cfg)  # default D = 21, table names
    assert (res.status == STATUS_OK).all()
    # accepted-only storage, first half of the accepted samples discarded
    assert (res.n_samples <= res.n_accepted // 2 + 1).all() and (res.n_samples > 0).all()
    ds = res.to_dataset()
    assert dict(ds.sizes) == {"site": 2, "parameter": 21, "chain": 3}
    assert ds["parameter"].values[2] == "q10"
    assert ds["mean"].attrs["units"] == "1"


def test_batched_cholesky_jitter_fallback():
    good = np.array([[2.0, 0.5], [0.5, 1.0]])
    singular = np.array([[1.0, 1.0], [1.0, 1.0]])
    chol, n_fix = batched_cholesky(np.stack([good, singular]))
    assert n_fix == 1
    np.testing.assert_allclose(chol[0] @ chol[0].T, good)
    np.testing.assert_allclose(chol[1] @ chol[1].T, singular, atol=1e-6)


# ---------------------------------------------------------------- wiring to the physics solver
def test_site_cost_fn_on_a_twin_world_and_short_mcmc():
    from proda_engine.grid import get_grid
    from proda_engine.inference.likelihood import ObservationBatch, model_at_obs
    from proda_engine.inference.site_da import make_site_cost_fn
    from proda_engine.physics import solve_theta
    from proda_engine.physics.testing import random_forcing, random_theta

    g = get_grid()
    rng = np.random.default_rng(0)
    n_sites = 3
    forcing = random_forcing(rng, n_sites, g, regimes=False)
    truth = random_theta(rng, n_sites, 0.3, 0.7)
    depth = np.array([[0.05, 0.2, 0.5, 1.0, np.nan]] * n_sites)
    mask = np.isfinite(depth)
    soc = model_at_obs(solve_theta(truth, forcing, g).soc, g.z_node, depth, mask)
    obs = ObservationBatch(np.arange(n_sites), depth, soc, mask)
    cost_fn = make_site_cost_fn(forcing, obs, g)
    j, pred = cost_fn(truth, np.arange(n_sites))
    np.testing.assert_allclose(j, 0.0, atol=1e-20)
    assert pred.shape == (n_sites, 5) and np.isnan(pred[:, 4]).all()
    j_mid, _ = cost_fn(np.full((n_sites, 21), 0.5), np.arange(n_sites))
    assert (j_mid > 0).all()

    cfg = MCMCConfig(n_test=20, n_formal=40, progress=False, mode="none", min_test_accepts=0,
                     accept_window=(0.0, 1.0), seed=7)
    res = run_mcmc(cost_fn, n_sites, cfg, obs=obs.soc)
    assert (res.status == STATUS_OK).all() and np.isfinite(res.chain_rmse).all()
    # one site alone, same id -> same per-site result as in the batch of three
    one = run_mcmc(make_site_cost_fn(forcing.subset([2]), obs.subset([2]), g), 1, cfg, obs=obs.soc[[2]],
                   site_ids=[2])
    np.testing.assert_allclose(one.mean[0], res.mean[2], rtol=1e-12)
