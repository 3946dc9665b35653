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
>>> AssimilateConfig.from_dict({"batch_sise": 10})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
proda_engine.config.ConfigError: assimilate config: unknown key 'batch_sise' (did you mean 'batch_size'?); ...
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from proda_engine.config import Expect, NonNegativeInt, PathStr, PositiveFloat, PositiveInt, RunConfig
from proda_engine.inference.mcmc import MCMCConfig

Mode = Literal["site", "batch"]

#: Keys that change *how* a run executes but not its numbers: excluded from the run fingerprint,
#: so a run may be resumed on another scheduler, with more workers or without a progress bar.
EXECUTION_KEYS = ("scheduler", "n_workers", "max_in_flight", "progress", "resume", "out")


def _paths(value: Any) -> Any:
    """One path -> a string; several (list/tuple) -> a list of strings (``pathlib.Path`` accepted)."""
    if isinstance(value, (list, tuple)):
        return [str(p) for p in value]
    return None if value is None else str(value)


_Paths = Annotated[str | list[str] | None, BeforeValidator(_paths)]
_SourceName = Annotated[str, Field(min_length=1), Expect("a catalog source name")]


class AssimilateConfig(RunConfig):
    """Settings of one assimilation run (site-level MCMC per profile, or one batch-DA fit).

    Every field's meaning is its ``description``. ``mcmc`` is an :class:`MCMCConfig` (a nested mapping in
    YAML) whose ``seed`` is always the run's ``seed``.
    """

    label: ClassVar[str] = "assimilate config"

    mode: Mode = Field("site", description='"site" (one posterior per profile, spec §(l)) or "batch" (one '
                       "spatially homogeneous parameter set fitted to all profiles jointly, the chapter's "
                       "baseline)")
    catalog: PathStr | None = Field(None, description="data catalog file (default: $PRODA_CATALOG or the "
                                    "repository's data_catalog.yaml)")
    profiles_source: _SourceName = Field(
        "world_profiles", description="catalog name of the observed profiles (default: the default world's twin "
        "WoSIS, world_profiles). Ignored when profiles_path is given")
    profiles_path: _Paths = Field(None, description="explicit profile folder or file(s) (WoSIS 2019 / 2023 or "
                                  "tidy CSV)")
    profiles_layout: Literal["wosis_2019", "wosis_2023", "tidy_csv"] | None = Field(
        None, description="expected layout of the profiles; None detects it")
    forcing_source: _SourceName = Field("world_forcing", description="catalog name of the forcing "
                                        "(world_forcing). Ignored when forcing_path is given")
    forcing_path: _Paths = Field(None, description="explicit CLM5-history-style forcing file(s)")
    max_distance_km: PositiveFloat | None = Field(
        100.0, description="profiles farther than this from the nearest valid forcing cell are skipped (reason "
        "no_forcing_cell_within_max_distance; the original skipped profiles without forcing). None = no limit")
    mcmc: MCMCConfig = Field(default_factory=MCMCConfig, description="MCMC settings (a nested mapping in YAML); "
                             "its seed is taken from seed")
    weights: Literal["rank", "depth_exp"] = Field("rank", description='depth weights, "rank" (code, default) or '
                                                  '"depth_exp" (chapter), spec §(k)')
    interpolation: Literal["pchip", "linear_clamped"] = Field(
        "pchip", description='observation operator, "pchip" (PRODA) or "linear_clamped"')
    closure: Literal["conservative", "legacy"] = Field(
        "conservative", description='vertical-transport closure, "conservative" (default) or "legacy"')
    grid: Literal["clm5_20", "clm45_10"] = Field("clm5_20", description="vertical grid name (clm5_20; clm45_10 "
                                                 "needs 10-layer forcing)")
    backend: Literal["auto", "numba", "torch"] = Field("auto", description="steady-state solver backend")
    batch_size: PositiveInt = Field(100, description="sites per task (site mode): the unit of work, of "
                                    "resumption and of output files")
    scheduler: Annotated[str, Field(min_length=1, pattern=r"\S"),
                         Expect("null, 'inline' or a scheduler address")] | None = Field(
        None, description="None -> a local Dask cluster of n_workers processes; 'inline' -> run the batches in "
        "this process (debugging, tests); any other string -> address of an existing Dask scheduler (e.g. "
        "tcp://10.0.0.5:8786)")
    n_workers: PositiveInt = Field(2, description="workers of the local cluster (1 thread each)")
    max_in_flight: PositiveInt | None = Field(
        None, description="tasks submitted but not yet gathered (None -> 2 * n_workers); bounds memory and what "
        "an interruption loses")
    seed: NonNegativeInt = Field(0, description="base seed of the per-(site, chain) random streams")
    out: Annotated[PathStr, Field(pattern=r"\S"), Expect("a folder path")] = Field(
        "runs/assimilate", description="run folder; batches/, posterior.nc (or batch_da.nc), report.json, "
        "config.yaml and provenance.json are written there")
    resume: bool = Field(False, description="reuse readable batch files of an earlier run with the same "
                         "fingerprint. Without it an existing run folder with batch files is an error")
    max_sites: PositiveInt | None = Field(None, description="assimilate only the first N usable profiles "
                                          "(demos); None = all")
    exclude_negative_e: bool = Field(
        True, description="mark profiles whose posterior-mean fit has Nash-Sutcliffe E < 0 as not usable (theta "
        "NaN in posterior.nc), as in the chapter")
    batch_chunk_sites: PositiveInt = Field(2000, description="batch mode: sites solved per call inside one cost "
                                           "evaluation (memory bound)")
    batch_draws: NonNegativeInt = Field(
        0, description="batch mode: posterior draws run through the model and averaged for the reported fit (the "
        "chapter used 1,000); 0 evaluates the posterior mean only")
    progress: bool = Field(True, description="show a progress bar (sites done, mean acceptance, ETA)")

    # ---- validation ---------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _one_seed(cls, data: Any) -> Any:
        """``mcmc`` as an :class:`MCMCConfig` keyed by the run's ``seed`` (one seed for the run: the MCMC
        streams are keyed by it); a different ``mcmc.seed`` in the mapping is an error."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        mc = data.get("mcmc")
        seed = data.get("seed", 0)
        if isinstance(mc, Mapping) and "seed" in mc and mc["seed"] != seed:
            raise ValueError(f"assimilate config: key 'mcmc.seed' ({mc['seed']}) differs from 'seed' ({seed}); "
                             "set the run's seed with the top-level 'seed' only")
        if mc is None:
            mc = MCMCConfig()
        elif isinstance(mc, Mapping):
            try:
                mc = MCMCConfig.from_dict(mc)
            except ValueError as exc:
                raise ValueError(f"assimilate config: key 'mcmc': {exc}") from None
        elif not isinstance(mc, MCMCConfig):
            raise ValueError(f"assimilate config: key 'mcmc': expected a mapping of MCMC settings, found {mc!r}")
        if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 and mc.seed != seed:
            mc = mc.model_copy(update={"seed": seed})
        data["mcmc"] = mc
        return data

    @field_validator("profiles_path", "forcing_path")
    @classmethod
    def _no_empty_path(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, str) and not value.strip():
            raise ValueError("assimilate config: a profiles/forcing path is an empty string")
        return value

    # ---- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-serialisable mapping (the form written to ``config.yaml``); ``mcmc`` without its
        ``seed`` (the top-level seed is authoritative)."""
        d = super().to_dict()
        d["mcmc"].pop("seed")
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
