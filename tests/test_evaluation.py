"""`proda evaluate` on the tiny world: held-out split, baselines, metrics and the noise ceiling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from proda_engine.evaluation import (
    DEPTH_BINS,
    evaluate_world,
    load_world_sites,
    run_world_baselines,
    soc_at_sites,
    soc_metrics,
)
from proda_engine.inference.likelihood import pooled_metrics
from proda_engine.learning.config import TrainConfig
from proda_engine.workflows import build_twin_world, train_world

TINY_CFG = TrainConfig(hidden=(32, 32), max_epochs=6, patience=6, block_size=1.0, batch_size=64, seed=1)
FAST_MCMC = {"n_test": 100, "n_formal": 200}


@pytest.fixture(scope="module")
def tiny_trained():
    """The tiny world with a (tiny) end-to-end model, so its split defines the held-out sites."""
    build_twin_world("tiny")
    train_world("tiny", method="end-to-end", config=TINY_CFG)
    return load_world_sites("tiny")


@pytest.fixture(scope="module")
def tiny_eval(tiny_trained):
    return evaluate_world("tiny", ws=tiny_trained)


def test_held_out_sites_come_from_the_trained_model_and_are_disjoint(tiny_trained):
    ws = tiny_trained
    assert ws.split_source == "model_proda_e2e.pt"
    test = set(ws.split.test.tolist())
    assert test and not test & set(ws.split.train.tolist()) and not test & set(ws.split.val.tolist())
    # spatially blocked: no test site shares a 1-degree block with a training site
    blk = lambda i: (np.floor((ws.sites.lat[i] + 90) / 1.0), np.floor((ws.sites.lon[i] + 180) / 1.0))  # noqa: E731
    assert not {blk(i) for i in ws.split.test} & {blk(i) for i in ws.split.train}


def test_evaluation_scores_truth_highest_and_default_below(tiny_eval):
    r = tiny_eval
    assert {"default_clm5", "proda_e2e", "twin_truth"} <= set(r.metrics)
    e = {k: v["all"]["e"] for k, v in r.metrics.items()}
    assert e["twin_truth"] == max(e.values())
    assert e["default_clm5"] < e["twin_truth"]
    for mm in r.metrics.values():
        assert set(mm) == {"all", *(f"{lo:g}-{hi:g} m" for lo, hi in DEPTH_BINS)}
        for key in ("rmse", "e", "r2", "pbias", "mae"):
            assert np.isfinite(mm["all"][key]), key
        assert mm["all"]["n"] == r.n_test_layers  # every held-out horizon modelled
    # the twin truth recovers itself; e2e is scored against it, per parameter
    assert set(r.recovery) >= {"proda_e2e"} and len(r.recovery["proda_e2e"]) == 21


def test_metrics_equal_a_direct_computation(tiny_trained, tiny_eval):
    ws = tiny_trained
    test = np.unique(ws.split.test)
    obs = ws.sites.observations.subset(test)
    with xr.open_dataset(ws.paths.truth) as ds:
        theta = ws.cells.theta_from_grid(ds["theta"].load())
    pred = soc_at_sites(ws.cells.forcing, ws.sites.cell[test], obs, theta=theta)
    m = pooled_metrics(pred[obs.mask] / 1000.0, obs.soc[obs.mask] / 1000.0)
    got = tiny_eval.metrics["twin_truth"]["all"]
    for key in ("rmse", "e", "pbias", "n"):
        assert got[key] == pytest.approx(m[key], rel=1e-9)
    o, p = obs.soc[obs.mask] / 1000.0, pred[obs.mask] / 1000.0
    assert got["r2"] == pytest.approx(np.corrcoef(o, p)[0, 1] ** 2, rel=1e-9)
    assert 1 - ((p - o) ** 2).sum() / ((o - o.mean()) ** 2).sum() == pytest.approx(got["e"], rel=1e-9)


def test_soc_metrics_counts_unmodelled_horizons():
    m = soc_metrics(np.array([1.0, 2.0, np.nan, 4.0]), np.array([1.0, 2.5, 3.0, 3.5]))
    assert m["n"] == 3 and m["n_missing"] == 1 and np.isfinite(m["r2"])


def test_write_outputs(tiny_eval, tmp_path):
    files = tiny_eval.write(tmp_path)
    d = json.loads(files["json"].read_text())
    assert d["n_test_sites"] == tiny_eval.n_test_sites and "twin_truth" in d["metrics"]
    assert "| PRODA end to end |" in files["markdown"].read_text()
    assert files["scatter"].stat().st_size > 1000 and files["recovery"].stat().st_size > 1000


def test_baselines_write_sources_and_are_evaluated(tiny_trained, tmp_path):
    b = run_world_baselines("tiny", n_sites_mcmc=12, n_sites_batch=12, mcmc=FAST_MCMC, batch_size=12,
                            train_config=TrainConfig(hidden=(16,), max_epochs=5, patience=5, block_size=1.0,
                                                     batch_size=16))
    with xr.open_dataset(b.batch_theta_path) as ds:
        th = ds["theta"].values
    land = np.isfinite(th).all(0)
    assert land.sum() == tiny_trained.cells.cells.size
    assert np.allclose(th[:, land], th[:, land][:, :1])  # homogeneous
    assert b.two_step_theta_path.exists() and b.two_step_model_path.exists()
    test_ids = set(tiny_trained.sites.observations.profile_id[tiny_trained.split.test].astype(str))
    for sub in ("profiles_batch", "profiles_mcmc"):
        prof = (b.two_step_theta_path.parent / "baselines" / sub / "wosis_201909_profiles.tsv").read_text()
        ids = {line.split("\t", 1)[0] for line in prof.splitlines()[1:]}
        assert ids and not ids & test_ids  # baselines never see a held-out site
    r = evaluate_world("tiny", ws=tiny_trained)
    assert {"batch_da", "proda_two_step"} <= set(r.metrics)
    assert all(np.isnan(v) for v in r.recovery["batch_da"].values())


def test_cli_evaluate(tiny_trained, tmp_path, capsys):
    from proda_engine.cli import main

    assert main(["evaluate", "--world", "tiny", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "evaluation.json").exists()
    assert "noise ceiling" in capsys.readouterr().out
