"""The network emits exactly what the physics expects, and gradients reach every weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from proda_engine.grid import get_grid
from proda_engine.learning import ParameterNet, build_network, resolve_device, resolve_dtype
from proda_engine.learning.training import end_to_end_batch
from proda_engine.parameters import BETA_THETA_MAX, N_PARAMS, PARAMETER_INDEX, THETA_MIN

from . import make_twin

BETA = PARAMETER_INDEX["beta"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_output_is_float64_theta_inside_the_clamp_range_for_extreme_inputs(dtype):
    net = build_network(6, (32, 32), dtype=dtype, seed=0)
    # Blow the logits up so both sigmoid tails saturate: values must still sit inside the range.
    with torch.no_grad():
        net.head.weight.mul_(1e4)
    x = torch.cat([torch.full((1, 6), 1e6), torch.full((1, 6), -1e6), torch.randn(200, 6) * 1e3,
                   torch.zeros(1, 6)]).to(resolve_dtype(dtype))
    with torch.no_grad():
        theta = net(x)
        logits = net.logits(x)
    assert theta.shape == (203, N_PARAMS)
    assert theta.dtype == torch.float64  # what params_from_theta / the solver take
    assert bool(torch.isfinite(theta).all())
    assert float(theta.min()) >= THETA_MIN
    assert float(theta.max()) <= 1.0
    assert float(theta[:, BETA].max()) <= BETA_THETA_MAX
    assert float(logits.abs().max()) > 100  # the test really hit saturation
    # Saturated outputs land exactly on the bounds, never beyond (no downstream clamp needed).
    assert float(theta[:, BETA].max()) == BETA_THETA_MAX


def test_untrained_net_predicts_near_the_mcmc_start():
    net = build_network(10, seed=1)
    with torch.no_grad():
        theta = net(torch.rand(50, 10))
    assert float((theta - 0.5).abs().max()) < 0.1


def test_spec_round_trip_and_architecture():
    net = ParameterNet(60, dropout=0.1)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(60, 256), (256, 512), (512, 512), (512, 256),
                                                                  (256, 21)]
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 4
    net2 = ParameterNet.from_spec(net.spec())
    assert net2.spec() == net.spec()


def test_device_and_dtype_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_device("cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu")
    assert resolve_dtype("float64") is torch.float64
    with pytest.raises(ValueError):
        resolve_dtype("float16")


def test_gradients_reach_every_weight_through_the_solver():
    """One backward pass NN -> theta -> steady state -> PCHIP -> loss: every weight gets a finite, non-zero grad."""
    twin = make_twin(24, seed=3)
    g = get_grid()
    net = build_network(4, (16, 16), seed=0, dtype="float64")
    x = torch.as_tensor(twin.x)
    kw = {"dtype": torch.float64}
    loss, n_ok, n_failed = end_to_end_batch(
        net, x, twin.forcing, torch.as_tensor(twin.obs.depth, **kw), torch.as_tensor(twin.obs.soc, **kw),
        torch.ones(twin.obs.soc.shape, **kw), torch.as_tensor(twin.obs.mask), g)
    assert (n_ok, n_failed) == (24, 0)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name


def test_gradient_matches_finite_difference_on_an_output_bias():
    """The adjoint gradient through the solver is the true derivative of the loss (central difference)."""
    twin = make_twin(8, seed=4)
    g = get_grid()
    net = build_network(4, (8,), seed=0, dtype="float64")
    kw = {"dtype": torch.float64}
    args = (torch.as_tensor(twin.x, **kw), twin.forcing,
            torch.as_tensor(twin.obs.depth, **kw), torch.as_tensor(twin.obs.soc, **kw),
            torch.ones(twin.obs.soc.shape, **kw), torch.as_tensor(twin.obs.mask), g)
    loss, *_ = end_to_end_batch(net, *args)
    loss.backward()
    j = PARAMETER_INDEX["tau4s3"]
    analytic = float(net.head.bias.grad[j])
    h = 1e-5
    vals = []
    for s in (h, -h):
        with torch.no_grad():
            net.head.bias[j] += s
            vals.append(float(end_to_end_batch(net, *args)[0]))
            net.head.bias[j] -= s
    numeric = (vals[0] - vals[1]) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4)
