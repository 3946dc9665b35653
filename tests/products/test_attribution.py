"""Component control (spec §(j)) and covariate-category importance (spec §(m)).

Parameter sets at sites are the twin truth (and perturbed stand-in copies), not trained output.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from proda_engine.grid import get_grid
from proda_engine.inference.likelihood import model_at_obs
from proda_engine.parameters import GROUPS
from proda_engine.plot import plot_explained_variation
from proda_engine.products.attribution import (
    EXPERIMENTS,
    component_control,
    evaluate_component_control,
    experiment_theta,
    explained_variation,
    npp_factor,
)
from proda_engine.products.gridded import CellSolver, gridded_products
from proda_engine.products.importance import category_importance, default_categories


@pytest.fixture(scope="module")
def truth(world):
    return world.cells.theta_from_grid(world.truth)


@pytest.fixture(scope="module")
def gridded_cc(world, truth):
    rng = np.random.default_rng(5)
    standin = np.stack([truth, np.clip(truth + rng.normal(0, 0.03, truth.shape), 0.01, 0.99)])
    return component_control(world, standin)


def test_experiment_parameters(truth):
    tb = truth.mean(0)
    for g, idx in GROUPS.items():
        th = experiment_theta(truth, f"{g}_homogeneous", tb)
        assert np.all(th[:, list(idx)] == tb[list(idx)])
        other = [i for i in range(21) if i not in idx]
        assert np.array_equal(th[:, other], truth[:, other])
    assert np.all(experiment_theta(truth, "all_homogeneous", tb) == tb)
    assert experiment_theta(truth, "default_CLM5", tb) is None


def test_npp_factor_signs_and_clipping():
    f, n = npp_factor(np.array([0.1] * 1000 + [0.8] * 1000), np.random.default_rng(0))
    assert set(np.round(f[:1000], 12)) == {0.8, 1.2}
    assert abs((f[:1000] > 1).mean() - 0.5) < 0.06
    assert n == int((f[1000:] == 0).sum()) and n > 0


def test_gridded_proda_equals_the_forward_run(world, truth, gridded_cc):
    ds = gridded_products(world, truth)
    np.testing.assert_allclose(gridded_cc["soc_total"].sel(experiment="PRODA", member=0),
                               ds["soc_total"].sel(region="globe", member=0), rtol=1e-12)
    assert list(gridded_cc["experiment"].values) == list(EXPERIMENTS)
    assert np.all(np.diff(gridded_cc["soc_total"].values, axis=-1) >= 0)  # monotone in depth
    # the default-CLM5 run does not depend on the member
    d = gridded_cc["soc_total"].sel(experiment="default_CLM5").values
    np.testing.assert_array_equal(d[0], d[1])


@pytest.fixture(scope="module")
def twin_observations(world, truth):
    """Synthetic profiles at 30 cells: the twin truth's SOC (PCHIP at 7 depths) x lognormal noise."""
    rng = np.random.default_rng(1)
    cells = rng.choice(world.n_cells, 30, replace=False)
    la, lo = np.meshgrid(world.cells.lat, world.cells.lon, indexing="ij")
    lat, lon = la.reshape(-1)[world.cells.cells][cells], lo.reshape(-1)[world.cells.cells][cells]
    sol = CellSolver(world.cells.forcing.subset(cells).to(dtype=torch.float64)).solve(truth[cells], diagnostics=())
    depths = np.array([0.05, 0.15, 0.3, 0.5, 0.8, 1.2, 1.6])
    m = np.asarray(model_at_obs(sol.soc, get_grid().z_node, np.tile(depths, (30, 1))))
    rows = [{"site": f"s{i}", "lat": lat[i], "lon": lon[i], "depth_m": d, "soc_density": m[i, k] * np.exp(
        rng.normal(0, 0.1))} for i in range(30) for k, d in enumerate(depths)]
    return pd.DataFrame(rows), cells


def test_evaluation_ranks_experiments(world, truth, twin_observations):
    obs, cells = twin_observations
    ev = evaluate_component_control(world, obs, truth[cells])
    e = ev[ev.bin == "all"].set_index("experiment")["e"]
    assert e["PRODA"] > 0.9  # the truth explains the profiles up to the 10 % noise
    assert e["PRODA"] > e["all_homogeneous"] > e["default_CLM5"]
    for g in ("A", "K", "Xi"):
        assert e["PRODA"] > e[f"{g}_homogeneous"]
    n = ev[ev.experiment == "PRODA"].set_index("bin")["n"]
    assert n["all"] == len(obs) == n["0-0.3m"] + n["0.3-1m"] + n["1-100m"]
    ex = explained_variation(ev)
    assert ex.set_index("experiment").loc["PRODA", "explained_pct_median"] == pytest.approx(100 * e["PRODA"])


def test_explained_variation_figure(world, truth, twin_observations, gridded_cc, tmp_path):
    obs, cells = twin_observations
    ev = evaluate_component_control(world, obs, np.stack([truth[cells], truth[cells]]),
                                    experiments=("PRODA", "all_homogeneous", "default_CLM5"))
    p = plot_explained_variation(gridded_cc, ev, tmp_path / "f.png")
    assert p.stat().st_size > 1000


# -------------------------------------------------------------------------------------------------
# covariate-category importance
# -------------------------------------------------------------------------------------------------
def test_default_categories_use_world_names(world):
    cats = default_categories(world.fields.data_vars)
    assert "BIO1" in cats["climate"] and "Koppen_Climate_2018" in cats["climate"]
    assert "Clay_Content_30cm" in cats["texture"] and "pH_Water_0cm" in cats["chemistry"]
    assert "cesm2_npp" in cats["vegetation"] and "Elevation" in cats["geography"]
    assert all("continent" not in v for v in cats.values())


@pytest.mark.parametrize("pool", ["flatten", "mean"])
def test_known_climate_predictor(pool):
    """theta depends on BIO1 and BIO12 only: climate matters, texture (and the rest) do not."""
    rng = np.random.default_rng(3)
    n = 300
    table = pd.DataFrame({"BIO1": rng.normal(10, 8, n), "BIO12": rng.gamma(4, 200, n),
                          "Clay_Content_0cm": rng.uniform(5, 50, n), "Sand_Content_0cm": rng.uniform(5, 80, n),
                          "pH_Water_0cm": rng.uniform(4, 8, n), "Elevation": rng.uniform(0, 3000, n),
                          "Koppen_Climate_2018": rng.integers(1, 30, n)})
    a = np.linspace(-1, 1, 21)

    def predict(t: pd.DataFrame) -> np.ndarray:
        z = (t["BIO1"].to_numpy() - 10) / 8 + (t["BIO12"].to_numpy() - 800) / 400
        return 1 / (1 + np.exp(-(0.2 * np.arange(21)[None] - 2 + a[None] * z[:, None])))

    imp = category_importance(predict, table, n_repeats=20, seed=0, pool=pool).set_index(["category", "group"])
    for g in ("A", "Tau", "Xi", "V", "I"):
        assert imp.loc[("texture", g), "ratio_mean"] == pytest.approx(1.0)
        assert imp.loc[("chemistry", g), "ratio_mean"] == pytest.approx(1.0)
        assert imp.loc[("climate", g), "ratio_mean"] < 0.99
    assert imp.loc[("vegetation", "A"), "n_covariates"] == 0
