"""The data store: asks ``proda_engine.api`` for results, caches what is shared, holds session results.

No widgets live here. Two layers:

* module-level functions with per-process caches for things every session shares and that never
  change while the server runs (named regions, colour limits, cropped coastlines, sensitivities);
* :class:`ResultStore`, one per session, which turns a :class:`~dashboard.state.DashboardState` into
  the current what-if result, tapped profile and sensitivity, and records errors as a message
  instead of raising (a failing request must never kill the session).

A new solve of the globe takes ~0.1-0.5 s in the engine (longer for a new source), so when served the
store hands every engine call to the process's runner (:data:`dashboard.runner.RUNNER`: latest-only per
session, results shared across sessions, slider solves and ensemble members on two cores) and keeps the
server's event loop free for other sessions; requests that arrive while a solve runs are coalesced into
one (only the newest selection is solved).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import itertools
import json
import logging
import re
import threading
from dataclasses import dataclass

import numpy as np
import param
import xarray as xr

from dashboard.runner import RUNNER, Superseded
from dashboard.safe import plain
from dashboard.state import (
    BOX_PREFIX,
    MECHANISMS,
    MISFIT_VARIABLE,
    PARAM_PREFIX,
    POLYGON_PREFIX,
    REFERENCE_DIFF_VARIABLE,
    REFERENCE_VARIABLE,
    SPREAD_VARIABLE,
    DashboardState,
    box_label,
    parse_box_key,
    variable_label,
)
from proda_engine import api

log = logging.getLogger(__name__)

#: Largest GeoJSON upload accepted (bytes). Parsing happens in memory; nothing is written to disk.
MAX_UPLOAD_BYTES = 2 * 1024 * 1024

#: Deepest JSON nesting accepted in an upload (a MultiPolygon in a FeatureCollection is 7 levels).
MAX_JSON_DEPTH = 32

#: One call at a time for the main engine's other users (comparisons, parameter maps, misfits, the
#: reference); the what-if solves and profiles no longer take it (the engine locks its own caches).
#: The ensemble members are a separate engine with its own lock
#: (:class:`~proda_engine.products.layers.MemberEnsemble`) and run beside it.
ENGINE_LOCK = threading.Lock()

#: Sites used for the misfit layer and its colour limits (all of the default world's ~2,000 fit easily).
MAX_MISFIT_SITES = 5000

#: Seconds without a new request before the ensemble members are solved (phase 2): while a user steps a
#: slider, member solves (~0.2 s each on the globe) would otherwise hold up the next step's solve.
UNCERTAINTY_DELAY = 1.0

#: Half-width of the change colour scale as a fraction of the baseline stock's 98th percentile:
#: CUE +10 % already changes stocks by ~30 % in the twin world, so a narrower scale saturates at once.
CHANGE_SCALE = 0.5


#: Session ids for the runner's slots (one per ResultStore).
_SESSION_IDS = itertools.count(1)


def held():
    """``pn.io.hold()`` on the current session document when served (one message for a batch of
    changes), a no-op without a session (inline use in tests and notebooks)."""
    import panel as pn

    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        return contextlib.nullcontext()
    return pn.io.hold(doc)


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
    if variable.startswith(PARAM_PREFIX):  # the source's unperturbed parameter field
        return _percentile_limits(parameter_field(world, source, variable[len(PARAM_PREFIX):]).values)
    if variable == SPREAD_VARIABLE:
        sd = ensemble_spread(world, source, depth)
        return (0.0, _percentile_limits(sd.values)[1]) if sd is not None else (0.0, 1.0)
    if variable in (REFERENCE_VARIABLE, REFERENCE_DIFF_VARIABLE):
        rc = reference_comparison(world, source, depth)
        if rc is None:
            return color_limits(world, source, depth if depth in REFERENCE_DEPTHS else "0-100cm", "soc_stock")
        if variable == REFERENCE_VARIABLE:
            return _percentile_limits(rc.maps["reference"].values)
        d = rc.maps["difference"].values
        hi = float(np.nanpercentile(np.abs(d), 98)) if np.isfinite(d).any() else 1.0
        return (-hi, hi) if hi > 0 else (-1.0, 1.0)
    if variable == MISFIT_VARIABLE:  # symmetric: the sign is the point of this layer
        with ENGINE_LOCK:
            mis = api.site_misfit(source, None, world=world, max_sites=MAX_MISFIT_SITES)["misfit_kg_m3"].to_numpy()
        mis = mis[np.isfinite(mis)]
        hi = float(np.percentile(np.abs(mis), 95)) if mis.size else 1.0
        hi = hi if hi > 0 else 1.0
        return (-hi, hi)
    maps = baseline(world, source, depth).maps
    if variable == "soc_change":
        hi = float(np.nanpercentile(maps["soc_stock_baseline"].values, 98)) * CHANGE_SCALE
        hi = hi if np.isfinite(hi) and hi > 0 else 1.0
        return (-hi, hi)
    return _percentile_limits(maps[variable].values)


def _percentile_limits(values: np.ndarray) -> tuple[float, float]:
    """2-98 percentiles of the finite values; a constant field is widened so the colour bar works."""
    values = np.asarray(values)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(values, [2, 98]))
    if hi <= lo:  # a constant field (e.g. one cell)
        lo, hi = lo - 0.5 * abs(lo or 1.0), hi + 0.5 * abs(hi or 1.0)
    return (lo, hi)


#: Depth intervals the reference product covers.
REFERENCE_DEPTHS = ("0-30cm", "0-100cm", "0-200cm")


@functools.lru_cache(maxsize=32)
def reference_comparison(world: str | None, source: str | None, depth: str):
    """``api.reference_comparison`` on the globe, once per process; None for depths the reference lacks."""
    if depth not in REFERENCE_DEPTHS:
        return None
    with ENGINE_LOCK:
        return api.reference_comparison(source, depth, "globe", world=world)


@functools.lru_cache(maxsize=64)
def parameter_field(world: str | None, source: str | None, name: str) -> xr.DataArray:
    """The unperturbed parameter map of a source (colour limits, and the map at zero perturbation)."""
    with ENGINE_LOCK:
        return api.parameter_map(name, source, world)


@functools.lru_cache(maxsize=16)
def has_ensemble(world: str | None, source: str | None) -> bool:
    """Whether the world has an ensemble for ``source`` (decides whether the spread is offered)."""
    return api.has_ensemble(source, world)


@functools.lru_cache(maxsize=32)
def ensemble_spread(world: str | None, source: str | None, depth: str) -> xr.DataArray | None:
    """``api.ensemble_spread`` once per process (the first call solves every member)."""
    with ENGINE_LOCK:
        return api.ensemble_spread(depth, source, world)


@functools.lru_cache(maxsize=8)
def coastline_polyline(world: str | None) -> np.ndarray:
    """The cropped coastlines as one (N, 2) lon/lat array with NaN rows between segments.

    One geometry instead of ~130: HoloViews builds a dataset per path of a multi-path element,
    which cost ~2 s per plot on the globe; Bokeh draws the NaN rows as breaks in the line."""
    parts = []
    for line in coastline_paths(world):
        parts.extend([line, np.full((1, 2), np.nan)])
    return np.concatenate(parts[:-1]) if parts else np.empty((0, 2))


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
    """``api.sensitivity`` (the spec's method, exactly ``proda sensitivity``), cached per process by
    (region, depth, source). The first call per source solves 61 steady states per ensemble member in a
    separate engine (cached on disk); later regions and depths only aggregate. Not under
    :data:`ENGINE_LOCK`: it never touches the sliders' engine caches."""
    return api.sensitivity(region=region, depth=depth, source=source, world=world)


def sensitivity_job_key(world: str | None, region: api.Region, depth: str, source: str | None) -> tuple:
    """The runner's key of a :func:`sensitivity` job (the warm-up's job is joined by the first sessions)."""
    return ("sensitivity", world, (region, depth, source))


@functools.lru_cache(maxsize=16)
def provenance(world: str | None, source: str | None) -> dict[str, str]:
    """``api.provenance`` once per (world, source): which world and data the numbers come from."""
    return api.provenance(source, world)


def provenance_tag(world: str | None, source: str | None) -> str:
    """A few words for titles: "synthetic twin 'default'" or "measured profiles, world 'x'"."""
    info = provenance(world, source)
    name = info.get("world", "")
    if info.get("world_kind") == "catalog":
        return f"measured profiles, world '{name}'"
    return f"synthetic twin '{name}'"


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


def json_depth(text: str, stop_above: int | None = None) -> int:
    """Deepest nesting of arrays and objects in a JSON text, counted without parsing it (strings are
    skipped), so a deeply nested upload is refused before ``json.loads`` recurses into it.

    One pass over the structural characters (linear in the text); with ``stop_above`` it returns as
    soon as the depth exceeds that.
    """
    depth = deepest = 0
    in_string = False
    skip_to = -1  # the character after a backslash inside a string is escaped
    for m in _JSON_STRUCTURE.finditer(text):
        pos, ch = m.start(), m.group()
        if pos < skip_to:
            continue
        if in_string:
            if ch == "\\":
                skip_to = pos + 2
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


_JSON_STRUCTURE = re.compile(r'[\[\]{}"\\]')


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number GeoJSON allows")


def upload_label(filename: str | None) -> str:
    """Region label of an upload: ``"upload <file name without extension>"``, as plain text of at most
    40 characters (it is drawn as text in the region select and escaped wherever HTML shows it)."""
    name = plain(filename or "", limit=200)
    name = name.rsplit(".", 1)[0] if "." in name else name
    return f"upload {plain(name, limit=40) or 'polygon'}"


def parse_geojson_upload(data: bytes | None, filename: str | None = None) -> api.Region:
    """Validate an uploaded GeoJSON (in memory) and turn it into a polygon region.

    Checked in this order, each before the next step runs: size (:data:`MAX_UPLOAD_BYTES`, before
    decoding), UTF-8, nesting depth (:data:`MAX_JSON_DEPTH`, before parsing), JSON syntax (``NaN`` and
    ``Infinity`` refused), then the geometry by the engine's one GeoJSON parser (through
    :func:`proda_engine.api.polygon_region`): (Multi)Polygon only, rings of at least four finite lon/lat
    positions. Raises ``ValueError`` with a message fit for the user (plain text; it never repeats the
    file's contents).
    """
    if not data:
        raise ValueError("the uploaded file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ValueError(f"GeoJSON too large ({len(data) / 1e6:.1f} MB); the limit is {MAX_UPLOAD_BYTES / 1e6:.0f} MB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("not a GeoJSON file: not UTF-8 text") from exc
    if json_depth(text, stop_above=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ValueError(f"not a GeoJSON file: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a GeoJSON file: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not a GeoJSON file: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError("not a GeoJSON object")
    return api.polygon_region(text, upload_label(filename), other_geometries="error")


# ---------------------------------------------------------------------------------------------
# take-away products (all in memory)
# ---------------------------------------------------------------------------------------------


def _uncertainty_items(uncertainty: dict | None) -> list[tuple[str, float | int]]:
    """The ensemble's mean and s.d. of every regional number (scalars only) for the downloads."""
    if not uncertainty:
        return []
    return [(f"ensemble_{k}", v) for k, v in uncertainty.items()
            if isinstance(v, int | float) and not isinstance(v, bool)]


def netcdf_bytes(result: api.WhatIfResult, uncertainty: dict | None = None) -> bytes:
    """The current maps as netCDF-4 bytes, with totals, the requested and realised changes, where the
    numbers come from (world, data, note) and, with an ensemble, its mean and s.d., in the attributes."""
    ds = result.maps.copy()
    ds.attrs.update({f"perturbation_{k}": float(v) for k, v in result.perturbation.items()})
    ds.attrs.update({f"total_{k}": v for k, v in result.totals.items() if isinstance(v, int | float | str)})
    ds.attrs.update(dict(_uncertainty_items(uncertainty)))
    ds.attrs["title"] = "PRODA what-if (api.what_if)"
    return bytes(ds.to_netcdf())


def csv_bytes(result: api.WhatIfResult, uncertainty: dict | None = None) -> bytes:
    """Totals (with where the numbers come from), the requested and realised changes and, with an
    ensemble, its mean and s.d. of every number, as a two-column CSV (key, value)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["key", "value"])
    for k, v in result.totals.items():
        writer.writerow([k, v])
    for k, v in result.perturbation.items():
        writer.writerow([f"perturbation_{k}", v])
    for k, v in _uncertainty_items(uncertainty):
        writer.writerow([k, v])
    return buf.getvalue().encode("utf-8")


def png_bytes(result: api.WhatIfResult, variable: str, clim: tuple[float, float],
              coastlines: tuple[np.ndarray, ...] = (), *, layer: MapLayer | None = None) -> bytes:
    """The current map rendered with matplotlib (Agg, no pyplot: thread-safe, no global figures).

    ``layer`` (the map view's current layer) takes precedence over ``result.maps[variable]``, so
    parameter maps and the ensemble spread download as shown.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    da = layer.as_dataarray() if layer is not None else result.maps[variable]
    lon, lat = da["lon"].values, da["lat"].values
    dlon = float(np.abs(np.diff(lon)).mean()) if lon.size > 1 else 0.5
    dlat = float(np.abs(np.diff(lat)).mean()) if lat.size > 1 else 0.5
    extent = (lon.min() - dlon / 2, lon.max() + dlon / 2, lat.min() - dlat / 2, lat.max() + dlat / 2)
    width = 10.0
    aspect = max(0.3, min(1.5, (extent[3] - extent[2]) / (extent[1] - extent[0])))
    fig = Figure(figsize=(width, width * aspect * 0.85 + 0.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # HoloViews resolves these names like matplotlib does, so the PNG matches the screen
    cmap = layer.cmap if layer is not None else CMAPS.get(variable, "viridis")
    im = ax.imshow(np.asarray(da.values, dtype=float), origin="lower" if lat[0] < lat[-1] else "upper",
                   extent=extent, cmap=cmap, vmin=clim[0], vmax=clim[1], interpolation="nearest")
    for line in coastlines:
        ax.plot(line[:, 0], line[:, 1], color="0.2", lw=0.5)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    t = result.totals
    pert = ", ".join(f"{api.BULK_SYMBOL[k]} {100 * v:+.0f} %" for k, v in result.perturbation.items() if v
                     ) or "no change"
    note = str(t.get("note", ""))
    ax.set_title(f"{da.attrs.get('long_name', variable)} — {t['region']}, {t['source']}\n{pert}"
                 + (f"\n{note}" if note else ""), fontsize=9)
    fig.colorbar(im, ax=ax, label=f"{da.attrs.get('long_name', variable)} ({da.attrs.get('units', '')})",
                 shrink=0.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# per-session results
# ---------------------------------------------------------------------------------------------


#: Colour map per variable (Bokeh/colorcet names HoloViews understands); parameters use CMAP_PARAMETER.
CMAPS: dict[str, str] = {"soc_stock": "viridis", "soc_change": "RdBu", "turnover": "plasma", "cue": "cividis",
                         SPREAD_VARIABLE: "magma", MISFIT_VARIABLE: "RdBu_r", REFERENCE_VARIABLE: "viridis",
                         REFERENCE_DIFF_VARIABLE: "RdBu"}
CMAP_PARAMETER = "inferno"


@dataclass(frozen=True, eq=False)
class MapLayer:
    """What the map image shows: float32 values on the (lat, lon) grid and how to draw them.

    ``signature`` is everything but the values: when it is unchanged between two results, the map
    view only swaps the image data (no re-render of the plot, no colour-mapper or axis changes).
    """

    variable: str
    values: np.ndarray  # (lat, lon) float32, NaN off land
    lon: np.ndarray
    lat: np.ndarray
    label: str
    units: str
    title: str
    clim: tuple[float, float]
    cmap: str
    colorbar: bool = True

    @property
    def signature(self) -> tuple:
        return (self.variable, self.values.shape, float(self.lon[0]), float(self.lat[0]), self.label, self.units,
                self.title, self.clim, self.cmap, self.colorbar)

    @property
    def resolution(self) -> float:
        """Grid spacing in degrees (the larger of lon and lat)."""
        dlon = float(np.abs(np.diff(self.lon)).mean()) if self.lon.size > 1 else 0.5
        dlat = float(np.abs(np.diff(self.lat)).mean()) if self.lat.size > 1 else 0.5
        return max(dlon, dlat)

    def as_dataarray(self) -> xr.DataArray:
        return xr.DataArray(self.values, dims=("lat", "lon"), coords={"lat": self.lat, "lon": self.lon},
                            name=self.variable, attrs={"units": self.units, "long_name": self.label})


def make_layer(da: xr.DataArray, variable: str, clim: tuple[float, float], title: str, *,
               cmap: str | None = None, colorbar: bool = True, label: str | None = None) -> MapLayer:
    """A :class:`MapLayer` from a (lat, lon) DataArray (float32: half the bytes, all the map needs)."""
    return MapLayer(variable=variable, values=np.ascontiguousarray(da.values, dtype=np.float32),
                    lon=np.asarray(da["lon"].values, float), lat=np.asarray(da["lat"].values, float),
                    label=label or variable_label(variable), units=str(da.attrs.get("units", "")), title=title,
                    clim=clim, cmap=cmap or CMAPS.get(variable, CMAP_PARAMETER), colorbar=colorbar)


@dataclass(frozen=True)
class Request:
    """Everything one what-if solve depends on (a snapshot of the state, hashable)."""

    region: api.Region
    depth: str
    source: str | None
    perturbation: tuple[tuple[str, float], ...]
    tap: tuple[float, float] | None
    variable: str = "soc_stock"


@dataclass(frozen=True)
class Outcome:
    result: api.WhatIfResult
    profile: xr.Dataset | None
    profile_baseline: xr.Dataset | None
    layer: MapLayer | None = None
    misfit: object = None  # per-site DataFrame when the misfit layer is shown
    ensemble: dict | None = None  # api.ensemble_totals (baseline) for region/depth/source, None without one
    note: str = ""  # e.g. "no ensemble for this source": shown as the message, the result still applies


class ResultStore(param.Parameterized):
    """Current outputs of one session, recomputed whenever the state changes.

    Views watch the output parameters (``result``, ``layer``, ``profile``, ``comparison``, ``sensitivity``,
    ``message``); each output has exactly one writer, so views never race each other.

    A request runs in phases so a slider step repaints the map as early as possible: phase 1 solves
    and builds the map layer, cards and profile; phase 2, where the source has an ensemble, solves every
    member under the same request for the +- s.d. of the cards, the change and the profile
    (``uncertainty``; abandoned between members when a newer request arrives); and (only while the
    scatter is on screen, ``want_comparison``) the model is interpolated to the observed horizons.
    """

    result = param.ClassSelector(class_=api.WhatIfResult, default=None, doc="Current what-if result.")
    layer = param.ClassSelector(class_=MapLayer, default=None, doc="What the map image shows.")
    misfit = param.Parameter(default=None, doc="Per-site model-minus-observation (misfit layer only).")
    ensemble = param.Dict(default=None, allow_None=True, doc="Ensemble mean/sd of the baseline total, if any.")
    uncertainty = param.Dict(default=None, allow_None=True,
                             doc="api.ensemble_what_if for the current request (None until solved or without "
                                 "an ensemble).")
    profile = param.ClassSelector(class_=xr.Dataset, default=None, doc="Perturbed SOC profile at the tap.")
    profile_baseline = param.ClassSelector(class_=xr.Dataset, default=None, doc="Baseline SOC profile at the tap.")
    profile_cell = param.Tuple(default=None, length=2, allow_None=True,
                               doc="(lon, lat) of the profile's cell; changes only when the cell does.")
    comparison = param.Parameter(default=None, doc="(observed-vs-modelled rows, pooled metrics) in the region.")
    want_comparison = param.Boolean(default=False, doc="The scatter is visible: keep the comparison current.")
    tap = param.Tuple(default=None, length=2, allow_None=True, doc="(lon, lat) of the last tap on the map.")
    sensitivity = param.Dict(default=None, allow_None=True, doc="api.sensitivity for region/depth/source.")
    sensitivity_key = param.Parameter(default=None, doc="(region, depth, source) the sensitivity belongs to.")
    sensitivity_note = param.String(default="", doc="Why there is no sensitivity (e.g. a preset source).")
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
        self._cmp_running = False
        self._cmp_key: tuple | None = None  # (region, source, perturbation) of the current comparison
        self._unc_running = False
        self._unc_key: tuple | None = None  # the request the current uncertainty belongs to
        #: this session's id in the runner's slots; ``close()`` frees its queued work
        self.session_id = next(_SESSION_IDS)
        self.closed = False
        # precedence 1: after the controls (precedence 0), which may first swap an unavailable variable
        state.param.watch(self._on_selection, ["region", "depth", "source", "variable", *MECHANISMS], precedence=1)
        self.param.watch(lambda e: self.refresh_comparison() if e.new else None, "want_comparison")
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
            variable=s.variable,
        )

    def _compute(self, req: Request) -> Outcome:
        """Phase 1: the solve, the map layer, cards (+ ensemble) and the tapped profile."""
        pert = dict(req.perturbation)
        # not under ENGINE_LOCK: the what-if engine locks its own caches and solves in the calling thread,
        # so the engine lane's two workers solve two sessions' steps at once
        result = api.what_if(pert, region=req.region, depth=req.depth, source=req.source, world=self.world)
        prof = prof0 = None
        if req.tap is not None:
            lon, lat = req.tap
            prof = api.profile(lat, lon, perturbation=pert, source=req.source, world=self.world,
                               region=req.region)
            prof0 = api.profile(lat, lon, perturbation=None, source=req.source, world=self.world)
        layer, misfit, note = self._layer(req, result, pert)
        ensemble = None
        if has_ensemble(self.world, req.source):
            with ENGINE_LOCK:
                ensemble = api.ensemble_totals(region=req.region, depth=req.depth, source=req.source,
                                               world=self.world)
        return Outcome(result, prof, prof0, layer, misfit, ensemble, note)

    def _layer(self, req: Request, result: api.WhatIfResult, pert: dict[str, float]):
        """(MapLayer, misfit DataFrame or None, note) for the requested map variable."""
        variable, depth = req.variable, req.depth
        clim = color_limits(self.world, req.source, depth, variable)
        label = variable_label(variable)
        tag = provenance_tag(self.world, req.source)
        if variable.startswith(PARAM_PREFIX):
            name = variable[len(PARAM_PREFIX):]
            if pert:
                with ENGINE_LOCK:
                    da = api.parameter_map(name, req.source, self.world, perturbation=pert, region=req.region)
            else:
                da = parameter_field(self.world, req.source, name)
            units = da.attrs.get("units", "")
            return make_layer(da, variable, clim, f"parameter {label} ({units}) — {tag}"), None, ""
        if variable == SPREAD_VARIABLE:
            sd = ensemble_spread(self.world, req.source, depth)
            if sd is not None:
                n = sd.attrs.get("n_members", "?")
                return (make_layer(sd, variable, clim, f"{label}, {depth}, {n} members (kg C m-2) — {tag}"), None,
                        "")
            note = f"no ensemble for source {req.source!r}: showing the SOC stock"
            variable = "soc_stock"
            clim, label = color_limits(self.world, req.source, depth, variable), variable_label(variable)
        else:
            note = ""
        if variable in (REFERENCE_VARIABLE, REFERENCE_DIFF_VARIABLE):
            rc = reference_comparison(self.world, req.source, depth)
            if rc is not None:
                t = rc.totals
                key = "reference" if variable == REFERENCE_VARIABLE else "difference"
                title = (f"{label}, {depth} (kg C m-2): reference {t['reference_pg']:,.0f} Pg C, source "
                         f"{t['model_pg']:,.0f} Pg C ({provenance_tag(self.world, req.source)}) on cells both cover")
                return make_layer(rc.maps[key], variable, clim, title), None, note
            note = (f"the reference product covers {', '.join(REFERENCE_DEPTHS)}, not {depth}: "
                    "showing the SOC stock")
            variable = "soc_stock"
            clim, label = color_limits(self.world, req.source, depth, variable), variable_label(variable)
        if variable == MISFIT_VARIABLE:
            try:
                with ENGINE_LOCK:
                    misfit = api.site_misfit(req.source, pert, region=req.region, world=self.world,
                                             max_sites=MAX_MISFIT_SITES)
            except (FileNotFoundError, ValueError) as exc:
                log.info("no site misfit: %s", exc)
                misfit, note = None, f"no observed sites in this world: {exc}"
            # under the points: the SOC stock in grey, so the diverging colours belong to the sites
            stock = result.maps["soc_stock"]
            return (make_layer(stock, variable, color_limits(self.world, req.source, depth, "soc_stock"),
                               f"model − observation at sites (kg C m-3; blue < 0 < red, scale ±"
                               f"{color_limits(self.world, req.source, depth, MISFIT_VARIABLE)[1]:.3g}) "
                               f"over SOC stock {depth} — {tag}",
                               cmap="Greys", colorbar=False, label="SOC stock"), misfit, note)
        da = result.maps[variable]
        units = da.attrs.get("units", "")
        return make_layer(da, variable, clim, f"{label}, {depth} ({units}) — {tag}"), None, note

    def _apply(self, out: Outcome) -> None:
        cell = (out.profile.attrs["lon"], out.profile.attrs["lat"]) if out.profile is not None else None
        # busy=False in the same update: the spinner stops in the same batch of model changes as the
        # new map and cards arrive (set after them, it reached the browser up to ~0.4 s later)
        update = dict(result=out.result, layer=out.layer, misfit=out.misfit, ensemble=out.ensemble,
                      profile=out.profile, profile_baseline=out.profile_baseline, message=out.note,
                      version=self.version + 1, busy=False)
        if self._unc_key != self._uncertainty_key_of(self._request()):
            update["uncertainty"] = None  # the +- of another request must not stand next to these numbers
        if cell != self.profile_cell:  # the marker re-renders only when the cell changes
            update["profile_cell"] = cell
        # Served: hold the session's document so the map, five cards, ensemble card and spinner go to
        # the browser as one message (each pane otherwise sent its own, and each message serialises
        # against the whole ~420-model document: ~5 ms apiece on the server, one repaint each in the page).
        with held():
            self.param.update(**update)

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

    def _outcome_key(self, req: Request) -> tuple:
        """The shared-cache key of a phase-1 outcome: everything it depends on (the request is by value,
        an uploaded polygon included, so sessions share only identical requests)."""
        return ("what-if", self.world, req)

    def _refresh_inline(self) -> None:
        try:
            req = self._request()
            self._apply(RUNNER.call(self._compute, req, key=self._outcome_key(req)))
        except Exception as exc:  # any failure becomes a message
            self.fail(exc, "what-if")
            return
        self.refresh_uncertainty()
        self.refresh_comparison()
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
                    req = self._request()
                    out = await RUNNER.run(self.session_id, "what-if", self._compute, req,
                                           key=self._outcome_key(req), lane="engine")
                except Superseded:
                    continue
                except asyncio.CancelledError:  # the session closed: nothing to show any more
                    return
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
            self.refresh_uncertainty()
            self.refresh_comparison()
            self.refresh_sensitivity()

    # -- ensemble +- s.d. (phase 2, where the source has an ensemble) ----------------------------
    def _uncertainty_key_of(self, req: Request) -> tuple | None:
        if not has_ensemble(self.world, req.source):
            return None
        return (req.region, req.depth, req.source, req.perturbation, req.tap)

    def _uncertainty_key(self) -> tuple | None:
        if self.result is None:
            return None
        return self._uncertainty_key_of(self._request())

    def _compute_uncertainty(self, key: tuple, generation: int | None = None):
        """The members under ``key`` (``api.ensemble_what_if``); None if abandoned between two members.

        Not under :data:`ENGINE_LOCK`: the members are their own engine, so they solve on the second core
        beside the next slider step (the main engine is asked only for the cached request key)."""
        region, depth, source, pert, tap = key
        stop = None if generation is None else (lambda: self.closed or generation != self._requested)
        lon, lat = tap if tap is not None else (None, None)
        return api.ensemble_what_if(dict(pert), region=region, depth=depth, source=source, world=self.world,
                                    lat=lat, lon=lon, should_stop=stop)

    def refresh_uncertainty(self) -> None:
        """Solve the ensemble members under the current request (after the map and cards are shown)."""
        try:
            key = self._uncertainty_key()
        except Exception as exc:
            self.fail(exc, "ensemble")
            return
        if key is None or key == self._unc_key:
            return
        if not self.background:
            try:
                self.uncertainty, self._unc_key = self._compute_uncertainty(key), key
            except Exception as exc:
                self.fail(exc, "ensemble")
            return
        param.parameterized.async_executor(self._uncertainty_async)

    async def _uncertainty_async(self) -> None:
        if self._unc_running:
            return
        self._unc_running = True
        try:
            while True:
                generation = self._requested
                await asyncio.sleep(UNCERTAINTY_DELAY)
                if self._running:  # a newer request is being solved: it starts phase 2 again when done
                    break
                if generation != self._requested:  # a newer request was applied meanwhile: wait again
                    continue
                key = self._uncertainty_key()
                if key is None or key == self._unc_key:
                    break
                try:
                    unc = await RUNNER.run(self.session_id, "uncertainty", self._compute_uncertainty, key, generation,
                                           key=("uncertainty", self.world, key), lane="members")
                except Superseded:
                    continue
                except asyncio.CancelledError:
                    return
                except Exception as exc:
                    self.fail(exc, "ensemble")
                    break
                if unc is None and not self.closed and generation == self._requested:
                    continue  # joined another session's job that session abandoned: ask again
                if unc is not None and key == self._uncertainty_key():
                    self._unc_key = key
                    with held():
                        self.uncertainty = unc
        finally:
            self._unc_running = False

    # -- observed vs modelled (phase 2, only while the scatter is visible) ------------------
    def _comparison_key(self) -> tuple | None:
        if self.result is None or not self.want_comparison:
            return None
        req = self._request()
        return (req.region, req.source, req.perturbation)

    def _compute_comparison(self, key: tuple):
        region, source, pert = key
        try:  # the same cached solve at the observed sites: cheap, but optional
            with ENGINE_LOCK:
                return api.site_comparison(source=source, region=region, perturbation=dict(pert),
                                           world=self.world, max_sites=1500)
        except (FileNotFoundError, ValueError) as exc:
            log.info("no site comparison: %s", exc)
            return None

    def refresh_comparison(self) -> None:
        """Bring the scatter's comparison up to date (after the map, and only if it is wanted)."""
        try:
            key = self._comparison_key()
        except Exception as exc:
            self.fail(exc, "site comparison")
            return
        if key is None or key == self._cmp_key:
            return
        if not self.background:
            self.comparison, self._cmp_key = self._compute_comparison(key), key
            return
        param.parameterized.async_executor(self._comparison_async)

    async def _comparison_async(self) -> None:
        if self._cmp_running:
            return
        self._cmp_running = True
        try:
            while True:
                key = self._comparison_key()
                if key is None or key == self._cmp_key:
                    break
                try:
                    cmp = await RUNNER.run(self.session_id, "comparison", self._compute_comparison, key,
                                           key=("comparison", self.world, key), lane="engine")
                except Superseded:
                    continue
                except asyncio.CancelledError:
                    return
                if key == self._comparison_key():
                    self._cmp_key = key
                    self.comparison = cmp
        finally:
            self._cmp_running = False

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
                self.param.update(sensitivity=sensitivity(self.world, *key), sensitivity_key=key, sensitivity_note="")
            except ValueError as exc:  # e.g. a preset without unit-interval parameters: a note, not an error
                self.param.update(sensitivity={}, sensitivity_key=key, sensitivity_note=str(exc))
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
                self.param.update(sensitivity=None, sensitivity_key=None, sensitivity_note="")
                note = ""
                try:
                    sens = await RUNNER.run(self.session_id, "sensitivity", sensitivity, self.world, *key,
                                            key=sensitivity_job_key(self.world, *key), lane="slow")
                except Superseded:
                    continue
                except asyncio.CancelledError:
                    return
                except ValueError as exc:  # a preset without unit-interval parameters: a note, not an error
                    sens, note = {}, str(exc)
                except Exception as exc:
                    self.fail(exc, "sensitivity")
                    break
                if key == self._sens_key():
                    self.param.update(sensitivity=sens, sensitivity_key=key, sensitivity_note=note)
        finally:
            self._sens_running = False

    def close(self) -> None:
        """The session has gone: drop its queued engine work and stop its ensemble members between two
        solves (a running solve finishes; its result stays in the shared cache for other sessions)."""
        self.closed = True
        RUNNER.close_session(self.session_id)

    # -- uploads ---------------------------------------------------------------------------
    def add_polygon(self, data: bytes | None, filename: str | None) -> str | None:
        """Parse an uploaded GeoJSON and select it as the region; errors become the message."""
        try:
            region = parse_geojson_upload(data, filename)
        except Exception as exc:  # anything the engine raises on odd geometry too: a message, not a crash
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
        if variable is None and self.layer is not None:
            return self.layer.clim
        s = self.state
        return color_limits(self.world, s.source, s.depth, variable or s.variable)

    def variable_label(self, variable: str | None = None) -> str:
        return variable_label(variable or self.state.variable)

