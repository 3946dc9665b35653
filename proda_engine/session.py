"""The world session: per-process state shared by the front doors.

:mod:`proda_engine.api` and :mod:`proda_engine.scenario_api` both stand on this module; it imports
neither. It holds what a process keeps between calls, each behind a documented, thread-safe accessor
(a dashboard process serves many sessions from threads at once):

* the current world (:func:`world_name`, ``$PRODA_WORLD``) and catalog registration (:func:`use_catalog`);
* the what-if engine of each world (:func:`world_engine`, the 4 most recently used) and its named
  regions (:func:`regions`);
* the observed-site set of each world (:func:`site_set`, the 4 most recently used, also on disk);
* the ensemble members of each (world, source) (:func:`members`);
* the per-cell sensitivity curves of each (engine, source, members file) (:func:`sensitivity_curves`).

>>> from proda_engine import session
>>> session.world_engine("tiny") is session.world_engine("tiny")   # doctest: +SKIP
True
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from proda_engine.data.worlds import register_catalog
from proda_engine.products.layers import MemberCache, MemberEnsemble, members_path
from proda_engine.products.regions import KOPPEN_GROUPS, KOPPEN_LABELS, LANDCOVER_GROUPS, Region
from proda_engine.products.whatif import MECHANISMS, WhatIfEngine

if TYPE_CHECKING:  # annotations only: products.sites is imported when the first site set is built
    from proda_engine.products.sites import SiteSet

__all__ = [
    "SOURCE_LABELS",
    "WorldCache",
    "members",
    "regions",
    "sensitivity_curves",
    "site_set",
    "use_catalog",
    "world_cache",
    "world_engine",
    "world_name",
]

#: Parameter sources in the order the dashboard offers them, with labels.
SOURCE_LABELS: dict[str, str] = {
    "proda_e2e": "PRODA end to end",
    "proda_two_step": "PRODA two-step",
    "batch_da": "batch assimilation (homogeneous)",
    "default_clm5": "default CLM5",
    "twin_truth": "twin truth (synthetic world)",
    "midpoint": "prior midpoint (theta = 0.5)",
}

T = TypeVar("T")


class WorldCache(Generic[T]):
    """A thread-safe memo of ``build(world)`` keeping the ``maxsize`` most recently used worlds.

    ``world=None`` means the current world (:func:`world_name`), so ``f()`` and ``f("default")`` share one
    value. Concurrent first calls for the same world wait for one build (per-world lock) while calls for
    other worlds go on. :meth:`cache_clear` forgets every value; a build running during the clear is
    returned to its caller but not kept. Called like the function it wraps (same name, docstring and
    signature through ``__wrapped__``).
    """

    def __init__(self, build: Callable[[str | None], T], maxsize: int = 4) -> None:
        functools.update_wrapper(self, build)
        self._build = build
        self._maxsize = maxsize
        self._values: OrderedDict[str, T] = OrderedDict()
        self._building: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()  # guards _values, _building and _generation (held briefly)
        self._generation = 0

    def _cached(self, key: str) -> tuple[bool, T | None, int]:
        """(found, value, generation) under the lock, marking a found value most recently used."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return True, self._values[key], self._generation
            return False, None, self._generation

    def __call__(self, world: str | None = None) -> T:
        key = world or world_name()
        found, value, _ = self._cached(key)
        if found:
            return value  # type: ignore[return-value]
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one build per world; other worlds are not held up
            found, value, generation = self._cached(key)
            if found:  # built by the thread this one waited for
                return value  # type: ignore[return-value]
            try:
                value = self._build(key)
            except BaseException:
                with self._lock:
                    self._building.pop(key, None)
                raise
            with self._lock:  # store and retire the build lock together: no second build slips in between
                if generation == self._generation:  # not cleared while building
                    self._values[key] = value
                    while len(self._values) > self._maxsize:
                        self._values.popitem(last=False)
                self._building.pop(key, None)
        return value

    def cache_clear(self) -> None:
        """Forget every cached world (the next call builds again)."""
        with self._lock:
            self._values.clear()
            self._generation += 1


def world_cache(maxsize: int = 4) -> Callable[[Callable[[str | None], T]], WorldCache[T]]:
    """Decorator: ``@world_cache(maxsize=4)`` over ``def f(world: str | None = None) -> T`` (a :class:`WorldCache`)."""
    def wrap(build: Callable[[str | None], T]) -> WorldCache[T]:
        return WorldCache(build, maxsize)
    return wrap


# ---------------------------------------------------------------------------------------------
# Which world
# ---------------------------------------------------------------------------------------------


def world_name() -> str:
    """World used by the dashboard: ``$PRODA_WORLD`` (e.g. ``tiny``, ``europe``, a catalog world) or ``default``."""
    return os.environ.get("PRODA_WORLD", "default")


def use_catalog(path: str | PathLike) -> list[str]:
    """Make the ``worlds:`` of a catalog file usable by name in every function of the front doors.

    Registers the catalog in this process, exports it as ``$PRODA_CATALOG`` (dashboard sessions and
    workers) and forgets the cached engines, so a world name the catalog redefines is read again.

    >>> api.use_catalog("my_catalog.yaml")      # doctest: +SKIP
    ['my_region']
    >>> api.what_if({"A": 0.1}, world="my_region")  # doctest: +SKIP
    """
    names = register_catalog(path)
    os.environ["PRODA_CATALOG"] = str(Path(path).expanduser().resolve())  # dashboard sessions, workers
    world_engine.cache_clear()
    return names


# ---------------------------------------------------------------------------------------------
# The what-if engine of a world and its named regions
# ---------------------------------------------------------------------------------------------


@world_cache(maxsize=4)
def world_engine(world: str | None = None) -> WhatIfEngine:
    """The what-if engine of a world (None: :func:`world_name`; built-in: built on first use; catalog world:
    read from its sources), cached on disk and in memory (the 4 most recently used worlds, one build per
    world at a time).

    Parameter sources: every trained product found for the world, the twin truth (twin worlds), default
    CLM5 and the prior midpoint. Shared by all sessions of a dashboard process (read-only; results are
    cached per request).
    """
    from proda_engine.data.parameter_files import read_parameter_file, resolve_closure
    from proda_engine.products.world import open_world

    ow = open_world(world or world_name())
    wc = ow.cells
    sources: dict[str, np.ndarray | str] = {}
    for name in SOURCE_LABELS:
        f = ow.spec.products / f"theta_{name}.nc"
        if f.exists():
            th = read_parameter_file(f)
            resolve_closure(th, None)  # the engine runs the default closure: refuse parameters fitted under another
            sources[name] = wc.theta_from_grid(th)
    if ow.truth is not None:
        sources["twin_truth"] = wc.theta_from_grid(ow.truth)
    sources["default_clm5"] = "default"
    sources["midpoint"] = np.full((len(wc.cells), 21), 0.5)
    eng = WhatIfEngine(None, sources, fields=ow.covariates, cells=(wc.forcing, wc.cells, wc.lat, wc.lon))
    eng.world = ow.spec  # provenance: which world and data the engine's numbers come from
    return eng


def regions(world: str | None = None) -> dict[str, Region]:
    """Named regions: globe, CONUS, continents, Köppen groups and land-cover groups of the world."""
    out = {"globe": Region(), "conus": Region("conus", None, "CONUS")}
    eng = world_engine(world)
    if eng.fields is not None and "continent" in eng.fields:
        names = str(eng.fields["continent"].attrs.get("flag_meanings", "")).split()
        present = set(np.unique(eng.fields["continent"].values[np.isfinite(eng.fields["continent"].values)]).tolist())
        codes = list(eng.fields["continent"].attrs.get("flag_values", range(len(names))))
        for code, name in zip(codes, names):
            if code in present:
                out[f"continent:{name}"] = Region("continent", name, name.replace("_", " "))
    for g in KOPPEN_GROUPS:
        out[f"koppen:{g}"] = Region("koppen", g, f"Köppen {g} ({KOPPEN_LABELS[g]})")
    for g in LANDCOVER_GROUPS:
        out[f"landcover:{g}"] = Region("landcover", g, g.replace("_", "/"))
    return out


# ---------------------------------------------------------------------------------------------
# Observed sites
# ---------------------------------------------------------------------------------------------


@world_cache(maxsize=4)
def site_set(world: str | None = None) -> SiteSet:
    """The world's observed profiles matched to its land cells (None: :func:`world_name`).

    Parsed once, then kept per process (the 4 most recently used worlds) and in the world's cache folder
    (``sites.pkl``, keyed by the WoSIS files' names, sizes and times), because parsing 50,000 profiles
    takes ~30 s and the dashboard needs them before its first page."""
    import pickle

    from proda_engine.data.writers import write_bytes_atomic
    from proda_engine.products.sites import SiteSet

    spec = world_engine(world).world
    if spec.kind == "builtin" and not (spec.profiles[0] / "wosis_201909_profiles.tsv").exists():
        from proda_engine.workflows import build_twin_world

        build_twin_world(spec.name)
    if not spec.profiles:
        raise FileNotFoundError(f"world {spec.name!r} has no observed profiles (no 'profiles:' in its catalog entry)")
    files = sorted(q for p in spec.profiles for q in ([*p.iterdir()] if p.is_dir() else [p]) if q.is_file())
    # "sites-2": the site rules of workflows.site_data (a cache written under older rules is rebuilt)
    stamp = ["sites-2", *[(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]]
    cache = spec.cache / "sites.pkl"
    if cache.exists():
        try:
            with open(cache, "rb") as fh:
                saved_stamp, sites = pickle.load(fh)
            if saved_stamp == stamp and len(sites.profiles) and sites.profiles["cell"].max() < world_engine(
                    world).cells.size:
                return sites
        except Exception:  # an unreadable or stale cache is rebuilt below
            pass
    from proda_engine.products.world import open_world
    from proda_engine.workflows import site_data

    # the same sites, cells and drop rules as training and evaluation (single-layer profiles kept; sites
    # far from the forcing or in a cell without covariates dropped and counted)
    sd = site_data(open_world(spec))
    sites = SiteSet.from_observations(sd.observations, sd.lat, sd.lon, sd.cell)
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(pickle.dumps((stamp, sites)), cache)
    return sites


# ---------------------------------------------------------------------------------------------
# Ensemble members and sensitivity curves
# ---------------------------------------------------------------------------------------------

_MEMBER_CACHE = MemberCache()  # its own lock: concurrent sessions wait for one load of the same members


def members(source: str | None, world: str | None) -> MemberEnsemble | None:
    """The ensemble members of ``source`` (default: the world's first source) on ``world``, cached per
    process and re-read when the members file changes; None if the world has no ensemble for it."""
    eng = world_engine(world)
    source = source or next(iter(eng.sources))
    if eng.world is None:
        return None
    path = members_path(eng.world.root, source)
    if not path.exists():
        return None
    return _MEMBER_CACHE.get((world or world_name(), source), path, eng)


#: engine -> (source, members file stamp) -> curves; weak keys: an engine's curves go with the engine
_CURVES: weakref.WeakKeyDictionary[WhatIfEngine, dict[tuple, list]] = weakref.WeakKeyDictionary()
_CURVES_LOCK = threading.Lock()  # concurrent sessions wait for one solve of the same curves


def sensitivity_curves(world: str | None, source: str) -> list:
    """Per-cell curves (:class:`~proda_engine.products.sensitivity.CellCurves`) of the spec's sensitivity
    for ``source``: one per ensemble member when the world has an ensemble product for it, else one.

    Solved once, kept on disk (float32 ``.npy`` per member in the world's cache, keyed by a digest of the
    parameters), read memory-mapped and kept per process (per engine and members file).

    Raises:
        ValueError: ``source`` has no unit-interval parameters (default CLM5) or is not a source of the world.
    """
    eng = world_engine(world)
    if source not in eng.sources or isinstance(eng.sources[source], str):
        raise ValueError(f"source {source!r} has no unit-interval parameters: the spec's sensitivity perturbs "
                         "theta (choose a trained source, the twin truth or the midpoint)")
    path = members_path(eng.world.root, source) if eng.world is not None else None
    stamp = (path.stat().st_size, path.stat().st_mtime_ns) if path is not None and path.exists() else None
    key = (source, stamp)
    with _CURVES_LOCK:
        per_engine = _CURVES.setdefault(eng, {})
        if key not in per_engine:
            per_engine[key] = _solve_curves(eng, source, path if stamp is not None else None)
        return per_engine[key]


def _solve_curves(eng: WhatIfEngine, source: str, members_file: Path | None) -> list:
    """Solve (or read from the world's cache) the sensitivity curves of every member of ``source``."""
    import hashlib
    import tempfile

    from proda_engine.data.writers import write_npy_atomic
    from proda_engine.products.layers import load_member_thetas
    from proda_engine.products.sensitivity import LEVELS, CellCurves, cell_curves

    thetas = load_member_thetas(members_file, eng) if members_file is not None else [eng.sources[source]]
    h = hashlib.blake2b(digest_size=12)
    for th in thetas:
        h.update(np.ascontiguousarray(th).tobytes())
    root = eng.world.cache if eng.world is not None else Path(tempfile.gettempdir()) / "proda-sensitivity"
    folder = root / "sensitivity" / f"{source}-v1-{h.hexdigest()}"
    out = []
    for m, th in enumerate(thetas):
        files = {k: folder / f"member{m}_{k}.npy" for k in ("raw", "metric", "cin")}
        if not all(f.exists() for f in files.values()):
            solver = WhatIfEngine(None, {"member": th}, grid=eng.grid, closure=eng.closure, cache_size=2,
                                  parts_budget=256 * 1024**2, cells=(eng.forcing, eng.cells, eng.lat, eng.lon))
            cc = cell_curves(solver, "member")
            folder.mkdir(parents=True, exist_ok=True)
            for k, f in files.items():
                write_npy_atomic(getattr(cc, k), f)
        arr = {k: np.load(f, mmap_mode="r") for k, f in files.items()}
        out.append(CellCurves(tuple(MECHANISMS), LEVELS, arr["raw"], arr["metric"], np.asarray(arr["cin"])))
    return out

