"""The sites of a data-assimilation run: observed profiles matched to the forcing, every skip counted.

:func:`load_sites` reads the profiles and the forcing named by an :class:`AssimilateConfig` (files or
catalog sources), preprocesses the layers into a padded :class:`ObservationBatch` (spec §(k)), samples the
forcing at each profile's nearest valid cell and returns a :class:`SiteData`. Both the site-level pipeline
(:mod:`.pipeline`) and batch assimilation (:mod:`.batch_da`) start from it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from proda_engine.data import load_catalog, read_forcing, read_profiles, sample_nearest_valid
from proda_engine.data.profiles import ProfileSet
from proda_engine.grid import get_grid
from proda_engine.inference.config import AssimilateConfig
from proda_engine.inference.likelihood import ObservationBatch

__all__ = ["NO_FORCING", "SiteData", "load_sites"]

#: Skip reason when the nearest valid forcing cell is too far away.
NO_FORCING = "no_forcing_cell_within_max_distance"


@dataclass
class SiteData:
    """Observations and forcing of the sites to assimilate (S sites, aligned), with counted skips.

    Attributes:
        obs: padded observations of the S sites.
        forcing: the normalised forcing sampled at each site's nearest valid cell (dim ``site`` of
            length S; coordinates ``site_lat``, ``site_lon``, ``cell_lat``, ``cell_lon``,
            ``distance_km``).
        profile_id: (S,) profile identifiers.
        skipped: stage → reason → number of profiles (``reader``, ``preprocess``, ``forcing``,
            ``max_sites``).
        n_profiles_read: profiles seen by the reader.
        inputs: the files read (for checksums).
        reader_report: the reader's full skip report (layers and profiles).
    """

    obs: ObservationBatch
    forcing: xr.Dataset
    profile_id: np.ndarray
    skipped: dict[str, dict[str, int]]
    n_profiles_read: int
    inputs: list[Path]
    reader_report: dict[str, Any] = field(default_factory=dict)

    @property
    def n_sites(self) -> int:
        return self.obs.n_profiles

    def batches(self, batch_size: int) -> list[np.ndarray]:
        """Site indices of each batch: consecutive runs of ``batch_size`` in profile order."""
        return [np.arange(s, min(s + batch_size, self.n_sites)) for s in range(0, self.n_sites, batch_size)]


def _resolve_paths(config: AssimilateConfig) -> tuple[Any, list[Path], Any, list[Path]]:
    """(profiles location, profile input files, forcing location, forcing input files)."""
    catalog = None
    if config.profiles_path is None or config.forcing_path is None:
        catalog = load_catalog(config.catalog, check_files=False)
    if config.profiles_path is not None:
        p = config.profiles_path
        p_loc: Any = [Path(x) for x in p] if isinstance(p, list) else Path(p)
        p_files = p_loc if isinstance(p_loc, list) else [p_loc]
    else:
        p_loc = ("catalog", catalog, config.profiles_source)
        p_files = catalog.source(config.profiles_source).resolved_paths()
    if config.forcing_path is not None:
        f = config.forcing_path
        f_loc: Any = [Path(x) for x in f] if isinstance(f, list) else Path(f)
        f_files = f_loc if isinstance(f_loc, list) else [f_loc]
    else:
        f_loc = ("catalog", catalog, config.forcing_source)
        f_files = catalog.source(config.forcing_source).resolved_paths()
    return p_loc, p_files, f_loc, f_files


def _read_profiles(loc: Any, layout: str | None) -> ProfileSet:
    if isinstance(loc, tuple):
        _, catalog, name = loc
        ps = catalog.open(name)
        if not isinstance(ps, ProfileSet):
            raise ValueError(f"catalog source {name!r}: expected kind 'profiles', found {catalog.source(name).kind!r}")
        return ps
    return read_profiles(loc, layout=layout)


def _read_forcing(loc: Any, grid_name: str) -> xr.Dataset:
    if isinstance(loc, tuple):
        _, catalog, name = loc
        ds = catalog.open(name)
        if not isinstance(ds, xr.Dataset) or "TSOI" not in ds:
            raise ValueError(f"catalog source {name!r}: expected kind 'forcing', found {catalog.source(name).kind!r}")
        return ds
    return read_forcing(loc, n_layers=get_grid(grid_name).n_layers, grid=grid_name)


def load_sites(config: AssimilateConfig) -> SiteData:
    """Read profiles and forcing, preprocess, sample the forcing per site; count every skip.

    Raises:
        ValueError: no usable profile remains (the message lists the counted reasons).
    """
    p_loc, p_files, f_loc, f_files = _resolve_paths(config)
    ps = _read_profiles(p_loc, config.profiles_layout)
    rep = ps.report.to_dict()
    skipped: dict[str, dict[str, int]] = {"reader": dict(rep["profiles_dropped"])}

    obs = ObservationBatch.from_layers(ps.layers)
    skipped["preprocess"] = dict(Counter(obs.skipped.values()))
    coords = ps.profiles.set_index("profile_id").loc[obs.profile_id]
    lat = coords["latitude"].to_numpy(dtype=float)
    lon = coords["longitude"].to_numpy(dtype=float)

    fds = _read_forcing(f_loc, config.grid)
    sampled = sample_nearest_valid(fds, lat, lon, site=np.arange(obs.n_profiles))
    keep = np.ones(obs.n_profiles, dtype=bool)
    if config.max_distance_km is not None:
        keep &= sampled["distance_km"].values <= config.max_distance_km
    skipped["forcing"] = {NO_FORCING: int((~keep).sum())} if (~keep).any() else {}
    idx = np.flatnonzero(keep)
    if config.max_sites is not None and idx.size > config.max_sites:
        skipped["max_sites"] = {"beyond_max_sites": int(idx.size - config.max_sites)}
        idx = idx[: config.max_sites]
    else:
        skipped["max_sites"] = {}
    if idx.size == 0:
        raise ValueError(f"assimilate: no usable profile (read {rep['n_profiles_read']}; skipped: {skipped})")
    obs = obs.subset(idx)
    # Materialise the (small) per-site forcing once; tasks slice it.
    forcing = sampled.isel(site=idx).assign_coords(site=np.arange(idx.size)).load()
    return SiteData(obs=obs, forcing=forcing, profile_id=np.asarray(obs.profile_id).astype(str), skipped=skipped,
                    n_profiles_read=int(rep["n_profiles_read"]), inputs=[*p_files, *f_files], reader_report=rep)
