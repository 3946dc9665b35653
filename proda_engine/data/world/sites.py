"""The site sampler: WoSIS-like soil-profile sites (clustered surveys, continent weights, accessibility)
and their horizon layouts on a built world's land cells (:func:`sample_sites`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from proda_engine.data.world.base import named_rng
from proda_engine.data.world.tables import CONTINENT_WEIGHTS, DEFAULT_SITES, GLOBE_LAND_CELLS

#: Horizon names by number of horizons in a profile (WoSIS-like designations).
HORIZON_NAMES: dict[int, list[str]] = {
    3: ["A", "B", "C"],
    4: ["A", "AB", "B", "C"],
    5: ["Ap", "A2", "Bw", "BC", "C"],
    6: ["A1", "A2", "AB", "Bt", "BC", "C"],
    7: ["A1", "A2", "AB", "Bt1", "Bt2", "BC", "C"],
    8: ["Oa", "A1", "A2", "AB", "Bt1", "Bt2", "BC", "C"],
}


def accessibility(covariates: xr.Dataset, clat: np.ndarray) -> np.ndarray:
    """Relative chance of a survey centre per cell: WoSIS is thin in the far north (x0.15 beyond 60
    degrees), on bare land (x0.2) and ice (x0.02); proportional to the cell area (m2 / 3e9)."""
    acc = np.ones(clat.shape)
    acc *= np.where(np.abs(clat) > 60, 0.15, 1.0)
    lc = np.nan_to_num(covariates["ESA_Land_Cover"].values)
    acc *= np.where(lc == 22, 0.02, np.where(lc == 20, 0.2, 1.0))
    acc *= np.nan_to_num(covariates["cell_area"].values) / 3e9
    return acc


def survey_points(rng: np.random.Generator, covariates: xr.Dataset, valid: np.ndarray, clat: np.ndarray,
                  clon: np.ndarray, n_sites: int) -> np.ndarray:
    """``n_sites`` points (lat, lon degrees, continent) in clustered surveys, continent by continent.

    Per continent (:data:`CONTINENT_WEIGHTS`, renormalised over those present), ~25 sites per survey;
    centres drawn by :func:`accessibility`, survey sizes Dirichlet(0.8)-multinomial, Gaussian scatter
    of 0.3-1.5 degrees around each centre.
    """
    cont = np.where(valid, np.nan_to_num(covariates["continent"].values), 0).astype(int)
    acc = accessibility(covariates, clat)
    present = {c: w for c, w in CONTINENT_WEIGHTS.items() if w > 0 and np.any(valid & (cont == c))}
    if not present:  # a region without labelled continents: one pool
        present = {int(np.bincount(cont[valid]).argmax()): 1.0}
    wsum = sum(present.values())
    counts = rng.multinomial(n_sites, [w / wsum for w in present.values()])
    rows = []
    for c, n_c in zip(present, counts):
        if n_c == 0:
            continue
        cells = np.flatnonzero(valid & (cont == c))
        wts = acc.reshape(-1)[cells]
        wts = wts / wts.sum()
        n_clusters = max(1, n_c // 25)
        centres = rng.choice(cells, size=n_clusters, p=wts)
        sizes = rng.multinomial(n_c, rng.dirichlet(np.full(n_clusters, 0.8)))
        spread = rng.uniform(0.3, 1.5, size=n_clusters)
        for cc, k, sp in zip(centres, sizes, spread):
            if k == 0:
                continue
            la0, lo0 = clat.reshape(-1)[cc], clon.reshape(-1)[cc]
            pts_lat = np.clip(la0 + sp * rng.standard_normal(k), -89.9, 89.9)
            pts_lon = (lo0 + sp * rng.standard_normal(k) + 180.0) % 360.0 - 180.0
            rows.append(np.column_stack([pts_lat, pts_lon, np.full(k, c)]))
    return np.concatenate(rows)


def _unit_vectors(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Points on the unit sphere (n, 3), so chord distance orders like great-circle distance."""
    la, lo = np.deg2rad(lat_deg), np.deg2rad(lon_deg)
    return np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])


def snap_to_land(rng: np.random.Generator, pts: np.ndarray, valid: np.ndarray, clat: np.ndarray, clon: np.ndarray,
                 dres: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Snap each point to the nearest valid land cell (points that fell in the sea move to the coast).

    Returns the flat cell index and the site latitude / longitude (degrees): the point itself, or, if
    it lies more than half a cell (``dres`` degrees) from its cell, a uniform position inside that cell.
    """
    from scipy.spatial import cKDTree

    flat_valid = np.flatnonzero(valid)
    tree = cKDTree(_unit_vectors(clat.reshape(-1)[flat_valid], clon.reshape(-1)[flat_valid]))
    _, nn = tree.query(_unit_vectors(pts[:, 0], pts[:, 1]))
    cell = flat_valid[nn]
    cell_lat, cell_lon = clat.reshape(-1)[cell], clon.reshape(-1)[cell]
    # a point far from its snapped cell is moved inside that cell
    far = (np.abs(pts[:, 0] - cell_lat) > dres / 2) | (np.abs(((pts[:, 1] - cell_lon + 180) % 360) - 180) > dres / 2)
    jitter = rng.uniform(-0.45, 0.45, size=(pts.shape[0], 2)) * dres
    site_lat = np.where(far, cell_lat + jitter[:, 0], pts[:, 0])
    site_lon = np.where(far, cell_lon + jitter[:, 1], pts[:, 1])
    return cell, site_lat, site_lon


def sampling_dates(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sampling year (0 = unknown) and ISO date ("" = unknown) of ``n`` sites: ~66 % dated, years
    ~N(1988, 14) within 1940..2019, months March-October."""
    has_date = rng.random(n) < 0.66
    year = np.where(has_date, np.clip(np.round(rng.normal(1988, 14, n)), 1940, 2019), 0).astype(int)
    month = rng.integers(3, 11, n)
    day = rng.integers(1, 29, n)
    date = np.where(has_date, [f"{y:04d}-{m:02d}-{d:02d}" for y, m, d in zip(year, month, day)], "")
    return year, date


def horizon_layout(rng: np.random.Generator, bedrock_cm: np.ndarray) -> pd.DataFrame:
    """Contiguous horizons of each site (profile ids 1..n), depths in cm.

    Maximum depth ~ gamma(3.2, mean 117 cm), capped by the depth to bedrock ``bedrock_cm`` (at least
    25 cm), clipped to 20..400 cm and rounded to 5 cm; 3-8 horizons (more in deeper profiles) with
    breaks on sorted uniforms^1.5 (thin near the surface). Columns ``profile_id, profile_layer_id,
    layer_index, upper_depth, lower_depth, layer_name``.
    """
    n = bedrock_cm.size
    max_depth = rng.gamma(3.2, 117.0 / 3.2, n)
    max_depth = np.clip(np.minimum(max_depth, np.maximum(bedrock_cm, 25.0)), 20.0, 400.0)
    max_depth = np.maximum(np.round(max_depth / 5.0) * 5.0, 20.0)
    n_hor = np.clip(np.round(3 + (max_depth / 200.0) * 3 + rng.normal(0, 1.0, n)), 3, 8).astype(int)
    hz = []
    layer_id = 0
    for s in range(n):
        k = n_hor[s]
        # breaks: thin horizons near the surface, thicker below (power law on sorted uniforms)
        u = np.sort(rng.random(k - 1)) ** 1.5
        b = np.unique(np.round(np.concatenate([[0.0], u * max_depth[s], [max_depth[s]]])))
        if b.size < 4:
            b = np.round(np.linspace(0, max_depth[s], 4))
        names = HORIZON_NAMES.get(b.size - 1, [f"H{i + 1}" for i in range(b.size - 1)])
        for h in range(b.size - 1):
            layer_id += 1
            hz.append((s + 1, layer_id, h + 1, b[h], b[h + 1], names[h] if h < len(names) else f"H{h + 1}"))
    return pd.DataFrame(
        hz, columns=["profile_id", "profile_layer_id", "layer_index", "upper_depth", "lower_depth", "layer_name"]
    )


def sample_sites(covariates: xr.Dataset, n_sites: int | None = None,
                 seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """WoSIS-like soil-profile sites and horizon layouts on the world's land cells.

    Sites are drawn continent by continent with the WoSIS 2019 weights (:data:`CONTINENT_WEIGHTS`,
    renormalised over the continents present), in clusters ("surveys", ~25 sites, 0.3-1.5 degree
    scatter) whose centres favour temperate, accessible land (fewer in the far north, deserts and ice).
    Each site gets 3-8 contiguous horizons to a maximum depth with median ~110 cm (gamma, shape 3.2,
    capped by the depth to bedrock) and a sampling date for ~66 %.

    Returns:
        sites: ``profile_id, latitude, longitude, cell_lat, cell_lon, continent, country_num, year,
        date, geom_accuracy, dsds`` (one row per site).
        horizons: ``profile_id, profile_layer_id, layer_index, upper_depth, lower_depth, layer_name``
        (cm).
    """
    rng = named_rng(seed, "sites")
    lat = covariates["lat"].values
    lon = covariates["lon"].values
    valid = np.isfinite(covariates["cell_area"].values)
    if n_sites is None:
        # WoSIS-like density: ~50,000 sites on the 61,604 land cells of the globe; a regional world
        # gets its share, at least 50 sites.
        n_sites = int(max(50, round(DEFAULT_SITES * int(valid.sum()) / GLOBE_LAND_CELLS)))
    clat, clon = np.meshgrid(lat, lon, indexing="ij")
    pts = survey_points(rng, covariates, valid, clat, clon, n_sites)
    dres = float(abs(lat[1] - lat[0])) if lat.size > 1 else 0.5
    cell, site_lat, site_lon = snap_to_land(rng, pts, valid, clat, clon, dres)
    cell_lat, cell_lon = clat.reshape(-1)[cell], clon.reshape(-1)[cell]
    n = site_lat.size
    acc_class = rng.choice([0.01, 0.1, 1.0], size=n, p=[0.86, 0.132, 0.008])
    year, date = sampling_dates(rng, n)
    bedrock_cm = np.nan_to_num(covariates["Abs_Depth_to_Bedrock"].values.reshape(-1)[cell], nan=1000.0)
    horizons = horizon_layout(rng, bedrock_cm)
    dsds = horizons.groupby("profile_id")["lower_depth"].max().reindex(np.arange(1, n + 1)).to_numpy()
    country = (
        np.nan_to_num(covariates["country"].values.reshape(-1)[cell]).astype(int)
        if "country" in covariates
        else np.zeros(n, int)
    )
    sites = pd.DataFrame(
        {
            "profile_id": np.arange(1, n + 1),
            "latitude": np.round(site_lat, 5),
            "longitude": np.round(site_lon, 5),
            "cell_lat": cell_lat,
            "cell_lon": cell_lon,
            "cell_index": cell,
            "continent": np.nan_to_num(covariates["continent"].values.reshape(-1)[cell]).astype(int),
            "country_num": country,
            "year": year,
            "date": date,
            "geom_accuracy": acc_class,
            "dsds": dsds,
        }
    )
    return sites, horizons
