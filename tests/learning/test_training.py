"""Training: loss falls, determinism, early stopping, failed sites masked, save/load, metadata."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from proda_engine.learning import TrainConfig, TrainedModel, train_end_to_end, train_two_step, two_step_loss
from proda_engine.parameters import N_PARAMS

from . import make_twin, true_theta


def _two_step_data(n: int, seed: int = 0, noise: float = 0.03):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 4))
    y = np.clip(true_theta(x) + noise * rng.standard_normal((n, N_PARAMS)), 0.001, 0.999)
    table = {f"x{i}": x[:, i] for i in range(4)}
    table["lat"] = rng.uniform(-60, 70, n)
    table["lon"] = rng.uniform(-180, 180, n)
    return table, y


def _cfg(**kw) -> TrainConfig:
    return TrainConfig.from_dict({"hidden": (32, 32), "block_size": 10.0}, **kw)


def test_two_step_loss_falls_and_reports_history():
    table, y = _two_step_data(300)
    model = train_two_step(table, y, config=_cfg(max_epochs=15, batch_size=32, lr=3e-3),
                           covariates=["x0", "x1", "x2", "x3"])
    h = model.history
    assert len(h) == 15
    assert h[-1]["train_loss"] < 0.3 * h[0]["train_loss"]
    assert min(r["val_loss"] for r in h) < 0.5 * h[0]["val_loss"]
    assert {"epoch", "train_loss", "val_loss", "seconds"} <= set(h[0])


def test_end_to_end_loss_falls_and_reports_failed_fraction():
    twin = make_twin(80, seed=1)
    cfg = _cfg(method="end-to-end", max_epochs=6, batch_size=20, lr=3e-3)
    model = train_end_to_end(twin.table, twin.forcing, twin.obs, config=cfg, covariates=twin.covariates)
    h = model.history
    assert h[-1]["train_loss"] < 0.6 * h[0]["train_loss"]
    assert all(r["train_failed"] == 0.0 and r["val_failed"] == 0.0 for r in h)
    ev = model.metadata["evaluation"]
    assert {"train", "val", "test"} <= set(ev) and ev["test"]["n"] > 0


def test_two_step_is_deterministic_for_a_seed():
    table, y = _two_step_data(200)
    cfg = _cfg(max_epochs=3, batch_size=16, dropout=0.1)
    a = train_two_step(table, y, config=cfg).predict_theta(table)
    b = train_two_step(table, y, config=cfg).predict_theta(table)
    c = train_two_step(table, y, config=cfg.replace(seed=1)).predict_theta(table)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_early_stopping_restores_the_best_weights():
    rng = np.random.default_rng(5)
    table, _ = _two_step_data(300)
    y = rng.uniform(0.1, 0.9, (300, N_PARAMS))  # nothing to learn: validation stops improving fast
    model = train_two_step(table, y, config=_cfg(max_epochs=200, patience=3, batch_size=16, lr=1e-2))
    meta = model.metadata
    assert meta["stopped_early"] and meta["epochs_run"] < 200
    val = [r["val_loss"] for r in model.history]
    assert meta["best_epoch"] == int(np.argmin(val)) + 1
    assert meta["epochs_run"] == meta["best_epoch"] + 3
    rows = model.split.val
    pred = model.predict_theta({k: v[rows] for k, v in table.items()})
    assert math.isclose(float(((pred - y[rows]) ** 2).mean()), meta["best_val_loss"], rel_tol=1e-6)


def test_failed_sites_are_masked_and_counted_nan_forcing_dropped():
    twin = make_twin(60, seed=2)
    f = twin.forcing
    w = f.w_scalar.clone()
    w[..., :3] = 0.0  # zero decomposition: the solve fails (status != 0) at sites 0..2
    inputs = f.inputs.clone()
    inputs[:, 3] = float("nan")  # no usable forcing: dropped before training, counted
    forcing = dataclasses.replace(f, w_scalar=w, inputs=inputs, _derived={})
    cfg = _cfg(method="end-to-end", max_epochs=2, batch_size=64, test_fraction=0.0, block_size=30.0)
    model = train_end_to_end(twin.table, forcing, twin.obs, config=cfg, covariates=twin.covariates)
    assert model.metadata["dropped"] == {"nan_forcing": 1}
    failed = [r["train_failed"] + r["val_failed"] for r in model.history]
    assert all(f > 0 for f in failed)
    assert model.metadata["nonfinite_grad_steps"] == 0
    assert all(bool(torch.isfinite(p).all()) for p in model.net.parameters())
    assert all(math.isfinite(r["train_loss"]) for r in model.history)


def test_proda_loss_formula_and_its_blow_up_near_zero():
    y = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    p = torch.tensor([[0.6, 0.4]], dtype=torch.float64)
    mse, mare = 0.01, 0.2
    assert math.isclose(float(two_step_loss(p, y, "proda")), 500 * mse * 25 * mare)
    assert math.isclose(float(two_step_loss(p, y, "mse")), mse)
    # The same absolute error on a target of 1e-3 instead of 0.5 multiplies MARE by 500.
    y0 = torch.tensor([[1e-3, 0.5]], dtype=torch.float64)
    p0 = y0 + torch.tensor([[0.1, -0.1]], dtype=torch.float64)
    assert float(two_step_loss(p0, y0, "proda")) > 200 * float(two_step_loss(p, y, "proda"))
    assert math.isfinite(float(two_step_loss(p0, torch.zeros_like(y0), "proda")))


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    table, y = _two_step_data(200)
    table["landcover"] = np.random.default_rng(0).integers(1, 4, 200)
    model = train_two_step(table, y, config=_cfg(max_epochs=2), categorical=["landcover"],
                           checksums={"targets.nc": "sha256:abc"})
    path = model.save(tmp_path / "models" / "net.pt")
    assert [p.name for p in path.parent.iterdir()] == ["net.pt"]  # the temp file was renamed away
    loaded = TrainedModel.load(path)
    np.testing.assert_array_equal(loaded.predict_theta(table), model.predict_theta(table))
    assert loaded.config == model.config
    assert loaded.history == model.history
    np.testing.assert_array_equal(loaded.split.test, model.split.test)
    meta = loaded.metadata
    assert meta["covariates"] == ["x0", "x1", "x2", "x3", "lat", "lon", "landcover"]
    assert meta["checksums"] == {"targets.nc": "sha256:abc"}
    assert meta["package_version"] and meta["torch_version"] == torch.__version__
    assert "landcover=2" in meta["feature_names"]
    # A land-cover class never seen in training: all-zero one-hot, still a valid prediction.
    new = {k: v[:5].copy() for k, v in table.items()}
    new["landcover"][:] = 99
    theta = loaded.predict_theta(new)
    assert np.isfinite(theta).all() and (theta >= 1e-4).all() and (theta <= 1).all()


def test_predict_theta_keeps_rows_and_marks_nan_covariates():
    table, y = _two_step_data(150)
    model = train_two_step(table, y, config=_cfg(max_epochs=1))
    t2 = {k: v.copy() for k, v in table.items()}
    t2["x1"][[4, 9]] = np.nan
    theta = model.predict_theta(t2)
    assert theta.shape == (150, N_PARAMS)
    assert np.isnan(theta[[4, 9]]).all() and np.isfinite(np.delete(theta, [4, 9], 0)).all()


def test_nan_targets_and_covariates_are_dropped_with_reasons():
    table, y = _two_step_data(200)
    y[:3] = np.nan
    table["x0"][10:12] = np.nan
    model = train_two_step(table, y, config=_cfg(max_epochs=1))
    assert model.metadata["dropped"] == {"nan_covariate": 2, "nan_target": 3}
    used = np.concatenate([model.split.train, model.split.val, model.split.test])
    assert not np.isin([0, 1, 2, 10, 11], used).any()
    with pytest.raises(ValueError, match="unit-space"):
        train_two_step(table, np.full((200, N_PARAMS), 3.0), config=_cfg(max_epochs=1))


def test_bias_term_is_the_log_total_ratio_and_pulls_totals_to_the_observed_sum():
    """bias_weight λ adds λ (ln Σ w m / Σ w o)² to the minibatch loss (exactly), and training with it moves
    the summed prediction of biased-low observations' fit toward the observed sum."""
    from proda_engine.grid import get_grid
    from proda_engine.learning import FeatureEncoder, build_network
    from proda_engine.learning.training import _observation_tensors, end_to_end_batch

    twin = make_twin(40, seed=3)
    grid = get_grid()
    enc = FeatureEncoder(columns=twin.covariates).fit(twin.table)
    x = torch.as_tensor(enc.transform(twin.table).x)
    net = build_network(enc.n_features, (16,), dtype="float64", seed=0)
    depth, obs, w, mask = _observation_tensors(twin.obs, "rank", x.device)
    f = twin.forcing.to(dtype=torch.float64)
    base, n_ok, _ = end_to_end_batch(net, x, f, depth, obs, w, mask, grid, loss="log_mse")
    with_bias, _, _ = end_to_end_batch(net, x, f, depth, obs, w, mask, grid, loss="log_mse", bias_weight=3.0)
    from proda_engine.inference.likelihood import model_at_obs
    from proda_engine.physics import params_from_theta, steady_state

    with torch.no_grad():
        res = steady_state(params_from_theta(net(x), clamp=False), f, grid)
        pred = model_at_obs(res.soc, torch.as_tensor(grid.z_node, dtype=torch.float64), depth, mask)
    lay = mask & torch.isfinite(pred)
    ratio = float((w * pred)[lay].sum() / (w * obs)[lay].sum())
    assert n_ok == 40
    assert float((with_bias - base).detach()) == pytest.approx(3.0 * math.log(ratio) ** 2, rel=1e-10)


def test_bias_weight_reduces_the_total_bias_of_a_fit():
    """Observations with multiplicative log-normal scatter: the log-space fit lands on the median and
    under-predicts the total; the bias term brings the fit's total closer to the observed one."""
    twin = make_twin(120, seed=5)
    rng = np.random.default_rng(0)
    obs = dataclasses.replace(twin.obs, soc=twin.obs.soc * np.exp(0.8 * rng.standard_normal(twin.obs.soc.shape)))
    pbias = {}
    for lam in (0.0, 1.0):
        cfg = _cfg(method="end-to-end", loss="log_mse", max_epochs=25, batch_size=60, lr=3e-3, bias_weight=lam,
                   patience=50)
        model = train_end_to_end(twin.table, twin.forcing, obs, config=cfg, covariates=twin.covariates)
        soc, _ = model.simulate(twin.table, twin.forcing)
        from proda_engine.inference.likelihood import model_at_obs

        pred = np.asarray(model_at_obs(soc, __import__("proda_engine.grid", fromlist=["get_grid"]).get_grid().z_node,
                                       obs.depth, obs.mask))
        m = obs.mask
        pbias[lam] = 100 * (pred[m].sum() - obs.soc[m].sum()) / obs.soc[m].sum()
    assert pbias[0.0] < -10  # the median fit under-predicts the total of log-normal scatter (exp(0.32) ~ 1.38)
    assert pbias[1.0] > pbias[0.0] + 5 and abs(pbias[1.0]) < abs(pbias[0.0])
