"""Real soil in the default world: HWSD topsoil aggregation (synthetic 0.05-degree files in the ORNL DAAC
format), fallbacks, and the pedotransfer derivations' physical bounds. No ../shared data needed."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr

from proda_engine.data import geosources as gs
from proda_engine.data import world as W

# --------------------------------------------------------------------------------------------
# HWSD aggregation


def _write_hwsd(folder, fields: dict[str, np.ndarray], lat: np.ndarray, lon: np.ndarray) -> None:
    """Files like permamodel/data/T_*.nc4: NETCDF4_CLASSIC, float64 (lat, lon), fill -1, '%' units."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in fields.items():
        with netCDF4.Dataset(folder / f"{name}.nc4", "w", format="NETCDF4_CLASSIC") as ds:
            ds.createDimension("lat", lat.size)
            ds.createDimension("lon", lon.size)
            ds.createVariable("lat", "f8", ("lat",))[:] = lat
            ds.createVariable("lon", "f8", ("lon",))[:] = lon
            v = ds.createVariable(name, "f8", ("lat", "lon"), fill_value=-1.0, zlib=True)
            v.units = "%"
            v.missing_value = -1.0
            v[:] = np.where(np.isfinite(a), a, -1.0)


@pytest.fixture
def hwsd_files(tmp_path):
    """Two 0.5-degree blocks (60-60.5 N and 60.5-61 N) by two (0-0.5 E, 0.5-1 E) of 0.05-degree cells."""
    lat = 60.025 + 0.05 * np.arange(20)
    lon = 0.025 + 0.05 * np.arange(20)
    rng = np.random.default_rng(0)
    sand = rng.uniform(10, 80, (20, 20)).round()
    clay = rng.uniform(5, 100 - sand).round()
    silt = 100 - sand - clay
    oc = rng.uniform(0.2, 5.0, (20, 20)).round(2)
    # block (0, 1): half the cells are a non-soil unit (zero texture) and a quarter are missing
    sand[0:10, 10:15] = silt[0:10, 10:15] = clay[0:10, 10:15] = 0.0
    oc[0:10, 10:15] = 0.0
    for a in (sand, silt, clay, oc):
        a[0:5, 15:20] = np.nan
    # block (1, 1): no soil at all (a glacier)
    for a in (sand, silt, clay, oc):
        a[10:20, 10:20] = 0.0
    fields = {"T_SAND": sand, "T_SILT": silt, "T_CLAY": clay, "T_OC": oc}
    _write_hwsd(tmp_path / "hwsd", fields, lat, lon)
    return tmp_path / "hwsd", fields, lat, lon


def test_hwsd_block_means_are_area_weighted_over_soil_cells(hwsd_files):
    folder, fields, lat, lon = hwsd_files
    out = gs.hwsd_topsoil(folder)
    np.testing.assert_allclose(out["lat"], [60.25, 60.75])
    np.testing.assert_allclose(out["lon"], [0.25, 0.75])
    w = np.cos(np.deg2rad(lat))[:, None] * np.ones((1, lon.size))
    tex = fields["T_SAND"] + fields["T_SILT"] + fields["T_CLAY"]
    soil = np.isfinite(tex) & (tex > 0)
    for v, a in fields.items():
        for bi in range(2):
            for bj in range(2):
                s = np.s_[10 * bi:10 * bi + 10, 10 * bj:10 * bj + 10]
                ok = soil[s]
                expect = (a[s][ok] * w[s][ok]).sum() / w[s][ok].sum() if ok.any() else np.nan
                np.testing.assert_allclose(out[v][bi, bj], expect, rtol=1e-12, equal_nan=True)
    # non-soil and missing cells do not vote; the glacier block has no value
    assert np.isnan(out["T_SAND"][1, 1]) and np.isfinite(out["T_SAND"][0, 1])
    assert out["valid_fraction"][0, 0] == pytest.approx(1.0)
    assert out["valid_fraction"][1, 1] == 0.0
    f01 = (w[0:10, 10:20] * soil[0:10, 10:20]).sum() / w[0:10, 10:20].sum()
    assert out["valid_fraction"][0, 1] == pytest.approx(f01) and f01 == pytest.approx(0.25, abs=0.01)
    # texture of every soil block still sums to 100
    s = out["T_SAND"] + out["T_SILT"] + out["T_CLAY"]
    np.testing.assert_allclose(s[np.isfinite(s)], 100.0)


def test_hwsd_north_up_files_and_errors(hwsd_files, tmp_path):
    folder, fields, lat, lon = hwsd_files
    flipped = {k: a[::-1] for k, a in fields.items()}
    _write_hwsd(tmp_path / "north_up", flipped, lat[::-1], lon)
    a, b = gs.hwsd_topsoil(folder), gs.hwsd_topsoil(tmp_path / "north_up")
    for v in (*gs.HWSD_VARIABLES, "valid_fraction", "lat"):
        np.testing.assert_allclose(a[v], b[v], equal_nan=True)
    (folder / "T_OC.nc4").unlink()
    with pytest.raises(FileNotFoundError, match=r"T_OC\.nc4"):
        gs.hwsd_topsoil(folder)


# --------------------------------------------------------------------------------------------
# the committed base file


def test_base_file_carries_hwsd_topsoil():
    b = W.load_base()
    land = W.land_mask(b)
    for v in (*W.HWSD_FIELDS, "hwsd_fraction"):
        assert v in b and b[v].attrs["units"] in ("%", "1"), v
        assert "HWSD" in b[v].attrs["source"] and "ORNLDAAC/1247" in b[v].attrs["source"]
    has = np.isfinite(b["hwsd_sand"].values)
    assert has[land].mean() > 0.94  # ice sheets and shifting sand are the gaps
    tex = (b["hwsd_sand"] + b["hwsd_silt"] + b["hwsd_clay"]).values[has]
    np.testing.assert_allclose(tex, 100.0, atol=0.25)  # BitRound (10 bits): < 0.07 % per fraction
    oc = b["hwsd_oc"].values[has]
    assert oc.min() >= 0 and oc.max() < 60

    def at(v: str, lat: float, lon: float) -> float:
        return float(b[v].sel(lat=lat, lon=lon, method="nearest"))

    assert at("hwsd_oc", 53.0, -85.0) > 20  # Hudson Bay lowlands peat
    assert at("hwsd_oc", 42.0, -93.5) < 5  # Iowa: mineral prairie soil
    assert np.isnan(at("hwsd_sand", 72.0, -40.0))  # Greenland ice sheet: no soil


# --------------------------------------------------------------------------------------------
# pedotransfer relations


def test_saxton_rawls_and_adams_reference_values():
    sr = W.saxton_rawls(np.array([90.0, 40.0, 20.0]), np.array([5.0, 20.0, 50.0]), np.array([1.0, 2.5, 2.0]))
    # wilting point: sand ~0.03, loam ~0.14, clay ~0.30 m3 m-3 (Saxton & Rawls 2006, Table 3 classes)
    np.testing.assert_allclose(sr["theta_1500"], [0.033, 0.139, 0.296], atol=0.005)
    assert np.all(sr["theta_33"] > sr["theta_1500"]) and np.all(sr["theta_s"] > sr["theta_33"])
    rho = W.saxton_rawls(np.array([90.0, 20.0]), np.array([5.0, 50.0]), np.zeros(2))["rho_n"]
    assert 1.5 < rho[0] < 1.65 and 1.25 < rho[1] < 1.45  # sand denser than clay
    bd = W.adams_bulk_density(np.array([0.0, 1.0, 10.0, 45.0]), np.full(4, 1.5))
    assert bd[0] == pytest.approx(1.5) and np.all(np.diff(bd) < 0)
    assert 0.2 < bd[-1] < 0.35  # peat


def _derive(sand0, silt0, clay0, oc0, igbp, **kw):
    n = np.size(sand0)
    args = {"mi": np.full(n, 1.0), "arid": np.zeros(n), "tropical_humid": np.zeros(n), "z_relief": np.zeros(n),
            "depth_to_bedrock_m": np.full(n, 10.0)}
    args.update(kw)
    return W.derive_soil(np.asarray(sand0, float), np.asarray(silt0, float), np.asarray(clay0, float),
                         np.asarray(oc0, float), igbp=np.asarray(igbp), **args)


def test_derived_soil_is_physical():
    rng = np.random.default_rng(1)
    n = 5000
    comp = rng.dirichlet([1.0, 1.0, 1.0], n) * 100.0
    oc = np.exp(rng.uniform(np.log(0.05), np.log(50.0), n))
    d = _derive(*comp.T, oc, rng.integers(0, 17, n), mi=np.exp(rng.uniform(-3, 2, n)),
                arid=rng.uniform(-2, 3, n), tropical_humid=rng.uniform(0, 1, n), z_relief=rng.normal(0, 1, n),
                depth_to_bedrock_m=np.exp(rng.uniform(np.log(0.3), np.log(60), n)))
    for depth in W.SOIL_DEPTHS_CM:
        s, si, c = d[f"sand_{depth}"], d[f"silt_{depth}"], d[f"clay_{depth}"]
        np.testing.assert_allclose(s + si + c, 100.0, atol=1e-9)
        assert min(s.min(), si.min(), c.min()) >= 0
        assert 100 <= d[f"bd_{depth}"].min() and d[f"bd_{depth}"].max() <= 1900
        assert 1 <= d[f"wwp_{depth}"].min() and d[f"wwp_{depth}"].max() <= 45
        assert 1 <= d[f"cec_{depth}"].min() and d[f"cec_{depth}"].max() <= 150
        assert 3.5 <= d[f"ph_{depth}"].min() and d[f"ph_{depth}"].max() <= 9.5
        assert 0 <= d[f"cfvo_{depth}"].min() and d[f"cfvo_{depth}"].max() <= 60
        assert set(np.unique(d[f"texture_{depth}"])) <= set(range(1, 13))
        assert d[f"oc_{depth}"].min() > 0
    np.testing.assert_array_equal(d["sand_0"], comp[:, 0])  # the topsoil itself is kept
    # clay enriched and organic carbon depleted with depth (mineral soils), bulk density up
    assert np.all(d["clay_100"] >= d["clay_30"] - 1e-9) and np.all(d["clay_30"] >= d["clay_0"] - 1e-9)
    assert np.all(d["oc_100"] <= d["oc_30"] + 1e-9) and np.all(d["oc_30"] <= d["oc_0"] + 1e-9)
    mineral = oc < 5
    assert np.all(d["bd_100"][mineral] >= d["bd_0"][mineral])


def test_derived_soil_responds_like_soil():
    # sand vs clay vs peat under the same climate
    d = _derive([85.0, 20.0, 30.0], [10.0, 30.0, 40.0], [5.0, 50.0, 30.0], [0.5, 1.5, 40.0], [10, 10, 11])
    bd, wwp, cec = d["bd_0"], d["wwp_0"], d["cec_0"]
    assert bd[2] < 400 < bd[1] < bd[0]  # peat light, sand dense
    assert wwp[1] > 3 * wwp[0]  # clay holds water at -1.5 MPa
    assert cec[2] > cec[1] > cec[0]  # organic matter, then clay
    assert d["ph_0"][2] < d["ph_0"][1]  # peat is acid
    assert d["oc_100"][2] / d["oc_0"][2] == pytest.approx(W.PEAT_OC_RATIO[100])
    # forest soils lose carbon with depth faster than shrubland soils (Jobbagy & Jackson 2000)
    f = _derive([40.0, 40.0], [40.0, 40.0], [20.0, 20.0], [2.0, 2.0], [1, 7])
    assert f["oc_100"][0] < f["oc_100"][1]
    # drylands alkaline, humid climates acid (water balance, Slessarev et al. 2016)
    ph = _derive([40.0, 40.0], [40.0, 40.0], [20.0, 20.0], [1.0, 1.0], [10, 10], mi=np.array([0.2, 3.0]))["ph_0"]
    assert ph[0] > 7.5 and ph[1] < 5.5


# --------------------------------------------------------------------------------------------
# fallbacks where HWSD has no soil


def _base(hwsd: dict[str, np.ndarray], koppen: np.ndarray, igbp: np.ndarray) -> xr.Dataset:
    ny, nx = koppen.shape
    lat = 40.25 + 0.5 * np.arange(ny)
    lon = 0.25 + 0.5 * np.arange(nx)
    data = {v: (("lat", "lon"), a) for v, a in hwsd.items()}
    data.update(koppen=(("lat", "lon"), koppen), igbp=(("lat", "lon"), igbp),
                land_fraction=(("lat", "lon"), np.ones((ny, nx))), cell_area=(("lat",), gs.cell_area_m2(lat)))
    return xr.Dataset(data, coords={"lat": lat, "lon": lon})


def test_fallbacks_are_ordered_and_counted():
    """Columns 0-9 hold HWSD (Koppen 15, grassland); 10-29 none: 10-12 within 1.5 deg (nearest), 13-17 same
    class (class mean), 18-22 another Koppen class (land-cover mean), 23-29 barren (global mean)."""
    ny, nx = 4, 30
    kop = np.full((ny, nx), 15)
    kop[:, 18:23] = 29
    lc = np.full((ny, nx), 10)
    lc[:, 23:] = 16
    sand = np.where(np.arange(nx) < 5, 60.0, 40.0) * np.ones((ny, 1))
    oc = np.where(np.arange(nx) < 5, 1.0, 3.0) * np.ones((ny, 1))
    hw = {"hwsd_sand": sand, "hwsd_silt": 90.0 - sand, "hwsd_clay": np.full((ny, nx), 10.0), "hwsd_oc": oc}
    hole = np.zeros((ny, nx), bool)
    hole[:, 10:] = True
    hole[1, 2] = True  # a gap inside the data
    for a in hw.values():
        a[hole] = np.nan
    top = W.topsoil_from_base(_base(hw, kop, lc), np.ones((ny, nx), bool), res=0.5)
    src = top["source"]
    assert src[1, 2] == 2 and top["sand"][1, 2] == 60.0
    assert np.all(src[:, :10][~hole[:, :10]] == 1)
    assert np.all(src[:, 10:13] == 2) and np.all(top["sand"][:, 10:13] == 40.0)
    assert np.all(src[:, 13:18] == 3) and np.all(src[:, 18:23] == 4) and np.all(src[:, 23:] == 5)
    # the class has rows of different area: the means are area weighted
    w = gs.cell_area_m2(40.25 + 0.5 * np.arange(ny))[:, None] * np.ones((1, 10))
    ok = ~hole[:, :10]
    expect_oc = (oc[:, :10][ok] * w[ok]).sum() / w[ok].sum()
    for cols in (np.s_[13:18], np.s_[18:23], np.s_[23:]):  # one class / land cover here: all the same mean
        np.testing.assert_allclose(top["oc"][:, cols], expect_oc)
    np.testing.assert_allclose(top["sand"] + top["silt"] + top["clay"], 100.0)
    assert top["counts"] == {"hwsd": 39, "hwsd_nearest": 13, "hwsd_class_mean": 20, "hwsd_landcover_mean": 20,
                             "hwsd_global_mean": 28}


def test_world_soil_covariates_come_from_hwsd(tmp_path):
    p = W.build_world(tmp_path / "w", region="tiny", n_sites=20)
    cov = xr.open_dataset(p.covariates)
    b = W.load_base().sel(lat=cov["lat"], lon=cov["lon"])
    land = np.isfinite(cov["cell_area"].values)
    src = cov["soil_source"].values[land]
    assert (src == 1).all()  # the Alps: HWSD everywhere
    tex = (b["hwsd_sand"] + b["hwsd_silt"] + b["hwsd_clay"]).values
    for v, name in (("hwsd_clay", "Clay_Content_0cm"), ("hwsd_sand", "Sand_Content_0cm")):
        expect = (100.0 * b[v].values / tex)[land]
        np.testing.assert_allclose(cov[name].values[land], expect, rtol=1e-5)
    np.testing.assert_allclose(cov["Organic_Carbon_0cm"].values[land], 10.0 * b["hwsd_oc"].values[land], rtol=1e-5)
    assert cov["Organic_Carbon_0cm"].attrs["units"] == "g kg-1"
    assert "HWSD" in cov["Clay_Content_0cm"].attrs["long_name"]
