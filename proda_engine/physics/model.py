"""High-level steady state: parameters + forcing -> pools, with a per-cell status.

>>> from proda_engine.grid import get_grid
>>> from proda_engine.physics import Forcing, solve_theta
>>> import numpy as np
>>> g = get_grid()
>>> res = solve_theta(np.full((1, 21), 0.5), Forcing.uniform(1, grid=g), g)
>>> res.soc.shape, int(res.status[0])
((20, 1), 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import torch

from proda_engine.grid import Grid, get_grid
from proda_engine.parameters import PARAMETER_NAMES, default_clm5_physical, to_physical
from proda_engine.physics.forcing import Forcing
from proda_engine.physics.operator import Operator, assemble
from proda_engine.physics.solver import solve


class Status(IntEnum):
    """Per-cell outcome of a steady-state solve. Failure is a value, never an exception."""

    OK = 0
    NONFINITE = 1  # the solution has NaN or inf (e.g. a zero decay rate: efolding -> 0)
    NEGATIVE = 2  # a pool is negative beyond round-off (cannot happen for a valid M-matrix)
    INVALID_INPUT = 3  # the operator itself has non-finite or non-positive rates


PhysicalParams = dict[str, torch.Tensor]


def params_from_theta(theta: torch.Tensor | np.ndarray, *, clamp: bool = True,
                      dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> PhysicalParams:
    """Physical parameters from unit-interval theta of shape (C, 21) (or (21,) for one cell).

    Applies the spec's clamp (theta in [1e-4, 1], beta's theta <= 0.98) unless ``clamp=False``.
    Differentiable when ``theta`` is a tensor requiring grad.
    """
    th = theta if isinstance(theta, torch.Tensor) else torch.as_tensor(np.asarray(theta), dtype=dtype, device=device)
    if th.dim() == 1:
        th = th[None, :]
    phys = to_physical(th, clamp=clamp)
    return {name: phys[:, i] for i, name in enumerate(PARAMETER_NAMES)}


def default_params(forcing: Forcing) -> PhysicalParams:
    """The "Default CLM5" preset for every cell of ``forcing`` (sand-dependent f_S1S2 if sand is known)."""
    C = forcing.n_cells
    sand = None if forcing.sand is None else forcing.sand.detach().cpu().numpy()
    d = default_clm5_physical(sand)
    kw = {"dtype": forcing.dtype, "device": forcing.device}
    out: PhysicalParams = {}
    for name in PARAMETER_NAMES:
        v = torch.as_tensor(np.asarray(d[name], dtype=float), **kw)
        out[name] = v if v.dim() == 2 else v.reshape(-1).expand(C).clone() if v.numel() == 1 else v
    return out


@dataclass
class SteadyState:
    """Result of a steady-state solve for C cells.

    Attributes:
        pools: X (7, L, C), g C m-3, pool order CWD, L1, L2, L3, S1, S2, S3.
        status: (C,) int8 :class:`Status` codes.
        operator: the structured operator that was solved (for diagnostics).
        params: physical parameters used.
        grid, closure: the vertical grid and transport closure.
    """

    pools: torch.Tensor
    status: torch.Tensor
    operator: Operator
    params: PhysicalParams
    grid: Grid
    closure: str
    extras: dict = field(default_factory=dict)

    @property
    def soc(self) -> torch.Tensor:
        """SOC density per layer, S1 + S2 + S3, (L, C), g C m-3 (litter and CWD excluded)."""
        return self.pools[4:7].sum(0)

    @property
    def ok(self) -> torch.Tensor:
        return self.status == Status.OK

    def status_counts(self) -> dict[str, int]:
        vals, counts = np.unique(self.status.cpu().numpy(), return_counts=True)
        return {Status(int(v)).name: int(c) for v, c in zip(vals, counts)}


def cell_status(op: Operator, X: torch.Tensor, rtol: float = 1e-9) -> torch.Tensor:
    """Status per cell: invalid operator > non-finite solution > negative pools > OK.

    Uses per-cell reductions only (a sum is finite iff every term is), so it costs a few passes
    over the state rather than an elementwise mask per check.
    """
    with torch.no_grad():
        finite_op = (torch.isfinite(op.k.sum((0, 1))) & torch.isfinite(op.src.sum((0, 1)))
                     & torch.isfinite(op.frac.sum((0, 1))) & (op.k.amin((0, 1)) > 0))
        finite = torch.isfinite(X.sum((0, 1)))
        nonneg = X.amin((0, 1)) >= -rtol * X.abs().amax((0, 1))
        status = torch.zeros(X.shape[-1], dtype=torch.int8, device=X.device)
        status[~nonneg] = Status.NEGATIVE
        status[~finite] = Status.NONFINITE
        status[~finite_op] = Status.INVALID_INPUT
        return status


def steady_state(params: PhysicalParams, forcing: Forcing, grid: Grid | None = None, *,
                 closure: str = "conservative", backend: str = "auto", **assemble_kw) -> SteadyState:
    """Solve X* = (A xi K - V)^-1 (-B u) for every cell (spec §(b)), structured and batched.

    Args:
        params: physical parameters, each (C,) (fractions may be (L, C)).
        forcing: monthly forcing for C cells.
        grid: vertical grid (default ``clm5_20``).
        closure: ``conservative`` (default, mass conserving) or ``legacy`` (original bedrock sink).
        backend: ``auto``/``numba``/``torch`` (see :mod:`proda_engine.physics.solver`).
    Returns:
        :class:`SteadyState`; pools in g C m-3. No clamping of negative values: the status says.
    """
    grid = grid or get_grid()
    op = assemble(params, forcing, grid, closure, **assemble_kw)
    X = solve(op, backend)
    return SteadyState(pools=X, status=cell_status(op, X), operator=op, params=params, grid=grid,
                       closure=closure)


@dataclass
class NumpySteadyState:
    """numpy view of a :class:`SteadyState` (pools (7, L, C), soc (L, C), status (C,))."""

    pools: np.ndarray
    soc: np.ndarray
    status: np.ndarray
    result: SteadyState


def solve_theta(theta: np.ndarray | torch.Tensor, forcing: Forcing, grid: Grid | None = None, *,
                closure: str = "conservative", backend: str = "auto") -> SteadyState | NumpySteadyState:
    """Steady state from unit-interval parameters theta (C, 21).

    With a numpy ``theta`` returns numpy arrays (:class:`NumpySteadyState`); with a tensor returns
    a differentiable :class:`SteadyState`.
    """
    as_numpy = not isinstance(theta, torch.Tensor)
    params = params_from_theta(theta, dtype=forcing.dtype, device=forcing.device)
    res = steady_state(params, forcing, grid, closure=closure, backend=backend)
    if not as_numpy:
        return res
    return NumpySteadyState(pools=res.pools.detach().cpu().numpy(), soc=res.soc.detach().cpu().numpy(),
                            status=res.status.cpu().numpy(), result=res)
