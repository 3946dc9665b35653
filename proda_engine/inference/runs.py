"""What every data-assimilation run shares: its folder, its report helpers, one thread per task.

:func:`start_run` creates (or reuses, with ``resume``) the run folder and writes ``config.yaml`` and
``provenance.json``; :func:`single_threaded` is the thread policy of a task; :func:`json_default`,
:func:`summary_stats` and :func:`parameter_coords` build ``report.json`` and the output datasets. Used by
the site-level pipeline (:mod:`.pipeline`) and batch assimilation (:mod:`.batch_da`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from proda_engine.data.writers import RunFolder, provenance
from proda_engine.inference.config import AssimilateConfig
from proda_engine.inference.sites import SiteData
from proda_engine.parameters import PARAMETER_NAMES, PARAMETERS

__all__ = ["BATCH_DIR", "REPORT_FILE", "json_default", "parameter_coords", "single_threaded", "start_run",
           "summary_stats"]

#: Sub-folder of a site-level run holding one file per finished batch.
BATCH_DIR = "batches"
#: The run's counts by reason.
REPORT_FILE = "report.json"


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """One thread for torch, numba and the BLAS/OpenMP pools while a task runs.

    Why: a task must produce the same bits in a one-thread Dask worker and in the caller's process
    (parallel reductions may sum in a different order), and the machine's cores are shared by the
    workers anyway.
    """
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    n_torch, n_numba = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)  # the solver's prange loops would otherwise spin on busy cores
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(n_torch)
        numba.set_num_threads(n_numba)


def _prepare_folder(config: AssimilateConfig) -> RunFolder:
    """The run folder ``config.out``; refuses one holding batch files of a run unless ``resume``."""
    out = Path(config.out)
    existing = sorted((out / BATCH_DIR).glob("batch_*.nc")) if out.exists() else []
    if existing and not config.resume:
        raise FileExistsError(f"{out} already holds {len(existing)} batch file(s) of a run; pass --resume "
                              "(config 'resume: true') to continue it, or choose another 'out' folder")
    return RunFolder.create(out.name, root=out.parent, exist_ok=True)


def _input_checksums(prov: dict[str, Any]) -> dict[str, str]:
    """File name → sha256 (names, not absolute paths: a moved data folder still resumes)."""
    return {f"{i:03d}:{Path(rec['path']).name}": rec["sha256"] for i, rec in enumerate(prov["inputs"])}


def start_run(config: AssimilateConfig, sites: SiteData, extra: dict[str, Any] | None = None
              ) -> tuple[RunFolder, str]:
    """Create/reuse the run folder, write ``config.yaml`` and ``provenance.json``; return the
    folder and the run fingerprint."""
    folder = _prepare_folder(config)
    prov = provenance(sites.inputs, extra=extra)
    fp = config.fingerprint(_input_checksums(prov))
    prov["fingerprint"] = fp
    prov["config"] = config.to_dict()
    folder.write_config(config.to_dict())  # AssimilateConfig.from_yaml reads it back equal
    folder.write_record(prov)
    return folder, fp


def parameter_coords() -> dict[str, Any]:
    """Coordinates of the ``parameter`` dim: name, lower/upper physical bounds, units and group."""
    return {
        "parameter": ("parameter", list(PARAMETER_NAMES)),
        "lower": ("parameter", np.array([p.lower for p in PARAMETERS]), {"long_name": "physical value at theta = 0"}),
        "upper": ("parameter", np.array([p.upper for p in PARAMETERS]), {"long_name": "physical value at theta = 1"}),
        "units": ("parameter", np.array([p.units for p in PARAMETERS])),
        "group": ("parameter", np.array([p.group for p in PARAMETERS])),
    }


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)``: numpy scalars and arrays as Python numbers and lists, anything else as str."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def summary_stats(x: np.ndarray) -> dict[str, float | int]:
    """``n``, ``mean``, ``median``, ``min``, ``max`` of ``x`` (only ``n`` = 0 when empty)."""
    if x.size == 0:
        return {"n": 0}
    return {"n": int(x.size), "mean": float(np.mean(x)), "median": float(np.median(x)),
            "min": float(np.min(x)), "max": float(np.max(x))}
