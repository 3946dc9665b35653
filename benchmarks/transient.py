"""Benchmark: a 100-year monthly transient run on the global 0.5 degree world, implicit vs explicit.

Measured in one run:

1. implicit (backward Euler, 12 steps per year, seasonal operators) on a regular subsample of the
   default world's cells (every ``--coarsen``-th cell in lat and lon), timed over ``--years`` years and
   extrapolated linearly to all cells and 100 years (the work is linear in cells and steps);
2. accuracy on ``--acc-cells`` cells over one year against the exact propagator of the same
   piecewise-constant monthly operators (dense matrix exponential per cell);
3. the explicit (forward Euler) step that reaches the same accuracy: its step must stay below the
   stability limit dt < 2 / lambda_max of the fastest pool (L1 in warm soil: hours to days), halved
   until its one-year error is no larger than the implicit one; cost = steps x measured explicit step time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transient.py [--coarsen 4 --years 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from proda_engine import api
from proda_engine.physics.dense import dense_matrix
from proda_engine.physics.model import params_from_theta
from proda_engine.physics.operator import Operator
from proda_engine.physics.transient import DAYS_IN_MONTH, _OperatorBuilder, explicit_step, implicit_step, run_transient


def exact_year(ops, X0: torch.Tensor) -> torch.Tensor:
    """Exact solution of dX/dt = I - G_m X over the 12 months (dense expm per cell): the oracle."""
    X = X0.clone()
    L, C = X.shape[1], X.shape[2]
    for m in range(12):
        op = Operator(ops.k[m], ops.frac, ops.lo[m], ops.up[m], ops.src)
        M, b = dense_matrix(op)  # dX/dt = M X + b
        n = M.shape[1]
        # augmented system [[M, b], [0, 0]] gives X(t) = e^{Mt} X + int e^{Ms} b ds
        Aug = np.zeros((C, n + 1, n + 1))
        Aug[:, :n, :n] = M * DAYS_IN_MONTH[m]
        Aug[:, :n, n] = b * DAYS_IN_MONTH[m]
        E = torch.linalg.matrix_exp(torch.as_tensor(Aug)).numpy()
        x = X.numpy().transpose(2, 0, 1).reshape(C, n)
        x = np.einsum("cij,cj->ci", E[:, :n, :n], x) + E[:, :n, n]
        X = torch.as_tensor(x.reshape(C, 7, L).transpose(1, 2, 0).copy())
    return X


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--coarsen", type=int, default=4)
    ap.add_argument("--years", type=int, default=3)
    ap.add_argument("--acc-cells", type=int, default=150)
    args = ap.parse_args()
    eng = api.world_engine("default")
    C_all = eng.forcing.n_cells
    nlon = eng.lon.size
    iy, ix = np.divmod(eng.cells, nlon)
    idx = np.flatnonzero((iy % args.coarsen == 0) & (ix % args.coarsen == 0))
    f = eng.forcing.subset(idx)
    p = params_from_theta(np.asarray(eng.sources["proda_e2e"])[idx])
    run_transient(p, f, 1, eng.grid)  # compile / warm up
    t0 = time.perf_counter()
    run_transient(p, f, args.years, eng.grid, seasonal=True)
    t_run = time.perf_counter() - t0
    per_cell_year = t_run / (args.years * len(idx))
    print(f"implicit monthly run: {len(idx)} cells x {args.years} yr in {t_run:.2f} s "
          f"-> 100 yr x {C_all} cells (extrapolated) {per_cell_year * 100 * C_all:.0f} s")

    # accuracy and the explicit baseline on a small set of cells
    rng = np.random.default_rng(0)
    sel = np.sort(rng.choice(len(idx), min(args.acc_cells, len(idx)), replace=False))
    fs = f.subset(sel)
    ps = {k: v[sel] if v.dim() == 1 else v[..., sel] for k, v in p.items()}
    ops = _OperatorBuilder(ps, eng.grid, "conservative", True).year(fs)
    from proda_engine.physics.model import steady_state

    X0 = steady_state(ps, fs, eng.grid).pools
    ref = exact_year(ops, X0)
    dz = torch.as_tensor(eng.grid.dz)[:, None]

    def soc_err(X: torch.Tensor) -> float:
        a = (X[4:].sum(0) * dz).sum(0)
        b = (ref[4:].sum(0) * dz).sum(0)
        c = (X.sum(0) * dz).sum(0)
        d = (ref.sum(0) * dz).sum(0)
        return float(max(((a - b).abs() / b).max(), ((c - d).abs() / d).max()))

    Xi = X0.clone()
    t0 = time.perf_counter()
    for m in range(12):
        Xi = implicit_step(Xi, ops.k[m], ops.frac, ops.lo[m], ops.up[m], ops.src, DAYS_IN_MONTH[m])
    t_imp = (time.perf_counter() - t0) / 12
    e_imp = soc_err(Xi)
    lam = max(float((ops.k[m] + ops.lo[m] + ops.up[m]).max()) for m in range(12))  # max diagonal of G
    n_sub = int(np.ceil(31.0 * lam))  # dt <= 1 / max diag: within the Gershgorin stability bound 2 / (2 max diag)
    while True:
        Xe = X0.clone()
        t0 = time.perf_counter()
        steps = 0
        for m in range(12):
            n = int(np.ceil(n_sub * DAYS_IN_MONTH[m] / 31.0))
            dt = DAYS_IN_MONTH[m] / n
            for _ in range(n):
                Xe = explicit_step(Xe, ops.k[m], ops.frac, ops.lo[m], ops.up[m], ops.src, dt)
            steps += n
        t_exp_total = time.perf_counter() - t0
        e_exp = soc_err(Xe) if bool(torch.isfinite(Xe).all()) else np.inf
        if e_exp <= e_imp or n_sub > 2_000_000:
            break
        n_sub *= 2
    t_exp = t_exp_total / steps
    print(f"fastest rate k+v max {lam:.3g} d-1 (turnover {24 / lam:.2f} h); one-year SOC/total-C error vs exact: "
          f"implicit monthly {e_imp:.2e}, explicit {steps} steps/yr {e_exp:.2e}")
    print(f"per step on {len(sel)} cells: implicit {t_imp * 1e3:.2f} ms, explicit {t_exp * 1e3:.3f} ms; "
          f"per year: implicit {12 * t_imp:.3f} s, explicit {steps * t_exp:.3f} s -> explicit/implicit "
          f"{steps * t_exp / (12 * t_imp):.0f}x")


if __name__ == "__main__":
    main()
