"""The front door: small, documented functions returning xarray/pandas (never tensors).

The dashboard and notebooks use only this module. Per-process state (the current world, the what-if
engine of each world, site sets, ensemble members, sensitivity curves) lives one layer below, in
:mod:`proda_engine.session`, which this module and :mod:`proda_engine.scenario_api` both use;
:func:`scenario` is :func:`proda_engine.scenario_api.scenario`.

>>> from proda_engine import api
>>> api.parameter_table()[0]["name"]
'diffus'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from os import PathLike

import numpy as np
import pandas as pd
import xarray as xr

from proda_engine import __version__
from proda_engine.grid import DEPTH_INTERVALS
from proda_engine.parameters import GROUP_LABELS, physical_table
from proda_engine.products.reference import ReferenceComparison
from proda_engine.products.regions import Region
from proda_engine.products.whatif import (
    BULK_SYMBOL,
    BULK_TOLERANCE,
    MECHANISM_LABELS,
    WhatIfResult,
)
from proda_engine.scenario_api import scenario
from proda_engine.session import (
    SOURCE_LABELS,
    members,
    regions,
    sensitivity_curves,
    site_set,
    use_catalog,
    world_engine,
    world_name,
)

__all__ = [
    "BULK_SYMBOL",
    "BULK_TOLERANCE",
    "DEPTH_INTERVALS",
    "GROUP_LABELS",
    "MECHANISM_LABELS",
    "Region",
    "WhatIfResult",
    "__version__",
    "box_region",
    "coastlines",
    "depth_intervals",
    "detail_map",
    "ensemble_spread",
    "ensemble_totals",
    "ensemble_what_if",
    "has_ensemble",
    "mechanisms",
    "observed_sites",
    "parameter_map",
    "parameter_sources",
    "parameter_table",
    "point_query",
    "polygon_region",
    "profile",
    "provenance",
    "read_forcing",
    "reference_comparison",
    "reference_map",
    "reference_table",
    "regions",
    "scenario",
    "sensitivity",
    "simulate",
    "site_comparison",
    "site_misfit",
    "use_catalog",
    "what_if",
    "world_engine",
    "world_info",
    "world_name",
]


def parameter_table(theta: np.ndarray | None = None) -> list[dict[str, object]]:
    """The 21-parameter table (name, bounds, CLM5 default, units, group, doc[, value at theta])."""
    return physical_table(theta)


def read_forcing(paths: str | PathLike | Sequence[str | PathLike], *, n_layers: int = 20,
                 source_name: str | None = None, npp_split: Mapping[str, float] | None = None,
                 grid: str = "clm5_20") -> xr.Dataset:
    """Read CLM5-history-style forcing into the normalised forcing Dataset (validated).

    ``n_layers`` model layers are kept (20 for ``clm5_20``); ``source_name`` is stored in
    ``attrs['source_name']``; ``npp_split`` gives the fractions of NPP going to ``input_cwd`` and
    ``input_litter1..3`` (sum 1) when the file has NPP only; ``grid``'s dz integrates CLM5's ACC vectors.
    See :func:`proda_engine.data.read_forcing`.
    """
    from proda_engine.data import read_forcing as _read

    return _read(paths, n_layers=n_layers, source_name=source_name, npp_split=npp_split, grid=grid)


def simulate(
    forcing: xr.Dataset | str | PathLike | Sequence[str | PathLike],
    theta: xr.DataArray | np.ndarray | str | PathLike | None = None,
    *,
    preset: str | None = None,
    closure: str | None = None,
    grid: str | None = None,
    include_pools: bool = False,
    device: str = "cpu",
    float32: bool = False,
) -> xr.Dataset:
    """Steady state for every valid cell of ``forcing`` (a normalised Dataset or CLM5-style files).

    Parameters are unit-interval ``theta`` (dims ``parameter`` or spatial + ``parameter``; or a
    parameter file, read by :func:`proda_engine.data.read_parameter_file`), or a preset:
    ``midpoint`` (theta = 0.5, the MCMC start) or ``default`` (CLM5 defaults, sand-dependent S1
    fractions). ``closure``/``grid`` None: ``conservative``/``clm5_20``, and a ``theta`` whose
    attributes record another ``closure``/``soil_grid`` is refused; given explicitly, they are used
    (with a logged warning on a mismatch). Returns SOC by layer (g C m-3), stocks by depth interval
    (kg C m-2), turnover (yr), the six bulk diagnostics, respiration, the mass-balance residual and
    a per-cell status; attributes ``closure``, ``soil_grid`` and ``lat_lon_grid``.
    """
    import torch

    from proda_engine.data.parameter_files import read_parameter_file, resolve_closure, resolve_soil_grid
    from proda_engine.grid import get_grid
    from proda_engine.products.maps import steady_state_dataset

    if isinstance(theta, (str, PathLike)):
        theta = read_parameter_file(theta)
    recorded = theta.attrs if isinstance(theta, xr.DataArray) else None
    closure = resolve_closure(recorded, closure)
    grid = resolve_soil_grid(recorded, grid)
    ds = forcing if isinstance(forcing, xr.Dataset) else read_forcing(forcing, n_layers=get_grid(grid).n_layers)
    return steady_state_dataset(ds, theta, preset=preset, grid=get_grid(grid), closure=closure,
                                include_pools=include_pools, device=device,
                                dtype=torch.float32 if float32 else torch.float64)


# ---------------------------------------------------------------------------------------------
# The default world and fast what-if (the dashboard's door). world_name, use_catalog, world_engine and
# regions are the session's (proda_engine.session), re-exported here.
# ---------------------------------------------------------------------------------------------


def world_info(world: str | None = None) -> dict[str, str]:
    """Which world and data a number comes from: name, kind (builtin twin or catalog), data description."""
    from proda_engine.data.worlds import resolve_world

    return resolve_world(world or world_name()).provenance()


def parameter_sources(world: str | None = None) -> dict[str, str]:
    """Available parameter sources of a world: name -> label (first is the default)."""
    eng = world_engine(world)
    return {k: SOURCE_LABELS[k] for k in SOURCE_LABELS if k in eng.sources}


def mechanisms() -> dict[str, str]:
    """Mechanisms the what-if changes: code -> label of the bulk process (A, K, Xi, V, I, NPP)."""
    return dict(MECHANISM_LABELS)


#: What the numbers of each parameter source are, by the kind of world (``{world}`` is its name).
_SOURCE_NOTES: dict[str, dict[str, str]] = {
    "builtin": {
        "proda_e2e": "PRODA trained on the synthetic twin's simulated profiles: a test of the method on a "
                     "synthetic world, not estimates for the real Earth",
        "proda_two_step": "PRODA (two-step) trained on the synthetic twin's simulated profiles: not the real Earth",
        "batch_da": "one parameter set fitted to the synthetic twin's simulated profiles: not the real Earth",
        "twin_truth": "the known parameter field that generated the synthetic twin: not the real Earth",
        "default_clm5": "CLM5 default parameters on the synthetic twin world's forcing",
        "midpoint": "prior-midpoint parameters on the synthetic twin world's forcing",
    },
    "catalog": {
        "proda_e2e": "PRODA trained on the measured profiles of catalog world {world}",
        "proda_two_step": "PRODA (two-step) trained on the measured profiles of catalog world {world}",
        "batch_da": "one parameter set fitted to the measured profiles of catalog world {world}",
        "default_clm5": "CLM5 default parameters on catalog world {world}'s forcing",
        "midpoint": "prior-midpoint parameters on catalog world {world}'s forcing",
    },
}


def provenance(source: str | None = None, world: str | None = None) -> dict[str, str]:
    """Where the numbers of ``source`` on ``world`` come from: ``world``, ``world_kind`` (builtin synthetic
    twin | catalog), ``data_kind``, ``source``, ``source_label`` and ``note`` (one sentence for card
    titles, map titles and downloads, so twin numbers are never shown as the real Earth's)."""
    eng = world_engine(world)
    source = source or next(iter(eng.sources))
    info = eng.provenance() or {"world": world or world_name(), "world_kind": "builtin",
                                "data_kind": "synthetic twin"}
    kind = info.get("world_kind", "builtin")
    note = _SOURCE_NOTES.get(kind, {}).get(source, "{source} parameters on world {world}")
    info.update(source=source, source_label=SOURCE_LABELS.get(source, source),
                note=note.format(world=repr(info.get("world", "")), source=source))
    return info


def depth_intervals() -> list[str]:
    """Depth intervals of stock products: 0-30cm, 0-100cm, 0-200cm, whole."""
    return list(DEPTH_INTERVALS)


def box_region(lon_min: float, lon_max: float, lat_min: float, lat_max: float) -> Region:
    """A lat/lon box region (e.g. drawn on the map)."""
    return Region("box", (float(lon_min), float(lon_max), float(lat_min), float(lat_max)),
                  f"box {lon_min:.1f}..{lon_max:.1f}E, {lat_min:.1f}..{lat_max:.1f}N")


def polygon_region(geojson: str, label: str = "polygon", *, other_geometries: str = "skip") -> Region:
    """A region from GeoJSON text (Polygon / MultiPolygon / Feature / FeatureCollection, lon/lat).

    Validated at once by :func:`proda_engine.products.regions.parse_geojson` (rings of at least four
    finite lon/lat positions); ``ValueError`` says what is wrong. ``other_geometries="skip"`` (default,
    as before) leaves Points/Lines of a collection out of the mask; ``"error"`` refuses them (the
    dashboard's upload does).
    """
    from proda_engine.products.regions import parse_geojson

    parse_geojson(geojson, other_geometries=other_geometries)  # fail early, with the one parser's messages
    return Region("polygon", geojson, label)


def _region(region: str | Region, world: str | None) -> Region:
    return regions(world)[region] if isinstance(region, str) else region


def what_if(perturbation: dict[str, float] | None = None, *, region: str | Region = "globe",
            depth: str = "0-100cm", source: str | None = None, world: str | None = None,
            space: str = "bulk") -> WhatIfResult:
    """Change bulk processes, re-solve every cell and return maps and regional totals.

    ``{"K": 0.1}`` raises the baseline decomposition rate K̄ of the region by 10 % (faster decay, less
    SOC); ``{"A": 0.05}`` the microbial CUE by 5 %; likewise ``Xi`` (ξ̄), ``V`` (V̄), ``I`` (Ī), ``NPP``
    (carbon input). The engine finds the multiplier that realises each change in ``region`` (within
    :data:`BULK_TOLERANCE`) and reports it: ``result.realised`` (every bulk process's relative change in
    the region), ``result.multipliers``, ``totals["bulk_converged"]``. ``space="theta"`` is the spec's
    unit-interval perturbation (theta_i <- theta_i (1 + q), what ``proda sensitivity`` perturbs);
    ``space="multiplier"`` applies the multipliers 1 + value directly.

    Maps: ``soc_stock``, ``soc_stock_baseline``, ``soc_change`` (kg C m-2, coarse-fragment corrected),
    ``turnover`` (yr) and ``cue`` of the depth interval. Totals: Pg C (one convention with ``proda map``:
    ``totals["totals_convention"]``), change vs baseline, turnover and CUE mean/median (unweighted over
    cells, as the spec) and area-weighted mean, and where the numbers come from (``world``,
    ``data_kind``, ``note``: see :func:`provenance`).
    """
    eng = world_engine(world)
    res = eng.what_if(perturbation, region=_region(region, world), depth=depth, source=source, space=space)
    info = provenance(res.totals["source"], world)
    res.totals.update(source_label=info["source_label"], note=info["note"])
    res.maps.attrs.update(source_label=info["source_label"], note=info["note"])
    return res


def sensitivity(*, region: str | Region = "globe", depth: str = "whole", source: str | None = None,
                world: str | None = None) -> dict[str, dict[str, float]]:
    """The spec §(j) "+1 % bulk-process" sensitivity of the regional SOC total of ``depth``.

    Exactly ``proda sensitivity --region ... --depth ...``: theta_i <- theta_i (1 + q) at the spec's 11
    levels per group, elasticity b of ln S against ln(1 + R) with R the region's mean relative change of
    the bulk process, +1 % effect S0 (1.01^b - 1). Per ensemble member when the world holds an ensemble
    for ``source`` (mean and s.d. over members), else one member. The first call per source solves
    61 steady states per member (cached on disk); later calls for any region or depth only aggregate.

    Returns mechanism -> ``plus1pct_pg`` (+1 % effect, Pg C), ``plus1pct_sd_pg`` (s.d. over members, NaN
    for one), ``elasticity``/``elasticity_sd``, ``stock_pg`` (S_G(0) over the cells valid at every level),
    ``baseline_pg`` (over every valid cell: the cards' total), ``plus1pct_turnover_yr`` (mean turnover of the
    interval) and its s.d., ``change_for_double`` and ``change_for_plus10pct`` (relative process changes),
    ``n_members``, ``n_cells``, and where the numbers come from (``source``, ``world``, ``data_kind``, ``note``).
    """
    from proda_engine.products.sensitivity import sensitivity_from_curves

    eng = world_engine(world)
    source = source or next(iter(eng.sources))
    curves = sensitivity_curves(world, source)
    sel = eng.cell_mask(_region(region, world))
    res = sensitivity_from_curves(curves, area=eng.cell_area, cf=eng.cf, cell_mask=sel, depth=depth)
    info = provenance(source, world)
    where = {"source": source, "world": info.get("world", ""), "data_kind": info.get("data_kind", ""),
             "note": info.get("note", "")}
    out = {}
    for _, r in res.summary().iterrows():
        out[str(r["group"])] = {**where,
            "plus1pct_pg": float(r["plus1pct_stock_pg_mean"]), "plus1pct_sd_pg": float(r["plus1pct_stock_pg_sd"]),
            "elasticity": float(r["elasticity_stock_mean"]), "elasticity_sd": float(r["elasticity_stock_sd"]),
            "stock_pg": float(r["stock_pg_mean"]), "baseline_pg": float(r["baseline_stock_pg_mean"]),
            "plus1pct_turnover_yr": float(r["plus1pct_turnover_yr_mean"]),
            "plus1pct_turnover_sd_yr": float(r["plus1pct_turnover_yr_sd"]),
            "change_for_double": float(r["change_for_double_stock_mean"]),
            "change_for_plus10pct": float(r["change_for_plus10pct_stock_mean"]),
            "n_members": int(r["n_members"]), "n_cells": int(r["n_cells_mean"]),
        }
    return out


def profile(lat: float, lon: float, *, perturbation: dict[str, float] | None = None, source: str | None = None,
            world: str | None = None, region: str | Region = "globe", space: str = "bulk") -> xr.Dataset:
    """SOC density by depth at the valid cell nearest to (lat, lon) (a bulk request realised in ``region``)."""
    return world_engine(world).profile(lat, lon, source=source, perturbation=perturbation,
                                       region=_region(region, world), space=space)


def observed_sites(world: str | None = None) -> pd.DataFrame:
    """Observed profiles of a world: profile_id, lat, lon, n_layers, mean observed topsoil SOC (kg C m-3)."""
    return site_set(world).profiles.drop(columns="cell")


def site_comparison(*, source: str | None = None, region: str | Region = "globe",
                    perturbation: dict[str, float] | None = None, world: str | None = None,
                    max_sites: int | None = 3000, space: str = "bulk") -> tuple[pd.DataFrame, dict[str, float]]:
    """Observed vs modelled SOC per horizon (kg C m-3) at sites in a region, with pooled metrics
    (RMSE, MAE, Nash–Sutcliffe E, ...); the model is the site's nearest land cell, PCHIP in depth."""
    return site_set(world).comparison(world_engine(world), source=source, perturbation=perturbation,
                                       region=_region(region, world), max_sites=max_sites, space=space)


def coastlines() -> list[np.ndarray]:
    """Offline Natural Earth coastlines (110m) as (n, 2) lon/lat arrays, split at the antimeridian."""
    from proda_engine.data.outlines import load_coastlines

    return load_coastlines()


# ---------------------------------------------------------------------------------------------
# Extra map layers: parameters, ensemble spread, model-minus-observation at sites
# ---------------------------------------------------------------------------------------------


def parameter_map(name: str, source: str | None = None, world: str | None = None, *,
                  perturbation: dict[str, float] | None = None, region: str | Region = "globe",
                  space: str = "bulk") -> xr.DataArray:
    """One of the 21 parameters of ``source`` on the (lat, lon) grid: the physical value (``units``,
    ``long_name``, ``lower``, ``upper``, ``group``, ``multiplier`` in attrs) with the unit-interval ``theta``
    as a 2-D coordinate; under ``perturbation`` the values the what-if solve used. NaN off land."""
    from proda_engine.products.layers import parameter_map as _pmap

    return _pmap(world_engine(world), name, source, perturbation, region=_region(region, world), space=space)


def has_ensemble(source: str | None = None, world: str | None = None) -> bool:
    """Whether the world holds an ensemble product for ``source`` (``products/theta_<source>_members.nc``)."""
    from proda_engine.products.layers import members_path

    eng = world_engine(world)
    return eng.world is not None and members_path(eng.world.root, source or next(iter(eng.sources))).exists()


def ensemble_spread(depth: str, source: str | None = None, world: str | None = None, *,
                    perturbation: dict[str, float] | None = None, region: str | Region = "globe",
                    space: str = "bulk") -> xr.DataArray | None:
    """Across-member s.d. of the SOC stock map (kg C m-2) under ``perturbation`` (unperturbed by default)
    when the world has an ensemble product for ``source``; None otherwise."""
    ms = members(source, world)
    if ms is None:
        return None
    eng = world_engine(world)
    source = source or next(iter(eng.sources))
    key = eng.resolve(source, perturbation, space=space, region=_region(region, world))
    return ms.spread(depth, source, key)


def ensemble_totals(*, region: str | Region = "globe", depth: str = "0-100cm", source: str | None = None,
                    world: str | None = None) -> dict[str, float] | None:
    """Regional SOC total over the ensemble members (Pg C): ``mean_pg``, ``sd_pg``, ``n_members``;
    None when the world has no ensemble for ``source``."""
    ms = members(source, world)
    if ms is None:
        return None
    return ms.totals(depth, _region(region, world))


def ensemble_what_if(perturbation: dict[str, float] | None = None, *, region: str | Region = "globe",
                     depth: str = "0-100cm", source: str | None = None, world: str | None = None,
                     space: str = "bulk", lat: float | None = None, lon: float | None = None,
                     should_stop: Callable[[], bool] | None = None) -> dict | None:
    """+- s.d. over the ensemble members for everything :func:`what_if` reports, or None without an ensemble.

    Every member is solved under the request the ensemble-mean map was solved under (in bulk space: the
    multipliers that realised the change for the mean map in ``region``). Returns ``<name>_mean`` and
    ``<name>_sd`` for ``total_pg``, ``baseline_pg``, ``change_pg``, ``change_pct``, the turnover and CUE
    statistics and ``realised_<M>``; with ``lat``/``lon`` also the SOC profile at the nearest cell
    (``profile_mean``/``profile_sd`` and ``profile_baseline_mean``/``_sd``, g C m-3, at ``depth_m``).
    ``should_stop()`` is asked between member solves (True: give up and return None).
    """
    ms = members(source, world)
    if ms is None:
        return None
    eng = world_engine(world)
    source = source or next(iter(eng.sources))
    reg = _region(region, world)
    key = eng.resolve(source, perturbation, space=space, region=reg)
    cell = eng.nearest_cell(lat, lon) if lat is not None and lon is not None else None
    out = ms.summary(key, reg, depth, cell, should_stop=should_stop)
    if out is not None and cell is not None:
        out["depth_m"] = np.asarray(eng.grid.z_node)
    if out is not None:
        out.update({k: v for k, v in provenance(source, world).items() if k in ("world", "data_kind", "note")})
    return out


def site_misfit(source: str | None = None, perturbation: dict[str, float] | None = None, *,
                region: str | Region = "globe", world: str | None = None,
                max_sites: int | None = 3000) -> pd.DataFrame:
    """Per observed site in ``region``: profile_id, lat, lon, n_horizons, mean observed and modelled SOC
    and their mean difference ``misfit_kg_m3`` (model minus observation, kg C m-3), from
    :func:`site_comparison`."""
    from proda_engine.products.layers import site_misfit as _misfit

    rows, _ = site_comparison(source=source, region=region, perturbation=perturbation, world=world,
                              max_sites=max_sites)
    return _misfit(rows)


# ---------------------------------------------------------------------------------------------
# Reference map (Sanderman, Hengl & Fiske 2017, shipped in assets/reference/)


def reference_map(depth: str = "0-100cm", name: str | None = None) -> xr.DataArray:
    """The shipped reference SOC stock map (Sanderman, Hengl & Fiske 2017, PNAS 114:9575; or another
    catalog ``reference_map`` source ``name``) for ``depth`` (0-30cm, 0-100cm, 0-200cm): kg C m-2 on its own
    0.5-degree grid, NaN where it has no data; ``attrs`` carry ``label`` and ``citation``."""
    from proda_engine.products.reference import reference_map as _reference_map

    return _reference_map(depth, name)


def reference_comparison(source: str | None = None, depth: str = "0-100cm", region: str | Region = "globe", *,
                         world: str | None = None, name: str | None = None) -> ReferenceComparison:
    """A parameter source's unperturbed SOC stock map against the reference map on the world's grid.

    Returns a :class:`~proda_engine.products.reference.ReferenceComparison`: ``maps`` (``model``,
    ``reference``, ``difference`` = model - reference, kg C m-2, NaN outside ``region``), ``totals`` (Pg C of
    both over the cells both have, difference, r, RMSE, bias, area-weighted means) and ``table`` (the same
    per named region: globe, CONUS, continents, Köppen and land-cover groups). Totals use the products'
    convention (full cell area; stocks coarse-fragment corrected as in :func:`what_if`).
    """
    from proda_engine.products.reference import compare_stock_map
    from proda_engine.products.reference import reference_map as _reference_map

    ref = _reference_map(depth, name)
    eng = world_engine(world)
    regs = regions(world)
    reg = regs[region] if isinstance(region, str) else region
    stock = eng.what_if({}, depth=depth, source=source).maps["soc_stock"].values
    out = compare_stock_map(stock, eng.lat, eng.lon, ref, region=reg, regions=regs, fields=eng.fields)
    out.attrs.update(source=source or next(iter(eng.sources)), world=world or world_name())
    return out


def reference_table(*, world: str | None = None, name: str | None = None,
                    sources: Sequence[str] | None = None) -> pd.DataFrame:
    """Every parameter source against the reference map: one row per source, depth interval and region
    (``proda evaluate --reference``)."""
    from proda_engine.products.reference import guess_intervals, open_reference

    intervals = [d for d in guess_intervals(open_reference(name)) if d in DEPTH_INTERVALS]
    parts = []
    for src in sources or list(parameter_sources(world)):
        for depth in intervals:
            rc = reference_comparison(src, depth, world=world, name=name)
            parts.append(rc.table.assign(source=src, interval=depth, reference=rc.totals["reference"]))
    tab = pd.concat(parts, ignore_index=True)
    first = ["source", "interval", "region", "label", "reference"]
    return tab[first + [c for c in tab.columns if c not in first]]


# ---------------------------------------------------------------------------------------------
# maps: point query, view-extent detail (issue 17)
# ---------------------------------------------------------------------------------------------


def point_query(lat: float, lon: float, *, variable: str = "soc_stock", depth: str = "0-100cm",
                perturbation: dict[str, float] | None = None, source: str | None = None,
                world: str | None = None, region: str | Region = "globe", radius_km: float = 250.0,
                max_sites: int = 8, space: str = "bulk"):
    """What a tap on the map shows at the valid cell nearest to (lat, lon): the map variable's value
    (``soc_stock``, ``soc_change``, ``turnover``, ``cue`` of ``depth``) +- the ensemble s.d. (NaN without
    an ensemble), the SOC profile (perturbed, baseline, members' s.d.; g C m-3) and the observed profiles
    within ``radius_km`` with their misfit (model - observation, kg C m-3). A bulk request is realised in
    ``region``, as on the map. Returns a :class:`proda_engine.products.pointquery.PointQuery`."""
    from proda_engine.products.pointquery import point_query as _point_query

    eng = world_engine(world)
    try:
        sites = site_set(world)
    except (FileNotFoundError, ValueError):  # a world without observed profiles: the rest still answers
        sites = None
    return _point_query(eng, lat, lon, variable=variable, depth=depth, source=source, perturbation=perturbation,
                        region=_region(region, world), members=members(source, world), sites=sites,
                        radius_km=radius_km, max_sites=max_sites, space=space)


#: A view with more 0.05° cells than this is refused by :func:`detail_map` (the map asks to zoom in further).
DETAIL_MAX_CELLS = 250_000


def detail_map(bbox: tuple[float, float, float, float], *, variable: str = "soc_stock", depth: str = "0-100cm",
               source: str | None = None, perturbation: dict[str, float] | None = None,
               multipliers: Mapping[str, float] | None = None, region: str | Region = "globe",
               world: str | None = None, max_cells: int = DETAIL_MAX_CELLS) -> xr.DataArray:
    """A what-if map variable at 0.05° over the view ``bbox = (lon0, lon1, lat0, lat1)`` only (issue 17).

    The fine forcing is **derived**, not observed: each coarse cell's forcing and parameters are refined by
    nearest neighbour and given synthetic, deterministic sub-grid variability (carbon inputs x lognormal,
    soil temperature - lapse rate x a sub-grid elevation anomaly; :mod:`proda_engine.products.highres`). The
    what-if is applied with the same bulk multipliers the coarse what-if realised: ``multipliers`` when given
    (e.g. ``api.what_if(...).multipliers``), else those of ``perturbation`` realised in ``region`` (as
    :func:`what_if`; theta-space requests have no multipliers and are refused). Variables: ``soc_stock``,
    ``soc_change``, ``turnover`` of ``depth``; ``cue`` of the whole profile. Tiles are cached (LRU, bounded
    bytes), so panning back or stepping back to a slider position is free.

    Returns a (lat, lon) float32 DataArray with ``units``, ``resolution_deg``, ``n_cells`` (valid cells),
    ``forcing`` (how it was derived), ``provenance`` (one honest sentence), the world, source and multipliers.
    Raises ValueError for a view of more than ``max_cells`` fine cells ("zoom in further").
    """
    from proda_engine.products.gridded import GridWorld
    from proda_engine.products.highres import view_detail
    from proda_engine.products.world import WorldCells

    eng = world_engine(world)
    src = source or next(iter(eng.sources))
    if src not in eng.sources:
        raise ValueError(f"unknown parameter source {src!r}; expected one of {sorted(eng.sources)}")
    if multipliers is None:
        kind, mult = eng.resolve(src, perturbation, region=_region(region, world))
        if kind != "mult":
            raise ValueError("0.05° detail applies bulk multipliers; a theta-space request has none")
    else:
        mult = multipliers
    name = eng.world.name if eng.world is not None else (world or world_name())
    gw = GridWorld(name=name, cells=WorldCells(eng.forcing, eng.cells, eng.lat, eng.lon), fields=eng.fields,
                   spec=eng.world)
    da = view_detail(gw, eng.sources[src], tuple(bbox), variable=variable, depth=depth, multipliers=mult,
                     grid=eng.grid, closure=eng.closure, max_cells=max_cells)
    info = provenance(src, world)
    da.attrs.update({**eng.provenance(), "source": src, "source_label": info["source_label"], "depth": depth,
                     "note": info["note"]})
    da.attrs["provenance"] = (f"0.05° detail of world {name!r}, parameters {info['source_label']} (nearest coarse "
                              f"cell); forcing DERIVED from the world's {eng.lat.size}x{eng.lon.size} grid: "
                              f"{da.attrs['forcing']}. Not observed at 0.05°.")
    return da
