"""Input allocation B u: the beta root-like profile and the source vector (spec §(h)).

Only annual totals to CWD, L1, L2 and L3 matter; CLM5's own vertical distribution is replaced by

    phi_j = (beta^(100 z^i_{j-1}) - beta^(100 z^i_j)) / (1 - beta^(100 z^i_N)),   z^i_0 = 0,

(depths in cm, Jackson et al. 1996), so sum_j phi_j = 1 over the model depth. Inputs are not
truncated at bedrock (the original code's choice, a divergence from CLM5). If ALTMAX_LASTYEAR is not
strictly positive in all 12 months (permafrost), all input goes to the top layer.
"""

from __future__ import annotations

import torch

from proda_engine.grid import Grid
from proda_engine.physics.forcing import Forcing

DAYS_PER_YEAR = 365.0


def beta_profile(grid: Grid, beta: torch.Tensor) -> torch.Tensor:
    """Fraction of input per layer phi_j, (L, C), from beta per cell (C,); sums to 1 over layers."""
    zi = torch.as_tensor(grid.z_interface, dtype=beta.dtype, device=beta.device)
    ztop = torch.cat([zi.new_zeros(1), zi[:-1]])
    lnb = torch.log(beta)[None, :]
    upper = torch.exp(lnb * 100.0 * ztop[:, None])
    lower = torch.exp(lnb * 100.0 * zi[:, None])
    total = 1.0 - torch.exp(lnb[0] * 100.0 * zi[-1])
    return (upper - lower) / total[None, :]


def permafrost_top_only(forcing: Forcing) -> torch.Tensor:
    """True for cells whose input all goes to layer 1: ALTMAX_LASTYEAR <= 0 in any month, (C,) bool.

    MATLAB's ``if`` on a vector is true only if every element is true; the original therefore uses
    the beta profile only when ALTMAX_LASTYEAR > 0 in all 12 months. We keep that rule.
    """
    return ~(forcing.altmax_lastyear > 0).all(0)


def input_profile(forcing: Forcing, grid: Grid, beta: torch.Tensor) -> torch.Tensor:
    """Input profile phi (L, C) with the permafrost rule applied."""
    phi = beta_profile(grid, beta)
    top = permafrost_top_only(forcing)
    if bool(top.any()):
        first = torch.zeros_like(phi)
        first[0] = 1.0
        phi = torch.where(top[None, :], first, phi)
    return phi


def source_vector(inputs: torch.Tensor, phi: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Source I_{p,j} = I_tot_p phi_j / (365 dz_j) for p in CWD, L1, L2, L3, (4, L, C), g C m-3 d-1.

    Args:
        inputs: annual totals (4, C), g C m-2 yr-1.
        phi: input profile (L, C), unitless.
    """
    dz = torch.as_tensor(grid.dz, dtype=phi.dtype, device=phi.device)
    return inputs[:, None, :] * (phi / (DAYS_PER_YEAR * dz[:, None]))[None]
