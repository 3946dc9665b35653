"""Observation operator, weights, cost and goodness of fit (spec §(i), §(k))."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.interpolate import PchipInterpolator

from proda_engine.grid import get_grid
from proda_engine.inference.likelihood import (
    ObservationBatch,
    cost,
    depth_exp_weights,
    efficiency,
    linear_clamped,
    model_at_obs,
    pchip,
    pooled_metrics,
    r2_legacy,
    rank_weights,
    rmse,
)

W = {1.0: 10.0, 1.5: 10 * np.exp(-0.5), 2.0: 10 * np.exp(-1.0), 2.5: 10 * np.exp(-1.5), 3.0: 10 * np.exp(-2.0)}


def _scipy_rows(z, v, zq):
    return np.stack([PchipInterpolator(z, v[i], extrapolate=True)(zq[i]) for i in range(v.shape[0])])


# ---------------------------------------------------------------- PCHIP
@pytest.mark.parametrize("kind", ["monotone", "nonmonotone", "flat_pieces"])
def test_pchip_equals_scipy_including_extrapolation(kind):
    rng = np.random.default_rng(42)
    z = np.sort(rng.uniform(0.0, 8.0, 20))
    if kind == "monotone":
        v = np.cumsum(rng.uniform(0.0, 1.0, (6, 20)), axis=1)[:, ::-1] * 1e4
    elif kind == "nonmonotone":
        v = rng.normal(size=(6, 20)) * 1e4
    else:  # repeated values: zero secants exercise the d_k = 0 branch
        v = np.round(rng.uniform(0, 3, (6, 20))) * 1e3
    zq = rng.uniform(-1.0, 10.0, (6, 40))
    zq[:, :3] = z[[0, 7, -1]]  # exactly on nodes, incl. both ends
    out = pchip(z, v, zq)
    ref = _scipy_rows(z, v, zq)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


def test_pchip_on_the_clm5_grid_and_shared_queries():
    g = get_grid("clm5_20")
    z = g.z_node
    soc = 6e4 * np.exp(-z / 1.5)[:, None] * np.array([1.0, 0.5, 2.0])[None, :]  # physics layout (L, C)
    zq = np.array([0.0, 0.005, 0.05, 0.3, 1.0, 8.5, 9.0])  # extrapolation on both sides of [0.01, 8.03]
    out = pchip(z, soc.T, zq[None, :])  # shared query broadcast against 3 cells
    assert out.shape == (3, zq.size)
    np.testing.assert_allclose(out, _scipy_rows(z, soc.T, np.tile(zq, (3, 1))), rtol=1e-10)


@pytest.mark.parametrize("n_nodes", [2, 3])
def test_pchip_few_nodes(n_nodes):
    z = np.linspace(0.1, 1.0, n_nodes)
    v = np.array([[3.0, 1.0, 2.0][:n_nodes]])
    zq = np.array([[-0.5, 0.1, 0.33, 0.9, 1.7]])
    np.testing.assert_allclose(pchip(z, v, zq), _scipy_rows(z, v, zq), rtol=1e-12)


def test_pchip_gradcheck_and_torch_in_torch_out():
    rng = np.random.default_rng(0)
    z = torch.tensor(np.sort(rng.uniform(0, 3, 7)))
    v = torch.tensor(rng.normal(size=(3, 7)), requires_grad=True)
    zq = torch.tensor(rng.uniform(-0.5, 3.5, (3, 9)))
    out = pchip(z, v, zq)
    assert isinstance(out, torch.Tensor) and out.requires_grad
    assert torch.autograd.gradcheck(lambda vv: pchip(z, vv, zq), (v,))
    assert torch.autograd.gradcheck(lambda vv: linear_clamped(z, vv, zq), (v,))


def test_pchip_rejects_bad_nodes():
    with pytest.raises(ValueError):
        pchip(np.array([0.1, 0.1, 0.3]), np.ones((1, 3)), np.zeros((1, 1)))


def test_linear_clamped_matches_np_interp():
    z = np.array([0.1, 0.4, 1.0, 2.0])
    v = np.array([[5.0, 3.0, 4.0, 1.0]])
    zq = np.array([[-1.0, 0.1, 0.25, 1.5, 2.0, 9.0]])
    np.testing.assert_allclose(linear_clamped(z, v, zq)[0], np.interp(zq[0], z, v[0]), rtol=1e-14)


def test_model_at_obs_physics_layout_padding_and_gradient():
    g = get_grid("clm5_20")
    soc = torch.tensor(np.outer(np.exp(-g.z_node), [1e4, 2e4]), requires_grad=True)  # (L, C)
    depth = np.array([[0.05, 0.3, np.nan], [0.1, 0.5, 1.2]])
    mask = np.isfinite(depth)
    pred = model_at_obs(soc, g.z_node, depth, mask)
    assert pred.shape == (2, 3) and torch.isnan(pred[0, 2])
    ref = PchipInterpolator(g.z_node, soc.detach().numpy()[:, 1])(depth[1])
    np.testing.assert_allclose(pred[1].detach().numpy(), ref, rtol=1e-10)
    obs = np.array([[4e3, 3e3, np.nan], [9e3, 1e4, 5e3]])
    j = cost(pred, obs, None, mask).sum()
    j.backward()
    assert torch.isfinite(soc.grad).all() and (soc.grad.abs().sum() > 0)


# ---------------------------------------------------------------- weights
def test_rank_weights_handcrafted_profiles_with_ties_and_padding():
    obs = np.array([
        [10.0, 20.0, 30.0, 40.0, 50.0],
        [50.0, 10.0, 20.0, 30.0, np.nan],
        [10.0, 50.0, 20.0, 30.0, np.nan],
    ])
    z = np.array([
        [0.5, 1.5, 2.5, 3.5, 4.5],
        [0.5, 1.5, 2.5, 3.5, np.nan],
        [0.5, 1.5, 2.5, 3.5, np.nan],
    ])
    w = rank_weights(obs, z, np.isfinite(obs))
    # profile 1: equal |dev| pairs keep table order -> ranks (1,3,5,4,2) for both SOC and depth
    np.testing.assert_allclose(w[0], [W[1.0], W[3.0], 1.0, 1.0, W[2.0]])
    # profile 2: r = (1, 2.5, 3.5, 3)  (depth ties 1.5/1.5 and 0.5/0.5 in table order)
    np.testing.assert_allclose(w[1, :4], [W[1.0], W[2.5], 1.0, W[3.0]])
    # profile 3: r = (1.5, 2, 3.5, 3)
    np.testing.assert_allclose(w[2, :4], [W[1.5], W[2.0], 1.0, W[3.0]])
    assert np.isnan(w[1:, 4]).all()
    assert set(np.round(w[np.isfinite(w)], 2)) <= {10.0, 6.07, 3.68, 2.23, 1.35, 1.0}


def test_rank_weights_match_a_direct_per_profile_implementation():
    rng = np.random.default_rng(3)
    n = rng.integers(2, 9, 30)
    k = n.max()
    obs = np.full((30, k), np.nan)
    z = np.full((30, k), np.nan)
    for i, ni in enumerate(n):
        obs[i, :ni] = rng.choice([1e3, 2e3, 5e3, 8e3], ni)  # many ties
        z[i, :ni] = np.sort(rng.uniform(0, 2, ni))
    w = rank_weights(obs, z, np.isfinite(obs))
    for i, ni in enumerate(n):
        o, d = obs[i, :ni], z[i, :ni]

        def ranks(x):
            order = sorted(range(len(x)), key=lambda j: -x[j])  # Python's sort is stable
            r = np.empty(len(x))
            r[order] = np.arange(1, len(x) + 1)
            return r

        r = 0.5 * (ranks(np.abs(o - o.mean())) + ranks(np.abs(d - d.mean())))
        np.testing.assert_allclose(w[i, :ni], np.maximum(1, 10 * np.exp(-(r - 1))))


def test_depth_exp_weights():
    z = np.array([[0.3, 0.1, 0.6, np.nan], [0.2, 0.5, 0.8, 1.1]])
    w = depth_exp_weights(z, np.isfinite(z))
    np.testing.assert_allclose(w[0, :3], [np.exp(-0.3), 10.0, 10.0])
    np.testing.assert_allclose(w[1], [10.0, np.exp(-0.5), np.exp(-0.8), 10.0])
    assert np.isnan(w[0, 3])


# ---------------------------------------------------------------- cost and fit
def test_cost_matches_direct_formula_and_ignores_nan_terms():
    rng = np.random.default_rng(1)
    o = rng.uniform(1e3, 5e4, (4, 5))
    m = o * rng.uniform(0.5, 1.5, (4, 5))
    w = rng.uniform(1, 10, (4, 5))
    mask = np.ones((4, 5), dtype=bool)
    mask[1, 3:] = False
    m[2, 1] = np.nan  # a NaN modelled value is ignored
    j = cost(m, o, w, mask)
    for i in range(4):
        ok = mask[i] & np.isfinite(m[i])
        ref = np.sum(w[i, ok] * (m[i, ok] - o[i, ok]) ** 2 / (2 * (0.6 * o[i, ok]) ** 2))
        assert j[i] == pytest.approx(ref, rel=1e-13)
    m[3] = np.nan  # nothing left to compare -> NaN, not 0 (an MCMC would accept 0)
    assert np.isnan(cost(m, o, w, mask)[3])


def test_efficiency_quirk_r2_and_rmse_on_known_inputs():
    o = np.array([[1.0, 2.0, 3.0, np.nan]])
    m = np.array([[1.0, 2.0, 4.0, 7.0]])
    mask = np.isfinite(o)
    assert efficiency(m, o, mask)[0] == pytest.approx(0.5)  # 1 - 1/2
    assert r2_legacy(m, o, mask)[0] == pytest.approx(1 - 1 / (21 / 9))  # SS_tot about mean(m) = 7/3
    assert rmse(m, o, mask)[0] == pytest.approx(np.sqrt(1 / 3))


def test_pooled_metrics_known_values():
    o = np.array([1.0, 2.0, 3.0, 4.0])
    perfect = pooled_metrics(o, o)
    for key in ("e", "e_abs", "d", "d_abs", "lin_ccc"):
        assert perfect[key] == pytest.approx(1.0)
    assert perfect["rmse"] == 0 and perfect["pbias"] == 0 and perfect["n"] == 4
    m = np.array([2.0, 3.0, 4.0, 5.0, np.nan])  # offset by +1, NaN pair dropped
    r = pooled_metrics(m, np.append(o, 7.0))
    assert r["n"] == 4 and r["rmse"] == pytest.approx(1.0) and r["mae"] == pytest.approx(1.0)
    assert r["e"] == pytest.approx(1 - 4 / 5)
    assert r["e_abs"] == pytest.approx(1 - 4 / 4)
    assert r["rsr"] == pytest.approx(np.sqrt(4 / 5))
    assert r["pbias"] == pytest.approx(100 * 4 / 10)
    assert r["lin_ccc"] == pytest.approx(2 * 1.25 / (1.25 + 1.25 + 1.0))
    pot = np.abs(m[:4] - 2.5) + np.abs(o - 2.5)
    assert r["d"] == pytest.approx(1 - 4 / np.sum(pot**2))
    assert r["d_abs"] == pytest.approx(1 - 4 / np.sum(pot))


def test_observation_batch_from_layers_preprocessing():
    df = pd.DataFrame({
        "profile_id": ["a", "a", "a", "b", "c", "c", "c", "d", "d"],
        "depth_m": [0.05, 0.2, 0.5, 0.1, 0.1, np.nan, 0.6, 0.1, 0.3],
        "soc_density": [2e4, 0.0, 1e4, 3e4, 1e4, 5e3, 4e3, 0.0, np.nan],
    })
    ob = ObservationBatch.from_layers(df)
    assert list(ob.profile_id) == ["a", "c"]
    assert ob.skipped == {"b": "fewer than two valid layers", "d": "no valid non-zero SOC layer"}
    np.testing.assert_array_equal(ob.mask, [[True, True], [True, True]])
    np.testing.assert_allclose(ob.depth, [[0.05, 0.5], [0.1, 0.6]])
    np.testing.assert_allclose(ob.soc, [[2e4, 1e4], [1e4, 4e3]])
    assert ob.weights("rank").shape == (2, 2)
    with pytest.raises(ValueError):
        ob.weights("nope")
