"""Covariate grids: netCDF and single-band lat/lon GeoTIFF -> one xarray Dataset (data contract §2).

Each covariate is a 2-D (lat, lon) float64 variable on one shared grid (lat ascending, lon ascending
in -180..180). Missing values (CF ``_FillValue``/``missing_value``, GeoTIFF ``GDAL_NODATA``, values
outside a declared valid range) become NaN; nothing is filled. ``valid`` (lat, lon) is True where
every selected covariate is finite (spec §(n): a cell is valid if all covariates are present).
Categorical covariates carry ``attrs['categorical'] = 1`` so the network can encode them explicitly.

Example
-------
>>> ds = read_covariates(["covariates.nc", "Elevation.tif"], categorical=["ESA_Land_Cover"])  # doctest: +SKIP
>>> ds["valid"].dtype                                                                         # doctest: +SKIP
dtype('bool')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import xarray as xr

from proda_engine.data.errors import CovariateError
from proda_engine.data.sampling import normalise_latlon

# GeoTIFF tag codes (GeoTIFF 1.0 spec; GDAL private tags)
TAG_MODEL_PIXEL_SCALE = 33550
TAG_MODEL_TIEPOINT = 33922
TAG_MODEL_TRANSFORMATION = 34264
TAG_GEO_KEY_DIRECTORY = 34735
TAG_GDAL_METADATA = 42112
TAG_GDAL_NODATA = 42113
GEOKEY_MODEL_TYPE = 1024  # 1 projected, 2 geographic
GEOKEY_RASTER_TYPE = 1025  # 1 PixelIsArea, 2 PixelIsPoint
GEOKEY_GEOGRAPHIC_TYPE = 2048  # EPSG code of the geographic CRS (4326 = WGS84)
TIFF_SUFFIXES = (".tif", ".tiff")
NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf")


def _read_netcdf(path: Path, variables: Sequence[str] | None) -> dict[str, xr.DataArray]:
    try:
        ds = xr.open_dataset(path, mask_and_scale=True, decode_times=False)
    except FileNotFoundError:
        raise CovariateError(f"{path}: file not found") from None
    except Exception as exc:
        raise CovariateError(f"{path.name}: cannot be read as netCDF ({type(exc).__name__}: {exc})") from exc
    with ds:
        ds = normalise_latlon(ds, source=path.name, error_cls=CovariateError)
        out: dict[str, xr.DataArray] = {}
        for name, da in ds.data_vars.items():
            spatial = set(da.dims) == {"lat", "lon"}
            if variables is not None and name not in variables:
                continue
            if name == "valid":
                continue  # reserved: the reader computes its own mask from the covariates
            if not spatial:
                if variables is not None:
                    raise CovariateError(f"{path.name}: variable {name!r}: expected dims (lat, lon), found {da.dims}")
                continue  # bounds, crs and other non-grid variables
            if not (np.issubdtype(da.dtype, np.number) or np.issubdtype(da.dtype, np.bool_)):
                raise CovariateError(f"{path.name}: variable {name!r}: expected numeric values, found {da.dtype}")
            arr = np.asarray(da.transpose("lat", "lon").values, dtype=np.float64)
            out[str(name)] = xr.DataArray(arr, dims=("lat", "lon"),
                                          coords={"lat": ds["lat"].values, "lon": ds["lon"].values},
                                          attrs=dict(da.attrs))
    return out


def _geokeys(values: Sequence[int]) -> dict[int, int]:
    """GeoKeyDirectory -> {key: short value} (only keys stored inline, which are all we need)."""
    v = list(values)
    if len(v) < 4:
        return {}
    n = v[3]
    keys = {}
    for i in range(n):
        k, loc, count, val = v[4 + 4 * i: 8 + 4 * i]
        if loc == 0 and count == 1:
            keys[k] = val
    return keys


def _read_geotiff(path: Path) -> dict[str, xr.DataArray]:
    try:
        import tifffile
    except ImportError as exc:  # tifffile is a light, pure-python dependency; say so when absent
        raise CovariateError(f"{path.name}: reading GeoTIFF needs the 'tifffile' package") from exc
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]  # later pages (overviews, masks) are ignored
            arr = page.asarray()
            tags = {t.code: t.value for t in page.tags.values()}
    except FileNotFoundError:
        raise CovariateError(f"{path}: file not found") from None
    except Exception as exc:
        raise CovariateError(f"{path.name}: cannot be read as GeoTIFF ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:-1])
    if arr.ndim != 2:
        raise CovariateError(f"{path.name}: expected a single-band 2-D raster, found shape {arr.shape}")
    keys = _geokeys(tags.get(TAG_GEO_KEY_DIRECTORY, ()))
    if keys.get(GEOKEY_MODEL_TYPE, 2) != 2:
        raise CovariateError(
            f"{path.name}: expected a geographic (lat/lon) GeoTIFF (GTModelTypeGeoKey = 2), found model type "
            f"{keys.get(GEOKEY_MODEL_TYPE)} (projected, e.g. SoilGrids' Homolosine: resample to EPSG:4326 first)"
        )
    if TAG_MODEL_TRANSFORMATION in tags and TAG_MODEL_PIXEL_SCALE not in tags:
        raise CovariateError(f"{path.name}: expected ModelPixelScale/ModelTiepoint tags, found only a "
                             f"ModelTransformation (rotated grids are not supported)")
    if TAG_MODEL_PIXEL_SCALE not in tags or TAG_MODEL_TIEPOINT not in tags:
        raise CovariateError(f"{path.name}: expected GeoTIFF tags ModelPixelScale (33550) and ModelTiepoint "
                             f"(33922), found tags {sorted(tags)}")
    sx, sy = float(tags[TAG_MODEL_PIXEL_SCALE][0]), float(tags[TAG_MODEL_PIXEL_SCALE][1])
    ti, tj, _, tx, ty, _ = (float(v) for v in tags[TAG_MODEL_TIEPOINT][:6])
    # PixelIsArea (default): the tie point is the corner of pixel (ti, tj); centres sit half a pixel in.
    half = 0.5 if keys.get(GEOKEY_RASTER_TYPE, 1) == 1 else 0.0
    ny, nx = arr.shape
    lon = tx + (np.arange(nx) + half - ti) * sx
    lat = ty - (np.arange(ny) + half - tj) * sy
    data = arr.astype(np.float64)
    attrs: dict[str, object] = {}
    nodata = tags.get(TAG_GDAL_NODATA)
    if nodata is not None:
        try:
            nd = float(str(nodata).strip().rstrip("\x00"))
        except ValueError:
            raise CovariateError(f"{path.name}: GDAL_NODATA tag: expected a number, found {nodata!r}") from None
        data = np.where(data == nd, np.nan, data)
        attrs["nodata"] = nd
    if keys.get(GEOKEY_GEOGRAPHIC_TYPE) not in (None, 4326, 32767):
        attrs["crs_epsg"] = keys[GEOKEY_GEOGRAPHIC_TYPE]
    ds = xr.Dataset({path.stem: (("lat", "lon"), data, attrs)},
                    coords={"lat": ("lat", lat), "lon": ("lon", lon)})
    ds = normalise_latlon(ds, source=path.name, error_cls=CovariateError)
    return {path.stem: ds[path.stem]}


def _flag_set(value: object) -> bool:
    """True for an attribute meaning "yes": 1, True, "1", "true" (scalar or one-element array)."""
    if value is None:
        return False
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    arr = np.asarray(value).ravel()
    return arr.size == 1 and bool(arr[0] == 1)


def _same_grid(a: xr.DataArray, b: xr.DataArray) -> bool:
    return (a.sizes == b.sizes and np.allclose(a["lat"].values, b["lat"].values, atol=1e-6)
            and np.allclose(a["lon"].values, b["lon"].values, atol=1e-6))


def read_covariates(
    paths: str | PathLike | Sequence[str | PathLike],
    *,
    variables: Iterable[str] | None = None,
    categorical: Iterable[str] = (),
    scale_factors: Mapping[str, float] | None = None,
    valid_ranges: Mapping[str, tuple[float, float]] | None = None,
    units: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Read covariate grids from netCDF and/or GeoTIFF files into one Dataset with a ``valid`` mask.

    Args:
        paths: files (``.nc`` with any number of 2-D lat/lon variables; ``.tif`` single-band, variable
            name = file stem) or folders containing them.
        variables: names to keep (error if one is absent); None keeps every 2-D variable.
        categorical: names to mark with ``attrs['categorical'] = 1`` (codes, not magnitudes); variables
            whose file attribute ``categorical`` is 1 are marked too. Names not read are listed in
            ``attrs['categorical_absent']``.
        scale_factors: multiply a raw variable after masking (e.g. MODIS ``Npp_500m``: 0.0001 kg C m-2).
        valid_ranges: raw (before scaling) inclusive range per variable; values outside -> NaN
            (e.g. MODIS special codes 32761..32767 outside -30000..32700).
        units: units to record where the file has none (e.g. from the catalog).

    Returns:
        Dataset of float64 (lat, lon) variables with ``units`` attributes (``"unknown"`` if neither the
        file nor ``units`` says), plus ``valid`` (bool).

    Raises:
        CovariateError: unreadable file, non-grid variable requested, grids that do not line up,
            duplicate names, missing requested variables.
    """
    if isinstance(paths, (str, PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in (*TIFF_SUFFIXES, *NETCDF_SUFFIXES))
        else:
            files.append(p)
    if not files:
        raise CovariateError(f"{', '.join(map(str, paths))}: expected netCDF or GeoTIFF covariate files, found none")
    wanted = list(variables) if variables is not None else None
    cats = set(categorical)
    scale_factors = dict(scale_factors or {})
    valid_ranges = dict(valid_ranges or {})
    units = dict(units or {})
    arrays: dict[str, xr.DataArray] = {}
    origin: dict[str, str] = {}
    for f in files:
        suf = f.suffix.lower()
        if suf in TIFF_SUFFIXES:
            got = _read_geotiff(f)
            if wanted is not None:
                got = {k: v for k, v in got.items() if k in wanted}
        elif suf in NETCDF_SUFFIXES:
            got = _read_netcdf(f, wanted)
        else:
            raise CovariateError(f"{f.name}: expected a .nc or .tif file, found suffix {f.suffix!r}")
        for name, da in got.items():
            if name in arrays:
                raise CovariateError(f"{f.name}: variable {name!r} already read from {origin[name]}")
            if arrays:
                first = next(iter(arrays))
                if not _same_grid(arrays[first], da):
                    raise CovariateError(
                        f"{f.name}: variable {name!r}: expected the grid of {origin[first]} "
                        f"(lat {arrays[first].sizes['lat']} x lon {arrays[first].sizes['lon']}), found "
                        f"lat {da.sizes['lat']} x lon {da.sizes['lon']} or different coordinates"
                    )
            arrays[name] = da
            origin[name] = f.name
    if wanted is not None:
        missing = [v for v in wanted if v not in arrays]
        if missing:
            raise CovariateError(f"{', '.join(f.name for f in files)}: missing requested covariate(s) "
                                 f"{', '.join(missing)}; found {', '.join(arrays) or 'none'}")
    if not arrays:
        raise CovariateError(f"{', '.join(f.name for f in files)}: expected 2-D (lat, lon) variables, found none")
    # a file may mark its own categorical variables (attribute categorical = 1)
    cats |= {n for n, da in arrays.items() if _flag_set(da.attrs.get("categorical"))}
    absent_cats = sorted(cats - set(arrays))
    out = {}
    for name in (wanted or list(arrays)):
        da = arrays[name]
        vals = da.values
        attrs = {k: v for k, v in da.attrs.items() if k not in ("_FillValue", "missing_value")}
        if name in valid_ranges:
            lo, hi = valid_ranges[name]
            with np.errstate(invalid="ignore"):
                vals = np.where((vals < lo) | (vals > hi), np.nan, vals)
            attrs["valid_range_applied"] = f"{lo:g}..{hi:g}"
        if name in scale_factors:
            vals = vals * float(scale_factors[name])
            attrs["scale_factor_applied"] = float(scale_factors[name])
        attrs["units"] = str(attrs.get("units") or units.get(name) or "unknown")
        attrs["source_file"] = origin[name]
        if name in cats:
            attrs["categorical"] = 1
        out[name] = xr.DataArray(vals, dims=("lat", "lon"), attrs=attrs)
    first = arrays[next(iter(arrays))]
    ds = xr.Dataset(out, coords={"lat": ("lat", first["lat"].values, {"units": "degrees_north"}),
                                 "lon": ("lon", first["lon"].values, {"units": "degrees_east"})})
    valid = np.ones((ds.sizes["lat"], ds.sizes["lon"]), dtype=bool)
    for name in out:
        valid &= np.isfinite(ds[name].values)
    ds["valid"] = xr.DataArray(valid, dims=("lat", "lon"),
                               attrs={"long_name": "every selected covariate is finite"})
    ds.attrs["source"] = ", ".join(f.name for f in files)
    ds.attrs["categorical"] = ", ".join(n for n in out if n in cats)
    if absent_cats:
        # listed as categorical (e.g. by the catalog) but not provided: recorded, not an error,
        # because catalogs list the full set of names a source may carry
        ds.attrs["categorical_absent"] = ", ".join(absent_cats)
    return ds
