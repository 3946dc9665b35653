"""Observed profiles next to the model: site locations and observed-vs-modelled SOC.

Sites take the model of their nearest valid land cell (the original method's rule); modelled SOC is
interpolated from the layer nodes to each observed horizon's mid-depth with PCHIP (spec §(i)).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from proda_engine.inference.likelihood import ObservationBatch, model_at_obs, pooled_metrics
from proda_engine.products.regions import Region
from proda_engine.products.whatif import WhatIfEngine


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Points on the unit sphere, (n, 3), for nearest-neighbour search by chord distance."""
    la, lo = np.deg2rad(np.asarray(lat, float)), np.deg2rad(np.asarray(lon, float))
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=1)


def nearest_land_cell(grid_lat: np.ndarray, grid_lon: np.ndarray, cells: np.ndarray, lat: np.ndarray,
                      lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into ``cells`` (flat row-major land cells of a lat/lon grid) of the nearest land cell of each
    site, and the great-circle distance to it in km (the original method's site-to-forcing rule)."""
    la2, lo2 = np.meshgrid(grid_lat, grid_lon, indexing="ij")
    tree = cKDTree(unit_vectors(la2.reshape(-1)[cells], lo2.reshape(-1)[cells]))
    chord, idx = tree.query(unit_vectors(lat, lon))
    return idx, 2 * 6371.0 * np.arcsin(np.minimum(chord / 2, 1.0))


@dataclass
class SiteSet:
    """Observed profiles matched to the engine's land cells."""

    profiles: pd.DataFrame  # profile_id, lat, lon, n_layers, cell, obs_topsoil_kg_m3
    observations: ObservationBatch

    @classmethod
    def from_layers(cls, layers: pd.DataFrame, engine: WhatIfEngine) -> SiteSet:
        """``layers``: the canonical table (profile_id, latitude, longitude, depth_m, soc_density g C m-3)."""
        obs = ObservationBatch.from_layers(layers)
        first = layers.drop_duplicates("profile_id").set_index("profile_id").loc[obs.profile_id]
        lat = first["latitude"].to_numpy(float)
        lon = first["longitude"].to_numpy(float)
        cell, _ = nearest_land_cell(engine.lat, engine.lon, engine.cells, lat, lon)
        return cls.from_observations(obs, lat, lon, cell)

    @classmethod
    def from_observations(cls, obs: ObservationBatch, lat: np.ndarray, lon: np.ndarray, cell: np.ndarray) -> SiteSet:
        """Sites already matched to the engine's cells (``cell`` indexes ``engine.cells``), e.g. by
        :func:`proda_engine.workflows.site_data`, so the dashboard uses the same sites as training."""
        top = obs.mask & (obs.depth <= 0.3)
        n_top = top.sum(1)
        # mean observed density of horizons above 30 cm; NaN for profiles that start deeper
        topsoil = np.where(n_top > 0, np.where(top, obs.soc, 0.0).sum(1) / np.maximum(n_top, 1), np.nan) / 1000.0
        prof = pd.DataFrame({"profile_id": obs.profile_id, "lat": lat, "lon": lon,
                             "n_layers": obs.mask.sum(1), "cell": cell, "obs_topsoil_kg_m3": topsoil})
        return cls(prof, obs)

    def in_region(self, engine: WhatIfEngine, region: Region | None) -> np.ndarray:
        """Indices of profiles whose cell lies in ``region``."""
        mask = engine.mask(region).reshape(-1)[engine.cells]
        return np.flatnonzero(mask[self.profiles["cell"].to_numpy()])

    def comparison(self, engine: WhatIfEngine, *, source: str | None = None,
                   perturbation: Mapping[str, float] | None = None, region: Region | None = None,
                   max_sites: int | None = 3000, seed: int = 0,
                   space: str = "bulk") -> tuple[pd.DataFrame, dict[str, float]]:
        """Observed vs modelled SOC per horizon (kg C m-3) for sites in ``region``, and pooled metrics
        (a bulk request is realised in ``region``, as on the map)."""
        idx = self.in_region(engine, region)
        if max_sites is not None and idx.size > max_sites:
            idx = np.sort(np.random.default_rng(seed).choice(idx, max_sites, replace=False))
        res = engine.cell_results(source or next(iter(engine.sources)), perturbation, space=space, region=region)
        cells = self.profiles["cell"].to_numpy()[idx]
        obs = self.observations.subset(idx)
        model = model_at_obs(res.soc[:, cells], engine.grid.z_node, obs.depth, obs.mask)
        m = obs.mask
        rows = pd.DataFrame({
            "profile_id": np.repeat(obs.profile_id, m.sum(1)),
            "lat": np.repeat(self.profiles["lat"].to_numpy()[idx], m.sum(1)),
            "lon": np.repeat(self.profiles["lon"].to_numpy()[idx], m.sum(1)),
            "depth_m": obs.depth[m],
            "observed_kg_m3": obs.soc[m] / 1000.0,
            "modelled_kg_m3": np.asarray(model)[m] / 1000.0,
        })
        ok = np.isfinite(rows["modelled_kg_m3"].to_numpy())
        metrics = (pooled_metrics(rows["modelled_kg_m3"].to_numpy()[ok], rows["observed_kg_m3"].to_numpy()[ok])
                   if ok.sum() > 2 else {})
        return rows, metrics
