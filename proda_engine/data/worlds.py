"""Which files make a world: the built-in worlds and the ``worlds:`` of a data catalog.

A *world* is what every command after ``proda simulate`` works on: a forcing grid (the land cells),
covariates for the network, observed profiles, and optionally a known "true" parameter field (twin
experiments). Two kinds exist:

* **built-in** worlds (``default``, ``tiny``, ``europe``, ... : :data:`~proda_engine.data.world.REGIONS`),
  built offline by :func:`~proda_engine.data.world.ensure_world` with synthetic twin observations;
* **catalog** worlds: any catalog file may name a set of its sources::

      worlds:
        my_region:
          forcing: my_forcing          # kind forcing (CLM5 history)
          covariates: my_covariates    # kind covariates (netCDF / GeoTIFF): whatever variables it holds
          profiles: my_wosis           # kind profiles (WoSIS 2019 / 2023 / tidy CSV)
          truth: my_truth              # optional, kind parameters (twin experiments)

:func:`resolve_world` turns a name into a :class:`WorldSpec` (paths and reader options, nothing read).
Products of every world go to ``<cache>/world/<name>/products/``.

Where a name is looked up, in order: the catalog given to the call; a catalog registered in this
process (:func:`register_catalog`, which ``--catalog FILE`` on the command line does); ``$PRODA_CATALOG``;
the repository's ``data_catalog.yaml``; finally the built-in worlds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from proda_engine.data.catalog import Catalog, _default_catalog_path, cache_dir, load_catalog
from proda_engine.data.errors import CatalogError

log = logging.getLogger(__name__)

#: Built-in world used when no name is given (``$PRODA_WORLD`` overrides it).
DEFAULT_WORLD = "default"

#: What the observations of a world are; every product carries it (``data_kind`` attribute).
DATA_KINDS = {
    "builtin": "synthetic twin (observations simulated from a known parameter field)",
    "catalog": "measured profiles of a catalog world",
}

#: world name -> catalog file, for catalogs registered in this process
_REGISTERED: dict[str, Path] = {}


@dataclass(frozen=True)
class WorldSpec:
    """Everything needed to open a world; no file is read by building one.

    Attributes:
        name: world name (products go to ``root / "products"``).
        kind: ``"builtin"`` or ``"catalog"``.
        root: ``<cache>/world/<name>``: products and derived caches.
        forcing: forcing files (CLM5 history) and their reader options.
        covariates: covariate files, the variables to use (None: every 2-D variable the files hold),
            categorical names and reader options.
        profiles: observed-profile files or folders (empty: the world has none yet); ``profiles_layout``
            is None to detect the layout from the headers.
        truth: twin-truth parameter file, if any.
        catalog: the catalog file of a catalog world.
    """

    name: str
    kind: Literal["builtin", "catalog"]
    root: Path
    forcing: tuple[Path, ...]
    covariates: tuple[Path, ...]
    covariate_variables: tuple[str, ...] | None = None
    categorical: tuple[str, ...] = ()
    covariate_options: Mapping[str, Any] = field(default_factory=dict)
    covariate_units: Mapping[str, str] = field(default_factory=dict)
    forcing_options: Mapping[str, Any] = field(default_factory=dict)
    profiles: tuple[Path, ...] = ()
    profiles_layout: str | None = None
    truth: Path | None = None
    catalog: Path | None = None
    description: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)  # role -> catalog source name

    @property
    def products(self) -> Path:
        """``root / "products"``: parameter maps, models, evaluations."""
        return self.root / "products"

    @property
    def cache(self) -> Path:
        """``root / "cache"``: derived files that can be rebuilt (stacked cells, parsed sites)."""
        return self.root / "cache"

    @property
    def is_twin(self) -> bool:
        """A synthetic twin: its observations were simulated from :attr:`truth`."""
        return self.kind == "builtin"

    @property
    def data_kind(self) -> str:
        """What the world's observations are (shown with every number made from them)."""
        return DATA_KINDS[self.kind]

    def provenance(self) -> dict[str, str]:
        """Attributes every product of this world carries: name, kind, data, catalog."""
        out = {"world": self.name, "world_kind": self.kind, "data_kind": self.data_kind}
        if self.catalog is not None:
            out["catalog"] = str(self.catalog)
            out["catalog_sources"] = json.dumps(dict(self.sources))
        return out

    def fingerprint(self) -> str:
        """SHA-256 over the world's definition (files with sizes and times, variables, options)."""
        def stamp(p: Path) -> list:
            try:
                st = p.stat()
                return [str(p), st.st_size, st.st_mtime_ns]
            except OSError:
                return [str(p), None, None]

        payload = {
            "forcing": [stamp(p) for p in self.forcing], "covariates": [stamp(p) for p in self.covariates],
            "variables": self.covariate_variables, "categorical": list(self.categorical),
            "options": {k: repr(v) for k, v in {**self.covariate_options, **self.forcing_options}.items()},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def register_catalog(path: str | PathLike) -> list[str]:
    """Make the worlds of a catalog file resolvable by name in this process; returns their names.

    ``proda ... --catalog FILE`` calls this (and sets ``$PRODA_CATALOG`` for the dashboard server).
    """
    p = Path(path).expanduser().resolve()
    cat = load_catalog(p)
    for name in cat.worlds:
        _REGISTERED[name] = p
    return list(cat.worlds)


def world_name(name: str | None = None) -> str:
    """``name``, else ``$PRODA_WORLD``, else ``default``."""
    return name or os.environ.get("PRODA_WORLD") or DEFAULT_WORLD


def _catalogs_to_search(catalog: str | PathLike | Catalog | None, name: str) -> list[Catalog | Path]:
    if catalog is not None:
        return [catalog if isinstance(catalog, Catalog) else Path(catalog).expanduser()]
    out: list[Catalog | Path] = []
    if name in _REGISTERED:
        out.append(_REGISTERED[name])
    env = os.environ.get("PRODA_CATALOG")
    if env:
        out.append(Path(env).expanduser())
    repo = _default_catalog_path()
    if repo.exists() and repo not in out:
        out.append(repo)
    return out


def resolve_world(name: str | None = None, catalog: str | PathLike | Catalog | None = None) -> WorldSpec:
    """The :class:`WorldSpec` of a world name (see the module docstring for the lookup order).

    A built-in world is built on first use (offline, tens of seconds for the globe). With an explicit
    ``catalog`` the world must be one of its ``worlds:``.

    Raises:
        CatalogError: an explicit catalog without that world, or a world whose sources are invalid.
    """
    name = world_name(name)
    for cat in _catalogs_to_search(catalog, name):
        c = cat if isinstance(cat, Catalog) else load_catalog(cat)
        if name in c.worlds:
            return _catalog_spec(c, name)
        if catalog is not None:
            c.world(name)  # raises, listing the catalog's worlds
    return builtin_spec(name)


def builtin_spec(name: str) -> WorldSpec:
    """Spec of a built-in world (built into the cache now if needed)."""
    from proda_engine.data.world import CATEGORICAL_COVARIATES, COVARIATE_NAMES, ensure_world

    paths = ensure_world(name)
    return WorldSpec(
        name=name, kind="builtin", root=paths.root, forcing=(paths.forcing,), covariates=(paths.covariates,),
        covariate_variables=tuple(COVARIATE_NAMES), categorical=tuple(CATEGORICAL_COVARIATES),
        profiles=(paths.wosis_dir,), profiles_layout="wosis_2019",
        truth=paths.truth if paths.truth.exists() else None,
        description="built-in synthetic twin world (proda world)",
    )


def _catalog_spec(cat: Catalog, name: str) -> WorldSpec:
    w = cat.world(name)
    forcing, cov = cat.source(w.forcing), cat.source(w.covariates)
    for role, src in (("forcing", forcing), ("covariates", cov)):
        missing = src.missing_paths()
        if missing:
            raise CatalogError(f"{cat.path or 'catalog'}: world {name!r}: {role} source {src.name!r}: missing "
                               f"file(s) {', '.join(map(str, missing))}")
    profiles: tuple[Path, ...] = ()
    layout = None
    if w.profiles is not None:
        ps = cat.source(w.profiles)
        profiles = tuple(ps.resolved_paths())
        layout = None if ps.format == "auto" else ps.format
    truth = None
    if w.truth is not None:
        paths = cat.source(w.truth).resolved_paths()
        if len(paths) != 1:
            raise CatalogError(f"{cat.path or 'catalog'}: world {name!r}: truth source {w.truth!r}: expected one "
                               f"netCDF file, found {len(paths)}")
        truth = paths[0]
    roles = {"forcing": w.forcing, "covariates": w.covariates, "profiles": w.profiles, "truth": w.truth}
    return WorldSpec(
        name=name, kind="catalog", root=cache_dir() / "world" / name,
        forcing=tuple(forcing.resolved_paths()), forcing_options=dict(forcing.options),
        covariates=tuple(cov.resolved_paths()),
        covariate_variables=tuple(cov.variables) or None, categorical=tuple(cov.categorical),
        covariate_options=dict(cov.options), covariate_units={k: v for k, v in cov.variables.items() if v},
        profiles=profiles, profiles_layout=layout, truth=truth, catalog=cat.path,
        description=w.description, sources={k: v for k, v in roles.items() if v},
    )


def catalog_worlds(catalog: str | PathLike | None = None) -> dict[str, str]:
    """Worlds of a catalog (default: ``$PRODA_CATALOG`` or the repository's): name -> description."""
    p = Path(catalog).expanduser() if catalog is not None else _default_catalog_path()
    if not p.exists():
        return {}
    return {n: w.description for n, w in load_catalog(p).worlds.items()}
