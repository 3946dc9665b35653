"""Outputs and bulk diagnostics of a steady state (spec §(i), §(j), §(q) item 1).

All functions take a :class:`~proda_engine.physics.model.SteadyState` (torch tensors, cells last)
and return (C,) tensors unless stated. Units: stocks g C m-2, fluxes g C m-2 yr-1, times yr.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from proda_engine.grid import DEPTH_INTERVALS, Grid
from proda_engine.physics.forcing import Forcing
from proda_engine.physics.inputs import input_profile
from proda_engine.physics.model import SteadyState
from proda_engine.physics.operator import _mix
from proda_engine.physics.scalars import diagnostic_modifier
from proda_engine.physics.solver import BLOCK, _nb_block_scratch, _nb_forward_block
from proda_engine.physics.threads import kernel_threads
from proda_engine.physics.transfer import (
    F_L1S1,
    F_L2S1,
    F_L3S2,
    F_S1S2,
    F_S1S3,
    F_S2S1,
    F_S2S3,
    F_S3S1,
    TAU_NAMES,
    respiration_fractions,
)

DAYS = 365.0


def _dz(grid: Grid, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(grid.dz, dtype=like.dtype, device=like.device)[:, None]


def layer_stock(soc: torch.Tensor, grid: Grid, top: float = 0.0, bottom: float | None = None) -> torch.Tensor:
    """Stock in [top, bottom] m by the partial-layer rule: sum_j SOC_j dz_j w_j, g C m-2.

    ``soc`` (L, C) in g C m-3. ``bottom=None`` is the whole profile (0-8.6 m on clm5_20).
    """
    w = torch.as_tensor(grid.interval_weights(top, bottom), dtype=soc.dtype, device=soc.device)[:, None]
    return (soc * _dz(grid, soc) * w).sum(0)


def stocks(res: SteadyState, intervals: dict[str, tuple[float, float | None]] | None = None) -> dict[str, torch.Tensor]:
    """SOC stocks (S1+S2+S3) for the standard depth intervals, g C m-2 each (C,)."""
    return interval_stocks(res.soc, res.grid, intervals)


def interval_stocks(soc: torch.Tensor, grid: Grid,
                    intervals: dict[str, tuple[float, float | None]] | None = None) -> dict[str, torch.Tensor]:
    """Stocks for several depth intervals in one matrix product: W (n, L) @ (SOC dz) (L, C), g C m-2."""
    intervals = intervals or DEPTH_INTERVALS
    W = torch.as_tensor(np.stack([grid.interval_weights(t, b) for t, b in intervals.values()]),
                        dtype=soc.dtype, device=soc.device)
    out = W @ (soc * _dz(grid, soc))
    return dict(zip(intervals, out))


def total_input(forcing: Forcing) -> torch.Tensor:
    """Plant carbon input C_in = sum of the four annual inputs, g C m-2 yr-1 (the `NPP` diagnostic)."""
    return forcing.inputs.sum(0)


def turnover(res: SteadyState, forcing: Forcing, top: float = 0.0, bottom: float | None = None) -> torch.Tensor:
    """Bulk turnover (residence) time tau = S / C_in, yr, for a depth interval (default whole profile).

    Equal to solving with inputs normalised by C_in (the system is linear in the inputs).
    """
    return layer_stock(res.soc, res.grid, top, bottom) / total_input(forcing)


def respiration(res: SteadyState) -> torch.Tensor:
    """Heterotrophic respiration sum_{p,j} r_p k_pj X_pj dz_j * 365, g C m-2 yr-1."""
    r = respiration_fractions(res.operator.frac)  # (7, Lf, C)
    flux = r * res.operator.k * res.pools
    return (flux * _dz(res.grid, flux)[None]).sum((0, 1)) * DAYS


def transport_outflow(res: SteadyState) -> torch.Tensor:
    """Net carbon leaving the column through transport, sum_j dz_j (V X)_j * 365, g C m-2 yr-1.

    Zero (round-off) with the conservative closure; the bedrock sink with the legacy closure.
    """
    op = res.operator
    vx = _mix(res.pools[1:], op.lo, op.up)
    return (vx * _dz(res.grid, vx)[None]).sum((0, 1)) * DAYS


def mass_balance_residual(res: SteadyState, forcing: Forcing) -> torch.Tensor:
    """Relative residual (C_in - respiration - transport outflow) / C_in, unitless (spec §(q) item 1)."""
    cin = total_input(forcing)
    return (cin - respiration(res) - transport_outflow(res)) / cin


def apparent_beta(forcing: Forcing, grid: Grid, beta: torch.Tensor) -> torch.Tensor:
    """Input-allocation diagnostic I_bar = mean_{j: C_j<1} (1 - C_j)^(1/(100 z_j)) (spec §(j) item 2).

    C_j is the cumulative input fraction to the bottom of layer j; z_j the node depth (m). Cells with
    all input in the top layer (permafrost) have no qualifying layer and get NaN.
    """
    phi = input_profile(forcing, grid, beta)
    cum = torch.cumsum(phi, 0)
    z = torch.as_tensor(grid.z_node, dtype=phi.dtype, device=phi.device)[:, None]
    use = cum < 1.0 - 1e-12
    val = torch.clamp(1.0 - cum, min=1e-300) ** (1.0 / (100.0 * z))
    n = use.sum(0)
    out = torch.where(use, val, torch.zeros_like(val)).sum(0) / n.clamp(min=1)
    return torch.where(n > 0, out, torch.full_like(out, float("nan")))


def microbial_cue(X: torch.Tensor, frac: torch.Tensor, params: dict[str, torch.Tensor], xhat: torch.Tensor,
                  grid: Grid) -> torch.Tensor:
    """Flux-weighted microbial CUE (spec §(j) item 5), (C,), unitless.

    CUE = sum_d e_d F_d / sum_d F_d over donors L1, L2, L3, S1, S2, S3, with e_d the donor's summed
    transfer fractions and the approximate flux F_d = sum_j X_dj tau_d^-1 xi_hat_j dz_j (xi_hat without
    xi_O and xi_N, as in the original). CWD fragmentation is not microbial and is excluded.
    """
    f = frac
    taus = torch.stack([params[n] for n in TAU_NAMES[1:]])  # L1, L2, L3(=L2), S1, S2, S3
    w = xhat * _dz(grid, X)  # (L, C)
    donors = [f[F_L1S1], f[F_L2S1], f[F_L3S2], f[F_S1S2] + f[F_S1S3], f[F_S2S1] + f[F_S2S3], f[F_S3S1]]
    num = torch.zeros_like(taus[0])
    den = torch.zeros_like(taus[0])
    for d in range(6):
        xw = X[d + 1] * w  # (L, C) approximate decomposition flux of donor d, times tau_d
        if f.shape[1] == 1:  # per-cell fractions: sum over layers first
            flux = xw.sum(0) / taus[d]
            num = num + donors[d][0] * flux
        else:
            flux_l = xw / taus[d]
            flux = flux_l.sum(0)
            num = num + (donors[d] * flux_l).sum(0)
        den = den + flux
    return num / den


def bulk_diagnostics(res: SteadyState, forcing: Forcing) -> dict[str, torch.Tensor]:
    """The bulk processes of spec §(j): NPP, I, K, Xi, A (CUE), V, plus turnover and stocks.

    Returns a dict of (C,) tensors:
        ``input`` C_in (g C m-2 yr-1); ``allocation`` apparent beta (1); ``decomposition`` stock-weighted
        baseline SOC rate K_bar (yr-1); ``environment`` stock-weighted <xi_T><xi_W>xi_D (1); ``cue``
        flux-weighted microbial CUE (1); ``transport`` stock-weighted 365 diag(V) (yr-1);
        ``turnover`` S/C_in (yr); ``stock`` whole-profile SOC (g C m-2).
    """
    p, grid = res.params, res.grid
    X = res.pools
    dz = _dz(grid, X)
    soc_layer = res.soc * dz  # (L, C) g C m-2 per layer
    stock = soc_layer.sum(0)
    w = soc_layer / stock[None]
    # K: stock-weighted mean baseline rate of the SOC pools
    S = (X[4:7] * dz[None]).sum(1)  # (3, C)
    tau = torch.stack([p["tau4s1"], p["tau4s2"], p["tau4s3"]])
    kbar = ((1.0 / tau) * S).sum(0) / S.sum(0)
    # Xi and CUE use xi_hat = <xi_T><xi_W> xi_D (no O, no N)
    xhat = diagnostic_modifier(forcing, grid, p["q10"], p["wscaling"], p["efolding"])
    env = (w * xhat).sum(0)
    cue = microbial_cue(X, res.operator.frac, p, xhat, grid)
    vdiag = (res.operator.lo + res.operator.up) * DAYS
    trans = (w * vdiag).sum(0)
    cin = total_input(forcing)
    return {
        "input": cin,
        "allocation": apparent_beta(forcing, grid, p["beta"]),
        "decomposition": kbar,
        "environment": env,
        "cue": cue,
        "transport": trans,
        "turnover": stock / cin,
        "stock": stock,
    }


@numba.njit(cache=True, error_model="numpy")  # 0/0 -> NaN (a cell without decay flux), flagged by status
def _nb_summary_block(X, c0, n, k, src, W, w, inv_tau, eff, rtol, check_op, soc, stocks, cue, status):
    """Cells c0..c0+n-1: status, SOC per layer, interval stocks (W @ SOC dz) and flux-weighted CUE.

    CUE = sum_d eff_d F_d / sum_d F_d over the six respiring donors d (L1, L2, L3, S1, S2, S3), with
    F_d = X_d w / tau_d the depth-integrated decay flux (w = xi dz); status 1 non-finite, 2 negative
    beyond ``rtol`` x max|X|, 3 invalid operator (only when ``check_op``).
    """
    L = X.shape[1]
    nI = W.shape[0]
    for c in range(c0, c0 + n):
        xmin = np.inf
        xmax = 0.0
        xsum = 0.0
        kmin = np.inf
        ksum = 0.0
        ssum = 0.0
        num = 0.0
        den = 0.0
        for q in range(nI):
            stocks[q, c] = 0.0
        for j in range(L):
            for p in range(7):
                x = X[p, j, c]
                xsum += x
                xmin = min(xmin, x)
                xmax = max(xmax, abs(x))
            if check_op:
                for p in range(7):
                    kmin = min(kmin, k[p, j, c])
                    ksum += k[p, j, c]
                for p in range(4):
                    ssum += src[p, j, c]
            s = X[4, j, c] + X[5, j, c] + X[6, j, c]
            soc[j, c] = s
            for q in range(nI):
                stocks[q, c] += W[q, j] * s
            for d in range(6):
                flux = X[d + 1, j, c] * w[j, c] * inv_tau[d, c]
                num += eff[d, c] * flux
                den += flux
        cue[c] = num / den
        st = 0
        if not xmin >= -rtol * xmax:
            st = 2
        if not np.isfinite(xsum):
            st = 1
        if check_op and not (np.isfinite(ksum) and np.isfinite(ssum) and kmin > 0.0):
            st = 3
        status[c] = st


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _nb_summaries(X, k, src, W, w, inv_tau, eff, rtol, check_op, soc, stocks, cue, status, block):
    """:func:`_nb_summary_block` over all cells, blocks of ``block`` cells in parallel."""
    C = X.shape[2]
    nblk = (C + block - 1) // block
    for blk in numba.prange(nblk):
        c0 = blk * block
        _nb_summary_block(X, c0, min(C, c0 + block) - c0, k, src, W, w, inv_tau, eff, rtol, check_op, soc, stocks,
                          cue, status)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _nb_solve_summaries(k, frac, lo, up, b, out, block, W, w, inv_tau, eff, rtol, check_op, soc, stocks, cue, status):
    """Solve G X = b block by block and summarise each block while its X is still in cache.

    The same arithmetic as ``solver._nb_solve`` (forward, no shift) followed by
    :func:`_nb_summary_block`: the separate summary pass re-read the whole (7, L, C) state from memory
    (~20-25 ms of a ~150 ms what-if step on the globe, profiled).
    """
    C = k.shape[2]
    nblk = (C + block - 1) // block
    sh = np.zeros((1, 1), k.dtype)
    for blk in numba.prange(nblk):
        c0 = blk * block
        n = min(C, c0 + block) - c0
        cp, dp, rl, rs, E, Y, fc = _nb_block_scratch(k, n)
        _nb_forward_block(k, frac, lo, up, b, out, c0, n, cp, dp, rl, rs, E, Y, fc, sh, False)
        _nb_summary_block(out, c0, n, k, b, W, w, inv_tau, eff, rtol, check_op, soc, stocks, cue, status)


def _summary_inputs(op, params: dict[str, torch.Tensor], xhat: torch.Tensor, grid: Grid,
                    intervals: dict[str, tuple[float, float | None]]):
    """Kernel inputs shared by the summary kernels: interval weights W (nI, L) times dz, w = xi dz (L, C),
    1/tau (6, C) and the CUE efficiency of each donor's outflow (6, C)."""
    f = op.frac
    W = np.stack([grid.interval_weights(t, b) * grid.dz for t, b in intervals.values()])
    w = np.ascontiguousarray((xhat * _dz(grid, xhat)).detach().numpy(), dtype=np.float64)
    taus = torch.stack([params[n] for n in TAU_NAMES[1:]]).detach().numpy()
    eff = torch.stack([f[F_L1S1], f[F_L2S1], f[F_L3S2], f[F_S1S2] + f[F_S1S3], f[F_S2S1] + f[F_S2S3],
                       f[F_S3S1]])[:, 0].detach().numpy()
    return W, w, np.ascontiguousarray(1.0 / taus), np.ascontiguousarray(eff, dtype=np.float64)


def _summary_outputs(n_layers: int, C: int, nI: int):
    return np.empty((n_layers, C)), np.empty((nI, C)), np.empty(C), np.empty(C, dtype=np.int8)


def fused_summaries(res_pools: torch.Tensor, op, params: dict[str, torch.Tensor], xhat: torch.Tensor, grid: Grid,
                    intervals: dict[str, tuple[float, float | None]] | None = None, rtol: float = 1e-9,
                    op_valid: torch.Tensor | None = None):
    """Status, SOC (L, C), interval stocks (g C m-2) and CUE in one compiled pass (CPU, no autograd).

    Same numbers as :func:`~proda_engine.physics.model.cell_status`, ``soc``, :func:`interval_stocks`
    and :func:`microbial_cue` (tested); used on the what-if hot path where each separate pass over
    the (7, L, C) state costs as much as the solve. Per-layer fractions (default-CLM5 preset) fall
    back to the separate functions. ``op_valid`` (C,) is the operator's per-cell validity when the
    caller already knows it (cached operator pieces); then the kernel does not re-read ``k`` and ``src``.
    """
    from proda_engine.physics.model import cell_status

    intervals = intervals or DEPTH_INTERVALS
    f = op.frac
    if f.shape[1] != 1 or res_pools.device.type != "cpu":
        soc = res_pools[4:7].sum(0)
        return (cell_status(op, res_pools, rtol), soc, interval_stocks(soc, grid, intervals),
                microbial_cue(res_pools, f, params, xhat, grid))
    X = np.ascontiguousarray(res_pools.detach().numpy(), dtype=np.float64)
    C = X.shape[2]
    W, w, inv_tau, eff = _summary_inputs(op, params, xhat, grid, intervals)
    soc, stocks, cue, status = _summary_outputs(X.shape[1], C, len(intervals))
    check_op = op_valid is None
    k = op.k.detach().numpy() if check_op else np.ones((7, 1, 1))
    src = op.src.detach().numpy() if check_op else np.zeros((4, 1, 1))
    with kernel_threads(C):
        _nb_summaries(X, np.ascontiguousarray(k, dtype=np.float64), np.ascontiguousarray(src, dtype=np.float64),
                      W, w, inv_tau, eff, rtol, check_op, soc, stocks, cue, status, BLOCK)
    return _summary_tensors(status, soc, stocks, cue, intervals, op_valid)


def _summary_tensors(status, soc, stocks, cue, intervals, op_valid):
    if op_valid is not None:  # the kernel skipped the operator check: apply the caller's validity
        status[~op_valid.numpy()] = 3  # Status.INVALID_INPUT
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    return t(status), t(soc), dict(zip(intervals, t(stocks))), t(cue)


def solve_summaries(op, params: dict[str, torch.Tensor], xhat: torch.Tensor, grid: Grid, *,
                    intervals: dict[str, tuple[float, float | None]] | None = None, rtol: float = 1e-9,
                    op_valid: torch.Tensor | None = None, out: np.ndarray | None = None, backend: str = "auto"):
    """Steady state X = G^-1 b and :func:`fused_summaries` of it, in one compiled pass on the CPU.

    Returns ``(status, soc, stocks, cue)`` as :func:`fused_summaries` does (the state itself is not
    kept). ``out`` is an optional (7, L, C) float64 work array for X, reused between calls: a fresh
    69 MB array for the globe costs its page faults on every solve (~10 ms of ~60, measured).
    Falls back to :func:`~proda_engine.physics.solver.solve` + :func:`fused_summaries` off the CPU,
    with per-layer fractions, an implicit-step shift, or inputs that require gradients.
    """
    from proda_engine.physics.solver import _as_np, resolve_backend, solve

    intervals = intervals or DEPTH_INTERVALS
    be = resolve_backend(backend, op.k.device)
    grads = any(t.requires_grad for t in op.tensors())
    if be != "numba" or op.frac.shape[1] != 1 or op.shift is not None or grads:
        return fused_summaries(solve(op, backend), op, params, xhat, grid, intervals, rtol, op_valid)
    k, f, lo, up, src = op.tensors()
    C = k.shape[2]
    f = f.expand(9, f.shape[1], C)  # a shared (9, 1, 1) fraction set becomes one column per cell
    k, f, lo, up, src = (_as_np(t).astype(np.float64, copy=False) for t in (k, f, lo, up, src))
    if out is None or out.shape != k.shape or out.dtype != np.float64:
        out = np.empty(k.shape)
    W, w, inv_tau, eff = _summary_inputs(op, params, xhat, grid, intervals)
    soc, stocks, cue, status = _summary_outputs(k.shape[1], C, len(intervals))
    check_op = op_valid is None
    with kernel_threads(C):
        _nb_solve_summaries(k, f, lo, up, src, out, BLOCK, W, w, inv_tau, eff, rtol, check_op,
                            soc, stocks, cue, status)
    return _summary_tensors(status, soc, stocks, cue, intervals, op_valid)


@numba.njit(cache=True, error_model="numpy")  # 0/0 -> NaN (a cell without SOC), judged by the caller
def _nb_bulk_block(X, c0, n, xw, xhat, inv_tau, eff, lo, up, dz, Wf, num, den, kbar, env, trans):
    """Cells c0..c0+n-1 of X (7, L, C): per-interval CUE flux sums and K̄, ξ̄, V̄ (spec §(j) items 3-6).

    ``xw`` = xi_hat dz (L, C); ``eff`` (6, Lf, C) the donors' summed transfer fractions (Lf = 1 or L);
    ``Wf`` (nI, L) the fraction of each layer inside each depth interval. num/den (nI, C) receive
    sum_d eff_d F_d and sum_d F_d over the interval's layers, F_d = X_d xi_hat dz / tau_d.
    """
    L = X.shape[1]
    nI = Wf.shape[0]
    per_layer = eff.shape[1] > 1
    for c in range(c0, c0 + n):
        for q in range(nI):
            num[q, c] = 0.0
            den[q, c] = 0.0
        tot = 0.0
        e = 0.0
        v = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for j in range(L):
            a = X[4, j, c] * dz[j]
            b = X[5, j, c] * dz[j]
            g = X[6, j, c] * dz[j]
            s = a + b + g
            s1 += a
            s2 += b
            s3 += g
            tot += s
            e += s * xhat[j, c]
            v += s * (lo[j, c] + up[j, c])
            jl = j if per_layer else 0
            nj = 0.0
            dj = 0.0
            for d in range(6):
                f = X[d + 1, j, c] * xw[j, c] * inv_tau[d, c]
                nj += eff[d, jl, c] * f
                dj += f
            for q in range(nI):
                num[q, c] += Wf[q, j] * nj
                den[q, c] += Wf[q, j] * dj
        kbar[c] = (inv_tau[3, c] * s1 + inv_tau[4, c] * s2 + inv_tau[5, c] * s3) / (s1 + s2 + s3)
        env[c] = e / tot
        trans[c] = v * DAYS / tot


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _nb_bulk_all(X, xw, xhat, inv_tau, eff, lo, up, dz, Wf, num, den, kbar, env, trans, block):
    """:func:`_nb_bulk_block` over all cells of a solved state, blocks in parallel."""
    C = X.shape[2]
    nblk = (C + block - 1) // block
    for blk in numba.prange(nblk):
        c0 = blk * block
        _nb_bulk_block(X, c0, min(C, c0 + block) - c0, xw, xhat, inv_tau, eff, lo, up, dz, Wf, num, den, kbar, env,
                       trans)


@numba.njit(parallel=True, cache=True, error_model="numpy", nogil=True)  # two threads solve at once
def _nb_solve_bulk(k, frac, lo, up, b, out, block, W, w, inv_tau, eff1, rtol, check_op, soc, stocks, cue, status,
                   xhat, eff, dz, Wf, num, den, kbar, env, trans):
    """:func:`_nb_solve_summaries` plus :func:`_nb_bulk_block` on each block while its X is in cache."""
    C = k.shape[2]
    nblk = (C + block - 1) // block
    sh = np.zeros((1, 1), k.dtype)
    for blk in numba.prange(nblk):
        c0 = blk * block
        n = min(C, c0 + block) - c0
        cp, dp, rl, rs, E, Y, fc = _nb_block_scratch(k, n)
        _nb_forward_block(k, frac, lo, up, b, out, c0, n, cp, dp, rl, rs, E, Y, fc, sh, False)
        _nb_summary_block(out, c0, n, k, b, W, w, inv_tau, eff1, rtol, check_op, soc, stocks, cue, status)
        _nb_bulk_block(out, c0, n, w, xhat, inv_tau, eff, lo, up, dz, Wf, num, den, kbar, env, trans)


def solve_bulk_summaries(op, params: dict[str, torch.Tensor], xhat: torch.Tensor, grid: Grid, *,
                         intervals: dict[str, tuple[float, float | None]] | None = None, rtol: float = 1e-9,
                         op_valid: torch.Tensor | None = None, out: np.ndarray | None = None):
    """:func:`solve_summaries` plus the solve-dependent bulk processes of spec §(j), in one compiled pass.

    Returns ``(status, soc, stocks, bulk)``: status (C,), SOC (L, C) g C m-3, interval stocks (g C m-2)
    as in :func:`solve_summaries`, and ``bulk`` with numpy (C,) arrays ``decomposition`` K̄ (yr-1),
    ``environment`` ξ̄ (1), ``transport`` V̄ (yr-1) and ``cue``: interval -> flux-weighted CUE of the
    layers inside the interval (partial-layer rule of the stocks; ``whole`` is :func:`microbial_cue`).
    Per-layer transfer fractions are supported. Same numbers as :func:`bulk_diagnostics` (tested).
    ``out``: optional (7, L, C) float64 work array for the state X (kept by the caller between solves).
    """
    from proda_engine.physics.model import cell_status
    from proda_engine.physics.solver import _as_np, resolve_backend, solve

    intervals = intervals or DEPTH_INTERVALS
    f = op.frac
    C = op.k.shape[2]
    W, w, inv_tau, _ = _summary_inputs(op, params, xhat, grid, intervals)
    Wf = np.ascontiguousarray(W / grid.dz[None, :])
    eff = torch.stack([f[F_L1S1], f[F_L2S1], f[F_L3S2], f[F_S1S2] + f[F_S1S3], f[F_S2S1] + f[F_S2S3],
                       f[F_S3S1]]).detach().numpy()
    eff = np.ascontiguousarray(np.broadcast_to(eff, (6, eff.shape[1], C)), dtype=np.float64)
    xh = np.ascontiguousarray(xhat.detach().numpy(), dtype=np.float64)
    dz = np.ascontiguousarray(grid.dz, dtype=np.float64)
    nI = len(intervals)
    num, den = np.empty((nI, C)), np.empty((nI, C))
    kbar, env, trans = np.empty(C), np.empty(C), np.empty(C)
    fast = (op.k.device.type == "cpu" and resolve_backend("auto", op.k.device) == "numba" and op.shift is None
            and not any(t.requires_grad for t in op.tensors()))
    if fast:
        k, fr, lo, up, src = op.tensors()
        fr = fr.expand(9, fr.shape[1], C)
        k, fr, lo, up, src = (_as_np(t).astype(np.float64, copy=False) for t in (k, fr, lo, up, src))
        if out is None or out.shape != k.shape or out.dtype != np.float64:
            out = np.empty(k.shape)
        soc, stocks, cue, status = _summary_outputs(k.shape[1], C, nI)
        check_op = op_valid is None
        with kernel_threads(C):
            _nb_solve_bulk(k, fr, lo, up, src, out, BLOCK, W, w, inv_tau, np.ascontiguousarray(eff[:, 0, :]), rtol,
                           check_op, soc, stocks, cue, status, xh, eff, dz, Wf, num, den, kbar, env, trans)
        status_t, soc_t, stocks_t, _ = _summary_tensors(status, soc, stocks, cue, intervals, op_valid)
    else:
        X = solve(op)
        soc_t = X[4:7].sum(0)
        status_t = cell_status(op, X, rtol)
        if op_valid is not None:
            status_t = torch.where(op_valid, status_t, torch.full_like(status_t, 3))
        stocks_t = interval_stocks(soc_t, grid, intervals)
        Xn = np.ascontiguousarray(X.detach().cpu().numpy(), dtype=np.float64)
        with kernel_threads(C):
            _nb_bulk_all(Xn, w, xh, inv_tau, eff, _as_np(op.lo).astype(np.float64, copy=False),
                         _as_np(op.up).astype(np.float64, copy=False), dz, Wf, num, den, kbar, env, trans, BLOCK)
    with np.errstate(divide="ignore", invalid="ignore"):
        cue_by = {name: num[i] / den[i] for i, name in enumerate(intervals)}
    return status_t, soc_t, stocks_t, {"decomposition": kbar, "environment": env, "transport": trans, "cue": cue_by}


@numba.njit(parallel=True, cache=True)
def _nb_apparent_beta(beta, top, zi, z, out):
    """:func:`apparent_beta` per cell from beta (C,) and the permafrost rule ``top`` (C,) (NaN there)."""
    L = zi.shape[0]
    for c in numba.prange(beta.shape[0]):
        if top[c]:
            out[c] = np.nan
            continue
        lnb = np.log(beta[c])
        total = 1.0 - np.exp(lnb * 100.0 * zi[L - 1])
        cum = 0.0
        upper = 1.0
        s = 0.0
        n = 0
        for j in range(L):
            lower = np.exp(lnb * 100.0 * zi[j])
            cum += (upper - lower) / total
            upper = lower
            if cum < 1.0 - 1e-12:
                s += max(1.0 - cum, 1e-300) ** (1.0 / (100.0 * z[j]))
                n += 1
        out[c] = s / n if n > 0 else np.nan


def apparent_beta_fast(forcing: Forcing, grid: Grid, beta: np.ndarray | torch.Tensor,
                       cells: np.ndarray | None = None) -> np.ndarray:
    """:func:`apparent_beta` in one compiled pass (numpy (C,) or (len(cells),)), for root solves on Ī."""
    from proda_engine.physics.inputs import permafrost_top_only

    key = "permafrost_top_only"
    if key not in forcing._derived:
        forcing._derived[key] = permafrost_top_only(forcing).detach().cpu().numpy()
    top = forcing._derived[key]
    b = np.ascontiguousarray(beta.detach().cpu().numpy() if isinstance(beta, torch.Tensor) else beta, dtype=np.float64)
    if cells is not None:
        top = top[cells]
        b = b[cells] if b.shape[0] != len(top) else b
    out = np.empty(b.shape[0])
    _nb_apparent_beta(b, np.ascontiguousarray(top), np.asarray(grid.z_interface, float), np.asarray(grid.z_node, float),
                      out)
    return out
