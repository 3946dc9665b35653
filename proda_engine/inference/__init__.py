"""Site-level data assimilation: observation operator, cost, vectorised MCMC and diagnostics.

* :mod:`.likelihood` — PCHIP / clamped-linear observation operators (torch, differentiable), the
  padded :class:`ObservationBatch`, rank and depth weights, the cost ``J`` and goodness of fit.
* :mod:`.mcmc` — :func:`run_mcmc`, an adaptive-Metropolis engine advancing all sites x chains at once.
* :mod:`.diagnostics` — Gelman–Rubin R-hat, effective sample size, GEV-fit mode.
"""

from proda_engine.inference.diagnostics import effective_sample_size, gelman_rubin, gev_mode, kde_mode
from proda_engine.inference.likelihood import (
    REL_OBS_ERROR,
    ObservationBatch,
    cost,
    depth_exp_weights,
    depth_weights,
    efficiency,
    linear_clamped,
    model_at_obs,
    pchip,
    pooled_metrics,
    r2_legacy,
    rank_weights,
    rmse,
)
from proda_engine.inference.mcmc import (
    STATUS_FAILED,
    STATUS_MEANING,
    STATUS_OK,
    STATUS_PARTIAL,
    MCMCConfig,
    MCMCResult,
    batched_cholesky,
    run_mcmc,
)

__all__ = [
    "REL_OBS_ERROR",
    "STATUS_FAILED",
    "STATUS_MEANING",
    "STATUS_OK",
    "STATUS_PARTIAL",
    "MCMCConfig",
    "MCMCResult",
    "ObservationBatch",
    "batched_cholesky",
    "cost",
    "depth_exp_weights",
    "depth_weights",
    "effective_sample_size",
    "efficiency",
    "gelman_rubin",
    "gev_mode",
    "kde_mode",
    "linear_clamped",
    "model_at_obs",
    "pchip",
    "pooled_metrics",
    "r2_legacy",
    "rank_weights",
    "rmse",
    "run_mcmc",
]
