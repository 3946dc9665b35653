"""Site-level MCMC throughput: the vectorised sampler vs a per-(site, chain) loop, same solver.

Both measurements run in this one process, on this machine, single-threaded (torch, numba and BLAS
pinned to one thread: a Dask worker runs exactly like this, one per core):

* **vectorised**: ``run_mcmc`` over N sites x 3 chains at once; every iteration is one structured
  steady-state solve of all active rows (the production path, :mod:`proda_engine.inference.pipeline`).
* **per-site loop**: the original's structure, one chain of one site at a time, one single-cell
  solve per iteration, through the same cost function and sampler. Timed on a few (site, chain)
  pairs and expressed per site-chain iteration.

The sites are synthetic but realistic: random valid forcing (``physics.testing.random_forcing``),
a random "true" theta per site, and 4 observed layers (5, 15, 30, 60 cm) with 30 % log-normal noise.
The acceptance window is opened (0, 1) so every row runs exactly ``n_test + n_formal`` iterations
(no restarts) and the iteration count is exact.

Finally the measured rate is extrapolated to the original's site-level DA: 54,000 profiles x
3 chains x 70,000 iterations (20,000 test + 50,000 formal), restarts not included.

    python benchmarks/mcmc.py              # 1,000 sites x 3 chains, 100 + 200 iterations
    python benchmarks/mcmc.py --quick      # 200 sites
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np

from proda_engine.grid import get_grid
from proda_engine.inference.likelihood import ObservationBatch, model_at_obs
from proda_engine.inference.mcmc import MCMCConfig, run_mcmc
from proda_engine.inference.runs import single_threaded
from proda_engine.inference.site_da import make_site_cost_fn
from proda_engine.physics import Forcing, solve_theta
from proda_engine.physics.testing import random_forcing, random_theta

ORIGINAL_PROFILES = 54_000
ORIGINAL_CHAINS = 3
ORIGINAL_ITERATIONS = 20_000 + 50_000
OBS_DEPTHS_M = np.array([0.05, 0.15, 0.30, 0.60])


def synthetic_sites(n: int, seed: int = 0) -> tuple[Forcing, ObservationBatch]:
    """Forcing and noisy 4-layer observations of a random truth for ``n`` sites."""
    rng = np.random.default_rng(seed)
    grid = get_grid()
    forcing = random_forcing(rng, n, grid)
    truth = random_theta(rng, n, 0.2, 0.8)
    soc = solve_theta(truth, forcing, grid).soc  # (L, n)
    depth = np.broadcast_to(OBS_DEPTHS_M, (n, OBS_DEPTHS_M.size)).copy()
    true_obs = np.asarray(model_at_obs(soc, grid.z_node, depth))
    obs = true_obs * np.exp(0.3 * rng.standard_normal(true_obs.shape) - 0.045)
    mask = np.isfinite(obs) & (obs > 0)
    return forcing, ObservationBatch(np.arange(n), depth, np.where(mask, obs, np.nan), mask)


def config(n_test: int, n_formal: int, n_chains: int = 3) -> MCMCConfig:
    return MCMCConfig(n_chains=n_chains, n_test=n_test, n_formal=n_formal, progress=False, mode="none",
                      min_test_accepts=0, accept_window=(0.0, 1.0), seed=1)


def vectorised(forcing: Forcing, obs: ObservationBatch, n_test: int, n_formal: int) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and site-chain iterations of one vectorised run over every site."""
    fn = make_site_cost_fn(forcing, obs, get_grid())
    cfg = config(n_test, n_formal)
    t, c = time.perf_counter(), time.process_time()
    res = run_mcmc(fn, obs.n_profiles, cfg, obs=obs.soc)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    assert res.n_steps == n_test + n_formal, res.n_steps  # no restarts: exact iteration count
    return dt, dc, obs.n_profiles * cfg.n_chains * (n_test + n_formal)


def per_site_loop(forcing: Forcing, obs: ObservationBatch, n_test: int, n_formal: int, n_pairs: int
                  ) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and site-chain iterations of ``n_pairs`` one-row runs (one chain
    of one site)."""
    cfg = config(n_test, n_formal, n_chains=1)
    total, cpu, its = 0.0, 0.0, 0
    for s in range(n_pairs):
        fn = make_site_cost_fn(forcing.subset([s]), obs.subset([s]), get_grid())
        t, c = time.perf_counter(), time.process_time()
        run_mcmc(fn, 1, cfg, site_ids=[s], obs=obs.soc[[s]])
        total += time.perf_counter() - t
        cpu += time.process_time() - c
        its += n_test + n_formal
    return total, cpu, its


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--n-formal", type=int, default=200)
    ap.add_argument("--loop-pairs", type=int, default=6, help="(site, chain) pairs timed in the per-site loop")
    ap.add_argument("--quick", action="store_true", help="200 sites")
    args = ap.parse_args()
    n = 200 if args.quick else args.sites

    forcing, obs = synthetic_sites(n)
    with single_threaded():
        # warm-up: numba compilation / cache load, torch first-call costs
        vectorised(forcing.subset(np.arange(4)), obs.subset(np.arange(4)), 5, 10)
        per_site_loop(forcing, obs, 5, 10, 1)
        t_vec, c_vec, it_vec = vectorised(forcing, obs, args.n_test, args.n_formal)
        t_loop, c_loop, it_loop = per_site_loop(forcing, obs, args.n_test, args.n_formal, args.loop_pairs)

    rate_vec = it_vec / t_vec
    rate_loop = it_loop / t_loop
    total = ORIGINAL_PROFILES * ORIGINAL_CHAINS * ORIGINAL_ITERATIONS
    print(f"machine: {os.cpu_count()} logical cores (shared); 1 thread per measurement; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"CPU share of the process: vectorised {c_vec / t_vec:.0%}, per-site {c_loop / t_loop:.0%} "
          f"(below 100 % = other jobs on the cores; CPU-time rates: {it_vec / c_vec:,.0f} and "
          f"{it_loop / c_loop:,.0f} site-chain iterations per CPU-second)")
    print(f"vectorised : {n} sites x 3 chains x {args.n_test + args.n_formal} iterations in {t_vec:7.1f} s "
          f"-> {rate_vec:12,.0f} site-chain iterations / s  ({1e3 * t_vec / (args.n_test + args.n_formal):.1f} "
          f"ms per step of {3 * n} rows)")
    print(f"per-site   : {args.loop_pairs} (site, chain) pairs x {args.n_test + args.n_formal} iterations in "
          f"{t_loop:7.1f} s -> {rate_loop:12,.0f} site-chain iterations / s  "
          f"({1e3 * t_loop / it_loop:.2f} ms per iteration)")
    print(f"speed-up   : {rate_vec / rate_loop:.1f} x (vectorised / per-site loop, same solver, same run)")
    for label, rate in (("vectorised, wall", rate_vec), ("vectorised, CPU time", it_vec / c_vec),
                        ("per-site, wall", rate_loop)):
        hours = total / rate / 3600
        print(f"extrapolation ({label}): {ORIGINAL_PROFILES:,} profiles x {ORIGINAL_CHAINS} chains x "
              f"{ORIGINAL_ITERATIONS:,} iterations = {total:.3g} site-chain iterations -> {hours:,.1f} core-hours "
              f"= {hours / 2:,.1f} h on 2 cores (restarts not included)")


if __name__ == "__main__":
    main()
