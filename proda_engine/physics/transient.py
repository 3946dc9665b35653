"""Transient (time-stepping) mode of the matrix model: monthly implicit steps (spec §(b), "Transient mode").

The model is dX/dt = I(t) - G(t) X with G = -(A xi(t) K - V(t)) (see :mod:`~proda_engine.physics.operator`).
Month m (Delta t_m days: 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31; no leap years, and *not*
the original code's swapped February/April) is one backward-Euler step

    (I / Delta t_m + G_m) X_{m+1} = X_m / Delta t_m + I_m,

solved by the structured solver with the operator's diagonal ``shift`` = 1 / Delta t_m and a
seven-pool right-hand side. Why implicit: litter L1 turns over in days where it is warm, so an explicit
step (the original code's forward Euler) would need Delta t below ~1/k_max to be stable; backward
Euler is unconditionally stable and positivity preserving ((I/dt + G) is an M-matrix, so X >= 0 when
X_m, I_m >= 0) and its fixed point under constant forcing is exactly the steady state G^-1 I.

Operators per month (``seasonal=True``):

* k_{p,j,m} = k_p xi_D,j xi_T,jm xi_W,jm xi_O,jm (xi_N,jm for litter): that month's modifiers,
  not the 12-month mean the steady state uses (spec §(d));
* V_m from that month's active-layer depth (the same kernel as the steady state, evaluated for
  one month: its 12-month average equals the steady-state V);
* inputs: the annual totals spread evenly over the days, I_m = I_tot phi / (365 dz) per day, so a
  month receives I_tot Delta t_m / 365 and a year exactly I_tot (CLM5 monthly input vectors are not
  in the forcing; the spec's /365-per-month quirk of the PRODA branch is not reproduced).

With ``seasonal=False`` every month uses the annual-mean operator of its year (the steady-state
operator): a cheaper, smoother mode whose fixed point is *exactly* the steady state, so a zero
scenario leaves the stocks unchanged to round-off. With ``seasonal=True`` the fixed point is the
cyclo-stationary (periodic) state, which differs a little from the mean-operator steady state
(mean of k X != mean k times mean X); scenario products then subtract a control run.

Column carbon budget per step (g C m-2), exact for the implicit step up to the solve's round-off:

    sum_{p,j} dz_j (X_{m+1} - X_m) = Delta t_m [ sum dz I  -  sum dz r_p k_p X_{m+1}  -  sum dz (V X_{m+1}) ]
                                   =            inputs     -        respiration        -  transport outflow

(r_p the respiration fraction of pool p; the transport outflow is zero for the conservative closure
and the bedrock sink for the legacy one.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import torch
import xarray as xr

from proda_engine.grid import Grid, get_grid
from proda_engine.physics.forcing import Forcing
from proda_engine.physics.inputs import DAYS_PER_YEAR, input_profile, source_vector
from proda_engine.physics.model import PhysicalParams, default_params, steady_state
from proda_engine.physics.operator import Operator, assemble
from proda_engine.physics.scalars import T_REF, month_mean_modifiers, xi_depth, xi_temperature, xi_water
from proda_engine.physics.solver import _nb_inv3, resolve_backend, solve
from proda_engine.physics.threads import kernel_threads
from proda_engine.physics.transfer import base_rates, fraction_tensor, respiration_fractions
from proda_engine.physics.transport import (
    CLOSURES,
    TransportCoefficients,
    _nb_monthly_rates,
    _nb_transport,
)

#: Days in each month, January..December (365-day calendar).
DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=float)
LITTER = (1, 2, 3)

ForcingFn = Callable[[int], Forcing]


def monthly_transport(forcing: Forcing, grid: Grid, closure: str = "conservative") -> list[TransportCoefficients]:
    """Transport coefficients of each month m (12 entries, each field (L, C)), spec §(g) for one month.

    The steady-state kernel run in its per-month mode: the same arithmetic without the 12-month
    average, so the mean over the 12 results is the steady-state V.
    """
    out = _monthly_transport_array(forcing.alt.detach().cpu().double().numpy(), forcing.nbedrock.cpu().numpy(),
                                   grid, closure)
    kw = {"dtype": forcing.dtype, "device": forcing.device}
    return [TransportCoefficients(*(torch.as_tensor(out[m, i], **kw) for i in range(6))) for m in range(12)]


def _monthly_transport_array(alt: np.ndarray, nbedrock: np.ndarray, grid: Grid, closure: str) -> np.ndarray:
    """(12, 6, L, C) coefficients (lo_bio, lo_cryo, lo_floor, up_bio, up_cryo, up_floor) of each month,
    from the active layer ``alt`` (12, C), m, and the bedrock layer index (C,)."""
    if closure not in CLOSURES:
        raise ValueError(f"closure must be one of {CLOSURES}, found {closure!r}")
    alt = np.ascontiguousarray(alt, dtype=np.float64)
    nb = np.ascontiguousarray(nbedrock, dtype=np.int64)
    out = np.zeros((12, 6, grid.n_layers, alt.shape[1]))
    with kernel_threads(alt.shape[1]):
        _nb_transport(alt, nb, grid.z_interface_ext, grid.z_node_ext, grid.dn, grid.dz, closure == "legacy", out)
    return out


def monthly_rates(params: PhysicalParams, forcing: Forcing, grid: Grid, month: int,
                  xd: torch.Tensor | None = None) -> torch.Tensor:
    """Effective decay rates of one month, k_{p,j,m} (7, L, C), d-1 (spec §(d) without the month mean)."""
    xd = xi_depth(grid, params["efolding"]) if xd is None else xd
    soil = (xi_temperature(forcing.tsoi[month], params["q10"]) * xi_water(forcing.w_scalar[month], params["wscaling"])
            * forcing.o_scalar[month] * xd)
    litter = soil * forcing.fpi[month]
    k0 = base_rates(params)  # (7, C)
    return torch.stack([k0[p] * (litter if p in LITTER else soil) for p in range(7)])


@dataclass
class YearOperators:
    """Everything one year of steps needs: 12 (k, lo, up), the fractions and the daily source."""

    k: list[torch.Tensor]  # 12 x (7, L, C), d-1
    lo: list[torch.Tensor]  # 12 x (L, C), d-1
    up: list[torch.Tensor]
    frac: torch.Tensor  # (9, Lf, C)
    src: torch.Tensor  # (4, L, C), g C m-3 d-1 (constant through the year)


class _OperatorBuilder:
    """Builds each year's monthly operators, re-using transport while the active layer is unchanged."""

    def __init__(self, params: PhysicalParams, grid: Grid, closure: str, seasonal: bool) -> None:
        self.params, self.grid, self.closure, self.seasonal = params, grid, closure, seasonal
        self.xd = xi_depth(grid, params["efolding"])
        self._alt: torch.Tensor | None = None
        self._nb: torch.Tensor | None = None
        self._transport: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def _transport_rates(self, forcing: Forcing) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        alt = forcing.alt
        if (self._transport is not None and torch.equal(alt, self._alt) and torch.equal(forcing.nbedrock, self._nb)):
            return self._transport
        kb, kc = self.params["diffus"], self.params["cryo"]
        rates = [tc.rates(kb, kc) for tc in monthly_transport(forcing, self.grid, self.closure)]
        self._transport = ([r[0] for r in rates], [r[1] for r in rates])
        self._alt, self._nb = alt.clone(), forcing.nbedrock.clone()
        return self._transport

    def year(self, forcing: Forcing) -> YearOperators:
        p, g = self.params, self.grid
        if not self.seasonal:
            # The steady-state operator of this year's climate (month mean of the modifier products),
            # built by the same fused code path as the steady state.
            op = assemble(p, forcing, g, self.closure, depth_scalar=self.xd)
            return YearOperators(k=[op.k] * 12, lo=[op.lo] * 12, up=[op.up] * 12, frac=op.frac, src=op.src)
        lo, up = self._transport_rates(forcing)
        k = [monthly_rates(p, forcing, g, m, self.xd) for m in range(12)]
        src = source_vector(forcing.inputs, input_profile(forcing, g, p["beta"]), g)
        return YearOperators(k=k, lo=lo, up=up, frac=fraction_tensor(p, g.n_layers), src=src)


def implicit_step(X: torch.Tensor, k: torch.Tensor, frac: torch.Tensor, lo: torch.Tensor, up: torch.Tensor,
                  src: torch.Tensor, dt: float, backend: str = "auto") -> torch.Tensor:
    """One backward-Euler step of ``dt`` days: solve (I/dt + G) X' = X/dt + I for X' (7, L, C), g C m-3.

    ``src`` is the daily input (4, L, C) in g C m-3 d-1.
    """
    inv = 1.0 / dt
    if X.device.type == "cpu" and not X.requires_grad:
        # numpy: the same two operations cost several times more as torch kernels on these shapes
        bn = X.numpy() * inv
        bn[:4] += src.numpy()
        b = torch.from_numpy(bn)
    else:
        b = X * inv
        b = torch.cat([b[:4] + src, b[4:]], 0)
    shift = torch.full((X.shape[-1],), inv, dtype=X.dtype, device=X.device)
    return solve(Operator(k=k, frac=frac, lo=lo, up=up, src=b, shift=shift), backend)


def explicit_step(X: torch.Tensor, k: torch.Tensor, frac: torch.Tensor, lo: torch.Tensor, up: torch.Tensor,
                  src: torch.Tensor, dt: float) -> torch.Tensor:
    """One forward-Euler step, X' = X + dt (I - G X) (the original code's scheme; for benchmarks only).

    Stable only for dt < ~2 / (largest eigenvalue of G), i.e. below the fastest pool's turnover time.
    """
    from proda_engine.physics.operator import apply_operator

    GX = apply_operator(Operator(k=k, frac=frac, lo=lo, up=up, src=src), X)
    out = X - dt * GX
    out[:4] += dt * src
    return out


def _column(x: torch.Tensor, dz: torch.Tensor) -> torch.Tensor:
    """sum over pools and layers of x dz, (C,), from (P, L, C) g C m-3 -> g C m-2."""
    return torch.einsum("plc,l->c", x, dz[:, 0])


def step_budget(Xn: torch.Tensor, k: torch.Tensor, frac: torch.Tensor, lo: torch.Tensor, up: torch.Tensor,
                src: torch.Tensor, dt: float, dz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, respiration, transport outflow) of one implicit step ending in ``Xn``, each (C,), g C m-2.

    inputs = dt sum dz I,  respiration = dt sum dz r_p k_p X_p,  outflow = dt sum dz (V X).
    Implicit: the fluxes are evaluated at the end-of-step state, so
    column(Xn - X) = inputs - respiration - outflow holds exactly (up to the solve's round-off).
    One compiled pass over the state (the torch version of the same sums cost 10x the solve).
    """
    r = respiration_fractions(frac).expand(7, k.shape[1], k.shape[2])
    a = lambda t: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)  # noqa: E731
    out = np.zeros((3, k.shape[2]))
    _nb_budget(a(Xn), a(k), a(r), a(lo), a(up), a(src), np.ascontiguousarray(a(dz).reshape(-1)), float(dt), out)
    t = torch.as_tensor(out, dtype=Xn.dtype)
    return t[0], t[1], t[2]


@numba.njit(cache=True)
def _nb_budget(X, k, r, lo, up, src, dz, dt, out):
    """out[0] += dt sum dz I;  out[1] += dt sum dz r k X;  out[2] += dt sum dz (V X) over non-CWD pools."""
    L, C = lo.shape
    for j in range(L):
        w = dt * dz[j]
        for c in range(C):
            inp = src[0, j, c] + src[1, j, c] + src[2, j, c] + src[3, j, c]
            resp = 0.0
            for p in range(1, 7):  # r_CWD = 0
                resp += r[p, j, c] * k[p, j, c] * X[p, j, c]
            mix = 0.0
            for p in range(1, 7):
                v = (lo[j, c] + up[j, c]) * X[p, j, c]
                if j > 0:
                    v -= lo[j, c] * X[p, j - 1, c]
                if j < L - 1:
                    v -= up[j, c] * X[p, j + 1, c]
                mix += v
            out[0, c] += w * inp
            out[1, c] += w * resp
            out[2, c] += w * mix


# ---------------------------------------------------------------------------------------------
# Fused CPU path: a year of monthly steps per block of cells in one compiled pass
# ---------------------------------------------------------------------------------------------

#: Cells per block of the fused kernel: a block's state, operator and scratch (~20 arrays of
#: (L, block)) stay in the core's cache through all 12 months of a year.
TRANSIENT_BLOCK = 64


#: LLVM may fuse multiply-adds, use reciprocals and reorder sums (round-off only; results agree with the
#: unfused path to ~1e-14, tested); NaN/inf semantics stay IEEE, so invalid cells still show as non-finite.
_FAST = {"contract", "arcp", "reassoc", "nsz"}


@numba.njit(cache=True, error_model="numpy", fastmath=_FAST)
def _tr_factor(kb, fb, lo, up, sh, F, n, L, Lf):
    """Factor the shifted operator (I sh + G) of a block of cells into F (16, L, n):

    F[0]        1 / (k_CWD + sh)                         (CWD: diagonal)
    F[1+2q], F[2+2q]  Thomas c'_j and 1/m_j of litter pool q = 0..2 (L1, L2, L3), where
                m_j = k + lo_j + up_j + sh - lo_j c'_{j-1},  c'_j = up_j / m_j
    F[7..15]    E_j = A'_j^-1 of the S1-S3 block sweep, A'_j = A_j - lo_j up_{j-1} E_{j-1}
                (A_j the layer's 3x3 soil block: decay + transfer + transport diagonal + sh)

    Cells innermost, no branches inside the cell loops. :func:`_tr_apply` then solves for any
    right-hand side, so an operator that holds for several months is factored once.
    """
    per_layer = Lf > 1
    for j in range(L):
        for i in range(n):
            F[0, j, i] = 1.0 / (kb[0, j, i] + sh)
    for q in range(3):
        for i in range(n):
            im = 1.0 / (kb[1 + q, 0, i] + lo[0, i] + up[0, i] + sh)
            F[1 + 2 * q, 0, i] = up[0, i] * im
            F[2 + 2 * q, 0, i] = im
        for j in range(1, L):
            for i in range(n):
                a = lo[j, i]
                im = 1.0 / (kb[1 + q, j, i] + a + up[j, i] + sh - a * F[1 + 2 * q, j - 1, i])
                F[1 + 2 * q, j, i] = up[j, i] * im
                F[2 + 2 * q, j, i] = im
    for j in range(L):
        jf = j if per_layer else 0
        for i in range(n):
            k4 = kb[4, j, i]
            k5 = kb[5, j, i]
            k6 = kb[6, j, i]
            v = lo[j, i] + up[j, i] + sh
            a00 = k4 + v
            a11 = k5 + v
            a22 = k6 + v
            a01 = -fb[6, jf, i] * k5
            a02 = -fb[8, jf, i] * k6
            a10 = -fb[4, jf, i] * k4
            a12 = 0.0
            a20 = -fb[5, jf, i] * k4
            a21 = -fb[7, jf, i] * k5
            if j > 0:
                t = lo[j, i] * up[j - 1, i]
                a00 -= t * F[7, j - 1, i]
                a01 -= t * F[8, j - 1, i]
                a02 -= t * F[9, j - 1, i]
                a10 -= t * F[10, j - 1, i]
                a11 -= t * F[11, j - 1, i]
                a12 -= t * F[12, j - 1, i]
                a20 -= t * F[13, j - 1, i]
                a21 -= t * F[14, j - 1, i]
                a22 -= t * F[15, j - 1, i]
            e = _nb_inv3(a00, a01, a02, a10, a11, a12, a20, a21, a22)
            for q in range(9):
                F[7 + q, j, i] = e[q]


@numba.njit(cache=True, error_model="numpy", fastmath=_FAST)
def _tr_apply(F, kb, fb, lo, up, inv, sb, xb, n, L, Lf, dp, rl, Y, fc):
    """One implicit step for a block with the factors F of :func:`_tr_factor`: solve
    (I sh + G) X' = X inv + I in place (xb: X in, X' out, (7, L, n); sb the daily source (4, L, n)).
    Each entry of X is read before it is overwritten, so no separate right-hand side is stored.

    Order: CWD, then L1-L3 (forward d'_j = (r_j + lo_j d'_{j-1}) / m_j, back x_j = d'_j + c'_j x_{j+1};
    L2 and L3 fed by CWD decay), then S1-S3 (Y_j = E_j (r_j + lo_j Y_{j-1}), x_j = Y_j + up_j E_j x_{j+1};
    fed by litter decay)."""
    per_layer = Lf > 1
    for j in range(L):
        for i in range(n):
            x0 = (xb[0, j, i] * inv + sb[0, j, i]) * F[0, j, i]
            xb[0, j, i] = x0
            fc[j, i] = kb[0, j, i] * x0  # CWD decay flux
    for q in range(3):
        for j in range(L):
            jf = j if per_layer else 0
            for i in range(n):
                r = xb[1 + q, j, i] * inv + sb[1 + q, j, i]
                if q == 1:
                    r += fb[0, jf, i] * fc[j, i]
                elif q == 2:
                    r += (1.0 - fb[0, jf, i]) * fc[j, i]
                rl[j, i] = r
        for i in range(n):
            dp[0, i] = rl[0, i] * F[2 + 2 * q, 0, i]
        for j in range(1, L):
            for i in range(n):
                dp[j, i] = (rl[j, i] + lo[j, i] * dp[j - 1, i]) * F[2 + 2 * q, j, i]
        for i in range(n):
            xb[1 + q, L - 1, i] = dp[L - 1, i]
        for j in range(L - 2, -1, -1):
            for i in range(n):
                xb[1 + q, j, i] = dp[j, i] + F[1 + 2 * q, j, i] * xb[1 + q, j + 1, i]
    for j in range(L):
        jf = j if per_layer else 0
        for i in range(n):
            r0 = xb[4, j, i] * inv + fb[1, jf, i] * kb[1, j, i] * xb[1, j, i] + fb[2, jf, i] * kb[2, j, i] * xb[2, j, i]
            r1 = xb[5, j, i] * inv + fb[3, jf, i] * kb[3, j, i] * xb[3, j, i]
            r2 = xb[6, j, i] * inv
            if j > 0:
                a = lo[j, i]
                r0 += a * Y[0, j - 1, i]
                r1 += a * Y[1, j - 1, i]
                r2 += a * Y[2, j - 1, i]
            Y[0, j, i] = F[7, j, i] * r0 + F[8, j, i] * r1 + F[9, j, i] * r2
            Y[1, j, i] = F[10, j, i] * r0 + F[11, j, i] * r1 + F[12, j, i] * r2
            Y[2, j, i] = F[13, j, i] * r0 + F[14, j, i] * r1 + F[15, j, i] * r2
    for p in range(3):
        for i in range(n):
            xb[4 + p, L - 1, i] = Y[p, L - 1, i]
    for j in range(L - 2, -1, -1):
        for i in range(n):
            u = up[j, i]
            x0 = xb[4, j + 1, i]
            x1 = xb[5, j + 1, i]
            x2 = xb[6, j + 1, i]
            xb[4, j, i] = Y[0, j, i] + u * (F[7, j, i] * x0 + F[8, j, i] * x1 + F[9, j, i] * x2)
            xb[5, j, i] = Y[1, j, i] + u * (F[10, j, i] * x0 + F[11, j, i] * x1 + F[12, j, i] * x2)
            xb[6, j, i] = Y[2, j, i] + u * (F[13, j, i] * x0 + F[14, j, i] * x1 + F[15, j, i] * x2)


@numba.njit(cache=True, error_model="numpy", fastmath=_FAST)
def _tr_budget(x, kb, rb, lo, up, dz, dt, Lf, n, L, xs, a_resp, a_out):
    """a_resp += dt sum_j dz_j sum_p r_p k_pj x_pj;  a_out += dt sum_j dz_j (V xs)_j, xs = sum_{p>=1} x_p
    (CWD neither respires directly, r = 0, nor moves)."""
    for j in range(L):
        jf = j if Lf > 1 else 0
        wgt = dt * dz[j]
        for i in range(n):
            r = (rb[1, jf, i] * kb[1, j, i] * x[1, j, i] + rb[2, jf, i] * kb[2, j, i] * x[2, j, i]
                 + rb[3, jf, i] * kb[3, j, i] * x[3, j, i] + rb[4, jf, i] * kb[4, j, i] * x[4, j, i]
                 + rb[5, jf, i] * kb[5, j, i] * x[5, j, i] + rb[6, jf, i] * kb[6, j, i] * x[6, j, i])
            a_resp[i] += wgt * r
            xs[j, i] = x[1, j, i] + x[2, j, i] + x[3, j, i] + x[4, j, i] + x[5, j, i] + x[6, j, i]
    for i in range(n):
        a_out[i] += dt * dz[0] * ((lo[0, i] + up[0, i]) * xs[0, i] - up[0, i] * xs[1, i])
        a_out[i] += dt * dz[L - 1] * ((lo[L - 1, i] + up[L - 1, i]) * xs[L - 1, i] - lo[L - 1, i] * xs[L - 2, i])
    for j in range(1, L - 1):
        wgt = dt * dz[j]
        for i in range(n):
            a_out[i] += wgt * ((lo[j, i] + up[j, i]) * xs[j, i] - lo[j, i] * xs[j - 1, i] - up[j, i] * xs[j + 1, i])


@numba.njit(parallel=True, cache=True, error_model="numpy", fastmath=_FAST)
def _nb_transient_year(X, wf, k0, ms, ml, mean_mode, frac, resp, lo, up, inp, phis,
                       dts, dz, w100, block, acc, soc_month):
    """Twelve backward-Euler months for every cell, X (7, L, C) updated in place, g C m-3.

    Per month m and cell: k_p = k0_p wf_c ms[m] (soil pools) or k0_p wf_c ml[m] (litter), with
    ms/ml (M, L, C) the modifier products xi_D xi_T xi_O xi_W [xi_N for litter] of :func:`_nb_mod_products`
    and wf_c = Q10_c^(dT_c / 10) the warming factor (the Q10 tie: xi_T(T + dT) = xi_T(T) wf); V_m from
    lo/up[c, m] (cell-major, (C, M, L)), shift 1/dt_m, right-hand side X/dt_m + I with the daily source
    I_pj = inp_p phis_j (inp the year's inputs (4, C), g C m-2 yr-1; phis = phi / (365 dz), (L, C)):
    factored (:func:`_tr_factor`) and solved (:func:`_tr_apply`). With ``mean_mode`` k uses the month
    means ms/ml (1, L, C) of the modifier products and V = lo/up[c, 0] all year, so the operator
    changes only with the day count: it is factored once per distinct month length (3, not 12).
    acc (3 or 5, C) += the year's inputs, respiration and transport outflow (g C m-2; fluxes at the
    end-of-step state, so the budget is exact) [and, with 5 rows, the end-of-year total carbon and
    w100-weighted SOC stock];
    soc_month (12, C) = S1+S2+S3 stock after each month.
    """
    L, C = X.shape[1], X.shape[2]
    Lf = frac.shape[1]
    nblk = (C + block - 1) // block
    # distinct month lengths (mean mode): factor slot of each month
    slot = np.zeros(12, np.int64)
    uniq = np.zeros(12)
    nu = 0
    for m in range(12):
        found = -1
        for u in range(nu):
            if uniq[u] == dts[m]:
                found = u
        if found < 0:
            uniq[nu] = dts[m]
            found = nu
            nu += 1
        slot[m] = found
    n_fac = nu if mean_mode else 1
    for blk in numba.prange(nblk):
        c0 = blk * block
        n = min(C, c0 + block) - c0
        kb = np.empty((7, L, n))
        lob = np.empty((L, n))
        upb = np.empty((L, n))
        fb = np.empty((9, Lf, n))
        rb = np.empty((7, Lf, n))
        sb = np.empty((4, L, n))
        xb = np.empty((7, L, n))
        xs = np.empty((L, n))
        xint = np.zeros((7, L, n))  # sum over months of dt X (mean mode's budget)
        ssum = np.empty(n)  # soil / litter environmental modifier of one layer
        lsum = np.empty(n)
        F = np.empty((n_fac, 16, L, n))
        dp = np.empty((L, n))
        rl = np.empty((L, n))
        Y = np.empty((3, L, n))
        fc = np.empty((L, n))
        a_in = np.zeros(n)
        a_resp = np.zeros(n)
        a_out = np.zeros(n)
        for q in range(9):
            for jf in range(Lf):
                for i in range(n):
                    fb[q, jf, i] = frac[q, jf, c0 + i]
        for q in range(7):
            for jf in range(Lf):
                for i in range(n):
                    rb[q, jf, i] = resp[q, jf, c0 + i]
        for p in range(7):
            for j in range(L):
                for i in range(n):
                    xb[p, j, i] = X[p, j, c0 + i]
        for p in range(4):
            for j in range(L):
                for i in range(n):
                    sb[p, j, i] = inp[p, c0 + i] * phis[j, c0 + i]
        # the year's input, identical every month (g C m-2 per day of the year)
        col_in = np.zeros(n)
        for j in range(L):
            for i in range(n):
                col_in[i] += dz[j] * (sb[0, j, i] + sb[1, j, i] + sb[2, j, i] + sb[3, j, i])
        for m in range(12):
            dt = dts[m]
            inv = 1.0 / dt
            if (not mean_mode) or m == 0:  # this month's operator
                mt = 0 if mean_mode else m
                for j in range(L):
                    for i in range(n):
                        c = c0 + i
                        ssum[i] = ms[mt, j, c] * wf[c]
                        lsum[i] = ml[mt, j, c] * wf[c]
                    for i in range(n):
                        c = c0 + i
                        sv = ssum[i]
                        lt = lsum[i]
                        kb[0, j, i] = k0[0, c] * sv
                        kb[1, j, i] = k0[1, c] * lt
                        kb[2, j, i] = k0[2, c] * lt
                        kb[3, j, i] = k0[3, c] * lt
                        kb[4, j, i] = k0[4, c] * sv
                        kb[5, j, i] = k0[5, c] * sv
                        kb[6, j, i] = k0[6, c] * sv
                for i in range(n):  # cell-major source: contiguous reads along the layers
                    for j in range(L):
                        lob[j, i] = lo[c0 + i, mt, j]
                        upb[j, i] = up[c0 + i, mt, j]
                if mean_mode:
                    for u in range(nu):
                        _tr_factor(kb, fb, lob, upb, 1.0 / uniq[u], F[u], n, L, Lf)
                else:
                    _tr_factor(kb, fb, lob, upb, inv, F[0], n, L, Lf)
            _tr_apply(F[slot[m] if mean_mode else 0], kb, fb, lob, upb, inv, sb, xb, n, L, Lf, dp, rl, Y, fc)
            # budget at the end-of-step state: respiration dt sum r_p k_p X_p and transport outflow
            # dt sum_j dz_j (V Xs)_j of the pool sum Xs (V is linear and the same for every moving
            # pool). With the annual operator (mean mode) both are linear in X with fixed
            # coefficients all year, so they are taken once, from the time-integrated state sum dt X.
            for i in range(n):
                a_in[i] += dt * col_in[i]
                soc_month[m, c0 + i] = 0.0
            for j in range(L):
                for i in range(n):
                    soc_month[m, c0 + i] += dz[j] * (xb[4, j, i] + xb[5, j, i] + xb[6, j, i])
            if mean_mode:
                for p in range(1, 7):
                    for j in range(L):
                        for i in range(n):
                            xint[p, j, i] += dt * xb[p, j, i]
            else:
                _tr_budget(xb, kb, rb, lob, upb, dz, dt, Lf, n, L, xs, a_resp, a_out)
        if mean_mode:
            _tr_budget(xint, kb, rb, lob, upb, dz, 1.0, Lf, n, L, xs, a_resp, a_out)
        for p in range(7):
            for j in range(L):
                for i in range(n):
                    X[p, j, c0 + i] = xb[p, j, i]
        for i in range(n):
            acc[0, c0 + i] += a_in[i]
            acc[1, c0 + i] += a_resp[i]
            acc[2, c0 + i] += a_out[i]
        if acc.shape[0] > 3:  # end-of-year stocks: all carbon, and SOC weighted by w100 (e.g. 0-100 cm)
            for j in range(L):
                for i in range(n):
                    soil = xb[4, j, i] + xb[5, j, i] + xb[6, j, i]
                    acc[3, c0 + i] += dz[j] * (xb[0, j, i] + xb[1, j, i] + xb[2, j, i] + xb[3, j, i] + soil)
                    acc[4, c0 + i] += dz[j] * w100[j] * soil


def _f64(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)


class _FusedYear:
    """Per-run constants of the fused kernel and a cache of the monthly transport (re-built only when
    the active layer or bedrock changes, e.g. under a permafrost-thaw scenario)."""

    def __init__(self, params: PhysicalParams, grid: Grid, closure: str, seasonal: bool) -> None:
        self.p, self.grid, self.closure, self.seasonal = params, grid, closure, seasonal
        self.xd = _f64(xi_depth(grid, params["efolding"]))
        self.k0 = _f64(base_rates(params))
        frac = fraction_tensor(params, grid.n_layers)
        self.frac = _f64(frac)
        self.resp = _f64(respiration_fractions(frac))
        self.lnq = _f64(torch.log(params["q10"]))
        self.ws = _f64(params["wscaling"])
        self.kb, self.kc = _f64(params["diffus"]), _f64(params["cryo"])
        self.dz = np.ascontiguousarray(grid.dz, dtype=np.float64)
        self.w100 = np.ascontiguousarray(grid.interval_weights(0.0, 1.0), dtype=np.float64)
        self._key: tuple[np.ndarray, np.ndarray] | None = None
        self._lo_up: tuple[np.ndarray, np.ndarray] | None = None
        self._phi: tuple[np.ndarray, np.ndarray] | None = None
        self._means: tuple | None = None

    def _transport(self, f: Forcing) -> tuple[np.ndarray, np.ndarray]:
        """Transport rates lo, up as (C, M, L), cell-major: M = 12 months (seasonal operators) or 1,
        the 12-month mean (annual-mean operators, computed directly by the kernel)."""
        alt, nb = _f64(f.alt), f.nbedrock.cpu().numpy().astype(np.int64)
        if self._key is None or not np.array_equal(nb, self._key[1]):
            C = alt.shape[1]
            cells = np.arange(C)
            M = 12 if self.seasonal else 1
            self._lo_up = (np.empty((C, M, self.grid.n_layers)), np.empty((C, M, self.grid.n_layers)))
        else:
            # only cells whose active layer moved (e.g. permafrost under a thaw scenario) are recomputed
            cells = np.flatnonzero((alt != self._key[0]).any(0))
        if cells.size:
            if self.closure not in CLOSURES:
                raise ValueError(f"closure must be one of {CLOSURES}, found {self.closure!r}")
            g = self.grid
            with kernel_threads(cells.size * 12):
                _nb_monthly_rates(alt, nb, cells, g.z_interface_ext, g.z_node_ext, g.dn, g.dz,
                                  self.closure == "legacy", self.kb, self.kc, *self._lo_up)
            self._key = (alt, nb)
        return self._lo_up

    def _source(self, f: Forcing) -> tuple[np.ndarray, np.ndarray]:
        """The year's inputs (4, C), g C m-2 yr-1, and the daily source profile phi / (365 dz) (L, C), m-1 d-1
        (the kernel forms I = inputs x profile per block). The profile is cached while the permafrost
        top-only rule selects the same cells (it depends only on the sign of ALTMAX_LASTYEAR)."""
        top = (_f64(f.altmax_lastyear) <= 0.0).any(0)
        if self._phi is None or not np.array_equal(top, self._phi[0]):
            phi = _f64(input_profile(f, self.grid, self.p["beta"]))
            self._phi = (top, np.ascontiguousarray(phi / (DAYS_PER_YEAR * self.dz[:, None])))
        return _f64(f.inputs), self._phi[1]

    def _modifiers(self, f: Forcing) -> tuple[np.ndarray, np.ndarray]:
        """Modifier products xi_D xi_T xi_O xi_W (soil) and x xi_N (litter), (M, L, C): each month's
        (seasonal, M = 12) or their month means (annual-mean operators, M = 1, spec §(d)). Cached for
        the same forcing fields, so a scenario given as baseline fields + warming computes them once."""
        key = (id(f.tsoi), id(f.w_scalar), id(f.o_scalar), id(f.fpi))
        if self._means is None or self._means[0] != key:
            if self.seasonal:
                fields = [_f64(t) for t in (f.tsoi, f.w_scalar, f.o_scalar, f.fpi)]
                ms, ml = np.empty_like(fields[0]), np.empty_like(fields[0])
                with kernel_threads(fields[0].shape[2]):
                    _nb_mod_products(*fields, self.lnq, self.ws, self.xd, ms, ml)
            else:
                m_soil, m_litter = month_mean_modifiers(f, self.p["q10"], self.p["wscaling"])
                ms, ml = (np.ascontiguousarray((_f64(m) * self.xd)[None]) for m in (m_soil, m_litter))
            self._means = (key, ms, ml, f)  # keep f alive: ids stay unique
        return self._means[1], self._means[2]

    def step(self, X: np.ndarray, f: Forcing, acc: np.ndarray, soc_month: np.ndarray,
             warming: np.ndarray | None = None) -> None:
        """Advance X (7, L, C) by the 12 months of forcing ``f``; acc/soc_month as the kernel's.

        ``warming`` (C,), K: the year's soil temperature is f.tsoi + warming in every layer and month.
        Given separately, it costs nothing per (month, layer): with the model's Q10 tie the warmed
        modifier is xi_T(T) Q10^(dT/10), so both operator modes scale cached modifier products.
        """
        C = X.shape[-1]
        lo, up = self._transport(f)
        inp, phis = self._source(f)
        ms, ml = self._modifiers(f)
        wf = np.ones(C) if warming is None else np.exp(self.lnq * np.asarray(warming, dtype=np.float64) / 10.0)
        # a year is 12 solves per cell: worth the thread pool from a few blocks of cells on
        with kernel_threads(C * 12):
            _nb_transient_year(X, wf, self.k0, ms, ml, not self.seasonal, self.frac, self.resp, lo, up, inp, phis,
                               DAYS_IN_MONTH, self.dz, self.w100, TRANSIENT_BLOCK, acc, soc_month)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _nb_mod_products(tsoi, w, o, fpi, lnq, ws, xd, out_s, out_l):
    """out_s[m, j, c] = exp(ln Q10_c (T - 298.15) / 10) xi_O min(1, w_s W) xi_D,jc (spec §(d), one month's
    soil modifier product) and out_l = out_s FPI (litter); rows (m, j) in parallel, cells contiguous."""
    M, L, C = tsoi.shape
    for r in numba.prange(M * L):
        m = r // L
        j = r - m * L
        for c in range(C):
            v = np.exp(lnq[c] * (tsoi[m, j, c] - T_REF) / 10.0) * o[m, j, c] * min(1.0, ws[c] * w[m, j, c]) * xd[j, c]
            out_s[m, j, c] = v
            out_l[m, j, c] = v * fpi[m, j, c]


def run_transient(params: PhysicalParams | str, forcing: Forcing | ForcingFn, years: int, grid: Grid | None = None, *,
                  closure: str = "conservative", seasonal: bool = True, initial: str | torch.Tensor = "steady",
                  monthly: bool = False, backend: str = "auto", keep_profiles: bool = True,
                  return_state: bool = False, fused: bool = True,
                  progress: Callable[[int, int], None] | None = None) -> xr.Dataset | tuple[xr.Dataset, torch.Tensor]:
    """Run the model forward ``years`` years in monthly implicit steps, vectorised over cells.

    Args:
        params: physical parameters, each (C,) (``"default"`` for the default-CLM5 preset).
        forcing: a constant :class:`Forcing` (12-month climatology), or a callable ``forcing(year)``
            returning the 12-month forcing of ``year`` (1..years; ``forcing(0)`` is the baseline used
            for the initial steady state). A whole year at a time, so every month's operator for
            every cell is built in one vectorised pass. The callable may also offer
            ``offsets(year) -> (Forcing, warming (C,) K)``, the same year as fields plus a uniform
            per-cell soil warming (:class:`~proda_engine.products.scenarios.Scenario` does); the fused
            path then never materialises the warmed temperature field.
        years: number of years to simulate.
        seasonal: monthly operators (True) or each year's annual-mean operator (False; see module doc).
        initial: ``"steady"`` (steady state of the baseline forcing, spec §(b)) or pools (7, L, C), g C m-3.
        monthly: also store the end-of-month SOC stock (``soc_monthly``, (time, cell)).
        keep_profiles: store the initial and final SOC profiles (layer, cell), g C m-3.
        return_state: also return the final pools X (7, L, C), g C m-3 (to continue a run).
        fused: on the CPU in float64 with the numba backend, run each year as one compiled pass
            (:func:`_nb_transient_year`: per block of cells all 12 months in cache, ~10x fewer memory
            sweeps than twelve separate solves). False: one structured solve per month (the path
            CUDA and the torch backend always take; same numbers to round-off, tested).
        progress: called as ``progress(year, years)`` after each simulated year.
    Returns:
        Dataset with dims ``year`` (1..years) and ``cell``:
        ``soc`` (S1+S2+S3 stock, whole profile, end of year), ``soc_0_100cm``, ``carbon`` (all seven
        pools) in g C m-2; the year's ``inputs``, ``respiration``, ``outflow`` in g C m-2 yr-1; and
        ``soc_initial``, ``carbon_initial`` (cell). Budget: carbon[y] - carbon[y-1] = inputs - respiration - outflow.
    """
    grid = grid or get_grid()
    fn: ForcingFn = forcing if callable(forcing) else (lambda _y, f=forcing: f)
    f0 = fn(0)
    p = default_params(f0) if isinstance(params, str) else params
    if isinstance(params, str) and params != "default":
        raise ValueError(f"params: expected a dict of tensors or 'default', found {params!r}")
    with torch.no_grad():
        if isinstance(initial, str):
            if initial != "steady":
                raise ValueError(f"initial: expected 'steady' or a (7, L, C) tensor, found {initial!r}")
            X = steady_state(p, f0, grid, closure=closure, backend=backend).pools.clone()
        else:
            X = initial.to(dtype=f0.dtype, device=f0.device).clone()
        dz = torch.as_tensor(grid.dz, dtype=X.dtype, device=X.device)[:, None]
        w100 = torch.as_tensor(grid.interval_weights(0.0, 1.0), dtype=X.dtype, device=X.device)[:, None]
        C = X.shape[-1]
        out = {n: np.empty((years, C)) for n in ("soc", "soc_0_100cm", "carbon", "inputs", "respiration", "outflow")}
        soc_m = np.empty((years * 12, C)) if monthly else None
        soc_initial = (X[4:].sum(0) * dz).sum(0).cpu().numpy()
        carbon_initial = _column(X, dz).cpu().numpy()
        profile_initial = X[4:].sum(0).cpu().numpy().copy()
        fused = fused and resolve_backend(backend, X.device) == "numba" and X.dtype == torch.float64
        if fused:
            year_fn = _FusedYear(p, grid, closure, seasonal)
            Xn = np.ascontiguousarray(X.numpy())
        else:
            builder = _OperatorBuilder(p, grid, closure, seasonal)
        for y in range(years):
            if fused:
                acc = np.zeros((5, C))  # inputs, respiration, outflow; end-of-year carbon, SOC 0-100 cm
                socm = np.empty((12, C))
                offsets = getattr(fn, "offsets", None)
                if offsets is not None:  # the year as baseline fields + a per-cell warming
                    fy, warm = offsets(y + 1)
                    year_fn.step(Xn, fy, acc, socm, warming=warm)
                else:
                    year_fn.step(Xn, fn(y + 1), acc, socm)
                if soc_m is not None:
                    soc_m[y * 12:(y + 1) * 12] = socm
                out["soc"][y] = socm[11]
                out["soc_0_100cm"][y] = acc[4]
                out["carbon"][y] = acc[3]
                for i, name in enumerate(("inputs", "respiration", "outflow")):
                    out[name][y] = acc[i]
                if progress is not None:
                    progress(y + 1, years)
                continue
            ops = builder.year(fn(y + 1))
            acc = [torch.zeros(C, dtype=X.dtype) for _ in range(3)]
            for m in range(12):
                dt = float(DAYS_IN_MONTH[m])
                X = implicit_step(X, ops.k[m], ops.frac, ops.lo[m], ops.up[m], ops.src, dt, backend)
                for a, v in zip(acc, step_budget(X, ops.k[m], ops.frac, ops.lo[m], ops.up[m], ops.src, dt, dz)):
                    a += v
                if soc_m is not None:
                    soc_m[y * 12 + m] = (X[4:].sum(0) * dz).sum(0).cpu().numpy()
            soc = X[4:].sum(0)
            out["soc"][y] = (soc * dz).sum(0).cpu().numpy()
            out["soc_0_100cm"][y] = (soc * dz * w100).sum(0).cpu().numpy()
            out["carbon"][y] = _column(X, dz).cpu().numpy()
            for name, a in zip(("inputs", "respiration", "outflow"), acc):
                out[name][y] = a.cpu().numpy()
            if progress is not None:
                progress(y + 1, years)
        if fused:
            X = torch.from_numpy(Xn)
    units = {"soc": "g C m-2", "soc_0_100cm": "g C m-2", "carbon": "g C m-2", "inputs": "g C m-2 yr-1",
             "respiration": "g C m-2 yr-1", "outflow": "g C m-2 yr-1"}
    long = {"soc": "SOC stock (S1+S2+S3), whole profile, end of year",
            "soc_0_100cm": "SOC stock 0-100 cm, end of year",
            "carbon": "total carbon in all seven pools (incl. CWD and litter), end of year",
            "inputs": "carbon input during the year", "respiration": "heterotrophic respiration during the year",
            "outflow": "transport outflow during the year (legacy bedrock sink; 0 when conservative)"}
    ds = xr.Dataset(
        {n: (("year", "cell"), v, {"units": units[n], "long_name": long[n]}) for n, v in out.items()},
        coords={"year": np.arange(1, years + 1), "cell": np.arange(C)},
    )
    ds["soc_initial"] = ("cell", soc_initial, {"units": "g C m-2", "long_name": "SOC stock at the start"})
    ds["carbon_initial"] = ("cell", carbon_initial, {"units": "g C m-2", "long_name": "total carbon at the start"})
    if soc_m is not None:
        ds["soc_monthly"] = (("time", "cell"), soc_m, {"units": "g C m-2", "long_name": "SOC stock, end of month"})
        ds = ds.assign_coords(time=np.arange(1, years * 12 + 1))
        ds["time"].attrs["long_name"] = "month index since the start (1 = end of first January)"
    if keep_profiles:
        ds["soc_profile_initial"] = (("layer", "cell"), profile_initial, {"units": "g C m-3"})
        ds["soc_profile_final"] = (("layer", "cell"), X[4:].sum(0).cpu().numpy(), {"units": "g C m-3"})
    ds.attrs.update({"scheme": "backward Euler, monthly steps (days in month 31,28,31,30,...)",
                     "seasonal": int(seasonal), "closure": closure, "grid": grid.name,
                     "inputs": "annual total spread evenly over 365 days"})
    return (ds, X) if return_state else ds

