"""Vectorised adaptive-Metropolis MCMC over (sites x chains), spec §(l).

The site-level data assimilation of PRODA runs, for every profile, three chains of a *test run*
(uniform random-walk steps) followed by a *formal run* (adaptive-Metropolis multivariate-normal
steps), with acceptance-rate control and restarts. The model is expensive but batched, so this
engine advances **all sites and chains together**: one call of the cost function per iteration
evaluates every active row (row = one chain of one site).

Cost-function contract
----------------------
``cost_fn(theta, site) -> cost`` or ``-> (cost, pred)``

* ``theta``: (n, D) float64 proposals in the open unit box.
* ``site``: (n,) int, the local site index (0..S-1) of each row, so the function can pick the
  site's forcing / observations. Rows of the same site may appear several times (one per chain).
* ``cost``: (n,) float; non-finite = failed evaluation (e.g. singular solve). The proposal is
  rejected (clean mode) and counted.
* ``pred`` (optional): (n, K) model prediction at the K observation slots of that site (NaN
  allowed), used to choose the chain by RMSE against ``obs``.

Algorithm (clean default; differences of the original in brackets)
-----------------------------------------------------------------
Per row, starting at θ0 (0.5 everywhere) with ``J0 = J(θ0)``:

1. Test run, ``n_test`` iterations: ``θ' = θ + (U - 0.5)/a``, ``U ~ U(0,1)^D``. All states are
   recorded into a running (Welford) mean/covariance. If fewer than ``min_test_accepts`` proposals
   were accepted, ``a ← 1.1 a`` and the test run restarts from θ0 (at most ``max_restarts`` times,
   then the row fails). [legacy: restart from the current state; on the third failure reset
   ``a = 5`` and disable the check for that row.]
2. Formal run, ``n_formal`` iterations: ``θ' ~ N(θ, Σ)``, ``Σ = f(s, D) cov + ε I`` with
   ``f = s²/D`` (``scale_mode="s2_over_d"``, Haario et al. 2001; default) or ``s/D``
   (``"s_over_d"``, the original code). ``cov`` is the test-run covariance until
   ``t = adapt_start``, then the covariance of all formal-run records 1..t, maintained by a
   Welford update (O(D²) per row and iteration, no pass over the history) and re-factorised by a
   batched Cholesky (jitter fallback) every ``adapt_every`` iterations. [legacy: the reference cost
   is reset to J0 at the start of the formal run.]
3. Proposals outside (0,1)^D are redrawn (only the offending rows, at most ``max_redraws`` times;
   a row still outside counts as a rejected, failed proposal). As in the original, the acceptance
   ratio is **not** corrected for this truncation; with the posterior well inside the box the
   effect is negligible, near a bound it biases the chain slightly towards the interior.
4. Acceptance: ``log U <= -ΔJ β_t`` with ``β_t = 1`` (``tempering="none"``: standard Metropolis
   targeting ``exp(-J)``) or ``β_t = ln(t+2)`` (``"log"``: the original's annealing; it sharpens
   the posterior, roughly by a factor ``1/sqrt(ln(t+2))`` in sd late in the run, so it is **not**
   a Bayesian posterior).
5. Acceptance control after the formal run: rate < 10 % → ``s ← 0.7 s``, > 50 % → ``s ← 2 s``, and
   the whole chain restarts (test run included) from θ0; more than ``max_restarts`` restarts →
   the row fails with a reason. [legacy: the rate is the one at the last acceptance, and the
   restart count is cumulative over the chains of a site.]

Rows restart independently: every row carries its own phase and iteration counter, and all active
rows (whatever their phase) are advanced in the same global step, so the batch stays full.

Storage
-------
Memory is O(rows x stored samples x D) float32. ``posterior="chain"`` (default) stores the chain
state every ``thin``-th formal iteration after burn-in (``burn_in`` fraction of the iterations),
i.e. the standard MCMC estimator with repeats. ``posterior="accepted"`` (original) stores every
``thin``-th **accepted** state and discards the first ``burn_in`` fraction of the accepted samples
afterwards; note that accepted-only samples weight each state by its probability of being left,
which inflates the tails, so it is kept for parity only. ``thin=None`` keeps about ``max_stored``
samples per chain.

Performance
-----------
The per-row Welford update, the scaled Cholesky factorisation and the proposal ``θ + L z`` are
small numba kernels working in place (no (B, D, D) temporaries). ``benchmarks/mcmc_core.py``
measures the sampler overhead per iteration against one structured solve of the same rows;
``adapt_every > 1`` cuts the Cholesky cost proportionally (adaptation diminishes as 1/t anyway).

Random numbers and determinism
------------------------------
Each row (site, chain) has its own counter-based stream: a 64-bit key from
``numpy.random.SeedSequence([seed, site_id, chain])`` and a per-row draw counter, hashed with the
SplitMix64 finaliser. A row consumes random numbers only as a function of its own path, so results
are bit-identical for a seed regardless of how sites are batched (in-process or on a Dask cluster),
provided the cost function returns the same values for a row regardless of the batch. This
replaces one ``numpy.random.Generator`` per site, which would need a Python loop over sites at
every iteration, by a fully vectorised draw.

Example
-------
>>> import numpy as np
>>> def cost_fn(theta, site):
...     return 0.5 * (((theta - 0.5) / 0.1) ** 2).sum(axis=1)
>>> cfg = MCMCConfig(n_test=300, n_formal=600, seed=1, progress=False, mode="none")
>>> res = run_mcmc(cost_fn, n_sites=2, n_params=2, config=cfg)
>>> res.mean.shape
(2, 2)
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Self

import numba
import numpy as np
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from proda_engine.config import (
    Expect,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    RunConfig,
)
from proda_engine.inference.diagnostics import gelman_rubin, gev_mode, kde_mode
from proda_engine.parameters import N_PARAMS, PARAMETER_NAMES

CostFn = Callable[[np.ndarray, np.ndarray], "np.ndarray | tuple[np.ndarray, np.ndarray]"]

# Row phases.
TEST, FORMAL, DONE, FAILED = 0, 1, 2, 3

#: Site status codes of :class:`MCMCResult`.
STATUS_OK, STATUS_PARTIAL, STATUS_FAILED = 0, 1, 2
STATUS_MEANING = {
    STATUS_OK: "all chains completed",
    STATUS_PARTIAL: "some chains failed; summaries use the completed ones",
    STATUS_FAILED: "no usable chain",
}


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------
class MCMCConfig(RunConfig):
    """Validated MCMC settings (spec §(l)). Research defaults; tests use small ``n_test/n_formal``.

    Every field's meaning is its ``description``. ``accept_window`` is ``(lo, hi)`` with
    ``0 <= lo < hi <= 1``; ``scale_down < 1 < scale_up``.
    """

    label: ClassVar[str] = "MCMC config"
    unknown_template: ClassVar[str] = "unknown MCMC config keys: {unknown}; valid keys: {valid}"

    n_chains: PositiveInt = Field(3, description="independent chains per site (3)")
    n_test: PositiveInt = Field(20000, description="iterations of the test run (20,000)")
    n_formal: Annotated[int, Field(ge=2), Expect("an integer >= 2")] = Field(
        50000, description="iterations of the formal run (50,000)")
    step_a: PositiveFloat = Field(5.0, description="test-run step parameter a; steps are uniform on ±0.5/a per "
                                  "component")
    a_growth: PositiveFloat = Field(1.1, description="a <- a_growth · a after a test run with too few accepts")
    min_test_accepts: NonNegativeInt = Field(50, description="accepts required in a test run (50)")
    scale_s: PositiveFloat = Field(2.4, description="proposal scale s")
    scale_mode: Literal["s_over_d", "s2_over_d"] = Field(
        "s2_over_d", description='"s2_over_d" (Σ = s²/D cov, default, Haario) or "s_over_d" (Σ = s/D cov, the '
        "original code)")
    adapt_start: Annotated[int, Field(ge=2), Expect("an integer >= 2")] | None = Field(
        None, description="formal iteration after which Σ follows the running covariance; None -> "
        "min(4000, n_formal // 10)")
    adapt_every: PositiveInt = Field(1, description="re-factorise Σ every this many iterations (spec: 1)")
    cov_eps: NonNegativeFloat = Field(1e-10, description="ε added to the diagonal of Σ (Haario's regulariser), "
                                      "unit-box units²")
    accept_window: Annotated[tuple[float, float], Field(strict=False)] = Field(
        (0.10, 0.50), description="acceptable formal-run acceptance rate (0.10, 0.50); the chapter uses 0.15")
    scale_down: PositiveFloat = Field(0.7, description="s multiplier for too-low acceptance (0.7)")
    scale_up: PositiveFloat = Field(2.0, description="s multiplier for too-high acceptance (2)")
    max_restarts: NonNegativeInt = Field(5, description="restarts allowed per row (per site under legacy) before "
                                         "it fails")
    tempering: Literal["none", "log"] = Field("none", description='"none" (exp(-ΔJ), default) or "log" '
                                              "(exp(-ΔJ ln(t+2)), the original)")
    burn_in: Annotated[float, Field(ge=0.0, lt=1.0), Expect("in [0, 1)")] = Field(
        0.5, description='fraction discarded (of the iterations for posterior="chain", of the accepted samples '
        'for "accepted")')
    posterior: Literal["chain", "accepted"] = Field("chain", description='"chain" (all post-burn-in states, '
                                                    'default) or "accepted" (original)')
    thin: PositiveInt | None = Field(None, description="store every thin-th sample; None -> keep about max_stored")
    max_stored: Annotated[int, Field(ge=2), Expect("an integer >= 2")] = Field(
        2000, description="samples kept per row when thin is None")
    max_redraws: NonNegativeInt = Field(1000, description="bound on redraws of out-of-box proposals per iteration")
    chain_choice: Literal["rmse", "pooled"] = Field(
        "rmse", description='"rmse" (lowest RMSE of the mean prediction vs obs; lowest mean cost when there are '
        'no predictions; the original) or "pooled" (all completed chains pooled)')
    mode: Literal["gev", "kde", "none"] = Field("gev", description='"gev" (GEV-fit mode, original "MLE"), "kde" '
                                                'or "none"')
    gev_max_samples: PositiveInt = Field(2000, description="samples used per GEV fit")
    rhat_threshold: PositiveFloat = Field(1.1, description="R-hat flag threshold (1.1)")
    seed: NonNegativeInt = Field(0, description="base seed; streams are keyed by (seed, site_id, chain)")
    legacy: bool = Field(False, description="reproduce the original's bookkeeping quirks (see module docstring)")
    progress: bool = Field(True, description="show a tqdm progress bar")
    keep_samples: bool = Field(False, description="keep the stored samples in the result (S, C, N, D) float32")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        lo, hi = self.accept_window
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"MCMC config: key 'accept_window': expected 0 <= lo < hi <= 1, found {[lo, hi]}")
        if not self.scale_down < 1 < self.scale_up:
            raise ValueError(f"MCMC config: need 0 < scale_down < 1 < scale_up, found scale_down={self.scale_down}, "
                             f"scale_up={self.scale_up}")
        return self

    @classmethod
    def original(cls, **overrides: Any) -> MCMCConfig:
        """The original code's behaviour: log tempering, Σ = s/D cov, accepted-only posterior and
        the bookkeeping quirks (``legacy=True``)."""
        base: dict[str, Any] = {"tempering": "log", "scale_mode": "s_over_d", "posterior": "accepted",
                                "legacy": True}
        return cls.from_dict(base | overrides)

    @property
    def adapt_start_resolved(self) -> int:
        return self.adapt_start if self.adapt_start is not None else max(2, min(4000, self.n_formal // 10))

    def scale_factor(self, s: np.ndarray, n_params: int) -> np.ndarray:
        """``s²/D`` or ``s/D`` for the proposal covariance."""
        return (s**2 if self.scale_mode == "s2_over_d" else s) / n_params

    @property
    def burn_iter(self) -> int:
        return math.floor(self.burn_in * self.n_formal)

    @property
    def thin_resolved(self) -> int:
        if self.thin is not None:
            return self.thin
        span = self.n_formal - self.burn_iter if self.posterior == "chain" else self.n_formal
        return max(1, math.ceil(span / self.max_stored))

    def capacity(self) -> int:
        """Stored samples per row."""
        if self.posterior == "chain":
            return (self.n_formal - self.burn_iter) // self.thin_resolved
        return self.n_formal // self.thin_resolved


# --------------------------------------------------------------------------------------------------
# Counter-based random numbers (SplitMix64), one stream per row
# --------------------------------------------------------------------------------------------------
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_M53 = 2.0**-53


def _splitmix(x: np.ndarray) -> np.ndarray:
    # Array uint64 arithmetic wraps modulo 2**64, which is exactly what the hash needs.
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


class _RowStreams:
    """Independent, batch-invariant random streams: draw ``k`` of row ``r`` is
    ``splitmix64(key_r + k·γ)`` (the SplitMix64 sequence seeded with ``key_r``)."""

    def __init__(self, seed: int, site_ids: np.ndarray, chains: np.ndarray) -> None:
        self.keys = np.array(
            [np.random.SeedSequence([int(seed), int(s), int(c)]).generate_state(1, np.uint64)[0]
             for s, c in zip(site_ids, chains)],
            dtype=np.uint64,
        )
        self.counter = np.zeros(self.keys.size, dtype=np.uint64)

    def uniform(self, rows: np.ndarray, n: int) -> np.ndarray:
        """(len(rows), n) uniforms on (0, 1]."""
        k = self.counter[rows][:, None] + np.arange(1, n + 1, dtype=np.uint64)[None, :]
        z = _splitmix(self.keys[rows][:, None] + k * _GAMMA)
        self.counter[rows] += np.uint64(n)
        return ((z >> np.uint64(11)).astype(np.float64) + 1.0) * _TWO_M53

    def normal(self, rows: np.ndarray, n: int) -> np.ndarray:
        """(len(rows), n) standard normals (Box–Muller)."""
        h = (n + 1) // 2
        u = self.uniform(rows, 2 * h)
        r = np.sqrt(-2.0 * np.log(u[:, :h]))
        ang = 2.0 * np.pi * u[:, h:]
        return np.concatenate([r * np.cos(ang), r * np.sin(ang)], axis=1)[:, :n]


# --------------------------------------------------------------------------------------------------
# Linear algebra helpers
# --------------------------------------------------------------------------------------------------
def batched_cholesky(cov: np.ndarray) -> tuple[np.ndarray, int]:
    """Lower Cholesky factors of (n, D, D) SPD matrices, with a per-matrix jitter fallback.

    The batched factorisation is tried first; if any matrix is not numerically positive definite,
    each failing one gets ``jitter · mean(diag)`` added, growing tenfold from 1e-12 until it
    factorises (a diagonal factor is the last resort).

    Returns:
        (factors, number of matrices that needed jitter)
    """
    try:
        return np.linalg.cholesky(cov), 0
    except np.linalg.LinAlgError:
        pass
    out = np.empty_like(cov)
    n_fix = 0
    eye = np.eye(cov.shape[-1])
    for i in range(cov.shape[0]):
        c = 0.5 * (cov[i] + cov[i].T)
        try:
            out[i] = np.linalg.cholesky(c)
            continue
        except np.linalg.LinAlgError:
            n_fix += 1
        scale = max(float(np.mean(np.abs(np.diag(c)))), 1e-12)
        for p in range(-12, 1):
            try:
                out[i] = np.linalg.cholesky(c + (10.0**p) * scale * eye)
                break
            except np.linalg.LinAlgError:
                continue
        else:
            out[i] = np.diag(np.sqrt(np.maximum(np.diag(c), 1e-12)))
    return out, n_fix


# numba kernels for the per-iteration hot spots (thousands of rows, D = 21): they work in place
# on the per-row arrays, so no (B, D, D) temporaries are gathered or scattered. Every row is
# processed independently, which keeps the results independent of the batch composition.
@numba.njit(cache=True)
def _welford_kernel(rows: np.ndarray, x: np.ndarray, n: np.ndarray, mean: np.ndarray,
                    m2: np.ndarray) -> None:  # pragma: no cover - compiled
    d = x.shape[1]
    delta = np.empty(d)
    for i in range(rows.size):
        r = rows[i]
        n[r] += 1
        inv = 1.0 / n[r]
        for j in range(d):
            delta[j] = x[i, j] - mean[r, j]
            mean[r, j] += delta[j] * inv
        for j in range(d):
            for k in range(d):
                m2[r, j, k] += delta[j] * (x[i, k] - mean[r, k])


@numba.njit(cache=True)
def _scaled_cholesky_kernel(m2: np.ndarray, n: np.ndarray, factor: np.ndarray, eps: float,
                            rows: np.ndarray, out: np.ndarray) -> np.ndarray:  # pragma: no cover
    """out[r] = chol(factor · M2[r]/(n[r]-1) + eps I) for r in rows; info = 1 where not SPD."""
    d = m2.shape[1]
    info = np.zeros(rows.size, dtype=np.int64)
    for i in range(rows.size):
        r = rows[i]
        w = factor[i] / max(n[r] - 1, 1)
        for j in range(d):
            s = w * m2[r, j, j] + eps
            for k in range(j):
                s -= out[r, j, k] * out[r, j, k]
            if not s > 0.0:  # also catches NaN
                info[i] = 1
                break
            djj = np.sqrt(s)
            out[r, j, j] = djj
            for q in range(j + 1, d):
                t = w * m2[r, q, j]
                for k in range(j):
                    t -= out[r, q, k] * out[r, j, k]
                out[r, q, j] = t / djj
                out[r, j, q] = 0.0
    return info


@numba.njit(cache=True)
def _mvn_kernel(theta: np.ndarray, chol: np.ndarray, rows: np.ndarray,
                z: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """theta[r] + L[r] z_i for r = rows[i]."""
    d = theta.shape[1]
    out = np.empty((rows.size, d))
    for i in range(rows.size):
        r = rows[i]
        for j in range(d):
            acc = theta[r, j]
            for k in range(j + 1):
                acc += chol[r, j, k] * z[i, k]
            out[i, j] = acc
    return out


def _rows_index(rows: np.ndarray, n_total: int) -> np.ndarray | slice:
    """A slice when ``rows`` is every row in order: basic indexing avoids gather/scatter copies of
    the (B, D, D) arrays, which dominate the per-step overhead for thousands of rows."""
    if rows.size == n_total and (rows.size == 0 or (rows[0] == 0 and rows[-1] == n_total - 1)):
        return slice(None)
    return rows


class _Welford:
    """Running mean and scatter matrix per row; ``cov = M2 / (n - 1)``.

    Update with a new record x: ``n += 1; δ = x - mean; mean += δ/n; M2 += δ (x - mean)ᵀ``.
    """

    def __init__(self, n_rows: int, d: int) -> None:
        self.n = np.zeros(n_rows, dtype=np.int64)
        self.mean = np.zeros((n_rows, d))
        self.m2 = np.zeros((n_rows, d, d))

    def reset(self, rows: np.ndarray) -> None:
        self.n[rows] = 0
        self.mean[rows] = 0.0
        self.m2[rows] = 0.0

    def update(self, rows: np.ndarray, x: np.ndarray) -> None:
        _welford_kernel(rows, np.ascontiguousarray(x, dtype=np.float64), self.n, self.mean, self.m2)

    def scaled_cov(self, rows: np.ndarray, factor: np.ndarray) -> np.ndarray:
        """``factor · M2 / (n - 1)`` for ``rows``, shape (n, D, D) (a new array)."""
        ix = _rows_index(rows, self.n.size)
        w = factor / np.maximum(self.n[ix] - 1, 1)
        return self.m2[ix] * w[:, None, None]


# --------------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------------
@dataclass
class MCMCResult:
    """Per-site posterior summaries and per-chain bookkeeping (unit-interval parameters).

    Shapes: S sites, C chains, D parameters.
    """

    site_ids: np.ndarray  # (S,)
    parameter_names: tuple[str, ...]
    mean: np.ndarray  # (S, D) posterior mean (NN training target)
    sd: np.ndarray  # (S, D)
    mode: np.ndarray  # (S, D) GEV-fit mode ("MLE")
    mode_fallback: np.ndarray  # (S, D) bool: KDE fallback used
    rhat: np.ndarray  # (S, D)
    rhat_ok: np.ndarray  # (S,) bool: all R-hat below the threshold
    acceptance: np.ndarray  # (S, C) formal-run acceptance rate of the final attempt
    chosen_chain: np.ndarray  # (S,) int, -1 = pooled or none
    chain_ok: np.ndarray  # (S, C) bool
    n_accepted: np.ndarray  # (S, C) formal-run accepts of the final attempt
    n_samples: np.ndarray  # (S, C) post-burn-in samples used
    n_restarts: np.ndarray  # (S, C) acceptance-control restarts
    n_test_retries: np.ndarray  # (S, C) test runs redone with smaller steps
    n_failed_proposals: np.ndarray  # (S, C) non-finite cost or stuck outside the box
    scale_s: np.ndarray  # (S, C) final proposal scale
    step_a: np.ndarray  # (S, C) final test-run step parameter
    chain_rmse: np.ndarray  # (S, C) RMSE of the chain's mean prediction (NaN without preds/obs)
    chain_cost: np.ndarray  # (S, C) mean post-burn-in cost
    j0: np.ndarray  # (S,) cost at theta0
    status: np.ndarray  # (S,) int8, see STATUS_MEANING
    reason: np.ndarray  # (S,) str, '' when OK
    chain_reason: np.ndarray  # (S, C) str
    config: dict[str, Any] = field(default_factory=dict)
    n_steps: int = 0  # global iterations performed
    n_jitter: int = 0  # Cholesky factorisations that needed jitter
    samples: np.ndarray | None = None  # (S, C, N, D) float32, NaN padded (keep_samples)

    @property
    def n_sites(self) -> int:
        return int(self.site_ids.size)

    @property
    def ok(self) -> np.ndarray:
        """(S,) True where the site has a usable posterior."""
        return self.status != STATUS_FAILED

    def reason_counts(self) -> dict[str, int]:
        """Counted failure reasons over all chains (e.g. ``{"acceptance rate below ...": 3}``)."""
        return dict(Counter(r for r in self.chain_reason.ravel() if r))

    def to_dataset(self) -> Any:
        """An ``xarray.Dataset`` with dims (site, parameter, chain), units and long names."""
        import xarray as xr

        sp, sc = ("site", "parameter"), ("site", "chain")

        def var(dims: tuple[str, ...], data: np.ndarray, long_name: str, units: str = "1") -> Any:
            return xr.Variable(dims, data, {"long_name": long_name, "units": units})

        ds = xr.Dataset(
            {
                "mean": var(sp, self.mean, "posterior mean of theta (unit interval)"),
                "sd": var(sp, self.sd, "posterior standard deviation of theta"),
                "mode": var(sp, self.mode, "GEV-fit mode of theta (original 'MLE')"),
                "mode_fallback": var(sp, self.mode_fallback, "KDE mode used instead of the GEV fit"),
                "rhat": var(sp, self.rhat, "Gelman-Rubin potential scale reduction"),
                "rhat_ok": var(("site",), self.rhat_ok, "all R-hat below threshold"),
                "acceptance": var(sc, self.acceptance, "formal-run acceptance rate"),
                "chain_ok": var(sc, self.chain_ok, "chain completed"),
                "n_accepted": var(sc, self.n_accepted, "formal-run accepted proposals", "count"),
                "n_samples": var(sc, self.n_samples, "post-burn-in samples used", "count"),
                "n_restarts": var(sc, self.n_restarts, "acceptance-control restarts", "count"),
                "n_test_retries": var(sc, self.n_test_retries, "test runs redone", "count"),
                "n_failed_proposals": var(sc, self.n_failed_proposals, "failed proposals", "count"),
                "scale_s": var(sc, self.scale_s, "final proposal scale s"),
                "step_a": var(sc, self.step_a, "final test-run step parameter a"),
                "chain_rmse": var(sc, self.chain_rmse, "RMSE of chain-mean prediction", "g C m-3"),
                "chain_cost": var(sc, self.chain_cost, "mean post-burn-in cost J"),
                "chain_reason": var(sc, self.chain_reason.astype(str), "chain failure reason"),
                "chosen_chain": var(("site",), self.chosen_chain, "chain used for summaries (-1 pooled)"),
                "j0": var(("site",), self.j0, "cost at theta0"),
                "status": var(("site",), self.status, "site status code"),
                "reason": var(("site",), self.reason.astype(str), "site failure reason"),
            },
            coords={
                "site": self.site_ids,
                "parameter": list(self.parameter_names),
                "chain": np.arange(self.acceptance.shape[1]),
            },
            attrs={
                "title": "PRODA site-level MCMC posterior summaries",
                "parameter_space": "unit interval theta in (0, 1); map with proda_engine.parameters",
                "status_codes": json.dumps({str(k): v for k, v in STATUS_MEANING.items()}),
                "mcmc_config": json.dumps(self.config),
            },
        )
        return ds


# --------------------------------------------------------------------------------------------------
# The sampler
# --------------------------------------------------------------------------------------------------
def _call_cost(cost_fn: CostFn, theta: np.ndarray, site: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    res = cost_fn(theta, site)
    if isinstance(res, tuple):
        c, p = res
        return np.asarray(c, dtype=float).reshape(-1), np.asarray(p, dtype=float).reshape(theta.shape[0], -1)
    return np.asarray(res, dtype=float).reshape(-1), None


class _Sampler:
    """State of all rows; see :func:`run_mcmc`."""

    def __init__(self, cost_fn: CostFn, cfg: MCMCConfig, site_ids: np.ndarray, theta0: np.ndarray) -> None:
        self.cost_fn = cost_fn
        self.cfg = cfg
        s_sites, d = theta0.shape
        c = cfg.n_chains
        self.S, self.C, self.D = s_sites, c, d
        self.B = s_sites * c
        self.site = np.repeat(np.arange(s_sites), c)
        self.chain = np.tile(np.arange(c), s_sites)
        self.rng = _RowStreams(cfg.seed, site_ids[self.site], self.chain)
        self.theta0 = theta0

        # Initial cost, once per site.
        j0, pred0 = _call_cost(cost_fn, theta0.copy(), np.arange(s_sites))
        self.j0 = j0
        self.pred0 = pred0
        self.K = 0 if pred0 is None else pred0.shape[1]

        b = self.B
        self.phase = np.full(b, TEST, dtype=np.int8)
        self.t = np.zeros(b, dtype=np.int64)
        self.theta = theta0[self.site].copy()
        self.J = j0[self.site].copy()
        self.pred = None if pred0 is None else pred0[self.site].copy()
        self.last_pred = None if pred0 is None else self.pred.copy()  # legacy stale profile
        self.last_dj = np.zeros(b)
        self.a = np.full(b, float(cfg.step_a))
        self.s = np.full(b, float(cfg.scale_s))
        self.n_acc = np.zeros(b, dtype=np.int64)
        self.t_last_acc = np.zeros(b, dtype=np.int64)
        self.restarts = np.zeros(b, dtype=np.int64)
        self.test_fails = np.zeros(b, dtype=np.int64)
        self.test_check = np.ones(b, dtype=bool)
        self.n_failed = np.zeros(b, dtype=np.int64)
        self.acc_rate = np.full(b, np.nan)
        self.reason = np.full(b, "", dtype=object)
        self.welford = _Welford(b, d)
        self.chol = np.zeros((b, d, d))
        self.n_jitter = 0

        self.thin = cfg.thin_resolved
        self.cap = max(cfg.capacity(), 1)
        self.buf_theta = np.full((b, self.cap, d), np.nan, dtype=np.float32)
        self.buf_cost = np.full((b, self.cap), np.nan, dtype=np.float32)
        self.buf_pred = None if self.K == 0 else np.full((b, self.cap, self.K), np.nan, dtype=np.float32)
        self.n_store = np.zeros(b, dtype=np.int64)

        bad = ~np.isfinite(j0)
        if bad.any():
            rows = np.flatnonzero(bad[self.site])
            self._fail(rows, "initial cost not finite (theta0 evaluation failed)")

    # ---- bookkeeping ------------------------------------------------------------------------
    def _fail(self, rows: np.ndarray, why: str) -> None:
        self.phase[rows] = FAILED
        for r in rows:
            if not self.reason[r]:
                self.reason[r] = why

    def _start_test(self, rows: np.ndarray, from_theta0: bool) -> None:
        if rows.size == 0:
            return
        self.phase[rows] = TEST
        self.t[rows] = 0
        self.n_acc[rows] = 0
        self.t_last_acc[rows] = 0
        self.welford.reset(rows)
        self.n_store[rows] = 0
        if from_theta0:
            st = self.site[rows]
            self.theta[rows] = self.theta0[st]
            self.J[rows] = self.j0[st]
            if self.pred is not None:
                self.pred[rows] = self.pred0[st]

    def _start_formal(self, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        self._set_proposal(rows)  # from the test-run records
        self.phase[rows] = FORMAL
        self.t[rows] = 0
        self.n_acc[rows] = 0
        self.t_last_acc[rows] = 0
        self.welford.reset(rows)
        self.n_store[rows] = 0
        if self.cfg.legacy:  # [quirk] reference cost reset to J(theta0), state kept
            self.J[rows] = self.j0[self.site[rows]]

    def _set_proposal(self, rows: np.ndarray) -> None:
        """Σ = f(s, D) · cov(records) + ε I from the running covariance, factorised per row."""
        factor = self.cfg.scale_factor(self.s[rows], self.D)
        info = _scaled_cholesky_kernel(self.welford.m2, self.welford.n, factor, self.cfg.cov_eps, rows,
                                       self.chol)
        bad = np.flatnonzero(info)
        if bad.size:  # rare: rank-deficient records (e.g. a chain that has not moved) -> jitter
            sigma = self.welford.scaled_cov(rows[bad], factor[bad])
            sigma.reshape(bad.size, -1)[:, :: self.D + 1] += self.cfg.cov_eps
            chol, n_fix = batched_cholesky(sigma)
            self.chol[rows[bad]] = chol
            self.n_jitter += max(n_fix, 1)

    # ---- one global iteration ---------------------------------------------------------------
    def _propose(self, act: np.ndarray, is_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prop = np.empty((act.size, self.D))
        self._draw(act, is_test, np.arange(act.size), prop)
        outside = ((prop <= 0.0) | (prop >= 1.0)).any(axis=1)
        for _ in range(self.cfg.max_redraws):
            if not outside.any():
                break
            idx = np.flatnonzero(outside)
            self._draw(act, is_test, idx, prop)
            outside[idx] = ((prop[idx] <= 0.0) | (prop[idx] >= 1.0)).any(axis=1)
        return prop, outside

    def _draw(self, act: np.ndarray, is_test: np.ndarray, idx: np.ndarray, prop: np.ndarray) -> None:
        it = idx[is_test[idx]]
        if it.size:
            rows = act[it]
            u = self.rng.uniform(rows, self.D)
            prop[it] = self.theta[rows] + (u - 0.5) / self.a[rows][:, None]
        jf = idx[~is_test[idx]]
        if jf.size:
            rows = act[jf]
            z = self.rng.normal(rows, self.D)
            prop[jf] = _mvn_kernel(self.theta, self.chol, rows, z)

    def step(self) -> int:
        """Advance every active row by one iteration; returns the number of active rows."""
        cfg = self.cfg
        act = np.flatnonzero(self.phase <= FORMAL)
        if act.size == 0:
            return 0
        self.t[act] += 1
        is_test = self.phase[act] == TEST
        prop, stuck = self._propose(act, is_test)

        j_new = np.full(act.size, np.nan)
        pred_new = None if self.K == 0 else np.full((act.size, self.K), np.nan)
        ev = np.flatnonzero(~stuck)
        if ev.size:
            cj, cp = _call_cost(self.cost_fn, prop[ev], self.site[act[ev]])
            j_new[ev] = cj
            if pred_new is not None and cp is not None:
                pred_new[ev] = cp
        u = self.rng.uniform(act, 1)[:, 0]

        failed = ~np.isfinite(j_new)
        self.n_failed[act] += failed
        j_old = self.J[act]
        dj = j_new - j_old
        if cfg.legacy:
            # [quirk] test run: a singular solve costs J_old + 100; formal run: the previous
            # iteration's dJ decides, and on acceptance the cost becomes J_old + 100.
            ft = failed & is_test
            ff = failed & ~is_test & ~stuck
            j_new[ft | ff] = j_old[ft | ff] + 100.0
            dj[ft] = 100.0
            dj[ff] = self.last_dj[act[ff]]
            valid = ~stuck
        else:
            valid = ~failed
        beta = np.ones(act.size) if cfg.tempering == "none" else np.log(self.t[act] + 2.0)
        with np.errstate(invalid="ignore", over="ignore"):
            acc = valid & (np.log(u) <= -dj * beta)
        self.last_dj[act[valid]] = dj[valid]

        ra = act[acc]
        self.theta[ra] = prop[acc]
        self.J[ra] = j_new[acc]
        if self.pred is not None:
            ok_pred = ~failed
            self.last_pred[act[ok_pred & valid]] = pred_new[ok_pred & valid]
            # A legacy accepted failed solve stores the stale (last computed) profile.
            self.pred[ra] = self.last_pred[ra]
        self.n_acc[ra] += 1
        self.t_last_acc[ra] = self.t[ra]

        # Record the current state of every active row (with repeats) in the running covariance.
        self.welford.update(act, self.theta[act])
        self._store(act, is_test, acc)
        self._adapt(act[~is_test])
        self._end_of_phase(act)
        return int(act.size)

    def _store(self, act: np.ndarray, is_test: np.ndarray, acc: np.ndarray) -> None:
        cfg = self.cfg
        fr = act[~is_test]
        if cfg.posterior == "chain":
            after = self.t[fr] - cfg.burn_iter
            rows = fr[(after > 0) & (after % self.thin == 0)]
        else:
            fa = act[~is_test & acc]
            rows = fa[self.n_acc[fa] % self.thin == 0]
        rows = rows[self.n_store[rows] < self.cap]
        if rows.size == 0:
            return
        k = self.n_store[rows]
        self.buf_theta[rows, k] = self.theta[rows]
        self.buf_cost[rows, k] = self.J[rows]
        if self.buf_pred is not None:
            self.buf_pred[rows, k] = self.pred[rows]
        self.n_store[rows] += 1

    def _adapt(self, fr: np.ndarray) -> None:
        if fr.size == 0:
            return
        start = self.cfg.adapt_start_resolved
        tt = self.t[fr]
        rows = fr[(tt >= start) & ((tt - start) % self.cfg.adapt_every == 0)]
        if rows.size:
            self._set_proposal(rows)

    def _end_of_phase(self, act: np.ndarray) -> None:
        cfg = self.cfg
        te = act[(self.phase[act] == TEST) & (self.t[act] >= cfg.n_test)]
        if te.size:
            short = self.test_check[te] & (self.n_acc[te] < cfg.min_test_accepts)
            self._start_formal(te[~short])
            self._test_failed(te[short])
        fe = act[(self.phase[act] == FORMAL) & (self.t[act] >= cfg.n_formal)]
        if fe.size:
            if cfg.legacy:  # [quirk] rate as of the last acceptance
                rate = np.where(self.t_last_acc[fe] > 0, self.n_acc[fe] / np.maximum(self.t_last_acc[fe], 1), 0.0)
            else:
                rate = self.n_acc[fe] / self.t[fe]
            self.acc_rate[fe] = rate
            lo, hi = cfg.accept_window
            low, high = rate < lo, rate > hi
            self.phase[fe[~(low | high)]] = DONE
            self._restart(fe[low], cfg.scale_down, f"acceptance rate below {lo:g}")
            self._restart(fe[high], cfg.scale_up, f"acceptance rate above {hi:g}")

    def _test_failed(self, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        cfg = self.cfg
        self.test_fails[rows] += 1
        if cfg.legacy:
            third = rows[self.test_fails[rows] >= 3]
            other = rows[self.test_fails[rows] < 3]
            # [quirk] third failure: a back to its start value, check disabled for good, start over.
            self.a[third] = cfg.step_a
            self.test_check[third] = False
            self._start_test(third, from_theta0=True)
            self.a[other] *= cfg.a_growth
            self._start_test(other, from_theta0=False)  # [quirk] restart from the current state
            return
        over = rows[self.test_fails[rows] > cfg.max_restarts]
        self._fail(over, f"test run: fewer than {cfg.min_test_accepts} accepts after {cfg.max_restarts} "
                         "step reductions")
        again = rows[self.test_fails[rows] <= cfg.max_restarts]
        self.a[again] *= cfg.a_growth
        self._start_test(again, from_theta0=True)

    def _restart(self, rows: np.ndarray, factor: float, why: str) -> None:
        if rows.size == 0:
            return
        cfg = self.cfg
        self.restarts[rows] += 1
        self.s[rows] *= factor
        if cfg.legacy:
            total = np.bincount(self.site, weights=self.restarts, minlength=self.S)
            bad_sites = np.flatnonzero(total > cfg.max_restarts)
            over_mask = np.isin(self.site[rows], bad_sites)
            over = rows[over_mask]
            if over.size:
                self._fail(over, f"{why} after {cfg.max_restarts} restarts")
                siblings = np.flatnonzero(np.isin(self.site, self.site[over]) & (self.phase != FAILED))
                self._fail(siblings, f"site exceeded {cfg.max_restarts} restarts (cumulative over chains)")
            rows = rows[~over_mask]
        else:
            over = rows[self.restarts[rows] > cfg.max_restarts]
            self._fail(over, f"{why} after {cfg.max_restarts} restarts")
            rows = rows[self.restarts[rows] <= cfg.max_restarts]
        self.a[rows] = cfg.step_a
        self._start_test(rows, from_theta0=True)

    # ---- post-processing ----------------------------------------------------------------------
    def samples_of(self, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Post-burn-in (theta, cost, pred) stored for row r."""
        n = int(self.n_store[r])
        th = self.buf_theta[r, :n].astype(np.float64)
        jc = self.buf_cost[r, :n].astype(np.float64)
        pr = None if self.buf_pred is None else self.buf_pred[r, :n].astype(np.float64)
        if self.cfg.posterior == "accepted":
            # Stored sample i is accepted sample (i + 1)·thin; drop the first burn_in fraction.
            k = (np.arange(n) + 1) * self.thin
            keep = k > math.floor(self.cfg.burn_in * self.n_acc[r])
            th, jc = th[keep], jc[keep]
            pr = None if pr is None else pr[keep]
        return th, jc, pr


def run_mcmc(
    cost_fn: CostFn,
    n_sites: int,
    config: MCMCConfig | dict[str, Any] | None = None,
    *,
    n_params: int = N_PARAMS,
    site_ids: Sequence[int] | np.ndarray | None = None,
    theta0: np.ndarray | None = None,
    obs: np.ndarray | None = None,
    parameter_names: Sequence[str] | None = None,
) -> MCMCResult:
    """Run the site-level MCMC for ``n_sites`` sites x ``config.n_chains`` chains at once.

    Args:
        cost_fn: batched cost, see the module docstring for the contract.
        n_sites: number of sites S.
        config: :class:`MCMCConfig` or a dict for :meth:`MCMCConfig.from_dict`.
        n_params: D (21 for the CENTURY model).
        site_ids: (S,) non-negative global site ids that key the random streams (default
            ``arange(S)``). Give the same ids to get the same per-site results in any batching.
        theta0: start (D,) or (S, D) in (0,1); default 0.5.
        obs: (S, K) observations aligned with the ``pred`` returned by ``cost_fn`` (NaN padding),
            for the chain choice by RMSE.
        parameter_names: D names (default: the 21-parameter table when D = 21).

    Returns:
        :class:`MCMCResult`.
    """
    cfg = config if isinstance(config, MCMCConfig) else MCMCConfig.from_dict(config or {})
    ids = np.arange(n_sites) if site_ids is None else np.asarray(site_ids, dtype=np.int64)
    if ids.shape != (n_sites,) or (ids < 0).any():
        raise ValueError("site_ids must be (n_sites,) non-negative integers")
    th0 = np.full((n_sites, n_params), 0.5) if theta0 is None else np.asarray(theta0, dtype=float)
    th0 = np.broadcast_to(th0, (n_sites, n_params)).copy()
    if ((th0 <= 0) | (th0 >= 1)).any():
        raise ValueError("theta0 must lie inside the open unit box")
    names = tuple(parameter_names) if parameter_names is not None else (
        PARAMETER_NAMES if n_params == N_PARAMS else tuple(f"p{i}" for i in range(n_params)))

    smp = _Sampler(cost_fn, cfg, ids, th0)
    total = cfg.n_test + cfg.n_formal
    with tqdm(total=total, disable=not cfg.progress, desc="MCMC", unit="it") as bar:
        n_steps = 0
        while True:
            n_active = smp.step()
            if n_active == 0:
                break
            n_steps += 1
            if n_steps > bar.total:
                bar.total = n_steps + cfg.n_test + cfg.n_formal
            bar.update(1)
            if n_steps % 200 == 0:
                act = smp.phase <= FORMAL
                rate = float(np.mean(smp.n_acc[act] / np.maximum(smp.t[act], 1))) if act.any() else 0.0
                bar.set_postfix(active=int(act.sum()), acc=f"{rate:.2f}")
    return _postprocess(smp, cfg, ids, names, obs, n_steps)


def _postprocess(
    smp: _Sampler,
    cfg: MCMCConfig,
    ids: np.ndarray,
    names: tuple[str, ...],
    obs: np.ndarray | None,
    n_steps: int,
) -> MCMCResult:
    s_n, c_n, d = smp.S, smp.C, smp.D
    nan_sd = np.full((s_n, d), np.nan)
    mean, sd, mode, rhat = nan_sd.copy(), nan_sd.copy(), nan_sd.copy(), nan_sd.copy()
    mode_fb = np.zeros((s_n, d), dtype=bool)
    chosen = np.full(s_n, -1, dtype=np.int64)
    chain_rmse = np.full((s_n, c_n), np.nan)
    chain_cost = np.full((s_n, c_n), np.nan)
    n_samples = np.zeros((s_n, c_n), dtype=np.int64)
    status = np.full(s_n, STATUS_OK, dtype=np.int8)
    reason = np.full(s_n, "", dtype=object)
    chain_reason = smp.reason.reshape(s_n, c_n).copy()
    chain_ok = (smp.phase == DONE).reshape(s_n, c_n)
    obs_arr = None if obs is None else np.asarray(obs, dtype=float).reshape(s_n, -1)
    samples_out = None
    if cfg.keep_samples:
        samples_out = np.full((s_n, c_n, smp.cap, d), np.nan, dtype=np.float32)

    for si in range(s_n):
        per_chain: dict[int, np.ndarray] = {}
        for ci in range(c_n):
            r = si * c_n + ci
            if not chain_ok[si, ci]:
                continue
            th, jc, pr = smp.samples_of(r)
            if th.shape[0] < 2:
                chain_ok[si, ci] = False
                chain_reason[si, ci] = "fewer than two post-burn-in samples"
                continue
            per_chain[ci] = th
            n_samples[si, ci] = th.shape[0]
            chain_cost[si, ci] = float(np.mean(jc))
            if pr is not None and obs_arr is not None:
                mp = pr.mean(axis=0)
                ok = np.isfinite(mp) & np.isfinite(obs_arr[si])
                if ok.any():
                    chain_rmse[si, ci] = float(np.sqrt(np.mean((mp[ok] - obs_arr[si, ok]) ** 2)))
            if samples_out is not None:
                samples_out[si, ci, : th.shape[0]] = th
        if not per_chain:
            status[si] = STATUS_FAILED
            reason[si] = "; ".join(sorted({r for r in chain_reason[si] if r})) or "no usable chain"
            continue
        if len(per_chain) < c_n:
            status[si] = STATUS_PARTIAL
            reason[si] = "; ".join(sorted({r for r in chain_reason[si] if r}))
        if cfg.chain_choice == "pooled":
            post = np.concatenate(list(per_chain.values()))
        else:
            cands = np.array(sorted(per_chain))
            score = chain_rmse[si, cands]
            if not np.isfinite(score).any():
                score = chain_cost[si, cands]
            score = np.where(np.isfinite(score), score, np.inf)
            chosen[si] = int(cands[int(np.argmin(score))])
            post = per_chain[int(chosen[si])]
        mean[si] = post.mean(axis=0)
        sd[si] = post.std(axis=0, ddof=1)
        if cfg.mode == "gev":
            mode[si], mode_fb[si] = gev_mode(post, max_samples=cfg.gev_max_samples, return_flag=True)
        elif cfg.mode == "kde":
            mode[si] = [kde_mode(post[:, j]) for j in range(d)]
        if len(per_chain) >= 2:
            rhat[si] = gelman_rubin([per_chain[c] for c in sorted(per_chain)], legacy=cfg.legacy)

    with np.errstate(invalid="ignore"):
        rhat_ok = np.all(rhat < cfg.rhat_threshold, axis=1)

    def sc(x: np.ndarray) -> np.ndarray:
        return x.reshape(s_n, c_n)

    return MCMCResult(
        site_ids=ids,
        parameter_names=names,
        mean=mean,
        sd=sd,
        mode=mode,
        mode_fallback=mode_fb,
        rhat=rhat,
        rhat_ok=rhat_ok,
        acceptance=sc(smp.acc_rate),
        chosen_chain=chosen,
        chain_ok=chain_ok,
        n_accepted=sc(np.where(smp.phase == DONE, smp.n_acc, 0)),
        n_samples=n_samples,
        n_restarts=sc(smp.restarts),
        n_test_retries=sc(smp.test_fails),
        n_failed_proposals=sc(smp.n_failed),
        scale_s=sc(smp.s),
        step_a=sc(smp.a),
        chain_rmse=chain_rmse,
        chain_cost=chain_cost,
        j0=smp.j0,
        status=status,
        reason=reason,
        chain_reason=chain_reason,
        config=cfg.to_dict(),
        n_steps=n_steps,
        n_jitter=smp.n_jitter,
        samples=samples_out,
    )
