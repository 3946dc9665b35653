"""The embedded default world: base file, derivation, formats, caching, determinism, twin writer.

Fast: everything runs on small regions (10 x 10 cells) except the NPP total, which reads the
committed base file only.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from proda_engine.data import world as W
from proda_engine.grid import get_grid
from proda_engine.parameters import PARAMETER_NAMES

FORCING_UNITS = {
    "TSOI": "K",
    "W_SCALAR": "unitless",
    "O_SCALAR": "unitless",
    "FPI_vr": "proportion",
    "ALTMAX": "m",
    "ALTMAX_LASTYEAR": "m",
    "nbedrock": "unitless",
    "CELLSAND": "%",
    "input_cwd": "gC/m^2/yr",
    "input_litter1": "gC/m^2/yr",
    "input_litter2": "gC/m^2/yr",
    "input_litter3": "gC/m^2/yr",
    "NPP": "gC/m^2/yr",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> W.WorldPaths:
    return W.build_world(tmp_path_factory.mktemp("tiny"), region="tiny", n_sites=300, seed=0)


@pytest.fixture(scope="module")
def arctic(tmp_path_factory) -> W.WorldPaths:
    return W.build_world(tmp_path_factory.mktemp("arctic"), region="tiny_arctic", n_sites=100, seed=0)


# --------------------------------------------------------------------------------------------
# the committed base file


def test_base_file_is_small_and_complete():
    assert W.BASE_WORLD.stat().st_size < 6e6  # 5.35 MB with the HWSD topsoil
    b = W.load_base()
    assert b.sizes == {"lat": 360, "lon": 720, "month": 12}
    assert np.all(np.diff(b["lat"].values) > 0) and b["lon"].values[0] == -179.75
    for v in ("land_fraction", "elevation", "tas", "pr", "koppen", "igbp", "continent", "npp", "cell_area",
              *W.HWSD_FIELDS):
        assert v in b and b[v].attrs.get("units"), v


def test_global_npp_and_land_cells():
    b = W.load_base()
    assert 51.0 <= W.global_npp_total(b) <= 61.0  # 56 +- 5 Pg C/yr
    n = int(W.land_mask(b).sum())
    assert 61_000 <= n <= 62_000
    # land area ex-Antarctica ~135 Mkm2 (sum of cell area x land fraction)
    area = (b["cell_area"].values[:, None] * b["land_fraction"].values)[W.land_mask(b)].sum()
    assert 125e12 < area < 140e12
    # Earth's surface from the cell areas
    assert abs(b["cell_area"].values.sum() * 720 / 510.07e12 - 1) < 1e-3


def test_base_spot_checks_look_like_earth():
    b = W.load_base()

    def at(v: str, lat: float, lon: float) -> float:
        return float(b[v].sel(lat=lat, lon=lon, method="nearest").values.mean())

    assert 25 < at("tas", -3.1, -60.0) < 30  # Manaus, degC (the package attrs say K)
    assert at("pr", -3.1, -60.0) * 12 > 1500  # mm/yr
    assert at("pr", 23.0, 12.0) * 12 < 50  # central Sahara
    assert at("elevation", 31.5, 88.0) > 3500  # Tibet
    assert int(b["koppen"].sel(lat=-3.1, lon=-60.0, method="nearest")) in (1, 2)  # Af/Am
    assert int(b["continent"].sel(lat=48.75, lon=2.25, method="nearest")) == 4  # Paris: Europe
    assert int(b["continent"].sel(lat=-25.0, lon=135.0, method="nearest")) == 6  # Australia: Oceania


# --------------------------------------------------------------------------------------------
# derived world: formats and ranges


def test_forcing_format_and_units(tiny):
    with xr.open_dataset(tiny.forcing, decode_times=False, mask_and_scale=False) as raw:
        for v, u in FORCING_UNITS.items():
            assert raw[v].attrs["units"] == u, v
            assert raw[v].attrs.get("long_name"), v
        assert raw["TSOI"].dims == ("time", "levsoi", "lat", "lon")
        assert raw["ALTMAX"].dims == ("time", "lat", "lon")
        assert raw["CELLSAND"].dims == ("levsoi", "lat", "lon")
        assert raw.sizes["time"] == 12 and raw.sizes["levsoi"] == 20
        assert float(raw["TSOI"].attrs["_FillValue"]) == pytest.approx(1e36)
        assert raw["time"].attrs["calendar"] == "noleap"
        lon = raw["lon"].values
        assert lon.min() >= -180 and lon.max() <= 180


def test_forcing_physical_ranges(tiny, arctic):
    for paths in (tiny, arctic):
        ds = xr.open_dataset(paths.forcing)
        land = np.isfinite(ds["NPP"].values)
        assert land.any()
        t = ds["TSOI"].values[:, :, land]
        assert np.isfinite(t).all() and 200 < t.min() and t.max() < 330
        for v in ("W_SCALAR", "O_SCALAR"):
            a = ds[v].values[:, :, land]
            assert a.min() >= 0 and a.max() <= 1, v
        fpi = ds["FPI_vr"].values[:, :, land]
        assert fpi.min() >= 0.3 - 1e-6 and fpi.max() <= 1 + 1e-6
        assert 0.9 < ds["O_SCALAR"].values[:, 0, land].min()  # oxygen scalar ~1 at the surface
        nb = ds["nbedrock"].values[land]
        assert nb.min() >= 1 and nb.max() <= 20 and np.all(nb == np.round(nb))
        for v in ("input_cwd", "input_litter1", "input_litter2", "input_litter3", "NPP"):
            assert ds[v].values[land].min() >= 0, v
        total = sum(ds[v].values[land] for v in ("input_cwd", "input_litter1", "input_litter2", "input_litter3"))
        np.testing.assert_allclose(total, ds["NPP"].values[land], rtol=1e-4)
        sand = ds["CELLSAND"].values[:, land]
        assert sand.min() >= 0 and sand.max() <= 100
        # deep layers approach the annual mean: the seasonal range shrinks with depth
        rng = t.max(axis=0) - t.min(axis=0)
        assert np.all(rng[-1] < 0.2 * rng[0] + 0.5)


def test_permafrost_active_layer(tiny, arctic):
    alp = xr.open_dataset(tiny.forcing)
    land = np.isfinite(alp["NPP"].values)
    # the Alps' cells with MAT > -1 degC have no permafrost: ALTMAX = 10 m
    assert np.nanmax(alp["ALTMAX"].values) == pytest.approx(10.0)
    yak = xr.open_dataset(arctic.forcing)
    land = np.isfinite(yak["NPP"].values)
    alt = yak["ALTMAX"].values[0][land]
    assert np.median(alt) < 3.0 and alt.min() > 0.1
    np.testing.assert_array_equal(yak["ALTMAX"].values, yak["ALTMAX_LASTYEAR"].values)
    # below the active layer the soil stays frozen all year
    z = get_grid().z_node
    t = yak["TSOI"].values[:, :, land]
    deep = z[:, None] > alt[None, :]
    assert np.all(t.max(axis=0)[deep] < 273.15)


def test_covariates(tiny):
    cov = xr.open_dataset(tiny.covariates)
    for name in W.COVARIATE_NAMES:
        assert name in cov, name
        assert cov[name].dims == ("lat", "lon")
        assert "units" in cov[name].attrs
    assert len(W.COVARIATE_NAMES) == 60
    for name in W.CATEGORICAL_COVARIATES:
        assert cov[name].attrs.get("categorical") == 1, name
    land = np.isfinite(cov["cell_area"].values)
    for d in W.SOIL_DEPTHS_CM:
        s = (cov[f"Sand_Content_{d}cm"] + cov[f"Silt_Content_{d}cm"] + cov[f"Clay_Content_{d}cm"]).values[land]
        np.testing.assert_allclose(s, 100.0, atol=1e-3)
        tex = cov[f"Texture_USDA_{d}cm"].values[land]
        assert tex.min() >= 1 and tex.max() <= 12
    bio = {k: cov[k].values[land] for k in ("BIO1", "BIO5", "BIO6", "BIO10", "BIO11", "BIO12", "BIO13", "BIO14")}
    assert np.all(bio["BIO5"] >= bio["BIO10"]) and np.all(bio["BIO10"] >= bio["BIO1"])
    assert np.all(bio["BIO1"] >= bio["BIO11"]) and np.all(bio["BIO11"] >= bio["BIO6"])
    assert np.all(bio["BIO13"] >= bio["BIO14"]) and np.all(bio["BIO12"] >= 12 * bio["BIO14"] - 1e-3)
    assert {"continent", "cell_area", "land_fraction"} <= set(cov.data_vars)
    assert "flag_meanings" in cov["continent"].attrs


def test_truth_parameters(tiny):
    tr = xr.open_dataset(tiny.truth)
    assert tuple(tr["parameter"].values) == PARAMETER_NAMES
    th = tr["theta"].values
    land = np.isfinite(th[0])
    v = th[:, land]
    assert v.min() > 0.05 and v.max() < 0.95
    # weakly identifiable parameters are nearly constant
    for name in ("diffus", "cryo", "fs1s3"):
        assert v[PARAMETER_NAMES.index(name)].std() < 0.02


def test_region_is_subset_of_globe_values(tiny, tmp_path):
    box = (5.0, 7.0, 45.0, 47.0)
    small = W.build_world(tmp_path / "s", region=box, n_sites=20)
    a = xr.open_dataset(small.covariates)
    b = xr.open_dataset(tiny.covariates).sel(lat=a["lat"], lon=a["lon"])
    np.testing.assert_array_equal(a["Clay_Content_0cm"].values, b["Clay_Content_0cm"].values)
    ta = xr.open_dataset(small.truth)["theta"].values
    tb = xr.open_dataset(tiny.truth)["theta"].sel(lat=a["lat"], lon=a["lon"]).values
    np.testing.assert_array_equal(ta, tb)


def test_determinism_and_seed(tiny, tmp_path):
    again = W.build_world(tmp_path / "again", region="tiny", n_sites=300, seed=0)
    other = W.build_world(tmp_path / "other", region="tiny", n_sites=300, seed=1)
    for attr in ("forcing", "covariates", "truth"):
        x = xr.open_dataset(getattr(tiny, attr))
        y = xr.open_dataset(getattr(again, attr))
        xr.testing.assert_identical(x, y)
    pd.testing.assert_frame_equal(pd.read_csv(tiny.sites), pd.read_csv(again.sites))
    # the seed moves the synthetic fields (bedrock, truth noise), never the real soil (HWSD)
    c0, c1 = (xr.open_dataset(p.covariates) for p in (tiny, other))
    assert not np.allclose(c0["Abs_Depth_to_Bedrock"].values, c1["Abs_Depth_to_Bedrock"].values, equal_nan=True)
    np.testing.assert_array_equal(c0["Clay_Content_0cm"].values, c1["Clay_Content_0cm"].values)


def test_sites_and_horizons(tiny):
    sites = pd.read_csv(tiny.sites, keep_default_na=False)
    hz = pd.read_csv(tiny.horizons)
    assert len(sites) == 300
    per = hz.groupby("profile_id").size()
    assert per.min() >= 3 and per.max() <= 8
    assert (hz["lower_depth"] > hz["upper_depth"]).all()
    top = hz.groupby("profile_id")["upper_depth"].min()
    assert (top == 0).all()
    frac_dated = (sites["date"] != "").mean()
    assert 0.5 < frac_dated < 0.8
    cov = xr.open_dataset(tiny.covariates)
    assert sites["latitude"].between(float(cov["lat"].min()) - 1, float(cov["lat"].max()) + 1).all()


def test_site_sampler_distribution_global_shape():
    """Continent shares follow the WoSIS weights (cheap: covariates of a coarse 2-degree world)."""
    b = W.load_base()
    lat, lon = b["lat"].values, b["lon"].values
    mask = W.land_mask(b)
    ds = xr.Dataset(
        {
            "cell_area": (
                ("lat", "lon"),
                np.where(mask, b["cell_area"].values[:, None] * np.ones((1, lon.size)), np.nan),
            ),
            "continent": (("lat", "lon"), np.where(mask, b["continent"].values, np.nan)),
            "ESA_Land_Cover": (("lat", "lon"), np.where(mask, W.IGBP_TO_ESA[b["igbp"].values], np.nan)),
            "Abs_Depth_to_Bedrock": (("lat", "lon"), np.full(mask.shape, 500.0)),
        },
        coords={"lat": lat, "lon": lon},
    )
    sites, hz = W.sample_sites(ds, n_sites=5000, seed=3)
    share = sites["continent"].value_counts(normalize=True)
    assert share[5] == pytest.approx(0.37, abs=0.04)  # North America
    assert share[3] == pytest.approx(0.034, abs=0.02)  # Asia sparse
    assert (np.abs(sites["latitude"]) > 60).mean() < 0.05
    depth = hz.groupby("profile_id")["lower_depth"].max()
    assert 85 <= depth.median() <= 135


def test_coarse_resolution(tmp_path):
    p = W.build_world(tmp_path / "c", region="europe", resolution=2.0, n_sites=50)
    ds = xr.open_dataset(p.forcing)
    assert np.allclose(np.diff(ds["lat"].values), 2.0)
    assert np.isfinite(ds["NPP"].values).sum() > 50


def test_bad_options():
    with pytest.raises(ValueError, match="unknown region"):
        W.resolve_region("atlantis")
    with pytest.raises(ValueError, match="resolution"):
        W.world_options(resolution=0.7)


def test_surface_is_a_typed_frozen_record_of_the_globe():
    import dataclasses

    s = W.derive_surface(W.load_base(), seed=0)
    assert isinstance(s, W.Surface) and s.shape == (360, 720) and s.res == 0.5
    assert s.t_air.shape == s.p.shape == s.wet_rel.shape == s.dtr.shape == (12, 360, 720)
    assert s.mask.dtype == bool and s.mask.sum() == W.GLOBE_LAND_CELLS and np.array_equal(s.ref, s.mask)
    assert sorted(s.bio) == sorted(f"BIO{i}" for i in range(1, 20))
    assert {f"{v}_{d}" for v in ("sand", "clay", "oc", "bd", "ph") for d in W.SOIL_DEPTHS_CM} <= set(s.soil)
    assert sum(s.soil_source_counts.values()) == W.GLOBE_LAND_CELLS
    # the smooth random fields are methods of the record: same name, same field; names are independent
    np.testing.assert_array_equal(s.noise("fpi", 4.0), s.fpi_noise)
    assert not np.allclose(s.noise("theta_q10", 3.0), s.noise("theta_beta", 3.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 1  # type: ignore[misc]


def test_world_files_are_written_whole_with_the_project_file_mode(tiny):
    import os

    um = os.umask(0)
    os.umask(um)
    names = {p.name for p in tiny.root.iterdir() if p.is_file()}
    assert names == {"forcing.nc", "covariates.nc", "truth_parameters.nc", "sites.csv", "horizons.csv",
                     "manifest.json"}  # no temporary files left behind
    for name in names:
        assert (tiny.root / name).stat().st_mode & 0o777 == 0o666 & ~um, name


def test_cache_key_is_unchanged_for_users_caches():
    # Regression values computed with the single-module world.py (before the package split,
    # 2026-12-06): a changed key would silently rebuild every user's cached world.
    from proda_engine.data.world.build import cache_key

    assert W.BUILDER_VERSION == "world-1.2.0"
    assert cache_key("0" * 64, W.world_options()) == "ca0d2562dd84d6415fd8d708ea9b11a5b89956373ecbd59860565234fd9f3299"
    assert cache_key("0" * 64, W.world_options("tiny")) == (
        "c00f352f0ed92a3ab9fcc181527bfba69e542f0151e11d625f31285d1fcdf466")
    assert cache_key("0" * 64, W.world_options((0.0, 20.0, 40.0, 55.0), 1.0, 3, True, 80)) == (
        "162245e47154487233afceb511776ffe6acae903cac5894664c92cc6411b75b6")


def test_world_package_modules_import_one_way_and_say_what_they_hold():
    import ast
    from pathlib import Path

    folder = Path(W.__file__).parent
    deps: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path.name} has no module docstring"
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        deps[path.stem] = {m.rsplit(".", 1)[1] for m in mods if m.startswith("proda_engine.data.world.")}
    assert {"tables", "base", "climate", "soils", "covariates", "sites", "twin", "build", "cache"} <= set(deps)
    # no cycles: repeatedly remove modules whose package imports are all removed already
    done: set[str] = set()
    while len(done) < len(deps):
        ready = {m for m, d in deps.items() if m not in done and d - {m} <= done}
        assert ready, f"import cycle among {sorted(set(deps) - done)}"
        done |= ready


# --------------------------------------------------------------------------------------------
# caching


def test_ensure_world_caches_and_rebuilds_on_change(tmp_path, monkeypatch):
    monkeypatch.setenv("PRODA_CACHE", str(tmp_path / "cache"))
    p1 = W.ensure_world("t", region="tiny", n_sites=30)
    assert p1.root == tmp_path / "cache" / "world" / "t"
    assert p1.forcing.exists()
    man = json.loads(p1.manifest.read_text())
    assert man["builder_version"] == W.BUILDER_VERSION and man["key"]
    stamp = p1.manifest.stat().st_mtime_ns, p1.forcing.stat().st_mtime_ns
    p2 = W.ensure_world("t", region="tiny", n_sites=30)
    assert p2 == p1
    assert (p1.manifest.stat().st_mtime_ns, p1.forcing.stat().st_mtime_ns) == stamp  # cached: not rebuilt
    W.ensure_world("t", region="tiny", n_sites=30, seed=5)  # an option changed: rebuilt
    man2 = json.loads(p1.manifest.read_text())
    assert man2["key"] != man["key"] and man2["options"]["seed"] == 5
    other = W.ensure_world("t", region="tiny", n_sites=30, cache_dir=tmp_path / "other")
    assert other.root == tmp_path / "other" / "world" / "t" and other.manifest.exists()


# --------------------------------------------------------------------------------------------
# twin observations: noise model, interpolation and the WoSIS writer (solver injected)


def test_lognormal_noise_is_mean_preserving():
    rng = np.random.default_rng(0)
    x = np.full(200_000, 10.0)
    y = W.lognormal_noise(x, 0.3, rng)
    assert y.min() > 0
    assert y.mean() == pytest.approx(10.0, rel=0.01)
    assert np.log(y).std() == pytest.approx(0.3, rel=0.02)


def test_interpolate_soc_hits_nodes_and_is_monotone():
    z = get_grid().z_node
    soc = 30000.0 * np.exp(-z / 0.3) + 500.0
    np.testing.assert_allclose(W.interpolate_soc(soc, z), soc, rtol=1e-10)
    d = np.linspace(0.0, 9.0, 500)
    v = W.interpolate_soc(soc, d)
    assert np.all(np.diff(v) <= 1e-9) and v.min() > 0
    two = np.stack([soc, 2 * soc], axis=1)
    np.testing.assert_allclose(W.interpolate_soc(two, z, column=np.ones(z.size, int)), 2 * soc, rtol=1e-10)


def _physics_solver(theta: np.ndarray, ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The real steady-state solver, wired the way the api/cli layer does it."""
    from proda_engine.physics import Forcing, solve_theta

    f, cells = Forcing.from_dataset(ds, only_valid=False)
    res = solve_theta(theta[cells], f, get_grid())
    return res.soc, res.status


def test_twin_profiles_roundtrip_through_reader(tiny, tmp_path):
    from proda_engine.data import read_profiles

    out = W.make_twin_profiles(tiny, _physics_solver, n_sites=120, seed=0, out_dir=tmp_path / "wosis")
    files = out["files"]
    prof = pd.read_csv(files["profiles"], sep="\t", keep_default_na=False)
    assert list(prof.columns[:8]) == [
        "profile_id",
        "dataset_id",
        "country_id",
        "country_name",
        "geom_accuracy",
        "latitude",
        "longitude",
        "dsds",
    ]
    chem = pd.read_csv(files["chemical"], sep="\t", keep_default_na=False)
    for c in (
        "profile_layer_id",
        "upper_depth",
        "lower_depth",
        "layer_name",
        "litter",
        "orgc_value",
        "orgc_value_avg",
        "orgc_method",
        "orgc_date",
        "orgc_dataset_id",
        "orgc_profile_code",
        "orgc_license",
    ):
        assert c in chem.columns, c
    phys = pd.read_csv(files["physical"], sep="\t", keep_default_na=False)
    assert {"bdfiod_value_avg", "cfvo_value_avg"} <= set(phys.columns)
    assert (chem["litter"] == "t").sum() == out["n_litter_layers"] > 0
    assert (chem.loc[chem["litter"] == "t", "upper_depth"] < 0).all()
    assert set(prof["country_id"]) <= {"FR", "CH", "DE", "IT", "AT", "LI", "BE", "LU", ""}
    ps = read_profiles(tmp_path / "wosis")
    assert ps.report.n_profiles_read == 120
    lay = ps.layers
    # SOC density recovered by the reader equals the noisy "observed" value written
    obs = out["layers"]
    kept = obs[~obs["litter"] & np.isfinite(obs["obs_orgc"]) & np.isfinite(obs["obs_bdfiod"])]
    assert len(lay) == pytest.approx(len(kept), abs=len(kept) * 0.05 + 5)
    lay = lay.assign(profile_id=lay["profile_id"].astype(int))
    m = lay.merge(
        kept.rename(columns={"upper_depth": "upper_depth_cm", "lower_depth": "lower_depth_cm"}),
        on=["profile_id", "upper_depth_cm", "lower_depth_cm"],
    )
    assert (out["status"] == 0).all()
    big = m["obs_orgc"] > 1.0  # values are written with 3 decimals, as in the snapshot
    np.testing.assert_allclose(m.loc[big, "soc_density"], m.loc[big, "soc_obs"], rtol=5e-3)
    # plausible topsoil organic carbon (g/kg) in the Alps and their forelands
    top = obs[(obs["upper_depth"] == 0) & ~obs["litter"]]["obs_orgc"].dropna()
    assert 5 < top.median() < 150
