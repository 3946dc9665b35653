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


# -------------------------------------------------------------------------------------------------
# one atomic writer, one file mode, one version key
# -------------------------------------------------------------------------------------------------
def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_every_writer_gives_the_one_file_mode(tmp_path: Path) -> None:
    import os

    import pandas as pd

    from proda_engine.data.writers import (
        write_bytes_atomic,
        write_csv_atomic,
        write_npy_atomic,
        write_npz_atomic,
        write_product,
    )

    old = os.umask(0o027)  # a group-shared cache: group may read, others nothing
    try:
        files = [write_netcdf_atomic(_ds(1.0), tmp_path / "a.nc"), write_product(_ds(1.0), tmp_path / "p.nc"),
                 write_text_atomic("x\n", tmp_path / "a.txt"), write_bytes_atomic(b"\x00", tmp_path / "a.bin"),
                 write_csv_atomic(pd.DataFrame({"a": [1]}), tmp_path / "a.csv", index=False),
                 write_npy_atomic(np.arange(3), tmp_path / "a.npy"),
                 write_npz_atomic(tmp_path / "a.npz", x=np.arange(3))]
    finally:
        os.umask(old)
    # mkstemp alone would leave 0600: the one mode is 0666 minus the umask
    assert {p.name: _mode(p) for p in files} == {p.name: 0o640 for p in files}
    assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2]  # np.save did not append a second .npy
    with np.load(tmp_path / "a.npz") as z:
        assert z["x"].tolist() == [0, 1, 2]
    assert (tmp_path / "a.csv").read_text() == "a\n1\n"
    assert _leftovers(tmp_path) == []


def test_csv_compression_follows_the_target_suffix(tmp_path: Path) -> None:
    import gzip

    import pandas as pd

    from proda_engine.data.writers import write_csv_atomic

    p = write_csv_atomic(pd.DataFrame({"a": [1, 2]}), tmp_path / "t.csv.gz", index=False)
    assert gzip.decompress(p.read_bytes()) == b"a\n1\n2\n"


def test_a_failing_writer_leaves_no_temp_file_and_the_old_target(tmp_path: Path) -> None:
    from proda_engine.data.writers import atomic_write

    target = write_text_atomic("old\n", tmp_path / "t.txt")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old\n"
    with pytest.raises(KeyboardInterrupt):  # an interrupt cleans up too (BaseException)
        atomic_write(tmp_path / "new.txt", lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert not (tmp_path / "new.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_torch_checkpoints_go_through_the_atomic_writer(tmp_path: Path) -> None:
    import os

    import torch

    from proda_engine.learning.training import _atomic_torch_save

    old = os.umask(0o022)
    try:
        p = _atomic_torch_save({"w": torch.ones(2)}, tmp_path / "m.pt")
    finally:
        os.umask(old)
    assert _mode(p) == 0o644
    assert torch.load(p, weights_only=True)["w"].tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match="pickle"):
        _atomic_torch_save({"g": (x for x in [])}, p)  # a generator cannot be pickled: the old file stays
    assert torch.load(p, weights_only=True)["w"].tolist() == [1.0, 1.0]
    assert sorted(q.name for q in tmp_path.iterdir()) == ["m.pt"]


def test_one_version_key(tmp_path: Path) -> None:
    import proda_engine
    from proda_engine.data.writers import VERSION_KEY, read_version, version_attrs, write_product

    assert VERSION_KEY == "proda_engine_version"
    assert version_attrs() == {VERSION_KEY: proda_engine.__version__}
    assert version_attrs("proda_version") == {VERSION_KEY: proda_engine.__version__,
                                              "proda_version": proda_engine.__version__}
    with pytest.raises(ValueError, match="unknown legacy key"):
        version_attrs("version")
    # readers accept the keys of files already on users' disks
    assert read_version({"proda_version": "0.3.0"}) == "0.3.0"
    assert read_version({"package_version": "0.2.0"}) == "0.2.0"
    assert read_version({VERSION_KEY: "1.0", "proda_version": "0.3.0"}) == "1.0"
    assert read_version({"title": "x"}) is None
    ds = _ds(1.0)
    back = xr.load_dataset(write_product(ds, tmp_path / "p.nc"))
    assert back.attrs[VERSION_KEY] == proda_engine.__version__ and VERSION_KEY not in ds.attrs
    rec = json.loads(RunFolder.at(tmp_path / "my run").write_provenance([]).read_text())
    assert rec[VERSION_KEY] == rec["package_version"] == proda_engine.__version__


def test_run_folder_at_a_user_path(tmp_path: Path) -> None:
    rf = RunFolder.at(tmp_path / "out dir" / "sensitivity")
    assert rf.path.is_dir() and rf.write_config({"a": 1}).name == "config.yaml"
    assert RunFolder.at(rf.path).path == rf.path  # reusing an existing folder is fine
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        RunFolder.at(tmp_path / "f")
