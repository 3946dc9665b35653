"""Multi-year forcing series (transient scenarios) on real-format CLM5 history fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from proda_engine.data import ForcingSeries, load_catalog, read_forcing, read_forcing_series
from proda_engine.data.errors import CatalogError, ForcingError

FIX = Path(__file__).parent / "fixtures" / "clm5"
CLIM = FIX / "case.clm2.h0.clim.nc"
TWO_YEARS = FIX / "case.clm2.h0.0661-0662.nc"


def _load(path: Path) -> xr.Dataset:
    with xr.open_dataset(path, decode_times=False) as ds:
        return ds.load()


def _shift_years(path: Path, out: Path, years: int, dT: float = 0.0) -> Path:
    """A copy of a CLM5 h0 file whose stamps move ``years`` noleap years on (TSOI + dT)."""
    ds = _load(path)
    ds = ds.assign_coords(time=ds["time"] + 365.0 * years)
    ds["time"].attrs.update(_load(path)["time"].attrs)
    ds["time_bounds"] = ds["time_bounds"] + 365.0 * years
    ds["TSOI"] = ds["TSOI"] + np.float32(dT)
    ds.to_netcdf(out)
    return out


def test_one_multi_year_file_splits_by_calendar_year():
    s = read_forcing_series(TWO_YEARS)
    assert isinstance(s, ForcingSeries) and len(s) == 2
    assert s.labels == (661, 662) and s.grouping == "calendar year"
    y1, y2 = s.year(0), s.year(1)
    assert y1.attrs["series_year"] == 661 and dict(y1.sizes)["month"] == 12
    # the 2-year climatology read_forcing makes is the mean of the two years wherever both are finite
    both = read_forcing(TWO_YEARS)["TSOI"].values
    a, b = y1["TSOI"].values, y2["TSOI"].values
    fin = np.isfinite(a) & np.isfinite(b)
    np.testing.assert_allclose(both[fin], (a[fin] + b[fin]) / 2.0, rtol=0, atol=1e-12)
    # year 2's missing April (layer 1, 17.5N 60E) stays missing in that year only, so the cell is invalid then
    assert np.isnan(float(y2["TSOI"].sel(month=4, layer=1, lat=17.5, lon=60.0)))
    assert bool(y1["valid"].sel(lat=17.5, lon=60.0)) and not bool(y2["valid"].sel(lat=17.5, lon=60.0))
    with pytest.raises(IndexError, match="out of range"):
        s.year(2)


def test_monthly_files_give_the_same_years_as_one_file(tmp_path):
    ds = _load(TWO_YEARS)
    paths = []
    for k in range(24):  # CLM's one-file-per-month layout, out of order on purpose
        p = tmp_path / f"case.clm2.h0.{661 + k // 12:04d}-{k % 12 + 1:02d}.nc"
        ds.isel(time=[k]).to_netcdf(p)
        paths.append(p)
    monthly = read_forcing_series(paths[::-1])
    single = read_forcing_series(TWO_YEARS)
    assert monthly.labels == single.labels == (661, 662)
    for i in range(2):
        xr.testing.assert_allclose(monthly.year(i)[["TSOI", "W_SCALAR", "input_cwd"]],
                                   single.year(i)[["TSOI", "W_SCALAR", "input_cwd"]])


def test_repeated_stamps_fall_back_to_file_order(tmp_path):
    warm = tmp_path / "warm.nc"
    ds = _load(CLIM)
    ds["TSOI"] = ds["TSOI"] + np.float32(1.0)
    ds.to_netcdf(warm)
    s = read_forcing_series([CLIM, warm])  # both stamp the same climatological year
    assert s.grouping.startswith("12 steps") and s.labels == (1, 2)
    d = s.year(1)["TSOI"] - s.year(0)["TSOI"]
    np.testing.assert_allclose(d.values[np.isfinite(d.values)], 1.0, atol=1e-6)


def test_calendar_years_across_files_in_order(tmp_path):
    files = [_shift_years(CLIM, tmp_path / f"y{k}.nc", k, dT=0.5 * k) for k in (2, 0, 1)]
    s = read_forcing_series(files)
    assert s.grouping == "calendar year" and list(np.diff(s.labels)) == [1, 1]
    t = [float(s.year(i)["TSOI"].sel(month=1, layer=1).mean()) for i in range(3)]
    np.testing.assert_allclose(np.diff(t), 0.5, atol=1e-5)  # sorted by year, not by the order given


def test_a_missing_month_is_named(tmp_path):
    bad = tmp_path / "gap.nc"
    _load(TWO_YEARS).isel(time=[k for k in range(24) if k != 17]).to_netcdf(bad)  # drop June of year 2
    with pytest.raises(ForcingError, match=r"gap\.nc: year 662: expected the 12 calendar months once each, "
                                           r"found months \[1, 2, 3, 4, 5, 7"):
        read_forcing_series(bad)


def test_not_a_multiple_of_12_steps_is_refused(tmp_path):
    short = tmp_path / "short.nc"
    _load(CLIM).isel(time=range(10)).to_netcdf(short)
    with pytest.raises(ForcingError, match=r"short\.nc.*multiple of 12 monthly steps.*found 10"):
        read_forcing_series([CLIM, short])  # CLIM + short repeat stamps -> positional years


def test_catalog_forcing_series_source(tmp_path):
    cat = tmp_path / "cat.yaml"
    cat.write_text("version: 1\nsources:\n  future:\n    kind: forcing_series\n    format: clm5_history\n"
                   f"    paths: ['{TWO_YEARS}']\n    options: {{n_layers: 20}}\n")
    s = load_catalog(cat).open("future")
    assert isinstance(s, ForcingSeries) and len(s) == 2 and s.source_name == "future"
    assert s.year(0).attrs["source_name"] == "future"
    cat.write_text("version: 1\nsources:\n  future:\n    kind: forcing_series\n"
                   f"    paths: ['{TWO_YEARS}']\n    options: {{scale_factors: 2}}\n")
    with pytest.raises(CatalogError, match=r"unknown option.*scale_factors.*forcing_series"):
        load_catalog(cat)
