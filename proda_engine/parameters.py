"""The 21 free parameters of the CLM5 vertically resolved CENTURY model (spec §(c)).

One table drives everything: MCMC bounds, network output width, sensitivity groups, dashboard
sliders and the docs. Parameters live on the unit interval (``theta``) and map linearly to physical
values::

    pi_i = lower_i + theta_i * (upper_i - lower_i)

Physical values are always derived, never stored as the source of truth.

Example
-------
>>> import numpy as np
>>> phys = to_physical(np.full(21, 0.5))
>>> round(float(phys[PARAMETER_INDEX["tau4s3"]]), 1)
600.0
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np

log = logging.getLogger(__name__)

Group = Literal["A", "K", "Xi", "V", "I"]


@dataclass(frozen=True)
class Parameter:
    """One row of the parameter table.

    Attributes:
        name: code name (spec §(c) column "code name"; ``w-scaling`` is spelled ``wscaling``).
        lower, upper: prior bounds in physical units; theta=0 -> lower, theta=1 -> upper.
        default: CLM5 default in physical units (``None`` where it is sand dependent or undefined).
        units: physical units.
        group: mechanism group used by sensitivity analyses (A, K, Xi, V, I).
        doc: one-line meaning.
    """

    name: str
    lower: float
    upper: float
    default: float | None
    units: str
    group: Group
    doc: str
    label: str = ""

    def to_physical(self, theta: float) -> float:
        """Map a unit-interval value to physical units (no clamping)."""
        return self.lower + theta * (self.upper - self.lower)


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("diffus", 3e-5, 5e-4, 1e-4, "m2 yr-1", "V", "bioturbation diffusivity kappa_bio", "bioturbation"),
    Parameter("cryo", 3e-5, 1.6e-3, 5e-4, "m2 yr-1", "V", "cryoturbation diffusivity kappa_cryo", "cryoturbation"),
    Parameter("q10", 1.2, 3.0, 1.5, "1", "Xi", "Q10 of decomposition (also used when frozen)", "Q10"),
    # CLM5's default e-folding depth is 10 m, outside the prior range [0, 1] m (spec §(c), [inferred]).
    Parameter("efolding", 0.0, 1.0, 10.0, "m", "Xi", "e-folding depth of the decomposition depth scalar", "e-folding depth"),
    Parameter("taucwd", 1.0, 6.0, 1 / 0.3, "yr", "K", "turnover time of coarse woody debris", "tau CWD"),
    Parameter("taul1", 0.0, 0.11, 1 / 18.5, "yr", "K", "turnover time of metabolic litter", "tau L1"),
    Parameter("taul2", 0.1, 0.3, 1 / 4.9, "yr", "K", "turnover time of cellulose litter (lignin L3 uses the same)", "tau L2/L3"),
    Parameter("tau4s1", 0.0, 1.0, 1 / 7.3, "yr", "K", "turnover time of fast SOC", "tau S1"),
    Parameter("tau4s2", 1.0, 50.0, 1 / 0.2, "yr", "K", "turnover time of slow SOC", "tau S2"),
    Parameter("tau4s3", 200.0, 1000.0, 1 / 0.0045, "yr", "K", "turnover time of passive SOC", "tau S3"),
    Parameter("fl1s1", 0.1, 0.8, 1 - 0.55, "1", "A", "transfer fraction metabolic litter L1 -> S1", "f L1->S1"),
    Parameter("fl2s1", 0.2, 0.8, 0.5, "1", "A", "transfer fraction cellulose litter L2 -> S1", "f L2->S1"),
    Parameter("fl3s2", 0.2, 0.8, 0.5, "1", "A", "transfer fraction lignin litter L3 -> S2", "f L3->S2"),
    Parameter("fs1s2", 0.0, 0.4, None, "1", "A", "transfer fraction S1 -> S2 (default is sand dependent)", "f S1->S2"),
    Parameter("fs1s3", 0.0, 0.05, 0.004, "1", "A", "transfer fraction S1 -> S3", "f S1->S3"),
    Parameter("fs2s1", 0.1, 0.74, (0.42 / 0.45) * (1 - 0.55), "1", "A", "transfer fraction S2 -> S1", "f S2->S1"),
    Parameter("fs2s3", 0.0, 0.1, (0.03 / 0.45) * (1 - 0.55), "1", "A", "transfer fraction S2 -> S3", "f S2->S3"),
    Parameter("fs3s1", 0.0, 0.9, 1 - 0.55, "1", "A", "transfer fraction S3 -> S1", "f S3->S1"),
    Parameter("fcwdl2", 0.5, 1.0, 1 - 0.24, "1", "A", "fraction of CWD fragmentation to L2 (rest to L3)", "f CWD->L2"),
    Parameter("wscaling", 0.0, 5.0, 1.0, "1", "Xi", "multiplier on CLM5's water scalar W_SCALAR", "water scaling"),
    Parameter("beta", 0.5, 0.9999, 0.95, "1", "I", "beta of the Jackson et al. (1996) root-like input profile", "input beta"),
)

N_PARAMS: int = len(PARAMETERS)
PARAMETER_NAMES: tuple[str, ...] = tuple(p.name for p in PARAMETERS)
PARAMETER_INDEX: dict[str, int] = {p.name: i for i, p in enumerate(PARAMETERS)}
LOWER: np.ndarray = np.array([p.lower for p in PARAMETERS])
UPPER: np.ndarray = np.array([p.upper for p in PARAMETERS])

#: Mechanism groups (0-based indices), spec §(c) "Parameter groups".
GROUPS: dict[str, tuple[int, ...]] = {
    g: tuple(i for i, p in enumerate(PARAMETERS) if p.group == g) for g in ("A", "K", "Xi", "V", "I")
}
GROUP_LABELS: dict[str, str] = {
    "A": "microbial CUE / transfer",
    "K": "baseline decomposition",
    "Xi": "environmental modifiers",
    "V": "vertical transport",
    "I": "input allocation",
}

#: Clamp applied to theta before mapping (spec §(c) "Singularities to guard against").
THETA_MIN: float = 1e-4
THETA_MAX: float = 1.0
BETA_THETA_MAX: float = 0.98

ArrayT = TypeVar("ArrayT")

#: Per-parameter clamp bounds of :func:`clamp_theta`, (21,) each.
THETA_CLAMP_LOWER: np.ndarray = np.full(N_PARAMS, THETA_MIN)
THETA_CLAMP_UPPER: np.ndarray = np.where(np.arange(N_PARAMS) == PARAMETER_INDEX["beta"], BETA_THETA_MAX, THETA_MAX)


def clamp_theta(theta: ArrayT, *, log_clamps: bool = True) -> ArrayT:
    """Clip unit-interval parameters to [1e-4, 1] (beta's theta to at most 0.98).

    Guards the singular lower bounds (tau_L1 = 0, tau_S1 = 0, efolding = 0 give infinite rates or a
    zero depth scalar). Works on numpy arrays and torch tensors with the parameter axis **last**
    (shape ``(..., 21)``). Any clamping of a value outside the range is logged with a count, so it is
    never silent.
    """
    lo, hi = THETA_CLAMP_LOWER, THETA_CLAMP_UPPER
    if _is_torch(theta):
        import torch

        lo_t = torch.as_tensor(lo, dtype=theta.dtype, device=theta.device)
        hi_t = torch.as_tensor(hi, dtype=theta.dtype, device=theta.device)
        if log_clamps:
            n = int(((theta < lo_t) | (theta > hi_t)).sum())
            if n:
                log.warning("clamped %d theta values into [1e-4, 1] (beta <= 0.98)", n)
        return torch.maximum(torch.minimum(theta, hi_t), lo_t)
    arr = np.asarray(theta, dtype=float)
    if log_clamps:
        n = int(((arr < lo) | (arr > hi)).sum())
        if n:
            log.warning("clamped %d theta values into [1e-4, 1] (beta <= 0.98)", n)
    return np.clip(arr, lo, hi)


def to_physical(theta: ArrayT, *, clamp: bool = True) -> ArrayT:
    """Map unit-interval ``theta`` (parameter axis last) to physical values.

    ``pi = lower + theta * (upper - lower)``, after the spec's clamp unless ``clamp=False``.
    """
    th = clamp_theta(theta) if clamp else theta
    if _is_torch(th):
        import torch

        lo = torch.as_tensor(LOWER, dtype=th.dtype, device=th.device)
        hi = torch.as_tensor(UPPER, dtype=th.dtype, device=th.device)
        return lo + th * (hi - lo)
    return LOWER + np.asarray(th, dtype=float) * (UPPER - LOWER)


def to_unit(physical: ArrayT) -> ArrayT:
    """Inverse of :func:`to_physical` (no clamping): ``theta = (pi - lower) / (upper - lower)``."""
    if _is_torch(physical):
        import torch

        lo = torch.as_tensor(LOWER, dtype=physical.dtype, device=physical.device)
        hi = torch.as_tensor(UPPER, dtype=physical.dtype, device=physical.device)
        return (physical - lo) / (hi - lo)
    return (np.asarray(physical, dtype=float) - LOWER) / (UPPER - LOWER)


def midpoint_theta(n_sites: int | None = None) -> np.ndarray:
    """The MCMC starting point theta = 0.5 for every parameter, shape (21,) or (n_sites, 21)."""
    if n_sites is None:
        return np.full(N_PARAMS, 0.5)
    return np.full((n_sites, N_PARAMS), 0.5)


def default_sand_fs1s2(sand_percent: np.ndarray) -> np.ndarray:
    """CLM5 default S1 -> S2 fraction from sand content (spec §(e), default-parameter mode).

    t = 0.85 - 0.0068 (100 - sand);  f_S1S2 = 1 - t - 0.004  (f_S1S3 = 0.004), sand clipped to [0, 100].
    """
    s = np.clip(np.asarray(sand_percent, dtype=float), 0.0, 100.0)
    t = 0.85 - 0.0068 * (100.0 - s)
    return 1.0 - t - 0.004


def default_clm5_physical(sand_percent: np.ndarray | None = None) -> dict[str, np.ndarray | float]:
    """Physical parameter values of the "Default CLM5" preset.

    Returns a dict keyed by parameter name. ``fs1s2`` is sand dependent: pass the layer sand content
    (any shape, typically ``(layer, cell)``) to get the matching array; without sand it uses the
    CLM5 loam-like value at 50 % sand. ``efolding`` is CLM5's 10 m, outside the prior range, which is
    why this preset is physical and has no unit-interval form.
    """
    out: dict[str, np.ndarray | float] = {p.name: p.default for p in PARAMETERS if p.default is not None}
    sand = np.asarray(50.0 if sand_percent is None else sand_percent, dtype=float)
    out["fs1s2"] = default_sand_fs1s2(sand)
    return out


def physical_table(theta: np.ndarray | None = None) -> list[dict[str, object]]:
    """Rows for docs and UIs: name, bounds, default, units, group, doc and (optionally) a value."""
    rows = []
    phys = None if theta is None else to_physical(np.asarray(theta, dtype=float))
    for i, p in enumerate(PARAMETERS):
        row = {
            "index": i + 1,
            "name": p.name,
            "lower": p.lower,
            "upper": p.upper,
            "default": p.default,
            "units": p.units,
            "group": p.group,
            "doc": p.doc,
        }
        if phys is not None:
            row["value"] = float(phys[i])
        rows.append(row)
    return rows


def _is_torch(x: object) -> bool:
    return type(x).__module__.startswith("torch")
