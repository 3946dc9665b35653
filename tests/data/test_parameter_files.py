"""Parameter files as users have them: names in any common spelling, either longitude convention,
and the transport closure / soil grid recorded and checked (spec §(c), §(g); data contract §4)."""

import logging

import numpy as np
import pytest
import xarray as xr

from proda_engine.data.parameter_files import (
    CLOSURES,
    SOIL_GRIDS,
    ParameterFileError,
    align_theta_to_grid,
    canonical_parameter_name,
    parameter_file_attrs,
    read_parameter_file,
    resolve_closure,
    resolve_soil_grid,
    write_parameter_file,
)
from proda_engine.parameters import LOWER, PARAMETER_NAMES, UPPER

LAT = np.array([-52.5, -17.5, 17.5, 52.5])
LON180 = np.array([-180.0, -120.0, -60.0, 0.0, 60.0, 120.0])


def _spec_names() -> list[str]:
    return [n.replace("wscaling", "w-scaling") for n in PARAMETER_NAMES]


def _grid_theta(rng, lon=LON180, names=PARAMETER_NAMES) -> xr.DataArray:
    return xr.DataArray(rng.uniform(0.2, 0.8, (len(names), LAT.size, lon.size)), dims=("parameter", "lat", "lon"),
                        coords={"parameter": list(names), "lat": LAT, "lon": lon})


def _one_line(exc: pytest.ExceptionInfo, *words: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_closure_and_grid_names_are_the_physics_and_grid_names():
    from proda_engine.grid import GRIDS
    from proda_engine.physics.transport import CLOSURES as PHYSICS_CLOSURES

    assert CLOSURES == PHYSICS_CLOSURES and set(SOIL_GRIDS) == set(GRIDS)


@pytest.mark.parametrize("spelling", ["w-scaling", "w_scaling", "wscaling", "W-Scaling", "W SCALING", " w__scaling "])
def test_w_scaling_spellings(spelling):
    assert canonical_parameter_name(spelling) == "wscaling"


def test_every_table_name_in_every_case_and_separator():
    for n in PARAMETER_NAMES:
        for s in (n, n.upper(), "_".join(n), "-".join(n.upper()), " ".join(n)):
            assert canonical_parameter_name(s) == n
    assert canonical_parameter_name("diffus (bio)") == "diffus"
    assert canonical_parameter_name("w.scaling") is None and canonical_parameter_name("tau4s4") is None


def test_read_reorders_spec_spellings_into_table_order(tmp_path, rng):
    # a user's file: spec names, upper case, reversed order, 'latitude'/'longitude' dims
    names = [n.upper() for n in _spec_names()][::-1]
    th = _grid_theta(rng, names=names).rename(lat="latitude", lon="longitude")
    path = tmp_path / "user.nc"
    th.to_dataset(name="theta").to_netcdf(path)
    got = read_parameter_file(path)
    assert list(got["parameter"].values) == list(PARAMETER_NAMES)
    assert set(got.dims) == {"parameter", "lat", "lon"} and got.attrs["source_file"] == str(path)
    # the invariant: every parameter keeps its own values, whatever it was called and wherever it stood
    where = [canonical_parameter_name(x) for x in names]
    for n in PARAMETER_NAMES:
        np.testing.assert_array_equal(got.sel(parameter=n).values, th.isel(parameter=where.index(n)).values)


@pytest.mark.parametrize(("names", "words"), [
    ([*PARAMETER_NAMES[:-1], "gamma"], ["'gamma'", "unknown"]),
    (list(PARAMETER_NAMES[:-1]), ["missing", "'beta'"]),
    ([*PARAMETER_NAMES[:-1], "w_scaling"], ["repeated", "'w_scaling'"]),
])
def test_bad_names_are_one_line_errors(tmp_path, names, words):
    path = tmp_path / "bad_names.nc"
    xr.Dataset({"theta": ("parameter", np.full(len(names), 0.5))}, coords={"parameter": names}).to_netcdf(path)
    with pytest.raises(ParameterFileError) as exc:
        read_parameter_file(path)
    _one_line(exc, "bad_names.nc", "coordinate 'parameter'", "expected", "wscaling", *words)


def test_no_theta_variable_and_other_bounds_are_refused(tmp_path):
    path = tmp_path / "x.nc"
    xr.Dataset({"params": ("parameter", np.full(21, 0.5))}).to_netcdf(path)
    with pytest.raises(ParameterFileError) as exc:
        read_parameter_file(path)
    _one_line(exc, "x.nc", "variable 'theta'", "found variables ['params']")
    upper = UPPER.copy()
    upper[2] = 5.0  # q10 upper bound 5 instead of 3: the same theta would be another Q10
    xr.Dataset({"theta": ("parameter", np.full(21, 0.5))},
               coords={"parameter": list(PARAMETER_NAMES), "lower": ("parameter", LOWER),
                       "upper": ("parameter", upper)}).to_netcdf(path)
    with pytest.raises(ParameterFileError) as exc:
        read_parameter_file(path)
    _one_line(exc, "x.nc", "coordinate 'upper'", "q10")


def test_0_360_longitudes_align_cell_for_cell(rng):
    th = _grid_theta(rng)
    lon360 = LON180 % 360.0
    order = np.argsort(lon360)  # the file's own order: 0, 60, ..., 300
    as_file = th.isel(lon=order).assign_coords(lon=lon360[order]).isel(lat=slice(None, None, -1))  # and N->S
    got = align_theta_to_grid(as_file, LAT, LON180, file="f.nc")
    np.testing.assert_array_equal(got["lon"].values, LON180)
    np.testing.assert_array_equal(got["lat"].values, LAT)
    np.testing.assert_array_equal(got.transpose(*th.dims).values, th.values)  # same value in every cell


@pytest.mark.parametrize(("lat", "lon", "coord", "found"), [
    (LAT, LON180 + 10.0, "'lon'", "6 values -170..130 step 60"),
    (LAT, np.linspace(0, 300, 11), "'lon'", "11 values 0..300 step 30"),
    (LAT + 1.0, LON180, "'lat'", "4 values -51.5..53.5 step 35"),
])
def test_another_grid_is_a_one_line_error(rng, lat, lon, coord, found):
    th = xr.DataArray(np.full((21, lat.size, lon.size), 0.5), dims=("parameter", "lat", "lon"),
                      coords={"parameter": list(PARAMETER_NAMES), "lat": lat, "lon": lon})
    with pytest.raises(ParameterFileError) as exc:
        align_theta_to_grid(th, LAT, LON180, file="grid.nc", target="the forcing grid")
    _one_line(exc, "grid.nc", f"coordinate {coord}", "expected the forcing grid's", "found " + found)


def test_closure_resolution(caplog):
    legacy = {"closure": "legacy", "source_file": "fit.nc"}
    # nothing recorded, not from a file (presets, arrays, in-memory fields): the request or the default, quietly
    with caplog.at_level(logging.WARNING):
        assert resolve_closure(None) == "conservative" and resolve_closure({}, "legacy") == "legacy"
    assert not caplog.records
    # recorded = default: fine
    assert resolve_closure({"closure": "Conservative", "source_file": "f.nc"}) == "conservative"
    # recorded legacy, nothing asked: refused, saying how to run it
    with pytest.raises(ParameterFileError) as exc:
        resolve_closure(legacy)
    _one_line(exc, "fit.nc", "attribute 'closure'", "expected 'conservative'", "found 'legacy'", "--closure legacy")
    # asked explicitly: used; a warning when it differs from the record
    with caplog.at_level(logging.WARNING):
        assert resolve_closure(legacy, "legacy") == "legacy"
        assert not caplog.records
        assert resolve_closure(legacy, "conservative") == "conservative"
    assert "fit.nc" in caplog.text and "legacy" in caplog.text
    caplog.clear()
    # an older file without the attribute: the default, with a logged warning
    with caplog.at_level(logging.WARNING):
        assert resolve_closure({"source_file": "old.nc"}) == "conservative"
    assert "old.nc" in caplog.text and "closure" in caplog.text
    with pytest.raises(ParameterFileError):
        resolve_closure({"closure": "leaky", "source_file": "f.nc"})
    # the soil grid follows the same rule; products' older 'grid' attribute counts as a record
    with pytest.raises(ParameterFileError) as exc:
        resolve_soil_grid({"grid": "clm45_10", "source_file": "p.nc"})
    _one_line(exc, "p.nc", "soil_grid", "clm45_10")
    assert resolve_soil_grid({"soil_grid": "clm45_10"}, "clm45_10") == "clm45_10"


def test_write_then_read_round_trip(tmp_path, rng):
    th = _grid_theta(rng, names=_spec_names())
    path = write_parameter_file(th, tmp_path / "sub" / "theta.nc", closure="legacy", soil_grid="clm5_20",
                                source="unit test", ignored=None)
    assert [p.name for p in path.parent.iterdir()] == ["theta.nc"]  # atomic: no temporary file left
    got = read_parameter_file(path)
    assert got.attrs["closure"] == "legacy" and got.attrs["soil_grid"] == "clm5_20"
    assert got.attrs["source"] == "unit test" and "ignored" not in got.attrs
    assert got.attrs["lat_lon_grid"] == "lat 4 values -52.5..52.5 step 35; lon 6 values -180..120 step 60 (degrees)"
    np.testing.assert_array_equal(got.values, th.values)
    np.testing.assert_array_equal(got["lower"].values, LOWER)
    attrs = parameter_file_attrs("conservative")
    assert attrs["closure"] == "conservative" and attrs["soil_grid"] == "clm5_20" and "lat_lon_grid" not in attrs
    with pytest.raises(ParameterFileError):
        parameter_file_attrs("open")
