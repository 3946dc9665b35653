"""CLM5 vertically resolved CENTURY matrix model: operators, structured solver, diagnostics.

The physics takes tensors and a grid; it never opens a file.
"""

from proda_engine.physics.forcing import Forcing
from proda_engine.physics.model import (
    NumpySteadyState,
    Status,
    SteadyState,
    default_params,
    params_from_theta,
    solve_theta,
    steady_state,
)
from proda_engine.physics.operator import Operator, apply_operator, assemble, rhs
from proda_engine.physics.solver import solve, solve_transposed
from proda_engine.physics.transfer import POOLS

__all__ = [
    "POOLS",
    "Forcing",
    "NumpySteadyState",
    "Operator",
    "Status",
    "SteadyState",
    "apply_operator",
    "assemble",
    "default_params",
    "params_from_theta",
    "rhs",
    "solve",
    "solve_theta",
    "solve_transposed",
    "steady_state",
]
