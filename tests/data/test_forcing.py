"""Forcing reader on real-format CLM5 history fixtures (see fixtures/make_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from proda_engine.data.errors import ForcingError
from proda_engine.data.forcing import (
    CANONICAL_UNITS,
    DEFAULT_NPP_SPLIT,
    INPUT_VARS,
    flux_to_g_m2_yr,
    parse_compound_units,
    read_forcing,
    validate_forcing,
)
from proda_engine.grid import get_grid

FIX = Path(__file__).parent / "fixtures"
CLIM = FIX / "clm5" / "case.clm2.h0.clim.nc"
TWO_YEARS = FIX / "clm5" / "case.clm2.h0.0661-0662.nc"
MINIMAL = FIX / "forcing_minimal.nc"
SPY = 86400.0 * 365.0


def raw(path: Path, var: str) -> np.ndarray:
    """The variable as stored (netCDF4 masks _FillValue), float64 with NaN for fill."""
    with netCDF4.Dataset(path) as nc:
        a = nc.variables[var][:]
    return np.ma.filled(a.astype(np.float64), np.nan)


@pytest.fixture(scope="module")
def clim() -> xr.Dataset:
    return read_forcing(CLIM, source_name="fixture")


@pytest.fixture(scope="module")
def two_years() -> xr.Dataset:
    return read_forcing(TWO_YEARS)


# --- the normalised contract -----------------------------------------------------------------


def test_contract_dims_dtypes_units(clim: xr.Dataset) -> None:
    assert dict(clim.sizes) == {"month": 12, "layer": 20, "lat": 4, "lon": 6}
    assert clim["month"].values.tolist() == list(range(1, 13))
    assert clim["layer"].values.tolist() == list(range(1, 21))
    for v in ("TSOI", "W_SCALAR", "O_SCALAR", "FPI_vr"):
        assert clim[v].dims == ("month", "layer", "lat", "lon")
    for v in ("ALTMAX", "ALTMAX_LASTYEAR"):
        assert clim[v].dims == ("month", "lat", "lon")
    assert clim["CELLSAND"].dims == ("layer", "lat", "lon")
    for v in (*INPUT_VARS, "NPP", "nbedrock", "valid"):
        assert clim[v].dims == ("lat", "lon")
    for v, da in clim.data_vars.items():
        if v == "nbedrock":
            assert da.dtype == np.int32
        elif v == "valid":
            assert da.dtype == np.bool_
        else:
            assert da.dtype == np.float64
            assert da.attrs["units"] == CANONICAL_UNITS[v]
    assert np.all(np.diff(clim["lat"].values) > 0)
    assert np.all(np.diff(clim["lon"].values) > 0)
    assert clim["lon"].values.tolist() == [-180.0, -120.0, -60.0, 0.0, 60.0, 120.0]
    assert clim.attrs["source_name"] == "fixture"
    assert clim.attrs["month_source"] == "time_bounds"
    validate_forcing(clim)


def test_lon_wrap_known_cell(clim: xr.Dataset) -> None:
    # CLM column lon=300E (index 5), lat index 1 (-17.5) -> lon -60 after wrapping
    tsoi = raw(CLIM, "TSOI")  # (time, levgrnd, lat, lon), months in calendar order
    got = clim["TSOI"].sel(lat=-17.5, lon=-60.0)
    np.testing.assert_array_equal(got.values, tsoi[:, :20, 1, 5])
    sand = raw(CLIM, "CELLSAND")
    np.testing.assert_array_equal(clim["CELLSAND"].sel(lat=-17.5, lon=-60.0).values, sand[:, 1, 5])
    assert float(clim["CELLSAND"].sel(lat=-17.5, lon=-60.0, layer=1)) == 90.0  # 40 + 10 x column 5


def test_levgrnd_first_20_of_25(clim: xr.Dataset) -> None:
    tsoi = raw(CLIM, "TSOI")
    assert tsoi.shape[1] == 25
    np.testing.assert_array_equal(clim["TSOI"].sel(layer=20).values[:, :, 3], tsoi[:, 19, :, 0])


def test_ocean_column_and_shallow_bedrock(clim: xr.Dataset) -> None:
    valid = clim["valid"].values
    ocean = clim["lon"].values == -120.0  # 240E, all _FillValue = 1e36
    assert not valid[:, ocean].any()
    assert valid[:, ~ocean].all()
    assert (clim["nbedrock"].values[:, ocean] == -1).all()
    assert np.isnan(clim["TSOI"].values[..., ocean]).all()
    assert int(clim["nbedrock"].sel(lat=-17.5, lon=120.0)) == 8
    assert int((clim["nbedrock"].values == 20).sum()) == 19
    assert clim.attrs["n_valid_cells"] == 20


def test_npp_per_second_converted_to_per_year(clim: xr.Dataset) -> None:
    npp = raw(CLIM, "NPP")  # gC/m^2/s
    expected = npp.mean(axis=0) * SPY
    np.testing.assert_allclose(clim["NPP"].values[:, 3], expected[:, 0], rtol=1e-12)
    assert "NPP: gC/m^2/s -> g C m-2 yr-1" in clim.attrs["conversions"]
    assert 300 < float(clim["NPP"].sel(lat=-17.5, lon=0.0)) < 1500  # plausible g C m-2 yr-1


def test_inputs_from_acc_vectors(clim: xr.Dataset) -> None:
    dz = get_grid("clm5_20").dz
    for pool, var in (("input_cwd", "CWD_INPUT_ACC_VECTOR"), ("input_litter3", "LITR3_INPUT_ACC_VECTOR")):
        acc = raw(CLIM, var)  # (time, levdcmp, lat, lon), g C m-3 per month
        expected = np.einsum("mjyx,j->yx", acc, dz)
        np.testing.assert_allclose(clim[pool].values[:, 3], expected[:, 0], rtol=1e-12)
    assert "ACC_VECTOR" in clim.attrs["input_source"]


def test_24_months_average_by_calendar_month(two_years: xr.Dataset) -> None:
    tsoi = raw(TWO_YEARS, "TSOI")
    assert tsoi.shape[0] == 24
    # January = stamps 0 and 12 (CLM stamps the end of the interval: decoded from time_bounds)
    expected = (tsoi[:12] + tsoi[12:]) / 2.0
    got = two_years["TSOI"].values  # lat/lon order unchanged at lon index 3 (0E)
    np.testing.assert_allclose(got[:, :, :, 3], expected[:, :20, :, 0], rtol=0, atol=1e-12)
    # the missing element (April of year 2, layer 1, lat 17.5, lon 60E) takes year 1 alone
    assert np.isnan(tsoi[15, 0, 2, 1])
    assert float(two_years["TSOI"].sel(month=4, layer=1, lat=17.5, lon=60.0)) == tsoi[3, 0, 2, 1]
    # year 2 is year 1 + 1 K elsewhere
    assert float(two_years["TSOI"].sel(month=5, layer=1, lat=17.5, lon=60.0)) == tsoi[4, 0, 2, 1] + 0.5


def test_npp_split_default_and_custom(two_years: xr.Dataset) -> None:
    assert two_years.attrs["input_source"] == "NPP split"
    for k, f in DEFAULT_NPP_SPLIT.items():
        np.testing.assert_allclose(two_years[k].values, two_years["NPP"].values * f)
    split = {"input_cwd": 0.0, "input_litter1": 0.5, "input_litter2": 0.25, "input_litter3": 0.25}
    ds = read_forcing(TWO_YEARS, npp_split=split)
    np.testing.assert_allclose(ds["input_litter1"].values, ds["NPP"].values * 0.5)
    assert ds.attrs["npp_split"].startswith("input_cwd=0, input_litter1=0.5")
    with pytest.raises(ValueError, match="summing to 1"):
        read_forcing(TWO_YEARS, npp_split={**split, "input_cwd": 0.5})


def test_cellsand_with_time_is_averaged(two_years: xr.Dataset) -> None:
    sand = raw(TWO_YEARS, "CELLSAND")  # (time, levsoi, lat, lon), constant in time
    np.testing.assert_array_equal(two_years["CELLSAND"].values[:, :, 3], sand[0, :, :, 0])


def test_minimal_month_dim_descending_lat_and_unit_spellings() -> None:
    ds = read_forcing(MINIMAL)
    assert ds["lat"].values.tolist() == [10.0, 30.0]
    assert ds.attrs["month_source"] == "month coordinate"
    assert ds["valid"].values.all()
    np.testing.assert_array_equal(ds["nbedrock"].values, [[20, 12, 20], [20, 20, 5]])
    # three spellings of g C m-2 yr-1 read without conversion
    assert [float(ds[v][0, 0]) for v in INPUT_VARS] == [50.0, 150.0, 200.0, 100.0]
    assert ds.attrs["conversions"] == ""
    assert "NPP" not in ds and "CELLSAND" not in ds


# --- bad files ------------------------------------------------------------------------------------


def test_tsoi_in_celsius_is_refused() -> None:
    with pytest.raises(ForcingError) as e:
        read_forcing(FIX / "bad" / "forcing_tsoi_celsius.nc")
    msg = str(e.value)
    assert msg.startswith("forcing_tsoi_celsius.nc: variable 'TSOI': expected kelvin (values 180..350)")
    assert "found values -30..35" in msg and "looks like degrees Celsius" in msg


def test_nbedrock_zero_is_refused() -> None:
    with pytest.raises(ForcingError) as e:
        read_forcing(FIX / "bad" / "forcing_nbedrock_zero.nc")
    assert str(e.value) == (
        "forcing_nbedrock_zero.nc: variable 'nbedrock': expected integer layer index in 1..20 on valid cells, "
        "found 1 cell(s) outside, e.g. 0 at lat=30, lon=0"
    )


def test_unknown_unit_is_refused() -> None:
    with pytest.raises(ForcingError, match=r"forcing_unknown_unit.nc: variable 'input_cwd': expected a carbon "
                       r"flux per area .* found units 'gC/m\^2/fortnight' \(not understood\)"):
        read_forcing(FIX / "bad" / "forcing_unknown_unit.nc")


def _variant(tmp_path: Path, name: str, **changes: object) -> Path:
    """Write a modified copy of the minimal fixture (None drops a variable)."""
    with xr.open_dataset(MINIMAL) as src:
        ds = src.load()
    for k, v in changes.items():
        if v is None:
            ds = ds.drop_vars(k)
        else:
            ds[k] = v
    p = tmp_path / name
    ds.to_netcdf(p)
    return p


def test_degc_tsoi_is_converted_and_recorded(tmp_path: Path) -> None:
    with xr.open_dataset(MINIMAL) as src:
        t = src["TSOI"].load()
    t_c = (t - 273.15).assign_attrs(units="degC")
    ds = read_forcing(_variant(tmp_path, "degc.nc", TSOI=t_c))
    np.testing.assert_allclose(ds["TSOI"].values[:, :, 0, 0], t.values[:, :, 1, 0], atol=1e-4)
    assert "TSOI: degC -> K (+273.15)" in ds.attrs["conversions"]


def test_missing_variables_are_listed(tmp_path: Path) -> None:
    p = _variant(tmp_path, "missing.nc", O_SCALAR=None, ALTMAX=None, input_cwd=None, input_litter1=None)
    with pytest.raises(ForcingError) as e:
        read_forcing(p)
    assert str(e.value) == ("missing.nc: missing required variable(s): O_SCALAR, ALTMAX, input_cwd, "
                            "input_litter1")


def test_w_scalar_out_of_range(tmp_path: Path) -> None:
    with xr.open_dataset(MINIMAL) as src:
        w = src["W_SCALAR"].load()
    w[0, 0, 0, 0] = 1.5
    with pytest.raises(ForcingError, match=r"w.nc: variable 'W_SCALAR': expected values in \[0, 1\], "
                       r"found values 0.5..1.5 \(1 value\(s\) out of range\)"):
        read_forcing(_variant(tmp_path, "w.nc", W_SCALAR=w))


def test_negative_altmax_and_inputs(tmp_path: Path) -> None:
    with xr.open_dataset(MINIMAL) as src:
        alt = src["ALTMAX"].load()
        cwd = src["input_cwd"].load()
    alt[3, 1, 2] = -2.0
    with pytest.raises(ForcingError, match=r"alt.nc: variable 'ALTMAX': expected non-negative thickness in m, "
                       r"found values -2..10 \(1 value\(s\) out of range\)"):
        read_forcing(_variant(tmp_path, "alt.nc", ALTMAX=alt))
    cwd[0, 0] = -1.0
    with pytest.raises(ForcingError, match=r"cwd.nc: variable 'input_cwd': expected non-negative input"):
        read_forcing(_variant(tmp_path, "cwd.nc", input_cwd=cwd))


def test_non_numeric_variable(tmp_path: Path) -> None:
    bad = xr.DataArray(np.array([["a", "b", "c"], ["d", "e", "f"]]), dims=("lat", "lon"))
    with pytest.raises(ForcingError, match=r"text.nc: variable 'nbedrock': expected numeric values, found dtype"):
        read_forcing(_variant(tmp_path, "text.nc", nbedrock=bad))


def test_shape_mismatches(tmp_path: Path) -> None:
    with xr.open_dataset(MINIMAL) as src:
        t = src["TSOI"].load()
    with pytest.raises(ForcingError, match=r"short.nc: variable 'TSOI': expected at least 20 levels along "
                       r"'levgrnd', found 10"):
        read_forcing(_variant(tmp_path, "short.nc", TSOI=t.isel(levsoi=slice(0, 10)).rename(levsoi="levgrnd")))
    with pytest.raises(ForcingError, match=r"flat.nc: variable 'TSOI': expected dims \(time\|month, level, lat, "
                       r"lon\) .* found \('month', 'lat', 'lon'\)"):
        read_forcing(_variant(tmp_path, "flat.nc", TSOI=t.isel(levsoi=0, drop=True)))


def test_time_not_multiple_of_12(tmp_path: Path) -> None:
    with xr.open_dataset(TWO_YEARS, decode_times=False) as src:
        ds = src.isel(time=slice(0, 18)).load()
    p = tmp_path / "eighteen.nc"
    ds.to_netcdf(p)
    with pytest.raises(ForcingError, match=r"eighteen.nc: variable 'TSOI': expected 12 monthly entries or a "
                       r"multiple of 12 along time, found 18"):
        read_forcing(p)


def test_several_files_merged_by_variable(tmp_path: Path, clim: xr.Dataset) -> None:
    with xr.open_dataset(CLIM, decode_times=False) as src:
        full = src.load()
    a = full[["TSOI", "W_SCALAR", "O_SCALAR", "FPI_vr", "nbedrock", "CELLSAND", "time_bounds"]]
    b = full.drop_vars(["TSOI", "W_SCALAR", "O_SCALAR", "FPI_vr", "CELLSAND"])
    a.to_netcdf(tmp_path / "a.nc")
    b.to_netcdf(tmp_path / "b.nc")
    merged = read_forcing([tmp_path / "a.nc", tmp_path / "b.nc"])
    xr.testing.assert_identical(merged.drop_attrs(), clim.drop_attrs())
    # monthly history files (one month each) concatenate along time
    for i in range(12):
        full.isel(time=[i]).to_netcdf(tmp_path / f"m{i:02d}.nc", format="NETCDF3_64BIT")
    monthly = read_forcing(sorted(tmp_path.glob("m*.nc")))
    xr.testing.assert_identical(monthly.drop_attrs(), clim.drop_attrs())


def test_grids_that_do_not_line_up(tmp_path: Path) -> None:
    with xr.open_dataset(CLIM, decode_times=False) as src:
        full = src.load()
    full[["TSOI", "time_bounds"]].to_netcdf(tmp_path / "a.nc")
    full.drop_vars("TSOI").isel(lat=slice(0, 3)).to_netcdf(tmp_path / "b.nc")
    with pytest.raises(ForcingError, match=r"b.nc: variable 'W_SCALAR': expected the grid of a.nc \(TSOI\) "
                       r"\(lat 4 x lon 6\), found lat 3 x lon 6"):
        read_forcing([tmp_path / "a.nc", tmp_path / "b.nc"])


def test_validate_forcing_on_normalised_dataset(clim: xr.Dataset) -> None:
    assert validate_forcing(clim) is clim
    bad = clim.copy()
    bad["TSOI"] = bad["TSOI"].assign_attrs(units="degC")
    with pytest.raises(ForcingError, match=r"fixture: variable 'TSOI': expected units 'K', found 'degC'"):
        validate_forcing(bad)
    bad = clim.copy()
    bad["nbedrock"] = bad["nbedrock"].where(bad["lon"] != 0.0, 25).astype(np.int32)
    with pytest.raises(ForcingError, match=r"fixture: variable 'nbedrock': expected 1..20 on valid cells, "
                       r"found 4 cell\(s\) outside, e.g. 25 at lat=-52.5, lon=0"):
        validate_forcing(bad)


# --- units ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "factor"),
    [("gC/m^2/s", SPY), ("gC/m2/s", SPY), ("g/m^2/s", SPY), ("g C m-2 s-1", SPY), ("gC m-2 s-1", SPY),
     ("gC/m^2/yr", 1.0), ("g C m-2 yr-1", 1.0), ("gC m-2 per year", 1.0), ("kg C m-2 s-1", 1e3 * SPY),
     ("gC/m^2/d", 365.0), ("g m**-2 a-1", 1.0)],
)
def test_flux_unit_spellings(units: str, factor: float) -> None:
    assert flux_to_g_m2_yr(units) == pytest.approx(factor, rel=1e-12)


@pytest.mark.parametrize("units", ["gC/m^2/fortnight", "W m-2", "gC/m^3", "", "K", "gC/m^2"])
def test_flux_units_not_understood(units: str) -> None:
    assert flux_to_g_m2_yr(units) is None


def test_density_units_parse() -> None:
    factor, dims = parse_compound_units("gC/m^3")
    assert factor == 1.0 and dims == {"mass": 1, "length": -3, "time": 0}
