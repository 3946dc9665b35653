"""FeatureEncoder: scaling statistics stored, one-hot categories, NaN rows dropped and counted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from proda_engine.learning import FeatureEncoder


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame({
        "bio1": [0.0, 10.0, 20.0, 5.0],
        "clay": [10.0, 30.0, 50.0, 20.0],
        "const": [7.0, 7.0, 7.0, 7.0],
        "landcover": [3, 7, 3, 12],
        "koppen": ["Af", "Cfb", "Cfb", "Dfc"],
    })


def test_minmax_scaling_and_one_hot(table):
    enc = FeatureEncoder(categorical=["landcover", "koppen"]).fit(table)
    out = enc.transform(table)
    assert enc.feature_names == ["bio1", "clay", "const", "landcover=3", "landcover=7", "landcover=12",
                                 "koppen=Af", "koppen=Cfb", "koppen=Dfc"]
    np.testing.assert_allclose(out.x[:, 0], [0.0, 0.5, 1.0, 0.25])
    np.testing.assert_allclose(out.x[:, 1], [0.0, 0.5, 1.0, 0.25])
    np.testing.assert_array_equal(out.x[:, 2], 0.0)  # constant column -> 0, reported
    assert enc.constant == ["const"]
    np.testing.assert_array_equal(out.x[:, 3:6].sum(1), 1.0)
    np.testing.assert_array_equal(out.x[:, 6:].argmax(1), [0, 1, 1, 2])
    assert out.dropped == {} and out.unknown == {}


def test_robust_scaling(table):
    enc = FeatureEncoder(scaling="robust", columns=["bio1"]).fit(table)
    q1, med, q3 = np.percentile(table["bio1"], [25, 50, 75])
    np.testing.assert_allclose(enc.transform(table).x[:, 0], (table["bio1"] - med) / (q3 - q1))


def test_nan_rows_dropped_and_counted(table):
    enc = FeatureEncoder(categorical=["landcover", "koppen"]).fit(table)
    t2 = table.copy()
    t2.loc[1, "clay"] = np.nan
    t2.loc[3, "bio1"] = np.nan
    out = enc.transform(t2)
    assert out.dropped == {"nan_covariate": 2}
    assert out.nan_columns == {"bio1": 1, "clay": 1}
    np.testing.assert_array_equal(out.index, [0, 2])
    np.testing.assert_array_equal(out.keep, [True, False, True, False])


def test_statistics_ignore_nan_rows_when_fitting():
    t = {"a": np.array([0.0, np.nan, 4.0]), "b": np.array([1.0, 100.0, 3.0])}
    enc = FeatureEncoder().fit(t)
    assert enc.scale["b"] == 2.0  # row 1 (NaN in a) does not set b's range


def test_unknown_category_is_all_zero_and_counted(table, caplog):
    enc = FeatureEncoder(categorical=["landcover", "koppen"]).fit(table)
    new = table.iloc[:2].copy()
    new["landcover"] = [99, 7]
    new["koppen"] = ["ET", "ET"]
    out = enc.transform(new)
    assert out.unknown == {"landcover": 1, "koppen": 2}
    np.testing.assert_array_equal(out.x[0, 3:6], 0.0)
    np.testing.assert_array_equal(out.x[1, 3:6], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(out.x[:, 6:], 0.0)
    assert "unseen" in caplog.text


def test_float_codes_match_integer_categories(table):
    enc = FeatureEncoder(categorical=["landcover"], columns=["landcover"]).fit(table)
    out = enc.transform({"landcover": np.array([3.0, 12.0])})
    assert out.unknown == {}
    np.testing.assert_array_equal(out.x, [[1, 0, 0], [0, 0, 1]])


def test_dict_round_trip_is_plain_python(table):
    enc = FeatureEncoder(categorical=["landcover", "koppen"]).fit(table)
    d = enc.to_dict()
    assert all(type(v) is int for v in d["categories"]["landcover"])
    enc2 = FeatureEncoder.from_dict(d)
    np.testing.assert_array_equal(enc2.transform(table).x, enc.transform(table).x)
    assert enc2.feature_names == enc.feature_names


def test_errors_are_loud(table):
    with pytest.raises(RuntimeError, match="before fit"):
        FeatureEncoder().transform(table)
    enc = FeatureEncoder().fit(table[["bio1", "clay"]])
    with pytest.raises(KeyError, match="clay"):
        enc.transform(table[["bio1"]])
    with pytest.raises(TypeError, match="koppen"):
        FeatureEncoder(categorical=["landcover"]).fit(table)
    with pytest.raises(KeyError, match="not among"):
        FeatureEncoder(categorical=["soil"]).fit(table)
