"""Ensembles: bootstrap members differ, share encoder and split, predict (member, N, 21), save/load."""

from __future__ import annotations

import numpy as np
import pytest

from proda_engine.learning import Ensemble, TrainConfig, permutation_importance, train_ensemble, train_two_step
from proda_engine.parameters import N_PARAMS

from . import make_twin, true_theta


def _data(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 4))
    y = np.clip(true_theta(x) + 0.03 * rng.standard_normal((n, N_PARAMS)), 0.001, 0.999)
    table = {f"x{i}": x[:, i] for i in range(4)} | {"lat": rng.uniform(-60, 70, n), "lon": rng.uniform(-180, 180, n)}
    return table, y


def test_bootstrap_ensemble_predicts_member_by_site_by_parameter(tmp_path):
    table, y = _data()
    cfg = TrainConfig(hidden=(16,), max_epochs=3, n_members=3, block_size=10.0)
    ens = train_ensemble(table, targets_theta=y, config=cfg)
    assert len(ens) == 3
    p = ens.predict(table)
    assert p.shape == (3, 200, N_PARAMS)
    assert (p >= 1e-4).all() and (p <= 1).all()
    # Members see different resamples and seeds but the same held-out blocks and encoder.
    trains = [m.split.train for m in ens.members]
    assert not np.array_equal(trains[0], trains[1])
    assert all(np.array_equal(m.split.test, ens.members[0].split.test) for m in ens.members)
    assert all(m.encoder.to_dict() == ens.encoder.to_dict() for m in ens.members)
    assert not np.allclose(p[0], p[1])
    mean, sd = ens.mean_sd(table)
    np.testing.assert_allclose(mean, p.mean(0))
    np.testing.assert_allclose(sd, p.std(0, ddof=1))
    assert (sd > 0).any()
    path = ens.save(tmp_path / "ens.pt")
    np.testing.assert_array_equal(Ensemble.load(path).predict(table), p)


def test_ensemble_is_reproducible_and_seed_only_mode_keeps_all_sites():
    table, y = _data(150)
    cfg = TrainConfig(hidden=(8,), max_epochs=2, n_members=2, block_size=10.0, bootstrap=False)
    a = train_ensemble(table, targets_theta=y, config=cfg)
    b = train_ensemble(table, targets_theta=y, config=cfg)
    np.testing.assert_array_equal(a.predict(table), b.predict(table))
    assert np.array_equal(a.members[0].split.train, a.members[1].split.train)
    assert [m.config.seed for m in a.members] == [0, 1]


def test_end_to_end_ensemble_runs():
    twin = make_twin(40, seed=5)
    cfg = TrainConfig(method="end-to-end", hidden=(8,), max_epochs=1, n_members=2, block_size=30.0,
                      test_fraction=0.0, batch_size=64)
    ens = train_ensemble(twin.table, forcing_sites=twin.forcing, observations=twin.obs, config=cfg,
                         covariates=twin.covariates)
    assert ens.predict(twin.table).shape == (2, 40, N_PARAMS)


def test_inputs_must_match_the_method():
    table, y = _data(50)
    with pytest.raises(ValueError, match="end-to-end"):
        train_ensemble(table, targets_theta=y, config=TrainConfig(method="end-to-end"))
    with pytest.raises(ValueError, match="either"):
        train_ensemble(table, config=TrainConfig())


@pytest.mark.parametrize("mode", ["randomize", "permute"])
def test_permutation_importance_ranks_the_informative_category(mode):
    table, y = _data(300)
    model = train_two_step(table, y, config=TrainConfig(hidden=(32, 32), max_epochs=30, patience=30, lr=3e-3,
                                                        block_size=10.0, batch_size=32))
    # x1 drives tau4s3 (group Tau); lat/lon drive nothing in the twin.
    imp = permutation_importance(model, table, y, {"x1": ["x1"], "geography": ["lat", "lon"]}, n_repeats=20,
                                 mode=mode, seed=0)
    tau = imp[imp.group == "Tau"].set_index("category")
    assert tau.loc["x1", "ratio_mean"] < 0.9
    assert tau.loc["geography", "ratio_mean"] > tau.loc["x1", "ratio_mean"] + 0.05
    assert set(imp.group) == {"A", "Tau", "Xi", "V", "I"}
    assert (imp.benchmark_r.loc[imp.group == "Tau"] > 0.5).all()
