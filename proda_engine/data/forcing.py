"""Forcing reader: CLM5-history-style netCDF -> the normalised forcing Dataset (data contract §1).

The normalised forcing Dataset is an exact contract the physics, inference and mapping code rely on:

======================================  ======================  ==================
variable                                dims                    units
======================================  ======================  ==================
``TSOI``                                month, layer, lat, lon  K
``W_SCALAR``, ``O_SCALAR``, ``FPI_vr``  month, layer, lat, lon  1
``ALTMAX``, ``ALTMAX_LASTYEAR``         month, lat, lon         m
``nbedrock``                            lat, lon                1 (int32 1..n, -1 where invalid)
``CELLSAND`` (optional)                 layer, lat, lon         %
``input_cwd``, ``input_litter1..3``     lat, lon                g C m-2 yr-1
``NPP`` (optional)                      lat, lon                g C m-2 yr-1
``valid``                               lat, lon                bool
======================================  ======================  ==================

``month`` is 1..12, ``layer`` 1..n_layers, ``lat`` ascending, ``lon`` ascending in -180..180; all
data variables except ``nbedrock``/``valid`` are float64 (the steady-state system is ill-conditioned,
so the engine never works in float32). ``valid`` is True on land cells where every required value is
finite and ``nbedrock`` is within 1..n_layers.

Month means skip missing values element by element (spec §(b)): a month with missing forcing is
dropped for that element and the divisor is the number of valid months; an element missing in
every month stays NaN and makes its cell invalid.

Example
-------
>>> from proda_engine.data.forcing import read_forcing          # doctest: +SKIP
>>> ds = read_forcing("case.clm2.h0.clim.nc")                   # doctest: +SKIP
>>> ds["TSOI"].dims                                             # doctest: +SKIP
('month', 'layer', 'lat', 'lon')
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import xarray as xr

from proda_engine.data.errors import ForcingError
from proda_engine.data.sampling import normalise_latlon
from proda_engine.grid import get_grid

SECONDS_PER_DAY = 86400.0
DAYS_PER_YEAR = 365.0  # the model ignores leap years (spec header)
SECONDS_PER_YEAR = SECONDS_PER_DAY * DAYS_PER_YEAR

LAYERED_MONTHLY = ("TSOI", "W_SCALAR", "O_SCALAR", "FPI_vr")
MONTHLY = ("ALTMAX", "ALTMAX_LASTYEAR")
INPUT_VARS = ("input_cwd", "input_litter1", "input_litter2", "input_litter3")
#: CLM5 per-layer monthly input vectors, by the pool they feed (spec §(h)).
ACC_VECTORS = {
    "input_cwd": "CWD_INPUT_ACC_VECTOR",
    "input_litter1": "LITR1_INPUT_ACC_VECTOR",
    "input_litter2": "LITR2_INPUT_ACC_VECTOR",
    "input_litter3": "LITR3_INPUT_ACC_VECTOR",
}
#: Default split of NPP into the four input pools, used only when neither ``input_*`` nor the ACC
#: vectors exist. These are a documented, configurable assumption of this package (not from the
#: original scripts): roughly CLM5's woody/leaf-fine-root litter partitioning at global scale.
DEFAULT_NPP_SPLIT: dict[str, float] = {
    "input_cwd": 0.10,
    "input_litter1": 0.35,
    "input_litter2": 0.40,
    "input_litter3": 0.15,
}
LEVEL_DIMS = ("levgrnd", "levsoi", "levdcmp", "layer", "lev")
TIME_DIMS = ("time", "month")

CANONICAL_UNITS: dict[str, str] = {
    "TSOI": "K",
    "W_SCALAR": "1",
    "O_SCALAR": "1",
    "FPI_vr": "1",
    "ALTMAX": "m",
    "ALTMAX_LASTYEAR": "m",
    "nbedrock": "1",
    "CELLSAND": "%",
    "input_cwd": "g C m-2 yr-1",
    "input_litter1": "g C m-2 yr-1",
    "input_litter2": "g C m-2 yr-1",
    "input_litter3": "g C m-2 yr-1",
    "NPP": "g C m-2 yr-1",
    "valid": "1",
}
LONG_NAMES: dict[str, str] = {
    "TSOI": "soil temperature",
    "W_SCALAR": "CLM5 water scalar for decomposition",
    "O_SCALAR": "CLM5 oxygen scalar for decomposition",
    "FPI_vr": "fraction of potential N immobilisation",
    "ALTMAX": "maximum annual active layer thickness",
    "ALTMAX_LASTYEAR": "maximum active layer thickness of the previous year",
    "nbedrock": "1-based index of the deepest soil layer above bedrock",
    "CELLSAND": "sand content",
    "input_cwd": "annual carbon input to coarse woody debris",
    "input_litter1": "annual carbon input to metabolic litter",
    "input_litter2": "annual carbon input to cellulose litter",
    "input_litter3": "annual carbon input to lignin litter",
    "NPP": "net primary production",
    "valid": "land cell with every required forcing value finite",
}
TSOI_RANGE_K = (180.0, 350.0)
_RANGE_TOL = 1e-6  # float32 round-off on scalars written as 1.0

# ---------------------------------------------------------------------------------------------
# units


_DIMENSIONLESS = {"1", "unitless", "proportion", "fraction", "none", "-", "dimensionless", "ratio", "0-1"}
_KELVIN = {"k", "kelvin", "degk", "deg_k", "degrees_k", "degree_k", "degreesk"}
_CELSIUS = {"degc", "deg_c", "celsius", "°c", "degrees_c", "degree_c", "degrees_celsius", "degree_celsius",
            "degreec", "degreesc", "c"}
_PERCENT = {"%", "percent", "percentage", "pct"}
_LENGTH = {"m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0, "cm": 0.01, "mm": 0.001}

_MASS_TOKENS = {"g": 1.0, "gc": 1.0, "kg": 1e3, "kgc": 1e3, "mg": 1e-3, "mgc": 1e-3}
_LENGTH_TOKENS = {"m": 1.0, "cm": 0.01, "mm": 1e-3, "km": 1e3}
_TIME_TOKENS = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "d": SECONDS_PER_DAY, "day": SECONDS_PER_DAY, "days": SECONDS_PER_DAY,
    "yr": SECONDS_PER_YEAR, "year": SECONDS_PER_YEAR, "years": SECONDS_PER_YEAR, "a": SECONDS_PER_YEAR,
    "month": SECONDS_PER_YEAR / 12.0, "mon": SECONDS_PER_YEAR / 12.0,
}
_TOKEN_RE = re.compile(r"([a-zA-Z%°]+)\s*(?:\^|\*\*)?\s*(-?\d+)?")


def _norm(units: str) -> str:
    return " ".join(str(units).strip().lower().split())


def parse_compound_units(units: str) -> tuple[float, dict[str, int]] | None:
    """Parse a carbon-density or flux unit string into (factor to g, m, s; exponents).

    Understands the spellings CLM and CF files use: ``gC/m^2/s``, ``gC/m2/s``, ``g C m-2 yr-1``,
    ``g/m^2/s``, ``kg C m-2 s-1``, ``gC m-2 per year``, ``gC/m^3``. ``a/b/c`` means ``a/(b c)``; a
    bare ``C`` (carbon) is a label, not a unit.

    Returns:
        ``(factor, {"mass": e_g, "length": e_m, "time": e_s})`` such that
        ``value_in_g_m_s = value * factor``; ``None`` if any token is not understood.

    >>> f, dims = parse_compound_units("gC/m^2/s")
    >>> f, dims["mass"], dims["length"], dims["time"]
    (1.0, 1, -2, -1)
    """
    s = str(units).strip()
    if not s:
        return None
    factor = 1.0
    dims = {"mass": 0, "length": 0, "time": 0}
    parts = s.split("/")
    seen = False
    for k, part in enumerate(parts):
        sign_part = -1 if k > 0 else 1
        pos = 0
        per_next = False
        part_s = part.strip()
        for m in _TOKEN_RE.finditer(part_s):
            # anything between tokens other than spaces, dots or '*' is not understood
            if part_s[pos:m.start()].strip(" .*·"):
                return None
            pos = m.end()
            name = m.group(1).lower()
            exp = int(m.group(2)) if m.group(2) else 1
            if name == "per":
                per_next = True
                continue
            sign = -sign_part if per_next else sign_part
            per_next = False
            e = sign * exp
            if name == "c" and exp == 1:
                continue  # "g C m-2": carbon label
            if name in _MASS_TOKENS:
                factor *= _MASS_TOKENS[name] ** e
                dims["mass"] += e
            elif name in _LENGTH_TOKENS:
                factor *= _LENGTH_TOKENS[name] ** e
                dims["length"] += e
            elif name in _TIME_TOKENS:
                factor *= _TIME_TOKENS[name] ** e
                dims["time"] += e
            else:
                return None
            seen = True
        if part_s[pos:].strip(" .*·"):
            return None
    return (factor, dims) if seen else None


def flux_to_g_m2_yr(units: str) -> float | None:
    """Factor converting a carbon flux in ``units`` to g C m-2 yr-1, or None if not a flux per area.

    >>> flux_to_g_m2_yr("gC/m^2/s") == 86400 * 365
    True
    >>> flux_to_g_m2_yr("g C m-2 yr-1")
    1.0
    """
    p = parse_compound_units(units)
    if p is None:
        return None
    factor, d = p
    if d != {"mass": 1, "length": -2, "time": -1}:
        return None
    return factor * SECONDS_PER_YEAR


# ---------------------------------------------------------------------------------------------
# file access


@dataclass
class _File:
    path: Path
    ds: xr.Dataset

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class _Context:
    files: list[_File]
    n_layers: int
    conversions: list[str] = field(default_factory=list)
    month_sources: set[str] = field(default_factory=set)
    grid_ref: tuple[str, np.ndarray, np.ndarray] | None = None

    @property
    def label(self) -> str:
        return ", ".join(f.name for f in self.files)

    def has(self, var: str) -> bool:
        return any(var in f.ds.data_vars for f in self.files)

    def pieces(self, var: str) -> list[tuple[_File, xr.DataArray]]:
        return [(f, f.ds[var]) for f in self.files if var in f.ds.data_vars]


def _open(path: Path) -> xr.Dataset:
    try:
        # decode_times=False: CLM uses noleap calendars and end-of-interval stamps; months are
        # decoded below from time_bounds with cftime, element by element.
        ds = xr.open_dataset(path, decode_times=False, decode_timedelta=False, mask_and_scale=True)
    except FileNotFoundError:
        raise ForcingError(f"{path}: file not found") from None
    except Exception as exc:  # netCDF4/h5netcdf raise many types for unreadable files
        raise ForcingError(f"{path.name}: cannot be read as netCDF ({type(exc).__name__}: {exc})") from exc
    return normalise_latlon(ds, source=path.name, error_cls=ForcingError)


def _decode_dates(f: _File, dim: str, n: int) -> tuple[np.ndarray | None, np.ndarray, str]:
    """Calendar (year, month 1..12) of each step along ``dim``; year is None when not decodable.

    Uses the midpoint of the time bounds when present (CLM stamps monthly means at the *end* of the
    averaging interval, i.e. January's mean carries 1 February), else the time value, else the
    position modulo 12 (assumes the series starts in January; no year).
    """
    ds = f.ds
    if dim == "month":
        if "month" in ds.coords:
            vals = np.asarray(ds["month"].values)
            if np.issubdtype(vals.dtype, np.number) and sorted(vals.tolist()) == list(range(1, 13)):
                return None, vals.astype(int), "month coordinate"
        return None, np.arange(n) % 12 + 1, "position"
    if dim in ds.variables:
        t = ds[dim]
        units = t.attrs.get("units")
        calendar = t.attrs.get("calendar", "standard")
        bname = t.attrs.get("bounds")
        if bname not in ds.variables:
            bname = next((b for b in ("time_bounds", "time_bnds", "time_bound") if b in ds.variables), None)
        values = np.asarray(t.values, dtype=np.float64)
        source = "time"
        if bname is not None and ds[bname].ndim == 2 and ds[bname].shape[0] == n:
            b = np.asarray(ds[bname].values, dtype=np.float64)
            values = b.mean(axis=1)
            source = bname
        if units and "since" in str(units):
            try:
                import cftime

                dates = np.atleast_1d(cftime.num2date(values, units, calendar=calendar))
                return (np.array([d.year for d in dates], dtype=int), np.array([d.month for d in dates], dtype=int),
                        source)
            except Exception:  # undecodable calendar/units -> positional fallback below
                pass
    return None, np.arange(n) % 12 + 1, "position"


def _decode_months(f: _File, dim: str, n: int) -> tuple[np.ndarray, str]:
    """Calendar month (1..12) of each step along ``dim`` (see :func:`_decode_dates`)."""
    _, months, source = _decode_dates(f, dim, n)
    return months, source


def _month_mean(values: np.ndarray, months: np.ndarray, *, source: str, var: str) -> np.ndarray:
    """Mean by calendar month over axis 0, skipping NaN element by element (spec §(b))."""
    present = set(months.tolist())
    missing = [m for m in range(1, 13) if m not in present]
    if missing:
        raise ForcingError(
            f"{source}: variable {var!r}: expected all 12 calendar months along time, "
            f"found none for month(s) {missing}"
        )
    if len(months) == 12:
        # One value per calendar month: the mean is a reordering (NaN stays NaN, as a month with no
        # valid value would give); skip the masked sums over the whole grid.
        return np.asarray(values[np.argsort(months, kind="stable")], dtype=np.float64)
    out = np.empty((12, *values.shape[1:]), dtype=np.float64)
    for k in range(1, 13):
        sel = values[months == k]
        finite = np.isfinite(sel)
        cnt = finite.sum(axis=0)
        tot = np.where(finite, sel, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k - 1] = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
    return out


def _check_grid(ctx: _Context, f: _File, var: str) -> None:
    lat = np.asarray(f.ds["lat"].values, dtype=np.float64)
    lon = np.asarray(f.ds["lon"].values, dtype=np.float64)
    if ctx.grid_ref is None:
        ctx.grid_ref = (f"{f.name} ({var})", lat, lon)
        return
    ref_name, rlat, rlon = ctx.grid_ref
    if lat.shape != rlat.shape or lon.shape != rlon.shape:
        raise ForcingError(
            f"{f.name}: variable {var!r}: expected the grid of {ref_name} "
            f"(lat {rlat.size} x lon {rlon.size}), found lat {lat.size} x lon {lon.size}"
        )
    if not (np.allclose(lat, rlat, atol=1e-6) and np.allclose(lon, rlon, atol=1e-6)):
        raise ForcingError(
            f"{f.name}: variable {var!r}: grid coordinates differ from {ref_name} "
            f"(same shape, different lat/lon values)"
        )


def _load(
    ctx: _Context, var: str, *, layered: bool, timed: str
) -> tuple[np.ndarray, str, str | None, np.ndarray | None]:
    """Read one variable into float64 with canonical axis order.

    Args:
        layered: the variable must have a level dim (sliced to the first n_layers).
        timed: "required" (monthly), "optional" (averaged away if present) or "none".

    Returns:
        (values, file label, units attribute, months) where values are (time?, layer?, lat, lon) and
        months the calendar month of each time step (None if no time axis).
    """
    pieces = ctx.pieces(var)
    arrays: list[np.ndarray] = []
    months_all: list[np.ndarray] = []
    units: str | None = None
    names = []
    for f, da in pieces:
        names.append(f.name)
        src = f.name
        if not (np.issubdtype(da.dtype, np.number) or np.issubdtype(da.dtype, np.bool_)):
            raise ForcingError(f"{src}: variable {var!r}: expected numeric values, found dtype {da.dtype}")
        _check_grid(ctx, f, var)
        tdim = next((d for d in TIME_DIMS if d in da.dims), None)
        ldim = next((d for d in LEVEL_DIMS if d in da.dims), None)
        expected = [d for d in ([tdim] if tdim else []) + ([ldim] if ldim else []) + ["lat", "lon"]]
        extra = [d for d in da.dims if d not in expected]
        # singleton extra dims (e.g. a lone 'hist_interval') are harmless; anything else is a shape error
        for d in extra:
            if da.sizes[d] == 1:
                da = da.isel({d: 0})
            else:
                raise ForcingError(
                    f"{src}: variable {var!r}: unexpected dimension {d!r} of length {da.sizes[d]}; "
                    f"found dims {da.dims}"
                )
        want = ("(time|month, " if timed == "required" else "(") + ("level, " if layered else "") + "lat, lon)"
        if layered and ldim is None:
            raise ForcingError(
                f"{src}: variable {var!r}: expected dims {want} with a level dim named one of "
                f"{list(LEVEL_DIMS)}, found {da.dims}"
            )
        if not layered and ldim is not None:
            if da.sizes[ldim] == 1:
                da = da.isel({ldim: 0})
                ldim = None
            else:
                raise ForcingError(f"{src}: variable {var!r}: expected dims {want}, found {da.dims}")
        if timed == "required" and tdim is None:
            raise ForcingError(f"{src}: variable {var!r}: expected dims {want}, found {da.dims}")
        if timed == "none" and tdim is not None and da.sizes[tdim] == 1:
            da = da.isel({tdim: 0})
            tdim = None
        if ldim is not None:
            nlev = da.sizes[ldim]
            if nlev < ctx.n_layers:
                raise ForcingError(
                    f"{src}: variable {var!r}: expected at least {ctx.n_layers} levels along {ldim!r}, "
                    f"found {nlev}"
                )
            da = da.isel({ldim: slice(0, ctx.n_layers)})
        order = [d for d in (tdim, ldim, "lat", "lon") if d is not None]
        arr = np.asarray(da.transpose(*order).values, dtype=np.float64)
        if tdim is not None:
            n = da.sizes[tdim]
            if tdim == "month" and n != 12:
                raise ForcingError(f"{src}: variable {var!r}: expected 12 entries along 'month', found {n}")
            months, msrc = _decode_months(f, tdim, n)
            ctx.month_sources.add(msrc)
            months_all.append(months)
        elif months_all:
            raise ForcingError(f"{src}: variable {var!r}: has no time dim in this file but has one in another")
        arrays.append(arr)
        u = da.attrs.get("units")
        if units is None:
            units = u
        elif u is not None and _norm(u) != _norm(units):
            raise ForcingError(
                f"{src}: variable {var!r}: units {u!r} differ from {units!r} in {names[0]}"
            )
        if not months_all or tdim is None:
            # a time-constant field present in several files: the first one wins
            break
    label = ", ".join(names)
    if months_all:
        values = np.concatenate(arrays, axis=0)
        months = np.concatenate(months_all)
        if timed == "required" or timed == "optional":
            if values.shape[0] % 12 != 0:
                raise ForcingError(
                    f"{label}: variable {var!r}: expected 12 monthly entries or a multiple of 12 along time, "
                    f"found {values.shape[0]}"
                )
        return values, label, units, months
    return arrays[0], label, units, None


def _range_str(a: np.ndarray) -> str:
    f = a[np.isfinite(a)]
    if f.size == 0:
        return "no finite values"
    return f"values {f.min():.6g}..{f.max():.6g}"


def _check_range(a: np.ndarray, lo: float | None, hi: float | None, *, src: str, var: str, what: str) -> None:
    f = a[np.isfinite(a)]
    if f.size == 0:
        return
    bad_lo = lo is not None and f.min() < lo - _RANGE_TOL * max(1.0, abs(lo))
    bad_hi = hi is not None and f.max() > hi + _RANGE_TOL * max(1.0, abs(hi))
    if bad_lo or bad_hi:
        n_bad = int((f < lo).sum() if lo is not None else 0) + int((f > hi).sum() if hi is not None else 0)
        raise ForcingError(
            f"{src}: variable {var!r}: expected {what}, found {_range_str(a)} ({n_bad} value(s) out of range)"
        )


# ---------------------------------------------------------------------------------------------
# per-variable conversion


def _tsoi(ctx: _Context) -> np.ndarray:
    vals, src, units, months = _load(ctx, "TSOI", layered=True, timed="required")
    vals = _month_mean(vals, months, source=src, var="TSOI")
    u = _norm(units or "")
    if u in _CELSIUS:
        vals = vals + 273.15
        ctx.conversions.append(f"TSOI: {units} -> K (+273.15)")
    elif u not in _KELVIN:
        raise ForcingError(
            f"{src}: variable 'TSOI': expected units K (kelvin), found units {units!r} (not understood)"
        )
    else:
        f = vals[np.isfinite(vals)]
        if f.size and f.max() < 100.0:
            raise ForcingError(
                f"{src}: variable 'TSOI': expected kelvin (values {TSOI_RANGE_K[0]:.0f}..{TSOI_RANGE_K[1]:.0f}), "
                f"found {_range_str(vals)} (looks like degrees Celsius; set units to 'degC' to convert)"
            )
    _check_range(vals, *TSOI_RANGE_K, src=src, var="TSOI",
                 what=f"kelvin (values {TSOI_RANGE_K[0]:.0f}..{TSOI_RANGE_K[1]:.0f})")
    return vals


def _dimensionless_scale(units: str | None, *, src: str, var: str, allow_percent: bool) -> float:
    if units is None:
        raise ForcingError(f"{src}: variable {var!r}: expected a 'units' attribute (e.g. '1'), found none")
    u = _norm(units)
    if u in _DIMENSIONLESS:
        return 1.0
    if allow_percent and u in _PERCENT:
        return 0.01
    raise ForcingError(f"{src}: variable {var!r}: expected dimensionless units ('1', 'unitless', "
                       f"'proportion', 'fraction'), found units {units!r} (not understood)")


def _scalar(ctx: _Context, var: str) -> np.ndarray:
    vals, src, units, months = _load(ctx, var, layered=True, timed="required")
    vals = _month_mean(vals, months, source=src, var=var)
    scale = _dimensionless_scale(units, src=src, var=var, allow_percent=True)
    if scale != 1.0:
        vals = vals * scale
        ctx.conversions.append(f"{var}: {units} -> 1 (x {scale:g})")
    _check_range(vals, 0.0, 1.0, src=src, var=var, what="values in [0, 1]")
    return vals


def _length(ctx: _Context, var: str) -> np.ndarray:
    vals, src, units, months = _load(ctx, var, layered=False, timed="required")
    vals = _month_mean(vals, months, source=src, var=var)
    u = _norm(units or "")
    if u not in _LENGTH:
        raise ForcingError(f"{src}: variable {var!r}: expected length units (m, cm, mm), "
                           f"found units {units!r} (not understood)")
    if _LENGTH[u] != 1.0:
        vals = vals * _LENGTH[u]
        ctx.conversions.append(f"{var}: {units} -> m (x {_LENGTH[u]:g})")
    _check_range(vals, 0.0, None, src=src, var=var, what="non-negative thickness in m")
    return vals


def _cellsand(ctx: _Context) -> np.ndarray:
    vals, src, units, months = _load(ctx, "CELLSAND", layered=True, timed="optional")
    if months is not None:
        vals = _month_mean(vals, months, source=src, var="CELLSAND")
        finite = np.isfinite(vals)
        cnt = finite.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            vals = np.where(cnt > 0, np.where(finite, vals, 0.0).sum(axis=0) / np.maximum(cnt, 1), np.nan)
    u = _norm(units or "")
    if u in _PERCENT:
        pass
    elif u in _DIMENSIONLESS:
        f = vals[np.isfinite(vals)]
        if f.size and f.max() > 1.0 + _RANGE_TOL:
            raise ForcingError(f"{src}: variable 'CELLSAND': units {units!r} mean a fraction (0..1), "
                               f"found {_range_str(vals)}; set units to '%' if these are percent")
        vals = vals * 100.0
        ctx.conversions.append(f"CELLSAND: {units} -> % (x 100)")
    else:
        raise ForcingError(f"{src}: variable 'CELLSAND': expected units % or percent, "
                           f"found units {units!r} (not understood)")
    _check_range(vals, 0.0, 100.0, src=src, var="CELLSAND", what="percent in [0, 100]")
    return vals


def _rate2d(ctx: _Context, var: str) -> np.ndarray:
    """An annual flux (lat, lon) in g C m-2 yr-1; monthly rates are averaged with equal weights."""
    vals, src, units, months = _load(ctx, var, layered=False, timed="optional")
    if months is not None:
        monthly = _month_mean(vals, months, source=src, var=var)
        finite = np.isfinite(monthly)
        cnt = finite.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            vals = np.where(cnt > 0, np.where(finite, monthly, 0.0).sum(axis=0) / np.maximum(cnt, 1), np.nan)
    if units is None:
        raise ForcingError(f"{src}: variable {var!r}: expected a 'units' attribute (e.g. 'gC/m^2/s'), found none")
    factor = flux_to_g_m2_yr(units)
    if factor is None:
        raise ForcingError(f"{src}: variable {var!r}: expected a carbon flux per area (e.g. gC/m^2/s, "
                           f"g C m-2 yr-1), found units {units!r} (not understood)")
    if factor != 1.0:
        vals = vals * factor
        ctx.conversions.append(f"{var}: {units} -> g C m-2 yr-1 (x {factor:g})")
    return vals


def _from_acc_vectors(ctx: _Context, grid_name: str) -> dict[str, np.ndarray]:
    """Annual inputs from CLM5's per-layer monthly input vectors (spec §(h)).

    I_tot = sum over months and layers of value x dz_j, dz of the first n layers of the grid.
    Units: ``gC/m^3`` (no time) are taken as g C m-3 accumulated per month, as in the original
    scripts (spec §(h), [inferred]); a rate (e.g. ``gC/m^3/s``) is averaged over months and
    multiplied by the seconds in a 365-day year.
    """
    grid = get_grid(grid_name)
    if grid.n_layers < ctx.n_layers:
        raise ForcingError(f"grid {grid_name!r} has {grid.n_layers} layers, fewer than n_layers={ctx.n_layers}")
    dz = grid.dz[: ctx.n_layers]
    out: dict[str, np.ndarray] = {}
    for pool, var in ACC_VECTORS.items():
        vals, src, units, months = _load(ctx, var, layered=True, timed="required")
        monthly = _month_mean(vals, months, source=src, var=var)
        p = parse_compound_units(units or "")
        if p is None or p[1]["mass"] != 1 or p[1]["length"] != -3 or p[1]["time"] not in (0, -1):
            raise ForcingError(f"{src}: variable {var!r}: expected g C m-3 per month (e.g. 'gC/m^3') or a "
                               f"rate such as 'gC/m^3/s', found units {units!r} (not understood)")
        factor, d = p
        per_m2 = np.einsum("mjyx,j->myx", monthly, dz)  # g C m-2 per month (or rate), NaN propagates
        if d["time"] == 0:
            total = per_m2.sum(axis=0) * factor
            note = f"{var}: sum over 12 months and layers x dz ({units} taken as per month) -> {pool} g C m-2 yr-1"
        else:
            total = per_m2.mean(axis=0) * factor * SECONDS_PER_YEAR
            note = f"{var}: mean rate over months x layers x dz x s/yr ({units}) -> {pool} g C m-2 yr-1"
        ctx.conversions.append(note)
        out[pool] = total
    return out


def _check_npp_split(split: Mapping[str, float]) -> dict[str, float]:
    keys = set(split)
    if keys != set(INPUT_VARS):
        raise ValueError(f"npp_split: expected keys {list(INPUT_VARS)}, found {sorted(keys)}")
    vals = {k: float(v) for k, v in split.items()}
    if any(v < 0 or not np.isfinite(v) for v in vals.values()):
        raise ValueError(f"npp_split: expected non-negative fractions, found {vals}")
    if abs(sum(vals.values()) - 1.0) > 1e-6:
        raise ValueError(f"npp_split: expected fractions summing to 1, found sum {sum(vals.values()):.6g}")
    return vals


def _nbedrock(ctx: _Context) -> tuple[np.ndarray, str]:
    vals, src, units, months = _load(ctx, "nbedrock", layered=False, timed="optional")
    if months is not None:
        # constant in time in CLM; refuse a time-varying field rather than pick one silently
        with np.errstate(invalid="ignore"):
            lo = np.where(np.isfinite(vals), vals, np.inf).min(axis=0)
            hi = np.where(np.isfinite(vals), vals, -np.inf).max(axis=0)
        varying = np.isfinite(lo) & (hi != lo)
        if varying.any():
            raise ForcingError(f"{src}: variable 'nbedrock': expected constant in time, "
                               f"found {int(varying.sum())} cell(s) where it varies")
        vals = np.where(np.isfinite(lo), lo, np.nan)
    if units is not None and _norm(units) not in _DIMENSIONLESS | {"index", "layer"}:
        raise ForcingError(f"{src}: variable 'nbedrock': expected a dimensionless layer index, "
                           f"found units {units!r} (not understood)")
    return vals, src


# ---------------------------------------------------------------------------------------------
# public API


def _as_paths(paths: str | PathLike | Sequence[str | PathLike]) -> list[Path]:
    if isinstance(paths, (str, PathLike)):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise ForcingError("forcing: expected at least one file, found none")
    return out


def read_forcing(
    paths: str | PathLike | Sequence[str | PathLike],
    *,
    n_layers: int = 20,
    source_name: str | None = None,
    npp_split: Mapping[str, float] | None = None,
    grid: str = "clm5_20",
) -> xr.Dataset:
    """Read CLM5-history-style forcing and return the normalised forcing Dataset (module docstring).

    Several files are merged by variable name. A variable that has a time dim and appears in
    several files (monthly ``<case>.clm2.h0.YYYY-MM.nc`` files) is concatenated along time; a
    time-constant variable is taken from the first file that has it.

    Accepted input:
      * ``time`` of 12 entries or a multiple of 12 (averaged by calendar month, decoded from
        ``time_bounds`` midpoints / ``time`` with cftime, else position mod 12), or ``month`` of 12;
      * level dim ``levgrnd`` (first ``n_layers`` of 25 used), ``levsoi``, ``levdcmp``, ``layer``;
      * longitudes 0..360 or -180..180; CF ``_FillValue``/``missing_value`` (CLM: 1e36) -> missing;
      * units as CLM/CF spell them; fluxes per second are converted with 86400 x 365 s/yr; TSOI in
        ``degC`` is converted (recorded in ``attrs['conversions']``).

    Carbon inputs (g C m-2 yr-1) come from, in order: ``input_cwd``/``input_litter1..3``; CLM5's
    ``*_INPUT_ACC_VECTOR`` (sum over months and layers of value x dz, spec §(h)); ``NPP`` split by
    ``npp_split`` (default :data:`DEFAULT_NPP_SPLIT`; cells with negative NPP are marked invalid and
    counted in ``attrs['n_cells_negative_npp']``).

    Args:
        paths: one file or a list of files.
        n_layers: model layers to keep (20 for ``clm5_20``).
        source_name: label stored in ``attrs['source_name']`` (e.g. the catalog source).
        npp_split: fractions of NPP going to ``input_cwd``, ``input_litter1..3`` (sum 1).
        grid: layer grid whose dz is used for the ACC-vector integration.

    Raises:
        ForcingError: a message naming the file, the variable, expected and found.
    """
    files = [_File(p, _open(p)) for p in _as_paths(paths)]
    try:
        return _read(files, n_layers=n_layers, source_name=source_name, npp_split=npp_split, grid=grid)
    finally:
        for f in files:
            f.ds.close()


def _read(
    files: list[_File], *, n_layers: int, source_name: str | None,
    npp_split: Mapping[str, float] | None, grid: str,
) -> xr.Dataset:
    ctx = _Context(files=files, n_layers=n_layers)
    label = ctx.label
    missing = [v for v in (*LAYERED_MONTHLY, *MONTHLY, "nbedrock") if not ctx.has(v)]
    present_inputs = [v for v in INPUT_VARS if ctx.has(v)]
    if present_inputs and len(present_inputs) < 4:
        missing += [v for v in INPUT_VARS if v not in present_inputs]
        input_mode = "inputs"
    elif present_inputs:
        input_mode = "inputs"
    elif all(ctx.has(v) for v in ACC_VECTORS.values()):
        input_mode = "acc"
    elif ctx.has("NPP"):
        input_mode = "npp"
    else:
        missing.append(
            "carbon inputs (input_cwd, input_litter1..3; or CWD/LITR1/LITR2/LITR3_INPUT_ACC_VECTOR; or NPP)"
        )
        input_mode = "none"
    if missing:
        raise ForcingError(f"{label}: missing required variable(s): {', '.join(missing)}")

    data: dict[str, np.ndarray] = {}
    data["TSOI"] = _tsoi(ctx)
    for v in ("W_SCALAR", "O_SCALAR", "FPI_vr"):
        data[v] = _scalar(ctx, v)
    for v in MONTHLY:
        data[v] = _length(ctx, v)
    nb, nb_src = _nbedrock(ctx)
    if ctx.has("CELLSAND"):
        data["CELLSAND"] = _cellsand(ctx)
    npp = _rate2d(ctx, "NPP") if ctx.has("NPP") else None

    attrs: dict[str, object] = {}
    extra_invalid = np.zeros(nb.shape, dtype=bool)
    if input_mode == "inputs":
        for v in INPUT_VARS:
            data[v] = _rate2d(ctx, v)
            _check_range(data[v], 0.0, None, src=label, var=v, what="non-negative input in g C m-2 yr-1")
        attrs["input_source"] = "input_* variables"
    elif input_mode == "acc":
        data.update(_from_acc_vectors(ctx, grid))
        for v in INPUT_VARS:
            _check_range(data[v], 0.0, None, src=label, var=v, what="non-negative input in g C m-2 yr-1")
        attrs["input_source"] = "CLM5 *_INPUT_ACC_VECTOR (sum over months and layers x dz)"
    else:
        split = _check_npp_split(npp_split if npp_split is not None else DEFAULT_NPP_SPLIT)
        assert npp is not None
        neg = np.isfinite(npp) & (npp < 0)
        extra_invalid |= neg
        attrs["n_cells_negative_npp"] = int(neg.sum())
        for v in INPUT_VARS:
            data[v] = npp * split[v]
        attrs["input_source"] = "NPP split"
        attrs["npp_split"] = ", ".join(f"{k}={split[k]:g}" for k in INPUT_VARS)
        ctx.conversions.append("inputs: NPP x npp_split fractions")
    if npp is not None:
        data["NPP"] = npp

    # valid = every required value finite (all months, all layers: decomposition continues below bedrock)
    valid = np.isfinite(nb)
    for v in (*LAYERED_MONTHLY, *MONTHLY):
        valid &= np.isfinite(data[v]).all(axis=tuple(range(data[v].ndim - 2)))
    for v in INPUT_VARS:
        valid &= np.isfinite(data[v])
    valid &= ~extra_invalid
    nb_valid = nb[valid]
    bad = (nb_valid < 1) | (nb_valid > n_layers) | (nb_valid != np.round(nb_valid))
    if bad.any():
        assert ctx.grid_ref is not None
        lat, lon = ctx.grid_ref[1], ctx.grid_ref[2]
        iy, ix = np.nonzero(valid)
        k = int(np.flatnonzero(bad)[0])
        raise ForcingError(
            f"{nb_src}: variable 'nbedrock': expected integer layer index in 1..{n_layers} on valid cells, "
            f"found {int(bad.sum())} cell(s) outside, e.g. {nb_valid[k]:g} at lat={lat[iy[k]]:g}, lon={lon[ix[k]]:g}"
        )
    nbedrock = np.where(valid, np.nan_to_num(nb, nan=-1.0), -1.0).astype(np.int32)

    assert ctx.grid_ref is not None  # set by the first variable read
    lat, lon = ctx.grid_ref[1], ctx.grid_ref[2]
    ds = build_forcing_dataset(data, nbedrock, valid, lat=lat, lon=lon, n_layers=n_layers)
    ds.attrs.update(attrs)
    ds.attrs["source"] = label
    if source_name is not None:
        ds.attrs["source_name"] = source_name
    ds.attrs["conversions"] = "; ".join(ctx.conversions)
    ds.attrs["month_source"] = ", ".join(sorted(ctx.month_sources))
    ds.attrs["n_layers"] = n_layers
    ds.attrs["n_valid_cells"] = int(valid.sum())
    validate_forcing(ds, n_layers=n_layers)
    return ds


def build_forcing_dataset(
    data: Mapping[str, np.ndarray],
    nbedrock: np.ndarray,
    valid: np.ndarray,
    *,
    lat: np.ndarray,
    lon: np.ndarray,
    n_layers: int,
) -> xr.Dataset:
    """Assemble arrays already in canonical units into the normalised forcing Dataset.

    Useful for writers of synthetic forcing (arrays: (month, layer, lat, lon), (month, lat, lon),
    (layer, lat, lon) or (lat, lon) as in the module table).
    """
    dims_of = {
        **{v: ("month", "layer", "lat", "lon") for v in LAYERED_MONTHLY},
        **{v: ("month", "lat", "lon") for v in MONTHLY},
        "CELLSAND": ("layer", "lat", "lon"),
        **{v: ("lat", "lon") for v in (*INPUT_VARS, "NPP")},
    }
    variables = {}
    for name, arr in data.items():
        variables[name] = xr.Variable(
            dims_of[name], np.asarray(arr, dtype=np.float64),
            {"units": CANONICAL_UNITS[name], "long_name": LONG_NAMES[name]},
        )
    variables["nbedrock"] = xr.Variable(
        ("lat", "lon"), np.asarray(nbedrock, dtype=np.int32),
        {"units": "1", "long_name": LONG_NAMES["nbedrock"]},
    )
    variables["valid"] = xr.Variable(("lat", "lon"), np.asarray(valid, dtype=bool),
                                     {"long_name": LONG_NAMES["valid"]})
    return xr.Dataset(
        variables,
        coords={
            "month": ("month", np.arange(1, 13), {"long_name": "calendar month"}),
            "layer": ("layer", np.arange(1, n_layers + 1), {"long_name": "soil layer index (1 = top)"}),
            "lat": ("lat", np.asarray(lat, dtype=np.float64), {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", np.asarray(lon, dtype=np.float64), {"units": "degrees_east", "standard_name": "longitude"}),
        },
    )


def validate_forcing(ds: xr.Dataset, *, n_layers: int | None = None) -> xr.Dataset:
    """Check a Dataset against the normalised forcing contract (module docstring); return it unchanged.

    Checks presence, dims, dtypes, canonical ``units`` attributes, coordinates (month 1..12, layer
    1..n, lat/lon ascending, lon in -180..180), value ranges (TSOI 180..350 K, scalars in [0, 1],
    ALTMAX >= 0, inputs >= 0 on valid cells, CELLSAND 0..100 %), ``nbedrock`` in 1..n on valid cells,
    and that every valid cell has finite required values.

    Raises:
        ForcingError: naming ``ds.attrs['source']`` (or "forcing dataset"), the variable, expected and found.
    """
    src = str(ds.attrs.get("source_name") or ds.attrs.get("source") or "forcing dataset")
    n = int(n_layers if n_layers is not None else ds.sizes.get("layer", 0))
    required = (*LAYERED_MONTHLY, *MONTHLY, "nbedrock", *INPUT_VARS, "valid")
    missing = [v for v in required if v not in ds.data_vars]
    if missing:
        raise ForcingError(f"{src}: missing required variable(s): {', '.join(missing)}")
    expected_dims = {
        **{v: ("month", "layer", "lat", "lon") for v in LAYERED_MONTHLY},
        **{v: ("month", "lat", "lon") for v in MONTHLY},
        "nbedrock": ("lat", "lon"), "valid": ("lat", "lon"), "CELLSAND": ("layer", "lat", "lon"),
        **{v: ("lat", "lon") for v in (*INPUT_VARS, "NPP")},
    }
    for v, dims in expected_dims.items():
        if v not in ds.data_vars:
            continue
        if ds[v].dims != dims:
            raise ForcingError(f"{src}: variable {v!r}: expected dims {dims}, found {ds[v].dims}")
        want_dtype = np.int32 if v == "nbedrock" else (np.bool_ if v == "valid" else np.float64)
        if ds[v].dtype != want_dtype:
            raise ForcingError(f"{src}: variable {v!r}: expected dtype {np.dtype(want_dtype)}, found {ds[v].dtype}")
        if v != "valid" and ds[v].attrs.get("units") != CANONICAL_UNITS[v]:
            raise ForcingError(f"{src}: variable {v!r}: expected units {CANONICAL_UNITS[v]!r}, "
                               f"found {ds[v].attrs.get('units')!r}")
    if ds.sizes["month"] != 12 or list(ds["month"].values) != list(range(1, 13)):
        raise ForcingError(f"{src}: coordinate 'month': expected 1..12, found {list(ds['month'].values)}")
    if ds.sizes["layer"] != n or list(ds["layer"].values) != list(range(1, n + 1)):
        raise ForcingError(f"{src}: coordinate 'layer': expected 1..{n}, found {ds.sizes['layer']} entries")
    lat = np.asarray(ds["lat"].values)
    lon = np.asarray(ds["lon"].values)
    if lat.size > 1 and not np.all(np.diff(lat) > 0):
        raise ForcingError(f"{src}: coordinate 'lat': expected strictly ascending")
    if lon.size > 1 and not np.all(np.diff(lon) > 0):
        raise ForcingError(f"{src}: coordinate 'lon': expected strictly ascending")
    if lon.size and (lon.min() < -180.0 or lon.max() > 180.0):
        raise ForcingError(f"{src}: coordinate 'lon': expected -180..180, found {lon.min():g}..{lon.max():g}")

    valid = ds["valid"].values
    _check_range(ds["TSOI"].values, *TSOI_RANGE_K, src=src, var="TSOI",
                 what=f"kelvin (values {TSOI_RANGE_K[0]:.0f}..{TSOI_RANGE_K[1]:.0f})")
    for v in ("W_SCALAR", "O_SCALAR", "FPI_vr"):
        _check_range(ds[v].values, 0.0, 1.0, src=src, var=v, what="values in [0, 1]")
    for v in MONTHLY:
        _check_range(ds[v].values, 0.0, None, src=src, var=v, what="non-negative thickness in m")
    for v in INPUT_VARS:
        _check_range(ds[v].values[valid], 0.0, None, src=src, var=v,
                     what="non-negative input in g C m-2 yr-1 on valid cells")
    if "CELLSAND" in ds:
        _check_range(ds["CELLSAND"].values, 0.0, 100.0, src=src, var="CELLSAND", what="percent in [0, 100]")
    nb = ds["nbedrock"].values
    bad = valid & ((nb < 1) | (nb > n))
    if bad.any():
        iy, ix = np.nonzero(bad)
        raise ForcingError(
            f"{src}: variable 'nbedrock': expected 1..{n} on valid cells, found {int(bad.sum())} cell(s) outside, "
            f"e.g. {nb[iy[0], ix[0]]} at lat={lat[iy[0]]:g}, lon={lon[ix[0]]:g}"
        )
    for v in (*LAYERED_MONTHLY, *MONTHLY, *INPUT_VARS):
        a = ds[v].values
        fin = np.isfinite(a).all(axis=tuple(range(a.ndim - 2))) if a.ndim > 2 else np.isfinite(a)
        nonfinite = valid & ~fin
        if nonfinite.any():
            raise ForcingError(f"{src}: variable {v!r}: expected finite values on every valid cell, "
                               f"found {int(nonfinite.sum())} valid cell(s) with NaN/inf")
    return ds


# ---------------------------------------------------------------------------------------------
# forcing time series (transient scenarios): one normalised 12-month Dataset per simulated year


def _time_dim(ds: xr.Dataset) -> str | None:
    return next((d for d in TIME_DIMS if d in ds.dims), None)


@dataclass(frozen=True)
class ForcingSeries:
    """A multi-year forcing series read one year at a time (``len(series)`` years).

    ``series.year(i)`` (0-based) is year i's normalised forcing Dataset (the :func:`read_forcing`
    contract: 12 months, the same checks and unit conversions); ``labels[i]`` is its calendar year, or
    its position (1-based) when the files carry no decodable dates. Built by :func:`read_forcing_series`.
    """

    groups: tuple[tuple[tuple[Path, tuple[int, ...] | None], ...], ...]  # per year: (file, time positions)
    labels: tuple[int, ...]
    grouping: str  # "calendar year" or "12 steps per year, in file order"
    n_layers: int = 20
    source_name: str | None = None
    npp_split: Mapping[str, float] | None = None
    grid: str = "clm5_20"

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def paths(self) -> list[Path]:
        """Every file of the series, in order, once."""
        return list(dict.fromkeys(p for g in self.groups for p, _ in g))

    def year(self, i: int) -> xr.Dataset:
        """Year ``i`` (0-based) as a normalised forcing Dataset; ``attrs['series_year']`` its label."""
        if not 0 <= i < len(self.groups):
            raise IndexError(f"forcing series: year index {i} out of range 0..{len(self.groups) - 1}")
        files: list[_File] = []
        try:
            for path, pos in self.groups[i]:
                ds = _open(path)
                dim = _time_dim(ds)
                if pos is not None and dim is not None:
                    ds = ds.isel({dim: list(pos)})
                files.append(_File(path, ds))
            out = _read(files, n_layers=self.n_layers, source_name=self.source_name, npp_split=self.npp_split,
                        grid=self.grid)
        finally:
            for f in files:
                f.ds.close()
        out.attrs["series_year"] = int(self.labels[i])
        return out


def read_forcing_series(
    paths: str | PathLike | Sequence[str | PathLike],
    *,
    n_layers: int = 20,
    source_name: str | None = None,
    npp_split: Mapping[str, float] | None = None,
    grid: str = "clm5_20",
) -> ForcingSeries:
    """Index a multi-year CLM5-history-style forcing series (files opened here only to read their dates).

    Steps are grouped into simulated years:

    * by **calendar year** when every timed file's dates decode (``time_bounds`` midpoints / ``time``
      with cftime, as :func:`read_forcing`) and no (year, month) occurs twice: monthly h0 files
      (``case.clm2.h0.2001-01.nc`` ...), yearly files, or one file of many years all work; each year
      must then hold all 12 months exactly once;
    * otherwise **in file order, 12 steps per year**: each timed file must have a multiple of 12 steps
      (e.g. one 12-month file per year whose stamps repeat the same climatological year).

    Files without a time dim (e.g. a surface file with ``nbedrock``) join every year. Each year is then
    read by the same code as :func:`read_forcing` (so the same checks, units and messages).

    Raises:
        ForcingError: naming the file, the year and the months expected and found.
    """
    plist = _as_paths(paths)
    timed: list[tuple[Path, np.ndarray | None, np.ndarray, int]] = []  # path, years, months, n steps
    constant: list[Path] = []
    for path in plist:
        ds = _open(path)
        try:
            dim = _time_dim(ds)
            if dim is None:
                constant.append(path)
                continue
            n = int(ds.sizes[dim])
            years, months, _ = _decode_dates(_File(path, ds), dim, n)
            timed.append((path, years, months, n))
        finally:
            ds.close()
    if not timed:
        raise ForcingError(f"{', '.join(p.name for p in plist)}: expected monthly forcing along 'time' or "
                           f"'month' in at least one file, found no time dim")
    const = tuple((p, None) for p in constant)
    stamps = [(int(y), int(m)) for _, ys, ms, _ in timed if ys is not None for y, m in zip(ys, ms)]
    calendar = all(ys is not None for _, ys, _, _ in timed) and len(stamps) == len(set(stamps))
    groups: list[tuple[tuple[Path, tuple[int, ...] | None], ...]] = []
    labels: list[int] = []
    if calendar:
        for yr in sorted({y for y, _ in stamps}):
            parts, found = [], []
            for path, ys, ms, _ in timed:
                pos = np.flatnonzero(ys == yr)
                if pos.size:
                    parts.append((path, tuple(int(i) for i in pos)))
                    found += ms[pos].tolist()
            if sorted(found) != list(range(1, 13)):
                names = ", ".join(p.name for p, _ in parts)
                raise ForcingError(f"{names}: year {yr}: expected the 12 calendar months once each, "
                                   f"found months {sorted(found)}")
            groups.append((*parts, *const))
            labels.append(yr)
        grouping = "calendar year"
    else:
        for path, _, ms, n in timed:
            if n % 12:
                raise ForcingError(f"{path.name}: expected a multiple of 12 monthly steps along time "
                                   f"(dates not decodable or repeated across files, so years are taken as "
                                   f"12 consecutive steps), found {n}")
            for k in range(n // 12):
                pos = tuple(range(12 * k, 12 * k + 12))
                got = sorted(ms[list(pos)].tolist())
                if got != list(range(1, 13)):
                    raise ForcingError(f"{path.name}: steps {12 * k + 1}-{12 * k + 12}: expected the 12 calendar "
                                       f"months once each, found months {got}")
                groups.append(((path, pos), *const))
                labels.append(len(groups))
        grouping = "12 steps per year, in file order"
    return ForcingSeries(groups=tuple(groups), labels=tuple(labels), grouping=grouping, n_layers=n_layers,
                         source_name=source_name, npp_split=npp_split, grid=grid)
