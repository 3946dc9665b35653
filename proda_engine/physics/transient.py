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
from proda_engine.physics.inputs import input_profile, source_vector
from proda_engine.physics.model import PhysicalParams, default_params, steady_state
from proda_engine.physics.operator import Operator, assemble
from proda_engine.physics.scalars import xi_depth, xi_temperature, xi_water
from proda_engine.physics.solver import solve
from proda_engine.physics.threads import kernel_threads
from proda_engine.physics.transfer import base_rates, fraction_tensor, respiration_fractions
from proda_engine.physics.transport import CLOSURES, TransportCoefficients, _nb_transport

#: Days in each month, January..December (365-day calendar).
DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=float)
LITTER = (1, 2, 3)

ForcingFn = Callable[[int], Forcing]


def monthly_transport(forcing: Forcing, grid: Grid, closure: str = "conservative") -> list[TransportCoefficients]:
    """Transport coefficients of each month m (12 entries, each field (L, C)), spec §(g) for one month.

    Reuses the steady-state kernel on an active-layer series that repeats month m twelve times, so
    its 12-month "average" is month m's V_m; the mean over the 12 results is the steady-state V.
    """
    if closure not in CLOSURES:
        raise ValueError(f"closure must be one of {CLOSURES}, found {closure!r}")
    alt = np.ascontiguousarray(forcing.alt.detach().cpu().double().numpy())
    nb = np.ascontiguousarray(forcing.nbedrock.cpu().numpy().astype(np.int64))
    kw = {"dtype": forcing.dtype, "device": forcing.device}
    out_list = []
    for m in range(12):
        tiled = np.ascontiguousarray(np.repeat(alt[m:m + 1], 12, axis=0))
        out = np.zeros((6, grid.n_layers, alt.shape[1]))
        with kernel_threads(alt.shape[1]):
            _nb_transport(tiled, nb, grid.z_interface_ext, grid.z_node_ext, grid.dn, grid.dz, closure == "legacy", out)
        out_list.append(TransportCoefficients(*(torch.as_tensor(out[i], **kw) for i in range(6))))
    return out_list


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


def run_transient(params: PhysicalParams | str, forcing: Forcing | ForcingFn, years: int, grid: Grid | None = None, *,
                  closure: str = "conservative", seasonal: bool = True, initial: str | torch.Tensor = "steady",
                  monthly: bool = False, backend: str = "auto", keep_profiles: bool = True,
                  return_state: bool = False) -> xr.Dataset | tuple[xr.Dataset, torch.Tensor]:
    """Run the model forward ``years`` years in monthly implicit steps, vectorised over cells.

    Args:
        params: physical parameters, each (C,) (``"default"`` for the default-CLM5 preset).
        forcing: a constant :class:`Forcing` (12-month climatology), or a callable ``forcing(year)``
            returning the 12-month forcing of ``year`` (1..years; ``forcing(0)`` is the baseline used
            for the initial steady state). A whole year at a time, so every month's operator for
            every cell is built in one vectorised pass.
        years: number of years to simulate.
        seasonal: monthly operators (True) or each year's annual-mean operator (False; see module doc).
        initial: ``"steady"`` (steady state of the baseline forcing, spec §(b)) or pools (7, L, C), g C m-3.
        monthly: also store the end-of-month SOC stock (``soc_monthly``, (time, cell)).
        keep_profiles: store the initial and final SOC profiles (layer, cell), g C m-3.
        return_state: also return the final pools X (7, L, C), g C m-3 (to continue a run).
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
        soc_initial = (X[4:].sum(0) * dz).sum(0).numpy()
        carbon_initial = _column(X, dz).numpy()
        profile_initial = X[4:].sum(0).numpy().copy()
        builder = _OperatorBuilder(p, grid, closure, seasonal)
        for y in range(years):
            ops = builder.year(fn(y + 1))
            acc = [torch.zeros(C, dtype=X.dtype) for _ in range(3)]
            for m in range(12):
                dt = float(DAYS_IN_MONTH[m])
                X = implicit_step(X, ops.k[m], ops.frac, ops.lo[m], ops.up[m], ops.src, dt, backend)
                for a, v in zip(acc, step_budget(X, ops.k[m], ops.frac, ops.lo[m], ops.up[m], ops.src, dt, dz)):
                    a += v
                if soc_m is not None:
                    soc_m[y * 12 + m] = (X[4:].sum(0) * dz).sum(0).numpy()
            soc = X[4:].sum(0)
            out["soc"][y] = (soc * dz).sum(0).numpy()
            out["soc_0_100cm"][y] = (soc * dz * w100).sum(0).numpy()
            out["carbon"][y] = _column(X, dz).numpy()
            for name, a in zip(("inputs", "respiration", "outflow"), acc):
                out[name][y] = a.numpy()
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
        ds["soc_profile_final"] = (("layer", "cell"), X[4:].sum(0).numpy(), {"units": "g C m-3"})
    ds.attrs.update({"scheme": "backward Euler, monthly steps (days in month 31,28,31,30,...)",
                     "seasonal": int(seasonal), "closure": closure, "grid": grid.name,
                     "inputs": "annual total spread evenly over 365 days"})
    return (ds, X) if return_state else ds

