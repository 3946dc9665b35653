"""Gradients of the steady state: adjoint = autograd through the structured torch solve = finite
differences; every parameter gets a finite, non-zero gradient."""

import numpy as np
import torch

from proda_engine.grid import get_grid
from proda_engine.physics import params_from_theta, steady_state

from .helpers import random_forcing, random_theta


def _loss(theta, f, g, backend):
    res = steady_state(params_from_theta(theta), f, g, backend=backend)
    w = torch.linspace(1.0, 2.0, g.n_layers, dtype=torch.float64)[:, None]
    return (res.soc * w).sum() / 1e5


def test_gradcheck_small_case(rng):
    g = get_grid("clm45_10")
    f = random_forcing(rng, 3, g)
    th = torch.as_tensor(random_theta(rng, 3, 0.2, 0.8), dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: _loss(t, f, g, "numba"), (th,), eps=1e-6, atol=1e-7, rtol=1e-4)


def test_adjoint_matches_autograd_through_structured_torch(rng):
    g = get_grid()
    f = random_forcing(rng, 12, g)
    th = torch.as_tensor(random_theta(rng, 12), dtype=torch.float64).requires_grad_(True)
    g_adj, = torch.autograd.grad(_loss(th, f, g, "numba"), th)
    # direct autograd through the torch structured code (no custom backward)
    from proda_engine.physics.operator import assemble
    from proda_engine.physics.solver import solve_torch

    op = assemble(params_from_theta(th), f, g)
    X = solve_torch(op)
    w = torch.linspace(1.0, 2.0, g.n_layers, dtype=torch.float64)[:, None]
    g_ag, = torch.autograd.grad((X[4:7].sum(0) * w).sum() / 1e5, th)
    torch.testing.assert_close(g_adj, g_ag, rtol=1e-9, atol=1e-12)


def test_every_parameter_gets_a_gradient(rng):
    """Across a mix of bioturbation and cryoturbation cells every one of the 21 parameters matters."""
    g = get_grid()
    f = random_forcing(rng, 30, g)
    th = torch.as_tensor(random_theta(rng, 30), dtype=torch.float64).requires_grad_(True)
    grad, = torch.autograd.grad(_loss(th, f, g, "auto"), th)
    assert torch.isfinite(grad).all()
    nonzero = (grad.abs() > 0).any(0)
    assert bool(nonzero.all()), f"zero gradient for parameters {torch.nonzero(~nonzero).ravel().tolist()}"


def test_gradient_with_respect_to_inputs_is_linear_response(rng):
    """dS/dI_tot: SOC is linear in the inputs, so S(I) = sum_p I_p dS/dI_p exactly."""
    g = get_grid()
    f = random_forcing(rng, 5, g)
    inputs = f.inputs.clone().requires_grad_(True)
    f2 = f.with_inputs(inputs)
    res = steady_state(params_from_theta(random_theta(rng, 5)), f2, g)
    from proda_engine.physics.diagnostics import layer_stock

    S = layer_stock(res.soc, g)
    dS, = torch.autograd.grad(S.sum(), inputs)
    torch.testing.assert_close((dS * inputs).sum(0), S.detach(), rtol=1e-10, atol=0)


def test_finite_difference_agreement(rng):
    g = get_grid()
    f = random_forcing(rng, 4, g)
    th0 = random_theta(rng, 4, 0.2, 0.8)
    th = torch.as_tensor(th0).requires_grad_(True)
    grad, = torch.autograd.grad(_loss(th, f, g, "numba"), th)
    eps = 1e-6
    for i in (2, 3, 8, 9, 13, 19, 20):
        tp, tm = th0.copy(), th0.copy()
        tp[1, i] += eps
        tm[1, i] -= eps
        up, down = (float(_loss(torch.as_tensor(t), f, g, "numba")) for t in (tp, tm))
        fd = (up - down) / (2 * eps)
        assert np.isclose(fd, float(grad[1, i]), rtol=1e-4, atol=1e-8), (i, fd, float(grad[1, i]))
