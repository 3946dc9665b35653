"""`proda simulate / map / sensitivity --params` with parameter files as users have them.

The CLM5 h0 fixture is on 0..360 longitudes (read_forcing hands it out on -180..180, the cells in
another order); parameter files on either convention, with the spec's or any common spelling of the
names, must give the same cells and stocks. Closures: spec §(g), parameters fitted under one are not
valid under the other, so a mismatch is refused unless the closure is asked for explicitly.
"""

import logging
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from proda_engine import api
from proda_engine.cli import main
from proda_engine.data.parameter_files import write_parameter_file
from proda_engine.parameters import PARAMETER_NAMES

FIX = Path(__file__).resolve().parents[1] / "data" / "fixtures"
CLIM = FIX / "clm5" / "case.clm2.h0.clim.nc"
STOCKS = ["soc_stock_0_30cm", "soc_stock_0_100cm", "soc_stock_whole", "turnover"]


@pytest.fixture(scope="module")
def forcing():
    return api.read_forcing(CLIM)


@pytest.fixture(scope="module")
def theta(forcing):
    """Per-cell theta on the forcing grid as read (-180..180), table names."""
    rng = np.random.default_rng(7)
    shape = (21, forcing.sizes["lat"], forcing.sizes["lon"])
    return xr.DataArray(rng.uniform(0.25, 0.75, shape), dims=("parameter", "lat", "lon"),
                        coords={"parameter": list(PARAMETER_NAMES), "lat": forcing["lat"].values,
                                "lon": forcing["lon"].values})


def _on_0_360(th: xr.DataArray) -> xr.DataArray:
    """The same cells on the CLM file's own longitudes (0..360, ascending), as a user would save them."""
    lon = th["lon"].values % 360.0
    order = np.argsort(lon)
    return th.isel(lon=order).assign_coords(lon=lon[order])


def _simulate(tmp_path: Path, params: Path, *extra: str, name: str = "out.nc") -> xr.Dataset:
    out = tmp_path / name
    assert main(["simulate", "--forcing", str(CLIM), "--params", str(params), "--out", str(out), *extra]) == 0
    with xr.open_dataset(out) as ds:
        return ds.load()


def _same_cells_and_stocks(a: xr.Dataset, b: xr.Dataset) -> None:
    np.testing.assert_array_equal(a["status"].values, b["status"].values)
    assert int((a["status"] == 0).sum()) > 0
    for v in STOCKS:
        np.testing.assert_allclose(a[v].values, b[v].values, rtol=1e-12, atol=0.0, err_msg=v)


def _one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


def test_spec_spellings_and_0_360_longitudes_give_the_same_run(tmp_path, theta):
    ref = tmp_path / "ref.nc"
    theta.to_dataset(name="theta").to_netcdf(ref)  # a plain user file: no closure attribute
    base = _simulate(tmp_path, ref, name="base.nc")
    for i, spelling in enumerate(["w-scaling", "w_scaling", "W Scaling"]):
        names = [spelling if n == "wscaling" else n.upper() for n in PARAMETER_NAMES]
        f = tmp_path / f"user{i}.nc"
        # the forcing file's own 0..360 longitudes, names in reverse order
        _on_0_360(theta).assign_coords(parameter=names).isel(parameter=slice(None, None, -1)).to_dataset(
            name="theta").to_netcdf(f)
        _same_cells_and_stocks(base, _simulate(tmp_path, f, name=f"out{i}.nc"))


def test_one_homogeneous_set_with_spec_names(tmp_path):
    f = tmp_path / "homog.nc"
    names = [n.replace("wscaling", "w-scaling") for n in PARAMETER_NAMES]
    xr.Dataset({"theta": ("parameter", np.full(21, 0.4))}, coords={"parameter": names}).to_netcdf(f)
    mid = api.simulate(CLIM, np.full(21, 0.4))
    _same_cells_and_stocks(mid, _simulate(tmp_path, f))


def test_unknown_name_and_wrong_grid_are_one_line_errors(tmp_path, theta, capsys):
    bad = tmp_path / "unknown.nc"
    theta.assign_coords(parameter=[*PARAMETER_NAMES[:-1], "betta"]).to_dataset(name="theta").to_netcdf(bad)
    out = tmp_path / "never.nc"
    assert main(["simulate", "--forcing", str(CLIM), "--params", str(bad), "--out", str(out)]) == 2
    _one_line_error(capsys, "unknown.nc", "coordinate 'parameter'", "expected", "wscaling", "'betta'")
    shifted = tmp_path / "shifted.nc"
    theta.assign_coords(lon=theta["lon"].values + 5.0).to_dataset(name="theta").to_netcdf(shifted)
    assert main(["simulate", "--forcing", str(CLIM), "--params", str(shifted), "--out", str(out)]) == 2
    _one_line_error(capsys, "shifted.nc", "coordinate 'lon'", "expected the forcing grid's 6 values -180..120 step 60",
                    "found 6 values -175..125 step 60")
    coarse = tmp_path / "coarse.nc"
    theta.isel(lat=slice(0, 2)).to_dataset(name="theta").to_netcdf(coarse)
    assert main(["simulate", "--forcing", str(CLIM), "--params", str(coarse), "--out", str(out)]) == 2
    _one_line_error(capsys, "coarse.nc", "coordinate 'lat'", "expected", "4 values", "found 2 values")
    assert not out.exists()


def test_closure_mismatch_is_refused_unless_asked_for(tmp_path, theta, capsys, caplog):
    legacy = write_parameter_file(theta, tmp_path / "legacy_fit.nc", closure="legacy")
    out = tmp_path / "refused.nc"
    assert main(["simulate", "--forcing", str(CLIM), "--params", str(legacy), "--out", str(out)]) == 2
    _one_line_error(capsys, "legacy_fit.nc", "attribute 'closure'", "found 'legacy'", "--closure legacy")
    assert not out.exists()
    as_fitted = _simulate(tmp_path, legacy, "--closure", "legacy", name="as_fitted.nc")
    assert as_fitted.attrs["closure"] == "legacy" and as_fitted.attrs["soil_grid"] == "clm5_20"
    with caplog.at_level(logging.WARNING):
        overridden = _simulate(tmp_path, legacy, "--closure", "conservative", name="overridden.nc")
    assert overridden.attrs["closure"] == "conservative"
    assert "legacy_fit.nc" in caplog.text and "explicitly" in caplog.text
    # physics: the closures differ only by the legacy sink below bedrock (spec (g)): identical stocks where
    # bedrock lies below the model (nbedrock = 20), less carbon where it is shallower, mass conserved otherwise
    ok = (as_fitted["status"] == 0).values
    nb = api.read_forcing(CLIM)["nbedrock"].values
    deep, shallow = ok & (nb == 20), ok & (nb < 20)
    assert shallow.any() and deep.any()
    lw, cw = as_fitted["soc_stock_whole"].values, overridden["soc_stock_whole"].values
    np.testing.assert_allclose(lw[deep], cw[deep], rtol=1e-12)
    assert (lw[shallow] < cw[shallow]).all()
    assert float(np.nanmax(np.abs(overridden["mass_balance_residual"].values))) < 1e-9


def test_outputs_record_closure_and_grid_and_serve_as_parameter_files(tmp_path, theta, forcing, capsys, caplog):
    old = tmp_path / "old.nc"
    theta.to_dataset(name="theta").to_netcdf(old)
    with caplog.at_level(logging.WARNING):
        run = _simulate(tmp_path, old, "--closure", "legacy", name="run.nc")
    assert "old.nc" in caplog.text and "'closure'" in caplog.text  # older file: accepted, warned
    assert run.attrs["closure"] == "legacy" and run.attrs["soil_grid"] == "clm5_20"
    assert run.attrs["lat_lon_grid"].startswith("lat 4 values -52.5..52.5 step 35; lon 6 values -180..120")
    # the product is itself a parameter file that remembers its closure
    out = tmp_path / "again.nc"
    assert main(["simulate", "--forcing", str(CLIM), "--params", str(tmp_path / "run.nc"), "--out", str(out)]) == 2
    _one_line_error(capsys, "run.nc", "found 'legacy'")
    _same_cells_and_stocks(run, _simulate(tmp_path, tmp_path / "run.nc", "--closure", "legacy", name="again.nc"))


def test_api_simulate_checks_the_closure_of_a_theta_with_attrs(forcing, theta):
    fitted = theta.assign_attrs(closure="legacy")
    with pytest.raises(ValueError, match="closure"):
        api.simulate(forcing, fitted)
    assert api.simulate(forcing, fitted, closure="legacy").attrs["closure"] == "legacy"
    assert api.simulate(forcing, theta).attrs["closure"] == "conservative"  # in-memory, nothing recorded


def _world_theta(world, closure: str | None, tmp_path: Path, name: str) -> Path:
    truth = world.truth.transpose("parameter", "lat", "lon")
    th = truth.isel(lat=slice(None, None, -1), parameter=slice(None, None, -1))  # north to south, names reversed
    th = th.assign_coords(parameter=[n.replace("wscaling", "w-scaling") for n in PARAMETER_NAMES][::-1])
    if closure is None:
        th.to_dataset(name="theta").to_netcdf(tmp_path / name)
        return tmp_path / name
    return write_parameter_file(th, tmp_path / name, closure=closure)


def test_map_and_sensitivity_refuse_a_closure_mismatch(world, tmp_path, capsys):
    legacy = _world_theta(world, "legacy", tmp_path, "legacy_world.nc")
    out = tmp_path / "map.nc"
    assert main(["map", "--world", "tiny", "--params", str(legacy), "--out", str(out)]) == 2
    _one_line_error(capsys, "legacy_world.nc", "found 'legacy'", "--closure legacy")
    assert main(["sensitivity", "--world", "tiny", "--params", str(legacy), "--out", str(tmp_path / "sens")]) == 2
    _one_line_error(capsys, "legacy_world.nc", "found 'legacy'")
    assert main(["map", "--world", "tiny", "--params", str(legacy), "--closure", "legacy", "--out", str(out)]) == 0
    with xr.open_dataset(out) as ds:
        assert ds.attrs["closure"] == "legacy" and ds.attrs["soil_grid"] == "clm5_20" and "lat_lon_grid" in ds.attrs
        legacy_map = ds.load()
    # the same cells and stocks from a plain user file (no attributes) run with the same closure
    plain = _world_theta(world, None, tmp_path, "plain_world.nc")
    out2 = tmp_path / "map2.nc"
    assert main(["map", "--world", "tiny", "--params", str(plain), "--closure", "legacy", "--out", str(out2)]) == 0
    with xr.open_dataset(out2) as ds:
        for v in ("soc_stock_whole", "turnover"):
            np.testing.assert_allclose(ds[v].values, legacy_map[v].values, rtol=1e-12, equal_nan=True)
