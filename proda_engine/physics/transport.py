"""Vertical transport V: bioturbation and cryoturbation as diffusion between layers (spec §(g)).

With zero advection the transport of any non-CWD pool is, in flux form,

    (dX_j/dt)_V = [g-_j (X_{j-1} - X_j) + g+_j (X_{j+1} - X_j)] / dz_j,     g-_1 = g+_N = 0,

with conductances g (m d-1) from harmonic weighting of interface diffusivities D (m2 d-1). The
operator stores ``lo_j = g-_j / dz_j`` and ``up_j = g+_j / dz_j`` (d-1), averaged over 12 months.

Why this is linear in the two diffusivities: in a given month every interface is in one regime
(bioturbation, cryoturbation or frozen), so D_i,m = kappa_regime * phi_i,m with a forcing-only shape
phi in [0, 1]; harmonic means of kappa*phi are kappa times harmonic means of phi. Interfaces with
phi = 0 get the spec's floor D = 1e-30 m2 d-1, whose conductance does not depend on kappa (to
~1e-26 relative). Hence, exactly enough for float64,

    lo = kappa_bio * LB + kappa_cryo * LC + LF,     up = kappa_bio * UB + kappa_cryo * UC + UF,

with coefficient fields precomputed once per forcing. That makes V cheap to rebuild when the
dashboard perturbs kappa and trivially differentiable. The Patankar weight A(Pe) is 1 to within
1e-29 for every non-floor conductance (advection is 1e-30) and is omitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch

from proda_engine.grid import Grid
from proda_engine.physics.forcing import Forcing
from proda_engine.physics.threads import kernel_threads

D_FLOOR = 1e-30  # m2 d-1, spec §(g) numerical floor
CRYO_MAX_ALT = 2.0  # m: cryoturbation applies when 0 < ALT <= 2 m
CRYO_ZERO_DEPTH = 3.0  # m: cryoturbation mixing reaches zero by 3 m (or bedrock)
CLOSURES = ("conservative", "legacy")


@dataclass(frozen=True)
class TransportCoefficients:
    """Month-averaged transport coefficients, each (L, C) tensors (see module docstring).

    ``lo_*`` couple layer j to j-1, ``up_*`` couple j to j+1; ``*_bio`` and ``*_cryo`` are per unit
    diffusivity in m2 yr-1 (so they carry the 1/365), ``*_floor`` in d-1.
    """

    lo_bio: torch.Tensor
    lo_cryo: torch.Tensor
    lo_floor: torch.Tensor
    up_bio: torch.Tensor
    up_cryo: torch.Tensor
    up_floor: torch.Tensor

    def rates(self, kappa_bio: torch.Tensor, kappa_cryo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(lo, up)`` in d-1 for diffusivities in m2 yr-1, each (C,)."""
        lo = kappa_bio * self.lo_bio + kappa_cryo * self.lo_cryo + self.lo_floor
        up = kappa_bio * self.up_bio + kappa_cryo * self.up_cryo + self.up_floor
        return lo, up


def interface_shapes(alt: np.ndarray, nbedrock: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Diffusivity shape phi at interfaces i = 1..N+1 per month, and the regime, spec §(g) step 1.

    Args:
        alt: max(ALTMAX, ALTMAX_LASTYEAR), (12, C), m.
        nbedrock: 1-based deepest soil layer above bedrock, (C,).
    Returns:
        phi: (12, N+1, C) in [0, 1] (0 means the floor applies),
        regime: (12, C) int, 0 frozen (ALT <= 0), 1 cryoturbation (0 < ALT <= 2 m), 2 bioturbation.
    """
    zi = grid.z_interface_ext  # (N+1,), bottom interface of layers 1..N+1
    n_if = zi.shape[0]
    i1 = np.arange(1, n_if + 1)[None, :, None]  # 1-based interface index
    active = i1 <= (nbedrock[None, None, :] + 1)  # i <= nb + 1
    regime = np.where(alt <= 0.0, 0, np.where(alt <= CRYO_MAX_ALT, 1, 2))
    z = zi[None, :, None]
    a = alt[:, None, :]
    z_nb1 = zi[np.clip(nbedrock, 1, n_if - 1)]  # z^i_{nb+1} (0-based index nb)
    bottom = np.minimum(CRYO_ZERO_DEPTH, z_nb1)[None, None, :]
    denom = bottom - a
    with np.errstate(divide="ignore", invalid="ignore"):
        # Linear decrease from ALT to min(3 m, bedrock); where that interval is empty the mixing
        # stops at ALT (a case the original leaves undefined).
        ramp = np.where(denom > 0, np.maximum(0.0, 1.0 - (z - a) / np.where(denom > 0, denom, 1.0)), 0.0)
    cryo = np.where(z < a, 1.0, ramp)
    phi = np.where(regime[:, None, :] == 2, 1.0, np.where(regime[:, None, :] == 1, cryo, 0.0))
    phi = np.where(active, phi, 0.0)
    return phi, regime


def _harmonic(phi_a: np.ndarray, phi_b: np.ndarray, w: np.ndarray, dn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Conductance between two diffusivities: g = 1 / (dn [(1-w)/D_a + w/D_b]).

    Returns (shape part per unit kappa [m-1 ... times kappa gives m d-1 after /365], floor part [m d-1]).
    Both phi positive: kappa-proportional part 1/(dn[(1-w)/phi_a + w/phi_b]). Otherwise the floored
    side(s) dominate: g = D_FLOOR / (dn * sum of the weights on floored sides).
    """
    pos_a, pos_b = phi_a > 0, phi_b > 0
    both = pos_a & pos_b
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.where(both, 1.0 / (dn * ((1 - w) / np.where(pos_a, phi_a, 1.0) + w / np.where(pos_b, phi_b, 1.0))),
                         0.0)
    wsum = np.where(~pos_a, 1 - w, 0.0) + np.where(~pos_b, w, 0.0)
    with np.errstate(divide="ignore"):
        floor = np.where(both, 0.0, D_FLOOR / (dn * np.where(wsum > 0, wsum, 1.0)))
    return shape, floor


def transport_coefficients(forcing: Forcing, grid: Grid, closure: str = "conservative") -> TransportCoefficients:
    """Month-averaged transport coefficients for a forcing (compiled kernel; cached on the forcing).

    Same numbers as :func:`transport_coefficients_reference` (the readable numpy version, kept as
    the test oracle), ~50x faster.
    """
    if closure not in CLOSURES:
        raise ValueError(f"closure must be one of {CLOSURES}, found {closure!r}")
    key = ("transport", grid.name, closure)
    if key in forcing._derived:
        return forcing._derived[key]
    alt = np.ascontiguousarray(forcing.alt.detach().cpu().double().numpy())
    nb = np.ascontiguousarray(forcing.nbedrock.cpu().numpy().astype(np.int64))
    out = np.zeros((6, grid.n_layers, alt.shape[1]))
    with kernel_threads(alt.shape[1]):
        _nb_transport(alt, nb, grid.z_interface_ext, grid.z_node_ext, grid.dn, grid.dz, closure == "legacy",
                      out.reshape(1, *out.shape))
    kw = {"dtype": forcing.dtype, "device": forcing.device}
    coef = TransportCoefficients(*(torch.as_tensor(out[i], **kw) for i in range(6)))
    forcing._derived[key] = coef
    return coef


@numba.njit(cache=True, inline="always")
def _month_conductances(a, nbc, bottom, zi, zn, dn, N, phi, gm):
    """Interface conductances g (3, N) of one month with active-layer depth ``a`` (m): rows
    bioturbation shape, cryoturbation shape (each per unit diffusivity, m yr-1 -> per day) and the
    floor diffusivity; spec §(g) steps 1-2 (phi: diffusivity shape at the N+1 interfaces)."""
    regime = 0 if a <= 0.0 else (1 if a <= CRYO_MAX_ALT else 2)
    denom = bottom - a
    for i in range(N + 1):
        if i + 1 > nbc + 1 or regime == 0:
            phi[i] = 0.0
        elif regime == 2:
            phi[i] = 1.0
        elif zi[i] < a:
            phi[i] = 1.0
        elif denom > 0.0:
            phi[i] = max(0.0, 1.0 - (zi[i] - a) / denom)
        else:
            phi[i] = 0.0
    for g in range(3):
        gm[g, 0] = 0.0
    for jj in range(1, N):
        pa = phi[jj]
        pb = phi[jj - 1]
        w = (zi[jj - 1] - zn[jj - 1]) / dn[jj]
        shape = 0.0
        floor = 0.0
        if pa > 0.0 and pb > 0.0:
            shape = 1.0 / (dn[jj] * ((1.0 - w) / pa + w / pb))
        else:
            wsum = 0.0
            if pa <= 0.0:
                wsum += 1.0 - w
            if pb <= 0.0:
                wsum += w
            floor = D_FLOOR / (dn[jj] * wsum)
        gm[0, jj] = shape / 365.0 if regime == 2 else 0.0
        gm[1, jj] = shape / 365.0 if regime == 1 else 0.0
        gm[2, jj] = floor


@numba.njit(parallel=True, cache=True)
def _nb_transport(alt, nb, zi, zn, dn, dz, legacy, out):
    """Kernel of :func:`transport_coefficients`: out[.] = (lo_bio, lo_cryo, lo_floor, up_bio, up_cryo, up_floor).

    ``out`` is (1, 6, N, C) for the 12-month average, or (12, 6, N, C) for each month's own
    coefficients (the transient mode; their mean is the average)."""
    N = dz.shape[0]
    C = alt.shape[1]
    monthly = out.shape[0] == 12
    scale = 1.0 if monthly else 1.0 / 12.0
    for c in numba.prange(C):
        phi = np.empty(N + 1)
        gm = np.empty((3, N))
        nbc = nb[c]
        bottom = min(CRYO_ZERO_DEPTH, zi[min(nbc, N)])
        for m in range(12):
            _month_conductances(alt[m, c], nbc, bottom, zi, zn, dn, N, phi, gm)
            mo = m if monthly else 0
            for jj in range(N):
                for g in range(3):
                    out[mo, g, jj, c] += gm[g, jj] * scale / dz[jj]
                    if jj < N - 1:
                        src = jj if (legacy and jj >= nbc and jj >= 1) else jj + 1
                        out[mo, 3 + g, jj, c] += gm[g, src] * scale / dz[jj]


@numba.njit(parallel=True, cache=True, fastmath={"contract", "arcp"})
def _nb_monthly_rates(alt, nb, cells, zi, zn, dn, dz, legacy, kb, kc, lo, up):
    """Transport rates of the listed cells, cell-major: lo/up[c, m, j] (d-1) =
    kappa_bio g_bio/dz + kappa_cryo g_cryo/dz + g_floor/dz for each month m (``lo`` (C, 12, L), the
    transient mode's seasonal operators), or their 12-month mean (``lo`` (C, 1, L), the annual-mean
    operator; the steady-state V). kappa in m2 yr-1. ``arcp``: the divisions by dz become products
    with 1/dz hoisted out of the month loop (round-off only)."""
    N = dz.shape[0]
    monthly = lo.shape[1] == 12
    scale = 1.0 if monthly else 1.0 / 12.0
    for q in numba.prange(cells.shape[0]):
        c = cells[q]
        phi = np.empty(N + 1)
        gm = np.empty((3, N))
        nbc = nb[c]
        bottom = min(CRYO_ZERO_DEPTH, zi[min(nbc, N)])
        if not monthly:
            for jj in range(N):
                lo[c, 0, jj] = 0.0
                up[c, 0, jj] = 0.0
        for m in range(12):
            _month_conductances(alt[m, c], nbc, bottom, zi, zn, dn, N, phi, gm)
            for jj in range(N):
                a = (kb[c] * (gm[0, jj] / dz[jj]) + kc[c] * (gm[1, jj] / dz[jj]) + gm[2, jj] / dz[jj]) * scale
                b = 0.0
                if jj < N - 1:
                    src = jj if (legacy and jj >= nbc and jj >= 1) else jj + 1
                    b = (kb[c] * (gm[0, src] / dz[jj]) + kc[c] * (gm[1, src] / dz[jj]) + gm[2, src] / dz[jj]) * scale
                if monthly:
                    lo[c, m, jj] = a
                    up[c, m, jj] = b
                else:
                    lo[c, 0, jj] += a
                    up[c, 0, jj] += b


def transport_coefficients_reference(forcing: Forcing, grid: Grid,
                                     closure: str = "conservative") -> TransportCoefficients:
    """Readable numpy implementation of the month-averaged transport coefficients (test oracle).

    ``closure="conservative"`` (default): g+_j = g-_{j+1} for every j, so sum_j dz_j (V X)_j = 0.
    ``closure="legacy"``: as the original code, g+_j = g-_j for j >= nb+1 (j > 1), which removes
    carbon below the first bedrock layer (a sink, reported by the mass-balance diagnostic).
    """
    alt = forcing.alt.detach().cpu().double().numpy()
    nb = forcing.nbedrock.cpu().numpy()
    phi, regime = interface_shapes(alt, nb, grid)
    N = grid.n_layers
    zn, zi, dn = grid.z_node_ext, grid.z_interface_ext, grid.dn
    # Upper conductance of layer j (1-based j = 2..N): harmonic of D_j and D_{j-1},
    # w = (z^i_{j-1} - z_{j-1}) / dn_j.
    j = np.arange(2, N + 1)
    w = ((zi[j - 2] - zn[j - 2]) / dn[j - 1])[None, :, None]
    shape_m, floor_m = _harmonic(phi[:, j - 1, :], phi[:, j - 2, :], w, dn[j - 1][None, :, None])
    C = alt.shape[1]
    gm_bio = np.zeros((12, N, C))
    gm_cryo = np.zeros((12, N, C))
    gm_floor = np.zeros((12, N, C))
    is_bio = (regime == 2)[:, None, :]
    is_cryo = (regime == 1)[:, None, :]
    gm_bio[:, 1:] = np.where(is_bio, shape_m, 0.0) / 365.0
    gm_cryo[:, 1:] = np.where(is_cryo, shape_m, 0.0) / 365.0
    gm_floor[:, 1:] = floor_m
    # Lower conductance: g+_j = g-_{j+1} (conservative and the original for j <= nb or j = 1);
    # g+_N = 0 (no flux through the bottom of layer N).
    gp = [np.zeros_like(gm_bio) for _ in range(3)]
    for src, dst in zip((gm_bio, gm_cryo, gm_floor), gp):
        dst[:, :-1] = src[:, 1:]
        if closure == "legacy":
            jj = np.arange(1, N + 1)[None, :, None]
            legacy_rows = (jj >= nb[None, None, :] + 1) & (jj > 1) & (jj < N)
            dst[:] = np.where(legacy_rows, src, dst)
    dz = grid.dz[None, :, None]
    kw = {"dtype": forcing.dtype, "device": forcing.device}

    def mean_rate(g: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray((g / dz).mean(0)), **kw)

    return TransportCoefficients(
        lo_bio=mean_rate(gm_bio), lo_cryo=mean_rate(gm_cryo), lo_floor=mean_rate(gm_floor),
        up_bio=mean_rate(gp[0]), up_cryo=mean_rate(gp[1]), up_floor=mean_rate(gp[2]),
    )


def monthly_diagonal(forcing: Forcing, grid: Grid, kappa_bio: torch.Tensor, kappa_cryo: torch.Tensor,
                     closure: str = "conservative") -> torch.Tensor:
    """Month-mean diagonal of V for the litter/SOC block, (L, C), d-1 (for the V bulk diagnostic).

    diag(V)_j = (g-_j + g+_j) / dz_j; the average over months of diag(V_m) equals the diagonal of the
    averaged V, so the precomputed coefficients give it directly.
    """
    lo, up = transport_coefficients(forcing, grid, closure).rates(kappa_bio, kappa_cryo)
    return lo + up
