"""Front door for climate scenarios (issue 7): ``scenario(...)`` returns an xarray Dataset.

The lead re-exports :func:`scenario` from :mod:`proda_engine.api`.

>>> ds = scenario(world="tiny", warming=2.0, npp=0.1, years=3, source="midpoint", coarsen=1)  # doctest: +SKIP
>>> float(ds["soc_change_global"].sel(source="midpoint").isel(year=-1))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import xarray as xr

from proda_engine.products.scenarios import Scenario, world_scenario

__all__ = ["Scenario", "scenario"]


def scenario(world: str | None = None, *, warming: float = 0.0, npp: float = 0.0, water: float = 0.0,
             amplification: float = 0.0, years: int = 100, ramp_years: int | None = None,
             thaw_per_kelvin: float = 0.15, source: str | Sequence[str] | None = None, coarsen: int = 4,
             seasonal: bool = False, map_years: Sequence[int] = (25, 50), equilibrium: bool = True) -> xr.Dataset:
    """Transient SOC response of a world to a ramped climate change, per parameter source.

    Args:
        world: world name (default ``$PRODA_WORLD`` or ``default``).
        warming: soil warming at the end of the ramp, K; ``amplification`` scales it with latitude.
        npp: relative change of carbon input (0.1 = +10 %); ``water``: relative change of W_SCALAR.
        years: simulated years; ``ramp_years``: linear ramp length (default ``years``).
        source: a parameter source or a list (default: the world's first source); ``"homogeneous_mean"``
            is the across-cell mean PRODA theta.
        coarsen: every n-th cell in latitude and longitude (1 = all cells; totals are area-extrapolated).
        seasonal: monthly operators (slower, with a drift-removing control run) or annual-mean operators.
    Returns:
        Dataset of :func:`proda_engine.products.scenarios.world_scenario` (Pg C trajectories, regional
        totals, maps in kg C m-2) with provenance attributes.
    """
    from proda_engine import api

    eng = api.world_engine(world)
    if source is None:
        sources = [next(iter(eng.sources))]
    else:
        sources = [source] if isinstance(source, str) else list(source)
    sc = Scenario(warming=warming, amplification=amplification, water=water, npp=npp,
                  ramp_years=years if ramp_years is None else ramp_years, thaw_per_kelvin=thaw_per_kelvin)
    ds = world_scenario(eng, sc, years, sources, coarsen=coarsen, seasonal=seasonal, map_years=map_years,
                        equilibrium=equilibrium)
    try:
        from importlib.metadata import version

        ver = version("proda_engine")
    except Exception:  # not installed as a distribution (editable checkouts still are)
        ver = "unknown"
    ds.attrs.update({"world": world or api.world_name(), "proda_engine_version": ver,
                     "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                     "title": "PRODA climate scenario: transient SOC change"})
    return ds
