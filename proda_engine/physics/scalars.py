"""Environmental modifiers of decomposition (spec §(d)).

Everything here is per layer j and month m, cells last: (12, L, C). Parameters are per cell (C,).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from proda_engine.grid import Grid
from proda_engine.physics.forcing import Forcing

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

    A mean of products, not a product of means; every month weighs 1/12. Without gradients a fused
    compiled kernel does it in one pass (the what-if path re-runs this whenever Q10 or w_s change).
    """
    needs_grad = torch.is_grad_enabled() and (q10.requires_grad or wscaling.requires_grad)
    if forcing.device.type == "cpu" and not needs_grad:
        ms = np.empty(forcing.tsoi.shape[1:], dtype=np.float64)
        ml = np.empty_like(ms)
        _nb_month_means(*(np.ascontiguousarray(t.detach().numpy(), dtype=np.float64) for t in
                          (forcing.tsoi, forcing.w_scalar, forcing.o_scalar, forcing.fpi,
                           torch.log(q10.detach()), wscaling.detach())), ms, ml)
        return (torch.as_tensor(ms, dtype=forcing.dtype), torch.as_tensor(ml, dtype=forcing.dtype))
    prod = xi_temperature(forcing.tsoi, q10) * xi_water(forcing.w_scalar, wscaling) * forcing.o_scalar
    return prod.mean(0), (prod * forcing.fpi).mean(0)


@numba.njit(parallel=True, cache=True)
def _nb_month_means(tsoi, w, o, fpi, lnq, ws, out_soil, out_litter):
    """Fused month means of xi_T xi_W xi_O (and x xi_N); cells innermost, layers in parallel."""
    M, L, C = tsoi.shape
    for j in numba.prange(L):
        for c in range(C):
            out_soil[j, c] = 0.0
            out_litter[j, c] = 0.0
        for m in range(M):
            for c in range(C):
                xw = min(1.0, ws[c] * w[m, j, c])
                v = np.exp(lnq[c] * (tsoi[m, j, c] - T_REF) / 10.0) * xw * o[m, j, c]
                out_soil[j, c] += v
                out_litter[j, c] += v * fpi[m, j, c]
        for c in range(C):
            out_soil[j, c] /= M
            out_litter[j, c] /= M


def diagnostic_modifier(forcing: Forcing, grid: Grid, q10: torch.Tensor, wscaling: torch.Tensor,
                        efolding: torch.Tensor) -> torch.Tensor:
    """The bulk-diagnostic modifier xi_hat_j = <xi_T>_j <xi_W>_j xi_D,j (no xi_O, no xi_N), (L, C).

    Used by the environmental-modifier and CUE diagnostics (spec §(j) items 4 and 5).
    """
    return (xi_temperature(forcing.tsoi, q10).mean(0) * xi_water(forcing.w_scalar, wscaling).mean(0)
            * xi_depth(grid, efolding))
