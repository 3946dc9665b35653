"""Front door for climate scenarios (issue 7): ``scenario(...)`` returns an xarray Dataset.

:mod:`proda_engine.api` re-exports :func:`scenario`. Both front doors stand on the world session
(:mod:`proda_engine.session`: the cached what-if engine and named regions of each world); this module
never imports :mod:`proda_engine.api`.

>>> ds = scenario(world="tiny", warming=2.0, npp=0.1, years=3, source="midpoint", coarsen=1)  # doctest: +SKIP
>>> float(ds["soc_change_global"].sel(source="midpoint").isel(year=-1))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from os import PathLike
from typing import Annotated, Any, ClassVar, Self

import xarray as xr
from pydantic import BeforeValidator, Field, model_validator

from proda_engine import session
from proda_engine.config import Expect, NonNegativeInt, PathStr, PositiveInt, RunConfig
from proda_engine.products.regions import Region
from proda_engine.products.scenarios import Scenario, auto_coarsen, world_scenario

__all__ = ["Scenario", "ScenarioConfig", "scenario"]


def _source_names(value: Any) -> Any:
    """``"a,b"`` or ``["a,b", "c"]`` (``--source`` repeated or comma-separated) -> ``["a", "b", "c"]``."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in (item.split(",") if isinstance(item, str) else [item]) if x != ""]
    return value


class ScenarioConfig(RunConfig):
    """A scenario run as a validated, saveable configuration (``proda scenario --config run.yaml``).

    Fields are the keyword arguments of :func:`scenario`; ``forcing_files`` (CLM5-style netCDF files) or
    ``forcing_source`` (a ``forcing_series`` source of the data catalog, ``catalog`` its file; default the
    project's ``data_catalog.yaml``) replace the warming / npp / water changes by a user forcing series.
    """

    label: ClassVar[str] = "scenario config"
    value_template: ClassVar[str] = "{label}: {key} must be {expected}, found {found!r}"
    unknown_template: ClassVar[str] = "unknown scenario setting(s) {unknown}; expected some of {valid}"

    world: str | None = Field(None, description="world name (default $PRODA_WORLD or 'default')")
    warming: float = Field(0.0, description="soil warming at the end of the ramp, K")
    npp: Annotated[float, Field(gt=-1.0), Expect("> -1 (a relative change)")] = Field(
        0.0, description="relative change of carbon input (0.1 = +10 %)")
    water: float = Field(0.0, description="relative change of the water scalar")
    amplification: float = Field(0.0, description="latitude amplification a: dT (1 + a (lat/90)^2)")
    years: PositiveInt = Field(100, description="simulated years")
    ramp_years: NonNegativeInt | None = Field(None, description="linear ramp length (default: years)")
    thaw_per_kelvin: float = Field(0.15, description="permafrost active-layer deepening, m/K")
    source: Annotated[list[str] | None, BeforeValidator(_source_names)] = Field(
        None, description="parameter source(s), repeat or comma-separate (e.g. proda_e2e,batch_da,default_clm5,"
        "homogeneous_mean; default: the world's first source)")
    coarsen: PositiveInt | None = Field(4, description="every n-th cell in lat and lon (1 = all cells)")
    max_cells: PositiveInt | None = Field(None, description="with coarsen None: the finest lattice with at most "
                                          "this many cells in the region")
    seasonal: bool = Field(False, description="monthly operators (default: annual-mean operators)")
    map_years: Annotated[list[int], Field(strict=False)] = Field(
        default_factory=lambda: [25, 50], description="years with stored maps (+ the last)")
    equilibrium: bool = Field(True, description="also the steady state under the full change")
    region: str | None = Field(None, description="a named region of the world (default: the globe)")
    forcing_files: list[PathStr] | None = Field(
        None, description="user forcing series in CLM5/CMIP-style netCDF, grouped by calendar year (monthly, "
        "yearly or multi-year files; or one 12-month file per year in order); replaces the deltas")
    forcing_source: str | None = Field(None, description="the same from a 'kind: forcing_series' source of the "
                                       "data catalog (see catalog)")
    catalog: PathStr | None = Field(None, description="data catalog YAML for world and forcing_source (default "
                                    "$PRODA_CATALOG or data_catalog.yaml)")
    ensemble: bool = Field(False, description="also run every member of sources with an ensemble product (adds "
                           "the spread)")

    @model_validator(mode="after")
    def _one_forcing(self) -> Self:
        if self.forcing_files and self.forcing_source:
            raise ValueError("scenario config: give forcing_files or forcing_source, not both")
        return self


def scenario(world: str | None = None, *, warming: float = 0.0, npp: float = 0.0, water: float = 0.0,
             amplification: float = 0.0, years: int = 100, ramp_years: int | None = None,
             thaw_per_kelvin: float = 0.15, source: str | Sequence[str] | None = None, coarsen: int | None = 4,
             seasonal: bool = False, map_years: Sequence[int] = (25, 50), equilibrium: bool = True,
             region: str | Region | None = None, max_cells: int | None = None,
             progress: Callable[[float], None] | None = None,
             forcing_files: Sequence[str | PathLike] | None = None, forcing_source: str | None = None,
             catalog: str | PathLike | None = None, ensemble: bool = False) -> xr.Dataset:
    """Transient SOC response of a world to a ramped climate change, per parameter source.

    Args:
        world: world name (default ``$PRODA_WORLD`` or ``default``).
        warming: soil warming at the end of the ramp, K; ``amplification`` scales it with latitude.
        npp: relative change of carbon input (0.1 = +10 %); ``water``: relative change of W_SCALAR.
        years: simulated years; ``ramp_years``: linear ramp length (default ``years``).
        source: a parameter source or a list (default: the world's first source); ``"homogeneous_mean"``
            is the across-cell mean PRODA theta.
        coarsen: every n-th cell in latitude and longitude (1 = all cells; totals are area-extrapolated).
            None with ``max_cells``: the finest lattice with at most ``max_cells`` cells in the region.
        seasonal: monthly operators (slower, with a drift-removing control run) or annual-mean operators.
        region: a named region of :func:`proda_engine.api.regions` or a Region (box, polygon): run only
            its cells; ``soc_change_global`` is then the region's total. Default: the globe.
        progress: called with the fraction done (0..1).
        forcing_files: a user forcing series in CLM5/CMIP-style netCDF (monthly, yearly or multi-year
            files, grouped by calendar year; or one 12-month file per year in order; the last year
            repeats) instead of the warming / npp / water changes.
        forcing_source: the same from a ``kind: forcing_series`` entry of the data catalog ``catalog``
            (default: ``$PRODA_CATALOG`` or the project's ``data_catalog.yaml``).
        ensemble: also run every member of each source that has an ensemble product
            (``theta_<source>_members.nc``, see ``proda train --members``); adds the member runs
            (``<source>#m<k>``) and ``soc_change_global_ensemble_sd`` (ensemble_source, year), Pg C.
    Returns:
        Dataset of :func:`proda_engine.products.scenarios.world_scenario` (Pg C trajectories, regional
        totals, maps in kg C m-2) with provenance attributes.
    """
    eng = session.world_engine(world)
    reg = session.regions(world)[region] if isinstance(region, str) else region
    within = None if reg is None else eng.mask(reg).reshape(-1)[eng.cells]
    if within is not None and not within.any():
        raise ValueError(f"region {reg.label!r} holds no land cell of the world")
    if coarsen is None:
        coarsen = auto_coarsen(eng, max_cells or 8000, within)
    if source is None:
        sources = [next(iter(eng.sources))]
    else:
        sources = [source] if isinstance(source, str) else list(source)
    sc = Scenario(warming=warming, amplification=amplification, water=water, npp=npp,
                  ramp_years=years if ramp_years is None else ramp_years, thaw_per_kelvin=thaw_per_kelvin)
    extra, groups = {}, {}
    if ensemble:
        from proda_engine.products.layers import load_member_thetas, members_path

        root = eng.world.root
        for src in list(sources):
            path = members_path(root, src)
            if path.exists():
                thetas = load_member_thetas(path, eng)
                names = [f"{src}#m{k}" for k in range(len(thetas))]
                extra.update(zip(names, thetas, strict=True))
                groups[src] = names
                sources += names
    series = None
    if forcing_source is not None:
        if forcing_files:
            raise ValueError("give forcing_files or forcing_source, not both")
        series = _catalog_series(forcing_source, catalog, eng.forcing.n_layers)
    ds = world_scenario(eng, sc, years, sources, coarsen=coarsen, seasonal=seasonal, map_years=map_years,
                        equilibrium=equilibrium, within=within, region_label=reg.label if reg else "globe",
                        progress=progress, forcing_files=forcing_files, forcing_series=series,
                        extra_sources=extra or None)
    if groups:
        sd = xr.concat([ds["soc_change_global"].sel(source=names).std("source", ddof=1)
                        .expand_dims(ensemble_source=[src]) for src, names in groups.items()], dim="ensemble_source")
        ds["soc_change_global_ensemble_sd"] = sd.assign_attrs(
            units="Pg C", long_name="ensemble s.d. of the global SOC change (members of the source)")
    from proda_engine.data.writers import version_attrs

    ds.attrs.update({"world": world or session.world_name(), **version_attrs(),
                     "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                     "title": "PRODA climate scenario: transient SOC change"})
    return ds


def _catalog_series(name: str, catalog: str | PathLike | None, n_layers: int):
    """Open catalog source ``name`` as a forcing series; any other kind is an error naming it."""
    from proda_engine.data import load_catalog

    cat = load_catalog(catalog) if catalog is not None else load_catalog()
    src = cat.source(name)
    if src.kind != "forcing_series":
        raise ValueError(f"catalog source {name!r} ({cat.path or 'catalog'}): expected kind 'forcing_series' "
                         f"for a scenario's forcing, found {src.kind!r}")
    return cat.open(name, n_layers=n_layers)
