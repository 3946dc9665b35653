"""Tests of proda_engine.learning, by concern. Shared helpers for the synthetic twin live here.

The twin world: covariates ``x`` (N, 4) ~ U(0, 1) drive five parameters through smooth functions
(:func:`true_theta`); the other 16 sit at 0.5. SOC comes from the real steady-state solver with
:func:`~proda_engine.physics.testing.random_forcing` (bedrock pushed to the bottom so every
observation depth is in soil), observed at six depths with 10 % multiplicative log-normal noise.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from proda_engine.grid import get_grid
from proda_engine.inference.likelihood import ObservationBatch, model_at_obs
from proda_engine.parameters import PARAMETER_INDEX
from proda_engine.physics import Forcing, params_from_theta, steady_state
from proda_engine.physics.testing import random_forcing

#: Observation depths of the twin, m.
DEPTHS = np.array([0.05, 0.15, 0.3, 0.6, 1.0, 1.5])
#: Parameters that vary with the covariates in the twin (the rest are fixed at 0.5).
FREE = ("tau4s2", "tau4s3", "fl3s2", "efolding", "beta")


def true_theta(x: np.ndarray) -> np.ndarray:
    """Smooth truth function x (N, 4) -> theta (N, 21)."""
    th = np.full((x.shape[0], 21), 0.5)
    th[:, PARAMETER_INDEX["tau4s2"]] = 0.15 + 0.7 * x[:, 0]
    th[:, PARAMETER_INDEX["tau4s3"]] = 0.15 + 0.7 / (1 + np.exp(-6 * (x[:, 1] - 0.5)))
    th[:, PARAMETER_INDEX["fl3s2"]] = 0.2 + 0.6 * x[:, 0] * x[:, 2]
    th[:, PARAMETER_INDEX["efolding"]] = 0.35 + 0.6 * x[:, 2]
    th[:, PARAMETER_INDEX["beta"]] = 0.3 + 0.6 * x[:, 3]
    return th


@dataclasses.dataclass
class Twin:
    table: dict[str, np.ndarray]  # x0..x3, lat, lon
    forcing: Forcing
    obs: ObservationBatch
    theta: np.ndarray  # (N, 21) truth
    soc_true: np.ndarray  # (N, K) noise-free SOC at DEPTHS, g C m-3

    @property
    def x(self) -> np.ndarray:
        return np.column_stack([self.table[f"x{i}"] for i in range(4)])

    @property
    def covariates(self) -> list[str]:
        return [f"x{i}" for i in range(4)]


def make_twin(n: int, seed: int = 0, noise: float = 0.1) -> Twin:
    rng = np.random.default_rng(seed)
    g = get_grid()
    x = rng.uniform(size=(n, 4))
    f = random_forcing(rng, n, g)
    f = dataclasses.replace(f, nbedrock=torch.full((n,), g.n_layers, dtype=torch.int64), _derived={})
    th = true_theta(x)
    res = steady_state(params_from_theta(th), f, g)
    assert bool((res.status == 0).all())
    depth = np.tile(DEPTHS, (n, 1))
    m = model_at_obs(res.soc, torch.as_tensor(g.z_node), torch.as_tensor(depth)).numpy()
    soc = m * np.exp(noise * rng.standard_normal(m.shape))
    obs = ObservationBatch(np.arange(n), depth, soc, np.ones_like(soc, dtype=bool))
    table = {f"x{i}": x[:, i] for i in range(4)}
    table["lat"] = rng.uniform(-60.0, 70.0, n)
    table["lon"] = rng.uniform(-180.0, 180.0, n)
    return Twin(table=table, forcing=f, obs=obs, theta=th, soc_true=m)


def soc_at_obs(theta: np.ndarray, twin: Twin, rows: np.ndarray) -> np.ndarray:
    """Modelled SOC (len(rows), K) at the twin's depths for given theta (used for baselines)."""
    g = get_grid()
    with torch.no_grad():
        res = steady_state(params_from_theta(theta[rows]), twin.forcing.subset(rows), g)
        return model_at_obs(res.soc, torch.as_tensor(g.z_node), torch.as_tensor(twin.obs.depth[rows])).numpy()
