"""The steady-state operator in structured form, never as a dense 7L x 7L matrix.

The model (spec §(b)) is dX/dt = I + A xi K X - V X. Its steady state solves G X = b with

    G = -(A K_xi - V)   (positive diagonal; a column-diagonally-dominant M-matrix),   b = I.

:class:`Operator` holds G's pieces, cells last:

* ``k``    (7, L, C)  month-mean effective decay rate k_p xi_D,j <xi_T xi_W xi_O (xi_N)>, d-1
* ``frac`` (9, Lf, C) transfer fractions in :data:`~proda_engine.physics.transfer.FRACTION_NAMES` order
* ``lo``   (L, C)     g-_j / dz_j, coupling to the layer above, d-1 (lo_1 = 0)
* ``up``   (L, C)     g+_j / dz_j, coupling to the layer below, d-1 (up_N = 0)
* ``src``  (4, L, C)  inputs to CWD, L1, L2, L3, g C m-3 d-1

so that for a non-CWD pool p in layer j

    (G X)_{p,j} = k_pj X_pj - sum_d f_{d->p} k_dj X_dj + (lo_j + up_j) X_pj - lo_j X_p,j-1 - up_j X_p,j+1

and for CWD (no transport) (G X)_{0,j} = k_0j X_0j.

Two optional generalisations serve the implicit transient step (I/dt + G) X_{m+1} = X_m/dt + I_m
(:mod:`proda_engine.physics.transient`):

* ``shift`` (C,) or (L, C), d-1, default None (= 0): a diagonal added to every pool,
  G_s = G + diag(shift). Transfers between pools still use the decay rate k (the shift is not a
  decay: it carries no carbon anywhere).
* ``src`` may be (7, L, C): a right-hand side for all seven pools (the SOC entries are zero for the
  steady state, but not for a time step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch

from proda_engine.grid import Grid
from proda_engine.physics.forcing import Forcing
from proda_engine.physics.inputs import DAYS_PER_YEAR, input_profile, source_vector
from proda_engine.physics.scalars import month_mean_modifiers, xi_depth
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
    base_rates,
    fraction_tensor,
)
from proda_engine.physics.transport import transport_coefficients


@dataclass
class Operator:
    """Structured pieces of G = -(A K_xi - V) and the source b (see module docstring)."""

    k: torch.Tensor
    frac: torch.Tensor
    lo: torch.Tensor
    up: torch.Tensor
    src: torch.Tensor
    shift: torch.Tensor | None = None  # (C,) or (L, C), d-1; None means 0 (the steady-state operator)

    @property
    def n_layers(self) -> int:
        return int(self.k.shape[1])

    @property
    def n_cells(self) -> int:
        return int(self.k.shape[2])

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """(k, frac, lo, up, src); the optional ``shift`` is separate (see :meth:`shift_lc`)."""
        return (self.k, self.frac, self.lo, self.up, self.src)

    def shift_lc(self) -> torch.Tensor | None:
        """The diagonal shift broadcast to (L, C), or None when there is none."""
        if self.shift is None:
            return None
        s = self.shift if self.shift.dim() == 2 else self.shift[None, :]
        return s.expand(self.n_layers, self.n_cells)


def assemble(params: dict[str, torch.Tensor], forcing: Forcing, grid: Grid,
             closure: str = "conservative", *, modifiers: tuple[torch.Tensor, torch.Tensor] | None = None,
             depth_scalar: torch.Tensor | None = None, phi: torch.Tensor | None = None) -> Operator:
    """Build the structured operator from physical parameters (each (C,), or (L, C) for fractions).

    Differentiable in every parameter and in the inputs. ``modifiers`` (the two month means of
    :func:`~proda_engine.physics.scalars.month_mean_modifiers`), ``depth_scalar`` (L, C) and ``phi``
    (input profile, L, C) may be passed in when cached by the caller (the what-if path).
    """
    L = grid.n_layers
    if forcing.n_layers != L:
        raise ValueError(f"forcing has {forcing.n_layers} layers but grid {grid.name!r} has {L}")
    m_soil, m_litter = modifiers if modifiers is not None else month_mean_modifiers(
        forcing, params["q10"], params["wscaling"])
    xd = depth_scalar if depth_scalar is not None else xi_depth(grid, params["efolding"])
    prof = phi if phi is not None else input_profile(forcing, grid, params["beta"])
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (*params.values(), forcing.inputs, m_soil, m_litter, xd, prof))
    if not needs_grad and forcing.device.type == "cpu" and forcing.dtype == torch.float64:
        return _assemble_fused(params, forcing, grid, closure, m_soil, m_litter, xd, prof)
    k0 = base_rates(params)  # (7, C)
    soil_env, litter_env = m_soil * xd, m_litter * xd
    k = torch.stack([k0[p] * (litter_env if p in (1, 2, 3) else soil_env) for p in range(7)])
    frac = fraction_tensor(params, L)
    lo, up = transport_coefficients(forcing, grid, closure).rates(params["diffus"], params["cryo"])
    src = source_vector(forcing.inputs, prof, grid)
    return Operator(k=k, frac=frac, lo=lo, up=up, src=src)


def _assemble_fused(params, forcing: Forcing, grid: Grid, closure: str, m_soil: torch.Tensor,
                    m_litter: torch.Tensor, xd: torch.Tensor, phi: torch.Tensor) -> Operator:
    """Same operator as the torch path (tested to round-off), in one compiled pass: no autograd.

    The what-if path rebuilds the operator on every slider move; as ~25 separate tensor operations
    over (7, L, C) that cost more than the solve itself.
    """
    key = ("transport_stack", grid.name, closure)
    if key not in forcing._derived:
        tc = transport_coefficients(forcing, grid, closure)
        forcing._derived[key] = np.ascontiguousarray(np.stack(
            [t.numpy() for t in (tc.lo_bio, tc.lo_cryo, tc.lo_floor, tc.up_bio, tc.up_cryo, tc.up_floor)]))
    coef = forcing._derived[key]
    L, C = coef.shape[1], coef.shape[2]
    a = lambda t: np.ascontiguousarray(t.detach().numpy(), dtype=np.float64)  # noqa: E731
    k = np.empty((7, L, C))
    lo = np.empty((L, C))
    up = np.empty((L, C))
    src = np.empty((4, L, C))
    with kernel_threads(C):
        _nb_assemble(a(base_rates(params)), a(m_soil), a(m_litter), a(xd), coef, a(params["diffus"]),
                     a(params["cryo"]), a(forcing.inputs), a(phi), 1.0 / (DAYS_PER_YEAR * grid.dz), k, lo, up, src)
    t = torch.from_numpy
    return Operator(k=t(k), frac=fraction_tensor(params, L), lo=t(lo), up=t(up), src=t(src))


@numba.njit(parallel=True, cache=True)
def _nb_assemble(k0, ms, ml, xd, coef, kb, kc, inputs, phi, inv_dz, k, lo, up, src):
    """k_pj = k0_p xi_D,j <mods>_pj; lo/up = kappa-weighted transport coefficients; src = I_p phi_j / (365 dz_j)."""
    L, C = ms.shape
    for j in numba.prange(L):
        for c in range(C):
            s = ms[j, c] * xd[j, c]
            lt = ml[j, c] * xd[j, c]
            k[0, j, c] = k0[0, c] * s
            k[1, j, c] = k0[1, c] * lt
            k[2, j, c] = k0[2, c] * lt
            k[3, j, c] = k0[3, c] * lt
            k[4, j, c] = k0[4, c] * s
            k[5, j, c] = k0[5, c] * s
            k[6, j, c] = k0[6, c] * s
            lo[j, c] = kb[c] * coef[0, j, c] + kc[c] * coef[1, j, c] + coef[2, j, c]
            up[j, c] = kb[c] * coef[3, j, c] + kc[c] * coef[4, j, c] + coef[5, j, c]
            f = phi[j, c] * inv_dz[j]
            for p in range(4):
                src[p, j, c] = inputs[p, c] * f


def _mix(X: torch.Tensor, lo: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """(V X) for stacked pools X (P, L, C): (lo+up) X_j - lo X_{j-1} - up X_{j+1} (lo_1 = up_N = 0)."""
    zero = torch.zeros_like(X[:, :1])
    above = torch.cat([zero, X[:, :-1]], 1)
    below = torch.cat([X[:, 1:], zero], 1)
    return (lo + up) * X - lo * above - up * below


def apply_operator(op: Operator, X: torch.Tensor) -> torch.Tensor:
    """Matrix-free product G X, (7, L, C). Differentiable in ``op`` and ``X``.

    Used for residual checks, the adjoint gradient (lambda^T G X) and transient stepping.
    """
    k, f = op.k, op.frac
    F = k * X  # decay flux per pool, g C m-3 d-1
    recv = torch.stack([
        torch.zeros_like(F[0]),
        torch.zeros_like(F[0]),
        f[F_CWDL2] * F[0],
        (1 - f[F_CWDL2]) * F[0],
        f[F_L1S1] * F[1] + f[F_L2S1] * F[2] + f[F_S2S1] * F[5] + f[F_S3S1] * F[6],
        f[F_L3S2] * F[3] + f[F_S1S2] * F[4],
        f[F_S1S3] * F[4] + f[F_S2S3] * F[5],
    ])
    out = F - recv
    mixed = _mix(X[1:], op.lo, op.up)
    GX = torch.cat([out[:1], out[1:] + mixed], 0)
    s = op.shift_lc()
    return GX if s is None else GX + s * X


def rhs(op: Operator) -> torch.Tensor:
    """The right-hand side b as (7, L, C): inputs in CWD and litter, zero in SOC pools (unless
    ``src`` already holds all seven pools)."""
    if op.src.shape[0] == 7:
        return op.src
    z = torch.zeros_like(op.src[:3])
    return torch.cat([op.src, z], 0)
