"""Gridded steady-state products and the `proda simulate` command on real-format netCDF fixtures."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from proda_engine import api
from proda_engine.cli import main
from proda_engine.grid import get_grid
from proda_engine.parameters import PARAMETER_NAMES

FIX = Path(__file__).resolve().parents[1] / "data" / "fixtures"
CLIM = FIX / "clm5" / "case.clm2.h0.clim.nc"


@pytest.fixture(scope="module")
def forcing():
    return api.read_forcing(CLIM)


def test_products_have_units_and_named_dims(forcing):
    ds = api.simulate(forcing, preset="midpoint", include_pools=True)
    assert ds["soc"].dims == ("layer", "lat", "lon") and ds["pools"].dims == ("pool", "layer", "lat", "lon")
    for name, var in ds.data_vars.items():
        if name != "status":
            assert "units" in var.attrs and "long_name" in var.attrs, name
    ok = ds["status"] == 0
    assert int(ok.sum()) == int(forcing["valid"].sum())
    assert bool(ds["soc_stock_whole"].where(~ok).isnull().all())  # ocean/invalid cells stay empty


def test_stocks_monotone_in_depth_and_turnover_is_stock_over_input(forcing):
    ds = api.simulate(forcing, preset="midpoint")
    s = [ds[f"soc_stock_{k}"] for k in ("0_30cm", "0_100cm", "0_200cm", "whole")]
    for a, b in itertools.pairwise(s):
        assert bool((b >= a).where(ds.status == 0, True).all())
    np.testing.assert_allclose((ds.soc_stock_whole * 1000 / ds.input).values, ds.turnover.values, rtol=1e-12)
    assert float(np.nanmax(np.abs(ds.mass_balance_residual))) < 1e-9


def test_per_cell_theta_and_default_preset(forcing, rng):
    shape = (forcing.sizes["lat"], forcing.sizes["lon"], 21)
    theta = xr.DataArray(rng.uniform(0.3, 0.7, shape), dims=("lat", "lon", "parameter"),
                         coords={"lat": forcing.lat, "lon": forcing.lon, "parameter": list(PARAMETER_NAMES)})
    ds = api.simulate(forcing, theta)
    np.testing.assert_allclose(ds["theta"].transpose("lat", "lon", "parameter").values[forcing.valid.values],
                               theta.values[forcing.valid.values])
    d = api.simulate(forcing, preset="default")
    assert d.attrs["parameters"] == "default CLM5 preset" and int((d.status == 0).sum()) > 0


def test_theta_on_another_grid_is_rejected(forcing):
    theta = xr.DataArray(np.full((2, 3, 21), 0.5), dims=("lat", "lon", "parameter"))
    with pytest.raises(ValueError, match="theta"):
        api.simulate(forcing, theta)


def test_cli_simulate_writes_netcdf_with_provenance(tmp_path):
    out = tmp_path / "out.nc"
    assert main(["simulate", "--forcing", str(CLIM), "--preset", "midpoint", "--out", str(out)]) == 0
    with xr.open_dataset(out) as ds:
        assert ds.attrs["closure"] == "conservative" and "input_sha256" in ds.attrs
        assert ds.sizes["layer"] == get_grid().n_layers


def test_cli_params_file_and_bad_input(tmp_path, capsys):
    params = tmp_path / "p.nc"
    theta = xr.Dataset({"theta": ("parameter", np.full(21, 0.4))}, coords={"parameter": list(PARAMETER_NAMES)})
    theta.to_netcdf(params)
    assert main(["simulate", "--forcing", str(CLIM), "--params", str(params), "--out", str(tmp_path / "a.nc")]) == 0
    bad = FIX / "bad" / "forcing_tsoi_celsius.nc"
    out = tmp_path / "b.nc"
    assert main(["simulate", "--forcing", str(bad), "--preset", "midpoint", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "forcing_tsoi_celsius.nc" in err and "TSOI" in err and "Celsius" in err
    assert not out.exists() and not list(tmp_path.glob("b.nc*"))  # no partial output
