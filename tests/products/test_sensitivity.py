"""Marginal "+1 % bulk-process" sensitivity (spec §(j)): signs, exact input linearity, fit algebra.

Stand-in ensemble members are the twin truth plus perturbed copies (labelled ``standin``), not trained output.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from proda_engine.products.sensitivity import LEVELS, fit_elasticity, marginal_sensitivity


@pytest.fixture(scope="module")
def result_standin_members(world):
    th = world.cells.theta_from_grid(world.truth)
    rng = np.random.default_rng(11)
    members = np.stack([th, np.clip(th + rng.normal(0, 0.03, th.shape), 0.01, 0.99)])
    return marginal_sensitivity(world, members, chunk_size=60)


def _row(res, group, member=0):
    t = res.table
    return t[(t.group == group) & (t.member == member)].iloc[0]


def test_levels_are_the_spec_levels():
    assert len(LEVELS) == 11 and LEVELS[5] == 0.0
    np.testing.assert_allclose(np.diff(LEVELS), 0.04)


def test_npp_elasticity_is_exactly_one(result_standin_members):
    """SOC is linear in the inputs: R(q) = q, S(q) = S0 (1 + q) -> b = 1, +1 % = 1 % of the stock;
    turnover S / C_in does not change. (Per-cell curves are kept in float32: exact to ~1e-7.)"""
    r = _row(result_standin_members, "NPP")
    assert r.elasticity_stock == pytest.approx(1.0, abs=1e-7)
    assert r.plus1pct_stock_pg == pytest.approx(0.01 * r.stock_pg, rel=1e-6)
    assert r.change_for_double_stock == pytest.approx(1.0, rel=1e-6)  # +100 % input doubles SOC
    assert r.change_for_plus10pct_stock == pytest.approx(0.1, rel=1e-6)
    assert abs(r.elasticity_turnover) < 1e-7
    c = result_standin_members.curves
    np.testing.assert_allclose(c["process_change"].sel(group="NPP").values[0], LEVELS, atol=1e-12)


@pytest.mark.parametrize(("group", "sign"), [("A", 1), ("K", -1), ("Xi", -1), ("NPP", 1)])
def test_signs_with_respect_to_the_bulk_metric(result_standin_members, group, sign):
    """Higher CUE -> more SOC; higher K_bar (faster decomposition) -> less SOC; higher xi_bar
    (faster environmental decay) -> less SOC; more input -> more SOC."""
    for m in (0, 1):
        r = _row(result_standin_members, group, m)
        assert np.sign(r.elasticity_stock) == sign
        assert np.sign(r.plus1pct_stock_pg) == sign


def test_k_theta_up_lowers_kbar_and_raises_soc(result_standin_members):
    """Sign bookkeeping: theta of the turnover times up (q > 0) -> slower decay: R_K < 0, S up."""
    c = result_standin_members.curves.sel(group="K", member=0)
    assert float(c["process_change"].sel(level=0.2)) < 0
    assert float(c["stock"].sel(level=0.2)) > float(c["stock"].sel(level=0.0))


def test_effect_definitions(result_standin_members):
    r = _row(result_standin_members, "A")
    b, a = r.elasticity_stock, r.intercept_stock
    assert r.plus1pct_stock_pg == pytest.approx(r.stock_pg * (1.01**b - 1))
    assert r.change_for_double_stock == pytest.approx(np.exp((np.log(2) - a) / b) - 1)
    assert r.change_for_plus10pct_stock == pytest.approx(np.exp((np.log(1.1) - a) / b) - 1)


def test_fit_recovers_a_power_law():
    r = np.linspace(-0.15, 0.15, 11)
    y = 3.0 * (1 + r) ** 1.7
    f = fit_elasticity(r, y, 3.0)
    assert f["b"] == pytest.approx(1.7) and f["a"] == pytest.approx(0.0, abs=1e-12)
    assert f["change_for_double"] == pytest.approx(2 ** (1 / 1.7) - 1)
    assert np.isnan(fit_elasticity(np.zeros(11), y, 3.0)["b"])


def test_summary_and_files(result_standin_members, tmp_path):
    s = result_standin_members.summary()
    assert list(s.group) == ["A", "K", "Xi", "V", "I", "NPP"]
    assert (s.n_members == 2).all() and (s.plus1pct_stock_pg_sd > 0).all()
    files = result_standin_members.write(tmp_path)
    for p in files.values():
        assert p.exists() and p.stat().st_size > 0
    js = json.loads(files["summary_json"].read_text())
    assert {g["group"] for g in js["groups"]} == {"A", "K", "Xi", "V", "I", "NPP"}


def test_cli_sensitivity(world, tmp_path):
    from proda_engine.cli import main

    assert main(["sensitivity", "--world", "tiny", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "sensitivity_summary.csv").exists() and (tmp_path / "sensitivity_plus1pct.png").exists()
