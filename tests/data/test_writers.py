"""Atomic writers and run folders."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from proda_engine.data.writers import RunFolder, sha256_file, write_netcdf_atomic, write_text_atomic

FIX = Path(__file__).parent / "fixtures"


def _ds(value: float) -> xr.Dataset:
    return xr.Dataset({"soc": (("site",), np.full(3, value), {"units": "g C m-3"})}, coords={"site": [1, 2, 3]})


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_netcdf_round_trip(tmp_path: Path) -> None:
    p = write_netcdf_atomic(_ds(1.5), tmp_path / "sub" / "out.nc")
    assert p == tmp_path / "sub" / "out.nc"
    back = xr.load_dataset(p)
    xr.testing.assert_identical(back, _ds(1.5))
    assert _leftovers(p.parent) == []


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "out.nc"
    write_netcdf_atomic(_ds(1.0), target)
    before = target.read_bytes()
    with pytest.raises(ValueError):
        write_netcdf_atomic(_ds(2.0), target, encoding={"soc": {"not_an_encoding_key": 1}})
    with pytest.raises((TypeError, ValueError)):
        # fails inside the netCDF library, after the file was created: attrs cannot hold a dict
        write_netcdf_atomic(_ds(2.0).assign_attrs(bad={"nested": 1}), target)
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []
    # a failing first write leaves nothing behind at all
    with pytest.raises(ValueError):
        write_netcdf_atomic(_ds(2.0), tmp_path / "new.nc", encoding={"soc": {"not_an_encoding_key": 1}})
    assert not (tmp_path / "new.nc").exists()
    assert _leftovers(tmp_path) == []


def test_text_atomic(tmp_path: Path) -> None:
    p = write_text_atomic("a,b\n1,2\n", tmp_path / "t.csv")
    assert p.read_text(encoding="utf-8") == "a,b\n1,2\n"
    write_text_atomic("é\n", p)
    assert p.read_bytes() == "é\n".encode()
    assert _leftovers(tmp_path) == []


@dataclass
class _Config:
    name: str
    n_sites: int
    paths: tuple[str, ...]


def test_run_folder(tmp_path: Path) -> None:
    rf = RunFolder.create("twin-01", root=tmp_path / "runs")
    assert rf.path == tmp_path / "runs" / "twin-01" and rf.path.is_dir()
    cfg = rf.write_config(_Config("twin", 5, ("a.nc",)))
    assert yaml.safe_load(cfg.read_text(encoding="utf-8")) == {"name": "twin", "n_sites": 5, "paths": ["a.nc"]}
    rf.write_config({"nested": {"q10": np.float64(1.5)}, "grid": "clm5_20"})
    assert yaml.safe_load(cfg.read_text(encoding="utf-8")) == {"nested": {"q10": 1.5}, "grid": "clm5_20"}

    forcing = FIX / "forcing_minimal.nc"
    prov = rf.write_provenance([forcing, FIX / "wosis2023"], argv=["proda", "assimilate", "--config", "run.yml"])
    rec = json.loads(prov.read_text(encoding="utf-8"))
    assert rec["package"] == "proda-engine"
    assert rec["command_line"] == ["proda", "assimilate", "--config", "run.yml"]
    assert set(rec["versions"]) >= {"numpy", "xarray", "torch"}
    assert rec["created_utc"].endswith("+00:00")
    assert len(rec["inputs"]) == 1 + 4  # the file plus the four TSVs of the folder
    first = rec["inputs"][0]
    assert first["sha256"] == hashlib.sha256(forcing.read_bytes()).hexdigest() == sha256_file(forcing)
    assert first["bytes"] == forcing.stat().st_size
    assert rec["python"].count(".") == 2

    out = rf.write_dataset(_ds(3.0), "sites.nc")
    assert xr.load_dataset(out)["soc"].attrs["units"] == "g C m-3"


def test_run_folder_guards(tmp_path: Path) -> None:
    RunFolder.create("a", root=tmp_path)
    with pytest.raises(FileExistsError, match="already exists"):
        RunFolder.create("a", root=tmp_path)
    assert RunFolder.create("a", root=tmp_path, exist_ok=True).path == tmp_path / "a"
    for bad in ("", "../up", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="run name"):
            RunFolder.create(bad, root=tmp_path)
    rf = RunFolder.create("b", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"input file .*missing\.nc not found"):
        rf.write_provenance([tmp_path / "missing.nc"])
    assert not rf.file("provenance.json").exists()
