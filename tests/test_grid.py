"""Vertical grids (spec §(a)) and the partial-layer rule (spec §(i))."""

import numpy as np
import pytest

from proda_engine.grid import get_grid


def test_clm5_20_geometry_is_consistent():
    g = get_grid("clm5_20")
    assert g.n_layers == 20 and g.depth == pytest.approx(8.60)
    np.testing.assert_allclose(np.cumsum(g.dz), g.z_interface, atol=1e-12)
    np.testing.assert_allclose(g.dn[:4], [0.01, 0.03, 0.05, 0.07])
    assert g.dn[-1] == pytest.approx(1.765)


def test_clm45_10_matches_spec_table():
    g = get_grid("clm45_10")
    np.testing.assert_allclose(g.z_node, [0.0071, 0.0279, 0.0623, 0.1189, 0.2122, 0.3661, 0.6198, 1.0380, 1.7276,
                                          2.8646], atol=6e-5)
    np.testing.assert_allclose(g.dz, [0.0175, 0.0276, 0.0455, 0.0750, 0.1236, 0.2038, 0.3360, 0.5539, 0.9133,
                                      1.5058], atol=6e-5)
    assert g.depth == pytest.approx(3.8019, abs=1e-4)


def test_partial_layer_weights_match_spec():
    g = get_grid()
    w30, w100, w200 = (g.interval_weights(0, b) for b in (0.3, 1.0, 2.0))
    assert w30[4] == pytest.approx(0.8333, abs=1e-4) and w30[:4].tolist() == [1, 1, 1, 1] and w30[5:].sum() == 0
    assert w100[8] == pytest.approx(0.2857, abs=1e-4) and w100[9:].sum() == 0
    assert w200[11] == pytest.approx(0.30) and w200[12:].sum() == 0
    assert g.interval_weights(0, None).tolist() == [1.0] * 20


def test_unknown_grid_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown grid 'x'"):
        get_grid("x")
