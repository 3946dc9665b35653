"""Validated configuration of a data-assimilation run (``proda assimilate --config run.yml``).

One :class:`AssimilateConfig` says *what* to assimilate (observations, forcing, MCMC settings,
weights, mode) and *where* (output folder, scheduler); :mod:`proda_engine.inference.pipeline` and
:mod:`proda_engine.inference.batch_da` say how. Unknown keys are rejected with a message naming the
key, so a typo never silently falls back to a default. The validated config is copied into the run
folder (``config.yaml``) together with the package version and input checksums.

Example
-------
>>> cfg = AssimilateConfig.from_dict({"mcmc": {"n_test": 300, "n_formal": 600}, "max_sites": 50})
>>> cfg.mcmc.n_formal, cfg.batch_size, cfg.mcmc.seed == cfg.seed
(600, 100, True)
>>> AssimilateConfig.from_dict({"batch_sise": 10})
Traceback (most recent call last):
...
ValueError: assimilate config: unknown key 'batch_sise' (did you mean 'batch_size'?); allowed keys: ...
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import yaml

from proda_engine.inference.mcmc import MCMCConfig

Mode = Literal["site", "batch"]

#: Keys that change *how* a run executes but not its numbers: excluded from the run fingerprint,
#: so a run may be resumed on another scheduler, with more workers or without a progress bar.
EXECUTION_KEYS = ("scheduler", "n_workers", "max_in_flight", "progress", "resume", "out")


@dataclass(frozen=True)
class AssimilateConfig:
    """Settings of one assimilation run (site-level MCMC per profile, or one batch-DA fit).

    Attributes:
        mode: ``"site"`` (one posterior per profile, spec §(l)) or ``"batch"`` (one spatially
            homogeneous parameter set fitted to all profiles jointly, the chapter's baseline).
        catalog: data catalog file (default: ``$PRODA_CATALOG`` or the repository's
            ``data_catalog.yaml``).
        profiles_source: catalog name of the observed profiles (default: the default world's twin
            WoSIS, ``world_profiles``). Ignored when ``profiles_path`` is given.
        profiles_path: explicit profile folder or file(s) (WoSIS 2019 / 2023 or tidy CSV).
        profiles_layout: expected layout (``wosis_2019``, ``wosis_2023``, ``tidy_csv``); None detects.
        forcing_source: catalog name of the forcing (``world_forcing``). Ignored when
            ``forcing_path`` is given.
        forcing_path: explicit CLM5-history-style forcing file(s).
        max_distance_km: profiles farther than this from the nearest valid forcing cell are skipped
            (reason ``no_forcing_cell_within_max_distance``; the original skipped profiles without
            forcing). None = no limit.
        mcmc: :class:`MCMCConfig` (a nested dict in YAML). Its ``seed`` is taken from ``seed``.
        weights: depth weights, ``"rank"`` (code, default) or ``"depth_exp"`` (chapter), spec §(k).
        interpolation: observation operator, ``"pchip"`` (PRODA) or ``"linear_clamped"``.
        closure: vertical-transport closure, ``"conservative"`` (default) or ``"legacy"``.
        grid: vertical grid name (``clm5_20``; ``clm45_10`` needs 10-layer forcing).
        backend: steady-state solver backend (``auto``, ``numba``, ``torch``).
        batch_size: sites per task (site mode): the unit of work, of resumption and of output files.
        scheduler: None → a local Dask cluster of ``n_workers`` processes; ``"inline"`` → run the
            batches in this process (debugging, tests); any other string → address of an existing
            Dask scheduler (e.g. ``tcp://10.0.0.5:8786``).
        n_workers: workers of the local cluster (1 thread each).
        max_in_flight: tasks submitted but not yet gathered (None → ``2 * n_workers``); bounds memory
            and what an interruption loses.
        seed: base seed of the per-(site, chain) random streams.
        out: run folder; ``batches/``, ``posterior.nc`` (or ``batch_da.nc``), ``report.json``,
            ``config.yaml`` and ``provenance.json`` are written there.
        resume: reuse readable batch files of an earlier run with the same fingerprint. Without it
            an existing run folder with batch files is an error.
        max_sites: assimilate only the first N usable profiles (demos); None = all.
        exclude_negative_e: mark profiles whose posterior-mean fit has Nash–Sutcliffe E < 0 as not
            usable (``theta`` NaN in ``posterior.nc``), as in the chapter (on by default).
        batch_chunk_sites: batch mode: sites solved per call inside one cost evaluation (memory bound).
        batch_draws: batch mode: posterior draws run through the model and averaged for the
            reported fit (the chapter used 1,000); 0 evaluates the posterior mean only.
        progress: show a progress bar (sites done, mean acceptance, ETA).
    """

    mode: Mode = "site"
    catalog: str | None = None
    profiles_source: str = "world_profiles"
    profiles_path: str | list[str] | None = None
    profiles_layout: str | None = None
    forcing_source: str = "world_forcing"
    forcing_path: str | list[str] | None = None
    max_distance_km: float | None = 100.0
    mcmc: MCMCConfig = field(default_factory=MCMCConfig)
    weights: Literal["rank", "depth_exp"] = "rank"
    interpolation: Literal["pchip", "linear_clamped"] = "pchip"
    closure: Literal["conservative", "legacy"] = "conservative"
    grid: str = "clm5_20"
    backend: Literal["auto", "numba", "torch"] = "auto"
    batch_size: int = 100
    scheduler: str | None = None
    n_workers: int = 2
    max_in_flight: int | None = None
    seed: int = 0
    out: str = "runs/assimilate"
    resume: bool = False
    max_sites: int | None = None
    exclude_negative_e: bool = True
    batch_chunk_sites: int = 2000
    batch_draws: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        mc = self.mcmc
        if mc is None:
            mc = MCMCConfig()
        elif isinstance(mc, dict):
            mc = MCMCConfig.from_dict(mc)
        elif not isinstance(mc, MCMCConfig):
            raise ValueError(f"assimilate config: key 'mcmc': expected a mapping of MCMC settings, found {mc!r}")
        # One seed for the run: the MCMC streams are keyed by it.
        if mc.seed != self.seed:
            mc = dataclasses.replace(mc, seed=self.seed)
        object.__setattr__(self, "mcmc", mc)
        for key in ("profiles_path", "forcing_path"):
            v = getattr(self, key)
            if isinstance(v, (list, tuple)):
                object.__setattr__(self, key, [str(p) for p in v])
            elif v is not None:
                object.__setattr__(self, key, str(v))
        _choice("mode", self.mode, ("site", "batch"))
        _choice("weights", self.weights, ("rank", "depth_exp"))
        _choice("interpolation", self.interpolation, ("pchip", "linear_clamped"))
        _choice("closure", self.closure, ("conservative", "legacy"))
        _choice("backend", self.backend, ("auto", "numba", "torch"))
        _choice("grid", self.grid, ("clm5_20", "clm45_10"))
        if self.profiles_layout is not None:
            _choice("profiles_layout", self.profiles_layout, ("wosis_2019", "wosis_2023", "tidy_csv"))
        _positive_int("batch_size", self.batch_size)
        _positive_int("n_workers", self.n_workers)
        _positive_int("batch_chunk_sites", self.batch_chunk_sites)
        if self.max_in_flight is not None:
            _positive_int("max_in_flight", self.max_in_flight)
        if self.max_sites is not None:
            _positive_int("max_sites", self.max_sites)
        if not isinstance(self.batch_draws, int) or self.batch_draws < 0:
            raise ValueError(f"assimilate config: key 'batch_draws': expected an integer >= 0, "
                             f"found {self.batch_draws!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"assimilate config: key 'seed': expected an integer >= 0, found {self.seed!r}")
        if self.max_distance_km is not None and not self.max_distance_km > 0:
            raise ValueError(f"assimilate config: key 'max_distance_km': expected > 0 or null, "
                             f"found {self.max_distance_km!r}")
        if self.scheduler is not None and (not isinstance(self.scheduler, str) or not self.scheduler.strip()):
            raise ValueError(f"assimilate config: key 'scheduler': expected null, 'inline' or a scheduler "
                             f"address, found {self.scheduler!r}")
        if not str(self.out).strip():
            raise ValueError("assimilate config: key 'out': expected a folder path, found an empty string")
        for key in ("profiles_source", "forcing_source"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"assimilate config: key {key!r}: expected a catalog source name")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AssimilateConfig:
        """Build from a mapping (a parsed YAML file); unknown keys are rejected by name."""
        d = dict(d or {})
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"assimilate config: unknown key {key!r}{hint}; allowed keys: {', '.join(names)}")
        mc = d.get("mcmc")
        if mc is not None and not isinstance(mc, (dict, MCMCConfig)):
            raise ValueError(f"assimilate config: key 'mcmc': expected a mapping of MCMC settings, found {mc!r}")
        if isinstance(mc, dict) and "seed" in mc:
            top = d.get("seed", 0)
            if mc["seed"] != top:
                raise ValueError(f"assimilate config: key 'mcmc.seed' ({mc['seed']}) differs from 'seed' ({top}); "
                                 "set the run's seed with the top-level 'seed' only")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | PathLike) -> AssimilateConfig:
        """Read and validate a YAML config file."""
        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"assimilate config: file {p} not found") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"{p.name}: cannot be parsed as YAML ({exc})") from exc
        if raw is not None and not isinstance(raw, dict):
            raise ValueError(f"{p.name}: expected a mapping of settings, found {type(raw).__name__}")
        try:
            return cls.from_dict(raw)
        except ValueError as exc:
            raise ValueError(f"{p.name}: {exc}") from exc

    def replace(self, **changes: Any) -> AssimilateConfig:
        """A copy with some keys changed (validated again)."""
        return self.from_dict(self.to_dict() | changes)

    # ---- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-serialisable mapping (the form written to ``config.yaml``)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        mc = self.mcmc.to_dict()
        mc.pop("seed")  # the top-level seed is authoritative
        d["mcmc"] = mc
        return d

    def science_dict(self) -> dict[str, Any]:
        """The keys that decide the numbers (everything except :data:`EXECUTION_KEYS` and the
        MCMC progress flag)."""
        d = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_KEYS}
        d["mcmc"] = {k: v for k, v in d["mcmc"].items() if k != "progress"}
        return d

    def fingerprint(self, input_checksums: dict[str, str] | None = None) -> str:
        """sha256 over the science keys and the input checksums: batch files carry it, and a
        resumed run only reuses batches with the same fingerprint."""
        payload = {"config": self.science_dict(), "inputs": dict(sorted((input_checksums or {}).items()))}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def in_flight(self) -> int:
        return self.max_in_flight if self.max_in_flight is not None else 2 * self.n_workers


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"assimilate config: key {key!r}: expected one of {', '.join(allowed)}, found {value!r}")


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"assimilate config: key {key!r}: expected a positive integer, found {value!r}")
