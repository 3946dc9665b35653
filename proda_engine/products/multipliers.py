"""Bulk multipliers: the one place that says how a what-if multiplier changes the model (spec §(j)).

The what-if engine realises a request such as "K̄ +10 %" as one multiplier m per mechanism
(:data:`MECHANISMS`; 1 = unchanged) and solves the steady state under them. Two callers build that
operator: :class:`~proda_engine.products.whatif.WhatIfEngine` (its lean path, for ensemble members) and
:class:`~proda_engine.products.gridded.CellSolver` (any batch of cells, e.g. the 0.05° tiles of
:mod:`proda_engine.products.highres`). Both go through :func:`multiplied_operator`, so the fine map of a
what-if applies exactly the physics the coarse one did:

* A: the eight microbial transfer fractions x m_A (each donor's summed fraction capped at
  :data:`MAX_DONOR_EFFICIENCY`);
* K: every baseline decay rate 1/tau x m_K;
* Xi: the environmental modifier (soil and litter month means, and the diagnostic xi_hat) x m_Xi;
* V: the transport rates of the V matrix (lo, up) x m_V;
* I: beta of the input profile x m_I, clamped to [1e-3, :data:`BETA_MAX`];
* NPP: the four carbon inputs x m_NPP.

This module imports only the physics and the parameter table (no products), so both callers can use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from proda_engine.grid import Grid
from proda_engine.parameters import BETA_THETA_MAX, LOWER, PARAMETER_INDEX, UPPER
from proda_engine.physics import Forcing
from proda_engine.physics.inputs import input_profile
from proda_engine.physics.operator import Operator, assemble
from proda_engine.physics.transfer import TAU_NAMES

#: The six mechanisms, in the order of every multiplier tuple.
MECHANISMS: tuple[str, ...] = ("A", "K", "Xi", "V", "I", "NPP")
#: Guard of the CUE multiplier: no donor pool passes on more than this fraction of what it decomposes
#: (at 1 a pool would never respire and the steady state would not exist).
MAX_DONOR_EFFICIENCY = 0.95
#: Largest beta of the input profile (the spec's clamp of beta's theta at 0.98).
BETA_MAX = float(LOWER[PARAMETER_INDEX["beta"]] + BETA_THETA_MAX * (UPPER - LOWER)[PARAMETER_INDEX["beta"]])
#: Multipliers that change nothing.
NO_CHANGE: tuple[float, ...] = (1.0,) * len(MECHANISMS)
_FRACTIONS = ("fl1s1", "fl2s1", "fl3s2", "fs1s2", "fs1s3", "fs2s1", "fs2s3", "fs3s1")


def multiplier_key(multipliers: Mapping[str, float] | tuple[float, ...]) -> tuple[float, ...]:
    """Canonical multipliers (one per mechanism, 1 = unchanged), rounded to 12 significant digits."""
    vals = tuple(multipliers[m] for m in MECHANISMS) if isinstance(multipliers, Mapping) else tuple(multipliers)
    if len(vals) != len(MECHANISMS) or not all(v > 0 and math.isfinite(v) for v in vals):
        raise ValueError(f"multipliers must be {len(MECHANISMS)} finite positive numbers, found {vals}")
    return tuple(float(f"{v:.12g}") for v in vals)


def apply_multipliers(params: Mapping[str, torch.Tensor], mult: tuple[float, ...]) -> dict[str, torch.Tensor]:
    """Physical parameters under the bulk multipliers (``space="multiplier"``).

    K: every tau / m_K (all decay rates x m_K); A: the eight microbial transfer fractions x m_A, each
    donor's summed fraction capped at :data:`MAX_DONOR_EFFICIENCY` (fractions rescaled together); I:
    beta x m_I, at most :data:`BETA_MAX`. Xi and V act on the operator (the environmental modifier and
    the transport rates), NPP on the inputs; CWD's split to L2/L3 (not microbial) is never changed.
    """
    m = dict(zip(MECHANISMS, mult))
    out = dict(params)
    if m["K"] != 1.0:
        for name in set(TAU_NAMES):
            out[name] = out[name] / m["K"]
    if m["A"] != 1.0:
        for name in _FRACTIONS:
            out[name] = out[name] * m["A"]
        for donor in (("fl1s1",), ("fl2s1",), ("fl3s2",), ("fs1s2", "fs1s3"), ("fs2s1", "fs2s3"), ("fs3s1",)):
            total = sum(out[n] for n in donor)
            scale = torch.clamp(MAX_DONOR_EFFICIENCY / torch.clamp(total, min=1e-300), max=1.0)
            for n in donor:
                out[n] = out[n] * scale
    if m["I"] != 1.0:
        out["beta"] = scaled_beta(out["beta"], m["I"])
    return out


def scaled_beta(beta: torch.Tensor, m: float) -> torch.Tensor:
    """beta x m kept a root-like profile: in [1e-3, :data:`BETA_MAX`]."""
    return beta if m == 1.0 else torch.clamp(beta * m, min=1e-3, max=BETA_MAX)


def multiplied_operator(base: Mapping[str, torch.Tensor], forcing: Forcing, grid: Grid, closure: str,
                        mult: tuple[float, ...], *, modifiers: tuple[torch.Tensor, torch.Tensor],
                        depth_scalar: torch.Tensor, xhat: torch.Tensor | None = None,
                        phi: torch.Tensor | None = None
                        ) -> tuple[dict[str, torch.Tensor], Operator, Forcing, torch.Tensor | None]:
    """The steady-state operator of a batch of cells under bulk multipliers ``mult``.

    Args:
        base: the cells' unperturbed physical parameters (C,) each.
        forcing: the cells' forcing (inputs at multiplier 1).
        modifiers: (soil, litter) 12-month means of the environmental modifier at multiplier 1, (L, C).
        depth_scalar: the depth scalar xi_D of ``base`` (L, C) or (L, 1).
        xhat: the diagnostic modifier at multiplier 1 (L, C), scaled by m_Xi when given.
        phi: the input profile at beta x m_I (built here when None).

    Returns:
        (parameters under the multipliers, operator, forcing with inputs x m_NPP, xhat x m_Xi). The
        decay rates are k = k0 / m_K-scaled tau x (m_Xi modifiers x xi_D); lo/up are x m_V (1/day).
    """
    m = dict(zip(MECHANISMS, mult))
    p = apply_multipliers(base, mult)
    mods = (modifiers[0] * m["Xi"], modifiers[1] * m["Xi"]) if m["Xi"] != 1.0 else modifiers
    fi = forcing.with_inputs(forcing.inputs * m["NPP"]) if m["NPP"] != 1.0 else forcing
    if phi is None:
        phi = input_profile(forcing, grid, p["beta"])
    op = assemble(p, fi, grid, closure, modifiers=mods, depth_scalar=depth_scalar, phi=phi)
    if m["V"] != 1.0:
        op.lo.mul_(m["V"])
        op.up.mul_(m["V"])
    if xhat is not None and m["Xi"] != 1.0:
        xhat = xhat * m["Xi"]
    return p, op, fi, xhat
