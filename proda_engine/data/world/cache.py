"""The world cache: ``<cache>/world/<name>/`` (cache = ``cache_dir``, ``$PRODA_CACHE`` or
``~/.cache/proda``), rebuilt only when the key over (base file checksum, builder version, options)
changes (:func:`ensure_world`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from proda_engine.data.world.build import build_world, cache_key, world_options
from proda_engine.data.world.tables import BASE_WORLD, REGIONS, WorldPaths
from proda_engine.data.writers import sha256_file

_BASE_SHA_CACHE: dict[tuple[str, float, int], str] = {}


def base_sha(path: Path) -> str:
    """SHA-256 of the base file, remembered per (path, mtime, size) for the life of the process."""
    st = path.stat()
    key = (str(path), st.st_mtime, st.st_size)
    if key not in _BASE_SHA_CACHE:
        _BASE_SHA_CACHE[key] = sha256_file(path)
    return _BASE_SHA_CACHE[key]


def world_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache root: ``cache_dir`` if given, else ``$PRODA_CACHE``, else ``~/.cache/proda``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PRODA_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/proda").expanduser()


def ensure_world(
    name: str = "default", region: str | tuple | None = None, cache_dir: str | os.PathLike | None = None, **options: Any
) -> WorldPaths:
    """Return a built world from the cache, building it only when the cache key changed.

    The folder is ``<cache>/world/<name>/``; its ``manifest.json`` records a SHA-256 over (base
    file checksum, :data:`BUILDER_VERSION`, options). ``name`` that is a key of :data:`REGIONS` and
    no ``region`` selects that region. Extra ``options`` go to :func:`build_world` (``resolution``,
    ``seed``, ``exclude_antarctica``, ``n_sites``).
    """
    if region is None and name in REGIONS:
        region = name
    opts = world_options(region, **options)
    root = world_cache_dir(cache_dir) / "world" / name
    paths = WorldPaths.in_folder(root)
    key = cache_key(base_sha(BASE_WORLD), opts)
    if paths.manifest.exists():
        try:
            man = json.loads(paths.manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            man = {}
        files_ok = all(p.exists() for p in (paths.forcing, paths.covariates, paths.truth, paths.sites, paths.horizons))
        if man.get("key") == key and files_ok:
            return paths
    # build into a sibling temp folder, then swap, so a half-built world is never visible
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root.parent))
    try:
        build_world(tmp, region=region, **options)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return paths
