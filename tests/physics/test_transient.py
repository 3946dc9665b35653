"""Transient mode: the shifted structured solve, the implicit monthly step and the carbon budget.

Physics first: the shifted operator equals its dense reference; the step's fixed point is the steady
state; the column budget closes; a zero scenario changes nothing; warming with Q10 > 1 lowers SOC;
the implicit step is stable where an explicit one is not.
"""

import numpy as np
import pytest
import torch

from proda_engine.grid import get_grid
from proda_engine.physics import Forcing, apply_operator, assemble, params_from_theta, rhs, solve, steady_state
from proda_engine.physics.dense import dense_matrix
from proda_engine.physics.operator import Operator
from proda_engine.physics.solver import solve_numba, solve_torch, solve_transposed
from proda_engine.physics.transient import (
    DAYS_IN_MONTH,
    explicit_step,
    implicit_step,
    monthly_rates,
    monthly_transport,
    run_transient,
)
from proda_engine.physics.transport import transport_coefficients

from .helpers import random_forcing, random_theta


def _shifted(op: Operator, rng, shape: str, full_rhs: bool) -> Operator:
    C, L = op.n_cells, op.n_layers
    s = torch.as_tensor(rng.uniform(0.01, 0.1, (C,) if shape == "cell" else (L, C)))
    src = op.src
    if full_rhs:
        src = torch.cat([src, torch.as_tensor(rng.uniform(0.0, 5.0, (3, L, C)))], 0)
    return Operator(op.k, op.frac, op.lo, op.up, src, shift=s)


def _dense_x(op: Operator) -> np.ndarray:
    M, b = dense_matrix(op)
    x = np.linalg.solve(M, -b[..., None])[..., 0]
    return x.reshape(x.shape[0], 7, op.n_layers).transpose(1, 2, 0)


@pytest.fixture
def op(rng):
    g = get_grid()
    f = random_forcing(rng, 30, g)
    return assemble(params_from_theta(random_theta(rng, 30)), f, g, "legacy")


# --- 1. the shifted structured solve -------------------------------------------------------------

@pytest.mark.parametrize("shape", ["cell", "layer_cell"])
@pytest.mark.parametrize("full_rhs", [False, True])
def test_shifted_solve_equals_dense(op, rng, shape, full_rhs):
    sop = _shifted(op, rng, shape, full_rhs)
    xd = _dense_x(sop)
    for x in (solve_numba(sop), solve_torch(sop)):
        rel = np.abs(x.numpy() - xd).max(axis=(0, 1)) / np.abs(xd).max(axis=(0, 1))
        assert rel.max() < 1e-10
    # Matrix-free product with the shift reproduces the right-hand side.
    X = solve(sop)
    assert torch.allclose(apply_operator(sop, X), rhs(sop), rtol=1e-9, atol=1e-12 * float(rhs(sop).abs().max()))


def test_shifted_transposed_solve_equals_dense(op, rng):
    sop = _shifted(op, rng, "layer_cell", False)
    M, _ = dense_matrix(sop)  # M = -(G + diag s)
    y = rng.normal(size=(7, op.n_layers, op.n_cells))
    yy = y.transpose(2, 0, 1).reshape(op.n_cells, -1)
    ld = np.linalg.solve(-M.transpose(0, 2, 1), yy[..., None])[..., 0].reshape(op.n_cells, 7, -1).transpose(1, 2, 0)
    for be in ("numba", "torch"):
        lam = solve_transposed(sop, torch.as_tensor(y), backend=be).numpy()
        assert np.abs(lam - ld).max() / np.abs(ld).max() < 1e-10


def test_zero_shift_matches_no_shift(op):
    z = Operator(op.k, op.frac, op.lo, op.up, op.src, shift=torch.zeros(op.n_cells, dtype=op.k.dtype))
    for be in ("numba", "torch"):
        a, b = solve(op, be), solve(z, be)
        assert torch.allclose(a, b, rtol=1e-13, atol=0)


def test_adjoint_gradients_with_shift(op, rng):
    """The adjoint backward (numba) equals autograd through the torch solve, shift included."""
    sop = _shifted(op, rng, "cell", True)
    w = torch.as_tensor(rng.uniform(size=(7, op.n_layers, op.n_cells)))

    def grads(fn):
        leaves = [t.detach().clone().requires_grad_(True) for t in (sop.k, sop.lo, sop.src, sop.shift)]
        k, lo, src, s = leaves
        X = fn(Operator(k, sop.frac, lo, sop.up, src, shift=s))
        (X * w).sum().backward()
        return [t.grad for t in leaves]

    ga = grads(lambda o: solve(o, "numba"))
    gb = grads(solve_torch)
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10 * float(b.abs().max()))


# --- 2. monthly operators -----------------------------------------------------------------------

def test_monthly_pieces_average_to_the_steady_state_operator(rng):
    g = get_grid()
    f = random_forcing(rng, 25, g)
    p = params_from_theta(random_theta(rng, 25))
    op = assemble(p, f, g, "legacy")
    kbar = torch.stack([monthly_rates(p, f, g, m) for m in range(12)]).mean(0)
    assert torch.allclose(kbar, op.k, rtol=1e-12, atol=0)
    tcs = monthly_transport(f, g, "legacy")
    ref = transport_coefficients(f, g, "legacy")
    for name in ("lo_bio", "lo_cryo", "lo_floor", "up_bio", "up_cryo", "up_floor"):
        mean = torch.stack([getattr(t, name) for t in tcs]).mean(0)
        assert torch.allclose(mean, getattr(ref, name), rtol=1e-12, atol=1e-300)


def test_days_in_month():
    assert DAYS_IN_MONTH.sum() == 365 and DAYS_IN_MONTH[1] == 28 and DAYS_IN_MONTH[3] == 30


# --- 3. the transient run ------------------------------------------------------------------------

def test_steady_state_is_the_fixed_point_of_the_step(rng):
    """Backward Euler: a huge step lands on G^-1 I, and the steady state does not move under a step."""
    g = get_grid()
    f = random_forcing(rng, 20, g)
    res = steady_state(params_from_theta(random_theta(rng, 20)), f, g)
    op = res.operator
    X0 = torch.zeros_like(res.pools)
    big = implicit_step(X0, op.k, op.frac, op.lo, op.up, op.src, 1e40)  # 1/dt far below the slowest deep rate
    assert torch.allclose(big, res.pools, rtol=1e-8, atol=1e-12 * float(res.pools.max()))
    same = implicit_step(res.pools, op.k, op.frac, op.lo, op.up, op.src, 31.0)
    assert torch.allclose(same, res.pools, rtol=1e-10, atol=1e-12 * float(res.pools.max()))


def test_transient_converges_to_steady_state():
    """Constant (aseasonal) forcing, started from a quarter of the steady state, relaxes onto it.

    A hot soil (Q10 = 3 at 340 K speeds every pool ~100x) so even deep SOC equilibrates in 150 years.
    """
    g = get_grid("clm45_10")
    f = Forcing.uniform(3, grid=g, tsoi=340.0, w_scalar=1.0, altmax=5.0)
    th = np.full((3, 21), 0.5)
    th[:, 2] = 1.0  # Q10 = 3
    th[:, 3] = 1.0  # deepest e-folding
    th[:, 7:10] = [[0.0, 0.0, 0.0], [0.05, 0.02, 0.0], [0.1, 0.0, 0.05]]
    p = params_from_theta(th)
    xs = steady_state(p, f, g).pools
    ds = run_transient(p, f, 150, g, initial=0.25 * xs, seasonal=True)
    steady_soc = 4.0 * ds.soc_initial.values
    assert np.all(np.diff(ds.soc.values, axis=0) >= -1e-9 * steady_soc)  # monotone approach from below
    assert np.abs(ds.soc.values[0] / steady_soc - 1).min() > 1e-2
    assert np.abs(ds.soc.values[-1] / steady_soc - 1).max() < 1e-6


@pytest.mark.parametrize("closure", ["conservative", "legacy"])
@pytest.mark.parametrize("seasonal", [True, False])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_carbon_budget_closes(rng, closure, seasonal, backend):
    g = get_grid()
    f = random_forcing(rng, 30, g)
    p = params_from_theta(random_theta(rng, 30))
    x0 = steady_state(p, f, g, closure=closure).pools * torch.as_tensor(rng.uniform(0.5, 1.5, 30))

    def warming(year: int) -> Forcing:  # a changing climate, so the stocks really move
        return Forcing(f.tsoi + 0.5 * year, f.w_scalar, f.o_scalar, f.fpi, f.altmax, f.altmax_lastyear,
                       f.nbedrock, f.inputs * (1 + 0.05 * year))

    ds = run_transient(p, warming, 4, g, closure=closure, seasonal=seasonal, initial=x0, backend=backend)
    c = np.vstack([ds.carbon_initial.values[None], ds.carbon.values])
    budget = (ds.inputs - ds.respiration - ds.outflow).values
    assert np.abs(np.diff(c, axis=0) - budget).max() / np.abs(c).max() < 1e-8
    if closure == "conservative":
        assert np.abs(ds.outflow.values).max() < 1e-6 * np.abs(ds.inputs.values).max()
    else:
        assert ds.outflow.values.max() > 0  # the bedrock sink is a real outflow


def test_zero_scenario_leaves_stocks_unchanged(rng):
    g = get_grid()
    f = random_forcing(rng, 30, g)
    p = params_from_theta(random_theta(rng, 30))
    ds = run_transient(p, f, 5, g, seasonal=False)
    assert np.abs(ds.soc.values / ds.soc_initial.values - 1).max() < 1e-10
    assert np.abs(ds.inputs.values / ds.respiration.values - 1).max() < 1e-9


def test_warming_lowers_steady_state_soc(rng):
    g = get_grid()
    f = random_forcing(rng, 30, g)
    p = params_from_theta(random_theta(rng, 30))
    assert bool((p["q10"] > 1).all())
    base = steady_state(p, f, g)
    warm = steady_state(p, Forcing(f.tsoi + 2.0, f.w_scalar, f.o_scalar, f.fpi, f.altmax, f.altmax_lastyear,
                                   f.nbedrock, f.inputs), g)
    assert bool((warm.soc.sum(0) < base.soc.sum(0)).all())


def test_implicit_step_is_stable_for_fast_litter():
    """tau_L1 of days (k dt >> 2): backward Euler stays bounded and positive; forward Euler explodes."""
    g = get_grid()
    f = Forcing.uniform(2, grid=g, tsoi=305.0, w_scalar=1.0)
    th = np.full((2, 21), 0.5)
    th[:, 5] = 0.0  # shortest L1 turnover
    th[:, 3] = 1.0
    res = steady_state(params_from_theta(th), f, g)
    op = res.operator
    assert float(op.k[1].max()) * 31.0 > 2.0  # explicit monthly step would be unstable
    X = 2.0 * res.pools
    Xe = X.clone()
    for _ in range(24):
        X = implicit_step(X, op.k, op.frac, op.lo, op.up, op.src, 31.0)
        Xe = explicit_step(Xe, op.k, op.frac, op.lo, op.up, op.src, 31.0)
    assert bool((X >= 0).all()) and bool(torch.isfinite(X).all())
    assert float(X[1].max()) <= 2.0 * float(res.pools[1].max()) * (1 + 1e-12)
    assert not bool(torch.isfinite(Xe).all()) or float(Xe.abs().max()) > 1e6 * float(res.pools.max())


@pytest.mark.parametrize("seasonal", [True, False])
@pytest.mark.parametrize("closure", ["conservative", "legacy"])
def test_fused_year_kernel_equals_stepwise_solves(rng, seasonal, closure):
    """The fused CPU kernel (12 months per block of cells in one pass) is the same arithmetic as
    twelve separate structured solves: warming, drying, more input and permafrost thaw (the active
    layer, hence V, changes every year), on 150 cells (two full blocks and a partial one)."""
    from proda_engine.physics.transient import TRANSIENT_BLOCK
    from proda_engine.products.scenarios import Scenario

    g = get_grid()
    n = 2 * TRANSIENT_BLOCK + 22
    f = random_forcing(rng, n, g)
    p = params_from_theta(random_theta(rng, n))
    fn = Scenario(warming=3.0, amplification=1.0, water=-0.1, npp=0.2, ramp_years=3).forcing_fn(
        f, np.linspace(-85.0, 85.0, n))
    years = []
    a = run_transient(p, fn, 4, g, closure=closure, seasonal=seasonal, monthly=True, backend="numba",
                      progress=lambda y, n: years.append((y, n)))
    assert years == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert not np.allclose(a.soc.values[-1], a.soc_initial.values, rtol=1e-3)  # the stocks really moved
    for ref in (run_transient(p, fn, 4, g, closure=closure, seasonal=seasonal, monthly=True, fused=False),
                run_transient(p, fn, 4, g, closure=closure, seasonal=seasonal, monthly=True, backend="torch")):
        for v in ("soc", "soc_0_100cm", "carbon", "inputs", "respiration", "soc_monthly", "soc_profile_final"):
            np.testing.assert_allclose(a[v].values, ref[v].values, rtol=1e-11,
                                       atol=1e-11 * float(np.abs(ref[v]).max()), err_msg=v)
        np.testing.assert_allclose(a.outflow.values, ref.outflow.values, rtol=0, atol=1e-9 * float(a.inputs.max()))
