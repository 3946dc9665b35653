"""The data catalog: the repository's data_catalog.yaml, validation and dispatch to the readers."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from proda_engine.data.catalog import Source, cache_dir, load_catalog, parse_catalog
from proda_engine.data.errors import CatalogError, ForcingError
from proda_engine.data.profiles import ProfileSet

ROOT = Path(__file__).resolve().parents[2]
FIX = Path(__file__).parent / "fixtures"
REPO_CATALOG = ROOT / "data_catalog.yaml"
MY_MODULES = ("__init__", "catalog", "covariates", "errors", "forcing", "profiles", "sampling", "writers")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PRODA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_repo_catalog_world_entries(cache: Path) -> None:
    cat = load_catalog(REPO_CATALOG)
    assert cat.names() == ["world_forcing", "world_covariates", "world_profiles", "world_truth", "sanderman2017_socs"]
    assert cat.names("reference_map") == ["sanderman2017_socs"] and cat.available("sanderman2017_socs")  # shipped
    world = cache / "world" / "default"
    assert cat["world_forcing"].paths == (str(world / "forcing.nc"),)
    assert cat["world_covariates"].paths == (str(world / "covariates.nc"),)
    assert cat["world_profiles"].paths == (str(world / "wosis"),)
    assert cat["world_truth"].paths == (str(world / "truth_parameters.nc"),)
    assert {cat[n].built_by for n in cat if n.startswith("world_")} == {"world"}
    assert cat["sanderman2017_socs"].built_by is None  # a committed file
    assert cat["world_profiles"].format == "wosis_2019"
    assert "ESA_Land_Cover" in cat["world_covariates"].categorical
    assert cat.names("forcing") == ["world_forcing"]
    assert not cat.available("world_forcing")


def test_repo_catalog_commented_examples_are_valid() -> None:
    text = REPO_CATALOG.read_text(encoding="utf-8")
    block = text[text.index("  # wosis_2019:"):]
    lines = []
    for line in block.splitlines():
        if line.startswith("  # "):
            lines.append("  " + line[4:])
        elif line.strip() == "#":
            lines.append("")
    raw = yaml.safe_load("version: 1\nsources:\n" + "\n".join(lines))
    cat = parse_catalog(raw, base=ROOT, check_files=False)
    assert set(cat.names()) == {"wosis_2019", "wosis_2023", "cesm2_forcing", "ssp245_forcing", "my_covariates",
                                "modis_npp", "soilgrids_ocs", "wise30sec_stock"}
    assert cat["modis_npp"].kind == "npp" and cat["ssp245_forcing"].kind == "forcing_series"
    assert cat["cesm2_forcing"].options["npp_split"]["input_litter2"] == 0.40


def test_built_source_missing_until_built(cache: Path) -> None:
    cat = load_catalog(REPO_CATALOG)
    with pytest.raises(CatalogError, match=r"source 'world_forcing': missing file\(s\) .*forcing.nc; it is built "
                       r"by 'world' \(run `proda world` first\)"):
        cat.open("world_forcing")


def _fake_world(src: Source) -> None:
    """Stand-in builder: copies real-format fixtures to where the world builder writes them."""
    world = Path(src.paths[0]).parent
    world.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIX / "clm5" / "case.clm2.h0.clim.nc", world / "forcing.nc")
    shutil.copy(FIX / "covariates" / "covariates.nc", world / "covariates.nc")
    shutil.copytree(FIX / "wosis2019", world / "wosis", dirs_exist_ok=True)
    truth = xr.Dataset({"theta": (("parameter", "site"), np.full((21, 2), 0.5))},
                       coords={"parameter": [f"p{i}" for i in range(21)]})
    truth.to_netcdf(world / "truth_parameters.nc")


def test_open_with_registered_builder(cache: Path) -> None:
    calls = []

    def builder(src: Source) -> None:
        calls.append(src.name)
        _fake_world(src)

    cat = load_catalog(REPO_CATALOG, builders={"world": builder})
    forcing = cat.open("world_forcing")
    assert calls == ["world_forcing"]
    assert forcing.attrs["source_name"] == "world_forcing" and forcing.sizes["layer"] == 20
    cov = cat.open("world_covariates")
    assert cov["ESA_Land_Cover"].attrs["categorical"] == 1
    assert "Koppen_Climate_2018" in cov.attrs["categorical_absent"]
    profiles = cat.open("world_profiles")
    assert isinstance(profiles, ProfileSet) and len(profiles) == 4
    truth = cat.open("world_truth")
    assert truth.sizes["parameter"] == 21
    assert calls == ["world_forcing"]  # built once, the rest already existed
    # call-time overrides reach the reader (CLM5's nbedrock 20 does not fit a 10-layer model)
    with pytest.raises(ForcingError, match=r"expected integer layer index in 1..10 on valid cells"):
        cat.open("world_forcing", n_layers=10)


def _write_catalog(tmp_path: Path, sources: dict) -> Path:
    p = tmp_path / "cat.yaml"
    p.write_text(yaml.safe_dump({"version": 1, "sources": sources}), encoding="utf-8")
    return p


def test_user_catalog_dispatch_relative_paths_and_globs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIX, data)
    p = _write_catalog(tmp_path, {
        "cesm": {"kind": "forcing", "format": "clm5_history", "paths": "data/clm5/*.clim.nc",
                 "licence": "test", "attribution": "test", "description": "fixture"},
        "env": {"kind": "covariates", "format": "auto",
                "paths": ["data/covariates/covariates.nc", "data/covariates/Elevation.tif"],
                "variables": {"BIO1": "degC", "Elevation": "m"}, "categorical": []},
        "w23": {"kind": "profiles", "format": "wosis_2023", "paths": "data/wosis2023"},
        "tidy": {"kind": "profiles", "format": "auto", "paths": "data/tidy/profiles_tidy.csv"},
        "npp": {"kind": "npp", "format": "geotiff", "paths": "data/covariates/Elevation.tif",
                "options": {"scale_factors": {"Elevation": 0.001}}},
        "later": {"kind": "reference_map", "paths": "data/not_yet.nc", "optional": True},
    })
    cat = load_catalog(p)
    assert cat.open("cesm")["valid"].sum() == 20
    env = cat.open("env")
    assert list(env.data_vars) == ["BIO1", "Elevation", "valid"]
    assert env["Elevation"].attrs["units"] == "m"  # from the catalog: the GeoTIFF has none
    assert cat.open("w23").layout == "wosis_2023"
    assert cat.open("tidy").layout == "tidy_csv"
    assert float(cat.open("npp")["Elevation"].max()) == pytest.approx(2.3)
    with pytest.raises(CatalogError, match=r"source 'later': missing file\(s\) .*not_yet.nc; it is marked optional"):
        cat.open("later")
    # root override: the same relative paths resolve against another folder
    moved = tmp_path / "elsewhere"
    shutil.copytree(data, moved / "data")
    cat2 = load_catalog(p, root=moved)
    assert cat2["cesm"].paths[0].startswith(str(moved))


def test_profiles_format_must_match(tmp_path: Path) -> None:
    p = _write_catalog(tmp_path, {"obs": {"kind": "profiles", "format": "wosis_2019", "paths": str(FIX / "tidy")}})
    with pytest.raises(Exception, match="expected layout wosis_2019, found tidy_csv"):
        load_catalog(p).open("obs")


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ({"a": {"kind": "forcing", "paths": "x.nc", "colour": "red"}},
         r"source 'a': unknown key\(s\) 'colour'; expected some of kind, format"),
        ({"a": {"kind": "soil", "paths": "x.nc"}}, r"source 'a': key 'kind': expected one of forcing, "),
        ({"a": {"kind": "forcing", "format": "geotiff", "paths": "x.nc"}},
         r"source 'a': key 'format': expected one of clm5_history, netcdf for kind 'forcing', found 'geotiff'"),
        ({"a": {"kind": "forcing", "paths": "x.nc", "options": {"n_layer": 20}}},
         r"source 'a': key 'options': unknown option\(s\) 'n_layer' for kind 'forcing'"),
        ({"a": {"kind": "forcing", "paths": "x.nc", "built_by": "magic"}},
         r"source 'a': key 'built_by': expected one of world, found 'magic'"),
        ({"a": {"kind": "forcing", "paths": "${DATA}/x.nc"}},
         r"source 'a': path '\$\{DATA\}/x.nc': unknown placeholder \$\{DATA\}"),
        ({"a": {"kind": "forcing"}}, r"source 'a': missing required key 'paths'"),
        ({"a": {"kind": "covariates", "paths": "x.nc", "variables": {"BIO1": {"unit": "degC"}}}},
         r"source 'a': variable 'BIO1': unknown key\(s\) \['unit'\]"),
        ({"a": {"kind": "forcing", "paths": "missing.nc"}},
         r"cat.yaml: source 'a': missing file .*missing.nc \(mark the source 'optional: true'"),
    ],
)
def test_catalog_validation_errors(tmp_path: Path, sources: dict, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        load_catalog(_write_catalog(tmp_path, sources))


def test_top_level_and_lookup_errors(tmp_path: Path) -> None:
    p = tmp_path / "top.yaml"
    p.write_text("version: 1\nsources: {}\nextras: 1\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"top.yaml: unknown top-level key\(s\) 'extras'"):
        load_catalog(p)
    cat = load_catalog(_write_catalog(tmp_path, {}))
    with pytest.raises(CatalogError, match=r"unknown source 'nope'; available: none"):
        cat.open("nope")
    with pytest.raises(CatalogError, match="catalog file not found"):
        load_catalog(tmp_path / "absent.yaml")


def test_cache_dir_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRODA_CACHE", raising=False)
    assert cache_dir() == Path("~/.cache/proda").expanduser()
    monkeypatch.setenv("PRODA_CACHE", "/tmp/somewhere")
    assert cache_dir() == Path("/tmp/somewhere")


def test_data_modules_never_import_physics() -> None:
    for name in MY_MODULES:
        tree = ast.parse((ROOT / "proda_engine" / "data" / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            assert not any(m.startswith("proda_engine.physics") for m in mods), f"{name}.py imports {mods}"


@pytest.mark.parametrize(("world", "message"), [
    ({"covariates": "cov"}, r"world 'w': missing required key 'forcing'"),
    ({"forcing": "nope", "covariates": "cov"}, r"world 'w': key 'forcing': expected the name of a source .*'nope'"),
    ({"forcing": "cov", "covariates": "cov"}, r"key 'forcing': source 'cov' has kind 'covariates', expected kind"),
    ({"forcing": "f", "covariates": "cov", "colour": 1}, r"world 'w': unknown key\(s\) 'colour'"),
])
def test_world_entries_are_validated(tmp_path: Path, world: dict, message: str) -> None:
    """A world names sources of this catalog by kind; anything else is an error naming world and key."""
    (tmp_path / "f.nc").write_bytes(b"")
    (tmp_path / "c.nc").write_bytes(b"")
    raw = {"version": 1, "sources": {"f": {"kind": "forcing", "paths": ["f.nc"]},
                                     "cov": {"kind": "covariates", "paths": ["c.nc"]}},
           "worlds": {"w": world}}
    with pytest.raises(CatalogError, match=message):
        parse_catalog(raw, base=tmp_path)


def test_world_entry_parsed(tmp_path: Path) -> None:
    (tmp_path / "f.nc").write_bytes(b"")
    (tmp_path / "c.nc").write_bytes(b"")
    raw = {"version": 1, "sources": {"f": {"kind": "forcing", "paths": ["f.nc"]},
                                     "cov": {"kind": "covariates", "paths": ["c.nc"]}},
           "worlds": {"w": {"forcing": "f", "covariates": "cov", "description": "  two   words "}}}
    cat = parse_catalog(raw, base=tmp_path)
    w = cat.world("w")
    assert (w.forcing, w.covariates, w.profiles, w.truth, w.description) == ("f", "cov", None, None, "two words")
    with pytest.raises(CatalogError, match=r"unknown world 'x'; worlds of this catalog: w"):
        cat.world("x")
