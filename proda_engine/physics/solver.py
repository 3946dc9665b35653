"""Structured steady-state solver for G X = b, never building the 7L x 7L matrix.

Pool structure (spec §(f) "Solver structure"):

1. CWD has no transport and no inflow from other pools: X_CWD = I_CWD / k_CWD, one division per layer.
2. L1, L2, L3 receive only inputs and CWD fragmentation: three independent tridiagonal (Thomas)
   solves down the column, each  (k + lo + up) x_j - lo_j x_{j-1} - up_j x_{j+1} = r_j.
3. S1, S2, S3 feed each other in a cycle: one 3x3 block-tridiagonal system. The blocks linking
   neighbouring layers are scalars times the identity (all pools share the same mixing), so each
   downward step subtracts a scaled copy of the previous layer's 3x3 inverse.

No pivoting is needed: G is a column-diagonally-dominant M-matrix. Work is ~160 flops per layer
and cell instead of ~(7L)^3.

The transposed system G^T lambda = y (for adjoint gradients) has the same structure, solved in
reverse pool order: soil blocks first, then litter, then CWD.

Two interchangeable backends compute the same numbers:

* ``numba``: compiled kernels over blocks of 256 cells, cells innermost (SIMD), blocks in parallel.
  CPU only, no autograd. The fast path.
* ``torch``: the same algorithm as vectorised torch operations over cells (runs on CUDA; autograd
  can flow through it directly).

:func:`solve` wraps either in an autograd Function whose backward pass is one transposed structured
solve plus a matrix-free contraction: dL/dtheta = -lambda^T (dG/dtheta) X, dL/db = lambda.

Implicit time steps (:mod:`proda_engine.physics.transient`) solve (G + diag(s)) X = b with the same
structure: the optional ``Operator.shift`` s (d-1) is added to every pool's diagonal (CWD:
X_CWD = b_CWD / (k_CWD + s), whose decay flux k_CWD X_CWD no longer equals b_CWD), and b may carry
all seven pools (``src`` (7, L, C)). With ``shift=None`` and a 4-pool ``src`` every backend runs
exactly the steady-state arithmetic (bit-identical results).
"""

from __future__ import annotations

import os

import numba
import numpy as np
import torch

from proda_engine.physics.operator import Operator
from proda_engine.physics.threads import kernel_threads
from proda_engine.physics.transfer import (
    F_CWDL2,
    F_L1S1,
    F_L2S1,
    F_L3S2,
    F_S1S2,
    F_S1S3,
    F_S2S1,
    F_S2S3,
    F_S3S1,
)

BLOCK = 256  # cells per numba block: keeps the per-layer scratch in L1/L2 cache
BACKENDS = ("auto", "numba", "torch")

# ---------------------------------------------------------------------------------------------
# torch backend
# ---------------------------------------------------------------------------------------------


def _thomas_torch(d: torch.Tensor, a: torch.Tensor, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Solve d_j x_j - a_j x_{j-1} - c_j x_{j+1} = r_j for (L, C) arrays (a_1 = c_L = 0)."""
    L = d.shape[0]
    cp, dp = [], []
    for j in range(L):
        if j == 0:
            m = d[0]
            dp.append(r[0] / m)
        else:
            m = d[j] - a[j] * cp[j - 1]
            dp.append((r[j] + a[j] * dp[j - 1]) / m)
        cp.append(c[j] / m)
    x = [dp[L - 1]]
    for j in range(L - 2, -1, -1):
        x.append(dp[j] + cp[j] * x[-1])
    return torch.stack(x[::-1])


def _inv3(m: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Closed-form inverse of a 3x3 matrix of (C,) tensors (adjugate / determinant)."""
    (a, b, c), (d, e, f), (g, h, i) = m
    A, B, Cc = e * i - f * h, f * g - d * i, d * h - e * g
    inv_det = 1.0 / (a * A + b * B + c * Cc)
    return [
        [A * inv_det, (c * h - b * i) * inv_det, (b * f - c * e) * inv_det],
        [B * inv_det, (a * i - c * g) * inv_det, (c * d - a * f) * inv_det],
        [Cc * inv_det, (b * g - a * h) * inv_det, (a * e - b * d) * inv_det],
    ]


def _block_thomas_torch(D: list[list[torch.Tensor]], a: torch.Tensor, c: torch.Tensor,
                        r: list[torch.Tensor]) -> torch.Tensor:
    """Solve D_j x_j - a_j x_{j-1} - c_j x_{j+1} = r_j with 3x3 blocks D (entries (L, C)), scalars a, c."""
    L = a.shape[0]
    E, Y = [], []
    for j in range(L):
        Dj = [[D[p][q][j] for q in range(3)] for p in range(3)]
        rj = [r[p][j] for p in range(3)]
        if j > 0:
            s = a[j] * c[j - 1]
            Dj = [[Dj[p][q] - s * E[j - 1][p][q] for q in range(3)] for p in range(3)]
            rj = [rj[p] + a[j] * Y[j - 1][p] for p in range(3)]
        Ej = _inv3(Dj)
        E.append(Ej)
        Y.append([Ej[p][0] * rj[0] + Ej[p][1] * rj[1] + Ej[p][2] * rj[2] for p in range(3)])
    x = [Y[L - 1]]
    for j in range(L - 2, -1, -1):
        nxt = x[-1]
        x.append([Y[j][p] + c[j] * (E[j][p][0] * nxt[0] + E[j][p][1] * nxt[1] + E[j][p][2] * nxt[2])
                  for p in range(3)])
    x = x[::-1]
    return torch.stack([torch.stack([x[j][p] for j in range(L)]) for p in range(3)])


def _soil_blocks(op: Operator, transpose: bool) -> list[list[torch.Tensor]]:
    k, f = op.k, op.frac
    v = op.lo + op.up
    sh = op.shift_lc()
    if sh is not None:
        v = v + sh
    z = torch.zeros_like(k[4])
    D = [
        [k[4] + v, -f[F_S2S1] * k[5], -f[F_S3S1] * k[6]],
        [-f[F_S1S2] * k[4], k[5] + v, z],
        [-f[F_S1S3] * k[4], -f[F_S2S3] * k[5], k[6] + v],
    ]
    D = [[d.expand_as(k[4]) for d in row] for row in D]
    if transpose:
        D = [[D[q][p] for q in range(3)] for p in range(3)]
    return D


def _transposed_couplings(lo: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """G^T couples layer j to j-1 with up_{j-1} and to j+1 with lo_{j+1}."""
    zero = torch.zeros_like(lo[:1])
    return torch.cat([zero, up[:-1]]), torch.cat([lo[1:], zero])


def solve_torch(op: Operator) -> torch.Tensor:
    """Forward structured solve G X = b with torch operations; returns X (7, L, C)."""
    k, f, lo, up, src = op.tensors()
    sh = op.shift_lc()
    v = lo + up
    if sh is None:
        x0 = src[0] / k[0]
        fcwd = src[0]  # = k_CWD X_CWD exactly: the CWD decay flux equals its input
    else:
        x0 = src[0] / (k[0] + sh)
        fcwd = k[0] * x0  # part of the CWD "loss" is the shift (carbon kept for the next step)
        v = v + sh
    x1 = _thomas_torch(k[1] + v, lo, up, src[1])
    x2 = _thomas_torch(k[2] + v, lo, up, src[2] + f[F_CWDL2] * fcwd)
    x3 = _thomas_torch(k[3] + v, lo, up, src[3] + (1 - f[F_CWDL2]) * fcwd)
    r = [f[F_L1S1] * k[1] * x1 + f[F_L2S1] * k[2] * x2, f[F_L3S2] * k[3] * x3, torch.zeros_like(x1)]
    if src.shape[0] == 7:
        r = [r[i] + src[4 + i] for i in range(3)]
    xs = _block_thomas_torch(_soil_blocks(op, False), lo, up, r)
    return torch.cat([torch.stack([x0, x1, x2, x3]), xs], 0)


def solve_transposed_torch(op: Operator, y: torch.Tensor) -> torch.Tensor:
    """Transposed structured solve G^T lambda = y with torch operations; y, lambda (7, L, C)."""
    k, f, lo, up, _ = op.tensors()
    sh = op.shift_lc()
    v = lo + up if sh is None else lo + up + sh
    aT, cT = _transposed_couplings(lo, up)
    ls = _block_thomas_torch(_soil_blocks(op, True), aT, cT, [y[4], y[5], y[6]])
    l1 = _thomas_torch(k[1] + v, aT, cT, y[1] + f[F_L1S1] * k[1] * ls[0])
    l2 = _thomas_torch(k[2] + v, aT, cT, y[2] + f[F_L2S1] * k[2] * ls[0])
    l3 = _thomas_torch(k[3] + v, aT, cT, y[3] + f[F_L3S2] * k[3] * ls[1])
    if sh is None:
        l0 = y[0] / k[0] + f[F_CWDL2] * l2 + (1 - f[F_CWDL2]) * l3
    else:  # (k0 + s) l0 - k0 (f l2 + (1 - f) l3) = y0
        l0 = (y[0] + k[0] * (f[F_CWDL2] * l2 + (1 - f[F_CWDL2]) * l3)) / (k[0] + sh)
    return torch.cat([torch.stack([l0.expand_as(l1), l1, l2, l3]), ls], 0)


# ---------------------------------------------------------------------------------------------
# numba backend
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True, inline="always")
def _ca(lo, up, j, c, L, tr):  # coupling to layer above
    if tr:
        return up[j - 1, c] if j > 0 else 0.0
    return lo[j, c]


@numba.njit(cache=True, inline="always")
def _cb(lo, up, j, c, L, tr):  # coupling to layer below
    if tr:
        return lo[j + 1, c] if j < L - 1 else 0.0
    return up[j, c]


@numba.njit(cache=True)
def _nb_thomas(kp, lo, up, rhs, out, c0, n, tr, cp, dp, sh, has_shift):
    """Thomas solve for one pool over cells c0..c0+n: rhs (L, n) scratch -> out (L, C) view.

    ``has_shift``: add the diagonal shift sh (L, C) (implicit time step)."""
    L = kp.shape[0]
    for j in range(L):
        for i in range(n):
            c = c0 + i
            a = _ca(lo, up, j, c, L, tr)
            b = _cb(lo, up, j, c, L, tr)
            d = kp[j, c] + lo[j, c] + up[j, c]
            if has_shift:
                d += sh[j, c]
            if j == 0:
                m = d
                dp[j, i] = rhs[j, i] / m
            else:
                m = d - a * cp[j - 1, i]
                dp[j, i] = (rhs[j, i] + a * dp[j - 1, i]) / m
            cp[j, i] = b / m
    for i in range(n):
        out[L - 1, c0 + i] = dp[L - 1, i]
    for j in range(L - 2, -1, -1):
        for i in range(n):
            out[j, c0 + i] = dp[j, i] + cp[j, i] * out[j + 1, c0 + i]


@numba.njit(cache=True, inline="always")
def _nb_inv3(a00, a01, a02, a10, a11, a12, a20, a21, a22):
    """Inverse of a 3x3 matrix by cofactors (the S1-S3 block of one layer), row-major 9-tuple."""
    A = a11 * a22 - a12 * a21
    B = a12 * a20 - a10 * a22
    Cc = a10 * a21 - a11 * a20
    inv = 1.0 / (a00 * A + a01 * B + a02 * Cc)
    return (A * inv, (a02 * a21 - a01 * a22) * inv, (a01 * a12 - a02 * a11) * inv,
            B * inv, (a00 * a22 - a02 * a20) * inv, (a02 * a10 - a00 * a12) * inv,
            Cc * inv, (a01 * a20 - a00 * a21) * inv, (a00 * a11 - a01 * a10) * inv)


@numba.njit(cache=True)
def _nb_soil(k, frac, lo, up, rhs, out, c0, n, tr, E, Y, sh, has_shift):
    """3x3 block-tridiagonal solve for S1-S3: rhs (3, L, n) scratch -> out (3, L, C) view."""
    L = k.shape[1]
    per_layer = frac.shape[1] > 1
    for j in range(L):
        jf = j if per_layer else 0
        for i in range(n):
            c = c0 + i
            k4 = k[4, j, c]
            k5 = k[5, j, c]
            k6 = k[6, j, c]
            v = lo[j, c] + up[j, c]
            if has_shift:
                v += sh[j, c]
            a00 = k4 + v
            a11 = k5 + v
            a22 = k6 + v
            a01 = -frac[6, jf, c] * k5
            a02 = -frac[8, jf, c] * k6
            a10 = -frac[4, jf, c] * k4
            a12 = 0.0
            a20 = -frac[5, jf, c] * k4
            a21 = -frac[7, jf, c] * k5
            if tr:
                a01, a10 = a10, a01
                a02, a20 = a20, a02
                a12, a21 = a21, a12
            r0 = rhs[0, j, i]
            r1 = rhs[1, j, i]
            r2 = rhs[2, j, i]
            if j > 0:
                a = _ca(lo, up, j, c, L, tr)
                s = a * _cb(lo, up, j - 1, c, L, tr)
                a00 -= s * E[0, j - 1, i]
                a01 -= s * E[1, j - 1, i]
                a02 -= s * E[2, j - 1, i]
                a10 -= s * E[3, j - 1, i]
                a11 -= s * E[4, j - 1, i]
                a12 -= s * E[5, j - 1, i]
                a20 -= s * E[6, j - 1, i]
                a21 -= s * E[7, j - 1, i]
                a22 -= s * E[8, j - 1, i]
                r0 += a * Y[0, j - 1, i]
                r1 += a * Y[1, j - 1, i]
                r2 += a * Y[2, j - 1, i]
            e00, e01, e02, e10, e11, e12, e20, e21, e22 = _nb_inv3(a00, a01, a02, a10, a11, a12, a20, a21, a22)
            E[0, j, i] = e00
            E[1, j, i] = e01
            E[2, j, i] = e02
            E[3, j, i] = e10
            E[4, j, i] = e11
            E[5, j, i] = e12
            E[6, j, i] = e20
            E[7, j, i] = e21
            E[8, j, i] = e22
            Y[0, j, i] = e00 * r0 + e01 * r1 + e02 * r2
            Y[1, j, i] = e10 * r0 + e11 * r1 + e12 * r2
            Y[2, j, i] = e20 * r0 + e21 * r1 + e22 * r2
    for i in range(n):
        for p in range(3):
            out[p, L - 1, c0 + i] = Y[p, L - 1, i]
    for j in range(L - 2, -1, -1):
        for i in range(n):
            c = c0 + i
            b = _cb(lo, up, j, c, L, tr)
            x0 = out[0, j + 1, c]
            x1 = out[1, j + 1, c]
            x2 = out[2, j + 1, c]
            out[0, j, c] = Y[0, j, i] + b * (E[0, j, i] * x0 + E[1, j, i] * x1 + E[2, j, i] * x2)
            out[1, j, c] = Y[1, j, i] + b * (E[3, j, i] * x0 + E[4, j, i] * x1 + E[5, j, i] * x2)
            out[2, j, c] = Y[2, j, i] + b * (E[6, j, i] * x0 + E[7, j, i] * x1 + E[8, j, i] * x2)


@numba.njit(cache=True, error_model="numpy")  # as inside the parallel kernel: 1/0 -> inf, flagged per cell later
def _nb_forward_block(k, frac, lo, up, b, out, c0, n, cp, dp, rl, rs, E, Y, fc, sh, has_shift):
    """Forward structured solve G X = b for cells c0..c0+n (b: 4 or 7 pools); scratch arrays sized (.., L, n).

    Order: CWD (diagonal), then L1-L3 (one Thomas solve each, fed by CWD), then the S1-S3 block
    tridiagonal system fed by litter decay. Shared by the steady-state kernel and the fused transient one."""
    L = k.shape[1]
    per_layer = frac.shape[1] > 1
    full_rhs = b.shape[0] == 7
    for j in range(L):  # fc: the CWD decay flux k X (= the input b when there is no shift)
        for i in range(n):
            c = c0 + i
            if has_shift:
                out[0, j, c] = b[0, j, c] / (k[0, j, c] + sh[j, c])
                fc[j, i] = k[0, j, c] * out[0, j, c]
            else:
                out[0, j, c] = b[0, j, c] / k[0, j, c]
                fc[j, i] = b[0, j, c]
    for p in range(1, 4):
        for j in range(L):
            jf = j if per_layer else 0
            for i in range(n):
                c = c0 + i
                r = b[p, j, c]
                if p == 2:
                    r += frac[0, jf, c] * fc[j, i]
                elif p == 3:
                    r += (1.0 - frac[0, jf, c]) * fc[j, i]
                rl[j, i] = r
        _nb_thomas(k[p], lo, up, rl, out[p], c0, n, False, cp, dp, sh, has_shift)
    for j in range(L):
        jf = j if per_layer else 0
        for i in range(n):
            c = c0 + i
            rs[0, j, i] = (frac[1, jf, c] * k[1, j, c] * out[1, j, c]
                           + frac[2, jf, c] * k[2, j, c] * out[2, j, c])
            rs[1, j, i] = frac[3, jf, c] * k[3, j, c] * out[3, j, c]
            rs[2, j, i] = 0.0
            if full_rhs:
                rs[0, j, i] += b[4, j, c]
                rs[1, j, i] += b[5, j, c]
                rs[2, j, i] += b[6, j, c]
    _nb_soil(k, frac, lo, up, rs, out[4:7], c0, n, False, E, Y, sh, has_shift)


@numba.njit(cache=True)
def _nb_block_scratch(k, n):
    """Per-block work arrays of the structured solve for ``n`` cells: Thomas sweeps (cp, dp, rl), soil
    right-hand sides and block elimination (rs, E, Y), and the CWD decay flux fc (k X, the input b
    when there is no shift)."""
    L = k.shape[1]
    return (np.empty((L, n), k.dtype), np.empty((L, n), k.dtype), np.empty((L, n), k.dtype),
            np.empty((3, L, n), k.dtype), np.empty((9, L, n), k.dtype), np.empty((3, L, n), k.dtype),
            np.empty((L, n), k.dtype))


@numba.njit(parallel=True, cache=True)
def _nb_solve(k, frac, lo, up, b, out, tr, block, sh, has_shift):
    """Structured solve of G X = b (tr=False, b = sources (4 or 7, L, C)) or G^T X = b (tr=True, b (7, L, C)).

    With ``has_shift`` G is G + diag(sh), sh (L, C) (implicit time step)."""
    L = k.shape[1]
    C = k.shape[2]
    per_layer = frac.shape[1] > 1
    nblk = (C + block - 1) // block
    for blk in numba.prange(nblk):
        c0 = blk * block
        n = min(C, c0 + block) - c0
        cp, dp, rl, rs, E, Y, fc = _nb_block_scratch(k, n)
        if not tr:
            _nb_forward_block(k, frac, lo, up, b, out, c0, n, cp, dp, rl, rs, E, Y, fc, sh, has_shift)
        else:
            for p in range(3):
                for j in range(L):
                    for i in range(n):
                        rs[p, j, i] = b[4 + p, j, c0 + i]
            _nb_soil(k, frac, lo, up, rs, out[4:7], c0, n, True, E, Y, sh, has_shift)
            for p in range(1, 4):
                for j in range(L):
                    jf = j if per_layer else 0
                    for i in range(n):
                        c = c0 + i
                        if p == 1:
                            rl[j, i] = b[1, j, c] + frac[1, jf, c] * k[1, j, c] * out[4, j, c]
                        elif p == 2:
                            rl[j, i] = b[2, j, c] + frac[2, jf, c] * k[2, j, c] * out[4, j, c]
                        else:
                            rl[j, i] = b[3, j, c] + frac[3, jf, c] * k[3, j, c] * out[5, j, c]
                _nb_thomas(k[p], lo, up, rl, out[p], c0, n, True, cp, dp, sh, has_shift)
            for j in range(L):
                jf = j if per_layer else 0
                for i in range(n):
                    c = c0 + i
                    f0 = frac[0, jf, c]
                    if has_shift:  # (k0 + s) l0 - k0 (f l2 + (1 - f) l3) = y0
                        out[0, j, c] = ((b[0, j, c] + k[0, j, c] * (f0 * out[2, j, c] + (1.0 - f0) * out[3, j, c]))
                                        / (k[0, j, c] + sh[j, c]))
                    else:
                        out[0, j, c] = b[0, j, c] / k[0, j, c] + f0 * out[2, j, c] + (1.0 - f0) * out[3, j, c]


def _as_np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


def solve_numba(op: Operator, *, transpose: bool = False, y: torch.Tensor | None = None) -> torch.Tensor:
    """Structured solve with the compiled kernel (CPU). ``transpose=True`` solves G^T lambda = y."""
    k, f, lo, up, src = op.tensors()
    dtype = k.dtype
    kk = _as_np(k)
    ff = _as_np(f.expand(9, f.shape[1], k.shape[2]))
    b = _as_np(y if transpose else src).astype(kk.dtype, copy=False)
    out = np.empty(kk.shape, kk.dtype)
    s = op.shift_lc()
    sh = np.zeros((1, 1), kk.dtype) if s is None else _as_np(s).astype(kk.dtype, copy=False)
    with kernel_threads(kk.shape[2]):
        _nb_solve(kk, ff.astype(kk.dtype, copy=False), _as_np(lo).astype(kk.dtype, copy=False),
                  _as_np(up).astype(kk.dtype, copy=False), b, out, transpose, BLOCK, sh, s is not None)
    return torch.from_numpy(out).to(dtype=dtype)


# ---------------------------------------------------------------------------------------------
# dispatch and autograd
# ---------------------------------------------------------------------------------------------


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> numba on CPU, torch on CUDA (or when PRODA_SOLVER=torch)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, found {backend!r}")
    if backend == "auto":
        backend = os.environ.get("PRODA_SOLVER", "numba" if device.type == "cpu" else "torch")
    if backend == "numba" and device.type != "cpu":
        raise ValueError("the numba backend runs on the CPU only; use backend='torch' on CUDA")
    return backend


def _solve_nograd(op: Operator, backend: str) -> torch.Tensor:
    with torch.no_grad():
        return solve_numba(op) if backend == "numba" else solve_torch(op)


def _solve_t_nograd(op: Operator, y: torch.Tensor, backend: str) -> torch.Tensor:
    with torch.no_grad():
        return solve_numba(op, transpose=True, y=y) if backend == "numba" else solve_transposed_torch(op, y)


def _parameter_gradients(lam: torch.Tensor, X: torch.Tensor, k: torch.Tensor, frac: torch.Tensor):
    """Gradients of L through X = G^-1 b: dL/dtheta = -lambda^T (dG/dtheta) X, written out per piece.

    With F = k X (decay flux) and lambda the adjoint (7, L, C):
      dG X/dk_p    = X_p (lambda_p - sum_r f_{p->r} lambda_r)
      dG X/df_{d->r} = -k_d X_d lambda_r   (CWD -> L3 uses 1 - f_cwdl2, hence lambda_3 - lambda_2)
      dG X/dlo_j   = sum_{p>0} lambda_pj (X_pj - X_p,j-1),  dG X/dup_j = sum_{p>0} lambda_pj (X_pj - X_p,j+1)
    All elementwise on (L, C); fractions are summed over layers when they are per cell.
    """
    f = frac
    F = k * X
    l0, l1, l2, l3, l4, l5, l6 = lam
    gk = -X * torch.stack([
        l0 - f[F_CWDL2] * l2 - (1 - f[F_CWDL2]) * l3,
        l1 - f[F_L1S1] * l4,
        l2 - f[F_L2S1] * l4,
        l3 - f[F_L3S2] * l5,
        l4 - f[F_S1S2] * l5 - f[F_S1S3] * l6,
        l5 - f[F_S2S1] * l4 - f[F_S2S3] * l6,
        l6 - f[F_S3S1] * l4,
    ])
    gf = torch.stack([
        F[0] * (l2 - l3), F[1] * l4, F[2] * l4, F[3] * l5, F[4] * l5, F[4] * l6, F[5] * l4, F[5] * l6,
        F[6] * l4,
    ])
    if frac.shape[1] == 1:
        gf = gf.sum(1, keepdim=True)
    Xs, ls = X[1:], lam[1:]
    zero = torch.zeros_like(Xs[:, :1])
    glo = -(ls * (Xs - torch.cat([zero, Xs[:, :-1]], 1))).sum(0)
    gup = -(ls * (Xs - torch.cat([Xs[:, 1:], zero], 1))).sum(0)
    return gk, gf, glo, gup


class _StructuredSteadyState(torch.autograd.Function):
    """X = G(k, frac, lo, up)^-1 b(src) with an adjoint backward pass (one transposed solve)."""

    @staticmethod
    def forward(ctx, k, frac, lo, up, src, shift, backend):
        X = _solve_nograd(Operator(k, frac, lo, up, src, shift), backend)
        ctx.backend = backend
        ctx.save_for_backward(k, frac, lo, up, src, shift, X)
        return X

    @staticmethod
    def backward(ctx, gX):
        k, frac, lo, up, src, shift, X = ctx.saved_tensors
        lam = _solve_t_nograd(Operator(k, frac, lo, up, src, shift), gX.contiguous(), ctx.backend)
        # One bad site never poisons shared weights: zero its adjoint and state.
        ok = torch.isfinite(lam).all(0).all(0) & torch.isfinite(X).all(0).all(0)
        if not bool(ok.all()):
            lam = torch.where(ok, lam, torch.zeros_like(lam))
            X = torch.where(ok, X, torch.zeros_like(X))
        need = ctx.needs_input_grad
        gk, gf, glo, gup = _parameter_gradients(lam, X, k, frac)
        grads = [gk if need[0] else None, gf if need[1] else None, glo if need[2] else None,
                 gup if need[3] else None]
        g_src = lam[:src.shape[0]] if need[4] else None
        g_shift = None
        if shift is not None and need[5]:  # dG X/ds = X on every pool: dL/ds = -sum_p lambda_p X_p
            g_shift = -(lam * X).sum(0)
            if shift.dim() == 1:
                g_shift = g_shift.sum(0)
        return (*grads, g_src, g_shift, None)


def solve(op: Operator, backend: str = "auto") -> torch.Tensor:
    """Steady state X (7, L, C) of the structured operator; differentiable via the adjoint.

    ``backend``: ``auto`` (numba on CPU, torch on CUDA), ``numba`` or ``torch``. When no input
    requires gradients the kernel is called directly (no autograd bookkeeping).
    """
    be = resolve_backend(backend, op.k.device)
    if not any(t.requires_grad for t in op.tensors()) and not (op.shift is not None and op.shift.requires_grad):
        return _solve_nograd(op, be)
    return _StructuredSteadyState.apply(*op.tensors(), op.shift, be)


def solve_transposed(op: Operator, y: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """lambda = G^-T y (no autograd), (7, L, C)."""
    return _solve_t_nograd(op, y, resolve_backend(backend, op.k.device))
