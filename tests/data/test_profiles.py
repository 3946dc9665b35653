"""Profile readers on WoSIS 2019 / WoSIS 2023 / tidy CSV fixtures with exact skip counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from proda_engine.data.errors import ProfileError
from proda_engine.data.profiles import LAYER_COLUMNS, PROFILE_COLUMNS, read_profiles, write_tidy_csv

FIX = Path(__file__).parent / "fixtures"
W19 = FIX / "wosis2019"
W23 = FIX / "wosis2023"
TIDY = FIX / "tidy" / "profiles_tidy.csv"


@pytest.fixture(scope="module")
def w19():
    return read_profiles(W19)


def test_wosis2019_counts_by_reason(w19) -> None:
    r = w19.report
    assert w19.layout == "wosis_2019"
    assert dict(r.layers) == {
        "litter_layer": 1,
        "negative_depth": 1,
        "lower_not_below_upper": 1,
        "non_numeric_depth": 1,
        "non_numeric_value": 1,
        "missing_orgc": 1,
        "missing_bulk_density": 1,
        "soc_zero": 1,
        "profile_invalid_coordinates": 4,
        "profile_no_profile_record": 2,
        "profile_fewer_than_two_layers": 1,
    }
    assert dict(r.profiles) == {"invalid_coordinates": 2, "no_profile_record": 1, "fewer_than_two_layers": 1}
    assert dict(r.notes) == {"cfvo_missing_assumed_zero": 1, "bulk_density_from_bdfi33": 1,
                             "bulk_density_from_bdws33": 1}
    assert (r.n_layers_read, r.n_layers_kept, r.n_profiles_read, r.n_profiles_kept) == (26, 11, 8, 4)
    assert r.n_layers_read == r.n_layers_kept + sum(r.layers.values())
    assert r.n_profiles_read == r.n_profiles_kept + sum(r.profiles.values())


def test_wosis2019_reason_files(w19) -> None:
    files = w19.report.files
    assert files["missing_bulk_density"] == {"wosis_201909_layers_physical.tsv"}
    assert files["missing_orgc"] == {"wosis_201909_layers_chemical.tsv"}
    assert files["invalid_coordinates"] == {"wosis_201909_profiles.tsv"}
    assert files["cfvo_missing_assumed_zero"] == {"wosis_201909_layers_physical.tsv"}


def test_wosis2019_values_and_order(w19) -> None:
    layers, profiles = w19.layers, w19.profiles
    assert layers.columns.tolist() == LAYER_COLUMNS
    assert profiles.columns.tolist() == PROFILE_COLUMNS
    assert profiles["profile_id"].tolist() == ["101", "102", "103", "105"]
    assert profiles["n_layers"].tolist() == [4, 3, 2, 2]
    assert profiles["max_depth_m"].tolist() == [1.0, 1.5, 0.9, 0.5]
    p101 = layers[layers.profile_id == "101"]
    # orgc 25 g/kg x BD 1.2 kg/dm3 x (1 - 5/100) x 1000 = 28500 g C m-3 at 0.05 m
    assert p101["soc_density"].tolist() == pytest.approx([28500.0, 14625.0, 6160.0, 3000.0])
    assert p101["depth_m"].tolist() == [0.05, 0.2, 0.45, 0.8]
    p102 = layers[layers.profile_id == "102"]
    assert p102["soc_density"].iloc[-1] == pytest.approx(2 * 1.45 * 1000)  # bdfi33 fallback
    p105 = layers[layers.profile_id == "105"]
    assert p105["soc_density"].iloc[-1] == pytest.approx(4 * 1.3 * 0.85 * 1000)  # bdws33 fallback, cfvo 15
    assert (layers.groupby("profile_id")["depth_m"].apply(lambda s: s.is_monotonic_increasing)).all()
    assert layers.attrs["units"]["soc_density"] == "g C m-3"
    assert float(profiles.set_index("profile_id").loc["103", "longitude"]) == -100.0


def test_report_dict_and_text(w19) -> None:
    d = w19.report.to_dict()
    json.dumps(d)  # serialisable for run reports
    assert d["layers_dropped"]["litter_layer"] == 1
    text = str(w19.report)
    assert text.splitlines()[0] == "profiles: 4 kept of 8 read; layers: 11 kept of 26 read"
    assert "litter layer [litter_layer; wosis_201909_layers_chemical.tsv]" in text
    assert "in a dropped profile (fewer than two valid layers)" in text


def test_explicit_files_equal_folder(w19) -> None:
    ps = read_profiles([W19 / "wosis_201909_profiles.tsv", W19 / "wosis_201909_layers_chemical.tsv",
                        W19 / "wosis_201909_layers_physical.tsv"])
    pd.testing.assert_frame_equal(ps.layers, w19.layers)
    assert ps.report.to_dict() == w19.report.to_dict()


def test_wosis2023_long_tables() -> None:
    ps = read_profiles(W23)
    assert ps.layout == "wosis_2023"
    assert dict(ps.report.layers) == {"missing_bulk_density": 1, "profile_fewer_than_two_layers": 1}
    assert dict(ps.report.profiles) == {"fewer_than_two_layers": 1}
    assert dict(ps.report.notes) == {"bulk_density_from_bdfi33": 1, "cfvo_missing_assumed_zero": 1}
    assert ps.report.files["cfvo_missing_assumed_zero"] == {"wosis_202312_cfvo.tsv"}
    p201 = ps.layers[ps.layers.profile_id == "201"]
    # "{27.5}" g/kg x "{1.1}" x (1 - "{10}"/100) x 1000
    assert p201["soc_density"].tolist() == pytest.approx([27225.0, 16875.0, 6.5 * 1.4 * 1000])
    assert ps.profiles["profile_id"].tolist() == ["201", "202"]
    assert ps.profiles["latitude"].tolist() == [47.2, -33.9]


def test_tidy_csv() -> None:
    ps = read_profiles(TIDY)
    assert ps.layout == "tidy_csv"
    assert dict(ps.report.layers) == {"missing_soc": 1, "soc_zero": 1}
    assert ps.layers["soc_density"].tolist() == [30000.0, 20000.0, 25000.0, 12000.0]  # kg m-3 -> g m-3
    assert ps.profiles["longitude"].tolist() == [20.5, -160.0]  # 200E wrapped


def test_tidy_round_trip(tmp_path: Path, w19) -> None:
    out = write_tidy_csv(w19, tmp_path / "tidy.csv")
    back = read_profiles(out)
    assert back.report.n_layers_kept == w19.report.n_layers_kept and not back.report.layers
    pd.testing.assert_frame_equal(back.layers, w19.layers, check_exact=False, rtol=1e-9)


def test_missing_latitude_column_is_an_error() -> None:
    with pytest.raises(ProfileError) as e:
        read_profiles(FIX / "bad" / "wosis2019_no_latitude")
    msg = str(e.value)
    assert msg.startswith("wosis_201909_profiles.tsv: row 1 (header): missing required column(s) 'latitude'; "
                          "expected profile_id, latitude, longitude; found profile_id, dataset_id,")


def test_lower_depth_above_upper_is_counted() -> None:
    ps = read_profiles(FIX / "bad" / "tidy_lower_above_upper.csv")
    assert dict(ps.report.layers) == {"lower_not_below_upper": 1}
    assert ps.layers["upper_depth_cm"].tolist() == [0.0, 10.0]


def test_unrecognised_explicit_file(tmp_path: Path) -> None:
    p = tmp_path / "soil.csv"
    p.write_text("site,lat,lon,soc\n1,2,3,4\n", encoding="utf-8")
    with pytest.raises(ProfileError, match=r"soil.csv: row 1 \(header\): expected a WoSIS 2019 / WoSIS 2023 / "
                       r"tidy CSV header .* found site, lat, lon, soc"):
        read_profiles(p)


def test_layout_mismatch_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="expected layout wosis_2023, found tidy_csv"):
        read_profiles(TIDY, layout="wosis_2023")
    p = tmp_path / "latin1.csv"
    p.write_bytes("profile_id,latitude,longitude,upper_depth_cm,lower_depth_cm,soc_density_kg_m3\n"
                  "S\xe9gou,1,2,0,10,5\n".encode("latin-1"))
    with pytest.raises(ProfileError, match=r"latin1.csv: cannot be (read|parsed) as .*UTF-8"):
        read_profiles(p)
    with pytest.raises(ProfileError, match="not found"):
        read_profiles(tmp_path / "nothing_here.tsv")


def test_per_row_problems_never_crash(tmp_path: Path) -> None:
    p = tmp_path / "rows.csv"
    p.write_text(
        "profile_id,latitude,longitude,upper_depth_cm,lower_depth_cm,soc_density_kg_m3\n"
        "A,1,1,0,10,{5}\n"
        "A,1,1,10,x20,5\n"      # non-numeric depth
        "A,1,1,20,,5\n"         # missing depth
        "A,1,1,20,40,-3\n"      # negative SOC
        "A,1,1,40,60,abc\n"     # non-numeric value
        'A,1,1,60,80,"{4, 6}"\n'  # two values in braces: averaged
        "B,,1,0,10,5\n"         # no latitude
        "B,,1,10,20,5\n",
        encoding="utf-8",
    )
    ps = read_profiles(p)
    assert dict(ps.report.layers) == {"non_numeric_depth": 1, "missing_depth": 1, "out_of_range_value": 1,
                                      "non_numeric_value": 1, "profile_invalid_coordinates": 2}
    assert dict(ps.report.profiles) == {"invalid_coordinates": 1}
    assert ps.layers["soc_density"].tolist() == [5000.0, 5000.0]
    assert dict(ps.report.notes) == {"multi_value_averaged": 1}
    assert np.isfinite(ps.layers["depth_m"]).all()


def test_single_layer_profiles_kept_when_asked(tmp_path):
    """min_layers=1 keeps one-layer profiles (end-to-end training, evaluation) and counts both kinds;
    the default (2, site MCMC) drops them with a counted reason."""
    import pandas as pd

    rows = [["a", 10.0, 20.0, 0, 10, 5.0], ["a", 10.0, 20.0, 10, 30, 3.0], ["b", 11.0, 21.0, 0, 20, 4.0],
            ["c", 12.0, 22.0, 0, 15, 0.0]]
    f = tmp_path / "tidy.csv"
    pd.DataFrame(rows, columns=["profile_id", "latitude", "longitude", "upper_depth_cm", "lower_depth_cm",
                                "soc_density_kg_m3"]).to_csv(f, index=False)
    two = read_profiles(f)
    assert list(two.profiles["profile_id"]) == ["a"]
    assert dict(two.report.profiles) == {"fewer_than_two_layers": 2}
    one = read_profiles(f, min_layers=1)
    assert list(one.profiles["profile_id"]) == ["a", "b"]
    assert (one.report.n_single_layer_profiles, one.report.n_multi_layer_profiles) == (1, 1)
    assert dict(one.report.profiles) == {"no_valid_layer": 1}  # c: its only layer has SOC = 0
    assert one.report.to_dict()["n_single_layer_profiles"] == 1
