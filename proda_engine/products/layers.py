"""Extra map layers for the dashboard: parameter maps, ensemble spread, model-minus-observation at sites.

Everything here reads from a :class:`~proda_engine.products.whatif.WhatIfEngine` (already loaded,
shared by all dashboard sessions) and hands out xarray/pandas with ``units`` and ``long_name``:

* :func:`parameter_map` — one of the 21 parameters of a source, physical value on the (lat, lon) grid
  with the unit-interval theta as a 2-D coordinate (optionally under a what-if perturbation, so the
  map shows the parameters that were actually solved);
* :class:`MemberStocks` / :func:`load_member_thetas` — an ensemble product
  (``<world>/products/theta_<source>_members.nc`` with a ``member`` dim) solved once per member through
  the engine's own solver, then :meth:`MemberStocks.spread` (s.d. map) and :meth:`MemberStocks.totals`
  (regional mean +- s.d. of the total);
* :func:`site_misfit` — per-site mean model-minus-observation from the horizon table of
  :meth:`~proda_engine.products.sites.SiteSet.comparison`.

>>> import numpy as np, pandas as pd
>>> rows = pd.DataFrame({"profile_id": [1, 1, 2], "lat": [0.0, 0.0, 5.0], "lon": [1.0, 1.0, 2.0],
...                      "depth_m": [0.1, 0.5, 0.2], "observed_kg_m3": [10.0, 4.0, 8.0],
...                      "modelled_kg_m3": [12.0, 4.0, 6.0]})
>>> site_misfit(rows)["misfit_kg_m3"].tolist()
[1.0, -2.0]
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from proda_engine.data.parameter_files import align_theta_to_grid, read_parameter_file, resolve_closure
from proda_engine.grid import DEPTH_INTERVALS
from proda_engine.parameters import PARAMETER_INDEX, PARAMETER_NAMES, PARAMETERS, to_physical
from proda_engine.products.regions import Region, total_pg
from proda_engine.products.whatif import MECHANISMS, WhatIfEngine, perturb_theta, perturbation_key

#: Dimension that holds ensemble members in ``theta_<source>_members.nc``.
MEMBER_DIM = "member"


# ---------------------------------------------------------------------------------------------
# parameter maps
# ---------------------------------------------------------------------------------------------


def _default_physical(engine: WhatIfEngine, index: int) -> np.ndarray:
    """(C,) physical value of the CLM5 default preset (no unit-interval form: efolding is 10 m)."""
    from proda_engine.physics import default_params

    v = default_params(engine.forcing)[PARAMETER_NAMES[index]].detach().cpu().numpy()
    # f_S1S2 is sand dependent per layer, (L, C): the column mean is what one map pixel can show
    return v.mean(0) if v.ndim == 2 else v


def parameter_map(engine: WhatIfEngine, name: str, source: str | None = None,
                  perturbation: Mapping[str, float] | None = None) -> xr.DataArray:
    """Physical value of parameter ``name`` of ``source`` on the (lat, lon) grid (NaN off land).

    ``pi = lower + theta (upper - lower)`` with theta after the engine's perturbation and clamp
    (``perturb_theta``), i.e. exactly what the what-if solve used. The unit-interval value is the
    2-D coordinate ``theta``; attrs carry ``units``, ``long_name``, ``lower``, ``upper``, ``group``.
    For the default-CLM5 preset the physical defaults are shown and theta = (pi - lower)/(upper - lower)
    may leave [0, 1] (CLM5's 10 m e-folding depth is outside the prior).
    """
    if name not in PARAMETER_INDEX:
        raise ValueError(f"unknown parameter {name!r}; expected one of {list(PARAMETER_NAMES)}")
    i = PARAMETER_INDEX[name]
    p = PARAMETERS[i]
    source = source or next(iter(engine.sources))
    if source not in engine.sources:
        raise ValueError(f"unknown parameter source {source!r}; expected one of {sorted(engine.sources)}")
    key = perturbation_key(perturbation)
    src = engine.sources[source]
    if isinstance(src, str):  # the CLM5 preset: physical values, perturbed like the engine does
        q = dict(zip(MECHANISMS, key)).get(p.group, 0.0)
        phys = _default_physical(engine, i) * (1.0 + q)
        theta = (phys - p.lower) / (p.upper - p.lower)
    else:
        theta_all = perturb_theta(src, key)  # the same perturbation and clamp as the solve
        theta = theta_all[:, i]
        phys = to_physical(theta_all, clamp=False)[:, i]
    label = p.label or p.name
    return xr.DataArray(
        engine.to_grid(phys), dims=("lat", "lon"),
        coords={"lat": engine.lat, "lon": engine.lon,
                "theta": (("lat", "lon"), engine.to_grid(theta), {"units": "1", "long_name": f"theta of {name}"})},
        name=name,
        attrs={"units": p.units, "long_name": f"{label} ({p.doc})", "lower": p.lower, "upper": p.upper,
               "group": p.group, "parameter": name, "source": source},
    )


# ---------------------------------------------------------------------------------------------
# ensembles
# ---------------------------------------------------------------------------------------------


def members_path(root: Path, source: str) -> Path:
    """Where an ensemble product of ``source`` lives in a world folder."""
    return Path(root) / "products" / f"theta_{source}_members.nc"


def load_member_thetas(path: Path, engine: WhatIfEngine) -> list[np.ndarray]:
    """(C, 21) unit-interval theta per member from a (member, parameter, lat, lon) netCDF.

    Read through :func:`~proda_engine.data.parameter_files.read_parameter_file` (names, longitudes);
    members recorded with a closure other than the engine's are refused.
    """
    theta = read_parameter_file(path)
    resolve_closure(theta, None, default=engine.closure)
    if MEMBER_DIM not in theta.dims:
        raise ValueError(f"{path}: 'theta' has no {MEMBER_DIM!r} dimension (dims {theta.dims})")
    theta = align_theta_to_grid(theta, engine.lat, engine.lon, target="the world grid")
    out = []
    for m in range(theta.sizes[MEMBER_DIM]):
        flat = np.asarray(theta.isel({MEMBER_DIM: m}).transpose("lat", "lon", "parameter").values,
                          dtype=float).reshape(-1, len(PARAMETER_NAMES))[engine.cells]
        if not np.isfinite(flat).all():
            raise ValueError(f"{path}: member {m} has land cells without parameters")
        out.append(flat)
    if len(out) < 2:
        raise ValueError(f"{path}: an ensemble needs at least 2 members, found {len(out)}")
    return out


@dataclass
class MemberStocks:
    """Unperturbed SOC stocks of every ensemble member, (M, C) per depth interval (kg C m-2).

    Solved once per member with the engine's solver (a throw-away engine that shares the forcing, so
    the members never evict the dashboard's cached what-if results).
    """

    engine: WhatIfEngine
    stocks: dict[str, np.ndarray]

    @classmethod
    def solve(cls, engine: WhatIfEngine, thetas: list[np.ndarray]) -> MemberStocks:
        member_engine = WhatIfEngine(None, {f"member{m}": th for m, th in enumerate(thetas)}, grid=engine.grid,
                                     closure=engine.closure, fields=engine.fields, cache_size=1,
                                     cells=(engine.forcing, engine.cells, engine.lat, engine.lon))
        stocks: dict[str, list[np.ndarray]] = {d: [] for d in DEPTH_INTERVALS}
        for m in range(len(thetas)):
            res = member_engine.cell_results(f"member{m}")
            for d in DEPTH_INTERVALS:
                stocks[d].append(res.stocks[d])
            member_engine._parts.clear()  # per-member Xi/I parts are never reused; free them
        return cls(engine, {d: np.stack(v) for d, v in stocks.items()})

    @property
    def n_members(self) -> int:
        return next(iter(self.stocks.values())).shape[0]

    def spread(self, depth: str, source: str) -> xr.DataArray:
        """Across-member s.d. (ddof=1) of the SOC stock, on the (lat, lon) grid."""
        s = self.stocks[_check_depth(depth)]
        sd = np.nanstd(s, axis=0, ddof=1)
        return xr.DataArray(
            self.engine.to_grid(sd), dims=("lat", "lon"), coords={"lat": self.engine.lat, "lon": self.engine.lon},
            name="soc_stock_sd",
            attrs={"units": "kg C m-2", "long_name": f"ensemble s.d. of SOC stock {depth}",
                   "n_members": self.n_members, "source": source, "depth": depth},
        )

    def totals(self, depth: str, region: Region | None) -> dict[str, float]:
        """Regional total per member (Pg C): mean, s.d. (ddof=1) and the member count."""
        m = self.engine.mask(region)
        area = self.engine.area
        per = np.array([total_pg(self.engine.to_grid(s), area, m) for s in self.stocks[_check_depth(depth)]])
        return {"mean_pg": float(per.mean()), "sd_pg": float(per.std(ddof=1)), "n_members": int(per.size)}


def _check_depth(depth: str) -> str:
    if depth not in DEPTH_INTERVALS:
        raise ValueError(f"unknown depth interval {depth!r}; expected one of {list(DEPTH_INTERVALS)}")
    return depth


class MemberCache:
    """Per-process cache of :class:`MemberStocks` keyed by (world, source, file stamp).

    The stamp (size, mtime) means a rewritten ensemble file is re-solved; a lock makes concurrent
    dashboard sessions wait for one solve instead of each solving the same members.
    """

    def __init__(self) -> None:
        self._data: dict[tuple, MemberStocks] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, path: Path, engine: WhatIfEngine) -> MemberStocks:
        st = path.stat()
        full = (*key, st.st_size, st.st_mtime_ns)
        with self._lock:
            if full not in self._data:
                self._data = {k: v for k, v in self._data.items() if k[:len(key)] != key}
                self._data[full] = MemberStocks.solve(engine, load_member_thetas(path, engine))
            return self._data[full]


# ---------------------------------------------------------------------------------------------
# model minus observation at sites
# ---------------------------------------------------------------------------------------------


def site_misfit(rows: pd.DataFrame) -> pd.DataFrame:
    """Per profile: lat, lon, horizon count, mean observed, mean modelled and mean model-minus-observation.

    ``rows`` is the horizon table of ``SiteSet.comparison`` (kg C m-3). Horizons without a modelled
    value (a failed cell) are left out; a profile with none left is dropped.
    """
    cols = ["profile_id", "lat", "lon", "n_horizons", "observed_kg_m3", "modelled_kg_m3", "misfit_kg_m3"]
    ok = rows[np.isfinite(rows["modelled_kg_m3"].to_numpy(float)) & np.isfinite(rows["observed_kg_m3"].to_numpy(float))]
    if ok.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    ok = ok.assign(misfit_kg_m3=ok["modelled_kg_m3"] - ok["observed_kg_m3"])
    g = ok.groupby("profile_id", sort=False)
    out = g.agg(lat=("lat", "first"), lon=("lon", "first"), n_horizons=("depth_m", "size"),
                observed_kg_m3=("observed_kg_m3", "mean"), modelled_kg_m3=("modelled_kg_m3", "mean"),
                misfit_kg_m3=("misfit_kg_m3", "mean")).reset_index()
    out.attrs = {"units": "kg C m-3", "long_name": "mean model minus observation over the profile's horizons"}
    return out[cols]


__all__ = ["MEMBER_DIM", "MemberCache", "MemberStocks", "load_member_thetas", "members_path", "parameter_map",
           "site_misfit"]
