"""Fast what-if: change a bulk process, re-solve every cell's steady state, map and total.

A request is a dict of relative changes per mechanism, e.g. ``{"K": 0.1}``. By default
(``space="bulk"``) each value is the relative change of the mechanism's **bulk process** of spec §(j),
averaged over the selected region as the spec aggregates it (the mean over valid cells of
(B - B0) / B0):

======  =======================================  ==============================================
 code    bulk process B (spec §(j))               what the engine multiplies (one scalar m)
======  =======================================  ==============================================
 A       microbial CUE (flux weighted)            the eight microbial transfer fractions
 K       baseline decomposition rate K̄ (yr-1)     every baseline decay rate 1/tau (up = faster)
 Xi      environmental modifier ξ̄                 the environmental modifier of every decay rate
 V       vertical transport V̄ (yr-1)              the transport rates (the V matrix)
 I       input allocation Ī (apparent beta)       beta of the input profile
 NPP     carbon input C_in                         the four carbon inputs
======  =======================================  ==============================================

**How a requested change is realised.** NPP is exact: m = 1 + r. Ī depends only on beta and the
forcing, so its multiplier is found without a steady-state solve (secant on the region's mean change of
the apparent beta). CUE, K̄, ξ̄ and V̄ are weighted by the steady-state stocks or fluxes, so their
multipliers are found by a root solve on the region's realised change: Newton steps in log space
(log m against log(1 + R)), starting from what earlier requests of the same source and region taught
(interpolated), with secant slopes after the first step, until every requested mechanism is within
:data:`BULK_TOLERANCE` (0.05 percentage points) of its request. Usually one or two solves; at most
:data:`MAX_BULK_ITERATIONS`. Mechanisms left at 0 keep multiplier 1: their realised change (a side
effect, e.g. ξ̄ moves a little when K̄ moves the stocks deeper) is reported, not forced to zero. A
request beyond what the guards allow (a donor's CUE above :data:`MAX_DONOR_EFFICIENCY`, beta above its
clamp) stops at the guard and is reported as not converged, with the change it did realise.

The spec's own perturbation, theta_i <- theta_i (1 + q) in unit-interval space for every parameter of
the group (what ``proda sensitivity`` uses), stays available as ``space="theta"``; ``space="multiplier"``
applies the table's multipliers m = 1 + value directly.

**Stocks and totals** follow one convention (:data:`~proda_engine.products.regions.TOTALS_CONVENTION`):
the model's fine-earth stock is coarse-fragment corrected per depth increment
(:func:`~proda_engine.products.gridded.coarse_fragment_stocks`), each land cell counts with its full
area, and cells that fail the spec §(i) plausibility limits are dropped; turnover (S / C_in) and CUE use
the uncorrected model column, per depth interval.

Why it is fast: the solve is structured (~0.1 s for the globe), and everything that depends on only
one mechanism is cached per source: the 12-month environmental means, the decay rates, the transport
rates and the sources at multiplier 1 (a multiplier only rescales them), the input profile per beta
multiplier. Whole results are kept in a small LRU keyed on (source, multipliers), and realised requests
on (source, region, request), so returning to a slider position is free.
"""

from __future__ import annotations

import math
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
from proda_engine.physics.inputs import input_profile, source_vector
from proda_engine.physics.operator import Operator, assemble
from proda_engine.physics.scalars import month_means_and_diagnostic, xi_depth
from proda_engine.physics.transfer import (
    base_rates,
    fraction_tensor,
)
from proda_engine.products.gridded import CF_VARIABLES, coarse_fragment_stocks, plausible
from proda_engine.products.multipliers import (  # noqa: F401  (re-exported: the what-if's public names)
    BETA_MAX,
    MAX_DONOR_EFFICIENCY,
    MECHANISMS,
    NO_CHANGE,
    apply_multipliers,
    multiplied_operator,
    multiplier_key,
    scaled_beta,
)
from proda_engine.products.regions import TOTALS_CONVENTION, Region, cell_area, region_mask, total_pg

MECHANISM_LABELS: dict[str, str] = {
    "A": "microbial CUE", "K": "baseline decomposition rate K̄", "Xi": "environmental modifier ξ̄",
    "V": "vertical transport V̄", "I": "input allocation Ī", "NPP": "carbon input",
}
#: Bulk diagnostic of each mechanism (keys of :data:`proda_engine.products.gridded.DIAGNOSTICS`).
BULK_METRIC: dict[str, str] = {"A": "cue", "K": "decomposition", "Xi": "environment", "V": "transport",
                               "I": "allocation", "NPP": "input"}
#: Short symbol of each bulk process, for labels such as "K̄ +10.0 %".
BULK_SYMBOL: dict[str, str] = {"A": "CUE", "K": "K̄", "Xi": "ξ̄", "V": "V̄", "I": "Ī", "NPP": "NPP"}
#: What a request's values mean (see the module docstring).
SPACES: tuple[str, ...] = ("bulk", "theta", "multiplier")
#: A bulk request is realised when |realised - requested| <= this (relative change: 5e-4 = 0.05 points).
BULK_TOLERANCE = 5e-4
#: At most this many steady-state solves to realise one bulk request.
MAX_BULK_ITERATIONS = 8
#: Bounds of every multiplier m.
MULTIPLIER_BOUNDS = (0.02, 50.0)
_LOG_BOUNDS = (math.log(MULTIPLIER_BOUNDS[0]), math.log(MULTIPLIER_BOUNDS[1]))
_NO_CHANGE = NO_CHANGE
_INTERVALS = tuple(DEPTH_INTERVALS)


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
    """``space="theta"`` for presets with no unit-interval form (default CLM5): pi <- pi (1 + q_G) for the
    group's parameters, then transfer fractions kept physical (each in [0, 1], each donor's outflow <= 1)."""
    out = dict(params)
    for m, q in zip(MECHANISMS, key):
        if m != "NPP" and q != 0.0:
            for i in GROUPS[m]:
                out[PARAMETERS[i].name] = out[PARAMETERS[i].name] * (1.0 + q)
    for name in ("fcwdl2", "fl1s1", "fl2s1", "fl3s2", "fs3s1", "fs1s2", "fs1s3", "fs2s1", "fs2s3"):
        out[name] = out[name].clamp(0.0, 1.0)
    # beta >= 1 would invert the input profile; cap where the unit-interval clamp does (theta 0.98).
    out["beta"] = out["beta"].clamp(max=BETA_MAX)
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
    """Per-cell outputs of one solve, numpy, cells last; NaN where a cell is not valid.

    Attributes:
        stocks: depth interval -> land-area SOC stock, kg C m-2 (coarse-fragment corrected).
        raw_stocks: depth interval -> the model's fine-earth SOC stock, kg C m-2.
        turnover: depth interval -> bulk turnover raw stock / C_in, yr (spec §(j) item 7).
        cue: depth interval -> flux-weighted microbial CUE of the layers in the interval.
        diagnostics: the six whole-profile bulk processes (keys of :data:`BULK_METRIC` values).
        status: solve status (int8); valid: solved and plausible (spec §(i)).
        soc: (L, C) SOC density of the model column, g C m-3 (fine earth), float32.
        multipliers: the multipliers solved (None for ``space="theta"``).
    """

    stocks: dict[str, np.ndarray]
    raw_stocks: dict[str, np.ndarray]
    turnover: dict[str, np.ndarray]
    cue: dict[str, np.ndarray]
    diagnostics: dict[str, np.ndarray]
    status: np.ndarray
    valid: np.ndarray
    soc: np.ndarray
    multipliers: tuple[float, ...] | None = None


@dataclass
class BulkSolution:
    """How a bulk request was realised in a region: multipliers, requested and realised changes."""

    requested: dict[str, float]
    multipliers: dict[str, float]
    realised: dict[str, float]
    iterations: int
    converged: bool


@dataclass
class WhatIfResult:
    """Maps on the lat/lon grid and regional totals for one what-if request.

    ``perturbation`` is the request as given; ``realised`` the relative change of every bulk process
    in the region (spec §(j) aggregation); ``multipliers`` what the engine applied (None in theta space).
    """

    maps: xr.Dataset
    totals: dict[str, float | int | str]
    perturbation: dict[str, float] = field(default_factory=dict)
    realised: dict[str, float] = field(default_factory=dict)
    multipliers: dict[str, float] | None = None
    space: str = "bulk"


class WhatIfEngine:
    """Holds one world's forcing and parameter sources; answers what-if requests fast.

    Args:
        forcing_ds: normalised forcing Dataset on a (lat, lon) grid.
        sources: name -> unit-interval theta for the valid cells, (C, 21) (cell order of
            ``Forcing.from_dataset``), or ``"default"`` for the CLM5 preset.
        fields: optional (lat, lon) Dataset with ``continent``, ``Koppen_Climate_2018``,
            ``ESA_Land_Cover`` for named regions, and ``Coarse_Fragments_v_0cm/30cm/100cm`` for the
            coarse-fragment correction of stocks and totals.
        cache_size: how many whole results to keep (~16 MB each on the 0.5° globe).
        parts_budget: bytes of reusable operator pieces to keep (least recently used dropped first).
        lean: keep only the environmental means per source and assemble each operator afresh (for
            ensemble members: ~0.2 GB of cached pieces per source would not fit for five of them).

    Thread-safe: the caches are locked briefly and each solve runs in the calling thread in that thread's
    own work arrays, so several threads solve different requests at once (the same request once).
    """

    def __init__(self, forcing_ds: xr.Dataset | None, sources: Mapping[str, np.ndarray | str], *,
                 grid: Grid | None = None,
                 closure: str = "conservative", fields: xr.Dataset | None = None, cache_size: int = 32,
                 cells: tuple[Forcing, np.ndarray, np.ndarray, np.ndarray] | None = None,
                 parts_budget: int = 512 * 1024**2, lean: bool = False) -> None:
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
        self.cell_area = self.area.reshape(-1)[self.cells]
        self.fields = fields
        self.cf = self._coarse_fragments()
        self.lean = lean
        self.world = None  # the WorldSpec the numbers come from (set by proda_engine.api.world_engine)
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
        self._bulk: OrderedDict[tuple, BulkSolution] = OrderedDict()
        #: (source, region, mechanism) -> [(log m, log(1 + R))] of realised single-mechanism requests
        self._history: dict[tuple, list[tuple[float, float]]] = {}
        self._masks: OrderedDict[Region, np.ndarray] = OrderedDict()
        # One engine serves every dashboard session of a process. The lock guards the caches and is held
        # only briefly: the solves themselves run outside it, each thread in its own work arrays, so two
        # threads (two sessions) solve at once; a result already being solved by one thread is waited for.
        self._lock = threading.RLock()
        #: pieces are built under their own lock (a piece's builder may ask for another piece)
        self._parts_lock = threading.RLock()
        #: solve key -> event set when the thread solving it has stored its result
        self._solving: dict[tuple, threading.Event] = {}
        #: pieces reused between requests (month means, decay rates, transport, sources, parameters),
        #: least recently used first; bounded in bytes (one decay-rate array of the globe is 69 MB)
        self._parts: OrderedDict[tuple, object] = OrderedDict()
        self._parts_bytes = 0
        self.parts_budget = parts_budget
        self.cache_size = cache_size
        self.stats = {"solves": 0, "hits": 0, "bulk_iterations": 0}
        #: per-thread work arrays: the (7, L, C) state of the last solve and the operator scratch arrays
        self._tls = threading.local()

    def _coarse_fragments(self) -> np.ndarray | None:
        """CF at 0, 30 and 100 cm (vol %) at the valid cells, (3, C), or None without the covariate."""
        if self.fields is None or not any(v in self.fields for v in CF_VARIABLES):
            return None
        flat = [np.asarray(self.fields[v].values, float).reshape(-1)[self.cells] if v in self.fields
                else np.full(self.cells.size, np.nan) for v in CF_VARIABLES]
        return np.stack(flat)

    # -- caching ---------------------------------------------------------------------------
    def _part(self, key: tuple, make):
        """The cached piece ``key`` (made with ``make()`` when missing), marked as recently used.

        Thread-safe: a missing piece is built once, under the pieces' lock (builds are rare: a piece is
        per source and mechanism value, and the solves that use it run outside the lock)."""
        with self._parts_lock:
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

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A reusable float64 work array of the calling thread (a fresh 69 MB array costs its page faults on
        every solve; one set per thread, so two threads' solves never share one)."""
        scratch = self._tls.__dict__.setdefault("scratch", {})
        buf = scratch.get(name)
        if buf is None or buf.shape != shape:
            buf = scratch[name] = np.empty(shape)
        return buf

    def _check_source(self, source: str | None) -> str:
        source = source or next(iter(self.sources))
        if source not in self.sources:
            raise ValueError(f"unknown parameter source {source!r}; expected one of {sorted(self.sources)}")
        return source

    def cell_mask(self, region: Region | None) -> np.ndarray:
        """(C,) membership of the valid cells in ``region`` (cached per region)."""
        region = region or Region()
        with self._lock:
            if region not in self._masks:
                self._masks[region] = self.mask(region).reshape(-1)[self.cells]
                if len(self._masks) > 64:
                    self._masks.popitem(last=False)
            return self._masks[region]

    # -- requests ----------------------------------------------------------------------------
    def resolve(self, source: str | None, perturbation: Mapping[str, float] | None = None, *,
                space: str = "bulk", region: Region | None = None) -> tuple[str, tuple[float, ...]]:
        """The solve key of a request: ``("mult", multipliers)`` or ``("theta", key)``.

        ``space="bulk"`` finds the multipliers that realise the request in ``region`` (see the module
        docstring); the realised solution is cached per (source, region, request).
        """
        source = self._check_source(source)
        key = perturbation_key(perturbation)
        if space not in SPACES:
            raise ValueError(f"unknown space {space!r}; expected one of {list(SPACES)}")
        if any(v <= -1.0 for v in key):
            raise ValueError(f"relative changes must be > -1 (-100 %), found {dict(zip(MECHANISMS, key))}")
        if not any(key):
            return ("mult", _NO_CHANGE)
        if space == "theta":
            return ("theta", key)
        if space == "multiplier":
            return ("mult", multiplier_key(tuple(1.0 + v for v in key)))
        return ("mult", multiplier_key(self.bulk_solution(source, perturbation, region).multipliers))

    def cell_results(self, source: str | None, perturbation: Mapping[str, float] | None = None, *,
                     space: str = "bulk", region: Region | None = None) -> CellResults:
        """Solve (or fetch from cache) every cell for ``source`` under a request (see :meth:`resolve`)."""
        source = self._check_source(source)
        return self._results_for(source, self.resolve(source, perturbation, space=space, region=region))

    def _results_for(self, source: str, solve_key: tuple[str, tuple[float, ...]]) -> CellResults:
        """The cached solve of ``solve_key``, else solved in the calling thread outside the lock; a key
        another thread is solving is waited for (one solve per key)."""
        ck = (source, solve_key)
        while True:
            with self._lock:
                if ck in self._results:
                    self._results.move_to_end(ck)
                    self.stats["hits"] += 1
                    return self._results[ck]
                event = self._solving.get(ck)
                if event is None:
                    event = self._solving[ck] = threading.Event()
                    break
            event.wait()  # stored by the other thread (or it failed, or was evicted at once: solve here)
        try:
            res = self._solve(source, *solve_key)
            with self._lock:
                self._results[ck] = res
                if len(self._results) > self.cache_size:
                    self._results.popitem(last=False)
                self.stats["solves"] += 1
            return res
        finally:
            with self._lock:
                self._solving.pop(ck, None)
            event.set()

    def baseline(self, source: str | None = None) -> CellResults:
        """The unperturbed solve of ``source``."""
        return self._results_for(self._check_source(source), ("mult", _NO_CHANGE))

    # -- realising bulk changes ---------------------------------------------------------------
    def realised_change(self, base: CellResults, res: CellResults, region: Region | None = None,
                        sel: np.ndarray | None = None) -> dict[str, float]:
        """Relative change of every bulk process in ``region``: mean over cells valid in both solves
        of (B - B0) / B0 (spec §(j) "+1 %" step 4)."""
        sel = self.cell_mask(region) if sel is None else sel
        ok = sel & base.valid & res.valid
        out = {}
        for m in MECHANISMS:
            b0, b = base.diagnostics[BULK_METRIC[m]], res.diagnostics[BULK_METRIC[m]]
            with np.errstate(invalid="ignore"):
                use = ok & np.isfinite(b0) & np.isfinite(b) & (b0 > 0)
            out[m] = float(np.mean(b[use] / b0[use] - 1.0)) if use.any() else float("nan")
        return out

    def bulk_solution(self, source: str | None, perturbation: Mapping[str, float] | None,
                      region: Region | None = None) -> BulkSolution:
        """Multipliers that realise ``perturbation`` (relative bulk changes) in ``region``; cached."""
        source = self._check_source(source)
        region = region or Region()
        key = perturbation_key(perturbation)
        ck = (source, region, key)
        with self._lock:
            if ck in self._bulk:
                self._bulk.move_to_end(ck)
                return self._bulk[ck]
        sol = self._realise(source, dict(zip(MECHANISMS, key)), region)  # its solves run outside the lock
        with self._lock:
            self._bulk[ck] = sol
            if len(self._bulk) > 512:
                self._bulk.popitem(last=False)
        return sol

    def _guess(self, source: str, region: Region, mech: str, target: float) -> float:
        """First log-multiplier for log(1 + r) = ``target``: interpolated between earlier realised
        requests of this source (this region first, then any), else the first-order m = 1 + r."""
        with self._lock:
            pts = list(self._history.get((source, region, mech)) or self._history.get((source, None, mech)) or ())
        if not pts:
            return target
        xs = np.array([0.0, *(p[0] for p in pts)])
        ys = np.array([0.0, *(p[1] for p in pts)])
        order = np.argsort(ys)
        xs, ys = xs[order], ys[order]
        if ys[0] <= target <= ys[-1] and np.all(np.diff(ys) > 0):
            return float(np.interp(target, ys, xs))
        j = int(np.argmin(np.abs(ys - target)))
        if ys[j] != 0.0 and xs[j] != 0.0:
            return float(xs[j] * target / ys[j])
        return target

    def _remember(self, source: str, region: Region, mech: str, x: float, y: float) -> None:
        with self._lock:
            for k in ((source, region, mech), (source, None, mech)):
                pts = self._history.setdefault(k, [])
                pts.append((x, y))
                if len(pts) > 40:
                    del pts[0]

    def _allocation_multiplier(self, source: str, r: float, sel: np.ndarray) -> float:
        """beta multiplier whose region-mean change of the apparent beta is r (no solve needed: Ī depends
        only on beta and the forcing). Secant in log m, bracketed; stops at the beta clamp."""
        beta = self.base_params(source)["beta"]
        ib0 = self._abeta(source, 1.0)
        base = self.baseline(source)
        use = sel & base.valid & np.isfinite(ib0) & (ib0 > 0)
        if not use.any():
            return 1.0
        bmin = float(beta.numpy()[use].min()) if beta.dim() == 1 else float(beta.numpy().min())
        lo, hi = _LOG_BOUNDS[0], min(_LOG_BOUNDS[1], math.log(BETA_MAX / max(bmin, 1e-12)))

        cells = np.flatnonzero(use)
        ib0 = ib0[cells]

        def f(x: float) -> float:
            return float(np.mean(self._abeta(source, math.exp(x), cells) / ib0 - 1.0)) - r

        x0, f0 = 0.0, -r
        x1 = min(max(math.log1p(r), lo), hi)
        f1 = f(x1)
        for _ in range(40):
            if abs(f1) <= BULK_TOLERANCE / 10:
                break
            if f1 < 0:
                lo = max(lo, x1)
            else:
                hi = min(hi, x1)
            x2 = x1 - f1 * (x1 - x0) / (f1 - f0) if f1 != f0 else 0.5 * (lo + hi)
            if not lo < x2 < hi:
                x2 = 0.5 * (lo + hi)
            if abs(x2 - x1) < 1e-12:
                break
            x0, f0, x1 = x1, f1, x2
            f1 = f(x1)
        return math.exp(x1)

    def _realise(self, source: str, r: dict[str, float], region: Region) -> BulkSolution:
        """Find the multipliers (see the module docstring); every iteration is one steady-state solve."""
        sel = self.cell_mask(region)
        base = self.baseline(source)
        mult = dict.fromkeys(MECHANISMS, 1.0)
        mult["NPP"] = 1.0 + r["NPP"]
        if r["I"] != 0.0:
            mult["I"] = self._allocation_multiplier(source, r["I"], sel)
        targets = [m for m in ("A", "K", "Xi", "V") if r[m] != 0.0]
        want = {m: math.log1p(r[m]) for m in targets}
        x = {m: min(max(self._guess(source, region, m, want[m]), _LOG_BOUNDS[0]), _LOG_BOUNDS[1]) for m in targets}
        prev: dict[str, tuple[float, float]] = {}
        it = 0
        tried: list[tuple] = []  # iterates this call added to the result cache (dropped below but the last)
        while True:
            for m in targets:
                mult[m] = math.exp(x[m])
            ck = (source, ("mult", multiplier_key(mult)))
            with self._lock:
                if ck not in self._results:
                    tried.append(ck)
            res = self._results_for(*ck)
            it += 1
            real = self.realised_change(base, res, sel=sel)
            if not targets or it >= MAX_BULK_ITERATIONS:
                break
            if all(np.isfinite(real[m]) and abs(real[m] - r[m]) <= BULK_TOLERANCE for m in targets):
                break
            new_x, moved = {}, False
            for m in targets:
                if not (np.isfinite(real[m]) and real[m] > -1.0):
                    new_x[m] = x[m]
                    continue
                y = math.log1p(real[m])
                if m in prev:
                    px, py = prev[m]
                    if abs(x[m] - px) > 1e-3 and abs(y - py) < 1e-7:
                        new_x[m] = x[m]  # saturated (a guard holds the process): no further solve helps
                        continue
                    slope = (y - py) / (x[m] - px) if abs(x[m] - px) > 1e-12 else 1.0
                elif abs(x[m]) > 1e-9 and abs(y) > 1e-9:
                    slope = y / x[m]  # through the origin: log m = 0 changes nothing
                else:
                    slope = 1.0
                if not (np.isfinite(slope) and slope > 0):
                    slope = 1.0
                prev[m] = (x[m], y)
                step = (want[m] - y) / min(max(slope, 0.05), 5.0)
                new_x[m] = min(max(x[m] + step, _LOG_BOUNDS[0]), _LOG_BOUNDS[1])
                moved |= abs(new_x[m] - x[m]) > 1e-10
            if not moved:
                break
            x = new_x
        with self._lock:
            self.stats["bulk_iterations"] += it
            for old in tried[:-1]:  # an intermediate iterate is never asked for again: free its ~16 MB
                if old != ck:
                    self._results.pop(old, None)
        realised_ok = [m for m in (*targets, "I") if r[m] != 0.0]
        converged = all(np.isfinite(real[m]) and abs(real[m] - r[m]) <= BULK_TOLERANCE for m in realised_ok)
        if len(targets) == 1 and converged:
            m = targets[0]
            self._remember(source, region, m, x[m], math.log1p(real[m]))
        return BulkSolution(requested=dict(r), multipliers=dict(mult), realised=real, iterations=it,
                            converged=converged)

    # -- solving -----------------------------------------------------------------------------
    def base_params(self, source: str) -> dict[str, torch.Tensor]:
        """Unperturbed physical parameters of ``source`` (one contiguous tensor each), cached."""
        th = self.sources[source]
        if isinstance(th, str):
            return self._part((source, "physical"), lambda: default_params(self.forcing))
        return self._part((source, "physical"), lambda: {
            n: v.contiguous() for n, v in params_from_theta(clamp_theta(th, log_clamps=False), clamp=False).items()})

    def _abeta(self, source: str, m_i: float, cells: np.ndarray | None = None) -> np.ndarray:
        """Apparent beta Ī of ``source`` with beta x ``m_i`` (clamped as the solve does): (C,), cached, or
        at ``cells`` only (not cached: the root solve on Ī)."""
        def make():
            beta = scaled_beta(self.base_params(source)["beta"], m_i)
            return dg.apparent_beta_fast(self.forcing, self.grid, beta, cells)
        return self._part((source, "abeta", float(m_i)), make) if cells is None else make()

    def _solve(self, source: str, kind: str, key: tuple[float, ...]) -> CellResults:
        with torch.no_grad():
            if kind == "theta":
                p, op, op_valid, xhat, cin, abeta = self._theta_operator(source, key)
            else:
                p, op, op_valid, xhat, cin, abeta = self._mult_operator(source, key)
            # solve, summarise and the stock-weighted bulk processes in one pass over each block of cells
            status, soc, st, bulk = dg.solve_bulk_summaries(op, p, xhat, self.grid, op_valid=op_valid,
                                                            out=self._buffer("state", tuple(op.k.shape)))
            cue = bulk.pop("cue")
            diags = {**bulk, "cue": cue["whole"]}
        diags["input"] = cin
        diags["allocation"] = abeta
        stocks_g = {k: v.numpy() for k, v in st.items()}
        status = status.numpy()
        valid = plausible(status, stocks_g["whole"], cin, diags)
        cf = coarse_fragment_stocks(stocks_g, self.cf)
        nan = lambda a: np.where(valid, a, np.nan)  # noqa: E731
        with np.errstate(divide="ignore", invalid="ignore"):
            return CellResults(
                stocks={k: nan(cf[k] / 1000.0) for k in _INTERVALS},
                raw_stocks={k: nan(stocks_g[k] / 1000.0) for k in _INTERVALS},
                turnover={k: nan(stocks_g[k] / cin) for k in _INTERVALS},
                cue={k: nan(v) for k, v in cue.items()},
                diagnostics={k: nan(v) for k, v in diags.items()},
                status=status, valid=valid, soc=soc.numpy().astype(np.float32),
                multipliers=key if kind == "mult" else None)

    def _mult_operator(self, source: str, key: tuple[float, ...]):
        """Operator under bulk multipliers, from the source's cached pieces at multiplier 1."""
        m = dict(zip(MECHANISMS, key))
        base = self.base_params(source)
        p = apply_multipliers(base, key)
        f, g = self.forcing, self.grid
        means = self._part((source, "m:means"), lambda: month_means_and_diagnostic(
            f, g, base["q10"], base["wscaling"], base["efolding"]))
        xd = self._part((source, "m:depth"), lambda: xi_depth(g, base["efolding"]))
        xhat = means[2] * m["Xi"] if m["Xi"] != 1.0 else means[2]
        phi = self._part((source, "m:phi", m["I"]), lambda: input_profile(f, g, p["beta"]))
        cin = f.inputs.sum(0).numpy() * m["NPP"]
        abeta = self._abeta(source, m["I"])
        if self.lean:  # the shared multiplier physics (also CellSolver's, e.g. the 0.05° detail tiles)
            p, op, _, _ = multiplied_operator(base, f, g, self.closure, key, modifiers=means[:2], depth_scalar=xd,
                                              phi=phi)
            return p, op, None, xhat, cin, abeta

        def unit_operator():
            op = assemble(base, f, g, self.closure, modifiers=means[:2], depth_scalar=xd,
                          phi=self._part((source, "m:phi", 1.0), lambda: input_profile(f, g, base["beta"])))
            valid_k = torch.isfinite(op.k.sum((0, 1))) & (op.k.amin((0, 1)) > 0)
            return op.k, valid_k, op.lo, op.up

        k1, valid_k, lo1, up1 = self._part((source, "m:operator"), unit_operator)

        def sources_for_beta():
            src = source_vector(f.inputs, phi, g)
            return src, torch.isfinite(src.sum((0, 1)))

        src1, valid_src = self._part((source, "m:src", m["I"]), sources_for_beta)
        s = m["K"] * m["Xi"]
        k = k1 if s == 1.0 else torch.from_numpy(np.multiply(k1.numpy(), s, out=self._buffer("k", tuple(k1.shape))))
        if m["V"] != 1.0:
            lo = torch.from_numpy(np.multiply(lo1.numpy(), m["V"], out=self._buffer("lo", tuple(lo1.shape))))
            up = torch.from_numpy(np.multiply(up1.numpy(), m["V"], out=self._buffer("up", tuple(up1.shape))))
        else:
            lo, up = lo1, up1
        src = src1 if m["NPP"] == 1.0 else torch.from_numpy(
            np.multiply(src1.numpy(), m["NPP"], out=self._buffer("src", tuple(src1.shape))))
        op = Operator(k=k, frac=fraction_tensor(p, g.n_layers), lo=lo, up=up, src=src)
        return p, op, valid_k & valid_src, xhat, cin, abeta

    def _theta_operator(self, source: str, key: tuple[float, ...]):
        """Operator of the spec's theta-space perturbation (``space="theta"``)."""
        q = dict(zip(MECHANISMS, key))
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
        abeta = self._part((source, "theta-abeta", q["I"]),
                           lambda: dg.apparent_beta_fast(self.forcing, self.grid, p["beta"]))
        return p, op, op_valid, both[2], f.inputs.sum(0).numpy(), abeta

    def _params(self, source: str, key: tuple[float, ...]) -> dict[str, torch.Tensor]:
        """Physical parameters of ``source`` under theta-space ``key``, the same values as
        ``params_from_theta(perturb_theta(theta, key), clamp=False)``.

        The unperturbed parameters are computed once per source (one contiguous (C,) tensor each);
        a request maps only the columns of the groups it perturbs (theta (1 + q) clamped, then
        pi = lower + theta (upper - lower)), ~1 ms instead of ~20 ms for the whole (C, 21) table.
        """
        theta = self.sources[source]
        base = self.base_params(source)
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
        """The theta-space operator for this request, reusing every piece whose mechanisms did not change.

        Decay rates k depend only on K and Xi, mixing lo/up only on V, sources only on I and NPP,
        transfer fractions only on A: when one group moves, only its piece is rebuilt.
        """
        keys = {"k": (source, "op:k", q["K"], q["Xi"]), "mix": (source, "op:mix", q["V"]),
                "src": (source, "op:src", q["I"], q["NPP"])}
        with self._parts_lock:  # the pieces checked below must not be evicted by another thread meanwhile
            return self._operator_pieces(source, keys, q, p, f, mods, xd, phi)

    def _operator_pieces(self, source: str, keys: dict[str, tuple], q: dict[str, float], p, f: Forcing, mods, xd,
                         phi):
        """:meth:`_operator` under the pieces' lock."""
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

    def provenance(self) -> dict[str, str]:
        """Which world and data the engine's numbers come from (empty when the engine has no world)."""
        return dict(self.world.provenance()) if self.world is not None else {}

    def region_summary(self, res: CellResults, base: CellResults, sel: np.ndarray, depth: str) -> dict[str, float]:
        """Totals (Pg C), turnover and CUE statistics of one solve over the region's cells.

        ``total_pg`` and ``baseline_pg`` are the totals of the two maps (each over its valid cells, as
        ``proda map``); the change compares like with like: ``change_pg``/``change_pct`` are over the cells
        valid in both solves, and ``n_cells_dropped`` counts the region's cells that left the plausible
        range under the request (their stock is in neither side of the change). Turnover and CUE of the
        depth interval: mean and median unweighted over valid cells (the spec's statistics) and the
        area-weighted mean beside them.
        """
        area = self.cell_area
        stock, stock0 = res.stocks[depth], base.stocks[depth]
        total = total_pg(stock, area, sel)
        total0 = total_pg(stock0, area, sel)
        both = sel & res.valid & base.valid
        common = total_pg(stock, area, both)
        common0 = total_pg(stock0, area, both)
        tau, cue = res.turnover[depth], res.cue[depth]
        valid = sel & res.valid & np.isfinite(tau)
        nan = float("nan")
        out = {"total_pg": total, "baseline_pg": total0, "change_pg": common - common0,
               "change_pct": 100.0 * (common - common0) / common0 if common0 else nan,
               "n_cells_dropped": int((sel & base.valid & ~res.valid).sum())}
        for name, v, ok in (("turnover", tau, valid), ("cue", cue, valid & np.isfinite(cue))):
            unit = "_yr" if name == "turnover" else ""
            if ok.any():
                out[f"{name}_mean{unit}"] = float(v[ok].mean())
                out[f"{name}_median{unit}"] = float(np.median(v[ok]))
                out[f"{name}_area_mean{unit}"] = float((v[ok] * area[ok]).sum() / area[ok].sum())
            else:
                out[f"{name}_mean{unit}"] = out[f"{name}_median{unit}"] = out[f"{name}_area_mean{unit}"] = nan
        out["n_cells"] = int(valid.sum())
        out["area_mkm2"] = float(area[valid].sum() / 1e12)
        return out

    def what_if(self, perturbation: Mapping[str, float] | None = None, *, region: Region | None = None,
                depth: str = "0-100cm", source: str | None = None, space: str = "bulk") -> WhatIfResult:
        """Maps and regional totals under a request, with the change against the unperturbed baseline.

        ``space="bulk"`` (default): ``{"K": 0.1}`` raises the region's baseline decomposition rate K̄ by
        10 % (see the module docstring); ``"theta"``: the spec's unit-interval perturbation;
        ``"multiplier"``: the multipliers 1 + value applied directly.
        """
        if depth not in DEPTH_INTERVALS:
            raise ValueError(f"unknown depth interval {depth!r}; expected one of {list(DEPTH_INTERVALS)}")
        source = self._check_source(source)
        region = region or Region()
        # no engine-wide lock here: the caches lock themselves and the solves run in the calling thread
        solve_key = self.resolve(source, perturbation, space=space, region=region)
        base = self.baseline(source)
        pert = self._results_for(source, solve_key)
        sel = self.cell_mask(region)
        realised = self.realised_change(base, pert, sel=sel)
        bulk = self.bulk_solution(source, perturbation, region) if space == "bulk" and any(
            perturbation_key(perturbation)) else None
        interval = "whole profile" if depth == "whole" else depth
        stock, stock0 = self.to_grid(pert.stocks[depth]), self.to_grid(base.stocks[depth])
        maps = xr.Dataset(
            {
                "soc_stock": (("lat", "lon"), stock, {"units": "kg C m-2", "long_name": f"SOC stock {interval}"}),
                "soc_stock_baseline": (("lat", "lon"), stock0, {"units": "kg C m-2",
                                                                "long_name": f"baseline SOC stock {interval}"}),
                "soc_change": (("lat", "lon"), stock - stock0, {"units": "kg C m-2",
                                                                "long_name": f"SOC change vs baseline {interval}"}),
                "turnover": (("lat", "lon"), self.to_grid(pert.turnover[depth]),
                             {"units": "yr", "long_name": f"bulk SOC turnover time {interval}"}),
                "cue": (("lat", "lon"), self.to_grid(pert.cue[depth]),
                        {"units": "1", "long_name": f"microbial carbon use efficiency {interval}"}),
            },
            coords={"lat": self.lat, "lon": self.lon},
            attrs={"source": source, "depth": depth, "region": region.label, "space": space,
                   "totals_convention": TOTALS_CONVENTION, **self.provenance()},
        )
        key = perturbation_key(perturbation)
        totals: dict[str, float | int | str] = {"region": region.label, "depth": depth, "source": source}
        totals.update(self.region_summary(pert, base, sel, depth))
        totals["space"] = space
        for m, v in zip(MECHANISMS, key):
            totals[f"requested_{m}"] = v
        for m in MECHANISMS:
            totals[f"realised_{m}"] = realised[m]
        mult = dict(zip(MECHANISMS, solve_key[1])) if solve_key[0] == "mult" else None
        if mult is not None:
            for m in MECHANISMS:
                totals[f"multiplier_{m}"] = mult[m]
        if bulk is not None:
            totals["bulk_iterations"] = bulk.iterations
            totals["bulk_converged"] = int(bulk.converged)
        totals.update(self.provenance())
        totals["totals_convention"] = TOTALS_CONVENTION
        return WhatIfResult(maps=maps, totals=totals, perturbation=dict(zip(MECHANISMS, key)), realised=realised,
                            multipliers=mult, space=space)

    def profile(self, lat: float, lon: float, source: str | None = None,
                perturbation: Mapping[str, float] | None = None, *, region: Region | None = None,
                space: str = "bulk") -> xr.Dataset:
        """SOC by layer at the valid cell nearest to (lat, lon) (a bulk request is realised in ``region``)."""
        source = self._check_source(source)
        r = self.cell_results(source, perturbation, space=space, region=region)
        i = self.nearest_cell(lat, lon)
        flat_lat, flat_lon = self.cell_coordinates()
        return xr.Dataset(
            {"soc": (("depth",), r.soc[:, i].astype(float), {"units": "g C m-3", "long_name": "SOC density"})},
            coords={"depth": ("depth", self.grid.z_node, {"units": "m", "long_name": "node depth"})},
            attrs={"lat": float(flat_lat[i]), "lon": float(flat_lon[i]), "source": source, **self.provenance()},
        )

    def cell_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) of every valid cell, (C,) each."""
        lat2, lon2 = np.meshgrid(self.lat, self.lon, indexing="ij")
        return lat2.reshape(-1)[self.cells], lon2.reshape(-1)[self.cells]

    def nearest_cell(self, lat: float, lon: float) -> int:
        """Index of the valid cell nearest to (lat, lon)."""
        flat_lat, flat_lon = self.cell_coordinates()
        d = (flat_lat - lat) ** 2 + ((flat_lon - lon + 180) % 360 - 180) ** 2 * np.cos(np.deg2rad(lat)) ** 2
        return int(np.argmin(d))
