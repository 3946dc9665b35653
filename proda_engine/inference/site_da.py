"""Site-level data assimilation: the batched cost of spec §(k) built on the physics solver.

:func:`make_site_cost_fn` returns a ``cost_fn(theta, site) -> (cost, pred)`` for
:func:`proda_engine.inference.mcmc.run_mcmc`: it solves the steady state for every row (one chain
of one site), interpolates SOC to that site's observation depths (PCHIP by default) and evaluates
``J = Σ w (m - o)² / (2 (0.6 o)²)``. A cell whose solve is not OK (non-finite, negative or invalid,
see :class:`proda_engine.physics.Status`) gets ``J = NaN`` and is rejected by the sampler.

Example
-------
>>> import numpy as np
>>> from proda_engine.grid import get_grid
>>> from proda_engine.physics import Forcing
>>> g = get_grid()
>>> obs = ObservationBatch(np.array([0]), np.array([[0.05, 0.5]]), np.array([[3e4, 2e4]]),
...                        np.array([[True, True]]))
>>> f = make_site_cost_fn(Forcing.uniform(1, grid=g), obs, g)
>>> j, pred = f(np.full((2, 21), 0.5), np.array([0, 0]))
>>> j.shape, pred.shape
((2,), (2, 2))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from proda_engine.grid import Grid, get_grid
from proda_engine.inference.likelihood import ObservationBatch, WeightKind, cost, model_at_obs
from proda_engine.physics import Forcing, Status, params_from_theta, steady_state

SiteCostFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def make_site_cost_fn(
    forcing_sites: Forcing,
    obs_batch: ObservationBatch,
    grid: Grid | None = None,
    weights: WeightKind = "rank",
    *,
    method: Literal["pchip", "linear_clamped"] = "pchip",
    closure: str = "conservative",
    backend: str = "auto",
    clamp: bool = False,
) -> SiteCostFn:
    """Batched site cost for (sites x chains).

    Args:
        forcing_sites: forcing for the S sites (cell axis = site, aligned with ``obs_batch``).
        obs_batch: S observed profiles (padded).
        grid: vertical grid (default ``clm5_20``).
        weights: ``"rank"`` (code, default) or ``"depth_exp"`` (chapter), spec §(k).
        method: observation operator, ``"pchip"`` (PRODA) or ``"linear_clamped"`` (BINN).
        closure, backend: passed to :func:`proda_engine.physics.steady_state`.
        clamp: apply the spec §(c) clamp (theta in [1e-4, 1], beta's theta <= 0.98) before mapping.
            Off by default: the original MCMC maps the open-box proposals as they are (the clamp
            would make the cost flat for beta's theta > 0.98 and log a warning every iteration).

    Returns:
        ``cost_fn(theta (n, 21), site (n,)) -> (cost (n,), pred (n, K))`` where ``pred`` is the
        modelled SOC (g C m-3) at the site's observation depths (NaN at padding); pass
        ``obs=obs_batch.soc`` to :func:`run_mcmc` for the chain choice.
    """
    grid = grid or get_grid()
    if forcing_sites.n_cells != obs_batch.n_profiles:
        raise ValueError(f"forcing has {forcing_sites.n_cells} cells but there are "
                         f"{obs_batch.n_profiles} observed profiles")
    w_all = obs_batch.weights(weights)
    z_nodes = np.asarray(grid.z_node, dtype=float)
    cache: dict[str, object] = {}

    def cost_fn(theta: np.ndarray, site: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        site = np.asarray(site, dtype=np.int64)
        key = site.tobytes()
        # The active rows rarely change between iterations: reuse the gathered forcing.
        if cache.get("key") != key:
            cache["key"] = key
            cache["forcing"] = forcing_sites.subset(site)
        forcing = cache["forcing"]
        params = params_from_theta(np.asarray(theta, dtype=float), clamp=clamp, dtype=forcing.dtype,
                                   device=forcing.device)
        res = steady_state(params, forcing, grid, closure=closure, backend=backend)
        soc = res.soc.detach().cpu().numpy()  # (L, n)
        status = res.status.cpu().numpy()
        depth, mask = obs_batch.depth[site], obs_batch.mask[site]
        pred = model_at_obs(soc, z_nodes, depth, mask, method=method)
        j = cost(pred, obs_batch.soc[site], w_all[site], mask)
        j = np.where(status == Status.OK, j, np.nan)
        return j, pred

    return cost_fn
