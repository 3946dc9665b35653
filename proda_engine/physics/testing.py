"""Public test helpers: random but valid model instances (used by the tests and the benchmarks)."""

from __future__ import annotations

import numpy as np
import torch

from proda_engine.grid import Grid
from proda_engine.physics import Forcing


def random_forcing(rng: np.random.Generator, n: int, grid: Grid, *, regimes: bool = True) -> Forcing:
    """Forcing with varied climate, active-layer regimes (bio / cryo / frozen months) and bedrock."""
    L = grid.n_layers
    mat = rng.uniform(255.0, 300.0, n)
    amp = rng.uniform(2.0, 15.0, n)
    month = np.arange(12)
    depth_damp = np.exp(-grid.z_node / 2.5)[None, :, None]
    tsoi = mat[None, None, :] + amp[None, None, :] * np.cos(2 * np.pi * (month[:, None, None] - 6) / 12) * depth_damp
    w = rng.uniform(0.1, 1.0, (12, L, n))
    o = rng.uniform(0.6, 1.0, (12, L, n))
    fpi = rng.uniform(0.3, 1.0, (12, L, n))
    if regimes:
        kind = rng.integers(0, 3, n)  # 0 bioturbation, 1 cryoturbation, 2 mixed months incl. frozen
        alt = np.where(kind == 0, rng.uniform(2.5, 10.0, n), rng.uniform(0.3, 1.9, n))[None, :].repeat(12, 0)
        frozen_months = (kind == 2)[None, :] & (month[:, None] < 4)
        alt = np.where(frozen_months, 0.0, alt)
    else:
        alt = np.full((12, n), 5.0)
    alt_ly = np.where(rng.uniform(size=n) < 0.15, 0.0, alt.max(0))[None, :].repeat(12, 0)
    nb = rng.integers(3, L + 1, n)
    inputs = rng.uniform(20.0, 600.0, (4, n))
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    f = Forcing(tsoi=t(tsoi), w_scalar=t(w), o_scalar=t(o), fpi=t(fpi), altmax=t(alt), altmax_lastyear=t(alt_ly),
                nbedrock=torch.as_tensor(nb, dtype=torch.int64), inputs=t(inputs))
    f.validate()
    return f


def random_theta(rng: np.random.Generator, n: int, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """Unit-interval parameters; efolding kept >= 0.35 m so deep layers still decompose a little."""
    th = rng.uniform(low, high, (n, 21))
    th[:, 3] = rng.uniform(0.35, 1.0, n)
    return th
