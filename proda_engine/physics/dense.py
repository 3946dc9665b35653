"""Dense reference: the full 7L x 7L matrix M = A K_xi - V in the spec's pool-major order.

For verification and benchmark baselines only. Never used on a production path: for 65,000 cells
and 20 layers the stack would need 9.5 GiB (see the solver-performance guide).
"""

from __future__ import annotations

import numpy as np

from proda_engine.physics.operator import Operator
from proda_engine.physics.transfer import TRANSFERS


def dense_matrix(op: Operator, cells: np.ndarray | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (M, b) for the selected cells: M (C, 7L, 7L) with dX/dt = M X + b, b (C, 7L).

    With ``op.shift`` set, M = -(G + diag(shift)) (the implicit-step matrix); ``src`` may have 4 or 7 pools.

    Index of pool p (0..6), layer j (0..L-1) is p*L + j (spec §(a) layout). Steady state: X = M^-1 (-b).
    """
    sel = slice(None) if cells is None else cells
    k = op.k.detach().cpu().numpy()[:, :, sel]
    L, C = k.shape[1], k.shape[2]
    frac = np.broadcast_to(op.frac.detach().cpu().numpy()[:, :, sel], (9, L, C))
    lo = op.lo.detach().cpu().numpy()[:, sel]
    up = op.up.detach().cpu().numpy()[:, sel]
    src = op.src.detach().cpu().numpy()[:, :, sel]
    n = 7 * L
    M = np.zeros((C, n, n))
    jj = np.arange(L)
    for p in range(7):
        M[:, p * L + jj, p * L + jj] = -k[p].T
    for r, d, i in TRANSFERS:
        f = (1.0 - frac[0]) if i < 0 else frac[i]
        M[:, r * L + jj, d * L + jj] += (f * k[d]).T
    for p in range(1, 7):
        rows = p * L + jj
        M[:, rows, rows] -= (lo + up).T
        M[:, rows[1:], rows[:-1]] += lo[1:].T
        M[:, rows[:-1], rows[1:]] += up[:-1].T
    if op.shift is not None:  # implicit-step operator: -(G + diag(shift)) on every pool's diagonal
        sh = op.shift_lc().detach().cpu().numpy()[:, sel]
        for p in range(7):
            M[:, p * L + jj, p * L + jj] -= sh.T
    b = np.zeros((C, n))
    for p in range(src.shape[0]):
        b[:, p * L:(p + 1) * L] = src[p].T
    return M, b


def dense_solve(op: Operator, cells: np.ndarray | slice | None = None) -> np.ndarray:
    """Steady state by dense LU: X (7, L, C) for the selected cells."""
    M, b = dense_matrix(op, cells)
    x = np.linalg.solve(M, -b[..., None])[..., 0]
    L = op.n_layers
    return x.reshape(x.shape[0], 7, L).transpose(1, 2, 0)
