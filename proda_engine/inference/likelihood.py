"""Observation operator, depth weights, cost function and goodness of fit (spec §(i), §(k)).

Conventions
-----------
* Depth in metres (positive down), SOC density in g C m-3.
* The physics returns SOC as ``(L, C)`` (layers first, cells last). The functions here put the
  **batch first**: ``values`` is ``(..., L)`` (e.g. ``(C, L)``, i.e. ``soc.T``) and queries are
  ``(..., K)``. :func:`model_at_obs` accepts the physics layout directly.
* Observations are ragged. A batch of ``C`` profiles is padded to ``K`` layers:
  ``depth (C, K)``, ``soc (C, K)`` and ``mask (C, K)`` (True where a layer is valid). Padded entries
  hold NaN and are never read where ``mask`` is False.
* Interpolation and the cost are written in torch (differentiable, batched); every public function
  also accepts numpy arrays and then returns numpy arrays. Weights and metrics are plain numpy
  (they are constants / diagnostics, not part of the gradient path).

Example
-------
>>> import numpy as np
>>> z = np.array([0.1, 0.3, 0.6, 1.0])
>>> v = np.array([[4.0, 3.0, 2.5, 1.0]])
>>> float(pchip(z, v, np.array([[0.3]]))[0, 0])
3.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

ArrayLike = np.ndarray | torch.Tensor
WeightKind = Literal["rank", "depth_exp"]

#: Relative observation error of the cost ("as indicated in WoSIS", spec §(k)).
REL_OBS_ERROR: float = 0.6


# --------------------------------------------------------------------------------------------------
# numpy / torch plumbing
# --------------------------------------------------------------------------------------------------
def _torch_inputs(*xs: Any) -> tuple[list[torch.Tensor], bool]:
    """Convert inputs to tensors sharing one float dtype; report whether any input was a tensor."""
    is_torch = any(isinstance(x, torch.Tensor) for x in xs)
    dtype = torch.float64
    device = None
    for x in xs:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            dtype, device = x.dtype, x.device
            break
    out = [torch.as_tensor(x, dtype=dtype, device=device) if not isinstance(x, torch.Tensor) else x.to(dtype)
           for x in xs]
    return out, is_torch


def _out(x: torch.Tensor, as_torch: bool) -> ArrayLike:
    return x if as_torch else x.detach().cpu().numpy()


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------------------------------
# Interpolation (spec §(i) "Comparison with observations")
# --------------------------------------------------------------------------------------------------
def _pchip_derivatives(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Node derivatives d_k of the PCHIP interpolant (identical rule to scipy's PchipInterpolator).

    Interior nodes (Fritsch–Butland weighted harmonic mean)::

        d_k = 0                                   if m_{k-1} m_k <= 0 (sign change or a flat piece)
        1/d_k = (w1/m_{k-1} + w2/m_k) / (w1 + w2),  w1 = 2 h_k + h_{k-1},  w2 = h_k + 2 h_{k-1}

    End nodes use the one-sided three-point formula ``d = ((2 h0 + h1) m0 - h0 m1) / (h0 + h1)``,
    set to 0 if its sign differs from m0 and limited to 3 m0 if m0, m1 differ in sign and
    |d| > 3 |m0| (Moler, *Numerical Computing with MATLAB*, pchiptx).

    Args:
        h: interval widths, shape (L-1,).
        m: secant slopes, shape (..., L-1).

    Returns:
        derivatives, shape (..., L).
    """
    if m.shape[-1] == 1:  # two nodes: straight line, as scipy
        return torch.cat([m, m], dim=-1)
    m0, m1 = m[..., :-1], m[..., 1:]
    cond = (torch.sign(m0) != torch.sign(m1)) | (m0 == 0) | (m1 == 0)
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    # Substitute 1 where the branch is discarded, so neither the value nor the gradient sees 1/0.
    one = torch.ones((), dtype=m.dtype, device=m.device)
    m0s = torch.where(cond, one, m0)
    m1s = torch.where(cond, one, m1)
    whmean = (w1 / m0s + w2 / m1s) / (w1 + w2)
    d_in = torch.where(cond, torch.zeros_like(whmean), 1.0 / whmean)
    d_first = _pchip_edge(h[0], h[1], m[..., 0], m[..., 1])
    d_last = _pchip_edge(h[-1], h[-2], m[..., -1], m[..., -2])
    return torch.cat([d_first[..., None], d_in, d_last[..., None]], dim=-1)


def _pchip_edge(h0: torch.Tensor, h1: torch.Tensor, m0: torch.Tensor, m1: torch.Tensor) -> torch.Tensor:
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    flip = torch.sign(d) != torch.sign(m0)
    overshoot = (torch.sign(m0) != torch.sign(m1)) & (torch.abs(d) > 3.0 * torch.abs(m0))
    d = torch.where(overshoot & ~flip, 3.0 * m0, d)
    return torch.where(flip, torch.zeros_like(d), d)


def _batch_align(values: torch.Tensor, z_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Broadcast the batch dims of ``values (..., L)`` and ``z_query (..., K)``."""
    batch = torch.broadcast_shapes(values.shape[:-1], z_query.shape[:-1])
    return values.expand(*batch, values.shape[-1]), z_query.expand(*batch, z_query.shape[-1])


def pchip(z_nodes: ArrayLike, values: ArrayLike, z_query: ArrayLike) -> ArrayLike:
    """Batched shape-preserving piecewise-cubic Hermite interpolation (PCHIP).

    Same interpolant as ``scipy.interpolate.PchipInterpolator(z_nodes, v, extrapolate=True)``: on
    ``[z_k, z_{k+1}]`` with ``t = z - z_k``::

        p(z) = ((c3 t + c2) t + d_k) t + v_k,
        c3 = (d_k + d_{k+1} - 2 m_k) / h_k^2,   c2 = (m_k - d_k) / h_k - (d_k + d_{k+1} - 2 m_k) / h_k

    with secants ``m_k = (v_{k+1} - v_k) / h_k`` and derivatives from :func:`_pchip_derivatives`.
    Outside ``[z_1, z_L]`` the first / last cubic piece is extended (scipy's ``extrapolate=True``);
    the spec applies this outside [0.01, 8.03] m on the CLM5 grid.

    Differentiable with torch autograd with respect to ``values`` (and ``z_query``).

    Args:
        z_nodes: node depths, shape (L,), strictly increasing, m.
        values: node values, shape (..., L) — e.g. ``(C, L)``; pass ``soc.T`` for physics output.
        z_query: query depths, shape (..., K), batch dims broadcastable against ``values``; NaN
            queries give NaN.

    Returns:
        interpolated values, shape (broadcast batch, K); numpy if no input was a tensor.
    """
    (zn, v, zq), as_torch = _torch_inputs(z_nodes, values, z_query)
    if zn.ndim != 1 or zn.shape[0] < 2:
        raise ValueError("z_nodes must be 1-D with at least two nodes")
    if v.shape[-1] != zn.shape[0]:
        raise ValueError(f"values last axis ({v.shape[-1]}) must match z_nodes ({zn.shape[0]})")
    if bool((zn[1:] <= zn[:-1]).any()):
        raise ValueError("z_nodes must be strictly increasing")
    v, zq = _batch_align(v, zq)
    n_int = zn.shape[0] - 1
    h = zn[1:] - zn[:-1]
    m = (v[..., 1:] - v[..., :-1]) / h
    d = _pchip_derivatives(h, m)
    tt = (d[..., :-1] + d[..., 1:] - 2 * m) / h
    c3 = tt / h
    c2 = (m - d[..., :-1]) / h - tt
    # Interval k with z_k <= z < z_{k+1}; clamping the index gives scipy's end-piece extrapolation.
    idx = torch.searchsorted(zn, zq.contiguous(), right=True) - 1
    idx = idx.clamp(0, n_int - 1)
    t = zq - zn[idx]
    a3 = torch.gather(c3, -1, idx)
    a2 = torch.gather(c2, -1, idx)
    a1 = torch.gather(d[..., :-1], -1, idx)
    a0 = torch.gather(v[..., :-1], -1, idx)
    out = ((a3 * t + a2) * t + a1) * t + a0
    return _out(out, as_torch)


def linear_clamped(z_nodes: ArrayLike, values: ArrayLike, z_query: ArrayLike) -> ArrayLike:
    """Piecewise-linear interpolation clamped to the end nodes (BINN's observation operator).

    ``p(z) = v_1`` for ``z <= z_1``, ``v_L`` for ``z >= z_L``, linear in between. Same shapes and
    conventions as :func:`pchip`.
    """
    (zn, v, zq), as_torch = _torch_inputs(z_nodes, values, z_query)
    v, zq = _batch_align(v, zq)
    n_int = zn.shape[0] - 1
    zc = torch.clamp(zq, zn[0], zn[-1])
    idx = (torch.searchsorted(zn, zc.contiguous(), right=True) - 1).clamp(0, n_int - 1)
    z0, z1 = zn[idx], zn[idx + 1]
    v0 = torch.gather(v, -1, idx)
    v1 = torch.gather(v, -1, idx + 1)
    frac = (zc - z0) / (z1 - z0)
    return _out(v0 + frac * (v1 - v0), as_torch)


INTERPOLATORS = {"pchip": pchip, "linear_clamped": linear_clamped}


def model_at_obs(
    soc_layers: ArrayLike,
    z_nodes: ArrayLike,
    obs_depth: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    method: Literal["pchip", "linear_clamped"] = "pchip",
    layers_first: bool = True,
) -> ArrayLike:
    """Modelled SOC at the observation depths.

    Args:
        soc_layers: modelled SOC, ``(L, C)`` as returned by the physics (``layers_first=True``)
            or ``(C, L)``, g C m-3.
        z_nodes: node depths (L,), m.
        obs_depth: (C, K) observation depths, m (NaN padding allowed).
        mask: (C, K) valid layers; masked-out entries are returned as NaN.
        method: ``"pchip"`` (PRODA) or ``"linear_clamped"`` (BINN).

    Returns:
        (C, K) modelled SOC at the observation depths, g C m-3.
    """
    (soc, zn, zq), as_torch = _torch_inputs(soc_layers, z_nodes, obs_depth)
    if layers_first:
        soc = soc.transpose(0, 1) if soc.ndim == 2 else soc.movedim(0, -1)
    valid = torch.isfinite(zq)
    if mask is not None:
        valid = valid & torch.as_tensor(_np(mask) if not isinstance(mask, torch.Tensor) else mask,
                                         dtype=torch.bool, device=zq.device)
    # Query a harmless depth where invalid: keeps NaN out of the autograd graph.
    zq_safe = torch.where(valid, zq, zn[0].expand_as(zq))
    pred = INTERPOLATORS[method](zn, soc, zq_safe)
    pred = torch.where(valid, pred, torch.full_like(pred, float("nan")))
    return _out(pred, as_torch)


# --------------------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------------------
@dataclass
class ObservationBatch:
    """A padded batch of ragged SOC profiles.

    Attributes:
        profile_id: (C,) profile identifiers, in order of first appearance in the source table.
        depth: (C, K) layer mid-depths, m; NaN where padded.
        soc: (C, K) observed SOC density, g C m-3; NaN where padded.
        mask: (C, K) True for valid layers.
        skipped: profiles dropped during preprocessing -> reason.
    """

    profile_id: np.ndarray
    depth: np.ndarray
    soc: np.ndarray
    mask: np.ndarray
    skipped: dict[Any, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.depth.shape == self.soc.shape == self.mask.shape):
            raise ValueError("depth, soc and mask must share shape (C, K)")
        if self.profile_id.shape[0] != self.depth.shape[0]:
            raise ValueError("profile_id must have length C")

    @property
    def n_profiles(self) -> int:
        return int(self.depth.shape[0])

    @property
    def n_layers(self) -> np.ndarray:
        """Valid layers per profile, (C,)."""
        return self.mask.sum(axis=1)

    def __len__(self) -> int:
        return self.n_profiles

    def subset(self, index: np.ndarray | slice | list[int]) -> ObservationBatch:
        """Profiles ``index`` (padding width kept)."""
        return ObservationBatch(self.profile_id[index], self.depth[index], self.soc[index], self.mask[index])

    def weights(self, kind: WeightKind = "rank") -> np.ndarray:
        """Depth weights (C, K): ``"rank"`` (code, default) or ``"depth_exp"`` (chapter)."""
        if kind == "rank":
            return rank_weights(self.soc, self.depth, self.mask)
        if kind == "depth_exp":
            return depth_exp_weights(self.depth, self.mask)
        raise ValueError(f"unknown weights kind {kind!r}; use 'rank' or 'depth_exp'")

    @classmethod
    def from_layers(
        cls,
        df: pd.DataFrame,
        *,
        profile_col: str = "profile_id",
        depth_col: str = "depth_m",
        soc_col: str = "soc_density",
        min_layers: int = 2,
    ) -> ObservationBatch:
        """Build a batch from the canonical observation table (one row per layer).

        Preprocessing (spec §(k)): layers with SOC = 0 or NaN SOC / depth are dropped; a profile is
        skipped (reason recorded in ``skipped``) if all its SOC is 0 / missing or fewer than
        ``min_layers`` valid layers remain (2 for site MCMC; 1 for end-to-end training and evaluation).
        Layer order within a profile is the table order (it decides the tie order of
        :func:`rank_weights`, as MATLAB's stable sort did).

        Args:
            df: columns ``profile_id``, ``depth_m`` (m) and ``soc_density`` (g C m-3).
        """
        missing = {profile_col, depth_col, soc_col} - set(df.columns)
        if missing:
            raise KeyError(f"observation table lacks columns {sorted(missing)}")
        pid = df[profile_col].to_numpy()
        z = df[depth_col].to_numpy(dtype=float)
        o = df[soc_col].to_numpy(dtype=float)
        order = _unique_in_order(pid)
        keep_layer = np.isfinite(z) & np.isfinite(o) & (o != 0)
        groups: list[tuple[Any, np.ndarray]] = []
        skipped: dict[Any, str] = {}
        codes = {p: i for i, p in enumerate(order)}
        layer_profile = np.array([codes[p] for p in pid], dtype=np.int64)
        for i, p in enumerate(order):
            rows = np.flatnonzero(layer_profile == i)
            good = rows[keep_layer[rows]]
            if good.size == 0:
                skipped[p] = "no valid non-zero SOC layer"
            elif good.size < min_layers:
                skipped[p] = "fewer than two valid layers"
            else:
                groups.append((p, good))
        k = max((g.size for _, g in groups), default=0)
        c = len(groups)
        depth = np.full((c, k), np.nan)
        soc = np.full((c, k), np.nan)
        mask = np.zeros((c, k), dtype=bool)
        for j, (_, rows) in enumerate(groups):
            n = rows.size
            depth[j, :n] = z[rows]
            soc[j, :n] = o[rows]
            mask[j, :n] = True
        ids = np.asarray([p for p, _ in groups])
        return cls(ids, depth, soc, mask, skipped)


def _unique_in_order(values: np.ndarray) -> list[Any]:
    seen: dict[Any, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


# --------------------------------------------------------------------------------------------------
# Depth weights (spec §(k))
# --------------------------------------------------------------------------------------------------
def _descending_rank(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """1-based rank of each entry in descending order per row, ties in original order (stable).

    Invalid entries are ranked after all valid ones (their rank is never used).
    """
    key = np.where(mask, -x, np.inf)
    order = np.argsort(key, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, x.shape[-1] + 1)[None, :].repeat(x.shape[0], 0), axis=-1)
    return ranks


def _masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    n = mask.sum(axis=-1, keepdims=True)
    s = np.where(mask, x, 0.0).sum(axis=-1, keepdims=True)
    return s / np.maximum(n, 1)


def rank_weights(obs_soc: ArrayLike, obs_depth: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """Rank-based extremity weights of the original code (spec §(k), ``weights="rank"``).

    Per profile, over its valid layers::

        r^S_i = rank of |o_i - mean(o)| in descending order (1 = furthest from the mean)
        r^Z_i = rank of |z_i - mean(z)| in descending order
        r_i   = (r^S_i + r^Z_i) / 2
        w_i   = max(1, 10 exp(-(r_i - 1)))

    Ties keep their original order (MATLAB's stable sort). Possible values: 10 (r=1), 6.07 (1.5),
    3.68 (2), 2.23 (2.5), 1.35 (3) and 1 for r >= 3.5.

    Args:
        obs_soc, obs_depth: (C, K); mask: (C, K) valid layers (default: both finite).

    Returns:
        (C, K) weights; NaN where masked out.
    """
    o = np.atleast_2d(_np(obs_soc).astype(float))
    z = np.atleast_2d(_np(obs_depth).astype(float))
    m = np.isfinite(o) & np.isfinite(z)
    if mask is not None:
        m &= np.atleast_2d(_np(mask).astype(bool))
    o0, z0 = np.where(m, o, 0.0), np.where(m, z, 0.0)
    dev_s = np.abs(o0 - _masked_mean(o0, m))
    dev_z = np.abs(z0 - _masked_mean(z0, m))
    r = 0.5 * (_descending_rank(dev_s, m) + _descending_rank(dev_z, m))
    w = np.maximum(1.0, 10.0 * np.exp(-(r - 1.0)))
    return np.where(m, w, np.nan)


def depth_exp_weights(obs_depth: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """Chapter depth weights (spec §(k), ``weights="depth_exp"``): ``w_i = exp(-|z_i|)``, and 10
    for the shallowest and the deepest observed layer of each profile.

    Returns:
        (C, K) weights; NaN where masked out.
    """
    z = np.atleast_2d(_np(obs_depth).astype(float))
    m = np.isfinite(z)
    if mask is not None:
        m &= np.atleast_2d(_np(mask).astype(bool))
    w = np.where(m, np.exp(-np.abs(np.where(m, z, 0.0))), np.nan)
    rows = np.flatnonzero(m.any(axis=1))
    top = np.argmin(np.where(m, z, np.inf), axis=1)[rows]
    bottom = np.argmax(np.where(m, z, -np.inf), axis=1)[rows]
    w[rows, top] = 10.0
    w[rows, bottom] = 10.0
    return w


def depth_weights(obs: ObservationBatch, kind: WeightKind = "rank") -> np.ndarray:
    """Named-option front end: ``kind="rank"`` (code) or ``"depth_exp"`` (chapter)."""
    return obs.weights(kind)


# --------------------------------------------------------------------------------------------------
# Cost (spec §(k))
# --------------------------------------------------------------------------------------------------
def cost(
    model_at_obs: ArrayLike,
    obs_soc: ArrayLike,
    weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    *,
    rel_error: float = REL_OBS_ERROR,
) -> ArrayLike:
    """Weighted relative-error cost per profile.

    ``J = sum_i w_i (m_i - o_i)^2 / (2 (0.6 o_i)^2)`` over valid layers; terms that are NaN (e.g. a
    NaN modelled value) are ignored, as in the original. A profile with no finite term at all gets
    ``J = NaN`` (the original's sum would be 0, which an MCMC would happily accept).

    Differentiable with respect to ``model_at_obs`` when given tensors.

    Args:
        model_at_obs: (C, K) modelled SOC at the observation depths, g C m-3.
        obs_soc: (C, K) observed SOC, g C m-3 (0 or NaN entries are invalid).
        weights: (C, K) depth weights (default 1).
        mask: (C, K) valid layers (default: finite, non-zero observations).
        rel_error: relative observation error (0.6).

    Returns:
        (C,) cost.
    """
    w_in = torch.ones(()) if weights is None else weights
    (m, o, w), as_torch = _torch_inputs(model_at_obs, obs_soc, w_in)
    valid = torch.isfinite(o) & (o != 0)
    if mask is not None:
        valid = valid & torch.as_tensor(_np(mask) if not isinstance(mask, torch.Tensor) else mask,
                                         dtype=torch.bool, device=o.device)
    w = w.expand_as(o)
    term_ok = valid & torch.isfinite(m) & torch.isfinite(w)
    one = torch.ones((), dtype=o.dtype, device=o.device)
    o_s = torch.where(valid, o, one)
    m_s = torch.where(term_ok, m, o_s)  # zero residual where ignored, no NaN in the graph
    w_s = torch.where(term_ok, w, torch.zeros_like(w))
    terms = w_s * (m_s - o_s) ** 2 / (2.0 * (rel_error * o_s) ** 2)
    j = terms.sum(dim=-1)
    j = torch.where(term_ok.any(dim=-1), j, torch.full_like(j, float("nan")))
    return _out(j, as_torch)


# --------------------------------------------------------------------------------------------------
# Goodness of fit per profile (spec §(k)) and pooled evaluation metrics (spec §(j))
# --------------------------------------------------------------------------------------------------
def _valid_pairs(model: ArrayLike, obs: ArrayLike, mask: ArrayLike | None) -> tuple[np.ndarray, ...]:
    m = np.atleast_2d(_np(model).astype(float))
    o = np.atleast_2d(_np(obs).astype(float))
    v = np.isfinite(m) & np.isfinite(o)
    if mask is not None:
        v &= np.atleast_2d(_np(mask).astype(bool))
    return np.where(v, m, 0.0), np.where(v, o, 0.0), v


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast_shapes(num.shape, den.shape), np.nan)
    ok = den > 0
    np.divide(num, den, out=out, where=ok)
    return out


def efficiency(model: ArrayLike, obs: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """Nash–Sutcliffe efficiency per profile (chapter): ``E = 1 - SS_res / SS_tot``,
    ``SS_res = sum (m - o)^2``, ``SS_tot = sum (o - mean(o))^2`` over valid layers. (C,)."""
    m, o, v = _valid_pairs(model, obs, mask)
    obar = _masked_mean(o, v)
    ss_res = np.where(v, (m - o) ** 2, 0.0).sum(-1)
    ss_tot = np.where(v, (o - obar) ** 2, 0.0).sum(-1)
    return 1.0 - _safe_ratio(ss_res, ss_tot)


def r2_legacy(model: ArrayLike, obs: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """The original code's "R²" per profile **[quirk]**: ``1 - SS_res / sum (o - mean(m))^2``,
    i.e. the total sum of squares taken about the **modelled** mean. (C,)."""
    m, o, v = _valid_pairs(model, obs, mask)
    mbar = _masked_mean(m, v)
    ss_res = np.where(v, (m - o) ** 2, 0.0).sum(-1)
    ss_tot = np.where(v, (o - mbar) ** 2, 0.0).sum(-1)
    return 1.0 - _safe_ratio(ss_res, ss_tot)


def rmse(model: ArrayLike, obs: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """Root-mean-square error per profile over valid layers, g C m-3. (C,)."""
    m, o, v = _valid_pairs(model, obs, mask)
    n = v.sum(-1)
    return np.sqrt(_safe_ratio(np.where(v, (m - o) ** 2, 0.0).sum(-1), n.astype(float)))


def pooled_metrics(model: ArrayLike, obs: ArrayLike) -> dict[str, float]:
    """Pooled evaluation metrics over all finite (model, obs) pairs (spec §(j), "Evaluation").

    With residuals ``e = m - o`` and the observed mean ``ō``:

    * ``rmse = sqrt(mean e^2)``, ``mae = mean |e|``
    * ``e`` (Nash–Sutcliffe) ``= 1 - sum e^2 / sum (o - ō)^2``
    * ``e_abs`` (Legates–McCabe E1) ``= 1 - sum |e| / sum |o - ō|``
    * ``d`` (Willmott) ``= 1 - sum e^2 / sum (|m - ō| + |o - ō|)^2``
    * ``d_abs`` (Willmott d1) ``= 1 - sum |e| / sum (|m - ō| + |o - ō|)``
    * ``rsr = sqrt(sum e^2 / sum (o - ō)^2)``
    * ``pbias = 100 sum (m - o) / sum o`` (%; positive = model overestimates)
    * ``lin_ccc = 2 cov(m, o) / (var m + var o + (m̄ - ō)^2)`` (population moments)
    * ``n`` = number of pairs.
    """
    m = _np(model).astype(float).ravel()
    o = _np(obs).astype(float).ravel()
    ok = np.isfinite(m) & np.isfinite(o)
    m, o = m[ok], o[ok]
    n = m.size
    nan = float("nan")
    if n == 0:
        return dict.fromkeys(("rmse", "mae", "e", "e_abs", "d", "d_abs", "rsr", "pbias", "lin_ccc"),
                             nan) | {"n": 0}
    e = m - o
    obar, mbar = o.mean(), m.mean()
    ss_res, ss_tot = float((e**2).sum()), float(((o - obar) ** 2).sum())
    ab_res, ab_tot = float(np.abs(e).sum()), float(np.abs(o - obar).sum())
    pot = np.abs(m - obar) + np.abs(o - obar)

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else nan

    cov = float(((m - mbar) * (o - obar)).mean())
    ccc_den = float(m.var() + o.var() + (mbar - obar) ** 2)
    return {
        "rmse": float(np.sqrt((e**2).mean())),
        "mae": float(np.abs(e).mean()),
        "e": 1.0 - ratio(ss_res, ss_tot),
        "e_abs": 1.0 - ratio(ab_res, ab_tot),
        "d": 1.0 - ratio(ss_res, float((pot**2).sum())),
        "d_abs": 1.0 - ratio(ab_res, float(pot.sum())),
        "rsr": float(np.sqrt(ratio(ss_res, ss_tot))),
        "pbias": 100.0 * ratio(float(e.sum()), float(o.sum())) if o.sum() != 0 else nan,
        "lin_ccc": ratio(2.0 * cov, ccc_den),
        "n": n,
    }
