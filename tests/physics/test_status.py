"""Failure is a per-site value: one bad site never spoils the batch or its gradients."""

import numpy as np
import torch

from proda_engine.grid import get_grid
from proda_engine.physics import Status, params_from_theta, solve_theta, steady_state

from .helpers import random_forcing, random_theta


def test_bad_site_is_flagged_and_isolated(rng):
    g = get_grid()
    f = random_forcing(rng, 6, g)
    th = random_theta(rng, 6)
    good = solve_theta(th, f, g)
    th_bad = th.copy()
    th_bad[2, 3] = 0.0  # efolding -> 1e-4 m after the clamp: deep decay underflows to exactly 0
    bad = solve_theta(th_bad, f, g)
    assert bad.status[2] != Status.OK
    keep = np.arange(6) != 2
    np.testing.assert_array_equal(bad.pools[..., keep], good.pools[..., keep])
    assert (bad.status[keep] == Status.OK).all()


def test_gradients_stay_finite_with_a_bad_site(rng):
    g = get_grid()
    f = random_forcing(rng, 5, g)
    th0 = random_theta(rng, 5)
    th0[0, 3] = 0.0
    th = torch.as_tensor(th0).requires_grad_(True)
    res = steady_state(params_from_theta(th), f, g)
    ok = res.status == Status.OK
    loss = torch.where(ok[None], res.soc, torch.zeros_like(res.soc)).sum()
    grad, = torch.autograd.grad(loss, th)
    assert torch.isfinite(grad).all()
    assert (grad[1:].abs().sum(1) > 0).all()


def test_status_counts_are_reported(rng):
    g = get_grid()
    f = random_forcing(rng, 4, g)
    th = random_theta(rng, 4)
    th[1, 3] = 0.0
    counts = solve_theta(th, f, g).result.status_counts()
    assert counts["OK"] == 3 and sum(counts.values()) == 4
