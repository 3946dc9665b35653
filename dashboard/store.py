"""The data store: asks ``proda_engine.api`` for results, caches what is shared, holds session results.

No widgets live here. Two layers:

* module-level functions with per-process caches for things every session shares and that never
  change while the server runs (named regions, colour limits, cropped coastlines, sensitivities);
* :class:`ResultStore`, one per session, which turns a :class:`~dashboard.state.DashboardState` into
  the current what-if result, tapped profile and sensitivity, and records errors as a message
  instead of raising (a failing request must never kill the session).

Solves on the globe take ~1-2 s in the engine, so when served the store computes in a worker thread
(``asyncio.to_thread``) and keeps the server's event loop free for other sessions; requests that
arrive while a solve runs are coalesced into one (only the newest selection is solved).
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import json
import logging
import threading
from dataclasses import dataclass

import numpy as np
import param
import xarray as xr

from dashboard.state import BOX_PREFIX, MECHANISMS, POLYGON_PREFIX, VARIABLES, DashboardState, box_label, parse_box_key
from proda_engine import api

log = logging.getLogger(__name__)

#: Largest GeoJSON upload accepted (bytes). Parsing happens in memory; nothing is written to disk.
MAX_UPLOAD_BYTES = 2 * 1024 * 1024

#: One solve at a time per process: the engine's caches are plain dicts and two concurrent solves
#: on two cores only slow each other down.
ENGINE_LOCK = threading.Lock()

#: Half-width of the change colour scale as a fraction of the baseline stock's 98th percentile:
#: CUE +10 % already changes stocks by ~30 % in the twin world, so a narrower scale saturates at once.
CHANGE_SCALE = 0.5


# ---------------------------------------------------------------------------------------------
# shared, per-process caches
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def named_regions(world: str | None) -> dict[str, api.Region]:
    """``api.regions(world)``, once per process."""
    return api.regions(world)


@functools.lru_cache(maxsize=8)
def world_extent(world: str | None) -> tuple[float, float, float, float]:
    """Outer edges (lon_min, lon_max, lat_min, lat_max) of the world's grid, from a baseline map."""
    maps = baseline(world, None, "0-100cm").maps
    lon, lat = maps["lon"].values, maps["lat"].values
    dlon = float(np.abs(np.diff(lon)).mean()) if lon.size > 1 else 0.5
    dlat = float(np.abs(np.diff(lat)).mean()) if lat.size > 1 else 0.5
    return (float(lon.min() - dlon / 2), float(lon.max() + dlon / 2),
            float(lat.min() - dlat / 2), float(lat.max() + dlat / 2))


@functools.lru_cache(maxsize=64)
def baseline(world: str | None, source: str | None, depth: str) -> api.WhatIfResult:
    """The unperturbed result for the globe (the reference for colour limits)."""
    with ENGINE_LOCK:
        return api.what_if(None, region="globe", depth=depth, source=source, world=world)


@functools.lru_cache(maxsize=256)
def color_limits(world: str | None, source: str | None, depth: str, variable: str) -> tuple[float, float]:
    """Fixed colour limits per (source, depth, variable) so slider moves stay comparable.

    Stocks, turnover and CUE use the baseline's 2-98 percentiles; the change map is symmetric
    around zero with half-width ``CHANGE_SCALE`` x the baseline stock's 98th percentile.
    """
    maps = baseline(world, source, depth).maps
    if variable == "soc_change":
        hi = float(np.nanpercentile(maps["soc_stock_baseline"].values, 98)) * CHANGE_SCALE
        hi = hi if np.isfinite(hi) and hi > 0 else 1.0
        return (-hi, hi)
    values = maps[variable].values
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(values, [2, 98]))
    if hi <= lo:  # a constant field (e.g. one cell): widen so the colour bar still works
        lo, hi = lo - 0.5 * abs(lo or 1.0), hi + 0.5 * abs(hi or 1.0)
    return (lo, hi)


@functools.lru_cache(maxsize=8)
def coastline_paths(world: str | None) -> tuple[np.ndarray, ...]:
    """Offline coastlines cropped to the world's extent (plus a margin), so small test worlds do not
    stretch the map to the whole globe and fewer vertices travel to the browser."""
    lon0, lon1, lat0, lat1 = world_extent(world)
    margin = 2.0
    out = []
    for line in api.coastlines():
        inside = ((line[:, 0] >= lon0 - margin) & (line[:, 0] <= lon1 + margin)
                  & (line[:, 1] >= lat0 - margin) & (line[:, 1] <= lat1 + margin))
        if not inside.any():
            continue
        # keep runs of consecutive inside points, so cropped lines do not jump across the map
        idx = np.flatnonzero(inside)
        for run in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1):
            if run.size >= 2:
                out.append(np.asarray(line[run], dtype=float))
    return tuple(out)


@functools.lru_cache(maxsize=8)
def observed_sites(world: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lon, lat, observed topsoil SOC kg C m-3) of the world's observed profiles, once per process."""
    sites = api.observed_sites(world)
    return (sites["lon"].to_numpy(float), sites["lat"].to_numpy(float),
            sites["obs_topsoil_kg_m3"].to_numpy(float))


@functools.lru_cache(maxsize=64)
def sensitivity(world: str | None, region: api.Region, depth: str, source: str | None) -> dict[str, dict[str, float]]:
    """``api.sensitivity`` (12 solves), cached per process by (region, depth, source).

    Deliberately *not* under :data:`ENGINE_LOCK`: on the globe it takes tens of seconds, and holding
    the lock that long would freeze every slider. The engine's read paths tolerate this (see the
    report: an engine-side lock is requested).
    """
    return api.sensitivity(region=region, depth=depth, source=source, world=world)


# ---------------------------------------------------------------------------------------------
# regions from keys and uploads
# ---------------------------------------------------------------------------------------------


def resolve_region(key: str, world: str | None, polygons: dict[str, api.Region] | None = None) -> api.Region:
    """Region object for a state key: a named region, ``box:...`` or an uploaded ``polygon:<n>``."""
    if key.startswith(BOX_PREFIX):
        return api.box_region(*parse_box_key(key))
    if key.startswith(POLYGON_PREFIX):
        if polygons and key in polygons:
            return polygons[key]
        raise ValueError("this uploaded polygon belongs to another session; upload the GeoJSON again")
    regions = named_regions(world)
    if key not in regions:
        raise ValueError(f"unknown region {key!r}; choose one of the list")
    return regions[key]


def parse_geojson_upload(data: bytes | None, filename: str | None = None) -> api.Region:
    """Validate an uploaded GeoJSON (in memory) and turn it into a polygon region.

    Raises ``ValueError`` with a message fit for the user: too large, not UTF-8 JSON, or no
    (Multi)Polygon geometry.
    """
    if not data:
        raise ValueError("the uploaded file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ValueError(f"GeoJSON too large ({len(data) / 1e6:.1f} MB); the limit is {MAX_UPLOAD_BYTES / 1e6:.0f} MB")
    try:
        text = data.decode("utf-8")
        obj = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a GeoJSON file: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError("not a GeoJSON object")
    if obj.get("type") == "FeatureCollection":
        geoms = [f.get("geometry") or {} for f in obj.get("features", []) if isinstance(f, dict)]
    elif obj.get("type") == "Feature":
        geoms = [obj.get("geometry") or {}]
    else:
        geoms = [obj]
    if not geoms or not all(g.get("type") in ("Polygon", "MultiPolygon") for g in geoms):
        raise ValueError("the GeoJSON must contain Polygon or MultiPolygon geometries (lon/lat)")
    label = (filename or "polygon").rsplit(".", 1)[0][:40] or "polygon"
    return api.polygon_region(text, f"upload {label}")


# ---------------------------------------------------------------------------------------------
# take-away products (all in memory)
# ---------------------------------------------------------------------------------------------


def netcdf_bytes(result: api.WhatIfResult) -> bytes:
    """The current maps as netCDF-4 bytes, with totals and the perturbation in the attributes."""
    ds = result.maps.copy()
    ds.attrs.update({f"perturbation_{k}": float(v) for k, v in result.perturbation.items()})
    ds.attrs.update({f"total_{k}": v for k, v in result.totals.items() if isinstance(v, int | float)})
    ds.attrs["title"] = "PRODA what-if (api.what_if)"
    return bytes(ds.to_netcdf())


def csv_bytes(result: api.WhatIfResult) -> bytes:
    """Totals and the perturbation as a two-column CSV (key, value)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["key", "value"])
    for k, v in result.totals.items():
        writer.writerow([k, v])
    for k, v in result.perturbation.items():
        writer.writerow([f"perturbation_{k}", v])
    return buf.getvalue().encode("utf-8")


def png_bytes(result: api.WhatIfResult, variable: str, clim: tuple[float, float],
              coastlines: tuple[np.ndarray, ...] = ()) -> bytes:
    """The current map rendered with matplotlib (Agg, no pyplot: thread-safe, no global figures)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    da = result.maps[variable]
    lon, lat = da["lon"].values, da["lat"].values
    dlon = float(np.abs(np.diff(lon)).mean()) if lon.size > 1 else 0.5
    dlat = float(np.abs(np.diff(lat)).mean()) if lat.size > 1 else 0.5
    extent = (lon.min() - dlon / 2, lon.max() + dlon / 2, lat.min() - dlat / 2, lat.max() + dlat / 2)
    width = 10.0
    aspect = max(0.3, min(1.5, (extent[3] - extent[2]) / (extent[1] - extent[0])))
    fig = Figure(figsize=(width, width * aspect * 0.85 + 0.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = "RdBu_r" if variable == "soc_change" else "viridis"
    im = ax.imshow(np.asarray(da.values, dtype=float), origin="lower" if lat[0] < lat[-1] else "upper",
                   extent=extent, cmap=cmap, vmin=clim[0], vmax=clim[1], interpolation="nearest")
    for line in coastlines:
        ax.plot(line[:, 0], line[:, 1], color="0.2", lw=0.5)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    t = result.totals
    pert = ", ".join(f"{k} {100 * v:+.0f} %" for k, v in result.perturbation.items() if v) or "no perturbation"
    ax.set_title(f"{da.attrs.get('long_name', variable)} — {t['region']}, {t['source']}\n{pert}", fontsize=10)
    fig.colorbar(im, ax=ax, label=f"{da.attrs.get('long_name', variable)} ({da.attrs.get('units', '')})",
                 shrink=0.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# per-session results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """Everything one what-if solve depends on (a snapshot of the state, hashable)."""

    region: api.Region
    depth: str
    source: str | None
    perturbation: tuple[tuple[str, float], ...]
    tap: tuple[float, float] | None


@dataclass(frozen=True)
class Outcome:
    result: api.WhatIfResult
    profile: xr.Dataset | None
    profile_baseline: xr.Dataset | None
    comparison: object = None  # (rows DataFrame, metrics dict) or None when the world has no observations


class ResultStore(param.Parameterized):
    """Current outputs of one session, recomputed whenever the state changes.

    Views watch the output parameters (``result``, ``profile``, ``sensitivity``, ``message``); each
    output has exactly one writer, so views never race each other.
    """

    result = param.ClassSelector(class_=api.WhatIfResult, default=None, doc="Current what-if result.")
    profile = param.ClassSelector(class_=xr.Dataset, default=None, doc="Perturbed SOC profile at the tap.")
    profile_baseline = param.ClassSelector(class_=xr.Dataset, default=None, doc="Baseline SOC profile at the tap.")
    comparison = param.Parameter(default=None, doc="(observed-vs-modelled rows, pooled metrics) in the region.")
    tap = param.Tuple(default=None, length=2, allow_None=True, doc="(lon, lat) of the last tap on the map.")
    sensitivity = param.Dict(default=None, allow_None=True, doc="api.sensitivity for region/depth/source.")
    sensitivity_key = param.Parameter(default=None, doc="(region, depth, source) the sensitivity belongs to.")
    busy = param.Boolean(default=False, doc="A solve is running.")
    message = param.String(default="", doc="Last error, for the alert pane and a notification.")
    version = param.Integer(default=0, doc="Counts applied results (tests wait on it).")

    def __init__(self, state: DashboardState, world: str | None = None, background: bool = False, **params) -> None:
        super().__init__(**params)
        self.state = state
        self.world = world
        #: compute in a worker thread (served) or inline (tests, notebooks)
        self.background = background
        #: polygons uploaded in this session: key -> Region (never shared with other sessions)
        self.polygons: dict[str, api.Region] = {}
        self._requested = 0  # generation of the newest request
        self._running = False
        self._sens_running = False
        state.param.watch(self._on_selection, ["region", "depth", "source", *MECHANISMS])
        # the first result is computed inline even when served, so the first page shows a map
        self._requested += 1
        self._refresh_inline()

    # -- requests --------------------------------------------------------------------------
    def _request(self) -> Request:
        s = self.state
        return Request(
            region=resolve_region(s.region, self.world, self.polygons),
            depth=s.depth,
            source=s.source,
            perturbation=tuple(sorted(s.perturbation().items())),
            tap=self.tap,
        )

    def _compute(self, req: Request) -> Outcome:
        pert = dict(req.perturbation)
        with ENGINE_LOCK:
            result = api.what_if(pert, region=req.region, depth=req.depth, source=req.source, world=self.world)
            prof = prof0 = None
            if req.tap is not None:
                lon, lat = req.tap
                prof = api.profile(lat, lon, perturbation=pert, source=req.source, world=self.world)
                prof0 = api.profile(lat, lon, perturbation=None, source=req.source, world=self.world)
            try:  # the same cached solve at the observed sites: cheap, but optional
                comparison = api.site_comparison(source=req.source, region=req.region, perturbation=pert,
                                                 world=self.world, max_sites=1500)
            except (FileNotFoundError, ValueError) as exc:
                log.info("no site comparison: %s", exc)
                comparison = None
        return Outcome(result, prof, prof0, comparison)

    def _apply(self, out: Outcome) -> None:
        self.param.update(result=out.result, profile=out.profile, profile_baseline=out.profile_baseline,
                          comparison=out.comparison, message="", version=self.version + 1)

    def fail(self, exc: BaseException, what: str = "request") -> None:
        """Record a failure as a user-facing message (the session keeps running)."""
        log.warning("dashboard %s failed: %s", what, exc, exc_info=exc)
        self.message = f"{what} failed: {exc}"

    # -- triggers --------------------------------------------------------------------------
    def _on_selection(self, *events: param.parameterized.Event) -> None:
        self.refresh()

    def set_tap(self, lon: float | None, lat: float | None) -> None:
        """A tap on the map: remember it and compute that cell's profile."""
        if lon is None or lat is None:
            return
        self.tap = (float(lon), float(lat))
        self.refresh()

    def refresh(self) -> None:
        """Recompute for the current state: inline, or (when served) in a worker thread."""
        self._requested += 1
        if self.background:
            param.parameterized.async_executor(self._refresh_async)
        else:
            self._refresh_inline()

    def _refresh_inline(self) -> None:
        try:
            self._apply(self._compute(self._request()))
        except Exception as exc:  # any failure becomes a message
            self.fail(exc, "what-if")
            return
        self.refresh_sensitivity()

    async def _refresh_async(self) -> None:
        # Coalesce: if a solve is running, it will pick up the newest request when it finishes.
        if self._running:
            return
        self._running = True
        self.busy = True
        try:
            while True:
                generation = self._requested
                try:
                    out = await asyncio.to_thread(self._compute, self._request())
                except Exception as exc:
                    if generation == self._requested:
                        self.fail(exc, "what-if")
                        break
                    continue
                if generation == self._requested:
                    self._apply(out)
                    break
        finally:
            self._running = False
            self.busy = False
        if not self.message:
            self.refresh_sensitivity()

    # -- sensitivity (slow on the globe: only when region/depth/source change) -------------
    def _sens_key(self) -> tuple[api.Region, str, str | None] | None:
        if self.result is None:
            return None
        return (self._request().region, self.state.depth, self.state.source)

    def refresh_sensitivity(self) -> None:
        try:
            key = self._sens_key()
        except Exception as exc:
            self.fail(exc, "sensitivity")
            return
        if key is None or key == self.sensitivity_key:
            return
        if not self.background:
            try:
                self.param.update(sensitivity=sensitivity(self.world, *key), sensitivity_key=key)
            except Exception as exc:
                self.fail(exc, "sensitivity")
            return
        param.parameterized.async_executor(self._sensitivity_async)

    async def _sensitivity_async(self) -> None:
        if self._sens_running:
            return
        self._sens_running = True
        try:
            while True:
                key = self._sens_key()
                if key is None or key == self.sensitivity_key:
                    break
                # show "computing" instead of a stale chart for the previous region
                self.param.update(sensitivity=None, sensitivity_key=None)
                try:
                    sens = await asyncio.to_thread(sensitivity, self.world, *key)
                except Exception as exc:
                    self.fail(exc, "sensitivity")
                    break
                if key == self._sens_key():
                    self.param.update(sensitivity=sens, sensitivity_key=key)
        finally:
            self._sens_running = False

    # -- uploads ---------------------------------------------------------------------------
    def add_polygon(self, data: bytes | None, filename: str | None) -> str | None:
        """Parse an uploaded GeoJSON and select it as the region; errors become the message."""
        try:
            region = parse_geojson_upload(data, filename)
        except ValueError as exc:
            self.fail(exc, "GeoJSON upload")
            return None
        key = f"{POLYGON_PREFIX}{len(self.polygons) + 1}"
        self.polygons[key] = region
        self.state.add_region_choice(key, region.label)
        return key

    def select_box(self, lon_min: float, lat_min: float, lon_max: float, lat_max: float) -> None:
        """A box drawn on the map becomes the region (clipped to the globe)."""
        from dashboard.state import box_key

        lon_min, lon_max = max(-180.0, lon_min), min(180.0, lon_max)
        lat_min, lat_max = max(-90.0, lat_min), min(90.0, lat_max)
        if lon_max <= lon_min or lat_max <= lat_min:
            return
        key = box_key(lon_min, lon_max, lat_min, lat_max)
        self.state.add_region_choice(key, box_label(key))

    # -- convenience for views -------------------------------------------------------------
    def clim(self, variable: str | None = None) -> tuple[float, float]:
        s = self.state
        return color_limits(self.world, s.source, s.depth, variable or s.variable)

    def variable_label(self, variable: str | None = None) -> str:
        variable = variable or self.state.variable
        return {v: k for k, v in VARIABLES.items()}[variable]
