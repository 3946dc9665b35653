"""Steady-state solver benchmark: structured (numba / torch) vs dense batched LU, and gradient cost.

Every number is measured in this one run, on this machine; the printed ratios are what the docs
quote. Dense baselines run chunk by chunk (8,192 cells) so the 9.5 GiB dense stack never exists.

    python benchmarks/solver.py            # global 65,000 cells x 20 layers + 10,000-site gradient
    python benchmarks/solver.py --quick    # smaller sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numba
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from proda_engine.grid import get_grid
from proda_engine.physics import assemble, params_from_theta, steady_state
from proda_engine.physics.dense import dense_matrix
from proda_engine.physics.operator import Operator
from proda_engine.physics.solver import solve_numba, solve_torch
from proda_engine.physics.testing import random_forcing, random_theta


def timeit(fn, repeats: int = 5) -> tuple[float, float]:
    fn()  # warm-up (JIT, caches)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), float(min(ts))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dense_time(op: Operator, chunk: int = 8192) -> tuple[float, float]:
    """Time numpy.linalg.solve on the dense stack, BLAS on 1 thread; returns (seconds, max rel. error)."""
    C = op.n_cells
    total, err = 0.0, 0.0
    X = solve_numba(op).numpy()
    with threadpool_limits(1):
        for c0 in range(0, C, chunk):
            sel = slice(c0, min(C, c0 + chunk))
            M, b = dense_matrix(op, sel)  # assembly is not timed
            t = time.perf_counter()
            x = np.linalg.solve(M, -b[..., None])[..., 0]
            total += time.perf_counter() - t
            ref = x.reshape(x.shape[0], 7, op.n_layers).transpose(1, 2, 0)
            err = max(err, float((np.abs(X[..., sel] - ref).max((0, 1)) / np.abs(ref).max((0, 1))).max()))
            del M
    return total, err


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=65_000)
    ap.add_argument("--grad-sites", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="4,000 cells and 1,000 gradient sites")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.cells, args.grad_sites = 4000, 1000
    rng = np.random.default_rng(0)
    out: dict = {"machine_cores": numba.config.NUMBA_NUM_THREADS}
    for grid_name in ("clm5_20", "clm45_10"):
        g = get_grid(grid_name)
        f = random_forcing(rng, args.cells, g)
        op = assemble(params_from_theta(random_theta(rng, args.cells)), f, g)
        rss0 = rss_mb()
        res = {}
        torch.set_num_threads(1)
        numba.set_num_threads(1)
        res["numba_1t"] = timeit(lambda op=op: solve_numba(op))
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        res["numba_2t"] = timeit(lambda op=op: solve_numba(op))
        res["torch_1t"] = timeit(lambda op=op: solve_torch(op), repeats=3)
        res["peak_rss_increase_mb"] = rss_mb() - rss0
        d, err = dense_time(op)
        res["dense_numpy_1t"] = (d, d)
        res["dense_max_rel_err"] = err
        res["speedup_numba_1t_vs_dense"] = d / res["numba_1t"][0]
        res["speedup_numba_2t_vs_dense"] = d / res["numba_2t"][0]
        out[f"forward_{grid_name}_{args.cells}"] = res
    # Gradient: forward + backward through the adjoint, 20 layers.
    g = get_grid()
    n = args.grad_sites
    f = random_forcing(rng, n, g)
    th0 = random_theta(rng, n)
    w = torch.linspace(1.0, 2.0, g.n_layers, dtype=torch.float64)[:, None]

    def grad_once(backend: str) -> None:
        th = torch.as_tensor(th0).requires_grad_(True)
        res = steady_state(params_from_theta(th), f, g, backend=backend)
        (res.soc * w).sum().backward()

    numba.set_num_threads(1)
    torch.set_num_threads(1)
    rss0 = rss_mb()
    out[f"gradient_{n}_sites"] = {
        "adjoint_numba_1t": timeit(lambda: grad_once("numba")),
        "adjoint_torch_1t": timeit(lambda: grad_once("torch"), repeats=3),
        "peak_rss_increase_mb": rss_mb() - rss0,
    }
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(2)
    out[f"gradient_{n}_sites"]["adjoint_numba_2t"] = timeit(lambda: grad_once("numba"))
    report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


def report(out: dict) -> None:
    print(f"{'case':38s} {'median':>10s} {'best':>10s}")
    for case, res in out.items():
        if not isinstance(res, dict):
            continue
        print(case)
        for k, v in res.items():
            if isinstance(v, tuple):
                print(f"  {k:36s} {v[0] * 1e3:9.1f}ms {v[1] * 1e3:9.1f}ms")
            else:
                print(f"  {k:36s} {v:10.3g}")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
