"""Extra map layers for the dashboard: parameter maps, ensemble spread, model-minus-observation at sites.

Everything here reads from a :class:`~proda_engine.products.whatif.WhatIfEngine` (already loaded,
shared by all dashboard sessions) and hands out xarray/pandas with ``units`` and ``long_name``:

* :func:`parameter_map` — one of the 21 parameters of a source, physical value on the (lat, lon) grid
  with the unit-interval theta as a 2-D coordinate (optionally under a what-if perturbation, so the
  map shows the parameters that were actually solved);
* :class:`MemberEnsemble` / :func:`load_member_thetas` — an ensemble product
  (``<world>/products/theta_<source>_members.nc`` with a ``member`` dim) solved per member through a
  lean what-if engine that shares the forcing, under the same multipliers as the ensemble-mean map:
  :meth:`MemberEnsemble.spread` (s.d. map), :meth:`MemberEnsemble.totals` (regional mean +- s.d. of the
  total) and :meth:`MemberEnsemble.summary` (+- s.d. of every card, the change and a profile);
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
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from proda_engine.data.parameter_files import align_theta_to_grid, read_parameter_file, resolve_closure
from proda_engine.grid import DEPTH_INTERVALS
from proda_engine.parameters import PARAMETER_INDEX, PARAMETER_NAMES, PARAMETERS, to_physical
from proda_engine.products.regions import Region, total_pg
from proda_engine.products.whatif import (
    MECHANISMS,
    CellResults,
    WhatIfEngine,
    apply_multipliers,
    perturb_physical,
    perturb_theta,
)

#: Dimension that holds ensemble members in ``theta_<source>_members.nc``.
MEMBER_DIM = "member"


# ---------------------------------------------------------------------------------------------
# parameter maps
# ---------------------------------------------------------------------------------------------


def parameter_map(engine: WhatIfEngine, name: str, source: str | None = None,
                  perturbation: Mapping[str, float] | None = None, *, region: Region | None = None,
                  space: str = "bulk") -> xr.DataArray:
    """Physical value of parameter ``name`` of ``source`` on the (lat, lon) grid (NaN off land).

    Exactly what the what-if solve used for the request (``space``, realised in ``region``): in bulk or
    multiplier space the source's physical values under the multipliers (:func:`apply_multipliers`; the V
    and Xi multipliers act on the transport rates and the environmental modifier, not on a parameter, so
    those parameters show unchanged); in theta space ``pi = lower + theta (upper - lower)`` after the
    perturbation and clamp. The unit-interval value is the 2-D coordinate ``theta``
    ((pi - lower)/(upper - lower), which may leave [0, 1]: CLM5's 10 m e-folding depth is outside the
    prior); attrs carry ``units``, ``long_name``, ``lower``, ``upper``, ``group`` and ``multiplier``.
    A per-layer parameter (default CLM5's sand-dependent f_S1S2) shows its column mean.
    """
    if name not in PARAMETER_INDEX:
        raise ValueError(f"unknown parameter {name!r}; expected one of {list(PARAMETER_NAMES)}")
    i = PARAMETER_INDEX[name]
    p = PARAMETERS[i]
    source = source or next(iter(engine.sources))
    if source not in engine.sources:
        raise ValueError(f"unknown parameter source {source!r}; expected one of {sorted(engine.sources)}")
    kind, key = engine.resolve(source, perturbation, space=space, region=region)
    src = engine.sources[source]
    mult = 1.0
    if kind == "theta" and not isinstance(src, str):
        theta_all = perturb_theta(src, key)  # the same perturbation and clamp as the solve
        phys = to_physical(theta_all, clamp=False)[:, i]
    else:
        base = engine.base_params(source)
        params = perturb_physical(base, key) if kind == "theta" else apply_multipliers(base, key)
        phys = params[name].detach().cpu().numpy()
        phys = phys.mean(0) if phys.ndim == 2 else phys
        if kind == "mult":
            mult = dict(zip(MECHANISMS, key)).get(p.group, 1.0)
    theta = (phys - p.lower) / (p.upper - p.lower)
    label = p.label or p.name
    return xr.DataArray(
        engine.to_grid(phys), dims=("lat", "lon"),
        coords={"lat": engine.lat, "lon": engine.lon,
                "theta": (("lat", "lon"), engine.to_grid(theta), {"units": "1", "long_name": f"theta of {name}"})},
        name=name,
        attrs={"units": p.units, "long_name": f"{label} ({p.doc})", "lower": p.lower, "upper": p.upper,
               "group": p.group, "parameter": name, "source": source, "multiplier": mult, "space": space,
               **engine.provenance()},
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


class MemberEnsemble:
    """The members of an ensemble product, solved like the ensemble-mean map.

    A lean :class:`WhatIfEngine` (shared forcing, only the environmental means cached per member) solves
    every member under the *same* request key as the mean map: in bulk space the multipliers that
    realised the request for the mean map in the selected region, so the +- s.d. is the spread of the
    members' response to one and the same change of the processes. Results are kept for the last few
    requests.
    """

    def __init__(self, engine: WhatIfEngine, thetas: list[np.ndarray], *, keep: int = 3) -> None:
        self.engine = engine
        self.names = [f"member{m}" for m in range(len(thetas))]
        self.members = WhatIfEngine(None, dict(zip(self.names, thetas)), grid=engine.grid, closure=engine.closure,
                                    fields=engine.fields, cache_size=keep * len(thetas), lean=True,
                                    parts_budget=96 * 1024**2 * len(thetas),
                                    cells=(engine.forcing, engine.cells, engine.lat, engine.lon))
        self._lock = threading.Lock()

    @property
    def n_members(self) -> int:
        return len(self.names)

    def results(self, solve_key: tuple[str, tuple[float, ...]] | None = None,
                should_stop=None) -> list[CellResults] | None:
        """Every member's solve for ``solve_key`` (:meth:`WhatIfEngine.resolve`; None: unperturbed).

        ``should_stop()`` is asked before each member's solve; True abandons the request (returns None),
        e.g. when a newer slider position has arrived.
        """
        key = solve_key or ("mult", (1.0,) * len(MECHANISMS))
        out = []
        with self._lock:
            for n in self.names:
                if should_stop is not None and should_stop():
                    return None
                out.append(self.members._results_for(n, key))
        return out

    def spread(self, depth: str, source: str, solve_key: tuple | None = None) -> xr.DataArray:
        """Across-member s.d. (ddof=1) of the SOC stock (land area, kg C m-2), on the (lat, lon) grid."""
        s = np.stack([r.stocks[_check_depth(depth)] for r in self.results(solve_key)])
        with np.errstate(invalid="ignore"):
            sd = np.nanstd(s, axis=0, ddof=1)
        return xr.DataArray(
            self.engine.to_grid(sd), dims=("lat", "lon"), coords={"lat": self.engine.lat, "lon": self.engine.lon},
            name="soc_stock_sd",
            attrs={"units": "kg C m-2", "long_name": f"ensemble s.d. of SOC stock {depth}",
                   "n_members": self.n_members, "source": source, "depth": depth, **self.engine.provenance()},
        )

    def totals(self, depth: str, region: Region | None) -> dict[str, float]:
        """Unperturbed regional total per member (Pg C): mean, s.d. (ddof=1) and the member count."""
        sel = self.engine.cell_mask(region)
        per = np.array([total_pg(r.stocks[_check_depth(depth)], self.engine.cell_area, sel) for r in self.results()])
        return {"mean_pg": float(per.mean()), "sd_pg": float(per.std(ddof=1)), "n_members": int(per.size)}

    def summary(self, solve_key: tuple | None, region: Region | None, depth: str,
                cell: int | None = None, should_stop=None) -> dict[str, object] | None:
        """Mean and s.d. over members of every regional number of :meth:`WhatIfEngine.region_summary`
        (``<name>_mean``, ``<name>_sd``), the realised bulk changes (``realised_<M>_mean/_sd``) and, for a
        cell index, the SOC profile (``profile_mean``, ``profile_sd``, ``profile_baseline_*``, g C m-3).
        None when ``should_stop()`` said so between two member solves."""
        _check_depth(depth)
        sel = self.engine.cell_mask(region)
        base = self.results(None, should_stop)
        pert = self.results(solve_key, should_stop) if base is not None else None
        if pert is None:
            return None
        rows = [self.engine.region_summary(p, b, sel, depth) for p, b in zip(pert, base)]
        real = [self.engine.realised_change(b, p, sel=sel) for p, b in zip(pert, base)]
        out: dict[str, object] = {"n_members": self.n_members}
        for k in rows[0]:
            v = np.array([r[k] for r in rows], float)
            out[f"{k}_mean"], out[f"{k}_sd"] = _mean_sd(v)
        for m in MECHANISMS:
            out[f"realised_{m}_mean"], out[f"realised_{m}_sd"] = _mean_sd(np.array([r[m] for r in real], float))
        if cell is not None:
            for name, res in (("profile", pert), ("profile_baseline", base)):
                prof = np.stack([r.soc[:, cell].astype(float) for r in res])
                with np.errstate(invalid="ignore"):
                    out[f"{name}_mean"] = np.nanmean(prof, 0)
                    out[f"{name}_sd"] = np.nanstd(prof, 0, ddof=1)
        return out


def _mean_sd(v: np.ndarray) -> tuple[float, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def _check_depth(depth: str) -> str:
    if depth not in DEPTH_INTERVALS:
        raise ValueError(f"unknown depth interval {depth!r}; expected one of {list(DEPTH_INTERVALS)}")
    return depth


class MemberCache:
    """Per-process cache of :class:`MemberEnsemble` keyed by (world, source, file stamp).

    The stamp (size, mtime) means a rewritten ensemble file is read again; a lock makes concurrent
    dashboard sessions wait for one load instead of each loading the same members.
    """

    def __init__(self) -> None:
        self._data: dict[tuple, MemberEnsemble] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, path: Path, engine: WhatIfEngine) -> MemberEnsemble:
        st = path.stat()
        full = (*key, st.st_size, st.st_mtime_ns)
        with self._lock:
            if full not in self._data:
                self._data = {k: v for k, v in self._data.items() if k[:len(key)] != key}
                self._data[full] = MemberEnsemble(engine, load_member_thetas(path, engine))
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


__all__ = ["MEMBER_DIM", "MemberCache", "MemberEnsemble", "load_member_thetas", "members_path", "parameter_map",
           "site_misfit"]
