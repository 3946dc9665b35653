"""Parameter files as users have them: read, align to a grid, check the closure, write.

A parameter file is netCDF with a variable ``theta`` (unit-interval parameters, data contract §4)
with a ``parameter`` dimension and optionally ``lat``/``lon`` (or ``latitude``/``longitude``),
``site`` or a member dimension. This module is the one place that reads, aligns and writes them:

* **Names.** The ``parameter`` coordinate may use the spec's names (§(c): ``w-scaling``) or the
  project's :data:`~proda_engine.parameters.PARAMETER_NAMES` (``wscaling``), in any case and with
  ``-``, ``_`` or spaces anywhere (``W_Scaling``, ``tau 4 s1``). Values come back in table order
  under the project's names. Unknown, missing or repeated names are a one-line error naming the
  file, the coordinate, the expected names and what was found.
* **Longitudes.** A ``lat``/``lon`` grid is matched to the target grid (the forcing's or the
  world's) value by value, longitudes modulo 360: a file on 0..360 longitudes lines up with a
  forcing read on -180..180 (the same cells in another order). Latitudes may run either way.
  Anything else is a one-line error with what was expected and found (size, first..last, step).
* **Closure and soil grid.** Parameters fitted under one transport closure are not valid under the
  other (spec §(g)); every file and product records ``closure`` (conservative | legacy) and
  ``soil_grid`` (clm5_20 | clm45_10), plus ``lat_lon_grid`` (a description of the horizontal
  grid). :func:`resolve_closure` / :func:`resolve_soil_grid` refuse a mismatch unless the caller
  asked for a closure explicitly (then it is used, with a logged warning). Files without the
  attribute (older files) run with the requested or default value and a logged warning.

This module never imports :mod:`proda_engine.physics` (architecture rule); the closure names are
those of :data:`proda_engine.physics.transport.CLOSURES` (a test keeps them equal).

Example
-------
>>> import tempfile, numpy as np, xarray as xr
>>> from proda_engine.parameters import PARAMETER_NAMES
>>> names = [n.replace("wscaling", "w-scaling") for n in PARAMETER_NAMES]
>>> path = tempfile.mkdtemp() + "/theta.nc"
>>> _ = write_parameter_file(xr.DataArray(np.full(21, 0.5), dims="parameter", coords={"parameter": names}),
...                          path, closure="conservative", soil_grid="clm5_20")
>>> th = read_parameter_file(path)
>>> str(th["parameter"].values[19]), th.attrs["closure"], th.attrs["soil_grid"]
('wscaling', 'conservative', 'clm5_20')
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from proda_engine.data.errors import ParameterFileError
from proda_engine.data.writers import write_product
from proda_engine.grid import GRIDS
from proda_engine.parameters import LOWER, N_PARAMS, PARAMETER_NAMES, PARAMETERS, UPPER

log = logging.getLogger(__name__)

#: Transport closures (spec §(g)); the same names as ``proda_engine.physics.transport.CLOSURES``.
CLOSURES: tuple[str, ...] = ("conservative", "legacy")
DEFAULT_CLOSURE = "conservative"
#: Soil grids (:data:`proda_engine.grid.GRIDS`); ``clm5_20`` is the default.
SOIL_GRIDS: tuple[str, ...] = tuple(GRIDS)
DEFAULT_SOIL_GRID = "clm5_20"

#: Attribute that :func:`read_parameter_file` sets to the file it read (used in messages).
SOURCE_ATTR = "source_file"
LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "longitude")

#: Spellings beyond case / '-' / '_' / spaces: the spec's "diffus (bio)" column entry.
_ALIASES = {"diffus(bio)": "diffus"}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


#: normalised spelling -> project name (spec names and project names; both tables agree except w-scaling)
_NAME_KEYS: dict[str, str] = {_key(n): n for n in PARAMETER_NAMES}
_NAME_KEYS.update({_key(k): v for k, v in _ALIASES.items()})


def canonical_parameter_name(name: object) -> str | None:
    """The project's name for a parameter spelled as in the spec or in any case, or None.

    Case, ``-``, ``_`` and white space are ignored: ``w-scaling``, ``w_scaling``, ``W Scaling`` and
    ``wscaling`` all give ``wscaling``.

    >>> canonical_parameter_name("W-Scaling"), canonical_parameter_name("tau_4s1"), canonical_parameter_name("x")
    ('wscaling', 'tau4s1', None)
    """
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return _NAME_KEYS.get(_key(str(name)))


def _expected_names() -> str:
    return f"the {N_PARAMS} names {', '.join(PARAMETER_NAMES)} (case, '-', '_' and spaces ignored, e.g. w-scaling)"


def _short(values: list[str], n: int = 6) -> str:
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f" and {len(values) - n} more" if len(values) > n else "")


def normalise_parameter_names(theta: xr.DataArray, *, file: str | None = None) -> xr.DataArray:
    """``theta`` with its ``parameter`` coordinate in table order under the project's names.

    A ``parameter`` dimension without a coordinate is taken to be in table order (it must have 21
    entries). Coordinates ``lower``/``upper`` along ``parameter``, when present, must equal the
    table's bounds (theta means nothing under other bounds).

    Raises:
        ParameterFileError: no ``parameter`` dimension; unknown, missing or repeated names; bounds
            that differ from the table. The message names the file, the coordinate, the expected
            names and what was found.
    """
    src = file or str(theta.attrs.get(SOURCE_ATTR, "theta"))
    if "parameter" not in theta.dims:
        raise ParameterFileError(f"{src}: variable 'theta': expected a 'parameter' dimension, found dims "
                                 f"{list(theta.dims)}")
    if "parameter" not in theta.coords:
        if theta.sizes["parameter"] != N_PARAMS:
            raise ParameterFileError(f"{src}: dimension 'parameter': expected {N_PARAMS} entries in table order "
                                     f"(or a coordinate with {_expected_names()}), found {theta.sizes['parameter']}")
        out = theta.assign_coords(parameter=("parameter", list(PARAMETER_NAMES)))
        return _check_bounds(out, src)
    found = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in theta["parameter"].values]
    canon = [canonical_parameter_name(v) for v in found]
    unknown = [f for f, c in zip(found, canon) if c is None]
    if unknown:
        raise ParameterFileError(f"{src}: coordinate 'parameter': expected {_expected_names()}; found unknown "
                                 f"name(s) {_short(unknown)}")
    dup = sorted({c for c in canon if canon.count(c) > 1})
    if dup:
        spell = [f for f, c in zip(found, canon) if c in dup]
        raise ParameterFileError(f"{src}: coordinate 'parameter': expected each of {_expected_names()} once; "
                                 f"found repeated {_short(spell)}")
    missing = [n for n in PARAMETER_NAMES if n not in canon]
    if missing:
        raise ParameterFileError(f"{src}: coordinate 'parameter': expected {_expected_names()}; found "
                                 f"{len(found)} name(s), missing {_short(missing)}")
    if canon != list(PARAMETER_NAMES):
        theta = theta.isel(parameter=[canon.index(n) for n in PARAMETER_NAMES])
    out = theta.assign_coords(parameter=("parameter", list(PARAMETER_NAMES)))
    return _check_bounds(out, src)


def _check_bounds(theta: xr.DataArray, src: str) -> xr.DataArray:
    for coord, table in (("lower", LOWER), ("upper", UPPER)):
        if coord in theta.coords and theta[coord].dims == ("parameter",):
            have = np.asarray(theta[coord].values, dtype=float)
            bad = ~np.isclose(have, table, rtol=1e-9, atol=0.0)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ParameterFileError(
                    f"{src}: coordinate {coord!r}: expected the parameter table's bounds (theta maps to physical "
                    f"values through them), found {PARAMETER_NAMES[i]} {coord} = {have[i]:g} instead of "
                    f"{table[i]:g} ({int(bad.sum())} parameter(s) differ)")
    return theta


# -------------------------------------------------------------------------------------------------
# Grids
# -------------------------------------------------------------------------------------------------
def _describe(values: np.ndarray) -> str:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return "0 values"
    if v.size == 1:
        return f"1 value {v[0]:g}"
    d = np.diff(v)
    step = f"step {d[0]:g}" if np.allclose(d, d[0], rtol=1e-4, atol=1e-9) else "irregular steps"
    return f"{v.size} values {v[0]:g}..{v[-1]:g} {step}"


def describe_lat_lon(lat: np.ndarray, lon: np.ndarray) -> str:
    """One-line description of a regular lat/lon grid, written as the ``lat_lon_grid`` attribute.

    >>> describe_lat_lon(np.array([-52.5, -17.5]), np.array([0.0, 60.0, 120.0]))
    'lat 2 values -52.5..-17.5 step 35; lon 3 values 0..120 step 60 (degrees)'
    """
    return f"lat {_describe(lat)}; lon {_describe(lon)} (degrees)"


def _tolerance(target: np.ndarray) -> float:
    t = np.sort(np.asarray(target, dtype=float))
    step = float(np.min(np.diff(t))) if t.size > 1 else 1.0
    return max(1e-6, 1e-3 * step)


def _match(target: np.ndarray, have: np.ndarray, *, modulo: float | None) -> np.ndarray | None:
    """Index into ``have`` of each ``target`` value (a permutation), or None when the sets differ."""
    t = np.asarray(target, dtype=float)
    h = np.asarray(have, dtype=float)
    if t.shape != h.shape or t.ndim != 1:
        return None
    if modulo is not None:
        t = (t + modulo / 2) % modulo - modulo / 2
        h = (h + modulo / 2) % modulo - modulo / 2
    ot, oh = np.argsort(t, kind="stable"), np.argsort(h, kind="stable")
    if not np.allclose(t[ot], h[oh], rtol=0.0, atol=_tolerance(target)):
        return None
    idx = np.empty(t.size, dtype=np.int64)
    idx[ot] = oh
    return idx


def _rename_latlon(theta: xr.DataArray) -> xr.DataArray:
    ren = {}
    for names, canon in ((LAT_NAMES, "lat"), (LON_NAMES, "lon")):
        for n in names[1:]:
            if n in theta.dims and canon not in theta.dims:
                ren[n] = canon
    return theta.rename(ren) if ren else theta


def align_theta_to_grid(theta: xr.DataArray, lat: np.ndarray, lon: np.ndarray, *, file: str | None = None,
                        target: str = "the target grid") -> xr.DataArray:
    """``theta`` reindexed onto the (lat, lon) grid given, cell for cell; other dims untouched.

    Latitudes must be the same set of values (either order); longitudes the same modulo 360, so a
    0..360 file lines up with a -180..180 grid. The result carries the target's coordinates. A
    dimension without a coordinate must have the target's size and is taken in the target's order.
    ``theta`` without lat/lon dimensions comes back unchanged.

    Raises:
        ParameterFileError: only one of lat/lon, or values that are not the target's. One line:
            file, coordinate, expected (size, first..last, step) and found.
    """
    src = file or str(theta.attrs.get(SOURCE_ATTR, "theta"))
    theta = _rename_latlon(theta)
    has = [d for d in ("lat", "lon") if d in theta.dims]
    if not has:
        return theta
    if len(has) == 1:
        raise ParameterFileError(f"{src}: variable 'theta': expected both 'lat' and 'lon' dimensions or neither, "
                                 f"found dims {list(theta.dims)}")
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    sel: dict[str, np.ndarray] = {}
    for dim, want, modulo in (("lat", lat, None), ("lon", lon, 360.0)):
        if dim not in theta.coords:
            if theta.sizes[dim] != want.size:
                raise ParameterFileError(f"{src}: dimension {dim!r}: expected {want.size} entries ({target}: "
                                         f"{_describe(want)}), found {theta.sizes[dim]} without coordinate values")
            continue
        have = np.asarray(theta[dim].values, dtype=float)
        idx = _match(want, have, modulo=modulo)
        if idx is None:
            conv = " (longitudes -180..180 or 0..360 accepted)" if dim == "lon" else ""
            raise ParameterFileError(f"{src}: coordinate {dim!r}: expected {target}'s {_describe(want)}{conv}, "
                                     f"found {_describe(have)}")
        if not np.array_equal(idx, np.arange(idx.size)):
            sel[dim] = idx
    if sel:
        theta = theta.isel(sel)
    return theta.assign_coords(lat=("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
                               lon=("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}))


# -------------------------------------------------------------------------------------------------
# Closure and soil grid
# -------------------------------------------------------------------------------------------------
def _attr_value(attrs: Mapping[str, Any], key: str, allowed: tuple[str, ...], src: str) -> str | None:
    v = attrs.get(key)
    if v is None:
        return None
    s = str(v).strip().lower()
    if s not in allowed:
        raise ParameterFileError(f"{src}: attribute {key!r}: expected one of {', '.join(allowed)}, found {v!r}")
    return s


def _attrs_of(obj: Mapping[str, Any] | xr.DataArray | xr.Dataset | None) -> Mapping[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, (xr.DataArray, xr.Dataset)):
        return obj.attrs
    return obj


def _resolve(key: str, flag: str, arg: str, allowed: tuple[str, ...], default: str,
             params: Mapping[str, Any] | xr.DataArray | xr.Dataset | None, requested: str | None,
             source: str | None) -> str:
    attrs = _attrs_of(params)
    src = source or str(attrs.get(SOURCE_ATTR, "parameters"))
    if requested is not None:
        requested = str(requested).strip().lower()
        if requested not in allowed:
            raise ParameterFileError(f"{key}: expected one of {', '.join(allowed)}, found {requested!r}")
    recorded = _attr_value(attrs, key, allowed, src)
    if key == "soil_grid" and recorded is None:
        grid = attrs.get("grid")  # products written before soil_grid existed call it 'grid'
        recorded = str(grid).strip().lower() if str(grid).strip().lower() in allowed else None
    if recorded is None:
        use = requested or default
        if SOURCE_ATTR in attrs:
            # older files: the closure matters (spec (g)), so warn; nearly all used the default soil grid
            (log.warning if key == "closure" else log.info)(
                "%s: no %r attribute (a file written before it was recorded); running with %s %r",
                src, key, key.replace("_", " "), use)
        return use
    if requested is None:
        if recorded != default:
            what = "transport closure (spec (g))" if key == "closure" else "soil grid"
            raise ParameterFileError(
                f"{src}: attribute {key!r}: expected {default!r} (this run's default), found {recorded!r}; parameters "
                f"fitted under one {what} are not valid under another: give {flag} {recorded} (Python: "
                f"{arg}={recorded!r}) to run them as fitted, or {flag} {default} to override")
        return default
    if requested != recorded:
        log.warning("%s: parameters recorded with %s %r are run with %r as explicitly requested "
                    "(%s given); results are not comparable with %r runs", src, key.replace("_", " "), recorded,
                    requested, flag, recorded)
    return requested


def resolve_closure(params: Mapping[str, Any] | xr.DataArray | xr.Dataset | None, closure: str | None = None, *,
                    default: str = DEFAULT_CLOSURE, source: str | None = None) -> str:
    """The transport closure to run ``params`` with (spec §(g)).

    Args:
        params: the parameters' attributes (or the DataArray / Dataset carrying them); ``None`` or
            ``{}`` for parameters without a record (presets, arrays).
        closure: the closure the caller asked for explicitly, or None (use ``default``).
        default: the consumer's closure when none is asked for.
        source: name used in messages (default: the file the parameters were read from).

    Returns ``closure`` when given (logging a warning if the parameters record another), else the
    recorded closure when it equals ``default``. Parameters read from a file without a ``closure``
    attribute run with ``closure or default`` and a logged warning.

    Raises:
        ParameterFileError: the parameters record a closure other than ``default`` and none was
            asked for explicitly; or an unknown closure name.
    """
    return _resolve("closure", "--closure", "closure", CLOSURES, default, params, closure, source)


def resolve_soil_grid(params: Mapping[str, Any] | xr.DataArray | xr.Dataset | None, soil_grid: str | None = None,
                      *, default: str = DEFAULT_SOIL_GRID, source: str | None = None) -> str:
    """The soil grid to run ``params`` with: as :func:`resolve_closure`, for ``soil_grid``."""
    return _resolve("soil_grid", "--grid", "grid", SOIL_GRIDS, default, params, soil_grid, source)


# -------------------------------------------------------------------------------------------------
# Reading and writing
# -------------------------------------------------------------------------------------------------
def read_parameter_file(path: str | PathLike, *, load: bool = True, variable: str = "theta") -> xr.DataArray:
    """Read the unit-interval parameters of a netCDF parameter file.

    Returns ``theta`` with its ``parameter`` coordinate in table order under the project's names
    (:func:`normalise_parameter_names`), ``latitude``/``longitude`` renamed to ``lat``/``lon``
    (values as in the file; :func:`align_theta_to_grid` matches them to a grid), and the file's
    global and variable attributes (``closure``, ``soil_grid`` lower-cased and checked) plus
    ``source_file``. ``load=False`` keeps the values on disk (large ensembles, read member by member).

    Raises:
        FileNotFoundError: no such file.
        ParameterFileError: not readable as netCDF, no ``theta`` variable, bad names, bounds or
            attribute values (one line naming the file and what was expected and found).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: parameter file not found")
    try:
        ds = xr.open_dataset(p)
    except Exception as exc:  # the netCDF libraries raise many types; one message for all
        raise ParameterFileError(f"{p}: expected a netCDF parameter file, could not read it "
                                 f"({type(exc).__name__}: {exc})") from None
    if variable not in ds.data_vars:
        found = list(ds.data_vars)
        ds.close()
        raise ParameterFileError(f"{p}: variable {variable!r}: expected unit-interval parameters with a 'parameter' "
                                 f"dimension, found variables {found}")
    theta = ds[variable]
    attrs = {**ds.attrs}
    for k, v in theta.attrs.items():
        if k in ("closure", "soil_grid") and k in attrs and str(attrs[k]).strip().lower() != str(v).strip().lower():
            ds.close()
            raise ParameterFileError(f"{p}: attribute {k!r}: expected one value, found {attrs[k]!r} (global) and "
                                     f"{v!r} (variable {variable!r})")
        attrs[k] = v
    if "parameter" in theta.dims and "parameter" not in theta.coords:
        log.warning("%s: 'parameter' has no names; taking the %d values in table order", p, N_PARAMS)
    theta = normalise_parameter_names(_rename_latlon(theta), file=str(p))
    if load:
        theta = theta.load()
        ds.close()
    for key, allowed in (("closure", CLOSURES), ("soil_grid", SOIL_GRIDS)):
        v = _attr_value(attrs, key, allowed, str(p))
        if v is not None:
            attrs[key] = v
    attrs[SOURCE_ATTR] = str(p)
    theta.attrs = attrs
    return theta


def parameter_file_attrs(closure: str, soil_grid: str = DEFAULT_SOIL_GRID, *, lat: np.ndarray | None = None,
                         lon: np.ndarray | None = None, **extra: Any) -> dict[str, Any]:
    """Attributes every parameter file and product carries.

    ``closure`` (conservative | legacy), ``soil_grid`` (clm5_20 | clm45_10), ``lat_lon_grid`` (see
    :func:`describe_lat_lon`) when ``lat``/``lon`` are given, ``parameter_order`` (the table's
    names), and ``extra`` (None values dropped: netCDF cannot store them).

    Raises:
        ParameterFileError: unknown closure or soil grid.
    """
    c = str(closure).strip().lower()
    g = str(soil_grid).strip().lower()
    if c not in CLOSURES:
        raise ParameterFileError(f"closure: expected one of {', '.join(CLOSURES)}, found {closure!r}")
    if g not in SOIL_GRIDS:
        raise ParameterFileError(f"soil_grid: expected one of {', '.join(SOIL_GRIDS)}, found {soil_grid!r}")
    out: dict[str, Any] = {"closure": c, "soil_grid": g}
    if lat is not None and lon is not None:
        out["lat_lon_grid"] = describe_lat_lon(np.asarray(lat), np.asarray(lon))
    out["parameter_order"] = ", ".join(PARAMETER_NAMES)
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def write_parameter_file(theta: xr.DataArray | np.ndarray, path: str | PathLike, *, closure: str,
                         soil_grid: str = DEFAULT_SOIL_GRID, **attrs: Any) -> Path:
    """Write unit-interval parameters atomically as a parameter file; returns the path.

    ``theta`` is a DataArray with a ``parameter`` dimension (any accepted spelling; written in table
    order with the project's names, with ``lower``/``upper`` bounds and ``parameter_units`` along
    it) or a ``(21,)`` array. Global attributes: :func:`parameter_file_attrs` plus ``attrs``.
    """
    if not isinstance(theta, xr.DataArray):
        arr = np.asarray(theta, dtype=float)
        if arr.shape != (N_PARAMS,):
            raise ParameterFileError(f"{path}: theta: expected a DataArray or shape ({N_PARAMS},), found {arr.shape}")
        theta = xr.DataArray(arr, dims="parameter")
    theta = normalise_parameter_names(_rename_latlon(theta), file=str(path))
    theta = theta.drop_vars([c for c in ("lower", "upper", "parameter_units") if c in theta.coords])
    theta = theta.assign_coords(
        lower=("parameter", LOWER.copy(), {"long_name": "physical value at theta = 0"}),
        upper=("parameter", UPPER.copy(), {"long_name": "physical value at theta = 1"}),
        parameter_units=("parameter", [p.units for p in PARAMETERS], {"long_name": "units of the physical value"}),
    )
    var_attrs = {k: v for k, v in theta.attrs.items() if k not in ("closure", "soil_grid", SOURCE_ATTR)}
    var_attrs.setdefault("units", "1")
    var_attrs.setdefault("long_name", "unit-interval parameters (physical = lower + theta (upper - lower))")
    theta = theta.copy()
    theta.attrs = var_attrs
    lat = theta["lat"].values if "lat" in theta.coords else None
    lon = theta["lon"].values if "lon" in theta.coords else None
    ds = theta.to_dataset(name="theta")
    ds.attrs = parameter_file_attrs(closure, soil_grid, lat=lat, lon=lon, **attrs)
    return write_product(ds, path)
