"""What the product commands leave on disk: one version key in every product, one file mode, the
figures drawn by proda_engine.plot beside the tables, a run record where a command writes a folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import xarray as xr
import yaml

import proda_engine
from proda_engine.cli import main
from proda_engine.data.writers import VERSION_KEY, read_version

FIX = Path(__file__).resolve().parents[1] / "data" / "fixtures"
CLIM = FIX / "clm5" / "case.clm2.h0.clim.nc"


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640  # the one file mode under this umask: 0666 & ~027
    os.umask(old)


def _check_folder(folder: Path, mode: int) -> dict[str, Path]:
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    assert files and not [n for n in files if n.endswith(".tmp")]
    assert {n: p.stat().st_mode & 0o777 for n, p in files.items()} == dict.fromkeys(files, mode)
    for name, p in files.items():
        if name.endswith(".nc"):
            with xr.open_dataset(p) as ds:
                assert ds.attrs.get(VERSION_KEY) == proda_engine.__version__, name
                assert read_version(ds.attrs) == proda_engine.__version__
    return files


def test_map_with_reference_files(world, tmp_path, umask_027):
    out = tmp_path / "map.nc"
    assert main(["map", "--world", "tiny", "--reference", "--out", str(out)]) == 0
    files = _check_folder(tmp_path, umask_027)
    assert set(files) == {"map.nc", "map_totals.csv", "map_groups.csv", "map_reference.csv",
                          "map_reference_regions.csv", "map_reference.nc", "map_reference.png"}
    assert files["map_reference.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with xr.open_dataset(out) as ds:
        assert ds.attrs["proda_version"] == ds.attrs[VERSION_KEY]  # gridded products kept their old key too


def test_sensitivity_run_folder(world, tmp_path, umask_027):
    out = tmp_path / "sens"
    assert main(["sensitivity", "--world", "tiny", "--depth", "0-30cm", "--out", str(out)]) == 0
    files = _check_folder(out, umask_027)
    assert {"sensitivity_plus1pct.png", "sensitivity_curves.png", "sensitivity_curves.nc", "config.yaml",
            "provenance.json"} <= set(files)
    cfg = yaml.safe_load(files["config.yaml"].read_text())
    assert cfg["world"] == "tiny" and cfg["depth"] == "0-30cm" and cfg["out"] == str(out)
    prov = json.loads(files["provenance.json"].read_text())
    assert prov[VERSION_KEY] == proda_engine.__version__ and prov["command_line"]


def test_simulate_product(tmp_path, umask_027):
    out = tmp_path / "sim.nc"
    assert main(["simulate", "--forcing", str(CLIM), "--preset", "midpoint", "--out", str(out)]) == 0
    _check_folder(tmp_path, umask_027)
    with xr.open_dataset(out) as ds:
        assert "proda_version" not in ds.attrs  # new single-file products carry only the one key


def test_products_do_not_draw(world, tmp_path):
    from proda_engine.products.reference import write_reference_comparison

    with pytest.raises(ValueError, match=r"call proda_engine\.plot\.write_reference_figure"):
        write_reference_comparison(xr.Dataset(), world, tmp_path / "m.nc", plot=True)
    assert list(tmp_path.iterdir()) == []
