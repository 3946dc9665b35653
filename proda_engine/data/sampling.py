"""Spatial helpers shared by the gridded readers: lat/lon normalisation and nearest-valid-cell sampling.

All readers hand out grids with 1-D coordinates ``lat`` (degrees north, ascending) and ``lon``
(degrees east in -180..180, ascending). A site takes its values from the nearest grid cell whose
``valid`` flag is True (data contract §1, last bullet), measured as a great-circle distance.

Example
-------
>>> import numpy as np, xarray as xr
>>> ds = xr.Dataset({"x": (("lat", "lon"), np.arange(6.0).reshape(2, 3))},
...                 coords={"lat": [0.0, 1.0], "lon": [10.0, 11.0, 12.0]})
>>> s = sample_nearest_valid(ds, lat=[0.9], lon=[11.2])
>>> float(s["x"][0]), float(s["cell_lat"][0]), float(s["cell_lon"][0])
(4.0, 1.0, 11.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from scipy.spatial import cKDTree

#: Mean Earth radius (IUGG), km; the same R as the spec's area formula (§(i)).
EARTH_RADIUS_KM = 6371.0088

LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "longitude")


def _find_dim(ds: xr.Dataset | xr.DataArray, names: Sequence[str]) -> str | None:
    for n in names:
        if n in ds.dims:
            return n
    return None


def normalise_latlon(
    ds: xr.Dataset,
    *,
    source: str,
    error_cls: type[ValueError] = ValueError,
) -> xr.Dataset:
    """Rename the spatial dims to ``lat``/``lon``, wrap longitudes to -180..180 and sort both ascending.

    The reorder is an ``isel`` (lazy for file-backed data), so nothing is computed or resampled:
    a grid given on 0..360 longitudes comes back as the same cells in a different order.

    Args:
        ds: dataset with 1-D coordinate variables ``lat``/``latitude`` and ``lon``/``longitude`` (degrees).
        source: file or source name used in error messages.
        error_cls: exception type to raise (the caller's reader-specific error).

    Raises:
        error_cls: missing lat/lon, non-1-D coordinates, values out of range, duplicate longitudes
            after wrapping.
    """
    lat_dim = _find_dim(ds, LAT_NAMES)
    lon_dim = _find_dim(ds, LON_NAMES)
    if lat_dim is None or lon_dim is None:
        raise error_cls(
            f"{source}: expected spatial dimensions named lat/latitude and lon/longitude, "
            f"found dimensions {list(ds.dims)}"
        )
    for d in (lat_dim, lon_dim):
        if d not in ds.coords:
            raise error_cls(f"{source}: dimension {d!r} has no coordinate values (expected 1-D degrees)")
    ds = ds.rename({lat_dim: "lat", lon_dim: "lon"}) if (lat_dim, lon_dim) != ("lat", "lon") else ds
    lat = np.asarray(ds["lat"].values, dtype=np.float64)
    lon = np.asarray(ds["lon"].values, dtype=np.float64)
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))):
        raise error_cls(f"{source}: variable 'lat'/'lon': expected finite coordinates, found NaN/inf")
    if lat.min() < -90.0 or lat.max() > 90.0:
        raise error_cls(
            f"{source}: variable 'lat': expected degrees in -90..90, found {lat.min():g}..{lat.max():g}"
        )
    if lon.min() < -180.0 or lon.max() > 360.0:
        raise error_cls(
            f"{source}: variable 'lon': expected degrees in -180..180 or 0..360, "
            f"found {lon.min():g}..{lon.max():g}"
        )
    # Wrap to [-180, 180): 0..360 grids (CLM) and -180..180 grids map onto one convention.
    lon_w = (lon + 180.0) % 360.0 - 180.0
    if np.unique(lon_w).size != lon_w.size:
        raise error_cls(f"{source}: variable 'lon': duplicate longitudes after wrapping to -180..180")
    if np.unique(lat).size != lat.size:
        raise error_cls(f"{source}: variable 'lat': duplicate latitudes")
    ilat = np.argsort(lat, kind="stable")
    ilon = np.argsort(lon_w, kind="stable")
    lat_attrs = dict(ds["lat"].attrs)
    lon_attrs = dict(ds["lon"].attrs)
    ds = ds.isel(lat=ilat, lon=ilon)
    ds = ds.assign_coords(lat=("lat", lat[ilat]), lon=("lon", lon_w[ilon]))
    ds["lat"].attrs.update({**lat_attrs, "units": "degrees_north", "standard_name": "latitude"})
    ds["lon"].attrs.update({**lon_attrs, "units": "degrees_east", "standard_name": "longitude"})
    return ds


def _unit_vectors(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Points on the unit sphere, shape (n, 3); chord distance there is monotone in great-circle distance."""
    la = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))
    lo = np.deg2rad(np.asarray(lon_deg, dtype=np.float64))
    return np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])


def _valid_mask(ds: xr.Dataset, valid: Any) -> np.ndarray:
    if valid is None:
        valid = ds["valid"] if "valid" in ds else None
    elif isinstance(valid, str):
        valid = ds[valid]
    if valid is None:
        return np.ones((ds.sizes["lat"], ds.sizes["lon"]), dtype=bool)
    if isinstance(valid, xr.DataArray):
        valid = valid.transpose("lat", "lon").values
    mask = np.asarray(valid, dtype=bool)
    if mask.shape != (ds.sizes["lat"], ds.sizes["lon"]):
        raise ValueError(
            f"valid mask: expected shape (lat, lon) = {(ds.sizes['lat'], ds.sizes['lon'])}, found {mask.shape}"
        )
    return mask


def sample_nearest_valid(
    ds: xr.Dataset,
    lat: Sequence[float] | np.ndarray,
    lon: Sequence[float] | np.ndarray,
    valid: xr.DataArray | np.ndarray | str | None = None,
    *,
    site: Sequence[Any] | np.ndarray | None = None,
) -> xr.Dataset:
    """Take every variable of ``ds`` at the nearest valid grid cell of each site.

    Distances are great-circle distances between the site and the cell centre (sphere of radius
    6371.0088 km), found with a KD-tree on 3-D unit vectors of the valid cell centres. This differs
    from the original scripts' separate nearest-latitude / nearest-longitude lookup on the full grid
    (spec §(n)): that lookup can land on an invalid (ocean) cell, which the original then skipped.

    Args:
        ds: gridded dataset with ``lat``/``lon`` dims (e.g. normalised forcing or covariates).
        lat, lon: site coordinates, degrees (any longitude convention).
        valid: (lat, lon) boolean mask, the name of a variable in ``ds``, or None to use ``ds['valid']``
            when present (all cells otherwise).
        site: optional site labels (e.g. profile ids) for the ``site`` coordinate; default 0..n-1.

    Returns:
        Dataset with dim ``site`` replacing ``lat``/``lon``, and coordinates ``site_lat``, ``site_lon``
        (degrees, as given), ``cell_lat``, ``cell_lon`` (degrees) and ``distance_km`` (km).

    Raises:
        ValueError: non-finite site coordinates, mismatched lengths, or no valid cell at all.
    """
    lat_a = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    lon_a = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    if lat_a.shape != lon_a.shape or lat_a.ndim != 1:
        raise ValueError(f"sites: expected 1-D lat and lon of equal length, found {lat_a.shape} and {lon_a.shape}")
    bad = ~(np.isfinite(lat_a) & np.isfinite(lon_a)) | (np.abs(lat_a) > 90.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"sites: expected finite latitude in -90..90 and finite longitude; {int(bad.sum())} site(s) are not, "
            f"e.g. site {i} at lat={lat_a[i]}, lon={lon_a[i]}"
        )
    if "lat" not in ds.dims or "lon" not in ds.dims:
        raise ValueError(f"dataset: expected dims 'lat' and 'lon', found {list(ds.dims)}")
    mask = _valid_mask(ds, valid)
    ilat_all, ilon_all = np.nonzero(mask)
    if ilat_all.size == 0:
        raise ValueError("dataset: no valid grid cell to sample from (valid mask is all False)")
    glat = np.asarray(ds["lat"].values, dtype=np.float64)
    glon = np.asarray(ds["lon"].values, dtype=np.float64)
    tree = cKDTree(_unit_vectors(glat[ilat_all], glon[ilon_all]))
    chord, idx = tree.query(_unit_vectors(lat_a, lon_a), k=1)
    # chord c on the unit sphere -> central angle 2 asin(c/2)
    dist_km = 2.0 * np.arcsin(np.clip(np.asarray(chord) / 2.0, 0.0, 1.0)) * EARTH_RADIUS_KM
    ilat = ilat_all[idx]
    ilon = ilon_all[idx]
    out = ds.isel(lat=xr.DataArray(ilat, dims="site"), lon=xr.DataArray(ilon, dims="site"))
    out = out.rename({"lat": "cell_lat", "lon": "cell_lon"})
    site_vals = np.arange(lat_a.size) if site is None else np.asarray(site)
    if site_vals.shape != lat_a.shape:
        raise ValueError(f"site labels: expected {lat_a.size} labels, found {site_vals.shape}")
    out = out.assign_coords(
        site=("site", site_vals),
        site_lat=("site", lat_a, {"units": "degrees_north", "long_name": "site latitude"}),
        site_lon=("site", lon_a, {"units": "degrees_east", "long_name": "site longitude"}),
        distance_km=("site", dist_km, {"units": "km", "long_name": "great-circle distance site to cell centre"}),
    )
    out["cell_lat"].attrs.update({"units": "degrees_north", "long_name": "latitude of the sampled cell centre"})
    out["cell_lon"].attrs.update({"units": "degrees_east", "long_name": "longitude of the sampled cell centre"})
    return out
