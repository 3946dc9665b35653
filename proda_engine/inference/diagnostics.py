"""MCMC diagnostics: Gelman–Rubin R-hat, effective sample size and the GEV-fit mode (spec §(l)).

All functions take plain numpy arrays of samples (draws along axis 0, parameters along axis 1).

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> chains = [rng.normal(size=(2000, 2)) for _ in range(3)]
>>> bool((gelman_rubin(chains) < 1.01).all())
True
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import special, stats


def gelman_rubin(samples_list: Sequence[np.ndarray], *, legacy: bool = False) -> np.ndarray:
    """Potential scale reduction factor R-hat per parameter.

    With ``C`` chains of ``n`` draws, chain means ``θ̄_c`` and grand mean ``θ̄̄``::

        B = n/(C-1) Σ_c (θ̄_c - θ̄̄)^2
        W = 1/(C(n-1)) Σ_c Σ_i (θ_ci - θ̄_c)^2
        R = sqrt( ((n-1)/n W + B/n) / W )

    Standard form (default): chains of unequal length are truncated to the common length ``n``
    (keeping their **last** ``n`` draws). ``legacy=True`` reproduces the original **[quirk]**: every
    chain keeps all its draws but ``n`` is the length of the last chain.

    Args:
        samples_list: C >= 2 arrays of shape (n_c,) or (n_c, D) (e.g. post-burn-in samples).

    Returns:
        (D,) R-hat (a scalar array for 1-D input); NaN where W = 0 or fewer than 2 draws.
    """
    chains = [np.asarray(x, dtype=float) for x in samples_list]
    if len(chains) < 2:
        raise ValueError("gelman_rubin needs at least two chains")
    scalar = chains[0].ndim == 1
    chains = [x[:, None] if x.ndim == 1 else x for x in chains]
    n_chains = len(chains)
    if legacy:
        n = chains[-1].shape[0]
    else:
        n = min(x.shape[0] for x in chains)
        chains = [x[x.shape[0] - n :] for x in chains]
    d = chains[0].shape[1]
    if n < 2 or any(x.shape[0] < 1 for x in chains):
        out = np.full(d, np.nan)
        return out[0] if scalar else out
    means = np.stack([x.mean(axis=0) for x in chains])  # (C, D)
    grand = means.mean(axis=0)
    b = n / (n_chains - 1) * ((means - grand) ** 2).sum(axis=0)
    w = sum(((x - m) ** 2).sum(axis=0) for x, m in zip(chains, means)) / (n_chains * (n - 1))
    v = (n - 1) / n * w + b / n
    out = np.full(d, np.nan)
    ok = w > 0
    out[ok] = np.sqrt(v[ok] / w[ok])
    return out[0] if scalar else out


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation of a 1-D series via FFT (biased estimator, rho_0 = 1)."""
    x = np.asarray(x, dtype=float)
    n = x.size
    xc = x - x.mean()
    nfft = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(xc, nfft)
    acov = np.fft.irfft(f * np.conj(f), nfft)[:n]
    if acov[0] <= 0:
        return np.full(n, np.nan)
    return acov / acov[0]


def effective_sample_size(chain: np.ndarray) -> np.ndarray | float:
    """Effective sample size ``n / τ`` per parameter, autocorrelation-based.

    ``τ = -1 + 2 Σ_k Γ_k`` with ``Γ_k = ρ_{2k} + ρ_{2k+1}`` summed over Geyer's initial positive
    sequence, made monotone (Geyer 1992). For an AR(1) series with coefficient φ,
    ``ESS ≈ n (1 - φ) / (1 + φ)``.

    Args:
        chain: (n,) or (n, D) draws of one chain.

    Returns:
        ESS (float for 1-D input, (D,) otherwise); NaN for a constant series.
    """
    x = np.asarray(chain, dtype=float)
    if x.ndim == 1:
        return float(_ess_1d(x))
    return np.array([_ess_1d(x[:, j]) for j in range(x.shape[1])])


def _ess_1d(x: np.ndarray) -> float:
    n = x.size
    if n < 4:
        return float("nan")
    rho = autocorrelation(x)
    if not np.isfinite(rho[0]):
        return float("nan")
    n_pairs = n // 2
    gam = rho[0 : 2 * n_pairs : 2] + rho[1 : 2 * n_pairs : 2]
    # Initial positive sequence, then enforce monotone decrease.
    neg = np.flatnonzero(gam <= 0)
    gam = gam[: neg[0]] if neg.size else gam
    gam = np.minimum.accumulate(gam)
    tau = max(-1.0 + 2.0 * gam.sum(), 1.0 / np.log10(max(n, 10)))
    return float(n / tau)


def gev_mode(
    samples: np.ndarray,
    *,
    max_samples: int | None = 2000,
    return_flag: bool = False,
) -> np.ndarray | float | tuple[np.ndarray | float, np.ndarray | bool]:
    """The original's "MLE": the mode of a generalised extreme-value fit, per parameter.

    Fit ``GEV(k, σ, μ)`` by maximum likelihood (``scipy.stats.genextreme`` uses ``c = -k``); the
    mode is ``μ + σ((1 + k)^(-k) - 1)/k`` for ``k ≠ 0`` and ``μ`` for ``k = 0``. If the fit fails,
    the mode is undefined (``k <= -1``), not finite or falls outside the sample range, the mode of a
    Gaussian kernel density estimate is returned instead and flagged.

    Args:
        samples: (n,) or (n, D) posterior samples.
        max_samples: fit on at most this many evenly spaced samples (the MLE is slow); None = all.
        return_flag: also return a boolean (array) that is True where the KDE fallback was used.

    Returns:
        mode (float or (D,)), and the fallback flag when ``return_flag``.
    """
    x = np.asarray(samples, dtype=float)
    scalar = x.ndim == 1
    x2 = x[:, None] if scalar else x
    if max_samples is not None and x2.shape[0] > max_samples:
        x2 = x2[np.linspace(0, x2.shape[0] - 1, max_samples).round().astype(int)]
    modes = np.empty(x2.shape[1])
    flags = np.zeros(x2.shape[1], dtype=bool)
    for j in range(x2.shape[1]):
        modes[j], flags[j] = _gev_mode_1d(x2[:, j])
    mode_out: np.ndarray | float = float(modes[0]) if scalar else modes
    if return_flag:
        return mode_out, (bool(flags[0]) if scalar else flags)
    return mode_out


def gev_lmoment_fit(x: np.ndarray) -> tuple[float, float, float]:
    """Hosking's (1985) L-moment estimates of the GEV in scipy's convention ``(c, loc, scale)``.

    With sample L-moments l1, l2 and ``t3 = l3/l2``: ``z = 2/(3 + t3) - ln2/ln3``,
    ``c ≈ 7.8590 z + 2.9554 z²``, ``σ = l2 c / ((1 - 2^-c) Γ(1 + c))``,
    ``μ = l1 - σ (1 - Γ(1 + c))/c``. Used as the starting point of the MLE: scipy's default start
    often ends in a spurious bounded-tail optimum (c ≈ 1) for near-normal samples.
    """
    xs = np.sort(np.asarray(x, dtype=float))
    n = xs.size
    i = np.arange(n)
    b0 = xs.mean()
    b1 = np.sum(i / (n - 1) * xs) / n
    b2 = np.sum(i * (i - 1) / ((n - 1) * (n - 2)) * xs) / n
    l1, l2, l3 = b0, 2 * b1 - b0, 6 * b2 - 6 * b1 + b0
    t3 = l3 / l2
    z = 2.0 / (3.0 + t3) - np.log(2.0) / np.log(3.0)
    c = 7.8590 * z + 2.9554 * z * z
    if abs(c) < 1e-9:  # Gumbel limit
        scale = l2 / np.log(2.0)
        return 0.0, float(l1 - 0.5772156649015329 * scale), float(scale)
    g = special.gamma(1.0 + c)
    scale = l2 * c / ((1.0 - 2.0 ** (-c)) * g)
    return float(c), float(l1 - scale * (1.0 - g) / c), float(scale)


def _gev_mode_1d(x: np.ndarray) -> tuple[float, bool]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), True
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 0 or x.size < 5:
        return float(np.median(x)), True
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            c0, mu0, s0 = gev_lmoment_fit(x)
            c, mu, sigma = stats.genextreme.fit(x, c0, loc=mu0, scale=s0)
            nll_fit = -np.sum(stats.genextreme.logpdf(x, c, mu, sigma))
            nll_start = -np.sum(stats.genextreme.logpdf(x, c0, mu0, s0))
            if not np.isfinite(nll_fit) or (np.isfinite(nll_start) and nll_start < nll_fit):
                c, mu, sigma = c0, mu0, s0
        k = -c
        if abs(k) < 1e-12:
            mode = mu
        elif k > -1:
            mode = mu + sigma * ((1.0 + k) ** (-k) - 1.0) / k
        else:
            mode = np.nan
    except Exception:  # scipy raises several types on degenerate data; all mean "no fit"
        mode = np.nan
    span = hi - lo
    if np.isfinite(mode) and lo - 0.05 * span <= mode <= hi + 0.05 * span:
        return float(mode), False
    return kde_mode(x), True


def kde_mode(x: np.ndarray, n_grid: int = 512) -> float:
    """Mode of a Gaussian KDE of 1-D samples (Scott's bandwidth), evaluated on a grid."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 0:
        return lo
    try:
        kde = stats.gaussian_kde(x)
    except (np.linalg.LinAlgError, ValueError):
        return float(np.median(x))
    grid = np.linspace(lo, hi, n_grid)
    return float(grid[np.argmax(kde(grid))])
