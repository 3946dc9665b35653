"""Fast what-if: perturb mechanism groups, re-solve every cell's steady state, map and total.

A perturbation is a dict of relative changes per mechanism group (spec §(j) "+1 % bulk-process"):
``{"A": 0.05}`` multiplies the unit-interval theta of every CUE/transfer parameter by 1.05 (then
clamps as the spec says); ``{"NPP": 0.1}`` scales the four carbon inputs by 1.1. Groups: A (microbial
CUE / transfers), K (baseline decomposition), Xi (environmental modifiers), V (vertical transport),
I (input allocation), NPP (carbon input).

Why it is fast: the solve is structured (tens of ms for the globe), and everything that depends on
only one group is cached per (source, group value): the 12-month environmental means and depth
scalar (Xi), the input profile (I), the transport coefficients (forcing only). Whole results are
kept in a small LRU keyed on (source, perturbation), so returning to a slider position is free.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from proda_engine.grid import DEPTH_INTERVALS, Grid, get_grid
from proda_engine.parameters import (
    GROUPS,
    LOWER,
    PARAMETERS,
    THETA_CLAMP_LOWER,
    THETA_CLAMP_UPPER,
    UPPER,
    clamp_theta,
)
from proda_engine.physics import Forcing, default_params, params_from_theta
from proda_engine.physics import diagnostics as dg
from proda_engine.physics.inputs import input_profile
from proda_engine.physics.model import Status
from proda_engine.physics.operator import Operator, assemble
from proda_engine.physics.scalars import month_means_and_diagnostic, xi_depth
from proda_engine.physics.transfer import base_rates, fraction_tensor
from proda_engine.products.regions import Region, cell_area, region_mask, total_pg

MECHANISMS: tuple[str, ...] = ("A", "K", "Xi", "V", "I", "NPP")
MECHANISM_LABELS: dict[str, str] = {
    "A": "microbial CUE", "K": "baseline decomposition", "Xi": "environmental modifiers",
    "V": "vertical transport", "I": "input allocation", "NPP": "carbon input",
}


def _environment(mods: tuple[torch.Tensor, torch.Tensor], xd: torch.Tensor):
    """Environmental factors of the decay rates: soil/CWD and litter month means times the depth
    scalar, (L, C) each, and whether they are finite and positive in every layer of a cell."""
    soil, litter = mods[0] * xd, mods[1] * xd
    ok = (torch.isfinite(soil.sum(0)) & torch.isfinite(litter.sum(0)) & (soil.amin(0) > 0)
          & (litter.amin(0) > 0))
    return soil, litter, ok


def _nbytes(obj: object) -> int:
    """Bytes held by the arrays and tensors in a cached piece (nested tuples, lists and dicts)."""
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o) for o in obj.values())
    return 0


def perturbation_key(perturbation: Mapping[str, float] | None) -> tuple[float, ...]:
    """Canonical, hashable form: one rounded value per mechanism in :data:`MECHANISMS` order."""
    perturbation = dict(perturbation or {})
    unknown = set(perturbation) - set(MECHANISMS)
    if unknown:
        raise ValueError(f"unknown mechanism(s) {sorted(unknown)}; expected {list(MECHANISMS)}")
    return tuple(round(float(perturbation.get(m, 0.0)), 6) for m in MECHANISMS)


def perturb_physical(params: Mapping[str, torch.Tensor], key: tuple[float, ...]) -> dict[str, torch.Tensor]:
    """For presets with no unit-interval form (default CLM5): pi <- pi (1 + q_G) for the group's
    parameters, then transfer fractions kept physical (each in [0, 1], each donor's outflow <= 1)."""
    from proda_engine.parameters import PARAMETERS

    out = dict(params)
    for m, q in zip(MECHANISMS, key):
        if m != "NPP" and q != 0.0:
            for i in GROUPS[m]:
                out[PARAMETERS[i].name] = out[PARAMETERS[i].name] * (1.0 + q)
    for name in ("fcwdl2", "fl1s1", "fl2s1", "fl3s2", "fs3s1", "fs1s2", "fs1s3", "fs2s1", "fs2s3"):
        out[name] = out[name].clamp(0.0, 1.0)
    # beta >= 1 would invert the input profile; cap where the unit-interval clamp does (theta 0.98).
    beta = PARAMETERS[GROUPS["I"][0]]
    out["beta"] = out["beta"].clamp(max=beta.lower + 0.98 * (beta.upper - beta.lower))
    for a, b in (("fs1s2", "fs1s3"), ("fs2s1", "fs2s3")):
        total = out[a] + out[b]
        scale = torch.where(total > 1.0, 1.0 / total, torch.ones_like(total))
        out[a], out[b] = out[a] * scale, out[b] * scale
    return out


def perturb_theta(theta: np.ndarray, key: tuple[float, ...]) -> np.ndarray:
    """theta_i <- theta_i (1 + q_G) for i in group G, in unit space, then the spec's clamp."""
    out = np.array(theta, dtype=float, copy=True)
    for m, q in zip(MECHANISMS, key):
        if m != "NPP" and q != 0.0:
            out[:, list(GROUPS[m])] *= 1.0 + q
    return clamp_theta(out, log_clamps=False)


@dataclass
class CellResults:
    """Per-cell outputs of one solve, numpy (C,) arrays; stocks in kg C m-2."""

    stocks: dict[str, np.ndarray]
    turnover: np.ndarray
    cue: np.ndarray
    status: np.ndarray
    soc: np.ndarray  # (L, C) g C m-3


@dataclass
class WhatIfResult:
    """Maps on the lat/lon grid and regional totals for one what-if request."""

    maps: xr.Dataset
    totals: dict[str, float | int | str]
    perturbation: dict[str, float] = field(default_factory=dict)


class WhatIfEngine:
    """Holds one world's forcing and parameter sources; answers perturbation requests fast.

    Args:
        forcing_ds: normalised forcing Dataset on a (lat, lon) grid.
        sources: name -> unit-interval theta for the valid cells, (C, 21) (cell order of
            ``Forcing.from_dataset``).
        fields: optional (lat, lon) Dataset with ``continent``, ``Koppen_Climate_2018``,
            ``ESA_Land_Cover`` for named regions, and ``Coarse_Fragments_v_*`` (not yet applied).
        cache_size: how many whole results to keep.
        parts_budget: bytes of reusable operator pieces to keep (least recently used dropped first).
    """

    def __init__(self, forcing_ds: xr.Dataset | None, sources: Mapping[str, np.ndarray | str], *,
                 grid: Grid | None = None,
                 closure: str = "conservative", fields: xr.Dataset | None = None, cache_size: int = 64,
                 cells: tuple[Forcing, np.ndarray, np.ndarray, np.ndarray] | None = None,
                 parts_budget: int = 512 * 1024**2) -> None:
        self.grid = grid or get_grid()
        self.closure = closure
        if cells is not None:  # (forcing, flat cell indices, lat, lon) already stacked, e.g. from a world cache
            self.forcing, self.cells, self.lat, self.lon = cells
        else:
            self.forcing, self.cells = Forcing.from_dataset(forcing_ds)
            self.lat = np.asarray(forcing_ds["lat"].values)
            self.lon = np.asarray(forcing_ds["lon"].values)
        self.shape = (self.lat.size, self.lon.size)
        self.area = cell_area(self.lat, self.lon)
        self.fields = fields
        # A source is unit-interval theta (C, 21), or the string "default" for the CLM5 preset.
        self.sources = {k: (v if isinstance(v, str) else np.asarray(v, dtype=float)) for k, v in sources.items()}
        for name, th in self.sources.items():
            if isinstance(th, str):
                if th != "default":
                    raise ValueError(f"source {name!r}: unknown preset {th!r}; expected 'default'")
                continue
            if th.shape != (self.forcing.n_cells, 21):
                raise ValueError(f"source {name!r}: expected theta of shape ({self.forcing.n_cells}, 21), "
                                 f"found {th.shape}")
        self._results: OrderedDict[tuple, CellResults] = OrderedDict()
        # One engine serves every dashboard session of a process: solves and cache updates are serialised.
        self._lock = threading.RLock()
        #: pieces reused between requests (month means, decay rates, transport, sources, parameters),
        #: least recently used first; bounded in bytes: one decay-rate array of the globe is 69 MB, so
        #: a count bound let a user stepping through K values hold gigabytes (and a process grown by
        #: ~2 GB of cached pieces made the later K steps ~50 % slower here, measured)
        self._parts: OrderedDict[tuple, object] = OrderedDict()
        self._parts_bytes = 0
        self.parts_budget = parts_budget
        self.cache_size = cache_size
        self.stats = {"solves": 0, "hits": 0}
        self._work: np.ndarray | None = None  # (7, L, C) state of the last solve, reused

    # -- solving ---------------------------------------------------------------------------
    def _part(self, key: tuple, make):
        """The cached piece ``key`` (made with ``make()`` when missing), marked as recently used."""
        if key in self._parts:
            self._parts.move_to_end(key)
            return self._parts[key]
        value = make()
        self._parts[key] = value
        self._parts_bytes += _nbytes(value)
        while self._parts_bytes > self.parts_budget and len(self._parts) > 1:
            _, old = self._parts.popitem(last=False)
            self._parts_bytes -= _nbytes(old)
        return value

    def cell_results(self, source: str, perturbation: Mapping[str, float] | None = None) -> CellResults:
        """Solve (or fetch from cache) every cell for ``source`` under ``perturbation``."""
        if source not in self.sources:
            raise ValueError(f"unknown parameter source {source!r}; expected one of {sorted(self.sources)}")
        key = perturbation_key(perturbation)
        ck = (source, key)
        with self._lock:
            if ck in self._results:
                self._results.move_to_end(ck)
                self.stats["hits"] += 1
                return self._results[ck]
            res = self._solve(source, key)
            self._results[ck] = res
            if len(self._results) > self.cache_size:
                self._results.popitem(last=False)
            self.stats["solves"] += 1
            return res

    def _solve(self, source: str, key: tuple[float, ...]) -> CellResults:
        q = dict(zip(MECHANISMS, key))
        with torch.no_grad():
            if isinstance(self.sources[source], str):
                p = perturb_physical(default_params(self.forcing), key)
            else:
                p = self._params(source, key)
            f = self.forcing
            if q["NPP"] != 0.0:
                f = f.with_inputs(f.inputs * (1.0 + q["NPP"]))
            xi_key = (source, "Xi", q["Xi"])
            # month means and the diagnostic modifier from one pass (one exp per month, layer, cell)
            both = self._part((*xi_key, "means"), lambda: month_means_and_diagnostic(
                f, self.grid, p["q10"], p["wscaling"], p["efolding"]))
            mods = both[:2]
            xd = self._part((*xi_key, "depth"), lambda: xi_depth(self.grid, p["efolding"]))
            phi = self._part((source, "I", q["I"]), lambda: input_profile(f, self.grid, p["beta"]))
            op, op_valid = self._operator(source, q, p, f, mods, xd, phi)
            cin = f.inputs.sum(0).numpy()
            xhat = both[2]
            # solve and summarise in one pass; the (7, L, C) state goes to a work array kept between
            # requests (only SOC per layer and the summaries are kept)
            if self._work is None or self._work.shape != op.k.shape:
                self._work = np.empty(tuple(op.k.shape))
            status, soc, st, cue = dg.solve_summaries(op, p, xhat, self.grid, op_valid=op_valid, out=self._work)
            stocks = {k: v.numpy() / 1000.0 for k, v in st.items()}
        bad = status.numpy() != Status.OK
        for v in stocks.values():
            v[bad] = np.nan
        return CellResults(stocks=stocks, turnover=stocks["whole"] * 1000.0 / cin, cue=cue.numpy(),
                           status=status.numpy(), soc=soc.numpy())

    def _params(self, source: str, key: tuple[float, ...]) -> dict[str, torch.Tensor]:
        """Physical parameters of ``source`` under ``key``, the same values as
        ``params_from_theta(perturb_theta(theta, key), clamp=False)``.

        The unperturbed parameters are computed once per source (one contiguous (C,) tensor each);
        a request maps only the columns of the groups it perturbs (theta (1 + q) clamped, then
        pi = lower + theta (upper - lower)), ~1 ms instead of ~20 ms for the whole (C, 21) table.
        """
        theta = self.sources[source]
        base = self._part((source, "physical"), lambda: {
            n: v.contiguous() for n, v in params_from_theta(clamp_theta(theta, log_clamps=False), clamp=False).items()})
        rows = self._part((source, "theta^T"), lambda: np.ascontiguousarray(theta.T))  # one contiguous row each
        factor = np.ones(len(PARAMETERS))
        for m, q in zip(MECHANISMS, key):
            if m != "NPP" and q != 0.0:
                factor[list(GROUPS[m])] *= 1.0 + q
        cols = np.flatnonzero(factor != 1.0)
        if cols.size == 0:
            return dict(base)
        th = np.clip(rows[cols] * factor[cols, None], THETA_CLAMP_LOWER[cols, None], THETA_CLAMP_UPPER[cols, None])
        phys = LOWER[cols, None] + th * (UPPER[cols] - LOWER[cols])[:, None]
        out = dict(base)
        for j, i in enumerate(cols):
            out[PARAMETERS[i].name] = torch.from_numpy(phys[j])
        return out

    def _operator(self, source: str, q: dict[str, float], p, f: Forcing, mods, xd, phi):
        """The operator for this request, reusing every piece whose mechanisms did not change.

        Decay rates k depend only on K and Xi, mixing lo/up only on V, sources only on I and NPP,
        transfer fractions only on A: when one slider moves, only its piece is rebuilt (the others
        come from the cache, together with their per-cell validity), which makes a CUE move nearly
        free to assemble.
        """
        keys = {"k": (source, "op:k", q["K"], q["Xi"]), "mix": (source, "op:mix", q["V"]),
                "src": (source, "op:src", q["I"], q["NPP"])}
        if keys["k"] not in self._parts and keys["mix"] in self._parts and keys["src"] in self._parts:
            # only decay rates changed (a K or Xi move): k_pj = k0_p x env_j, env cached per Xi value
            soil_env, litter_env, env_ok = self._part((source, "op:env", q["Xi"]), lambda: _environment(mods, xd))
            k0 = base_rates(p)
            k = torch.empty((7, *soil_env.shape), dtype=soil_env.dtype)
            for i in range(7):  # written in place: no (L, C) temporaries, no stacking copy
                torch.mul(k0[i], litter_env if i in (1, 2, 3) else soil_env, out=k[i])
            valid_k = env_ok & torch.isfinite(k0).all(0) & (k0 > 0).all(0)
            self._part(keys["k"], lambda: (k, valid_k))
        if all(k in self._parts for k in keys.values()):
            k, valid_k = self._part(keys["k"], None)
            lo, up = self._part(keys["mix"], None)
            src, valid_src = self._part(keys["src"], None)
            frac = fraction_tensor(p, self.grid.n_layers)
            return Operator(k=k, frac=frac, lo=lo, up=up, src=src), valid_k & valid_src
        op = assemble(p, f, self.grid, self.closure, modifiers=mods, depth_scalar=xd, phi=phi)
        valid_k = torch.isfinite(op.k.sum((0, 1))) & (op.k.amin((0, 1)) > 0)
        valid_src = torch.isfinite(op.src.sum((0, 1)))
        self._part(keys["k"], lambda: (op.k, valid_k))
        self._part(keys["mix"], lambda: (op.lo, op.up))
        self._part(keys["src"], lambda: (op.src, valid_src))
        return op, valid_k & valid_src

    # -- maps and totals -------------------------------------------------------------------
    def to_grid(self, values: np.ndarray) -> np.ndarray:
        """(C,) cell values -> (lat, lon) array with NaN outside valid cells."""
        out = np.full(self.shape[0] * self.shape[1], np.nan)
        out[self.cells] = values
        return out.reshape(self.shape)

    def mask(self, region: Region | None) -> np.ndarray:
        return region_mask(region or Region(), self.lat, self.lon, self.fields)

    def what_if(self, perturbation: Mapping[str, float] | None = None, *, region: Region | None = None,
                depth: str = "0-100cm", source: str | None = None) -> WhatIfResult:
        """Perturbed maps and regional totals, with the change against the unperturbed baseline."""
        if depth not in DEPTH_INTERVALS:
            raise ValueError(f"unknown depth interval {depth!r}; expected one of {list(DEPTH_INTERVALS)}")
        source = source or next(iter(self.sources))
        base = self.cell_results(source)
        pert = self.cell_results(source, perturbation)
        stock = self.to_grid(pert.stocks[depth])
        stock0 = self.to_grid(base.stocks[depth])
        turnover = self.to_grid(pert.turnover)
        cue = self.to_grid(pert.cue)
        region = region or Region()
        m = self.mask(region)
        coords = {"lat": self.lat, "lon": self.lon}
        maps = xr.Dataset(
            {
                "soc_stock": (("lat", "lon"), stock, {"units": "kg C m-2", "long_name": f"SOC stock {depth}"}),
                "soc_stock_baseline": (("lat", "lon"), stock0, {"units": "kg C m-2",
                                                                "long_name": f"baseline SOC stock {depth}"}),
                "soc_change": (("lat", "lon"), stock - stock0, {"units": "kg C m-2",
                                                                "long_name": f"SOC change vs baseline {depth}"}),
                "turnover": (("lat", "lon"), turnover, {"units": "yr", "long_name": "bulk SOC turnover time"}),
                "cue": (("lat", "lon"), cue, {"units": "1", "long_name": "microbial carbon use efficiency"}),
            },
            coords=coords,
            attrs={"source": source, "depth": depth, "region": region.label},
        )
        total = total_pg(stock, self.area, m)
        total0 = total_pg(stock0, self.area, m)
        valid = m & np.isfinite(turnover)
        totals = {
            "region": region.label, "depth": depth, "source": source,
            "total_pg": total, "baseline_pg": total0, "change_pg": total - total0,
            "change_pct": 100.0 * (total - total0) / total0 if total0 else float("nan"),
            "turnover_mean_yr": float(np.nanmean(turnover[valid])) if valid.any() else float("nan"),
            "turnover_median_yr": float(np.nanmedian(turnover[valid])) if valid.any() else float("nan"),
            "cue_mean": float(np.nanmean(cue[valid])) if valid.any() else float("nan"),
            "n_cells": int(valid.sum()),
            "area_mkm2": float(self.area[valid].sum() / 1e12),
        }
        key = perturbation_key(perturbation)
        return WhatIfResult(maps=maps, totals=totals, perturbation=dict(zip(MECHANISMS, key)))

    def sensitivity(self, *, region: Region | None = None, depth: str = "whole", source: str | None = None,
                    step: float = 0.10) -> dict[str, dict[str, float]]:
        """Regional response of the SOC total to each mechanism, from +-``step`` perturbations.

        For every mechanism m: S(+step), S(-step) and the log-log elasticity
        b = ln(S+/S-) / ln((1+step)/(1-step)); the "+1 %" effect is S0 (1.01^b - 1) in Pg C (spec §(j),
        here in parameter space rather than bulk-metric space, which the full sensitivity product uses).
        """
        out = {}
        base = self.what_if(None, region=region, depth=depth, source=source).totals["total_pg"]
        for m in MECHANISMS:
            up = self.what_if({m: step}, region=region, depth=depth, source=source).totals["total_pg"]
            dn = self.what_if({m: -step}, region=region, depth=depth, source=source).totals["total_pg"]
            b = float(np.log(up / dn) / np.log((1 + step) / (1 - step))) if up > 0 and dn > 0 else float("nan")
            out[m] = {"elasticity": b, "plus1pct_pg": base * (1.01**b - 1.0), "up_pg": up - base, "down_pg": dn - base}
        return out

    def profile(self, lat: float, lon: float, source: str | None = None,
                perturbation: Mapping[str, float] | None = None) -> xr.Dataset:
        """SOC by layer at the valid cell nearest to (lat, lon)."""
        source = source or next(iter(self.sources))
        r = self.cell_results(source, perturbation)
        lat2, lon2 = np.meshgrid(self.lat, self.lon, indexing="ij")
        flat_lat, flat_lon = lat2.reshape(-1)[self.cells], lon2.reshape(-1)[self.cells]
        d = (flat_lat - lat) ** 2 + ((flat_lon - lon + 180) % 360 - 180) ** 2 * np.cos(np.deg2rad(lat)) ** 2
        i = int(np.argmin(d))
        return xr.Dataset(
            {"soc": (("depth",), r.soc[:, i], {"units": "g C m-3", "long_name": "SOC density"})},
            coords={"depth": ("depth", self.grid.z_node, {"units": "m", "long_name": "node depth"})},
            attrs={"lat": float(flat_lat[i]), "lon": float(flat_lon[i]), "source": source},
        )
