"""Environmental scalars (spec §(d)) and input allocation (spec §(h))."""

import numpy as np
import pytest
import torch

from proda_engine.grid import get_grid
from proda_engine.physics import Forcing
from proda_engine.physics.inputs import beta_profile, input_profile, permafrost_top_only
from proda_engine.physics.scalars import month_mean_modifiers, xi_depth, xi_temperature, xi_water
from proda_engine.physics.transport import interface_shapes

from .helpers import random_forcing


def test_temperature_scalar_reference_points():
    q10 = torch.tensor([2.0])
    assert float(xi_temperature(torch.tensor([298.15]), q10)) == pytest.approx(1.0)
    assert float(xi_temperature(torch.tensor([273.15]), q10)) == pytest.approx(2.0 ** -2.5)
    # frozen branch with its own Q10 is continuous at 0 degC
    lo = xi_temperature(torch.tensor([273.15 - 1e-9]), q10, torch.tensor([3.0]))
    hi = xi_temperature(torch.tensor([273.15]), q10, torch.tensor([3.0]))
    assert float(lo) == pytest.approx(float(hi), rel=1e-8)


def test_water_scalar_caps_at_one():
    out = xi_water(torch.tensor([0.1, 0.5, 0.9]), torch.tensor([2.5, 2.5, 2.5]))
    np.testing.assert_allclose(out.numpy(), [0.25, 1.0, 1.0])


def test_depth_scalar():
    g = get_grid()
    xd = xi_depth(g, torch.tensor([0.5], dtype=torch.float64))
    np.testing.assert_allclose(xd[:, 0].numpy(), np.exp(-g.z_node / 0.5))


def test_month_mean_is_mean_of_products_and_kernel_matches_torch(rng):
    g = get_grid()
    f = random_forcing(rng, 7, g)
    q10 = torch.as_tensor(rng.uniform(1.2, 3.0, 7))
    ws = torch.as_tensor(rng.uniform(0.1, 5.0, 7))
    fast = month_mean_modifiers(f, q10, ws)
    with torch.enable_grad():
        slow = month_mean_modifiers(f, q10.clone().requires_grad_(True), ws)
    torch.testing.assert_close(fast[0], slow[0].detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(fast[1], slow[1].detach(), rtol=1e-13, atol=0)
    prod = xi_temperature(f.tsoi, q10) * xi_water(f.w_scalar, ws) * f.o_scalar
    assert not torch.allclose(prod.mean(0), xi_temperature(f.tsoi, q10).mean(0) * xi_water(f.w_scalar, ws).mean(0)
                              * f.o_scalar.mean(0))


def test_beta_profile_sums_to_one_and_decreases():
    g = get_grid()
    phi = beta_profile(g, torch.tensor([0.5, 0.95, 0.9999]))
    np.testing.assert_allclose(phi.sum(0).numpy(), 1.0, rtol=1e-12)
    assert (phi[0] > 0).all()


def test_permafrost_rule_puts_all_input_on_top():
    g = get_grid()
    f = Forcing.uniform(2, grid=g, altmax=1.0)
    f.altmax_lastyear[3, 1] = 0.0  # one month with no thaw at cell 1
    assert permafrost_top_only(f).tolist() == [False, True]
    phi = input_profile(f, g, torch.tensor([0.9, 0.9]))
    assert phi[0, 1] == 1.0 and phi[1:, 1].sum() == 0 and phi[1, 0] > 0


def test_transport_regimes():
    """Bioturbation to bedrock; cryoturbation constant in the active layer then to zero by 3 m; frozen none."""
    g = get_grid()
    alt = np.array([[5.0, 1.0, 0.0]]).repeat(12, 0)
    phi, regime = interface_shapes(alt, np.array([8, 20, 20]), g)
    assert regime[0].tolist() == [2, 1, 0]
    zi = g.z_interface_ext
    assert (phi[0, :9, 0] == 1).all() and (phi[0, 9:, 0] == 0).all()  # i <= nb+1 = 9
    assert (phi[0, zi < 1.0, 1] == 1).all() and (phi[0, zi >= 3.0, 1] == 0).all()
    mid = (zi > 1.0) & (zi < 3.0)
    np.testing.assert_allclose(phi[0, mid, 1], 1 - (zi[mid] - 1.0) / 2.0)
    assert (phi[0, :, 2] == 0).all()


def test_fused_month_means_and_diagnostic_match_the_separate_functions(rng):
    """The what-if path's single pass equals month_mean_modifiers + diagnostic_modifier."""
    from proda_engine.grid import get_grid
    from proda_engine.physics import params_from_theta
    from proda_engine.physics.scalars import diagnostic_modifier, month_mean_modifiers, month_means_and_diagnostic

    from .helpers import random_forcing, random_theta

    g = get_grid()
    f = random_forcing(rng, 50, g)
    p = params_from_theta(random_theta(rng, 50))
    with torch.no_grad():
        ms, ml, xh = month_means_and_diagnostic(f, g, p["q10"], p["wscaling"], p["efolding"])
        ms0, ml0 = month_mean_modifiers(f, p["q10"], p["wscaling"])
        xh0 = diagnostic_modifier(f, g, p["q10"], p["wscaling"], p["efolding"])
    for a, b in ((ms, ms0), (ml, ml0), (xh, xh0)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
