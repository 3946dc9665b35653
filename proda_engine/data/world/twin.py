"""Twin observations: the hidden truth observed as a WoSIS 2019 snapshot. Each site's land cell is solved
to steady state by an injected solver (this package never imports :mod:`proda_engine.physics`), SOC is
interpolated to the horizons, given measurement noise and written as the three WoSIS 2019 TSVs
(:func:`make_twin_profiles`, :func:`write_wosis2019`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from proda_engine.data.forcing import read_forcing
from proda_engine.data.world.base import named_rng
from proda_engine.data.world.tables import COUNTRIES_JSON, GRID_NAME, SOIL_DEPTHS_CM, WorldPaths
from proda_engine.data.writers import atomic_write
from proda_engine.grid import get_grid

#: ``solver(theta (C, 21), forcing_dataset) -> soc (L, C) g C m-3``; the forcing dataset is the
#: normalised forcing (read_forcing) of the C cells stacked on a ``site`` dimension.
Solver = Callable[[np.ndarray, xr.Dataset], np.ndarray]

CHEM_PROPS = ("orgc", "phaq", "cecph7")
PHYS_PROPS = ("bdfiod", "cfvo", "clay", "sand", "silt")
PROFILE_COLUMNS_2019 = [
    "profile_id",
    "dataset_id",
    "country_id",
    "country_name",
    "geom_accuracy",
    "latitude",
    "longitude",
    "dsds",
    "cfao_version",
    "cfao_major_group_code",
    "cfao_major_group",
    "cfao_soil_unit_code",
    "cfao_soil_unit",
    "cwrb_version",
    "cwrb_reference_soil_group_code",
    "cwrb_reference_soil_group",
    "cwrb_prefix_qualifier",
    "cwrb_suffix_qualifier",
    "cstx_version",
    "cstx_order_name",
    "cstx_suborder",
    "cstx_great_group",
    "cstx_subgroup",
]
PROP_SUFFIXES = ("value", "value_avg", "method", "date", "dataset_id", "profile_code", "license")
METHODS = {
    "orgc": "{1:'sample pretreatment: sieved over 2 mm size; detection: dry combustion'}",
    "phaq": "{1:'sample pretreatment: sieved over 2 mm size; solution: water; ratio: 1:2.5'}",
    "cecph7": "{1:'sample pretreatment: sieved over 2 mm size; solution: ammonium acetate; ph: 7'}",
    "bdfiod": "{1:'sample type: undisturbed core; oven dry'}",
    "cfvo": "{1:'field estimate'}",
    "clay": "{1:'sieve and pipette; dispersion: sodium hexametaphosphate'}",
    "sand": "{1:'sieve and pipette; dispersion: sodium hexametaphosphate'}",
    "silt": "{1:'sieve and pipette; dispersion: sodium hexametaphosphate'}",
}


def interpolate_soc(
    soc_nodes: np.ndarray, depth_m: np.ndarray, z_node: np.ndarray | None = None, column: np.ndarray | None = None
) -> np.ndarray:
    """SOC density at given depths by PCHIP in depth through the layer nodes.

    Args:
        soc_nodes: (L,) or (L, C) SOC density at the node depths, g C m-3.
        depth_m: depths to evaluate, m (clipped to the node range: above the first node the top
            value holds, below the last the bottom value).
        z_node: node depths, m (default: clm5_20).
        column: for (L, C) input, the column (cell) of each depth; default column 0.

    PCHIP keeps the profile monotone between nodes and never overshoots into negative values.
    Evaluated from the piecewise-cubic coefficients, so many profiles cost one vector operation.
    """
    from scipy.interpolate import PchipInterpolator

    z = get_grid(GRID_NAME).z_node if z_node is None else np.asarray(z_node)
    y = np.asarray(soc_nodes, dtype=float)
    y2 = y[:, None] if y.ndim == 1 else y
    c = PchipInterpolator(z, y2, axis=0, extrapolate=False).c  # (4, L-1, C)
    d = np.clip(np.asarray(depth_m, dtype=float), z[0], z[-1])
    k = np.clip(np.searchsorted(z, d, side="right") - 1, 0, z.size - 2)
    col = np.zeros(d.shape, dtype=int) if column is None else np.asarray(column)
    dx = d - z[k]
    val = ((c[0, k, col] * dx + c[1, k, col]) * dx + c[2, k, col]) * dx + c[3, k, col]
    return np.maximum(val, 0.0)


def lognormal_noise(values: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative, mean-preserving log-normal noise: x exp(sd eps - sd^2/2), eps ~ N(0, 1)."""
    return values * np.exp(sd * rng.standard_normal(values.shape) - 0.5 * sd * sd)


def _braced(v: np.ndarray, fmt: str = "{:.1f}") -> list[str]:
    """WoSIS 2019 value cells: ``{1:<value>}`` per finite value, empty where not measured."""
    return ["" if not np.isfinite(x) else "{1:" + fmt.format(x) + "}" for x in v]


def write_wosis2019(
    out_dir: str | os.PathLike,
    sites: pd.DataFrame,
    horizons: pd.DataFrame,
    props: dict[str, np.ndarray],
    *,
    countries: dict[str, list[str]] | None = None,
    dataset_id: str = "PRODA-TWIN",
) -> dict[str, Path]:
    """Write sites and horizon properties as a WoSIS 2019 snapshot (three TSVs).

    Args:
        out_dir: folder for ``wosis_201909_profiles.tsv``, ``wosis_201909_layers_chemical.tsv`` and
            ``wosis_201909_layers_physical.tsv``.
        sites: output of :func:`sample_sites` (``profile_id, latitude, longitude, country_num,
            geom_accuracy, dsds, date``).
        horizons: one row per layer with ``profile_id, profile_layer_id, upper_depth, lower_depth,
            layer_name`` and ``litter`` (bool); negative depths for litter layers.
        props: per-layer arrays (same order as ``horizons``) for ``orgc`` (g kg-1), ``phaq`` (pH),
            ``cecph7`` (cmol(c) kg-1), ``bdfiod`` (kg dm-3), ``cfvo`` (vol %), ``clay``/``sand``/``silt``
            (%); NaN = not measured.
        countries: ISO numeric (text) -> [alpha-2, name] (default: assets/world/countries.json).

    Columns follow the WoSIS 2019 snapshot (Batjes et al. 2020): 7 columns per property
    (``xxxx_value`` as ``{1:v}``, ``xxxx_value_avg``, ``xxxx_method``, ``xxxx_date``,
    ``xxxx_dataset_id``, ``xxxx_profile_code``, ``xxxx_license``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if countries is None:
        countries = json.loads(COUNTRIES_JSON.read_text(encoding="utf-8")) if COUNTRIES_JSON.exists() else {}
    cn = [countries.get(str(int(c)), ["", ""]) for c in sites["country_num"]]
    acc = sites["geom_accuracy"].to_numpy()
    decimals = np.where(acc >= 1, 0, np.where(acc >= 0.1, 1, 2))
    lat = np.array([round(v, int(d)) for v, d in zip(sites["latitude"], decimals)])
    lon = np.array([round(v, int(d)) for v, d in zip(sites["longitude"], decimals)])
    prof = pd.DataFrame({c: "" for c in PROFILE_COLUMNS_2019}, index=range(len(sites)))
    prof["profile_id"] = sites["profile_id"].to_numpy()
    prof["dataset_id"] = dataset_id
    prof["country_id"] = [c[0] for c in cn]
    prof["country_name"] = [c[1] for c in cn]
    prof["geom_accuracy"] = acc
    prof["latitude"] = lat
    prof["longitude"] = lon
    prof["dsds"] = sites["dsds"].to_numpy()
    date_of = dict(zip(sites["profile_id"], sites["date"].fillna("")))

    def layer_table(names: tuple[str, ...]) -> pd.DataFrame:
        t = pd.DataFrame(
            {
                "profile_id": horizons["profile_id"].to_numpy(),
                "profile_layer_id": horizons["profile_layer_id"].to_numpy(),
                "upper_depth": horizons["upper_depth"].to_numpy(),
                "lower_depth": horizons["lower_depth"].to_numpy(),
                "layer_name": horizons["layer_name"].to_numpy(),
                "litter": np.where(horizons["litter"].to_numpy(), "t", "f"),
            }
        )
        dates = np.array([date_of.get(p, "") for p in t["profile_id"]], dtype=object)
        for pname in names:
            v = np.asarray(props[pname], dtype=float)
            ok = np.isfinite(v)
            t[f"{pname}_value"] = _braced(v, "{:.2f}" if pname in ("bdfiod", "phaq") else "{:.1f}")
            t[f"{pname}_value_avg"] = np.where(ok, np.round(v, 3), np.nan)
            t[f"{pname}_method"] = np.where(ok, METHODS[pname], "")
            t[f"{pname}_date"] = np.where(ok & (dates != ""), ["{1:" + d + "}" if d else "" for d in dates], "")
            t[f"{pname}_dataset_id"] = np.where(ok, dataset_id, "")
            t[f"{pname}_profile_code"] = np.where(ok, [f"{dataset_id}-{p}" for p in t["profile_id"]], "")
            t[f"{pname}_license"] = np.where(ok, "CC-BY", "")
        return t

    files = {
        "profiles": out / "wosis_201909_profiles.tsv",
        "chemical": out / "wosis_201909_layers_chemical.tsv",
        "physical": out / "wosis_201909_layers_physical.tsv",
    }
    atomic_write(files["profiles"], partial(prof.to_csv, index=False, sep="\t", quoting=0, na_rep=""))
    atomic_write(files["chemical"], partial(layer_table(CHEM_PROPS).to_csv, index=False, sep="\t", na_rep=""))
    atomic_write(files["physical"], partial(layer_table(PHYS_PROPS).to_csv, index=False, sep="\t", na_rep=""))
    return files


def _site_property(cov: xr.Dataset, stem: str, cells: np.ndarray, depth_cm: np.ndarray) -> np.ndarray:
    """A 0/30/100-cm covariate (e.g. ``Bulk_Density``) at each layer's cell, linear in depth."""
    vals = np.stack([cov[f"{stem}_{d}cm"].values.reshape(-1)[cells] for d in SOIL_DEPTHS_CM])  # (3, n)
    d = np.clip(depth_cm, 0, 100)
    w30 = d <= 30
    a = np.where(w30, vals[0] + (vals[1] - vals[0]) * d / 30.0, vals[1] + (vals[2] - vals[1]) * (d - 30.0) / 70.0)
    return a


def _solve_site_cells(world_paths: WorldPaths, cov: xr.Dataset, sites: pd.DataFrame,
                      solver: Solver) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """Solve the truth of every distinct land cell holding a site.

    Returns the flat cell index of each site on the region grid, the index of each site's cell among
    the solved cells, their SOC (L, C) in g C m-3 and the solver's status (None if it returns none).
    """
    truth = xr.open_dataset(world_paths.truth).load()
    fds = read_forcing(world_paths.forcing)
    nlon = cov.sizes["lon"]
    lat = cov["lat"].values
    lon = cov["lon"].values
    # cell index on the (region) grid of each site
    ci = np.searchsorted(lat, sites["cell_lat"].to_numpy() - 1e-6)
    cj = np.searchsorted(lon, sites["cell_lon"].to_numpy() - 1e-6)
    cells = ci * nlon + cj
    ucells, inv = np.unique(cells, return_inverse=True)
    ui, uj = ucells // nlon, ucells % nlon
    site_dim = xr.DataArray(np.arange(ucells.size), dims="site")
    sub = fds.isel(lat=xr.DataArray(ui, dims="site"), lon=xr.DataArray(uj, dims="site")).assign_coords(site=site_dim)
    theta = truth["theta"].values[:, ui, uj].T  # (C, 21)
    out = solver(theta, sub)
    soc_cells, status = out if isinstance(out, tuple) else (out, None)
    return cells, inv, np.asarray(soc_cells), status


def observed_properties(rng: np.random.Generator, cov: xr.Dataset, hcell: np.ndarray, mid_cm: np.ndarray,
                        soc_obs: np.ndarray, *, missing_orgc: float, missing_bd: float) -> dict[str, np.ndarray]:
    """Measured properties of each horizon (cell ``hcell``, mid-depth ``mid_cm`` cm) for the WoSIS tables.

    Bulk density (kg dm-3, x exp(0.05 eps), 0.3..2.2) and coarse fragments (vol %, x exp(0.2 eps), 0..90)
    scatter around the cell's covariates; ``orgc`` (g kg-1) = SOC / (BD x 1000 x (1 - cfvo/100)) from
    the noisy SOC density ``soc_obs`` (g C m-3); pH +- 0.2, CEC x exp(0.15 eps); texture as the cell's;
    a fraction ``missing_orgc`` / ``missing_bd`` of orgc / BD values is blanked (NaN).
    """
    bd = np.clip(
        _site_property(cov, "Bulk_Density", hcell, mid_cm) / 1000.0 * np.exp(0.05 * rng.standard_normal(mid_cm.size)),
        0.3,
        2.2,
    )
    cf = np.clip(
        _site_property(cov, "Coarse_Fragments_v", hcell, mid_cm) * np.exp(0.2 * rng.standard_normal(mid_cm.size)),
        0.0,
        90.0,
    )
    orgc = soc_obs / (bd * 1000.0 * (1.0 - cf / 100.0))
    props = {
        "orgc": orgc,
        "bdfiod": bd,
        "cfvo": cf,
        "phaq": _site_property(cov, "pH_Water", hcell, mid_cm) + 0.2 * rng.standard_normal(mid_cm.size),
        "cecph7": _site_property(cov, "CEC", hcell, mid_cm) * np.exp(0.15 * rng.standard_normal(mid_cm.size)),
        "clay": _site_property(cov, "Clay_Content", hcell, mid_cm),
        "sand": _site_property(cov, "Sand_Content", hcell, mid_cm),
        "silt": _site_property(cov, "Silt_Content", hcell, mid_cm),
    }
    props["silt"] = 100.0 - props["clay"] - props["sand"]
    props["orgc"] = np.where(rng.random(orgc.size) < missing_orgc, np.nan, props["orgc"])
    props["bdfiod"] = np.where(rng.random(orgc.size) < missing_bd, np.nan, props["bdfiod"])
    return props


def add_litter_layers(rng: np.random.Generator, profile_ids: np.ndarray, hz: pd.DataFrame,
                      props: dict[str, np.ndarray], litter_fraction: float
                      ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Litter layers ("Oi", 2-8 cm, negative depths, flagged) on top of ``litter_fraction`` of the
    profiles, as in real snapshots (the readers drop them); rows sorted by profile and depth."""
    lit_sites = profile_ids[rng.random(profile_ids.size) < litter_fraction]
    if not lit_sites.size:
        return hz, props
    thick = rng.choice([2.0, 3.0, 5.0, 8.0], size=lit_sites.size)
    lit = pd.DataFrame(
        {
            "profile_id": lit_sites,
            "profile_layer_id": hz["profile_layer_id"].max() + 1 + np.arange(lit_sites.size),
            "layer_index": 0,
            "upper_depth": -thick,
            "lower_depth": 0.0,
            "layer_name": "Oi",
            "litter": True,
            "soc_true": np.nan,
            "soc_obs": np.nan,
        }
    )
    lit_props = {
        "orgc": rng.uniform(250, 450, lit_sites.size),
        "bdfiod": np.full(lit_sites.size, np.nan),
        "cfvo": np.full(lit_sites.size, np.nan),
        "phaq": rng.uniform(4.0, 6.0, lit_sites.size),
        "cecph7": np.full(lit_sites.size, np.nan),
        "clay": np.full(lit_sites.size, np.nan),
        "sand": np.full(lit_sites.size, np.nan),
        "silt": np.full(lit_sites.size, np.nan),
    }
    hz = pd.concat([hz, lit], ignore_index=True)
    props = {k: np.concatenate([props[k], lit_props[k]]) for k in props}
    order = np.lexsort((hz["upper_depth"].to_numpy(), hz["profile_id"].to_numpy()))
    return hz.iloc[order].reset_index(drop=True), {k: v[order] for k, v in props.items()}


def make_twin_profiles(
    world_paths: WorldPaths,
    solver: Solver,
    n_sites: int | None = None,
    seed: int = 0,
    *,
    noise_sd: float = 0.3,
    litter_fraction: float = 0.1,
    missing_orgc: float = 0.04,
    missing_bd: float = 0.08,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Synthetic WoSIS-2019 observations of the hidden truth (twin experiment).

    For every site: the truth ``theta`` and forcing of its land cell are solved to steady state
    (``solver``), SOC density (g C m-3) is PCHIP-interpolated from the layer nodes to each horizon's
    mid-depth, multiplied by mean-preserving log-normal noise (``noise_sd``, ~30 %), and converted to
    organic carbon with the site's synthetic bulk density and coarse fragments:
    ``orgc (g kg-1) = SOC / (BD (kg dm-3) x 1000 x (1 - cfvo/100))``. Litter layers (negative depths,
    flagged) are added to ``litter_fraction`` of profiles and some orgc / bulk-density values are
    blanked, as in real snapshots. Writes the three WoSIS 2019 TSVs to ``out_dir`` (default
    ``world_paths.wosis_dir``).

    Args:
        world_paths: a built world.
        solver: ``solver(theta (C, 21), forcing_ds) -> soc (L, C)`` in g C m-3, e.g. built on
            ``proda_engine.physics.solve_theta`` by the caller (this package cannot import physics).
        n_sites: use the first ``n_sites`` sites of the world (default: all).
        seed: seed of the observation noise.

    Returns:
        dict with ``files`` (the TSV paths), ``sites`` and ``layers`` (DataFrames with the true and
        observed SOC), ``status`` (solver status per cell, if the solver returns one) and counts.
    """
    rng = named_rng(seed, "twin")
    sites = pd.read_csv(world_paths.sites, keep_default_na=False)
    horizons = pd.read_csv(world_paths.horizons, keep_default_na=False)
    if n_sites is not None:
        sites = sites.iloc[:n_sites].copy()
        horizons = horizons[horizons["profile_id"].isin(sites["profile_id"])].copy()
    cov = xr.open_dataset(world_paths.covariates).load()
    cells, inv, soc_cells, status = _solve_site_cells(world_paths, cov, sites, solver)

    # horizons -> mid-depth SOC, noise, orgc
    prof_of_row = horizons["profile_id"].to_numpy()
    site_row = pd.Series(np.arange(len(sites)), index=sites["profile_id"].to_numpy())[prof_of_row].to_numpy()
    up = horizons["upper_depth"].to_numpy(dtype=float)
    lo = horizons["lower_depth"].to_numpy(dtype=float)
    mid_m = 0.5 * (up + lo) / 100.0
    soc_true = interpolate_soc(soc_cells, mid_m, column=inv[site_row])
    soc_obs = lognormal_noise(soc_true, noise_sd, rng)
    props = observed_properties(rng, cov, cells[site_row], 0.5 * (up + lo), soc_obs,
                                missing_orgc=missing_orgc, missing_bd=missing_bd)
    hz = horizons.assign(litter=False, soc_true=soc_true, soc_obs=soc_obs)
    hz, props = add_litter_layers(rng, sites["profile_id"].to_numpy(), hz, props, litter_fraction)
    dest = Path(out_dir) if out_dir is not None else world_paths.wosis_dir
    files = write_wosis2019(dest, sites, hz, props)
    return {
        "files": files,
        "sites": sites,
        "layers": hz.assign(**{f"obs_{k2}": v for k2, v in props.items()}),
        "status": status,
        "n_sites": len(sites),
        "n_layers": int((~hz["litter"]).sum()),
        "n_litter_layers": int(hz["litter"].sum()),
    }
