"""Transfer matrix A, decay rates K and respiration fractions (spec §(e), §(f)).

Pools, in the spec's pool-major order: 0 CWD, 1 L1 (metabolic), 2 L2 (cellulose), 3 L3 (lignin),
4 S1 (fast), 5 S2 (slow), 6 S3 (passive).

A has -1 on the diagonal and the ten within-layer transfers below (receiver <- donor). Respiration
of donor d is r_d = 1 - sum of its transfer fractions; per-pool microbial CUE is 1 - r_d.
"""

from __future__ import annotations

import torch

POOLS: tuple[str, ...] = ("CWD", "L1", "L2", "L3", "S1", "S2", "S3")
POOL_LONG_NAMES: tuple[str, ...] = (
    "coarse woody debris", "metabolic litter", "cellulose litter", "lignin litter",
    "fast SOC", "slow SOC", "passive SOC",
)
LITTER = (1, 2, 3)
SOIL = (4, 5, 6)

#: Order of the nine transfer-fraction parameters in the operator's ``frac`` tensor.
FRACTION_NAMES: tuple[str, ...] = (
    "fcwdl2", "fl1s1", "fl2s1", "fl3s2", "fs1s2", "fs1s3", "fs2s1", "fs2s3", "fs3s1",
)
F_CWDL2, F_L1S1, F_L2S1, F_L3S2, F_S1S2, F_S1S3, F_S2S1, F_S2S3, F_S3S1 = range(9)

#: (receiver, donor, fraction index or -1 for 1 - fcwdl2) for every off-diagonal entry of A.
TRANSFERS: tuple[tuple[int, int, int], ...] = (
    (2, 0, F_CWDL2), (3, 0, -1),
    (4, 1, F_L1S1), (4, 2, F_L2S1), (5, 3, F_L3S2),
    (5, 4, F_S1S2), (6, 4, F_S1S3), (4, 5, F_S2S1), (6, 5, F_S2S3), (4, 6, F_S3S1),
)

TAU_NAMES: tuple[str, ...] = ("taucwd", "taul1", "taul2", "taul2", "tau4s1", "tau4s2", "tau4s3")


def base_rates(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Baseline decay rates k_p = 1 / (365 tau_p), (7, C), d-1. Lignin L3 uses tau_L2 (spec §(c))."""
    return torch.stack([1.0 / (365.0 * params[n]) for n in TAU_NAMES])


def fraction_tensor(params: dict[str, torch.Tensor], n_layers: int) -> torch.Tensor:
    """Stack the nine transfer fractions as (9, Lf, C) with Lf = 1, or L if any is per layer.

    Per-layer fractions arise in the default-CLM5 preset, where f_S1S2 depends on layer sand.
    """
    fr = [params[n] for n in FRACTION_NAMES]
    per_layer = any(f.dim() == 2 for f in fr)
    if per_layer:
        C = max(f.shape[-1] for f in fr)
        fr = [f.expand(n_layers, C) if f.dim() == 2 else f.reshape(1, -1).expand(n_layers, C) for f in fr]
        return torch.stack(fr)
    return torch.stack(fr)[:, None, :]


def respiration_fractions(frac: torch.Tensor) -> torch.Tensor:
    """Respiration fraction r_d per donor pool, (7, Lf, C), unitless.

    CWD 0; L1 1-f_L1S1; L2 1-f_L2S1; L3 1-f_L3S2; S1 1-f_S1S2-f_S1S3; S2 1-f_S2S1-f_S2S3; S3 1-f_S3S1.
    """
    one = torch.ones_like(frac[0])
    return torch.stack([
        one * 0.0,
        1 - frac[F_L1S1], 1 - frac[F_L2S1], 1 - frac[F_L3S2],
        1 - frac[F_S1S2] - frac[F_S1S3], 1 - frac[F_S2S1] - frac[F_S2S3], 1 - frac[F_S3S1],
    ])


def transfer_matrix(frac_cell: torch.Tensor) -> torch.Tensor:
    """The 7x7 within-layer A for one set of fractions, (..., 7, 7): -1 diagonal, A[receiver, donor]."""
    shape = frac_cell.shape[1:]
    A = -torch.eye(7, dtype=frac_cell.dtype, device=frac_cell.device).expand(*shape, 7, 7).clone()
    for r, d, i in TRANSFERS:
        A[..., r, d] = (1 - frac_cell[F_CWDL2]) if i < 0 else frac_cell[i]
    return A
