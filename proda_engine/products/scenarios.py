"""Climate scenarios: transient SOC trajectories and warmed steady states (issue 7).

A :class:`Scenario` turns the baseline 12-month climatology into the forcing of year y:

* soil warming  T'_{m,j,c} = T_{m,j,c} + r(y) dT_c, with dT_c = warming * (1 + amplification (|lat_c| / 90)^2)
  (uniform with ``amplification=0``; polar-amplified otherwise, e.g. 1.0 doubles it at the poles);
* water scalar  W' = clip(W (1 + r(y) water), 0, 1)   (relative change of CLM5's W_SCALAR);
* carbon input  I' = I (1 + r(y) npp)                  (relative change of all four inputs);
* permafrost thaw, a deliberately simple rule: in cells whose active layer never exceeds 2 m
  (cryoturbation/permafrost regime), every month with a thawed layer (ALT > 0) deepens by
  ``thaw_per_kelvin`` * r(y) dT_c metres (default 0.15 m K-1, the middle of the 0.1-0.3 m K-1 spread
  of active-layer sensitivities in CMIP-era studies). Frozen months stay frozen and the "input to the
  top layer only" permafrost rule (spec §(h)) is left as it is, so the input profile does not jump.

r(y) = min(y / ramp_years, 1) is a linear ramp that holds after the horizon (``ramp_years=0``: a step).

:func:`steady_state_under` is the instant answer: the steady state of the fully changed climate, via
the same structured solver as the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from os import PathLike

import numpy as np
import torch
import xarray as xr

from proda_engine.grid import Grid, get_grid
from proda_engine.physics.forcing import Forcing
from proda_engine.physics.model import PhysicalParams, SteadyState, default_params, steady_state
from proda_engine.physics.transport import CRYO_MAX_ALT

ForcingFn = Callable[[int], Forcing]


@dataclass(frozen=True)
class Scenario:
    """A climate change applied to the baseline forcing, ramped linearly (see module docstring).

    Attributes:
        warming: soil-temperature change at the end of the ramp, K (all layers and months).
        amplification: latitude amplification a: dT = warming (1 + a (|lat|/90)^2); 0 = uniform.
        water: relative change of the water scalar W_SCALAR at the end of the ramp (0.1 = +10 %).
        npp: relative change of the carbon input at the end of the ramp (0.1 = +10 %).
        ramp_years: length of the linear ramp, years (0 = an immediate step change).
        thaw_per_kelvin: active-layer deepening in permafrost cells, m K-1 (0 disables the rule).
    """

    warming: float = 0.0
    amplification: float = 0.0
    water: float = 0.0
    npp: float = 0.0
    ramp_years: int = 100
    thaw_per_kelvin: float = 0.15

    def ramp(self, year: float) -> float:
        """r(y) in [0, 1]: the fraction of the change reached by the end of year ``year``."""
        if self.ramp_years <= 0:
            return 1.0 if year > 0 else 0.0
        return float(min(max(year, 0.0) / self.ramp_years, 1.0))

    @property
    def is_zero(self) -> bool:
        return self.warming == 0.0 and self.water == 0.0 and self.npp == 0.0

    def warming_per_cell(self, lat: np.ndarray | None, n_cells: int) -> np.ndarray:
        """dT_c at the end of the ramp, (C,), K."""
        if self.amplification and lat is None:
            raise ValueError("amplified warming needs the cells' latitudes")
        if lat is None or not self.amplification:
            return np.full(n_cells, float(self.warming))
        return self.warming * (1.0 + self.amplification * (np.abs(np.asarray(lat, float)) / 90.0) ** 2)

    def apply(self, base: Forcing, fraction: float, lat: np.ndarray | None = None, *,
              warm_soil: bool = True) -> Forcing:
        """The baseline forcing with ``fraction`` (0..1) of the change applied.

        ``warm_soil=False`` leaves TSOI at the baseline (everything else changed, including the thaw
        that the warming causes): the year's fields for :meth:`ScenarioForcing.offsets`.
        """
        if fraction == 0.0 or self.is_zero:
            return base
        kw = {"dtype": base.dtype, "device": base.device}
        dT = torch.as_tensor(fraction * self.warming_per_cell(lat, base.n_cells), **kw)
        tsoi = base.tsoi + dT if (warm_soil and self.warming) else base.tsoi
        w = torch.clamp(base.w_scalar * (1.0 + fraction * self.water), 0.0, 1.0) if self.water else base.w_scalar
        inputs = base.inputs * (1.0 + fraction * self.npp) if self.npp else base.inputs
        altmax, alt_ly = base.altmax, base.altmax_lastyear
        if self.thaw_per_kelvin and self.warming:
            permafrost = base.alt.amax(0) <= CRYO_MAX_ALT  # (C,)
            deepen = torch.where(permafrost, self.thaw_per_kelvin * dT, torch.zeros_like(dT))
            altmax = torch.where(altmax > 0, altmax + deepen, altmax)
            alt_ly = torch.where(alt_ly > 0, alt_ly + deepen, alt_ly)
        return Forcing(tsoi=tsoi, w_scalar=w, o_scalar=base.o_scalar, fpi=base.fpi, altmax=altmax,
                       altmax_lastyear=alt_ly, nbedrock=base.nbedrock, inputs=inputs, sand=base.sand, npp=base.npp)

    def forcing_fn(self, base: Forcing, lat: np.ndarray | None = None) -> ScenarioForcing:
        """``year -> Forcing`` for :func:`~proda_engine.physics.transient.run_transient` (year 0 = baseline).

        The forcing of year y uses the ramp at mid-year, r(y - 1/2), so a 100-year ramp reaches the
        full change during year 100 and the annual steps see a piecewise-constant linear ramp.
        """
        return ScenarioForcing(self, base, lat)

    def to_attrs(self) -> dict[str, float]:
        return {f"scenario_{k}": float(v) for k, v in asdict(self).items()}


class ScenarioForcing:
    """A scenario's forcing series: ``fn(year)`` is the full Forcing of that year (year 0 = baseline);
    ``fn.offsets(year)`` is the same year as (fields without the soil warming, warming per cell (C,) K),
    which the fused transient path uses to skip re-reading and re-exponentiating the 12-month
    temperature field every year (tested equal to the full forcing)."""

    def __init__(self, scenario: Scenario, base: Forcing, lat: np.ndarray | None) -> None:
        self.scenario, self.base, self.lat = scenario, base, lat
        self._dT = scenario.warming_per_cell(lat, base.n_cells)

    def fraction(self, year: int) -> float:
        return self.scenario.ramp(year - 0.5) if year > 0 else 0.0

    def __call__(self, year: int) -> Forcing:
        return self.scenario.apply(self.base, self.fraction(year), self.lat)

    def offsets(self, year: int) -> tuple[Forcing, np.ndarray]:
        r = self.fraction(year)
        return self.scenario.apply(self.base, r, self.lat, warm_soil=False), r * self._dT


def steady_state_under(scenario: Scenario, params: PhysicalParams | str, base: Forcing, grid: Grid | None = None, *,
                       lat: np.ndarray | None = None, fraction: float = 1.0,
                       closure: str = "conservative") -> SteadyState:
    """The instant answer: the steady state once ``fraction`` of the change has happened and held forever.

    This is the committed ("equilibrium") response; the transient run shows how little of it a
    century realises for slow SOC pools.
    """
    f = scenario.apply(base, fraction, lat)
    p = default_params(f) if isinstance(params, str) else params
    return steady_state(p, f, grid or get_grid(), closure=closure)


def forcing_from_reader(series, baseline: Forcing, cells: np.ndarray | None = None, *,
                        cache_bytes: int = 2 * 2**30) -> ForcingFn:
    """A :class:`~proda_engine.data.ForcingSeries` (e.g. a catalog ``forcing_series`` source) as
    ``year -> Forcing``: year 0 is ``baseline``; year y (1-based) is the series' y-th year (the last
    year repeats after the series ends). ``cells`` are the flat (lat, lon) indices of ``baseline``'s
    cells, to select the same cells from each year. Years are read lazily; the selected cells of each
    year read are kept (up to ``cache_bytes``), so runs of several parameter sources read every file
    once (a global 0.5-degree year takes ~15 s to read and normalise).
    """
    if len(series) == 0:
        raise ValueError("forcing series: no years")
    label = series.source_name or ", ".join(p.name for p in series.paths[:3])
    cache: dict[int, Forcing] = {}
    used = [0]

    def fn(year: int) -> Forcing:
        if year <= 0:
            return baseline
        i = min(year, len(series)) - 1
        if i in cache:
            return cache[i]
        ds = series.year(i)
        f, found = Forcing.from_dataset(ds, dtype=baseline.dtype, device=baseline.device, only_valid=True)
        where = f"{label}, year {series.labels[i]}"
        if cells is not None:
            f = f.subset(_positions(found, cells, where))
        if f.n_cells != baseline.n_cells:
            raise ValueError(f"forcing {where}: {f.n_cells} valid cells, expected {baseline.n_cells}")
        size = sum(t.element_size() * t.nelement() for t in vars(f).values() if isinstance(t, torch.Tensor))
        if used[0] + size <= cache_bytes:
            cache[i] = f
            used[0] += size
        return f

    return fn


def _positions(found: np.ndarray, cells: np.ndarray, where: object) -> np.ndarray:
    """Positions in ``found`` (valid flat cell indices of a forcing) of ``cells``; a missing cell is an error."""
    pos = {int(c): i for i, c in enumerate(np.asarray(found))}
    missing = [int(c) for c in cells if int(c) not in pos]
    if missing:
        raise ValueError(f"forcing {where}: {len(missing)} of the world's cells have no valid forcing "
                         f"(first flat (lat, lon) index {missing[0]}); expected every baseline cell")
    return np.array([pos[int(c)] for c in cells])


def forcing_from_series(ds: xr.Dataset, baseline: Forcing, cells: np.ndarray | None = None) -> ForcingFn:
    """A (year, month, ...) normalised forcing Dataset in memory as ``year -> Forcing`` (year 0 = baseline)."""
    years = list(ds["year"].values)

    def fn(year: int) -> Forcing:
        if year <= 0:
            return baseline
        one = ds.isel(year=min(year, len(years)) - 1)
        f, found = Forcing.from_dataset(one, dtype=baseline.dtype, device=baseline.device, only_valid=True)
        if cells is not None:
            f = f.subset(_positions(found, cells, f"series year {year}"))
        return f

    return fn


# ---------------------------------------------------------------------------------------------
# A scenario on a world: trajectories, regions and maps per parameter source
# ---------------------------------------------------------------------------------------------

LAT_BANDS: dict[str, tuple[float, float]] = {
    "tropics": (0.0, 23.5), "temperate": (23.5, 50.0), "boreal_arctic": (50.0, 90.1),
}
G_PER_PG = 1e15


def _source_params(engine, name: str, idx: np.ndarray, forcing: Forcing,
                   extra: dict[str, np.ndarray] | None = None) -> PhysicalParams:
    from proda_engine.physics.model import params_from_theta

    if extra and name in extra:  # e.g. one ensemble member's theta, (C, 21) over the engine's cells
        return params_from_theta(np.asarray(extra[name])[idx], dtype=forcing.dtype)
    if name == "homogeneous_mean":  # a batch-DA-like set: the across-cell mean theta of trained PRODA
        arrays = [k for k, v in engine.sources.items() if not isinstance(v, str)]
        base = next((k for k in ("proda_e2e", "proda_two_step") if k in arrays), arrays[0] if arrays else None)
        if base is None:
            raise ValueError("'homogeneous_mean' needs a world with a parameter map (theta) source")
        th = np.asarray(engine.sources[base], float).mean(0)
        return params_from_theta(np.repeat(th[None], len(idx), 0), dtype=forcing.dtype)
    if name not in engine.sources:
        raise ValueError(f"unknown parameter source {name!r}; expected one of "
                         f"{sorted([*engine.sources, 'homogeneous_mean'])}")
    src = engine.sources[name]
    if isinstance(src, str):
        return default_params(forcing)
    return params_from_theta(np.asarray(src)[idx], dtype=forcing.dtype)


def lattice_cells(engine, coarsen: int, within: np.ndarray | None = None) -> np.ndarray:
    """Positions (into ``engine.cells``) of the regular lattice that keeps every ``coarsen``-th cell in
    latitude and longitude, optionally only where ``within`` (bool per engine cell) holds."""
    iy, ix = np.divmod(engine.cells, engine.lon.size)
    keep = (iy % coarsen == 0) & (ix % coarsen == 0)
    if within is not None:
        keep &= np.asarray(within, bool)
    return np.flatnonzero(keep)


def auto_coarsen(engine, max_cells: int, within: np.ndarray | None = None) -> int:
    """The finest lattice (1, 2, 3, ...) with at most ``max_cells`` cells in the selection (>= 1 cell)."""
    if max_cells < 1:
        raise ValueError(f"max_cells must be >= 1, found {max_cells}")
    for c in range(1, 65):
        n = lattice_cells(engine, c, within).size
        if n <= max_cells:
            return c if n > 0 or c == 1 else max(c - 1, 1)
    return 64


def world_scenario(engine, scenario: Scenario, years: int, sources: Sequence[str], *, coarsen: int = 4,
                   seasonal: bool = False, map_years: Sequence[int] = (), closure: str | None = None,
                   equilibrium: bool = True, within: np.ndarray | None = None, region_label: str = "globe",
                   progress: Callable[[float], None] | None = None,
                   forcing_files: Sequence[str | PathLike] | None = None,
                   forcing_series=None,
                   extra_sources: dict[str, np.ndarray] | None = None) -> xr.Dataset:
    """Run ``scenario`` on a world's cells for each parameter source; global/regional totals and maps.

    Args:
        engine: a :class:`~proda_engine.products.whatif.WhatIfEngine` (forcing, cells, sources, area).
        scenario: the climate change (ramped over ``scenario.ramp_years``).
        years: simulated years.
        sources: parameter sources of the engine, plus ``"homogeneous_mean"`` (mean PRODA theta everywhere).
        coarsen: keep every ``coarsen``-th cell in latitude and longitude (a regular coarse lattice;
            each kept cell stands for coarsen^2 cells of area in the totals). 1 = every cell.
        seasonal: monthly operators (True, then a zero-scenario control run is subtracted to remove the
            drift from the mean-operator steady state to the seasonal cycle) or annual-mean ones (False).
        map_years: years at which maps of the SOC change are stored (the last year is always added).
        equilibrium: also store the change of the steady state under the full change (the instant answer).
        within: bool per engine cell: run only the selected region's cells (``soc_change_global`` is
            then that region's total; ``region_label`` names it).
        progress: called with the fraction done (0..1) as the runs advance.
        forcing_files: a user forcing time series instead of ``scenario``'s changes: CLM5/CMIP-style
            netCDF files indexed by :func:`proda_engine.data.read_forcing_series` (by calendar year, or
            12 steps per year in file order) and stepped by :func:`forcing_from_reader` (the last year
            repeats). The equilibrium answer is then the steady state under the last year's forcing.
        forcing_series: the same from an already indexed :class:`~proda_engine.data.ForcingSeries`
            (e.g. ``load_catalog().open(name)`` of a ``forcing_series`` source).
        extra_sources: more parameter sets by name, unit-interval theta (C, 21) over the engine's cells
            (ensemble members); list their names in ``sources``.
    Returns:
        Dataset with ``soc_change_global`` (source, year), ``soc_change_region`` (source, region, year)
        and ``soc_initial_global`` (source) in Pg C; ``soc_change_map`` (source, map_year, lat, lon) in
        kg C m-2; ``soc_change_equilibrium_global`` (source) in Pg C.
    """
    from proda_engine.physics.transient import run_transient

    closure = closure or engine.closure
    nlon = engine.lon.size
    iy, ix = np.divmod(engine.cells, nlon)
    idx = lattice_cells(engine, coarsen, within)
    if idx.size == 0:
        raise ValueError(f"no land cell of region {region_label!r} on the 1-in-{coarsen} lattice; "
                         "choose a larger region or coarsen=1")
    f = engine.forcing.subset(idx)
    lat_c = engine.lat[iy[idx]]
    # m2 each kept cell stands for: its own area scaled so the lattice covers the selection's land area
    area_all = engine.area.reshape(-1)[engine.cells]
    sel_area = area_all.sum() if within is None else area_all[np.asarray(within, bool)].sum()
    area = area_all[idx] * (sel_area / area_all[idx].sum())
    regions = {name: (np.abs(lat_c) >= lo) & (np.abs(lat_c) < hi) for name, (lo, hi) in LAT_BANDS.items()}
    fields = getattr(engine, "fields", None)
    if fields is not None and "continent" in fields:
        da = fields["continent"]
        names = str(da.attrs.get("flag_meanings", "")).split()
        codes = list(da.attrs.get("flag_values", range(len(names))))
        cont = np.asarray(da.values).reshape(-1)[engine.cells[idx]]
        for nm, code in zip(names, codes):
            if nm != "none" and (cont == code).any():
                regions[nm] = cont == code
    map_years = sorted({int(y) for y in map_years if 0 < int(y) <= years} | {years})
    lat_m, lon_m = engine.lat[::coarsen], engine.lon[::coarsen]
    ny, nx = iy[idx] // coarsen, ix[idx] // coarsen

    S = len(sources)
    glob = np.zeros((S, years))
    reg = np.zeros((S, len(regions), years))
    init = np.zeros(S)
    eq = np.full(S, np.nan)
    flux = {k: np.zeros((S, years)) for k in ("inputs", "respiration")}
    maps = np.full((S, len(map_years), lat_m.size, lon_m.size), np.nan)
    n_bad = np.zeros(S, int)
    if forcing_files and forcing_series is not None:
        raise ValueError("give forcing_files or forcing_series, not both")
    if forcing_files:
        from proda_engine.data import read_forcing_series

        forcing_series = read_forcing_series(list(forcing_files), n_layers=f.n_layers)
    user = forcing_series is not None
    fn = forcing_from_reader(forcing_series, f, cells=engine.cells[idx]) if user else scenario.forcing_fn(f, lat_c)
    changed = user or not scenario.is_zero
    runs = len(sources) * (2 if seasonal and changed else 1)
    done = [0]

    def tick(_y: int, _n: int) -> None:
        done[0] += 1
        if progress is not None:
            progress(min(done[0] / (runs * years), 1.0))

    for s, name in enumerate(sources):
        p = _source_params(engine, name, idx, f, extra_sources)
        ds = run_transient(p, fn, years, engine.grid, closure=closure, seasonal=seasonal, keep_profiles=False,
                           progress=tick)
        change = ds["soc"].values - ds["soc_initial"].values[None]
        if seasonal and changed:
            ctl = run_transient(p, f, years, engine.grid, closure=closure, seasonal=True, keep_profiles=False,
                                progress=tick)
            change = change - (ctl["soc"].values - ctl["soc_initial"].values[None])
        ok = np.isfinite(change).all(0) & np.isfinite(ds["soc_initial"].values)
        n_bad[s] = int((~ok).sum())
        w = np.where(ok, area, 0.0)
        glob[s] = (np.where(ok, change, 0.0) * w).sum(1) / G_PER_PG
        init[s] = float((np.where(ok, ds["soc_initial"].values, 0.0) * w).sum() / G_PER_PG)
        for k in flux:
            flux[k][s] = (np.where(ok, ds[k].values, 0.0) * w).sum(1) / G_PER_PG
        for r, mask in enumerate(regions.values()):
            reg[s, r] = (np.where(ok & mask, change, 0.0) * w).sum(1) / G_PER_PG
        for i, y in enumerate(map_years):
            maps[s, i, ny, nx] = np.where(ok, change[y - 1], np.nan) / 1000.0
        if equilibrium and changed:
            with torch.no_grad():
                if user:
                    new = steady_state(p, fn(years), engine.grid, closure=closure)
                else:
                    new = steady_state_under(scenario, p, f, engine.grid, lat=lat_c, closure=closure)
                dz = torch.as_tensor(engine.grid.dz, dtype=new.soc.dtype)[:, None]
                d_eq = (new.soc * dz).sum(0).numpy() - ds["soc_initial"].values
            eq[s] = float((np.where(ok & np.isfinite(d_eq), d_eq, 0.0) * w).sum() / G_PER_PG)
        elif equilibrium:
            eq[s] = 0.0
    yr = np.arange(1, years + 1)
    out = xr.Dataset(
        {
            "soc_change_global": (("source", "year"), glob,
                                  {"units": "Pg C", "long_name": "change of global SOC stock (whole profile)"}),
            "soc_change_region": (("source", "region", "year"), reg,
                                  {"units": "Pg C", "long_name": "change of regional SOC stock (whole profile)"}),
            "soc_initial_global": (("source",), init, {"units": "Pg C", "long_name": "baseline global SOC stock"}),
            "soc_change_equilibrium_global": (("source",), eq, {
                "units": "Pg C", "long_name": "change of the steady state under the full change (committed)"}),
            "inputs_global": (("source", "year"), flux["inputs"], {"units": "Pg C yr-1", "long_name": "carbon input"}),
            "respiration_global": (("source", "year"), flux["respiration"],
                                   {"units": "Pg C yr-1", "long_name": "heterotrophic respiration"}),
            "soc_change_map": (("source", "map_year", "lat", "lon"), maps,
                               {"units": "kg C m-2", "long_name": "SOC change (whole profile) since the start"}),
            "n_failed_cells": (("source",), n_bad, {"units": "1", "long_name": "cells with non-finite results"}),
        },
        coords={"source": list(sources), "year": yr, "region": list(regions), "map_year": map_years,
                "lat": lat_m, "lon": lon_m},
    )
    out["year"].attrs["long_name"] = "end of simulated year"
    if user:
        out.attrs["forcing_files"] = ", ".join(str(x) for x in forcing_series.paths)
        out.attrs["forcing_years"] = f"{forcing_series.labels[0]}-{forcing_series.labels[-1]} " \
                                     f"({len(forcing_series)} years; {forcing_series.grouping})"
        if forcing_series.source_name:
            out.attrs["forcing_source"] = forcing_series.source_name
    out.attrs.update({**scenario.to_attrs(), "coarsen": coarsen, "n_cells": len(idx), "selection": region_label,
                      "n_cells_world": int(engine.cells.size), "seasonal": int(seasonal), "closure": closure,
                      "years": years, "scheme": "backward Euler, monthly steps",
                      "totals": f"every {coarsen}th cell in lat and lon, areas scaled to the selection's land area"})
    return out
