"""Climate scenarios: forcing changes, ramps, the instant answer and the world product."""

from pathlib import Path

import numpy as np
import pytest
import torch

from proda_engine import api
from proda_engine.grid import get_grid
from proda_engine.physics import Forcing, params_from_theta
from proda_engine.physics.testing import random_forcing, random_theta
from proda_engine.products.scenarios import Scenario, steady_state_under, world_scenario
from proda_engine.products.whatif import WhatIfEngine

FIX = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "clm5" / "case.clm2.h0.clim.nc"


@pytest.fixture(scope="module")
def engine():
    ds = api.read_forcing(FIX)
    n = int(ds["valid"].sum())
    rng = np.random.default_rng(3)
    return WhatIfEngine(ds, {"proda_e2e": rng.uniform(0.3, 0.7, (n, 21)), "midpoint": np.full((n, 21), 0.5),
                             "default_clm5": "default"})


def test_ramp_and_forcing_changes(rng):
    g = get_grid()
    f = random_forcing(rng, 10, g)
    sc = Scenario(warming=2.0, npp=0.1, water=-0.2, ramp_years=100, amplification=1.0)
    assert sc.ramp(0) == 0.0 and sc.ramp(50) == 0.5 and sc.ramp(250) == 1.0
    lat = np.linspace(-80, 80, 10)
    half = sc.apply(f, 0.5, lat)
    dT = (half.tsoi - f.tsoi)[0, 0].numpy()
    assert np.allclose(dT, 1.0 * (1 + (np.abs(lat) / 90) ** 2))
    assert torch.allclose(half.inputs, f.inputs * 1.05)
    assert float(half.w_scalar.max()) <= 1.0
    assert sc.apply(f, 0.0, lat) is f
    # thaw only deepens permafrost cells' thawed months
    perma = f.alt.amax(0) <= 2.0
    deeper = half.altmax - f.altmax
    assert bool((deeper[:, ~perma] == 0).all())
    assert bool((deeper[f.altmax > 0][perma.expand_as(f.altmax)[f.altmax > 0]] > 0).all())


def test_steady_state_under_warming_and_npp(rng):
    g = get_grid()
    f = random_forcing(rng, 20, g)
    p = params_from_theta(random_theta(rng, 20))
    base = steady_state_under(Scenario(), p, f, g).soc.sum(0)
    warm = steady_state_under(Scenario(warming=2.0, thaw_per_kelvin=0.0), p, f, g).soc.sum(0)
    more = steady_state_under(Scenario(npp=0.1), p, f, g).soc.sum(0)
    assert bool((warm < base).all())
    assert torch.allclose(more, 1.1 * base, rtol=1e-10)  # linear in the inputs


def test_world_scenario_zero_and_signs(engine):
    zero = world_scenario(engine, Scenario(), 3, ["midpoint"], coarsen=1)
    assert np.abs(zero["soc_change_global"].values).max() < 1e-9 * float(zero["soc_initial_global"].max())
    ds = world_scenario(engine, Scenario(warming=4.0, ramp_years=0), 3, ["midpoint", "default_clm5"], coarsen=1,
                        map_years=(1,))
    assert (ds["soc_change_global"].values < 0).all()
    assert (np.diff(ds["soc_change_global"].values, axis=1) < 0).all()
    assert (ds["soc_change_equilibrium_global"].values < ds["soc_change_global"].values[:, -1]).all()
    # regional latitude bands add up to the globe
    bands = ds["soc_change_region"].sel(region=["tropics", "temperate", "boreal_arctic"]).sum("region")
    assert np.allclose(bands.values, ds["soc_change_global"].values, rtol=1e-10)
    m = ds["soc_change_map"].sel(source="midpoint", map_year=3).values
    area = engine.area
    assert np.nansum(m * 1000 * area) / 1e15 == pytest.approx(float(ds["soc_change_global"][0, -1]), rel=1e-10)


def test_npp_only_scenario_gains_carbon(engine):
    ds = world_scenario(engine, Scenario(npp=0.1, ramp_years=2), 3, ["proda_e2e"], coarsen=1, seasonal=True)
    assert (ds["soc_change_global"].values > 0).all()
    assert float(ds["soc_change_equilibrium_global"][0]) == pytest.approx(
        0.1 * float(ds["soc_initial_global"][0]), rel=1e-8)


def test_homogeneous_source(engine):
    """'homogeneous_mean' is the across-cell mean PRODA theta everywhere."""
    ds = world_scenario(engine, Scenario(warming=1.0), 1, ["homogeneous_mean"], coarsen=1, equilibrium=False)
    assert np.isfinite(ds["soc_change_global"].values).all()


def test_uniform_forcing_defaults():
    f = Forcing.uniform(2, grid=get_grid())
    assert Scenario(warming=1.0).apply(f, 1.0).tsoi.sub(f.tsoi).eq(1.0).all()


def test_region_run_equals_the_globe_restricted_to_its_cells(engine):
    """A run on a region's cells is the same per-cell physics as the global run: its total equals
    the global run's change summed over the region (coarsen=1, so no area extrapolation)."""
    from proda_engine.products.regions import Region

    sc = Scenario(warming=2.0, npp=0.05, ramp_years=3)
    glob = world_scenario(engine, sc, 3, ["midpoint"], coarsen=1)
    mid = float(np.median(engine.lon))
    box = Region(kind="box", value=(-180.0, mid, -90.0, 90.0), label="west half")
    within = engine.mask(box).reshape(-1)[engine.cells]
    assert 0 < within.sum() < within.size
    reg = world_scenario(engine, sc, 3, ["midpoint"], coarsen=1, within=within, region_label="west half")
    assert reg.attrs["n_cells"] == int(within.sum()) and reg.attrs["selection"] == "west half"
    m = glob["soc_change_map"].sel(source="midpoint", map_year=3).values
    west = np.where(engine.mask(box), m, np.nan)
    expect = np.nansum(west * 1000 * engine.area) / 1e15
    assert float(reg["soc_change_global"][0, -1]) == pytest.approx(expect, rel=1e-10)


def test_lattice_and_auto_coarsen(engine):
    from proda_engine.products.scenarios import auto_coarsen, lattice_cells

    n = engine.cells.size
    assert lattice_cells(engine, 1).size == n
    assert auto_coarsen(engine, n) == 1
    c = auto_coarsen(engine, max(n // 3, 1))
    assert c > 1 and lattice_cells(engine, c).size <= max(n // 3, 1)
    assert lattice_cells(engine, c - 1).size > max(n // 3, 1)  # the finest lattice that fits
    with pytest.raises(ValueError, match="max_cells"):
        auto_coarsen(engine, 0)


def test_progress_reaches_one_and_counts_the_control_run(engine):
    seen: list[float] = []
    world_scenario(engine, Scenario(warming=1.0), 2, ["midpoint"], coarsen=1, seasonal=True, equilibrium=False,
                   progress=seen.append)
    assert len(seen) == 4 and seen == sorted(seen) and seen[-1] == pytest.approx(1.0)  # run + control, 2 yr each


def _write_year(tmp_path, k: int, dT: float) -> Path:
    """A CLM5 h0-style 12-month file: the fixture with every soil temperature raised by dT."""
    import xarray as xr

    with xr.open_dataset(FIX, decode_times=False) as ds:
        out = ds.load()
    out["TSOI"] = out["TSOI"] + np.float32(dT)
    path = tmp_path / f"case.clm2.h0.year{k:03d}.nc"
    out.to_netcdf(path)
    return path


def test_user_forcing_files_equal_the_same_change_as_a_scenario(engine, tmp_path):
    """A user forcing series (real netCDF files in the CLM5 history layout, read through the data
    layer) gives the same trajectory as the equivalent built-in scenario: +1 K from year 1, no thaw."""
    files = [_write_year(tmp_path, k, 1.0) for k in (1, 2)]
    sc = Scenario(warming=1.0, ramp_years=0, thaw_per_kelvin=0.0)
    ref = world_scenario(engine, sc, 3, ["midpoint"], coarsen=1)
    user = world_scenario(engine, Scenario(), 3, ["midpoint"], coarsen=1, forcing_files=files)
    np.testing.assert_allclose(user["soc_change_global"].values, ref["soc_change_global"].values, rtol=1e-6)
    assert (user["soc_change_global"].values < 0).all()  # warmer soil, faster decay
    np.testing.assert_allclose(float(user["soc_change_equilibrium_global"][0]),
                               float(ref["soc_change_equilibrium_global"][0]), rtol=1e-6)
    assert "year001" in user.attrs["forcing_files"]


def test_catalog_forcing_series_equals_the_same_change_as_a_scenario(engine, tmp_path):
    """A ``kind: forcing_series`` catalog source (one multi-year CLM5 h0 file with real noleap dates,
    grouped by calendar year) drives the run like the equivalent built-in scenario: +1 K from year 1."""
    import xarray as xr

    from proda_engine.scenario_api import ScenarioConfig, _catalog_series

    with xr.open_dataset(FIX, decode_times=False) as ds:
        base = ds.load()
    years = []
    for k in (1, 2):
        y = base.copy()
        y["TSOI"] = y["TSOI"] + np.float32(1.0)
        y = y.assign_coords(time=base["time"] + 365.0 * k)
        y["time"].attrs.update(base["time"].attrs)
        y["time_bounds"] = y["time_bounds"] + 365.0 * k
        years.append(y)
    xr.concat(years, "time", data_vars="minimal").to_netcdf(tmp_path / "future.nc")
    cat = tmp_path / "cat.yaml"
    cat.write_text("version: 1\nsources:\n  future:\n    kind: forcing_series\n    paths: [future.nc]\n"
                   "  clim:\n    kind: forcing\n    paths: [future.nc]\n")
    series = _catalog_series("future", cat, engine.forcing.n_layers)
    assert len(series) == 2 and series.grouping == "calendar year"
    sc = Scenario(warming=1.0, ramp_years=0, thaw_per_kelvin=0.0)
    ref = world_scenario(engine, sc, 3, ["midpoint"], coarsen=1)
    user = world_scenario(engine, Scenario(), 3, ["midpoint"], coarsen=1, forcing_series=series)
    np.testing.assert_allclose(user["soc_change_global"].values, ref["soc_change_global"].values, rtol=1e-6)
    assert user.attrs["forcing_source"] == "future" and "2 years; calendar year" in user.attrs["forcing_years"]
    with pytest.raises(ValueError, match=r"'clim'.*expected kind 'forcing_series'.*found 'forcing'"):
        _catalog_series("clim", cat, engine.forcing.n_layers)
    with pytest.raises(ValueError, match="forcing_files or forcing_source, not both"):
        ScenarioConfig(forcing_files=["a.nc"], forcing_source="future")


def test_scenario_config_validation(tmp_path):
    from proda_engine.scenario_api import ScenarioConfig

    good = tmp_path / "ok.yaml"
    good.write_text("warming: 2\nnpp: 0.1\nsource: proda_e2e,default_clm5\nyears: 10\n")
    cfg = ScenarioConfig.from_yaml(good)
    assert cfg.warming == 2.0 and cfg.source == ["proda_e2e", "default_clm5"] and cfg.years == 10
    bad = tmp_path / "bad.yaml"
    bad.write_text("warmin: 2\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*unknown scenario setting.*warmin"):
        ScenarioConfig.from_yaml(bad)
    bad.write_text("years: -3\n")
    with pytest.raises(ValueError, match="years must be a positive integer"):
        ScenarioConfig.from_yaml(bad)
    bad.write_text("warming: hot\n")
    with pytest.raises(ValueError, match="warming must be a number"):
        ScenarioConfig.from_yaml(bad)


def test_cli_scenario_from_config_writes_provenance(tmp_path):
    """`proda scenario --config run.yaml --out x.nc` on the tiny world: a readable netCDF with the
    trajectories, the maps and the validated config saved with the run; a flag overrides the file."""
    import json

    import xarray as xr

    from proda_engine.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text("world: tiny\nwarming: 2.0\nnpp: 0.1\nyears: 3\nsource: [midpoint, default_clm5]\ncoarsen: 1\n")
    out = tmp_path / "scen.nc"
    assert main(["scenario", "--config", str(cfg), "--years", "4", "--out", str(out)]) == 0
    with xr.open_dataset(out) as ds:
        assert ds.sizes["year"] == 4 and list(ds.source.values) == ["midpoint", "default_clm5"]
        saved = json.loads(ds.attrs["config"])
        assert saved["warming"] == 2.0 and saved["years"] == 4 and saved["world"] == "tiny"
        assert np.isfinite(ds["soc_change_global"].values).all()
        assert "soc_change_map" in ds and ds.attrs["proda_engine_version"]
    assert not list(tmp_path.glob("*.tmp*"))  # written to a temporary name, then renamed


def test_cli_scenario_writes_the_validated_config_next_to_the_output(tmp_path):
    """`proda scenario` saves the merged config (file + flags) as <out>.config.yaml; loading it reproduces
    the run's settings."""
    import json

    import xarray as xr

    from proda_engine.cli import main
    from proda_engine.scenario_api import ScenarioConfig

    out = tmp_path / "scen.nc"
    assert main(["scenario", "--world", "tiny", "--warming", "1", "--years", "2", "--source", "midpoint",
                 "--coarsen", "2", "--map-years", "--no-equilibrium", "--out", str(out)]) == 0
    saved = ScenarioConfig.from_yaml(tmp_path / "scen.config.yaml")
    with xr.open_dataset(out) as ds:
        assert saved.to_dict() == json.loads(ds.attrs["config"])
    assert (saved.world, saved.warming, saved.years, saved.source, saved.coarsen, saved.equilibrium) == \
        ("tiny", 1.0, 2, ["midpoint"], 2, False)


def test_scenario_ensemble_members_and_spread(tmp_path):
    """ensemble=True runs every member of a source with an ensemble product and reports the s.d."""
    import xarray as xr

    from proda_engine.data.world import ensure_world
    from proda_engine.scenario_api import scenario

    root = ensure_world("tiny").root
    path = root / "products" / "theta_twin_truth_members.nc"
    if not path.exists():
        with xr.open_dataset(root / "truth_parameters.nc") as ds:
            theta = ds["theta"].load()
        rng = np.random.default_rng(0)
        ens = xr.concat([(theta + 0.05 * rng.standard_normal(theta.shape)).clip(0.01, 0.97) for _ in range(3)],
                        dim="member").assign_coords(member=np.arange(3))
        path.parent.mkdir(exist_ok=True)
        xr.Dataset({"theta": ens}).to_netcdf(path)
    ds = scenario("tiny", warming=2.0, years=3, source=["twin_truth", "midpoint"], coarsen=1, ensemble=True)
    names = [str(s) for s in ds.source.values]
    members = [n for n in names if n.startswith("twin_truth#m")]
    assert len(members) >= 2 and "midpoint" in names
    sd = ds["soc_change_global_ensemble_sd"].sel(ensemble_source="twin_truth").values
    expect = ds["soc_change_global"].sel(source=members).std("source", ddof=1).values
    np.testing.assert_allclose(sd, expect)
    assert (sd > 0).all() and list(ds["ensemble_source"].values) == ["twin_truth"]
