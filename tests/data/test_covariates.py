"""Covariate grids (netCDF + GeoTIFF) and nearest-valid-cell sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import xarray as xr

from proda_engine.data.covariates import read_covariates
from proda_engine.data.errors import CovariateError
from proda_engine.data.forcing import read_forcing
from proda_engine.data.sampling import EARTH_RADIUS_KM, sample_nearest_valid

FIX = Path(__file__).parent / "fixtures"
COV = FIX / "covariates"
LONS = [-180.0, -120.0, -60.0, 0.0, 60.0, 120.0]
LATS = [-52.5, -17.5, 17.5, 52.5]


@pytest.fixture(scope="module")
def cov() -> xr.Dataset:
    return read_covariates([COV / "covariates.nc", COV / "Elevation.tif"], categorical=["ESA_Land_Cover"])


def test_grid_normalised_and_merged(cov: xr.Dataset) -> None:
    assert cov["lat"].values.tolist() == LATS
    assert cov["lon"].values.tolist() == LONS
    assert list(cov.data_vars) == ["BIO1", "ESA_Land_Cover", "Clay_Content_0cm", "Elevation", "valid"]
    assert "crs" not in cov  # scalar grid-mapping variable is not a covariate
    for v in ("BIO1", "ESA_Land_Cover", "Clay_Content_0cm", "Elevation"):
        assert cov[v].dtype == np.float64 and cov[v].dims == ("lat", "lon")
    assert cov["BIO1"].attrs["units"] == "degC"
    assert cov["Elevation"].attrs["units"] == "unknown"
    assert cov["Elevation"].attrs["source_file"] == "Elevation.tif"


def test_geotiff_known_cells(cov: xr.Dataset) -> None:
    elev = cov["Elevation"]
    # GeoTIFF row 0 (52.5N), column 0 (0E) holds 0 m; column 5 (300E -> -60) holds 500 m
    assert float(elev.sel(lat=52.5, lon=0.0)) == 0.0
    assert float(elev.sel(lat=52.5, lon=-60.0)) == 500.0
    assert float(elev.sel(lat=-52.5, lon=60.0)) == 1900.0
    assert np.isnan(float(elev.sel(lat=-52.5, lon=0.0)))  # GDAL_NODATA -9999
    assert cov["Elevation"].attrs["nodata"] == -9999.0


def test_nan_block_gives_invalid_cells(cov: xr.Dataset) -> None:
    valid = cov["valid"]
    assert valid.dtype == np.bool_
    assert int((~valid).sum()) == 5  # 2 x 2 clay block + 1 elevation nodata cell
    assert not valid.sel(lat=[17.5, 52.5], lon=[-180.0, -120.0]).any()
    assert not bool(valid.sel(lat=-52.5, lon=0.0))


def test_categorical_marking(cov: xr.Dataset, tmp_path: Path) -> None:
    assert cov["ESA_Land_Cover"].attrs["categorical"] == 1
    assert "categorical" not in cov["BIO1"].attrs
    assert cov.attrs["categorical"] == "ESA_Land_Cover"
    ds = read_covariates(COV / "covariates.nc", categorical=["ESA_Land_Cover", "Koppen_Climate_2018"])
    assert ds.attrs["categorical_absent"] == "Koppen_Climate_2018"
    # a file can mark its own categorical variables
    with xr.open_dataset(COV / "covariates.nc") as src:
        marked = src.load()
    marked["BIO1"].attrs["categorical"] = 1
    marked.to_netcdf(tmp_path / "marked.nc")
    assert read_covariates(tmp_path / "marked.nc")["BIO1"].attrs["categorical"] == 1


def test_variable_selection(tmp_path: Path) -> None:
    ds = read_covariates(COV, variables=["Elevation", "BIO1"])  # a folder works too
    assert list(ds.data_vars) == ["Elevation", "BIO1", "valid"]
    assert int((~ds["valid"]).sum()) == 1
    with pytest.raises(CovariateError, match=r"missing requested covariate\(s\) Sand_Content_0cm"):
        read_covariates(COV, variables=["BIO1", "Sand_Content_0cm"])


def _tif(path: Path, data: np.ndarray, *, model_type: int = 2, scale=(60.0, 35.0), tie=(-30.0, 70.0),
         nodata: str | None = None) -> Path:
    keys = (1, 1, 0, 3, 1024, 0, 1, model_type, 1025, 0, 1, 1, 2048, 0, 1, 4326)
    tags = [(33550, "d", 3, (*scale, 0.0), True), (33922, "d", 6, (0.0, 0.0, 0.0, *tie, 0.0), True),
            (34735, "H", len(keys), keys, True)]
    if nodata is not None:
        tags.append((42113, "s", 0, nodata, True))
    tifffile.imwrite(path, data, extratags=tags, photometric="minisblack")
    return path


def test_grid_mismatch_is_an_error(tmp_path: Path) -> None:
    t = _tif(tmp_path / "Slope.tif", np.zeros((4, 3), dtype=np.float32), scale=(120.0, 35.0))
    with pytest.raises(CovariateError, match=r"Slope.tif: variable 'Slope': expected the grid of covariates.nc "
                       r"\(lat 4 x lon 6\), found lat 4 x lon 3"):
        read_covariates([COV / "covariates.nc", t])


def test_projected_geotiff_is_refused(tmp_path: Path) -> None:
    t = _tif(tmp_path / "soc_0-5cm_mean.tif", np.zeros((4, 6), dtype=np.int16), model_type=1)
    with pytest.raises(CovariateError, match=r"soc_0-5cm_mean.tif: expected a geographic \(lat/lon\) GeoTIFF"):
        read_covariates(t)


def test_modis_like_scale_and_special_values(tmp_path: Path) -> None:
    raw = np.array([[1000, 2000, 32761, 32762], [32763, 32764, 32765, 32766],
                    [32767, -100, 0, 5000], [32700, -30000, 12, 7]], dtype=np.int16)
    t = _tif(tmp_path / "Npp.tif", raw, scale=(90.0, 45.0), tie=(-180.0, 90.0), nodata="32767")
    ds = read_covariates(t, scale_factors={"Npp": 0.0001}, valid_ranges={"Npp": (-30000, 32700)})
    npp = ds["Npp"]
    assert int(npp.isnull().sum()) == 7  # the six special codes and the fill value
    assert float(npp.sel(lat=67.5, lon=-135.0)) == pytest.approx(0.1)  # 1000 x 0.0001 kg C m-2
    assert float(npp.sel(lat=-67.5, lon=-135.0)) == pytest.approx(3.27)
    assert npp.attrs["scale_factor_applied"] == 0.0001


# --- sampling ---------------------------------------------------------------------------------------


def _haversine_km(lat1, lon1, lat2, lon2) -> float:
    p1, p2 = np.deg2rad(lat1), np.deg2rad(lat2)
    dlat, dlon = p2 - p1, np.deg2rad(lon2 - lon1)
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return float(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a)))


def test_sample_nearest_valid_skips_invalid_cells(cov: xr.Dataset) -> None:
    s = sample_nearest_valid(cov, lat=[50.0, 18.0, -50.0], lon=[-118.0, 1.0, 5.0], site=["a", "b", "c"])
    assert s.sizes == {"site": 3}
    assert s["site"].values.tolist() == ["a", "b", "c"]
    # (52.5, -120) is in the NaN block, so site a goes to the nearest valid centre (52.5, -60)
    assert (float(s["cell_lat"][0]), float(s["cell_lon"][0])) == (52.5, -60.0)
    assert (float(s["cell_lat"][1]), float(s["cell_lon"][1])) == (17.5, 0.0)
    # (-52.5, 0) has no elevation: the nearest valid centre on the sphere is (-17.5, 0), not (-52.5, 60)
    assert (float(s["cell_lat"][2]), float(s["cell_lon"][2])) == (-17.5, 0.0)
    assert float(s["Elevation"][2]) == 1200.0  # GeoTIFF row 2, column 0
    valid = cov["valid"].values
    for i, (la, lo) in enumerate([(50.0, -118.0), (18.0, 1.0), (-50.0, 5.0)]):
        brute = min((_haversine_km(la, lo, LATS[a], LONS[b]), LATS[a], LONS[b])
                    for a in range(4) for b in range(6) if valid[a, b])
        assert (float(s["cell_lat"][i]), float(s["cell_lon"][i])) == brute[1:]
        assert float(s["distance_km"][i]) == pytest.approx(brute[0], rel=1e-9)
    assert s["distance_km"].attrs["units"] == "km"
    assert s["site_lon"].values.tolist() == [-118.0, 1.0, 5.0]


def test_sample_across_the_antimeridian_and_all_cells(cov: xr.Dataset) -> None:
    s = sample_nearest_valid(cov, lat=[-17.0], lon=[179.5], valid=np.ones((4, 6), dtype=bool))
    assert float(s["cell_lon"][0]) == -180.0
    assert float(s["distance_km"][0]) < 100.0


def test_sample_forcing(tmp_path: Path) -> None:
    f = read_forcing(FIX / "clm5" / "case.clm2.h0.clim.nc")
    s = sample_nearest_valid(f, lat=[-17.0, 50.0], lon=[250.0, -100.0])  # the -120 column is ocean
    assert s["TSOI"].dims == ("month", "layer", "site")
    assert s["valid"].values.all()
    assert s["cell_lon"].values.tolist() == [-60.0, -60.0]
    assert int(s["nbedrock"][0]) == 20


def test_sample_errors(cov: xr.Dataset) -> None:
    with pytest.raises(ValueError, match=r"1 site\(s\) are not, e.g. site 1 at lat=nan"):
        sample_nearest_valid(cov, lat=[0.0, np.nan], lon=[0.0, 0.0])
    with pytest.raises(ValueError, match="no valid grid cell"):
        sample_nearest_valid(cov, lat=[0.0], lon=[0.0], valid=np.zeros((4, 6), dtype=bool))
