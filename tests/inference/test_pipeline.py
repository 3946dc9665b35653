"""Site-level data assimilation pipeline on the tiny world's twin observations (no mocks).

The twin: the ``tiny`` world (10 x 10 cells around the Alps) with hidden "true" parameters per
cell; :func:`make_twin_profiles` solves the truth at ~60 WoSIS-like sites, adds ~30 % log-normal
noise, blanks some orgc / bulk-density values and adds litter layers, and writes WoSIS 2019 TSVs.
The pipeline then reads those files exactly as it would read real WoSIS.

Identifiability, honestly: a profile has ~4 layers with a 60 % relative error, so most of the 21
parameters are barely constrained per site (posterior sd ~0.15 of the unit box), and inside the tiny
world the truth varies by only 0.02–0.06 between cells, far below that sd. Per-parameter
*across-site* correlations with the truth are therefore noise at this size (|r| < 0.3 in trials).
What the twin does identify is the *level* of a few parameters whose truth sits far from the prior
midpoint 0.5: the e-folding depth of the depth scalar (truth ~0.83), the bioturbation diffusivity
(~0.09) and Q10 (~0.30). The recovery test asserts that the posterior means move from 0.5 towards
those truths, and that over (site, parameter) pairs of that identifiable set the posterior means
correlate positively with the truth. (Trial runs, 48–80 sites, 300 + 600 iterations: error ratios
0.34 (efolding), 0.55 (diffus), 0.76 (q10); pooled r 0.69 over those plus tau4s3.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from proda_engine.data.world import WorldPaths, ensure_world, make_twin_profiles
from proda_engine.grid import get_grid
from proda_engine.inference.config import AssimilateConfig
from proda_engine.inference.mcmc import STATUS_FAILED
from proda_engine.inference.pipeline import EXCLUDED_E_NEGATIVE, assimilate, batch_path
from proda_engine.inference.sites import NO_FORCING, load_sites
from proda_engine.parameters import PARAMETER_INDEX, PARAMETER_NAMES
from proda_engine.physics import Forcing, solve_theta

N_TWIN_SITES = 60
#: Short chains for the fast suite (the research config uses 20,000 + 50,000).
SHORT_MCMC = {"n_test": 300, "n_formal": 600, "mode": "none", "min_test_accepts": 5,
              "accept_window": [0.02, 0.95]}
TINY_MCMC = {"n_test": 40, "n_formal": 80, "mode": "none", "min_test_accepts": 2, "accept_window": [0.0, 1.0]}


# --------------------------------------------------------------------------------------------
# shared twin world (also imported by test_batch_da.py and tests/test_distributed.py)


def _solver(theta: np.ndarray, ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    f, _ = Forcing.from_dataset(ds, only_valid=False)
    res = solve_theta(theta, f, get_grid())
    return res.soc, res.status


def twin_world(tmp_path_factory: pytest.TempPathFactory) -> WorldPaths:
    """The tiny world with twin WoSIS observations, built once per test session (cached on disk
    under the session's base temp folder, so every test module shares it)."""
    cache = tmp_path_factory.getbasetemp() / "proda_twin_cache"
    paths = ensure_world("tiny", cache_dir=cache)
    if not (paths.wosis_dir / "wosis_201909_profiles.tsv").exists():
        make_twin_profiles(paths, _solver, n_sites=N_TWIN_SITES, seed=0)
    return paths


def base_config(paths: WorldPaths, out: Path, **kw) -> dict:
    return {"profiles_path": str(paths.wosis_dir), "forcing_path": str(paths.forcing), "out": str(out),
            "progress": False} | kw


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> WorldPaths:
    return twin_world(tmp_path_factory)


@pytest.fixture(scope="module")
def site_run(world, tmp_path_factory):
    """48 twin sites, 3 chains x (300 + 600) iterations, two batches, in-process."""
    out = tmp_path_factory.mktemp("site_run") / "run"
    cfg = AssimilateConfig.from_dict(base_config(world, out, mcmc=SHORT_MCMC, batch_size=24, scheduler="inline",
                                                 max_sites=48, seed=0))
    return assimilate(cfg)


def truth_at_sites(paths: WorldPaths, post: xr.Dataset) -> np.ndarray:
    truth = xr.open_dataset(paths.truth)["theta"]
    return truth.sel(lat=xr.DataArray(post["cell_lat"].values, dims="site"),
                     lon=xr.DataArray(post["cell_lon"].values, dims="site")).transpose("site", "parameter").values


# --------------------------------------------------------------------------------------------
# config


def test_config_rejects_unknown_keys_by_name():
    with pytest.raises(ValueError, match=r"unknown key 'batch_sise'.*did you mean 'batch_size'"):
        AssimilateConfig.from_dict({"batch_sise": 10})
    with pytest.raises(ValueError, match=r"unknown MCMC config keys: \[.n_formall.\]"):
        AssimilateConfig.from_dict({"mcmc": {"n_formall": 10}})
    with pytest.raises(ValueError, match="key 'weights'"):
        AssimilateConfig.from_dict({"weights": "linear"})
    with pytest.raises(ValueError, match=r"mcmc\.seed"):
        AssimilateConfig.from_dict({"seed": 1, "mcmc": {"seed": 2}})
    with pytest.raises(ValueError, match="key 'batch_size'"):
        AssimilateConfig.from_dict({"batch_size": 0})


def test_config_yaml_roundtrip_and_shipped_configs(tmp_path):
    root = Path(__file__).resolve().parents[2] / "configs"
    demo = AssimilateConfig.from_yaml(root / "assimilate_demo.yaml")
    research = AssimilateConfig.from_yaml(root / "assimilate_research.yaml")
    assert research.mcmc.n_test == 20000 and research.mcmc.n_formal == 50000
    assert demo.mcmc.seed == demo.seed
    p = tmp_path / "c.yml"
    p.write_text("batch_size: 7\nmcmc: {n_test: 11, n_formal: 22}\nbogus: 1\n")
    with pytest.raises(ValueError, match=r"c\.yml: assimilate config: unknown key 'bogus'"):
        AssimilateConfig.from_yaml(p)
    c = AssimilateConfig.from_dict(demo.to_dict())
    assert c == demo
    # execution keys do not change the fingerprint; science keys do
    assert demo.fingerprint() == demo.replace(scheduler="inline", n_workers=1, resume=True).fingerprint()
    assert demo.fingerprint() != demo.replace(weights="depth_exp").fingerprint()


# --------------------------------------------------------------------------------------------
# loading: every profile is accounted for


def test_every_skipped_profile_is_counted_with_a_reason(world, tmp_path):
    cfg = AssimilateConfig.from_dict(base_config(world, tmp_path / "x"))
    sites = load_sites(cfg)
    skipped = sum(sum(v.values()) for v in sites.skipped.values())
    assert sites.n_profiles_read == N_TWIN_SITES
    assert sites.n_sites + skipped == sites.n_profiles_read
    assert all(isinstance(k, str) and k for v in sites.skipped.values() for k in v)
    # a distance limit smaller than the cell half-diagonal skips some sites, with its reason
    near = load_sites(cfg.replace(max_distance_km=15.0, max_sites=10))
    n_far = near.skipped["forcing"].get(NO_FORCING, 0)
    assert n_far > 0
    assert near.skipped["max_sites"]["beyond_max_sites"] == sites.n_sites - n_far - 10
    assert near.n_sites + sum(sum(v.values()) for v in near.skipped.values()) == near.n_profiles_read
    assert (near.forcing["distance_km"].values <= 15.0).all()


def test_report_counts_add_up(site_run, world):
    rep = json.loads((site_run.folder / "report.json").read_text())
    post = site_run.posterior
    n = post.sizes["site"]
    assert rep["n_sites"] == n
    assert rep["n_profiles_read"] == n + rep["n_profiles_skipped"]
    assert sum(rep["sites"].values()) == n
    assert rep["sites"]["failed"] == sum(rep["failed_sites_by_reason"].values())
    assert rep["n_usable"] + sum(rep["excluded_by_reason"].values()) == n
    assert rep["e_negative_excluded"] == int((post["exclusion"] == EXCLUDED_E_NEGATIVE).sum())
    # every failed chain carries a reason, and the report counts them all
    n_failed_chains = int((~post["chain_ok"].values).sum())
    assert sum(rep["failed_chains_by_reason"].values()) == n_failed_chains
    assert rep["rhat_flagged_sites"] <= n
    assert set(rep["rhat_flagged_by_parameter"]) == set(PARAMETER_NAMES)
    assert rep["batches"] == {"total": 2, "reused": 0, "computed": 2, "batch_size": 24}
    assert rep["skipped_profiles"]["max_sites"]["beyond_max_sites"] == rep["n_profiles_read"] - 48 - sum(
        sum(v.values()) for k, v in rep["skipped_profiles"].items() if k != "max_sites")


# --------------------------------------------------------------------------------------------
# outputs


def test_run_folder_and_posterior_layout(site_run):
    folder = site_run.folder
    for name in ("config.yaml", "provenance.json", "posterior.nc", "report.json", "batches/batch_00000.nc",
                 "batches/batch_00001.nc"):
        assert (folder / name).is_file(), name
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["package_version"] and prov["fingerprint"] and len(prov["inputs"]) >= 4
    assert all(len(rec["sha256"]) == 64 for rec in prov["inputs"])
    post = xr.load_dataset(folder / "posterior.nc")
    assert post["theta"].dims == ("site", "parameter")
    assert list(post["parameter"].values) == list(PARAMETER_NAMES)
    for v in ("lat", "lon", "profile_id", "theta_sd", "theta_mode", "rhat", "acceptance", "status", "reason",
              "efficiency", "rmse", "usable", "exclusion", "model_soc", "obs_soc"):
        assert v in post.variables, v
    usable = post["usable"].values
    theta = post["theta"].values
    assert np.isfinite(theta[usable]).all() and np.isnan(theta[~usable]).all()
    assert ((theta[usable] > 0) & (theta[usable] < 1)).all()
    # status and E decide usability, as documented
    failed = post["status"].values == STATUS_FAILED
    assert not usable[failed].any()
    with np.errstate(invalid="ignore"):
        assert not usable[post["efficiency"].values < 0].any()
    assert (post["reason"].values[failed] != "").all()


def test_the_saved_config_reproduces_the_run(site_run):
    """config.yaml in the run folder is the validated config: loading it gives the run's fingerprint."""
    from proda_engine.inference.runs import _input_checksums

    folder = site_run.folder
    prov = json.loads((folder / "provenance.json").read_text())
    saved = AssimilateConfig.from_yaml(folder / "config.yaml")
    assert saved.to_dict() == prov["config"]
    assert saved.fingerprint(_input_checksums(prov)) == prov["fingerprint"]
    assert saved.max_sites == 48 and saved.batch_size == 24 and saved.mcmc.n_formal == SHORT_MCMC["n_formal"]


def test_posterior_means_recover_identifiable_truth(site_run, world):
    post = site_run.posterior
    truth = truth_at_sites(world, post)
    mean = post["theta_mean"].values
    ok = np.isfinite(mean).all(axis=1)
    assert ok.sum() >= 0.8 * post.sizes["site"]
    # Level recovery: mean |posterior - truth| clearly below mean |0.5 - truth| (the prior midpoint).
    for name, max_ratio in (("efolding", 0.6), ("diffus", 0.8), ("q10", 0.95)):
        j = PARAMETER_INDEX[name]
        err_post = np.abs(mean[ok, j] - truth[ok, j]).mean()
        err_prior = np.abs(0.5 - truth[ok, j]).mean()
        assert err_post < max_ratio * err_prior, (name, err_post, err_prior)
    # Pooled over (site, parameter) pairs of the identifiable set: positive correlation with truth.
    js = [PARAMETER_INDEX[n] for n in ("diffus", "q10", "efolding")]
    r = np.corrcoef(mean[ok][:, js].ravel(), truth[ok][:, js].ravel())[0, 1]
    assert r > 0.4, r
    # The fit: most twin profiles are described well at the posterior mean.
    assert np.nanmedian(post["efficiency"].values) > 0.5


# --------------------------------------------------------------------------------------------
# resume


class Interrupt(RuntimeError):
    pass


def test_interrupted_run_resumes_without_redoing_finished_batches(world, tmp_path):
    out = tmp_path / "run"
    cfg = AssimilateConfig.from_dict(base_config(world, out, mcmc=TINY_MCMC, batch_size=3, max_sites=8,
                                                 scheduler="inline", seed=3))

    def die_after_first(b: int, path: Path) -> None:
        raise Interrupt(f"killed after batch {b}")

    with pytest.raises(Interrupt):
        assimilate(cfg, on_batch_written=die_after_first)
    first = batch_path(out, 0)
    assert first.is_file() and not batch_path(out, 1).exists() and not (out / "posterior.nc").exists()
    # Back-date the finished batch: a rewrite would give it a fresh mtime.
    os.utime(first, (1_000_000_000, 1_000_000_000))

    with pytest.raises(FileExistsError, match="resume"):
        assimilate(cfg)  # no silent overwrite of an earlier run

    written: list[int] = []
    res = assimilate(cfg.replace(resume=True), on_batch_written=lambda b, p: written.append(b))
    assert (res.n_batches, res.n_batches_reused, res.n_batches_computed) == (3, 1, 2)
    assert sorted(written) == [1, 2]
    assert first.stat().st_mtime == 1_000_000_000
    assert res.report["batches"]["reused"] == 1

    # A rerun with everything on disk computes nothing; a corrupt batch file is recomputed.
    batch_path(out, 2).write_bytes(b"not a netCDF file")
    again = assimilate(cfg.replace(resume=True))
    assert (again.n_batches_reused, again.n_batches_computed) == (2, 1)
    np.testing.assert_array_equal(again.posterior["theta_mean"].values, res.posterior["theta_mean"].values)

    # Resuming with other science settings is refused (batches would mix two configurations).
    with pytest.raises(ValueError, match="another configuration"):
        assimilate(cfg.replace(resume=True, weights="depth_exp"))


def test_resumed_run_equals_uninterrupted_run(world, tmp_path):
    kw = {"mcmc": TINY_MCMC, "batch_size": 3, "max_sites": 6, "scheduler": "inline", "seed": 5}
    full = assimilate(AssimilateConfig.from_dict(base_config(world, tmp_path / "full", **kw)))
    cfg = AssimilateConfig.from_dict(base_config(world, tmp_path / "cut", **kw))

    def die(b: int, path: Path) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        assimilate(cfg, on_batch_written=die)
    resumed = assimilate(cfg.replace(resume=True))
    np.testing.assert_array_equal(full.posterior["theta_mean"].values, resumed.posterior["theta_mean"].values)
    np.testing.assert_array_equal(full.posterior["efficiency"].values, resumed.posterior["efficiency"].values)
