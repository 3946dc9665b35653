"""Gridded forward run of parameter ensembles and its aggregates (spec §(i), §(j), §(n)).

For every ensemble member (a unit-interval parameter set per land cell, or the default-CLM5 preset)
the steady state of every valid cell is solved in chunks of cells (so memory is bounded by the
chunk, not the grid), and the per-cell products are accumulated into ensemble mean and s.d. maps:

* SOC stock (kg C m-2) for 0-30, 0-100, 0-200 cm and the whole profile (0-8.6 m), with the spec's
  **coarse-fragment correction**: each increment is multiplied by (1 - CF/100), with CF (vol %) at
  0 cm for 0-30 cm, at 30 cm for 30-100 cm and at 100 cm for 100-200 cm *and* 200 cm-bottom
  (``Coarse_Fragments_v_0cm/30cm/100cm``; a cell without the covariate is left uncorrected);
* SOC density per layer (kg C m-3, ensemble mean only, float32; fine earth, not corrected);
* bulk turnover tau = S / C_in (yr), whole profile and by interval, from the *uncorrected* model
  stock (a property of the simulated column; the correction only converts fine-earth stocks to
  land-area stocks);
* the six bulk diagnostics of spec §(j) (C_in, apparent beta, K_bar, xi_bar, CUE, V_bar);
* the 21 parameter maps (theta mean and s.d., and the physical value of the mean theta);
* area-weighted regional totals per member (Pg C by interval; carbon input Pg C yr-1; turnover
  mean and median, unweighted over valid cells as the spec infers from the figure scripts).

Cells are dropped per member (NaN) when the solve failed or the result is implausible, as in
spec §(i): stock < 0 or > 1e6 g C m-2, turnover < 0 or > 1e5 yr, or any bulk diagnostic < 0.

Example
-------
>>> from proda_engine.products.gridded import load_grid_world, gridded_products   # doctest: +SKIP
>>> world = load_grid_world("tiny")                                              # doctest: +SKIP
>>> ds = gridded_products(world, world.truth)                                # doctest: +SKIP
>>> float(ds["soc_total"].sel(region="globe", depth="whole").mean())         # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from proda_engine.data.parameter_files import (
    SOURCE_ATTR,
    align_theta_to_grid,
    normalise_parameter_names,
    parameter_file_attrs,
    read_parameter_file,
    resolve_closure,
    resolve_soil_grid,
)
from proda_engine.grid import DEPTH_INTERVALS, Grid, get_grid
from proda_engine.parameters import N_PARAMS, PARAMETER_INDEX, PARAMETER_NAMES, PARAMETERS, to_physical
from proda_engine.physics import Forcing, default_params, params_from_theta
from proda_engine.physics import diagnostics as dg
from proda_engine.physics.inputs import input_profile
from proda_engine.physics.model import Status
from proda_engine.physics.scalars import diagnostic_modifier, month_mean_modifiers, xi_depth
from proda_engine.physics.solver import solve
from proda_engine.products.multipliers import MECHANISMS, NO_CHANGE, multiplied_operator, multiplier_key, scaled_beta
from proda_engine.products.regions import (
    KOPPEN_GROUPS,
    KOPPEN_LABELS,
    LANDCOVER_GROUPS,
    PG,
    Region,
    cell_area,
    region_mask,
)
from proda_engine.products.world import WorldCells

log = logging.getLogger(__name__)

DAYS = 365.0
INTERVALS: tuple[str, ...] = tuple(DEPTH_INTERVALS)  # 0-30cm, 0-100cm, 0-200cm, whole
#: Coarse-fragment covariate used for each stock increment (spec §(i)).
CF_VARIABLES: tuple[str, str, str] = ("Coarse_Fragments_v_0cm", "Coarse_Fragments_v_30cm", "Coarse_Fragments_v_100cm")
#: (name, long_name, units) of the six bulk diagnostics of spec §(j).
DIAGNOSTICS: dict[str, tuple[str, str]] = {
    "input": ("total carbon input to litter and CWD (C_in)", "g C m-2 yr-1"),
    "allocation": ("input allocation: apparent beta of the realised input profile (I)", "1"),
    "decomposition": ("stock-weighted baseline decomposition rate of SOC pools (K)", "yr-1"),
    "environment": ("stock-weighted environmental modifier <xi_T><xi_W>xi_D (Xi)", "1"),
    "cue": ("microbial carbon use efficiency, flux weighted (A)", "1"),
    "transport": ("stock-weighted vertical transport rate (V)", "yr-1"),
}
#: Plausibility limits of spec §(i) ("grid cells dropped as invalid").
MAX_STOCK_G_M2 = 1e6
MAX_TURNOVER_YR = 1e5
PRESETS = ("default", "midpoint")


def suffix(interval: str) -> str:
    """Variable-name form of a depth interval: ``0-30cm`` -> ``0_30cm``."""
    return interval.replace("-", "_")


def _label(interval: str) -> str:
    top, bottom = DEPTH_INTERVALS[interval]
    return "whole profile (0-8.6 m)" if bottom is None else f"{int(top * 100)}-{int(bottom * 100)} cm"


def _digest(a: np.ndarray | torch.Tensor) -> str:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return hashlib.blake2b(np.ascontiguousarray(arr).tobytes(), digest_size=16).hexdigest()


# -------------------------------------------------------------------------------------------------
# One batch of cells: a steady-state solve with everything the products need
# -------------------------------------------------------------------------------------------------
@dataclass
class CellSolution:
    """Per-cell results of one solve, numpy, cells last.

    Attributes:
        status: (C,) int8 :class:`~proda_engine.physics.model.Status` of the solve.
        valid: (C,) bool, solve OK and plausible (spec §(i) limits).
        soc: (L, C) SOC density, g C m-3.
        stocks: interval -> (C,) *uncorrected* SOC stock, g C m-2.
        diagnostics: the six bulk diagnostics (C,) (keys of :data:`DIAGNOSTICS`); only those
            requested are present (``input`` and ``cue`` always).
    """

    status: np.ndarray
    valid: np.ndarray
    soc: np.ndarray
    stocks: dict[str, np.ndarray]
    diagnostics: dict[str, np.ndarray]

    @property
    def cin(self) -> np.ndarray:
        return self.diagnostics["input"]

    def turnover(self, interval: str = "whole") -> np.ndarray:
        """Bulk turnover tau = S_interval / C_in, yr (uncorrected stock)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.stocks[interval] / self.cin


class CellSolver:
    """Structured steady-state solves for one batch of cells, caching what repeats between solves.

    Parts that depend on only a few parameters are cached by a digest of those parameter columns:
    the 12-month modifier means and the diagnostic modifier xi_hat (Q10, w_s, e-folding), the depth
    scalar (e-folding), the input profile and apparent beta (beta). The marginal sensitivity
    perturbs one group at a time, so most solves reuse all but one of these.

    Args:
        forcing: forcing of the batch (float64 recommended: the system is ill-conditioned).
        grid, closure: vertical grid and transport closure.
    """

    def __init__(self, forcing: Forcing, grid: Grid | None = None, closure: str = "conservative") -> None:
        self.forcing = forcing
        self.grid = grid or get_grid()
        self.closure = closure
        self._cache: dict[tuple, object] = {}
        self._cin = forcing.inputs.sum(0).numpy()

    def _get(self, key: tuple, make: Callable[[], object]) -> object:
        if key not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = make()
        return self._cache[key]

    def solve(self, theta: np.ndarray | None, *, input_scale: float | np.ndarray | None = None,
              diagnostics: Sequence[str] = tuple(DIAGNOSTICS),
              multipliers: Mapping[str, float] | tuple[float, ...] | None = None) -> CellSolution:
        """Solve every cell of the batch.

        Args:
            theta: (C, 21) unit-interval parameters (the spec's clamp is applied), or None for the
                default-CLM5 preset (physical defaults, sand-dependent f_S1S2).
            input_scale: multiply the four annual inputs (scalar or (C,)), e.g. 1 + q for NPP.
            diagnostics: which bulk diagnostics to compute (``input`` and ``cue`` always).
            multipliers: bulk what-if multipliers (mechanism -> m, or a tuple in
                :data:`~proda_engine.products.multipliers.MECHANISMS` order), applied by the same
                :func:`~proda_engine.products.multipliers.multiplied_operator` as the what-if engine; None:
                none (all 1).
        """
        mult = NO_CHANGE if multipliers is None else multiplier_key(multipliers)
        m_i = mult[MECHANISMS.index("I")]  # beta x m_I: the input profile depends on it
        f = self.forcing
        with torch.no_grad():
            if theta is None:
                p = default_params(f)
                kq = kx = kb = ("default",)
            else:
                theta = np.asarray(theta, dtype=float)
                p = params_from_theta(theta, dtype=f.dtype)
                ix = [PARAMETER_INDEX[n] for n in ("q10", "wscaling")]
                kq = ("q", _digest(theta[:, ix]))
                kx = ("x", _digest(theta[:, PARAMETER_INDEX["efolding"]]))
                kb = ("b", _digest(theta[:, PARAMETER_INDEX["beta"]]))
            if input_scale is not None:
                scale = torch.as_tensor(np.asarray(input_scale, dtype=float), dtype=f.dtype)
                f = f.with_inputs(f.inputs * scale)
            g = self.grid
            mods = self._get(("mods", *kq), lambda: month_mean_modifiers(self.forcing, p["q10"], p["wscaling"]))
            xd = self._get(("xd", *kx), lambda: xi_depth(g, p["efolding"]))
            phi = self._get(("phi", *kb, m_i), lambda: input_profile(self.forcing, g, scaled_beta(p["beta"], m_i)))
            xhat = self._get(("xhat", *kq, *kx), lambda: diagnostic_modifier(
                self.forcing, g, p["q10"], p["wscaling"], p["efolding"]))
            # the what-if's multipliers, through the one helper the engine uses (all 1: the plain operator)
            p, op, f, xhat = multiplied_operator(p, f, g, self.closure, mult, modifiers=mods, depth_scalar=xd,
                                                 xhat=xhat, phi=phi)
            X = solve(op)
            status, soc, st, cue = dg.fused_summaries(X, op, p, xhat, g)
            soc_np = soc.numpy()
            stocks = {k: v.numpy().copy() for k, v in st.items()}
            cin = f.inputs.sum(0).numpy()
            diags: dict[str, np.ndarray] = {"input": cin, "cue": cue.numpy()}
            dz = g.dz[:, None]
            layer = soc_np * dz
            tot = layer.sum(0)
            with np.errstate(divide="ignore", invalid="ignore"):
                w = layer / tot
                if "decomposition" in diagnostics:
                    S = (X[4:7].numpy() * dz[None]).sum(1)  # (3, C) stock per SOC pool
                    tau = np.stack([p[n].numpy() for n in ("tau4s1", "tau4s2", "tau4s3")])
                    diags["decomposition"] = (S / tau).sum(0) / S.sum(0)
                if "environment" in diagnostics:
                    diags["environment"] = (w * xhat.numpy()).sum(0)
                if "transport" in diagnostics:
                    diags["transport"] = (w * ((op.lo + op.up).numpy() * DAYS)).sum(0)
            if "allocation" in diagnostics:
                diags["allocation"] = self._get(("abeta", *kb, m_i), lambda: dg.apparent_beta(
                    self.forcing, g, p["beta"]).numpy())
        status = status.numpy()
        valid = plausible(status, stocks["whole"], cin, diags)
        return CellSolution(status=status, valid=valid, soc=soc_np, stocks=stocks, diagnostics=diags)


def plausible(status: np.ndarray, stock_whole_g_m2: np.ndarray, cin: np.ndarray,
              diagnostics: Mapping[str, np.ndarray]) -> np.ndarray:
    """Spec §(i) validity: solve OK, 0 <= stock <= 1e6 g C m-2, 0 <= turnover <= 1e5 yr, diagnostics >= 0.

    NaN diagnostics (e.g. apparent beta of permafrost cells, whose input all goes to layer 1) do not
    invalidate a cell; negative ones do.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = stock_whole_g_m2 / cin
        ok = (status == Status.OK) & (stock_whole_g_m2 >= 0) & (stock_whole_g_m2 <= MAX_STOCK_G_M2)
        ok &= (tau >= 0) & (tau <= MAX_TURNOVER_YR)
        for v in diagnostics.values():
            ok &= ~(v < 0)
    return ok


def coarse_fragment_stocks(stocks: Mapping[str, np.ndarray], cf: np.ndarray | None) -> dict[str, np.ndarray]:
    """Coarse-fragment-corrected cumulative stocks (spec §(i)), same units as ``stocks``.

    With increments d_0-30 = S_30, d_30-100 = S_100 - S_30, d_100-200 = S_200 - S_100 and
    d_200-bottom = S_whole - S_200, each is multiplied by (1 - CF/100) with CF (vol %) at 0, 30, 100
    and 100 cm respectively, and summed back: S'_30 = d_0-30 (1 - CF_0/100), S'_100 = S'_30 +
    d_30-100 (1 - CF_30/100), ... ``cf`` is (3, C) in %; NaN (no covariate) means no correction.
    """
    if cf is None:
        return {k: np.array(v, copy=True) for k, v in stocks.items()}
    keep = 1.0 - np.nan_to_num(np.asarray(cf, dtype=float), nan=0.0) / 100.0
    s30, s100, s200, sw = (stocks[k] for k in INTERVALS)
    c30 = s30 * keep[0]
    c100 = c30 + (s100 - s30) * keep[1]
    c200 = c100 + (s200 - s100) * keep[2]
    cw = c200 + (sw - s200) * keep[2]
    return dict(zip(INTERVALS, (c30, c100, c200, cw)))


# -------------------------------------------------------------------------------------------------
# A world on its grid, and parameter sets
# -------------------------------------------------------------------------------------------------
@dataclass
class GridWorld:
    """A world's land cells on its (lat, lon) grid, ready for gridded products: the cells' forcing,
    covariate fields, twin truth, cell areas and the cells <-> grid mapping (:meth:`to_grid`).

    Built from an :class:`~proda_engine.products.world.OpenWorld` by :func:`load_grid_world` (the glossary
    of the four "world" objects is in ``docs/architecture.md``).

    Attributes:
        name: world name (``tiny``, ``europe``, ``default``, ...).
        cells: :class:`~proda_engine.products.world.WorldCells` (forcing kept in float32 to bound
            memory; batches are converted to float64 for the solve).
        fields: covariates on the (lat, lon) grid (continent, Köppen, land cover, coarse fragments, NPP).
        truth: twin-truth theta (parameter, lat, lon) when the world has one.
        paths: a built-in world's files (None for catalog worlds); spec: the world's
            :class:`~proda_engine.data.worlds.WorldSpec` (provenance, products folder).
    """

    name: str
    cells: WorldCells
    fields: xr.Dataset | None = None
    truth: xr.DataArray | None = None
    paths: object = None
    spec: object = None
    _area: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_cells(self) -> int:
        return int(self.cells.cells.size)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.cells.lat.size, self.cells.lon.size)

    @property
    def area(self) -> np.ndarray:
        """Cell area (lat, lon), m2 (spec's spherical trapezoid)."""
        if self._area is None:
            self._area = cell_area(self.cells.lat, self.cells.lon)
        return self._area

    @property
    def cell_areas(self) -> np.ndarray:
        """Area of the valid cells, (C,), m2."""
        return self.area.reshape(-1)[self.cells.cells]

    def field_at_cells(self, name: str) -> np.ndarray | None:
        """A covariate at the valid cells, (C,), or None when the world does not have it."""
        if self.fields is None or name not in self.fields:
            return None
        return np.asarray(self.fields[name].values, dtype=float).reshape(-1)[self.cells.cells]

    def coarse_fragments(self) -> np.ndarray | None:
        """CF at 0, 30, 100 cm (vol %) at the valid cells, (3, C), or None if the world has none."""
        cols = [self.field_at_cells(v) for v in CF_VARIABLES]
        if all(c is None for c in cols):
            return None
        return np.stack([np.full(self.n_cells, np.nan) if c is None else c for c in cols])

    def to_grid(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """(..., C) values -> (..., lat, lon) with ``fill`` outside the valid cells."""
        lead = values.shape[:-1]
        out = np.full((*lead, self.shape[0] * self.shape[1]), fill,
                      dtype=values.dtype if np.issubdtype(values.dtype, np.floating) else float)
        out[..., self.cells.cells] = values
        return out.reshape(*lead, *self.shape)


def load_grid_world(name: str = "tiny", *, float32: bool = True,
                    catalog: str | PathLike | None = None) -> GridWorld:
    """Open a world (built-in or a catalog's ``worlds:``) on its grid: land cells, covariates and twin truth."""
    from proda_engine.data.world import WorldPaths
    from proda_engine.products.world import open_world

    ow = open_world(name, catalog=catalog, dtype=torch.float32 if float32 else torch.float64)
    paths = WorldPaths.in_folder(ow.spec.root) if ow.spec.kind == "builtin" else None
    return GridWorld(name=ow.name, cells=ow.cells, fields=ow.covariates, truth=ow.truth, paths=paths,
                     spec=ow.spec)


class ParameterSet:
    """One or more parameter sets (ensemble members) for a world's valid cells.

    Accepted forms:

    * ``"default"`` (default-CLM5 preset; no unit-interval form) or ``"midpoint"`` (theta = 0.5);
    * numpy ``(21,)`` (homogeneous, e.g. batch DA), ``(C, 21)`` or ``(M, C, 21)`` in cell order;
    * ``xr.DataArray`` with dims ``parameter`` plus optionally ``lat, lon`` (the world grid) and a
      member dimension (``member_dim``), e.g. trained network ensembles or bootstrap members;
    * a parameter file path (:func:`~proda_engine.data.parameter_files.read_parameter_file`).

    Parameter names (``w-scaling``, ...) and longitudes (0..360 or -180..180) are matched through
    :mod:`proda_engine.data.parameter_files`; the DataArray's attributes (``closure``,
    ``soil_grid``) are kept in :attr:`attrs` and checked by :meth:`resolve_closure`.

    Members are materialised one at a time (:meth:`member`), so a 200-member global ensemble stored
    lazily in a netCDF file never sits in memory at once.
    """

    def __init__(self, source: str | PathLike | np.ndarray | xr.DataArray, world: GridWorld, *,
                 member_dim: str = "member", label: str | None = None) -> None:
        self.world = world
        self.member_dim = member_dim
        if isinstance(source, PathLike):
            source = read_parameter_file(source, load=False)
        self.source = source
        self.attrs: dict = dict(source.attrs) if isinstance(source, xr.DataArray) else {}
        C = world.n_cells
        if isinstance(source, str):
            if source not in PRESETS:
                raise ValueError(f"parameter preset must be one of {PRESETS}, found {source!r}")
            self.n_members = 1
            self.label = label or ("default CLM5" if source == "default" else "midpoint theta = 0.5")
            self.members = np.array([0])
        elif isinstance(source, np.ndarray):
            a = np.asarray(source, dtype=float)
            if a.shape == (N_PARAMS,):
                a = a[None, None, :]
            elif a.shape == (C, N_PARAMS):
                a = a[None]
            elif a.ndim != 3 or a.shape[1:] != (C, N_PARAMS):
                raise ValueError(f"theta: expected shape (21,), ({C}, 21) or (M, {C}, 21), found {a.shape}")
            self.source = a
            self.n_members = a.shape[0]
            self.label = label or "theta"
            self.members = np.arange(self.n_members)
        elif isinstance(source, xr.DataArray):
            src = str(source.attrs.get(SOURCE_ATTR, "theta"))
            source = normalise_parameter_names(source, file=src)
            source = source.rename({k: v for k, v in (("latitude", "lat"), ("longitude", "lon"))
                                    if k in source.dims and v not in source.dims})
            extra = set(source.dims) - {"parameter", "lat", "lon", member_dim}
            if extra:
                raise ValueError(f"{src}: variable 'theta': unexpected dimension(s) {sorted(extra)}; expected "
                                 f"parameter, lat, lon and optionally {member_dim!r}")
            # the world's grid in either longitude convention, cell for cell (lazy reorder)
            source = align_theta_to_grid(source, world.cells.lat, world.cells.lon, file=src, target="the world grid")
            self.source = source
            self.n_members = int(source.sizes.get(member_dim, 1))
            self.label = label or str(source.attrs.get("long_name", source.name or "theta"))
            self.members = (np.asarray(source[member_dim].values) if member_dim in source.coords
                            else np.arange(self.n_members))
        else:
            raise TypeError(f"theta: expected a preset name, numpy array or DataArray, found {type(source).__name__}")

    @property
    def is_default(self) -> bool:
        return isinstance(self.source, str) and self.source == "default"

    def resolve_closure(self, closure: str | None = None) -> str:
        """The transport closure to run these parameters with: ``closure`` when given (a warning if
        the parameters record another), else the default, refusing parameters recorded with another
        closure (:func:`~proda_engine.data.parameter_files.resolve_closure`)."""
        return resolve_closure(self.attrs, closure, source=self.attrs.get(SOURCE_ATTR, self.label))

    def resolve_grid(self, grid: Grid | None = None) -> Grid:
        """The soil grid to run these parameters with (as :meth:`resolve_closure`, for ``soil_grid``)."""
        name = resolve_soil_grid(self.attrs, None if grid is None else grid.name,
                                 source=self.attrs.get(SOURCE_ATTR, self.label))
        return grid if grid is not None else get_grid(name)

    def member(self, m: int) -> np.ndarray | None:
        """Theta of member ``m`` at the valid cells, (C, 21); None for the default-CLM5 preset."""
        C = self.world.n_cells
        src = self.source
        if isinstance(src, str):
            return None if src == "default" else np.full((C, N_PARAMS), 0.5)
        if isinstance(src, np.ndarray):
            a = src[m]
            return np.broadcast_to(a, (C, N_PARAMS)).copy() if a.shape[0] == 1 else a
        da = src.isel({self.member_dim: m}) if self.member_dim in src.dims else src
        if "lat" not in da.dims:
            return np.broadcast_to(np.asarray(da.values, dtype=float), (C, N_PARAMS)).copy()
        return self.world.cells.theta_from_grid(da.load())

    def iter_members(self) -> Iterator[tuple[int, np.ndarray | None]]:
        for m in range(self.n_members):
            yield m, self.member(m)


# -------------------------------------------------------------------------------------------------
# Regions
# -------------------------------------------------------------------------------------------------
def default_regions(world: GridWorld) -> dict[str, Region]:
    """Globe, CONUS (if it has cells), the continents, Köppen groups and land-cover groups present."""
    out: dict[str, Region] = {"globe": Region()}
    lat, lon = world.cells.lat, world.cells.lon
    if region_mask(Region("conus", None, "CONUS"), lat, lon).reshape(-1)[world.cells.cells].any():
        out["conus"] = Region("conus", None, "CONUS")
    f = world.fields
    if f is None:
        return out
    if "continent" in f:
        names = str(f["continent"].attrs.get("flag_meanings", "")).split()
        codes = list(f["continent"].attrs.get("flag_values", range(len(names))))
        present = set(np.unique(world.field_at_cells("continent")[np.isfinite(world.field_at_cells("continent"))]))
        for code, name in zip(codes, names):
            if code in present and name != "none":
                out[f"continent:{name}"] = Region("continent", name, name.replace("_", " "))
    if "Koppen_Climate_2018" in f:
        for g in KOPPEN_GROUPS:
            out[f"koppen:{g}"] = Region("koppen", g, f"Köppen {g} ({KOPPEN_LABELS[g]})")
    if "ESA_Land_Cover" in f:
        for g in LANDCOVER_GROUPS:
            out[f"landcover:{g}"] = Region("landcover", g, g.replace("_", "/"))
    return out


def cell_masks(world: GridWorld, regions: Mapping[str, Region]) -> np.ndarray:
    """(R, C) boolean membership of the valid cells in each region."""
    return np.stack([region_mask(r, world.cells.lat, world.cells.lon, world.fields).reshape(-1)[world.cells.cells]
                     for r in regions.values()])


def cell_totals(values: np.ndarray, area_m2: np.ndarray, masks: np.ndarray, factor: float = 1000.0 / PG) -> np.ndarray:
    """Area-weighted totals per region over finite cells: sum(values x area x factor) -> (R,).

    With ``values`` in kg C m-2 and the default factor the result is Pg C (1 kg = 1000 g; Pg = 1e15 g).
    """
    v = np.where(np.isfinite(values), values, 0.0) * area_m2 * factor
    return masks.astype(float) @ v


# -------------------------------------------------------------------------------------------------
# The gridded forward run
# -------------------------------------------------------------------------------------------------
class _Moments:
    """Streaming mean and s.d. over members, NaN-aware per cell (Welford)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.n = np.zeros(shape)
        self.mean = np.zeros(shape)
        self.m2 = np.zeros(shape)

    def add(self, x: np.ndarray) -> None:
        ok = np.isfinite(x)
        self.n += ok
        d = np.where(ok, x - self.mean, 0.0)
        self.mean += np.where(ok, d / np.maximum(self.n, 1), 0.0)
        self.m2 += np.where(ok, d * (x - self.mean), 0.0)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        mean = np.where(self.n > 0, self.mean, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            sd = np.where(self.n > 1, np.sqrt(self.m2 / (self.n - 1)), np.nan)
        return mean, sd


def simulate_member(world: GridWorld, theta: np.ndarray | None, *, grid: Grid | None = None,
                    closure: str = "conservative", chunk_size: int = 20000,
                    cf: np.ndarray | None = None, input_scale: np.ndarray | None = None,
                    diagnostics: Sequence[str] = tuple(DIAGNOSTICS)) -> dict[str, np.ndarray]:
    """Solve one parameter set on every valid cell, ``chunk_size`` cells at a time.

    Returns per-cell (C,) arrays (NaN where invalid): ``stock_<interval>`` CF-corrected (kg C m-2),
    ``raw_<interval>`` uncorrected (kg C m-2), ``turnover_<interval>`` (yr), the requested
    diagnostics, ``soc`` (L, C) g C m-3, ``status`` (int8) and ``valid`` (bool).
    """
    grid = grid or get_grid()
    C = world.n_cells
    L = grid.n_layers
    out: dict[str, np.ndarray] = {"soc": np.full((L, C), np.nan), "status": np.full(C, -1, np.int8),
                                  "valid": np.zeros(C, bool)}
    for k in INTERVALS:
        for pre in ("stock", "raw", "turnover"):
            out[f"{pre}_{k}"] = np.full(C, np.nan)
    for k in (*diagnostics, "input", "cue"):
        out[k] = np.full(C, np.nan)
    for s in range(0, C, chunk_size):
        sl = slice(s, min(s + chunk_size, C))
        f = world.cells.forcing.subset(sl).to(dtype=torch.float64)
        sol = CellSolver(f, grid, closure).solve(None if theta is None else theta[sl],
                                                 input_scale=None if input_scale is None else input_scale[sl],
                                                 diagnostics=diagnostics)
        ok = sol.valid

        def nan(a: np.ndarray, ok: np.ndarray = ok) -> np.ndarray:
            return np.where(ok, a, np.nan)

        corr = coarse_fragment_stocks(sol.stocks, None if cf is None else cf[:, sl])
        for k in INTERVALS:
            out[f"stock_{k}"][sl] = nan(corr[k] / 1000.0)
            out[f"raw_{k}"][sl] = nan(sol.stocks[k] / 1000.0)
            out[f"turnover_{k}"][sl] = nan(sol.turnover(k))
        for k, v in sol.diagnostics.items():
            out[k][sl] = nan(v)
        out["soc"][:, sl] = np.where(ok[None], sol.soc, np.nan)
        out["status"][sl] = sol.status
        out["valid"][sl] = ok
    return out


def member_summary(res: Mapping[str, np.ndarray], area_m2: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Regional aggregates of one member: stock totals (R, 4) Pg C, input (R,) Pg C yr-1, turnover
    mean and median (R,) yr (unweighted over valid cells), valid-cell count and area (R,)."""
    R = masks.shape[0]
    stock = np.stack([cell_totals(res[f"stock_{k}"], area_m2, masks) for k in INTERVALS], axis=1)
    cin = cell_totals(res["input"], area_m2, masks, factor=1.0 / PG)
    tau = res["turnover_whole"]
    mean, median, n, area = (np.full(R, np.nan) for _ in range(4))
    for r in range(R):
        v = tau[masks[r] & np.isfinite(tau)]
        n[r] = v.size
        area[r] = float(area_m2[masks[r] & np.isfinite(tau)].sum())
        if v.size:
            mean[r], median[r] = float(v.mean()), float(np.median(v))
    return {"soc_total": stock, "input_total": cin, "turnover_mean": mean, "turnover_median": median,
            "n_cells": n, "valid_area": area}


def gridded_products(world: GridWorld, params: ParameterSet | str | np.ndarray | xr.DataArray, *,
                     member_dim: str = "member", regions: Mapping[str, Region] | None = None,
                     keep_members: bool = False, chunk_size: int = 20000, grid: Grid | None = None,
                     closure: str | None = None, coarse_fragments: bool = True,
                     progress: Callable[[int, int], None] | None = None) -> xr.Dataset:
    """Forward-run every member on every valid cell; return CF-annotated maps and totals.

    Args:
        world: see :func:`load_grid_world`.
        params: a :class:`ParameterSet` or anything it accepts (preset name, array, DataArray).
        member_dim: name of the member dimension of a DataArray ``params``.
        regions: name -> :class:`Region` for the totals (default :func:`default_regions`).
        keep_members: also write per-member maps (``<name>_member``, float32) of the 2-D products.
        chunk_size: cells per solve batch; bounds memory (about 40 kB per cell in float64).
        grid, closure: soil grid and transport closure; None: the default (``clm5_20``,
            ``conservative``), refusing parameters recorded with another (:meth:`ParameterSet.resolve_closure`);
            given explicitly, they are used (with a warning if the parameters record another).
        coarse_fragments: apply the spec's coarse-fragment correction where the covariate exists.

    Returns:
        Dataset on (lat, lon) with, for every 2-D product ``X``, the ensemble mean ``X`` and s.d.
        ``X_sd`` (NaN with one member): ``soc_stock_<interval>`` (kg C m-2, CF corrected),
        ``turnover`` and ``turnover_<interval>`` (yr), the six diagnostics; ``soc`` (layer, lat, lon)
        kg C m-3 float32 (mean only); ``theta``/``theta_sd`` (parameter, lat, lon) and
        ``parameter_value`` (physical value of the mean theta); ``n_members_valid``; and the
        per-member totals ``soc_total`` (member, region, depth) Pg C, ``input_total`` (member,
        region) Pg C yr-1, ``turnover_mean``/``turnover_median`` (member, region) yr, ``n_cells``.
    """
    ps = params if isinstance(params, ParameterSet) else ParameterSet(params, world, member_dim=member_dim)
    closure = ps.resolve_closure(closure)
    grid = ps.resolve_grid(grid)
    regions = dict(regions) if regions is not None else default_regions(world)
    masks = cell_masks(world, regions)
    area = world.cell_areas
    cf = world.coarse_fragments() if coarse_fragments else None
    C, L, M = world.n_cells, grid.n_layers, ps.n_members
    names2d = [f"soc_stock_{suffix(k)}" for k in INTERVALS] + [f"turnover_{suffix(k)}" for k in INTERVALS] + list(
        DIAGNOSTICS)
    res_key = {**{f"soc_stock_{suffix(k)}": f"stock_{k}" for k in INTERVALS},
               **{f"turnover_{suffix(k)}": f"turnover_{k}" for k in INTERVALS}, **{k: k for k in DIAGNOSTICS}}
    mom = {n: _Moments((C,)) for n in names2d}
    soc_sum, soc_n = np.zeros((L, C)), np.zeros((L, C))
    th_mom = None if ps.is_default else _Moments((N_PARAMS, C))
    members_out = {n: np.full((M, C), np.nan, np.float32) for n in names2d} if keep_members else {}
    summaries: list[dict[str, np.ndarray]] = []
    status_counts: list[dict[str, int]] = []
    t0 = time.perf_counter()
    for m, theta in ps.iter_members():
        res = simulate_member(world, theta, grid=grid, closure=closure, chunk_size=chunk_size, cf=cf)
        for n, key in res_key.items():
            mom[n].add(res[key])
        ok = np.isfinite(res["soc"])
        soc_sum += np.where(ok, res["soc"], 0.0)
        soc_n += ok
        if th_mom is not None:
            th_mom.add(theta.T)
        if keep_members:
            for n, key in res_key.items():
                members_out[n][m] = res[key]
        summaries.append(member_summary(res, area, masks))
        vals, counts = np.unique(res["status"], return_counts=True)
        status_counts.append({(Status(int(v)).name if v >= 0 else "NOT_SIMULATED"): int(c)
                              for v, c in zip(vals, counts)} | {"implausible": int(((res["status"] == 0)
                                                                                   & ~res["valid"]).sum())})
        if progress is not None:
            progress(m + 1, M)
    seconds = time.perf_counter() - t0

    coords = {"lat": ("lat", world.cells.lat, {"units": "degrees_north", "standard_name": "latitude"}),
              "lon": ("lon", world.cells.lon, {"units": "degrees_east", "standard_name": "longitude"})}
    ds = xr.Dataset(coords=coords)
    grid2 = ("lat", "lon")
    for n in names2d:
        mean, sd = mom[n].result()
        attrs = _attrs(n)
        ds[n] = (grid2, world.to_grid(mean), attrs)
        ds[f"{n}_sd"] = (grid2, world.to_grid(sd), {**attrs, "long_name": f"ensemble s.d. of {attrs['long_name']}"})
        if keep_members:
            ds[f"{n}_member"] = (("member", *grid2), world.to_grid(members_out[n]).astype(np.float32),
                                 {**attrs, "long_name": f"{attrs['long_name']}, per member"})
    ds["turnover"] = ds["turnover_whole"].copy()
    ds["turnover_sd"] = ds["turnover_whole_sd"].copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        soc_mean = np.where(soc_n > 0, soc_sum / np.maximum(soc_n, 1), np.nan) / 1000.0
    ds["soc"] = (("layer", *grid2), world.to_grid(soc_mean).astype(np.float32),
                 {"units": "kg C m-3", "long_name": "SOC density (S1+S2+S3) at layer nodes, ensemble mean "
                  "(fine earth, no coarse-fragment correction)"})
    ds["n_members_valid"] = (grid2, world.to_grid(mom["soc_stock_whole"].n, fill=0).astype(np.int32),
                             {"units": "1", "long_name": "number of members with a valid solution"})
    if th_mom is not None:
        tmean, tsd = th_mom.result()
        ds["theta"] = (("parameter", *grid2), world.to_grid(tmean),
                       {"units": "1", "long_name": "unit-interval parameters, ensemble mean"})
        ds["theta_sd"] = (("parameter", *grid2), world.to_grid(tsd),
                          {"units": "1", "long_name": "unit-interval parameters, ensemble s.d."})
        phys = to_physical(np.moveaxis(ds["theta"].values, 0, -1), clamp=False)
        ds["parameter_value"] = (("parameter", *grid2), np.moveaxis(phys, -1, 0),
                                 {"long_name": "physical parameter value of the ensemble-mean theta (the map is "
                                  "linear, so this is also the mean physical value)",
                                  "units_by_parameter": ", ".join(f"{p.name}: {p.units}" for p in PARAMETERS)})
    ds = ds.assign_coords(
        parameter=("parameter", list(PARAMETER_NAMES)),
        layer=("layer", np.arange(1, L + 1)),
        z_node=("layer", grid.z_node, {"units": "m", "long_name": "layer node depth"}),
        dz=("layer", grid.dz, {"units": "m", "long_name": "layer thickness"}),
        member=("member", np.asarray(ps.members)),
        region=("region", list(regions)),
        region_label=("region", [r.label for r in regions.values()]),
        depth=("depth", list(INTERVALS)),
    )
    tot = {k: np.stack([s[k] for s in summaries]) for k in summaries[0]}
    ds["soc_total"] = (("member", "region", "depth"), tot["soc_total"],
                       {"units": "Pg C", "long_name": "area-weighted SOC total (coarse-fragment corrected)"})
    ds["input_total"] = (("member", "region"), tot["input_total"],
                         {"units": "Pg C yr-1", "long_name": "total carbon input (litter + CWD)"})
    ds["turnover_mean"] = (("member", "region"), tot["turnover_mean"],
                           {"units": "yr", "long_name": "mean bulk turnover, unweighted over valid cells"})
    ds["turnover_median"] = (("member", "region"), tot["turnover_median"],
                             {"units": "yr", "long_name": "median bulk turnover, unweighted over valid cells"})
    ds["n_cells"] = (("member", "region"), tot["n_cells"].astype(np.int64), {"long_name": "valid cells"})
    ds["valid_area"] = (("member", "region"), tot["valid_area"] / 1e12,
                        {"units": "Mkm2", "long_name": "area of valid cells"})
    from proda_engine.data.writers import version_attrs

    ds.attrs.update({
        "title": "PRODA / CLM5 matrix model gridded steady-state products",
        "Conventions": "CF-1.8",
        "world": world.name,
        # which world and data the numbers come from (synthetic twin or measured profiles of a catalog world)
        **(world.spec.provenance() if world.spec is not None else {}),
        "parameters": ps.label,
        "n_members": M,
        "grid": grid.name,
        **parameter_file_attrs(closure, grid.name, lat=world.cells.lat, lon=world.cells.lon),
        "coarse_fragment_correction": ("increments x (1 - CF/100): 0-30 cm CF at 0 cm; 30-100 cm CF at 30 cm; "
                                       "100-200 cm and 200 cm-bottom CF at 100 cm (" + ", ".join(CF_VARIABLES)
                                       + "); cells without the covariate uncorrected") if cf is not None else "none",
        "validity": "dropped: failed solve, stock < 0 or > 1e6 g C m-2, turnover < 0 or > 1e5 yr, "
                    "any bulk diagnostic < 0 (spec (i))",
        "status_counts": str(status_counts if M <= 10 else status_counts[:10]),
        "seconds": round(seconds, 2),
        # the one key plus proda_version, which gridded products have always carried
        **version_attrs("proda_version"),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return ds


def _attrs(name: str) -> dict[str, str]:
    if name.startswith("soc_stock_"):
        k = name[len("soc_stock_"):].replace("_", "-", 1) if name != "soc_stock_whole" else "whole"
        return {"units": "kg C m-2", "long_name": f"SOC stock {_label(k)}, coarse-fragment corrected"}
    if name.startswith("turnover_"):
        k = name[len("turnover_"):].replace("_", "-", 1) if name != "turnover_whole" else "whole"
        return {"units": "yr", "long_name": f"bulk SOC turnover time {_label(k)} (stock / C_in)"}
    long_name, units = DIAGNOSTICS[name]
    return {"units": units, "long_name": long_name}


# -------------------------------------------------------------------------------------------------
# Aggregates: tables
# -------------------------------------------------------------------------------------------------
def totals_table(ds: xr.Dataset):
    """Regional totals of a :func:`gridded_products` Dataset as a pandas DataFrame: one row per
    (region, quantity) with the member mean, s.d. (ddof = 1) and units.

    Quantities: ``soc_<interval>`` (Pg C), ``input`` (Pg C yr-1), ``turnover_mean``/``turnover_median``
    (yr), ``n_cells``.
    """
    import pandas as pd

    rows = []
    sd = lambda v: float(np.std(v, ddof=1)) if v.size > 1 else float("nan")  # noqa: E731
    for r, region in enumerate(ds["region"].values):
        label = str(ds["region_label"].values[r])
        for d, depth in enumerate(ds["depth"].values):
            v = ds["soc_total"].values[:, r, d]
            rows.append({"region": str(region), "label": label, "quantity": f"soc_{depth}", "units": "Pg C",
                         "mean": float(v.mean()), "sd": sd(v)})
        for q, units in (("input_total", "Pg C yr-1"), ("turnover_mean", "yr"), ("turnover_median", "yr"),
                         ("n_cells", "1")):
            v = np.asarray(ds[q].values[:, r], dtype=float)
            rows.append({"region": str(region), "label": label, "quantity": q.replace("_total", ""),
                         "units": units, "mean": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"),
                         "sd": sd(v[np.isfinite(v)])})
    return pd.DataFrame(rows)


def regional_totals(stock_map: np.ndarray, world: GridWorld,
                    regions: Mapping[str, Region] | None = None) -> dict[str, float]:
    """Area-weighted totals (Pg C) of a (lat, lon) stock map in kg C m-2 over each region."""
    regions = dict(regions) if regions is not None else default_regions(world)
    out = {}
    for name, r in regions.items():
        m = region_mask(r, world.cells.lat, world.cells.lon, world.fields)
        v = np.asarray(stock_map, dtype=float)
        ok = m & np.isfinite(v)
        out[name] = float((v[ok] * 1000.0 * world.area[ok]).sum() / PG)
    return out


def landcover_koppen_groups(world: GridWorld) -> dict[str, dict[str, np.ndarray]]:
    """(lat, lon) masks of the spec §(n) summary groups.

    * ``koppen``: A 1-3, B 4-7, C 8-16, D 17-28, E 29-30 (the spec folds E into D; kept apart here);
    * ``landcover``: agriculture (ESA 1-4), forest (5-10, 16-17) split into ``boreal_forest`` where
      Köppen is D or E (17-30, the spec's D) and ``forest`` elsewhere, grass/shrub (11-15),
      wetland (18), other (>= 19).
    """
    f = world.fields
    out: dict[str, dict[str, np.ndarray]] = {"koppen": {}, "landcover": {}}
    if f is None:
        return out
    kop = np.asarray(f["Koppen_Climate_2018"].values) if "Koppen_Climate_2018" in f else None
    if kop is not None:
        for g, (lo, hi) in KOPPEN_GROUPS.items():
            out["koppen"][g] = (kop >= lo) & (kop <= hi)
    if "ESA_Land_Cover" in f:
        lc = np.asarray(f["ESA_Land_Cover"].values)
        cold = (kop >= 17) & (kop <= 30) if kop is not None else np.zeros(lc.shape, bool)
        for g, codes in LANDCOVER_GROUPS.items():
            m = np.isin(lc, codes)
            if g == "forest":
                out["landcover"]["forest"] = m & ~cold
                out["landcover"]["boreal_forest"] = m & cold
            else:
                out["landcover"][g] = m
    return out


def group_summaries(ds: xr.Dataset, world: GridWorld, variables: Sequence[str] | None = None):
    """Per Köppen group and land-cover group: mean and 2.5/50/97.5 percentiles over valid cells
    (unweighted) of the ensemble-mean maps (spec §(n)). Returns a pandas DataFrame."""
    import pandas as pd

    variables = list(variables) if variables is not None else (
        [f"soc_stock_{suffix(k)}" for k in INTERVALS] + ["turnover", *DIAGNOSTICS])
    rows = []
    for grouping, groups in landcover_koppen_groups(world).items():
        for g, mask in groups.items():
            for v in variables:
                x = np.asarray(ds[v].values)[mask]
                x = x[np.isfinite(x)]
                row = {"grouping": grouping, "group": g, "variable": v, "units": ds[v].attrs.get("units", ""),
                       "n_cells": int(x.size)}
                if x.size:
                    p = np.percentile(x, [2.5, 50, 97.5])
                    row.update(mean=float(x.mean()), p2_5=float(p[0]), p50=float(p[1]), p97_5=float(p[2]))
                else:
                    row.update(mean=np.nan, p2_5=np.nan, p50=np.nan, p97_5=np.nan)
                rows.append(row)
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------------
# Writing
# -------------------------------------------------------------------------------------------------
def write_products(ds: xr.Dataset, path: str | PathLike) -> Path:
    """Write products atomically: netCDF (compressed, via ``write_netcdf_atomic``) or Zarr for a
    ``.zarr`` path (needs the optional ``zarr`` package; suits very large, chunked runs)."""
    from proda_engine.data.writers import write_product

    p = Path(path)
    if p.suffix == ".zarr":
        try:
            import zarr  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"{p.name}: writing Zarr needs the optional 'zarr' package; use a .nc path") from exc
        ds.to_zarr(p, mode="w")
        return p
    enc = {}
    for name, var in ds.data_vars.items():
        if var.dtype.kind == "f" and var.ndim >= 2:
            enc[name] = {"zlib": True, "complevel": 4}
    return write_product(ds, p, encoding=enc)
