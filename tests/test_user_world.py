"""A user's own world, end to end: catalog sources -> train -> evaluate -> map -> what-if.

The test writes a small world the way a user brings one, in a temporary folder: CLM5-history forcing on
0..360 longitudes, a covariate file with its own variable names (one categorical by netCDF attribute, a
block of NaN cells), tidy-CSV profiles including single-layer ones and one misplaced site, and a catalog
whose ``worlds:`` names them. The data come from the built-in tiny twin world (so the test needs nothing
outside the repository), moved to the western hemisphere so the longitude conventions are exercised.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from proda_engine import api
from proda_engine.cli import main
from proda_engine.data import read_profiles
from proda_engine.data.world import ensure_world
from proda_engine.data.worlds import resolve_world
from proda_engine.products.world import open_world
from proda_engine.workflows import build_twin_world

WORLD = "user_test"
SHIFT = -100.0  # degrees of longitude: the tiny world's 5..10 E becomes 95..90 W (265..270 on 0..360)
#: user covariate name -> the tiny world's variable it is copied from
RENAME = {"mat_c": "BIO1", "map_mm": "BIO12", "clay_pct": "Clay_Content_0cm", "sand_pct": "Sand_Content_0cm",
          "elev_m": "Elevation", "bedrock_cm": "Abs_Depth_to_Bedrock", "landcover": "ESA_Land_Cover"}


@pytest.fixture(scope="module")
def user_world(tmp_path_factory) -> dict:
    tiny = build_twin_world("tiny").paths
    root = tmp_path_factory.mktemp("user_world")
    # forcing: the CLM5 history file with longitudes on 0..360, in descending-to-ascending file order
    with xr.open_dataset(tiny.forcing, decode_times=False) as ds:
        f = ds.load()
    f = f.assign_coords(lon=(f["lon"] + SHIFT) % 360.0)
    f.to_netcdf(root / "clm5_hist.nc")
    # covariates: the user's names, -180..180, one categorical flagged in the file, a NaN block
    with xr.open_dataset(tiny.covariates) as ds:
        c = ds.load()
    cov = xr.Dataset({new: c[old].astype("float64") for new, old in RENAME.items()})
    cov = cov.assign_coords(lon=c["lon"] + SHIFT, lat=c["lat"])
    cov["landcover"].attrs["categorical"] = 1
    for n in cov.data_vars:
        cov[n].attrs["units"] = "1"
    # profiles: tidy CSV; a third of the profiles keep only their top layer; one site far out at sea
    ps = read_profiles(tiny.wosis_dir)
    lay = ps.layers.copy()
    # clay is missing in the 1 x 2 cells block where the first site sits (so some sites lose their cell)
    i0 = int(np.abs(c["lat"].values - ps.profiles["latitude"].iloc[0]).argmin())
    j0 = min(int(np.abs(c["lon"].values - ps.profiles["longitude"].iloc[0]).argmin()), c.sizes["lon"] - 2)
    block = (slice(i0, i0 + 1), slice(j0, j0 + 2))
    clay = cov["clay_pct"].values.copy()
    clay[block] = np.nan
    cov["clay_pct"] = (("lat", "lon"), clay, {"units": "%"})
    cov.to_netcdf(root / "my_covariates.nc")
    ii = np.abs(ps.profiles["latitude"].to_numpy()[:, None] - c["lat"].values[None]).argmin(1)
    jj = np.abs(ps.profiles["longitude"].to_numpy()[:, None] - c["lon"].values[None]).argmin(1)
    in_block = int(((ii == i0) & (jj >= j0) & (jj < j0 + 2)).sum())
    ids = lay["profile_id"].unique()
    single = set(ids[::3])
    first = lay.groupby("profile_id").cumcount() == 0
    lay = lay[~lay["profile_id"].isin(single) | first]
    tidy = pd.DataFrame({"profile_id": lay["profile_id"], "latitude": lay["latitude"],
                         "longitude": lay["longitude"] + SHIFT, "upper_depth_cm": lay["upper_depth_cm"],
                         "lower_depth_cm": lay["lower_depth_cm"], "soc_density_kg_m3": lay["soc_density"] / 1000.0})
    far = tidy.iloc[:1].assign(profile_id="far_away", latitude=0.0, longitude=-150.0)
    tidy = pd.concat([tidy, far], ignore_index=True)
    tidy.to_csv(root / "profiles.csv", index=False)
    catalog = root / "my_catalog.yaml"
    catalog.write_text(
        "version: 1\n"
        "sources:\n"
        "  my_forcing: {kind: forcing, format: clm5_history, paths: [clm5_hist.nc]}\n"
        "  my_covariates: {kind: covariates, format: netcdf, paths: [my_covariates.nc]}\n"
        "  my_profiles: {kind: profiles, format: tidy_csv, paths: [profiles.csv]}\n"
        "worlds:\n"
        f"  {WORLD}:\n"
        "    forcing: my_forcing\n"
        "    covariates: my_covariates\n"
        "    profiles: my_profiles\n"
        "    description: a test world written by tests/test_user_world.py\n",
        encoding="utf-8")
    land = np.isfinite(c["nbedrock"].values)
    return {"root": root, "catalog": catalog, "n_single": len(single), "n_profiles": len(ids),
            "nan_land_cells": int(land[block].sum()), "sites_in_nan_block": in_block, "tiny": tiny}


def test_world_resolves_with_its_own_covariates(user_world):
    spec = resolve_world(WORLD, user_world["catalog"])
    assert spec.kind == "catalog" and spec.profiles_layout == "tidy_csv"
    ow = open_world(spec)
    assert ow.covariate_names == list(RENAME)
    assert ow.categorical == ["landcover"]  # from the netCDF attribute
    # cells with the NaN covariate are masked, counted under the covariate's name, never imputed
    assert ow.report["cells_masked_missing_covariate"] == {"clay_pct": user_world["nan_land_cells"]}
    assert ow.cells.cells.size == ow.forcing_cells.cells.size - user_world["nan_land_cells"]
    # the forcing's 0..360 longitudes come back as -180..180, the same cells as the covariates'
    assert np.allclose(ow.cells.lon, ow.covariates["lon"].values)
    assert (ow.cells.lon < 0).all()
    assert (spec.root / "world.json").exists()
    assert json.loads((spec.root / "world.json").read_text())["world_kind"] == "catalog"


def test_unknown_world_in_catalog_is_a_clear_error(user_world):
    with pytest.raises(ValueError, match=r"unknown world 'nope'.*user_test"):
        resolve_world("nope", user_world["catalog"])


@pytest.fixture(scope="module")
def trained(user_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("train_out") / "my_theta.nc"
    rc = main(["train", "--world", WORLD, "--catalog", str(user_world["catalog"]), "--epochs", "2",
               "--out", str(out)])
    assert rc == 0
    return out


def test_train_uses_single_layer_profiles_and_counts_drops(user_world, trained):
    spec = resolve_world(WORLD, user_world["catalog"])
    rep = json.loads((spec.products / "train_proda_e2e.json").read_text())
    assert rep["single_layer_sites"] > 0
    assert rep["reader"]["n_single_layer_profiles"] == user_world["n_single"] + 1  # + the far-away site
    assert rep["covariates"] == list(RENAME) and rep["categorical"] == ["landcover"]
    # every site in the NaN block is dropped with the covariate named, the misplaced one for its distance
    assert user_world["sites_in_nan_block"] >= 1
    assert rep["sites_dropped"] == {"farther than 100 km from a land cell of the forcing": 1,
                                    "covariate clay_pct missing at the site's cell": user_world["sites_in_nan_block"]}
    assert rep["sites"] + sum(rep["sites_dropped"].values()) == rep["sites_read"] == user_world["n_profiles"] + 1


def test_parameter_map_masks_cells_without_covariates(user_world, trained):
    with xr.open_dataset(trained) as ds:
        theta = ds["theta"].load()
        attrs = dict(ds.attrs)
    assert attrs["world"] == WORLD and attrs["world_kind"] == "catalog" and attrs["closure"] == "conservative"
    ow = open_world(WORLD, catalog=user_world["catalog"])
    flat = theta.transpose("lat", "lon", "parameter").values.reshape(-1, 21)
    assert np.isfinite(flat[ow.cells.cells]).all()
    masked = np.setdiff1d(ow.forcing_cells.cells, ow.cells.cells)
    assert masked.size == user_world["nan_land_cells"] and np.isnan(flat[masked]).all()
    assert ((flat[ow.cells.cells] >= 0) & (flat[ow.cells.cells] <= 1)).all()


def test_map_and_what_if_on_the_user_world(user_world, trained, tmp_path):
    out = tmp_path / "map.nc"
    assert main(["map", "--world", WORLD, "--catalog", str(user_world["catalog"]), "--params", str(trained),
                 "--out", str(out)]) == 0
    with xr.open_dataset(out) as ds:
        assert ds.sizes["lat"] == 10 and ds.sizes["lon"] == 10
        assert ds.attrs["world_kind"] == "catalog" and ds.attrs["data_kind"].startswith("measured profiles")
        assert ds.attrs["closure"] == "conservative"  # recorded by the trained parameter file, carried on
    api.use_catalog(user_world["catalog"])
    assert "proda_e2e" in api.parameter_sources(WORLD)
    base = api.what_if(None, world=WORLD, source="proda_e2e", depth="whole")
    up = api.what_if({"NPP": 0.1}, world=WORLD, source="proda_e2e", depth="whole")
    assert np.isfinite(base.totals["total_pg"]) and base.totals["total_pg"] > 0
    # steady state is linear in the carbon input: +10 % input -> +10 % stock (spec (j))
    assert up.totals["total_pg"] == pytest.approx(1.1 * base.totals["total_pg"], rel=1e-6)
    assert api.world_info(WORLD)["data_kind"].startswith("measured profiles")


def test_predicting_with_other_covariates_is_refused(user_world, trained, tmp_path):
    from proda_engine.learning.training import TrainedModel
    from proda_engine.workflows import check_model_covariates

    spec = resolve_world(WORLD, user_world["catalog"])
    model = TrainedModel.load(spec.products / "model_proda_e2e.pt")
    tiny = open_world("tiny")  # the built-in world's 60 names, none of the user's
    with pytest.raises(ValueError, match=r"trained on covariates .*mat_c.*lacks"):
        check_model_covariates(model, tiny)


def test_builtin_world_unchanged_by_catalog_lookup():
    assert resolve_world("tiny").kind == "builtin"
    assert resolve_world("tiny").root == ensure_world("tiny").root


def test_evaluate_cross_validates_with_the_ml_baseline(user_world, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["evaluate", "--world", WORLD, "--catalog", str(user_world["catalog"]), "--folds", "3",
               "--block-size", "1", "--buffer-km", "20", "--epochs", "2", "--out", str(out)])
    assert rc == 0
    rep = json.loads((out / "crossval.json").read_text())
    assert set(rep["summary"]) == {"default_clm5", "batch_da", "proda_e2e", "ml_baseline"}
    for fold in rep["folds"]:  # batch DA: one unit-interval theta per fold, fitted to its training sites only
        theta = np.asarray(fold["batch_da"]["theta"])
        assert theta.shape == (21,) and ((theta > 0) & (theta < 1)).all()
        assert fold["batch_da"]["n_sites"] <= fold["n_train"] + fold["n_val"]
    assert rep["world"]["world_kind"] == "catalog"
    # every usable site is held out exactly once over the folds, layers included
    pred = pd.read_csv(out / "crossval_predictions.csv")
    per_method = pred.groupby("method").size()
    assert (per_method == rep["info"]["n_layers"]).all()
    assert pred.groupby("method")["profile_id"].nunique().eq(rep["info"]["n_sites"]).all()
    for m, s in rep["summary"].items():
        assert s["n_folds"] == 3 and np.isfinite(s["r2_mean"]) and np.isfinite(s["pbias_mean"]), m
    # the pooled R2 is the coefficient of determination of the written pairs
    p = pred[pred["method"] == "ml_baseline"]
    o, q = p["observed_kg_m3"].to_numpy(), p["predicted_kg_m3"].to_numpy()
    r2 = 1 - ((q - o) ** 2).sum() / ((o - o.mean()) ** 2).sum()
    assert rep["pooled"]["ml_baseline"]["r2"] == pytest.approx(r2, rel=1e-9)
    assert "ML baseline" in (out / "crossval.md").read_text()
    # measured profiles train the 5-member ensemble by default: the predictive interval's coverage is reported
    iv = rep["info"]["interval"]
    assert iv["members"] == 5 and 0.0 <= iv["coverage"] <= 1.0 and iv["n"] == rep["info"]["n_layers"]


def test_dashboard_opens_the_user_world(user_world, trained):
    """The dashboard's session on a catalog world: its sources (PRODA trained on it, default CLM5, no twin
    truth), its observed sites and their misfit, and a what-if step (real engine, no browser)."""
    from dashboard.app import build_app

    api.use_catalog(user_world["catalog"])
    app = build_app(WORLD)
    sources = app.state.param.source.objects
    assert "proda_e2e" in sources.values() and "default_clm5" in sources.values()
    assert "twin_truth" not in sources.values()  # a catalog world without truth has none
    assert app.store.result is not None and app.store.result.totals["total_pg"] > 0
    sites = api.observed_sites(WORLD)
    # the same sites as training: the far site and those whose cell lacks a covariate are not shown
    assert len(sites) == user_world["n_profiles"] - user_world["sites_in_nan_block"]
    misfit = api.site_misfit("proda_e2e", world=WORLD)
    assert np.isfinite(misfit["misfit_kg_m3"]).all() and len(misfit) > 0
    app.state.A = 10
    assert app.store.result.perturbation["A"] == pytest.approx(0.1)


def test_assimilate_on_the_user_world_feeds_two_step_cross_validation(user_world, tmp_path):
    """`proda assimilate --world` reads the world's own profiles and forcing (here the tidy CSV and the 0..360
    history file) and writes posteriors where cross-validation finds them for PRODA two-step."""
    from proda_engine.crossval import cross_validate_world

    cfg = tmp_path / "assim.yaml"
    cfg.write_text("mode: site\nscheduler: inline\nbatch_size: 40\nseed: 0\nprogress: false\n"
                   "exclude_negative_e: false\n"
                   "mcmc: {n_chains: 2, n_test: 40, n_formal: 80, min_test_accepts: 1, accept_window: [0.01, 0.99], "
                   "tempering: none, mode: none}\n", encoding="utf-8")
    assert main(["assimilate", "--config", str(cfg), "--world", WORLD, "--catalog", str(user_world["catalog"])]) == 0
    spec = resolve_world(WORLD, user_world["catalog"])
    post = spec.products / "assimilate" / "posterior.nc"
    with xr.open_dataset(post) as ds:
        assert ds.sizes["site"] >= user_world["n_profiles"] - user_world["sites_in_nan_block"] - 30
    from proda_engine.workflows import default_train_config

    res = cross_validate_world(WORLD, catalog=user_world["catalog"], n_folds=3, block_size=1.0,
                               methods=["default_clm5", "proda_two_step"],
                               train_config=default_train_config(max_epochs=2))
    assert set(res.summary) == {"default_clm5", "proda_two_step"}
    assert all(f["two_step_sites"] > 0 for f in res.folds)
    pred = res.predictions
    assert pred[pred.method == "proda_two_step"]["predicted_kg_m3"].notna().mean() > 0.9
