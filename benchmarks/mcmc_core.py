"""MCMC engine overhead per iteration vs one batched steady-state solve of the same rows.

Every number is measured in this one run, on this machine. The sampler overhead (proposals,
counter-based random numbers, Welford covariance, batched Cholesky, storage) is timed with a free
cost function; the physics column is one structured solve of the same number of rows.

    python benchmarks/mcmc_core.py            # 1,000 sites x 3 chains, D = 21
    python benchmarks/mcmc_core.py --quick    # 100 sites
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from proda_engine.grid import get_grid
from proda_engine.inference.mcmc import MCMCConfig, run_mcmc
from proda_engine.physics import params_from_theta, steady_state
from proda_engine.physics.testing import random_forcing, random_theta


def sampler_ms_per_step(n_sites: int, adapt_every: int) -> float:
    def free_cost(theta: np.ndarray, site: np.ndarray) -> np.ndarray:
        return 0.5 * (((theta - 0.5) / 0.05) ** 2).sum(axis=1)

    # Short test run, then a formal run that adapts from its first iterations on.
    cfg = MCMCConfig(n_test=50, n_formal=400, adapt_start=2, adapt_every=adapt_every, progress=False,
                     mode="none", min_test_accepts=0, accept_window=(0.0, 1.0))
    t = time.perf_counter()
    res = run_mcmc(free_cost, n_sites, cfg)
    return 1e3 * (time.perf_counter() - t) / res.n_steps


def physics_ms_per_solve(n_rows: int) -> float:
    g = get_grid()
    rng = np.random.default_rng(0)
    forcing = random_forcing(rng, n_rows, g)
    params = params_from_theta(random_theta(rng, n_rows))
    steady_state(params, forcing, g)  # warm-up (JIT)
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        steady_state(params, forcing, g)
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_sites = 100 if args.quick else 1000
    torch.set_num_threads(1)
    with threadpool_limits(1):
        every1 = sampler_ms_per_step(n_sites, 1)
        every10 = sampler_ms_per_step(n_sites, 10)
        phys = physics_ms_per_solve(3 * n_sites)
    print(f"rows = {3 * n_sites} (sites x 3 chains), D = 21, 1 thread")
    print(f"sampler overhead, Cholesky every iteration : {every1:8.2f} ms/step")
    print(f"sampler overhead, Cholesky every 10th      : {every10:8.2f} ms/step  "
          f"(ratio {every1 / every10:.2f})")
    print(f"one structured steady-state solve          : {phys:8.2f} ms/step")
    print(f"overhead / physics                         : {every1 / phys:8.2f} (every 1), "
          f"{every10 / phys:.2f} (every 10)")


if __name__ == "__main__":
    main()
