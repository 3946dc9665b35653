"""What-if benchmark on the global 0.5-degree default world (about 62,000 land cells x 20 layers).

Measured in one run: one what-if (request -> maps and totals), in the dashboard's default space
(``bulk``: each value is the region's relative change of a bulk process; the engine root-solves the
multiplier that realises it, usually in one or two steady-state solves) and in the spec's theta space:
  * every mechanism stepped through new values (a slider moved to positions not visited before):
    median time per request and mean number of solves per request,
  * theta space: the first request for a new Xi value (12-month environmental means recomputed) and
    a new value of microbial CUE (every other operator piece cached),
  * warm cache: the same request again (LRU hit),
and the same perturbation recomputed through a dense batched LU (numpy, BLAS on 1 thread) for the ratio.

    python benchmarks/whatif.py [--world default] [--repeats 5] [--source NAME]
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from proda_engine import api
from proda_engine.physics import params_from_theta
from proda_engine.physics.dense import dense_matrix
from proda_engine.physics.operator import assemble
from proda_engine.products.whatif import perturb_theta, perturbation_key


def median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="default")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--source", default=None, help="parameter source (default: the world's first)")
    args = ap.parse_args(argv)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    eng = api.world_engine(args.world)
    load = time.perf_counter() - t
    source = args.source or next(iter(eng.sources))
    eng.what_if({}, source=source)  # baseline + JIT warm-up
    out = {"cells": eng.forcing.n_cells, "engine_load_s": load}
    for m in ("A", "K", "Xi", "V", "I", "NPP"):  # bulk space: a slider stepped through new positions
        vals = iter(np.linspace(0.02, 0.2, 10))
        solves = eng.stats["solves"]
        out[f"bulk_{m}_ms"] = 1e3 * median_time(lambda m=m, vals=vals: eng.what_if({m: next(vals)}, source=source),
                                               args.repeats)
        out[f"bulk_{m}_solves_per_request"] = (eng.stats["solves"] - solves) / args.repeats
    xs = iter(np.linspace(0.01, 0.2, 100))
    out["theta_cold_xi_ms"] = 1e3 * median_time(lambda: eng.what_if({"Xi": next(xs)}, source=source, space="theta"),
                                                args.repeats)
    ys = iter(np.linspace(0.01, 0.2, 100))
    out["theta_warm_solve_ms"] = 1e3 * median_time(lambda: eng.what_if({"A": next(ys)}, source=source, space="theta"),
                                                   args.repeats)
    out["warm_cache_ms"] = 1e3 * median_time(lambda: eng.what_if({"A": 0.02}, source=source), args.repeats)
    # Dense reference for the same perturbation, chunked so the 140x140 stack never fills memory.
    theta = perturb_theta(eng.sources[source], perturbation_key({"A": 0.05}))
    with torch.no_grad():
        op = assemble(params_from_theta(theta), eng.forcing, eng.grid, eng.closure)
    dense = 0.0
    with threadpool_limits(1):
        for c0 in range(0, op.n_cells, 8192):
            M, b = dense_matrix(op, slice(c0, c0 + 8192))
            t = time.perf_counter()
            np.linalg.solve(M, -b[..., None])
            dense += time.perf_counter() - t
            del M
    out["dense_solve_only_ms"] = 1e3 * dense
    out["ratio_dense_vs_warm_solve"] = out["dense_solve_only_ms"] / out["theta_warm_solve_ms"]
    for k, v in out.items():
        print(f"{k:34s} {v:12.2f}")
    return out


if __name__ == "__main__":
    main()
