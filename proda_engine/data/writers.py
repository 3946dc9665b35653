"""Atomic writers and run folders.

Every file leaves the engine complete or not at all: data are written to a temporary file in the
target's folder, flushed to disk (``fsync``) and moved into place with :func:`os.replace` (atomic on
POSIX and Windows when source and target share a file system). If writing raises, the temporary
file is removed and an existing target is left untouched.

A :class:`RunFolder` (``runs/<name>/``) records what made a result (data contract §4):
``config.yaml`` (the validated configuration) and ``provenance.json`` (package version,
python/numpy/xarray/torch versions, UTC time, sha256 of every input file, command line).

One version key: every product, checkpoint and provenance record names the package version under
:data:`VERSION_KEY` (``proda_engine_version``), written by :func:`version_attrs`; :func:`read_version`
also accepts the older keys (``proda_version``, ``package_version``) of files already on disk.

Example
-------
>>> import tempfile, xarray as xr
>>> d = tempfile.mkdtemp()
>>> p = write_netcdf_atomic(xr.Dataset({"x": ("i", [1.0, 2.0])}), f"{d}/x.nc")
>>> p.name
'x.nc'
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from os import PathLike
from pathlib import Path
from typing import Any

import xarray as xr
import yaml

PACKAGE_NAME = "proda-engine"
#: The one attribute / record key naming the version of the package that wrote a file.
VERSION_KEY = "proda_engine_version"
#: Keys older files used for the same thing (read, and written beside VERSION_KEY where a reader
#: or test of that file type still expects them).
LEGACY_VERSION_KEYS: tuple[str, ...] = ("proda_version", "package_version")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _fsync_dir(folder: Path) -> None:
    # make the rename itself durable; not supported on every platform (e.g. Windows), hence best effort
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode() -> int:
    """The one file mode of every file the engine writes: 0666 minus the process umask.

    ``mkstemp`` creates 0600 files; without this a product would be unreadable by the group that
    shares a cache or a run folder.
    """
    um = os.umask(0)
    os.umask(um)
    return 0o666 & ~um


def atomic_write(path: str | PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_path)``, fsync, set :func:`_file_mode`, move onto ``path``; clean up on failure.

    The one atomic writer of the project: every file (netCDF, CSV, JSON, text, torch checkpoints)
    goes through it, so a reader never sees a partial file and every file has the same mode.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)
    return target


def write_netcdf_atomic(
    ds: xr.Dataset,
    path: str | PathLike,
    *,
    encoding: Mapping[str, Mapping[str, Any]] | None = None,
    engine: str | None = None,
) -> Path:
    """Write ``ds`` to netCDF at ``path`` atomically; returns the path.

    Args:
        ds: dataset to write (units/long_name attributes are the caller's job).
        path: target file; its folder is created if needed.
        encoding: per-variable netCDF encoding passed to :meth:`xarray.Dataset.to_netcdf`.
        engine: netCDF engine (default: xarray's choice, netCDF4 when installed).
    """

    def write(tmp: Path) -> None:
        ds.to_netcdf(tmp, mode="w", encoding=dict(encoding) if encoding else None, engine=engine)

    return atomic_write(path, write)


def write_bytes_atomic(data: bytes, path: str | PathLike) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename (never a partial file)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(text: str, path: str | PathLike, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8, ``\\n`` line endings as given); returns the path."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding=encoding, newline="") as fh:
            fh.write(text)

    return atomic_write(path, write)


_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz", ".zst": "zstd"}


def write_csv_atomic(table: Any, path: str | PathLike, **to_csv: Any) -> Path:
    """Write a pandas DataFrame as CSV at ``path`` atomically (``to_csv`` keywords passed on, e.g. ``index=False``).

    Compression follows the target's suffix as ``DataFrame.to_csv(path)`` would (the temporary
    file's ``.tmp`` suffix would otherwise turn it off).
    """
    to_csv.setdefault("compression", _COMPRESSION.get(Path(path).suffix.lower()))
    return atomic_write(path, lambda tmp: table.to_csv(tmp, **to_csv))


def write_npy_atomic(array: Any, path: str | PathLike) -> Path:
    """Write one array as ``.npy`` at ``path`` atomically.

    Through an open file: :func:`numpy.save` would append ``.npy`` to the temporary file's name.
    """

    def write(tmp: Path) -> None:
        import numpy as np

        with open(tmp, "wb") as fh:
            np.save(fh, array)

    return atomic_write(path, write)


def write_npz_atomic(path: str | PathLike, **arrays: Any) -> Path:
    """Write named arrays as an uncompressed ``.npz`` at ``path`` atomically (see :func:`write_npy_atomic`)."""

    def write(tmp: Path) -> None:
        import numpy as np

        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    return atomic_write(path, write)


def package_version() -> str:
    """Version of the installed ``proda-engine`` (``0.0.0+unknown`` in an uninstalled source tree)."""
    from proda_engine import __version__

    return __version__


def version_attrs(*legacy: str) -> dict[str, str]:
    """The version entry of a product's attrs, a checkpoint's metadata or a provenance record.

    ``{VERSION_KEY: version}``, plus each key of ``legacy`` (one of :data:`LEGACY_VERSION_KEYS`)
    with the same value for file types whose existing readers still look for it.

    >>> sorted(version_attrs())
    ['proda_engine_version']
    """
    bad = [k for k in legacy if k not in LEGACY_VERSION_KEYS]
    if bad:
        raise ValueError(f"version_attrs: unknown legacy key(s) {bad}; expected some of {LEGACY_VERSION_KEYS}")
    v = package_version()
    return {VERSION_KEY: v, **dict.fromkeys(legacy, v)}


def read_version(attrs: Mapping[str, Any]) -> str | None:
    """The package version recorded in ``attrs`` (netCDF attrs, metadata or a provenance record).

    Reads :data:`VERSION_KEY` first, then the legacy keys of older files; ``None`` if none is present.
    """
    for key in (VERSION_KEY, *LEGACY_VERSION_KEYS):
        if key in attrs and attrs[key] not in (None, ""):
            return str(attrs[key])
    return None


def write_product(ds: xr.Dataset, path: str | PathLike, **kwargs: Any) -> Path:
    """Write a product dataset atomically, stamped with :func:`version_attrs` (kwargs as
    :func:`write_netcdf_atomic`). The caller's dataset is not modified."""
    return write_netcdf_atomic(ds.assign_attrs(version_attrs()), path, **kwargs)


def sha256_file(path: str | PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _version(dist: str) -> str | None:
    # importlib.metadata avoids importing heavy packages (torch) just to read their version
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _config_to_dict(config: Any) -> Any:
    if isinstance(config, Mapping):
        return {str(k): _config_to_dict(v) for k, v in config.items()}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return _config_to_dict(dataclasses.asdict(config))
    for attr in ("to_dict", "model_dump", "dict"):  # a RunConfig's to_dict is its saved form (no derived keys)
        fn = getattr(config, attr, None)
        if callable(fn):
            return _config_to_dict(fn())
    if isinstance(config, (list, tuple)):
        return [_config_to_dict(v) for v in config]
    if isinstance(config, PathLike):
        return os.fspath(config)
    if hasattr(config, "item") and callable(config.item):  # numpy scalars
        return config.item()
    return config


def _expand_inputs(inputs: Iterable[str | PathLike]) -> list[Path]:
    out: list[Path] = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file())
        else:
            out.append(p)
    return out


def provenance(
    inputs: Iterable[str | PathLike] = (),
    *,
    argv: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Provenance record: versions, UTC time, sha256 of every input file (folders expanded), argv.

    Raises:
        FileNotFoundError: an input file does not exist (a record must not silently omit it).
    """
    files = _expand_inputs(inputs)
    checksums = []
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"provenance: input file {f} not found")
        checksums.append({"path": str(f.resolve()), "bytes": f.stat().st_size, "sha256": sha256_file(f)})
    rec: dict[str, Any] = {
        "package": PACKAGE_NAME,
        # the one key, plus package_version that provenance.json files have always carried
        **version_attrs("package_version"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {d: _version(d) for d in ("numpy", "scipy", "xarray", "pandas", "netCDF4", "torch")},
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command_line": list(sys.argv if argv is None else argv),
        "inputs": checksums,
    }
    if extra:
        rec["extra"] = _config_to_dict(dict(extra))
    return rec


@dataclasses.dataclass
class RunFolder:
    """A run's output folder ``<root>/<name>/`` with its configuration and provenance.

    >>> import tempfile
    >>> rf = RunFolder.create("demo", root=tempfile.mkdtemp())
    >>> rf.write_config({"n_sites": 10}).name
    'config.yaml'
    """

    path: Path

    @classmethod
    def create(cls, name: str, *, root: str | PathLike = "runs", exist_ok: bool = False) -> RunFolder:
        """Create ``<root>/<name>/``.

        Raises:
            ValueError: ``name`` is empty or contains path separators / leading dots.
            FileExistsError: the folder exists and ``exist_ok`` is False.
        """
        if not _RUN_NAME.match(name or ""):
            raise ValueError(f"run name: expected letters, digits, '.', '_' or '-' (not starting with '.'), "
                             f"found {name!r}")
        path = Path(root) / name
        if path.exists() and not exist_ok:
            raise FileExistsError(f"run folder {path} already exists (pass exist_ok=True to reuse it)")
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def at(cls, path: str | PathLike) -> RunFolder:
        """The run folder at an existing or new ``path`` chosen by the user (e.g. ``--out DIR``),
        created if needed; unlike :meth:`create` the folder's name is not restricted."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"run folder {p} is a file")
        p.mkdir(parents=True, exist_ok=True)
        return cls(p)

    def file(self, name: str) -> Path:
        """Path of a file inside the run folder."""
        return self.path / name

    def write_config(self, config: Any) -> Path:
        """Write the (already validated) configuration as ``config.yaml``.

        Accepts a mapping, a dataclass, or an object with ``model_dump()``/``to_dict()``.
        """
        data = _config_to_dict(config)
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
        return write_text_atomic(text, self.file("config.yaml"))

    def write_provenance(
        self,
        inputs: Iterable[str | PathLike] = (),
        *,
        argv: Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``provenance.json`` (see :func:`provenance`)."""
        return self.write_record(provenance(inputs, argv=argv, extra=extra))

    def write_record(self, record: Mapping[str, Any]) -> Path:
        """Write an already assembled provenance ``record`` (e.g. :func:`provenance` plus run-specific
        keys) as ``provenance.json``; values JSON cannot hold are written as strings."""
        text = json.dumps(dict(record), indent=2, sort_keys=False, default=str) + "\n"
        return write_text_atomic(text, self.file("provenance.json"))

    def write_dataset(self, ds: xr.Dataset, name: str, **kwargs: Any) -> Path:
        """Write a result dataset into the run folder atomically (``name`` like ``maps.nc``), stamped
        with the package version (:func:`write_product`)."""
        return write_product(ds, self.file(name), **kwargs)
