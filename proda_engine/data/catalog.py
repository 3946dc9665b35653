"""The data catalog: named sources in ``data_catalog.yaml`` and the reader each one opens with.

A catalog file looks like::

    version: 1
    sources:
      world_forcing:
        kind: forcing                 # forcing | forcing_series | covariates | profiles | reference_map | npp
                                      # | parameters
        format: clm5_history
        paths: ["${PRODA_CACHE}/world/default/forcing.nc"]
        built_by: world               # missing file is fine until the source is opened
        variables: {TSOI: K, NPP: g C m-2 yr-1}
        licence: ...
        attribution: ...
        description: ...

Paths are relative to the catalog file's folder (or to ``root`` when given). ``${PRODA_CACHE}``
expands to the cache folder (environment variable ``PRODA_CACHE``, default ``~/.cache/proda``);
a leading ``~`` expands to the home folder; ``*``/``?`` patterns are globbed (sorted). Unknown keys,
unknown kinds/formats/options and missing files (unless the source is ``optional: true`` or
``built_by`` a builder) are errors naming the source and the key or path.

Example
-------
>>> cat = load_catalog()                          # doctest: +SKIP
>>> forcing = cat.open("world_forcing")           # doctest: +SKIP
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import xarray as xr
import yaml

from proda_engine.data.covariates import read_covariates
from proda_engine.data.errors import CatalogError
from proda_engine.data.forcing import ForcingSeries, read_forcing, read_forcing_series
from proda_engine.data.profiles import ProfileSet, read_profiles

DEFAULT_CACHE = Path("~/.cache/proda")
CATALOG_FILENAME = "data_catalog.yaml"

#: kind -> accepted formats
FORMATS: dict[str, tuple[str, ...]] = {
    "forcing": ("clm5_history", "netcdf"),
    "forcing_series": ("clm5_history", "netcdf"),
    "covariates": ("netcdf", "geotiff", "auto"),
    "profiles": ("wosis_2019", "wosis_2023", "tidy_csv", "auto"),
    "reference_map": ("netcdf", "geotiff", "auto"),
    "npp": ("netcdf", "geotiff", "auto"),
    "parameters": ("netcdf",),
}
#: kind -> reader options accepted under ``options:``
OPTIONS: dict[str, tuple[str, ...]] = {
    "forcing": ("n_layers", "npp_split", "grid"),
    "forcing_series": ("n_layers", "npp_split", "grid"),
    "covariates": ("scale_factors", "valid_ranges"),
    "profiles": (),
    "reference_map": ("scale_factors", "valid_ranges"),
    "npp": ("scale_factors", "valid_ranges"),
    "parameters": (),
}
SOURCE_KEYS = ("kind", "format", "paths", "variables", "categorical", "licence", "attribution", "description",
               "optional", "built_by", "options")
TOP_KEYS = ("version", "sources", "worlds")
#: keys of a ``worlds:`` entry -> the source kind each must name (None: free text)
WORLD_KEYS: dict[str, str | None] = {"forcing": "forcing", "covariates": "covariates", "profiles": "profiles",
                                     "truth": "parameters", "description": None}
#: keys a world must give
WORLD_REQUIRED = ("forcing", "covariates")
KNOWN_BUILDERS = ("world",)
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")

Builder = Callable[["Source"], None]


def cache_dir() -> Path:
    """The cache folder: ``$PRODA_CACHE`` or ``~/.cache/proda`` (not created here)."""
    env = os.environ.get("PRODA_CACHE")
    return Path(env).expanduser() if env else DEFAULT_CACHE.expanduser()


def _expand(raw: str, base: Path, source: str) -> str:
    def sub(m: re.Match) -> str:
        if m.group(1) == "PRODA_CACHE":
            return str(cache_dir())
        raise CatalogError(f"source {source!r}: path {raw!r}: unknown placeholder ${{{m.group(1)}}} "
                           f"(only ${{PRODA_CACHE}} is expanded)")

    s = _PLACEHOLDER.sub(sub, raw)
    p = Path(s).expanduser()
    return str(p if p.is_absolute() else base / p)


@dataclass(frozen=True)
class Source:
    """One catalog entry (see module docstring for the keys)."""

    name: str
    kind: str
    format: str
    paths: tuple[str, ...]  # absolute, placeholders expanded, patterns not yet globbed
    variables: Mapping[str, str] = field(default_factory=dict)  # name -> units
    categorical: tuple[str, ...] = ()
    licence: str = ""
    attribution: str = ""
    description: str = ""
    optional: bool = False
    built_by: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def resolved_paths(self) -> list[Path]:
        """Paths with glob patterns expanded (a pattern without matches is kept as is)."""
        out: list[Path] = []
        for p in self.paths:
            if any(ch in p for ch in "*?["):
                hits = sorted(glob.glob(p))
                out += [Path(h) for h in hits] if hits else [Path(p)]
            else:
                out.append(Path(p))
        return out

    def missing_paths(self) -> list[Path]:
        """Paths (after globbing) that do not exist."""
        return [p for p in self.resolved_paths() if not p.exists()]

    def exists(self) -> bool:
        return not self.missing_paths()


@dataclass(frozen=True)
class WorldEntry:
    """A named world of a catalog: which sources make it (``worlds:`` section).

    ``forcing`` (kind forcing) and ``covariates`` (kind covariates) are required; ``profiles`` (kind
    profiles) is needed to train and evaluate; ``truth`` (kind parameters) only for twin experiments.
    """

    name: str
    forcing: str
    covariates: str
    profiles: str | None = None
    truth: str | None = None
    description: str = ""


def parse_world(name: str, entry: Mapping[str, Any], sources: Mapping[str, Source], label: str) -> WorldEntry:
    """Validate one ``worlds:`` entry against the catalog's sources (names and kinds)."""
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{label}: world {name!r}: expected a mapping of keys, found {entry!r}")
    unknown = [k for k in entry if k not in WORLD_KEYS]
    if unknown:
        raise CatalogError(f"{label}: world {name!r}: unknown key(s) {', '.join(map(repr, unknown))}; "
                           f"expected some of {', '.join(WORLD_KEYS)}")
    for k in WORLD_REQUIRED:
        if not entry.get(k):
            raise CatalogError(f"{label}: world {name!r}: missing required key {k!r} (the name of a "
                               f"'kind: {WORLD_KEYS[k]}' source)")
    for k, kind in WORLD_KEYS.items():
        if kind is None or entry.get(k) is None:
            continue
        ref = entry[k]
        if not isinstance(ref, str) or ref not in sources:
            raise CatalogError(f"{label}: world {name!r}: key {k!r}: expected the name of a source of this "
                               f"catalog, found {ref!r}; sources: {', '.join(sources) or 'none'}")
        if sources[ref].kind != kind:
            raise CatalogError(f"{label}: world {name!r}: key {k!r}: source {ref!r} has kind "
                               f"{sources[ref].kind!r}, expected kind {kind!r}")
    desc = entry.get("description", "")
    if not isinstance(desc, str):
        raise CatalogError(f"{label}: world {name!r}: key 'description': expected text, found {desc!r}")
    return WorldEntry(name=name, forcing=entry["forcing"], covariates=entry["covariates"],
                      profiles=entry.get("profiles"), truth=entry.get("truth"),
                      description=" ".join(desc.split()))


def _as_str_list(v: Any, *, source: str, key: str) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return list(v)
    raise CatalogError(f"source {source!r}: key {key!r}: expected a string or a list of strings, found {v!r}")


def _parse_variables(v: Any, *, source: str) -> dict[str, str]:
    if v is None:
        return {}
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return {x: "" for x in v}
    if not isinstance(v, Mapping):
        raise CatalogError(f"source {source!r}: key 'variables': expected a mapping name -> units, found {v!r}")
    out = {}
    for name, spec in v.items():
        if isinstance(spec, (str, int, float)) or spec is None:
            out[str(name)] = "" if spec is None else str(spec)
        elif isinstance(spec, Mapping):
            extra = set(spec) - {"units", "description", "long_name"}
            if extra:
                raise CatalogError(f"source {source!r}: variable {name!r}: unknown key(s) {sorted(extra)} "
                                   f"(expected units, description, long_name)")
            out[str(name)] = str(spec.get("units", ""))
        else:
            raise CatalogError(f"source {source!r}: variable {name!r}: expected units text or a mapping, "
                               f"found {spec!r}")
    return out


def parse_source(name: str, entry: Mapping[str, Any], base: Path) -> Source:
    """Validate one raw catalog entry and resolve its paths against ``base``."""
    if not isinstance(entry, Mapping):
        raise CatalogError(f"source {name!r}: expected a mapping of keys, found {entry!r}")
    unknown = [k for k in entry if k not in SOURCE_KEYS]
    if unknown:
        raise CatalogError(f"source {name!r}: unknown key(s) {', '.join(map(repr, unknown))}; "
                           f"expected some of {', '.join(SOURCE_KEYS)}")
    for k in ("kind", "paths"):
        if k not in entry:
            raise CatalogError(f"source {name!r}: missing required key {k!r}")
    kind = entry["kind"]
    if kind not in FORMATS:
        raise CatalogError(f"source {name!r}: key 'kind': expected one of {', '.join(FORMATS)}, found {kind!r}")
    fmt = entry.get("format", FORMATS[kind][0])
    if fmt not in FORMATS[kind]:
        raise CatalogError(f"source {name!r}: key 'format': expected one of {', '.join(FORMATS[kind])} "
                           f"for kind {kind!r}, found {fmt!r}")
    options = entry.get("options") or {}
    if not isinstance(options, Mapping):
        raise CatalogError(f"source {name!r}: key 'options': expected a mapping, found {options!r}")
    bad_opts = [k for k in options if k not in OPTIONS[kind]]
    if bad_opts:
        raise CatalogError(f"source {name!r}: key 'options': unknown option(s) {', '.join(map(repr, bad_opts))} "
                           f"for kind {kind!r}; expected some of {', '.join(OPTIONS[kind]) or 'none'}")
    built_by = entry.get("built_by")
    if built_by is not None and built_by not in KNOWN_BUILDERS:
        raise CatalogError(f"source {name!r}: key 'built_by': expected one of {', '.join(KNOWN_BUILDERS)}, "
                           f"found {built_by!r}")
    optional = entry.get("optional", False)
    if not isinstance(optional, bool):
        raise CatalogError(f"source {name!r}: key 'optional': expected true or false, found {optional!r}")
    paths = _as_str_list(entry["paths"], source=name, key="paths")
    if not paths:
        raise CatalogError(f"source {name!r}: key 'paths': expected at least one path, found none")
    categorical = _as_str_list(entry.get("categorical") or [], source=name, key="categorical")
    for k in ("licence", "attribution", "description"):
        if k in entry and not isinstance(entry[k], str):
            raise CatalogError(f"source {name!r}: key {k!r}: expected text, found {entry[k]!r}")
    return Source(
        name=name, kind=kind, format=fmt,
        paths=tuple(_expand(p, base, name) for p in paths),
        variables=_parse_variables(entry.get("variables"), source=name),
        categorical=tuple(categorical),
        licence=entry.get("licence", ""), attribution=entry.get("attribution", ""),
        description=" ".join(str(entry.get("description", "")).split()),
        optional=optional, built_by=built_by, options=dict(options),
    )


class Catalog:
    """Named data sources and the dispatch to their readers.

    Args:
        sources: parsed sources by name.
        path: the catalog file (None for in-memory catalogs).
        builders: ``{built_by: callable(source)}`` used by :meth:`open` to build a missing
            ``built_by`` source on demand (e.g. ``{"world": build_default_world}``).
    """

    def __init__(self, sources: Mapping[str, Source], *, path: Path | None = None,
                 builders: Mapping[str, Builder] | None = None,
                 worlds: Mapping[str, WorldEntry] | None = None) -> None:
        self.sources = dict(sources)
        self.path = path
        self.builders = dict(builders or {})
        #: named worlds (``worlds:`` section): name -> :class:`WorldEntry`
        self.worlds = dict(worlds or {})

    def __contains__(self, name: object) -> bool:
        return name in self.sources

    def __iter__(self) -> Iterator[str]:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, name: str) -> Source:
        return self.source(name)

    def __repr__(self) -> str:
        return f"Catalog({self.path or 'in-memory'}, sources={list(self.sources)})"

    def source(self, name: str) -> Source:
        try:
            return self.sources[name]
        except KeyError:
            raise CatalogError(f"{self.path or 'catalog'}: unknown source {name!r}; "
                               f"available: {', '.join(self.sources) or 'none'}") from None

    def world(self, name: str) -> WorldEntry:
        """The ``worlds:`` entry ``name`` (error listing the catalog's worlds when absent)."""
        try:
            return self.worlds[name]
        except KeyError:
            raise CatalogError(f"{self.path or 'catalog'}: unknown world {name!r}; worlds of this catalog: "
                               f"{', '.join(self.worlds) or 'none'}") from None

    def names(self, kind: str | None = None) -> list[str]:
        """Source names, optionally only of one kind."""
        return [n for n, s in self.sources.items() if kind is None or s.kind == kind]

    def available(self, name: str) -> bool:
        """True if every file of the source exists now."""
        return self.source(name).exists()

    def open(self, name: str, **overrides: Any) -> xr.Dataset | ProfileSet | ForcingSeries:
        """Open a source with the reader for its kind.

        ``overrides`` replace catalog options for this call (e.g. ``n_layers=10``). A missing
        ``built_by`` source is built first when a builder is registered, else an error says how to
        build it.

        Returns:
            forcing: normalised forcing Dataset; forcing_series: :class:`ForcingSeries` (one
            normalised Dataset per year, read lazily); covariates/reference_map/npp: covariate Dataset with
            ``valid``; profiles: :class:`ProfileSet`; parameters: Dataset with a ``parameter`` dim.
        """
        src = self.source(name)
        missing = src.missing_paths()
        if missing and src.built_by is not None and src.built_by in self.builders:
            self.builders[src.built_by](src)
            missing = src.missing_paths()
        if missing:
            hint = (f"; it is built by {src.built_by!r} (run `proda {src.built_by}` first)" if src.built_by
                    else "; it is marked optional and has not been provided" if src.optional else "")
            raise CatalogError(f"source {name!r}: missing file(s) {', '.join(map(str, missing))}{hint}")
        paths = src.resolved_paths()
        opts = {**src.options, **overrides}
        if src.kind == "forcing":
            return read_forcing(paths, source_name=name, **opts)
        if src.kind == "forcing_series":  # indexed now, read one year at a time by the scenario run
            return read_forcing_series(paths, source_name=name, **opts)
        if src.kind in ("covariates", "reference_map", "npp"):
            ds = read_covariates(
                paths, variables=list(src.variables) or None, categorical=src.categorical,
                units={k: v for k, v in src.variables.items() if v}, **opts,
            )
            ds.attrs["source_name"] = name
            return ds
        if src.kind == "profiles":
            layout = None if src.format == "auto" else src.format
            return read_profiles(paths if len(paths) > 1 else paths[0], layout=layout)
        if src.kind == "parameters":
            if len(paths) != 1:
                raise CatalogError(f"source {name!r}: kind 'parameters': expected one netCDF file, "
                                   f"found {len(paths)}")
            ds = xr.load_dataset(paths[0])
            if "parameter" not in ds.dims:
                raise CatalogError(f"source {name!r}: {paths[0].name}: expected a 'parameter' dimension, "
                                   f"found dims {list(ds.dims)}")
            ds.attrs["source_name"] = name
            return ds
        raise CatalogError(f"source {name!r}: no reader for kind {src.kind!r}")  # unreachable: kind validated


def _default_catalog_path() -> Path:
    env = os.environ.get("PRODA_CATALOG")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2] / CATALOG_FILENAME
    if repo.exists():
        return repo
    return Path.cwd() / CATALOG_FILENAME


def parse_catalog(raw: Mapping[str, Any], *, base: Path, label: str = "catalog", check_files: bool = True,
                  builders: Mapping[str, Builder] | None = None, path: Path | None = None) -> Catalog:
    """Validate a raw (already YAML-parsed) catalog mapping; paths resolve against ``base``."""
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{label}: expected a mapping with keys {', '.join(TOP_KEYS)}, found {type(raw).__name__}")
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        raise CatalogError(f"{label}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
                           f"expected {', '.join(TOP_KEYS)}")
    version = raw.get("version", 1)
    if version != 1:
        raise CatalogError(f"{label}: key 'version': expected 1, found {version!r}")
    entries = raw.get("sources") or {}
    if not isinstance(entries, Mapping):
        raise CatalogError(f"{label}: key 'sources': expected a mapping of named sources, found {entries!r}")
    sources = {str(n): parse_source(str(n), e, base) for n, e in entries.items()}
    if check_files:
        for s in sources.values():
            if s.optional or s.built_by is not None:
                continue
            missing = s.missing_paths()
            if missing:
                raise CatalogError(f"{label}: source {s.name!r}: missing file {missing[0]} "
                                   f"(mark the source 'optional: true' if it may be absent)")
    raw_worlds = raw.get("worlds") or {}
    if not isinstance(raw_worlds, Mapping):
        raise CatalogError(f"{label}: key 'worlds': expected a mapping of named worlds, found {raw_worlds!r}")
    worlds = {str(n): parse_world(str(n), e, sources, label) for n, e in raw_worlds.items()}
    return Catalog(sources, path=path, builders=builders, worlds=worlds)


def load_catalog(
    path: str | PathLike | None = None,
    root: str | PathLike | None = None,
    *,
    builders: Mapping[str, Builder] | None = None,
    check_files: bool = True,
) -> Catalog:
    """Load and validate a catalog file.

    Args:
        path: the YAML file; default ``$PRODA_CATALOG``, else the repository's ``data_catalog.yaml``,
            else ``./data_catalog.yaml``.
        root: folder that relative paths resolve against (default: the catalog file's folder).
        builders: see :class:`Catalog`.
        check_files: raise if a non-optional, non-built source is missing files.

    Raises:
        CatalogError: unreadable YAML, unknown keys, bad values, missing files.
    """
    p = Path(path).expanduser() if path is not None else _default_catalog_path()
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{p}: catalog file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CatalogError(f"{p.name}: cannot be read as YAML ({exc})") from exc
    base = Path(root).expanduser() if root is not None else p.resolve().parent
    return parse_catalog(raw or {}, base=base, label=p.name, check_files=check_files, builders=builders,
                         path=p)
