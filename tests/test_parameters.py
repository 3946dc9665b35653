"""The parameter table (spec §(c)): mapping, clamping, groups, presets."""

import logging

import numpy as np
import pytest
import torch

from proda_engine import parameters as P

SPEC_MIDPOINT = [2.65e-4, 8.15e-4, 2.1, 0.5, 3.5, 0.055, 0.2, 0.5, 25.5, 600, 0.45, 0.5, 0.5, 0.2, 0.025,
                 0.42, 0.05, 0.45, 0.75, 2.5, 0.74995]


def test_midpoint_reproduces_spec_column():
    np.testing.assert_allclose(P.to_physical(np.full(21, 0.5)), SPEC_MIDPOINT, rtol=1e-12)


def test_roundtrip_numpy_and_torch(rng):
    th = rng.uniform(1e-3, 0.97, (5, 21))
    np.testing.assert_allclose(P.to_unit(P.to_physical(th)), th, rtol=1e-12)
    tt = torch.as_tensor(th)
    torch.testing.assert_close(P.to_physical(tt), torch.as_tensor(P.to_physical(th)))


def test_clamp_is_explicit_and_logged(caplog):
    th = np.full(21, 0.5)
    th[5] = 0.0  # taul1 -> 0 would be an infinite rate
    th[20] = 1.0  # beta theta capped at 0.98
    th[0] = 1.7  # unbounded network output
    with caplog.at_level(logging.WARNING):
        out = P.clamp_theta(th)
    assert out[5] == pytest.approx(1e-4) and out[20] == pytest.approx(0.98) and out[0] == 1.0
    assert "clamped 3 theta" in caplog.text


def test_groups_cover_every_parameter_once():
    idx = sorted(i for g in P.GROUPS.values() for i in g)
    assert idx == list(range(21))
    assert P.GROUPS["A"] == tuple(range(10, 19)) and P.GROUPS["V"] == (0, 1) and P.GROUPS["I"] == (20,)


def test_default_preset_sand_dependence():
    d = P.default_clm5_physical(np.array([0.0, 100.0]))
    # t = 0.85 - 0.0068 (100 - sand); f_S1S2 = 1 - t - 0.004: respiration of S1 is t (0.17 clay .. 0.85 sand)
    np.testing.assert_allclose(d["fs1s2"], [1 - 0.17 - 0.004, 1 - 0.85 - 0.004])
    assert d["efolding"] == 10.0 and d["fs1s3"] == 0.004
