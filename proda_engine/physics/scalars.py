"""Environmental modifiers of decomposition (spec §(d)).

Everything here is per layer j and month m, cells last: (12, L, C). Parameters are per cell (C,).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from proda_engine.grid import Grid
from proda_engine.physics.forcing import Forcing
from proda_engine.physics.threads import kernel_threads

T_FREEZE = 273.15  # K
T_REF = 298.15  # K, reference temperature 25 degC: xi_T = 1 there


def xi_temperature(tsoi: torch.Tensor, q10: torch.Tensor, q10_frozen: torch.Tensor | None = None) -> torch.Tensor:
    """Q10 temperature scalar with a frozen branch.

    xi_T = Q10^((T - 298.15)/10)                                     for T >= 273.15 K
    xi_T = Q10^((273.15 - 298.15)/10) * Q10f^((T - 273.15)/10)      for T <  273.15 K

    Continuous at 0 degC. With Q10f = Q10 (the model's tie, spec §(c)) both branches are the same
    exponential, which is what the fast path uses.

    Args:
        tsoi: soil temperature, K, (..., C).
        q10: Q10 per cell, (C,).
        q10_frozen: Q10 below freezing, (C,); defaults to ``q10``.
    """
    lnq = torch.log(q10)
    if q10_frozen is None:
        return torch.exp(lnq * (tsoi - T_REF) / 10.0)
    lnqf = torch.log(q10_frozen)
    warm = torch.exp(lnq * (tsoi - T_REF) / 10.0)
    cold = torch.exp(lnq * (T_FREEZE - T_REF) / 10.0 + lnqf * (tsoi - T_FREEZE) / 10.0)
    return torch.where(tsoi >= T_FREEZE, warm, cold)


def xi_water(w_scalar: torch.Tensor, wscaling: torch.Tensor) -> torch.Tensor:
    """Water scalar of the 21-parameter model: xi_W = min(1, w_s * W_SCALAR) (unitless)."""
    return torch.clamp(wscaling * w_scalar, max=1.0)


def xi_depth(grid: Grid, efolding: torch.Tensor) -> torch.Tensor:
    """Depth scalar xi_D,j = exp(-z_j / efolding), (L, C); z_j node depth (m), efolding (m), per cell."""
    z = torch.as_tensor(grid.z_node, dtype=efolding.dtype, device=efolding.device)
    return torch.exp(-z[:, None] / efolding[None, :])


def month_mean_modifiers(
    forcing: Forcing, q10: torch.Tensor, wscaling: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Month means of the products of modifiers, as the steady-state operator uses them (spec §(d)).

    Returns ``(m_soil, m_litter)``, each (L, C), unitless:
        m_soil   = 1/12 sum_m xi_T xi_W xi_O           (CWD and SOC pools)
        m_litter = 1/12 sum_m xi_T xi_W xi_O xi_N      (L1, L2, L3: N limitation on litter only)

    A mean of products, not a product of means; every month weighs 1/12. On the CPU a fused
    compiled kernel computes both means (and, when gradients are needed, their derivatives with
    respect to ln Q10 and w_s) in one pass, so no (12, L, C) graph is ever built.
    """
    if forcing.device.type != "cpu":
        return _month_means_torch(forcing, q10, wscaling)
    needs_grad = torch.is_grad_enabled() and (q10.requires_grad or wscaling.requires_grad)
    if needs_grad:
        return _MonthMeans.apply(torch.log(q10), wscaling, forcing)
    ms, ml, _ = _month_means_numpy(forcing, torch.log(q10.detach()), wscaling.detach(), False)
    return ms, ml


def _month_means_torch(forcing: Forcing, q10: torch.Tensor,
                       wscaling: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    prod = xi_temperature(forcing.tsoi, q10) * xi_water(forcing.w_scalar, wscaling) * forcing.o_scalar
    return prod.mean(0), (prod * forcing.fpi).mean(0)


def _month_means_numpy(forcing: Forcing, lnq: torch.Tensor, ws: torch.Tensor, deriv: bool):
    arrs = [np.ascontiguousarray(t.detach().numpy(), dtype=np.float64) for t in
            (forcing.tsoi, forcing.w_scalar, forcing.o_scalar, forcing.fpi, lnq, ws)]
    out = np.empty((6 if deriv else 2, *forcing.tsoi.shape[1:]))
    with kernel_threads(forcing.n_cells):
        _nb_month_means(*arrs, out, deriv)
    t = torch.as_tensor(out, dtype=forcing.dtype)
    return t[0], t[1], (t[2:] if deriv else None)


class _MonthMeans(torch.autograd.Function):
    """(ln Q10, w_s) -> (m_soil, m_litter) with derivatives from the same fused pass."""

    @staticmethod
    def forward(ctx, lnq, ws, forcing):
        ms, ml, d = _month_means_numpy(forcing, lnq, ws, True)
        ctx.save_for_backward(d)
        return ms, ml

    @staticmethod
    def backward(ctx, gs, gl):
        (d,) = ctx.saved_tensors  # d(ms)/dlnq, d(ml)/dlnq, d(ms)/dws, d(ml)/dws, each (L, C)
        g_lnq = (gs * d[0] + gl * d[1]).sum(0)
        g_ws = (gs * d[2] + gl * d[3]).sum(0)
        return g_lnq, g_ws, None


@numba.njit(parallel=True, cache=True)
def _nb_month_means(tsoi, w, o, fpi, lnq, ws, out, deriv):
    """Fused month means of v = xi_T xi_W xi_O (and v xi_N); with ``deriv`` also
    dv/dlnQ10 = v (T - 298.15)/10 and dv/dw_s = xi_T xi_O W [w_s W < 1]. Layers in parallel, cells innermost."""
    M, L, C = tsoi.shape
    n_out = out.shape[0]
    for j in numba.prange(L):
        for q in range(n_out):
            for c in range(C):
                out[q, j, c] = 0.0
        for m in range(M):
            for c in range(C):
                e = (tsoi[m, j, c] - T_REF) / 10.0
                wv = ws[c] * w[m, j, c]
                xt = np.exp(lnq[c] * e) * o[m, j, c]
                v = xt * min(1.0, wv)
                out[0, j, c] += v
                out[1, j, c] += v * fpi[m, j, c]
                if deriv:
                    out[2, j, c] += v * e
                    out[3, j, c] += v * e * fpi[m, j, c]
                    dw = xt * w[m, j, c] if wv < 1.0 else 0.0
                    out[4, j, c] += dw
                    out[5, j, c] += dw * fpi[m, j, c]
        for q in range(n_out):
            for c in range(C):
                out[q, j, c] /= M


def month_means_and_diagnostic(forcing: Forcing, grid: Grid, q10: torch.Tensor, wscaling: torch.Tensor,
                               efolding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(m_soil, m_litter, xi_hat)`` of :func:`month_mean_modifiers` and :func:`diagnostic_modifier`
    from one compiled pass over the 12-month fields (no gradients): the what-if path needs all three
    whenever Q10 or the water scaling move, and each pass costs one exp per month, layer and cell."""
    if forcing.device.type != "cpu" or (torch.is_grad_enabled() and (q10.requires_grad or wscaling.requires_grad)):
        ms, ml = month_mean_modifiers(forcing, q10, wscaling)
        return ms, ml, diagnostic_modifier(forcing, grid, q10, wscaling, efolding)
    arrs = [np.ascontiguousarray(t.detach().numpy(), dtype=np.float64) for t in
            (forcing.tsoi, forcing.w_scalar, forcing.o_scalar, forcing.fpi, torch.log(q10.detach()),
             wscaling.detach())]
    out = np.empty((4, *forcing.tsoi.shape[1:]))
    with kernel_threads(forcing.n_cells):
        _nb_month_means_diag(*arrs, out)
    t = torch.as_tensor(out, dtype=forcing.dtype)
    return t[0], t[1], t[2] * t[3] * xi_depth(grid, efolding.detach()).to(forcing.dtype)


@numba.njit(parallel=True, cache=True)
def _nb_month_means_diag(tsoi, w, o, fpi, lnq, ws, out):
    """out = (<xi_T xi_W xi_O>, <xi_T xi_W xi_O xi_N>, <xi_T>, <xi_W>) over the months, each (L, C)."""
    M, L, C = tsoi.shape
    for j in numba.prange(L):
        for q in range(4):
            for c in range(C):
                out[q, j, c] = 0.0
        for m in range(M):
            for c in range(C):
                xt = np.exp(lnq[c] * (tsoi[m, j, c] - T_REF) / 10.0)
                xw = min(1.0, ws[c] * w[m, j, c])
                v = xt * xw * o[m, j, c]
                out[0, j, c] += v
                out[1, j, c] += v * fpi[m, j, c]
                out[2, j, c] += xt
                out[3, j, c] += xw
        for q in range(4):
            for c in range(C):
                out[q, j, c] /= M


def diagnostic_modifier(forcing: Forcing, grid: Grid, q10: torch.Tensor, wscaling: torch.Tensor,
                        efolding: torch.Tensor) -> torch.Tensor:
    """The bulk-diagnostic modifier xi_hat_j = <xi_T>_j <xi_W>_j xi_D,j (no xi_O, no xi_N), (L, C).

    Used by the environmental-modifier and CUE diagnostics (spec §(j) items 4 and 5).
    """
    return (xi_temperature(forcing.tsoi, q10).mean(0) * xi_water(forcing.w_scalar, wscaling).mean(0)
            * xi_depth(grid, efolding))
