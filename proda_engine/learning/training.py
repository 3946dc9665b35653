"""Training the parameter network: two-step (regress MCMC means) and end-to-end (through the physics).

Both modes share one loop (:func:`fit_loop`): seeded minibatches, Adam (or the original
Adadelta), gradient-norm clipping, early stopping with patience on the **validation** loss, the
best-validation weights kept in memory and restored at the end, a tqdm bar, and a per-epoch history.
On the CPU a run is deterministic for a given ``config.seed``.

Two-step (spec §(m), the original PRODA)
-----------------------------------------
Targets are the MCMC posterior means ``y`` (N, 21) in unit space; the network predicts ``ŷ``.

* ``loss="mse"`` (default): ``L = <(ŷ - y)^2>`` over the batch and the 21 outputs.
* ``loss="proda"``: the original's **product** ``L = (500 MSE) (25 MARE)`` with
  ``MARE = <|(y - ŷ) / y|>``. MARE blows up for targets near 0: a site with ``y = 1e-3`` weighs a
  thousand times more than one with ``y = 1``, and unit-space posterior means do sit near 0 for
  parameters pushed to a prior bound. Denominators are floored at 1e-4 (the network's lower
  output bound) so an exact 0 cannot give inf, but the imbalance is intrinsic; prefer ``"mse"``.

End-to-end (differentiable PRODA)
---------------------------------
``theta = NN(x)`` -> physical parameters -> structured steady state ``X* = G(theta)^-1 b`` (batched
over the minibatch's sites, forcing subset per minibatch, adjoint gradients) -> SOC = S1+S2+S3 per
layer -> PCHIP at the observed depths -> loss against observed SOC ``o`` (g C m-3). Per site ``c``
with valid layers ``i``, depth weights ``w_ci`` (spec §(k), rank-based by default) and
``W_c = sum_i w_ci``:

* ``loss="cost"`` (default): the PRODA cost with a 60 % relative observation error, normalised
  per site::

      l_c = J_c / W_c = sum_i w_ci (m_ci - o_ci)^2 / (2 (0.6 o_ci)^2) / W_c

  i.e. the weighted mean squared relative error / 0.72. Relative, so a 10 kg m-3 topsoil and a
  0.5 kg m-3 subsoil layer count alike; divided by ``W_c`` so a 12-layer profile does not count
  six times more than a 2-layer one.
* ``loss="log_mse"``: ``l_c = sum_i w_ci (ln m_ci - ln o_ci)^2 / W_c`` (symmetric in the ratio; the
  modelled value is floored at 1e-6 g C m-3).

The batch loss is the mean of ``l_c`` over sites that solved (``status == 0``). Failed sites are
removed with ``torch.where`` (the solver's adjoint zeroes them too), counted, and reported per
epoch as ``train_failed`` / ``val_failed`` fractions.

Example
-------
>>> import numpy as np
>>> from proda_engine.learning import TrainConfig, train_two_step
>>> rng = np.random.default_rng(0)
>>> x = {"a": rng.uniform(size=300), "b": rng.uniform(size=300)}
>>> y = np.clip(0.2 + 0.6 * np.outer(x["a"], np.ones(21)), 0.01, 0.99)
>>> cfg = TrainConfig(hidden=(16,), max_epochs=3, block_size=20.0)
>>> model = train_two_step(x, y, config=cfg, lat=rng.uniform(-60, 60, 300), lon=rng.uniform(-180, 180, 300))
>>> model.predict_theta(x).shape
(300, 21)
"""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from proda_engine.data.writers import atomic_write, version_attrs
from proda_engine.grid import Grid, get_grid
from proda_engine.inference.likelihood import ObservationBatch, cost, model_at_obs, pooled_metrics
from proda_engine.learning.config import LOSSES, TrainConfig
from proda_engine.learning.features import FeatureEncoder, is_missing, table_column, table_columns, table_length
from proda_engine.learning.networks import ParameterNet, build_network, resolve_device, resolve_dtype
from proda_engine.learning.splits import Split, spatial_block_split
from proda_engine.parameters import N_PARAMS, PARAMETER_NAMES, THETA_MIN
from proda_engine.physics import Forcing, Status, params_from_theta, steady_state

log = logging.getLogger(__name__)

MODEL_FORMAT = "proda-parameter-net"
MODEL_FORMAT_VERSION = 1
LAT_NAMES = ("lat", "Lat", "latitude", "Latitude")
LON_NAMES = ("lon", "Lon", "longitude", "Longitude")
#: Floor of the modelled SOC in the log loss, g C m-3.
LOG_FLOOR = 1e-6

BatchLoss = Callable[[np.ndarray], tuple[torch.Tensor, int, int]]


# ==================================================================================================
# The trained model
# ==================================================================================================
@dataclass
class TrainedModel:
    """A trained parameter network with everything needed to use and reproduce it.

    Attributes:
        net: the :class:`ParameterNet` (best-validation weights).
        encoder: the fitted :class:`FeatureEncoder` (covariate list, scaling, categories).
        config: the validated :class:`TrainConfig` of the run.
        history: one dict per epoch (``epoch``, ``train_loss``, ``val_loss``, ``seconds``; end-to-end
            also ``train_failed``, ``val_failed``).
        metadata: covariates, feature names, package / torch versions, data checksums, dropped-site
            counts, split counts, best epoch, evaluation metrics on val / test.
        split: the site split used (indices into the training table), if any.
    """

    net: ParameterNet
    encoder: FeatureEncoder
    config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    split: Split | None = None

    # ------------------------------------------------------------------------------------------
    def predict_encoded(self, x: np.ndarray | torch.Tensor, *, batch_size: int = 65536) -> np.ndarray:
        """theta (N, 21) float64 from already-encoded inputs (N, n_features)."""
        p = next(self.net.parameters())
        xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=p.dtype,
                             device=p.device)
        was_training = self.net.training
        self.net.eval()
        out = []
        with torch.no_grad():
            for s in range(0, xt.shape[0], batch_size):
                out.append(self.net(xt[s:s + batch_size]).cpu().numpy())
        self.net.train(was_training)
        return np.concatenate(out, axis=0) if out else np.zeros((0, self.net.n_out))

    def predict_theta(self, table: Mapping[str, Any], *, batch_size: int = 65536) -> np.ndarray:
        """Unit-interval parameters (N, 21), float64, for every row of a covariate table.

        Rows with a NaN covariate get a NaN row (counted in the log); an unseen category gets an
        all-zero one-hot (counted). Every other value lies in [1e-4, 1], beta's in [1e-4, 0.98].
        """
        enc = self.encoder.transform(table)
        out = np.full((enc.n_rows, self.net.n_out), np.nan)
        out[enc.index] = self.predict_encoded(enc.x, batch_size=batch_size)
        if enc.dropped:
            log.warning("predict_theta: %d of %d rows have NaN covariates -> NaN theta",
                        enc.dropped["nan_covariate"], enc.n_rows)
        return out

    def simulate(self, table: Mapping[str, Any], forcing: Forcing, grid: Grid | None = None, *,
                 closure: str = "conservative") -> tuple[np.ndarray, np.ndarray]:
        """SOC (L, N) g C m-3 and status (N,) for the rows of ``table`` with forcing ``forcing``.

        Rows with NaN covariates get NaN SOC and status ``INVALID_INPUT``.
        """
        theta = self.predict_theta(table)
        ok = np.isfinite(theta).all(1)
        grid = grid or get_grid()
        soc = np.full((grid.n_layers, theta.shape[0]), np.nan)
        status = np.full(theta.shape[0], int(Status.INVALID_INPUT), dtype=np.int8)
        if ok.any():
            idx = np.flatnonzero(ok)
            f = forcing.subset(idx).to(dtype=torch.float64)
            with torch.no_grad():
                res = steady_state(params_from_theta(torch.as_tensor(theta[idx], device=f.device), clamp=False),
                                   f, grid, closure=closure)
            soc[:, idx] = res.soc.cpu().numpy()
            status[idx] = res.status.cpu().numpy()
        return soc, status

    def soc_at_observations(self, table: Mapping[str, Any], forcing: Forcing, observations: ObservationBatch,
                            grid: Grid | None = None, *, closure: str = "conservative") -> np.ndarray:
        """Modelled SOC (N, K) at the observed depths (NaN where masked, failed or NaN covariates)."""
        grid = grid or get_grid()
        soc, status = self.simulate(table, forcing, grid, closure=closure)
        pred = model_at_obs(np.nan_to_num(soc), grid.z_node, observations.depth, observations.mask)
        pred[status != 0] = np.nan
        return pred

    # ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of tensors and Python values (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "net": self.net.spec(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "encoder": self.encoder.to_dict(),
            "config": self.config.to_dict(),
            "history": _plain_tree(self.history),
            "metadata": _plain_tree(self.metadata),
            "split": None if self.split is None else self.split.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, device: str | torch.device = "cpu") -> TrainedModel:
        if d.get("format") != MODEL_FORMAT:
            raise ValueError(f"not a {MODEL_FORMAT} file (format={d.get('format')!r})")
        if int(d.get("format_version", 0)) > MODEL_FORMAT_VERSION:
            raise ValueError(f"model file format {d['format_version']} is newer than this code "
                             f"({MODEL_FORMAT_VERSION})")
        config = TrainConfig.from_dict(d["config"])
        net = ParameterNet.from_spec(d["net"])
        net.load_state_dict(d["state_dict"])
        net = net.to(device=resolve_device(device), dtype=resolve_dtype(config.dtype)).eval()
        split = None if d.get("split") is None else Split.from_dict(d["split"])
        return cls(net=net, encoder=FeatureEncoder.from_dict(d["encoder"]), config=config,
                   history=list(d["history"]), metadata=dict(d["metadata"]), split=split)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to ``path`` atomically (:func:`proda_engine.data.writers.atomic_write`)."""
        return _atomic_torch_save(self.to_dict(), Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> TrainedModel:
        """Read a model written by :meth:`save` (safe loader: ``weights_only=True``)."""
        return cls.from_dict(torch.load(Path(path), map_location="cpu", weights_only=True), device=device)


def _atomic_torch_save(obj: Any, path: Path) -> Path:
    """``torch.save`` through the project's one atomic writer (no partial file, the one file mode)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _plain_tree(obj: Any) -> Any:
    """numpy scalars / arrays and tuples -> Python scalars / lists, recursively."""
    if isinstance(obj, Mapping):
        return {str(k): _plain_tree(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain_tree(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, str):
        return str(obj)  # str subclasses (e.g. TorchVersion) are not allowed by the safe loader
    return obj


# ==================================================================================================
# The shared loop
# ==================================================================================================
def make_optimizer(net: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam / AdamW, or Adadelta with Keras defaults (rho 0.95, eps 1e-7) as in the original."""
    params = net.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adadelta(params, lr=config.lr, rho=0.95, eps=1e-7, weight_decay=config.weight_decay)


def _evaluate(net: ParameterNet, rows: np.ndarray, batch_loss: BatchLoss, batch_size: int) -> tuple[float, float]:
    """Mean loss over usable sites and the failed fraction, in eval mode without gradients."""
    net.eval()
    total, used, failed = 0.0, 0, 0
    with torch.no_grad():
        for s in range(0, rows.size, batch_size):
            loss, n_used, n_failed = batch_loss(rows[s:s + batch_size])
            if n_used:
                total += float(loss) * n_used
            used += n_used
            failed += n_failed
    n = used + failed
    return (total / used if used else math.nan), (failed / n if n else math.nan)


def fit_loop(net: ParameterNet, batch_loss: BatchLoss, train_rows: np.ndarray, val_rows: np.ndarray,
             config: TrainConfig, *, desc: str = "train") -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Minibatch training with early stopping on the validation loss; restores the best weights.

    Args:
        net: the network (trained in place).
        batch_loss: ``rows -> (mean loss over usable sites, n_used, n_failed)`` for a set of rows;
            differentiable with respect to the net when grad is enabled.
        train_rows, val_rows: row indices (train may hold bootstrap repeats).
        config: batch size, epochs, patience, optimiser, seed, clipping, progress bar.

    Returns:
        (history, summary) with ``best_epoch``, ``best_val_loss``, ``stopped_early``,
        ``skipped_steps`` (batches without a finite loss) and ``nonfinite_grad_steps``.
    """
    torch.manual_seed(config.seed)  # dropout masks
    rng = np.random.default_rng(config.seed)  # minibatch order
    opt = make_optimizer(net, config)
    history: list[dict[str, float]] = []
    best_val, best_epoch, wait = math.inf, -1, 0
    best_state = copy.deepcopy(net.state_dict())
    skipped, nonfinite_grads = 0, 0
    stopped_early = False
    bar = tqdm(range(1, config.max_epochs + 1), desc=desc, disable=not config.progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        net.train()
        perm = rng.permutation(train_rows)
        total, used, failed = 0.0, 0, 0
        for s in range(0, perm.size, config.batch_size):
            # Sorted within the batch: the loss is a mean, and ordered gathers from the (month,
            # layer, site) forcing tensors are several times faster than random ones.
            rows = np.sort(perm[s:s + config.batch_size])
            opt.zero_grad(set_to_none=True)
            loss, n_used, n_failed = batch_loss(rows)
            failed += n_failed
            if n_used == 0 or not bool(torch.isfinite(loss)):
                skipped += 1
                continue
            loss.backward()
            # A non-finite gradient would poison every weight; drop it and count it.
            bad = False
            for p in net.parameters():
                if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                    bad = True
                    p.grad = torch.nan_to_num(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
            nonfinite_grads += int(bad)
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            opt.step()
            total += float(loss.detach()) * n_used
            used += n_used
        train_loss = total / used if used else math.nan
        n_seen = used + failed
        val_loss, val_failed = _evaluate(net, val_rows, batch_loss, max(config.batch_size, 4096))
        rec = {"epoch": float(epoch), "train_loss": train_loss, "val_loss": val_loss,
               "train_failed": failed / n_seen if n_seen else math.nan, "val_failed": val_failed,
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        bar.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}")
        log.info("%s epoch %d: train %.5g val %.5g failed %.3f/%.3f (%.2fs)", desc, epoch, train_loss,
                 val_loss, rec["train_failed"], val_failed, rec["seconds"])
        if rec["train_failed"] > config.max_failed_fraction:
            log.warning("%s epoch %d: %.1f %% of training sites failed to solve", desc, epoch,
                        100 * rec["train_failed"])
        if math.isfinite(val_loss) and val_loss < best_val - config.min_delta:
            best_val, best_epoch, wait = val_loss, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            wait += 1
            if wait >= config.patience:
                stopped_early = True
                break
    bar.close()
    net.load_state_dict(best_state)
    net.eval()
    summary = {"best_epoch": best_epoch, "best_val_loss": best_val, "epochs_run": len(history),
               "stopped_early": stopped_early, "skipped_steps": skipped, "nonfinite_grad_steps": nonfinite_grads}
    if best_epoch < 0:
        log.warning("%s: the validation loss was never finite; returning the initial weights", desc)
    return history, summary


# ==================================================================================================
# Data preparation shared by both modes
# ==================================================================================================
@dataclass
class Prepared:
    """Encoded inputs and the split for one training run (rows index the input table)."""

    x: torch.Tensor  # (N, F) network dtype, NaN rows for dropped sites
    encoder: FeatureEncoder
    split: Split
    dropped: dict[str, int]
    n_rows: int


def _coordinate(table: Mapping[str, Any], given: np.ndarray | None, names: Sequence[str], what: str) -> np.ndarray:
    if given is not None:
        return np.asarray(given, dtype=float)
    for n in names:
        if n in table_columns(table):
            return table_column(table, n).astype(float)
    raise ValueError(f"no {what} for the spatial split: pass {what}= or a column named one of {list(names)}")


def prepare(table: Mapping[str, Any], config: TrainConfig, *, valid: np.ndarray | None = None,
            reasons: Mapping[str, np.ndarray] | None = None, lat: np.ndarray | None = None,
            lon: np.ndarray | None = None, split: Split | None = None, encoder: FeatureEncoder | None = None,
            covariates: Sequence[str] | None = None, categorical: Sequence[str] = (),
            scaling: str = "minmax") -> Prepared:
    """Drop unusable sites (counted), split them spatially, fit the encoder on training rows, encode.

    Args:
        table: covariate table, one row per site.
        valid: extra (N,) usability mask from the caller (e.g. finite targets).
        reasons: reason -> (N,) bool mask of sites dropped for that reason (for the counts).
        lat, lon: site coordinates (default: ``lat``/``lon`` columns of ``table``).
        split: an explicit split (row indices); unusable rows in it are dropped and counted.
        encoder: an already fitted encoder (e.g. fitted on the global grid table, as the original
            scaled with the grid's min/max); default: fit on the training rows only, so no test
            information leaks into the scaling.
        covariates, categorical, scaling: passed to a new :class:`FeatureEncoder`.
    """
    n = table_length(table)
    cols = encoder.columns if encoder is not None and encoder.columns else (
        list(covariates) if covariates is not None else table_columns(table))
    nan_rows = np.zeros(n, dtype=bool)
    for c in cols:
        nan_rows |= is_missing(table_column(table, c))
    usable = ~nan_rows & (np.ones(n, bool) if valid is None else np.asarray(valid, bool))
    dropped = {"nan_covariate": int(nan_rows.sum())}
    for r, m in (reasons or {}).items():
        dropped[r] = int((np.asarray(m, bool) & ~nan_rows).sum())
    dropped = {k: v for k, v in dropped.items() if v}
    sites = np.flatnonzero(usable)
    if sites.size < 3:
        raise ValueError(f"only {sites.size} usable sites (dropped: {dropped})")
    if split is None:
        la = _coordinate(table, lat, LAT_NAMES, "lat")[sites]
        lo = _coordinate(table, lon, LON_NAMES, "lon")[sites]
        s = spatial_block_split(la, lo, block_size=config.block_size, test_fraction=config.test_fraction,
                                val_fraction=config.val_fraction, seed=config.split_seed, buffer=config.buffer)
        split = Split(train=sites[s.train], val=sites[s.val], test=sites[s.test], buffer=sites[s.buffer],
                      info=s.info)
    else:
        bad = {k: int((~usable[getattr(split, k)]).sum()) for k in ("train", "val", "test")}
        if any(bad.values()):
            log.warning("explicit split: dropping unusable rows %s", bad)
            dropped["split_unusable"] = sum(bad.values())
            split = Split(train=split.train[usable[split.train]], val=split.val[usable[split.val]],
                          test=split.test[usable[split.test]], buffer=split.buffer, info=split.info)
    if split.train.size == 0:
        raise ValueError("no training sites")
    if encoder is None:
        encoder = FeatureEncoder(categorical=categorical, scaling=scaling, columns=cols)  # type: ignore[arg-type]
        encoder.fit(table, rows=np.unique(split.train))
    enc = encoder.transform(table)
    x = np.full((n, encoder.n_features), np.nan)
    x[enc.index] = enc.x
    if enc.unknown:
        log.info("sites with unseen categories (kept, all-zero one-hot): %s", enc.unknown)
    dtype = resolve_dtype(config.dtype)
    xt = torch.as_tensor(x, dtype=dtype, device=resolve_device(config.device))
    return Prepared(x=xt, encoder=encoder, split=split, dropped=dropped, n_rows=n)


def _base_metadata(prep: Prepared, summary: Mapping[str, Any], checksums: Mapping[str, str] | None,
                   seconds: float) -> dict[str, Any]:
    return {
        "covariates": list(prep.encoder.columns or []),
        "categorical": list(prep.encoder.categorical),
        "feature_names": prep.encoder.feature_names,
        "scaling": prep.encoder.scaling,
        "parameters": list(PARAMETER_NAMES),
        # the one version key, plus package_version that model files have always carried
        **version_attrs("package_version"),
        "torch_version": str(torch.__version__),
        "checksums": dict(checksums or {}),
        "n_rows": prep.n_rows,
        "dropped": dict(prep.dropped),
        "split_counts": prep.split.counts(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "train_seconds": seconds,
        **dict(summary),
    }


# ==================================================================================================
# Two-step
# ==================================================================================================
def two_step_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Batch loss for unit-space targets (N, 21): ``"mse"`` or ``"proda"`` = (500 MSE)(25 MARE).

    MARE denominators are floored at 1e-4 (see the module docstring for the blow-up near 0).
    """
    err = pred - target
    mse = (err**2).mean()
    if kind == "mse":
        return mse
    if kind == "proda":
        mare = (err.abs() / target.abs().clamp_min(THETA_MIN)).mean()
        return (500.0 * mse) * (25.0 * mare)
    raise ValueError(f"unknown two-step loss {kind!r}")


def _targets_array(targets: Any, n: int) -> np.ndarray:
    if hasattr(targets, "columns"):
        cols = [str(c) for c in targets.columns]
        if set(PARAMETER_NAMES) <= set(cols):
            targets = targets[list(PARAMETER_NAMES)]
        arr = np.asarray(targets.to_numpy(), dtype=float)
    else:
        arr = np.asarray(targets, dtype=float)
    if arr.shape != (n, N_PARAMS):
        raise ValueError(f"targets must be (N={n}, {N_PARAMS}) unit-space means, found {arr.shape}")
    finite = np.isfinite(arr)
    if ((arr[finite] < 0) | (arr[finite] > 1)).any():
        raise ValueError("targets must be unit-space theta in [0, 1] (spec §(m): not physical units)")
    return arr


def _pearson_by_column(a: np.ndarray, b: np.ndarray) -> list[float]:
    out = []
    for j in range(a.shape[1]):
        x, y = a[:, j], b[:, j]
        if x.size < 2 or x.std() == 0 or y.std() == 0:
            out.append(math.nan)
        else:
            out.append(float(np.corrcoef(x, y)[0, 1]))
    return out


def _r2_by_column(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    ss_res = ((pred - truth) ** 2).sum(0)
    ss_tot = ((truth - truth.mean(0)) ** 2).sum(0)
    return [float(1 - r / t) if t > 0 else math.nan for r, t in zip(ss_res, ss_tot)]


def train_two_step(features: Mapping[str, Any], targets_theta: Any, *, config: TrainConfig | None = None,
                   lat: np.ndarray | None = None, lon: np.ndarray | None = None, split: Split | None = None,
                   encoder: FeatureEncoder | None = None, covariates: Sequence[str] | None = None,
                   categorical: Sequence[str] = (), scaling: str = "minmax",
                   checksums: Mapping[str, str] | None = None) -> TrainedModel:
    """Regress MCMC posterior means (unit space) on covariates (the original two-step PRODA).

    Args:
        features: covariate table (DataFrame or dict of arrays), one row per site.
        targets_theta: (N, 21) posterior means in unit space (array or DataFrame with the
            parameter names as columns). Rows with a NaN target are dropped (counted).
        config: :class:`TrainConfig` (``method`` is forced to ``"two-step"``).
        lat, lon: coordinates for the spatial split (default: ``lat``/``lon`` columns).
        split, encoder, covariates, categorical, scaling: see :func:`prepare`.
        checksums: input-data checksums to store in the metadata.

    Returns:
        :class:`TrainedModel`; ``metadata["evaluation"]`` holds per-parameter Pearson r and R² on the
        validation and test sites.
    """
    config = _for_method(config, "two-step")
    n = table_length(features)
    y = _targets_array(targets_theta, n)
    bad_target = ~np.isfinite(y).all(1)
    prep = prepare(features, config, valid=~bad_target, reasons={"nan_target": bad_target}, lat=lat, lon=lon,
                   split=split, encoder=encoder, covariates=covariates, categorical=categorical, scaling=scaling)
    device = prep.x.device
    yt = torch.as_tensor(np.nan_to_num(y), dtype=torch.float64, device=device)
    net = build_network(prep.encoder.n_features, config.hidden, dropout=config.dropout, device=device,
                        dtype=config.dtype, seed=config.seed)

    def batch_loss(rows: np.ndarray) -> tuple[torch.Tensor, int, int]:
        r = torch.as_tensor(rows, device=device)
        return two_step_loss(net(prep.x[r]), yt[r], config.loss or "mse"), int(rows.size), 0

    t0 = time.perf_counter()
    history, summary = fit_loop(net, batch_loss, prep.split.train, prep.split.val, config, desc="two-step")
    model = TrainedModel(net=net, encoder=prep.encoder, config=config, history=history, split=prep.split)
    meta = _base_metadata(prep, summary, checksums, time.perf_counter() - t0)
    evaluation = {}
    for name in ("val", "test"):
        rows = getattr(prep.split, name)
        if rows.size:
            pred = model.predict_encoded(prep.x[torch.as_tensor(rows, device=device)])
            evaluation[name] = {"pearson_r": _pearson_by_column(pred, y[rows]), "r2": _r2_by_column(pred, y[rows]),
                                "mse": float(((pred - y[rows]) ** 2).mean())}
    meta["evaluation"] = evaluation
    model.metadata = meta
    return model


# ==================================================================================================
# End-to-end
# ==================================================================================================
def site_loss(pred: torch.Tensor, obs: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor,
              kind: str = "cost", rel_error: float = 0.6) -> torch.Tensor:
    """Per-site loss (C,) between modelled and observed SOC at observation depths (C, K).

    ``"cost"``: ``J_c / W_c`` with the PRODA cost ``J_c`` (spec §(k)) and ``W_c = sum_i w_ci``;
    ``"log_mse"``: ``sum_i w_ci (ln m_ci - ln o_ci)^2 / W_c``. NaN where a site has no usable layer.
    """
    w = torch.where(mask, weights, torch.zeros_like(weights))
    wsum = w.sum(-1)
    if kind == "cost":
        j = cost(pred, obs, w, mask, rel_error=rel_error)
    elif kind == "log_mse":
        ok = mask & torch.isfinite(pred)
        one = torch.ones((), dtype=obs.dtype, device=obs.device)
        m = torch.where(ok, pred, one).clamp_min(LOG_FLOOR)
        o = torch.where(ok, obs, one)
        j = (torch.where(ok, w, torch.zeros_like(w)) * (torch.log(m) - torch.log(o)) ** 2).sum(-1)
    else:
        raise ValueError(f"unknown end-to-end loss {kind!r}")
    return j / torch.where(wsum > 0, wsum, torch.ones_like(wsum))


def _observation_tensors(obs: ObservationBatch, kind: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    mask = np.asarray(obs.mask, bool) & np.isfinite(obs.depth) & np.isfinite(obs.soc) & (obs.soc != 0)
    w = np.ones_like(obs.soc) if kind == "none" else obs.weights(kind)  # type: ignore[arg-type]
    w = np.where(mask & np.isfinite(w), w, 0.0)
    kw = {"dtype": torch.float64, "device": device}
    return (torch.as_tensor(np.where(mask, obs.depth, 0.0), **kw), torch.as_tensor(np.where(mask, obs.soc, 1.0), **kw),
            torch.as_tensor(w, **kw), torch.as_tensor(mask, device=device))


def forcing_finite(forcing: Forcing) -> np.ndarray:
    """(C,) True where every forcing value of the cell is finite."""
    ok = torch.ones(forcing.n_cells, dtype=torch.bool, device=forcing.device)
    for name in ("tsoi", "w_scalar", "o_scalar", "fpi", "altmax", "altmax_lastyear", "inputs"):
        t = getattr(forcing, name)
        ok &= torch.isfinite(t).reshape(-1, t.shape[-1]).all(0)
    return ok.cpu().numpy()


def end_to_end_batch(net: ParameterNet, x: torch.Tensor, forcing: Forcing, depth: torch.Tensor, obs: torch.Tensor,
                     weights: torch.Tensor, mask: torch.Tensor, grid: Grid, *, loss: str = "cost",
                     rel_error: float = 0.6, closure: str = "conservative",
                     bias_weight: float = 0.0) -> tuple[torch.Tensor, int, int]:
    """One differentiable pass for a minibatch: NN -> theta -> steady state -> PCHIP -> loss.

    ``bias_weight`` λ > 0 adds ``λ (ln Σ m / Σ o)²`` over the solved sites' observed layers (the
    minibatch's relative total bias in log form), so the fit honours the observed total, not only
    the median ratio.

    Args:
        x: (B, F) encoded covariates; forcing: the B sites' forcing (float64);
        depth, obs, weights, mask: (B, K) observation depth (m), SOC (g C m-3), depth weights, valid.

    Returns:
        (mean site loss over solved sites, n solved sites with data, n failed sites).
    """
    theta = net(x)  # float64, inside [1e-4, 1] (beta <= 0.98): no clamp needed
    usable: list[torch.Tensor] = []
    if theta.requires_grad:
        # Failed sites are out of the loss, but a site with non-finite forcing can still return a
        # NaN adjoint (0 * NaN); zero its theta-gradient row so it never reaches the shared weights.
        theta.register_hook(lambda g: torch.where(usable[0][:, None], g, torch.zeros_like(g)))
    res = steady_state(params_from_theta(theta, clamp=False), forcing, grid, closure=closure)
    pred = model_at_obs(res.soc, torch.as_tensor(grid.z_node, dtype=torch.float64, device=x.device), depth, mask)
    per_site = site_loss(pred, obs, weights, mask, loss, rel_error)
    ok = (res.status == Status.OK) & torch.isfinite(per_site) & mask.any(-1)
    usable.append(ok)
    n_ok = int(ok.sum())
    total = torch.where(ok, per_site, torch.zeros_like(per_site)).sum()
    mean_loss = total / max(n_ok, 1)
    if bias_weight > 0 and n_ok > 0:
        lay = ok[:, None] & mask & torch.isfinite(pred)
        zero = torch.zeros_like(obs)
        w = torch.where(lay, weights, zero)
        ratio = (w * torch.where(lay, pred, zero)).sum() / (w * torch.where(lay, obs, zero)).sum()
        mean_loss = mean_loss + bias_weight * torch.log(ratio.clamp_min(1e-12)) ** 2
    return mean_loss, n_ok, int((res.status != Status.OK).sum())


def train_end_to_end(features: Mapping[str, Any], forcing_sites: Forcing, observations: ObservationBatch, *,
                     config: TrainConfig | None = None, grid: Grid | None = None, closure: str = "conservative",
                     lat: np.ndarray | None = None, lon: np.ndarray | None = None, split: Split | None = None,
                     encoder: FeatureEncoder | None = None, covariates: Sequence[str] | None = None,
                     categorical: Sequence[str] = (), scaling: str = "minmax",
                     checksums: Mapping[str, str] | None = None) -> TrainedModel:
    """Train the network through the physics against observed SOC profiles (differentiable PRODA).

    Args:
        features: covariate table, one row per site (N rows).
        forcing_sites: forcing for the same N sites, in the same order (cells last).
        observations: the N sites' profiles (``ObservationBatch``, same order); sites without any
            valid layer are dropped (counted).
        config: :class:`TrainConfig` (``method`` forced to ``"end-to-end"``; ``loss`` ``"cost"`` or
            ``"log_mse"``; ``weights`` ``"rank"``/``"depth_exp"``/``"none"``; ``rel_error``).
        grid, closure: physics grid (default ``clm5_20``) and transport closure.
        lat, lon, split, encoder, covariates, categorical, scaling: see :func:`prepare`.
        checksums: input-data checksums to store in the metadata.

    Returns:
        :class:`TrainedModel`; ``metadata["evaluation"]`` holds pooled SOC metrics
        (:func:`~proda_engine.inference.likelihood.pooled_metrics`) on the validation and test sites.
    """
    config = _for_method(config, "end-to-end")
    grid = grid or get_grid()
    n = table_length(features)
    if forcing_sites.n_cells != n or observations.n_profiles != n:
        raise ValueError(f"features ({n} rows), forcing ({forcing_sites.n_cells} cells) and observations "
                         f"({observations.n_profiles} profiles) must describe the same sites in the same order")
    if forcing_sites.n_layers != grid.n_layers:
        raise ValueError(f"forcing has {forcing_sites.n_layers} layers, grid {grid.name} has {grid.n_layers}")
    no_obs = ~np.asarray(observations.mask, bool).any(1)
    bad_forcing = ~forcing_finite(forcing_sites)  # spec §(k): profiles without input forcing are skipped
    prep = prepare(features, config, valid=~(no_obs | bad_forcing),
                   reasons={"no_observation": no_obs, "nan_forcing": bad_forcing}, lat=lat, lon=lon,
                   split=split, encoder=encoder, covariates=covariates, categorical=categorical, scaling=scaling)
    device = prep.x.device
    forcing = forcing_sites.to(device=device, dtype=torch.float64)  # float64: ill-conditioned system
    depth, obs, w, mask = _observation_tensors(observations, config.weights, device)
    net = build_network(prep.encoder.n_features, config.hidden, dropout=config.dropout, device=device,
                        dtype=config.dtype, seed=config.seed)

    def batch_loss(rows: np.ndarray) -> tuple[torch.Tensor, int, int]:
        r = torch.as_tensor(rows, device=device)
        return end_to_end_batch(net, prep.x[r], forcing.subset(rows), depth[r], obs[r], w[r], mask[r], grid,
                                loss=config.loss or "cost", rel_error=config.rel_error, closure=closure,
                                bias_weight=config.bias_weight)

    t0 = time.perf_counter()
    history, summary = fit_loop(net, batch_loss, prep.split.train, prep.split.val, config, desc="end-to-end")
    model = TrainedModel(net=net, encoder=prep.encoder, config=config, history=history, split=prep.split)
    meta = _base_metadata(prep, summary, checksums, time.perf_counter() - t0)
    meta.update({"grid": grid.name, "closure": closure})
    evaluation = {}
    pred_all, status = _predict_soc_rows(model, prep.x, forcing, observations, grid, closure)
    for name in ("train", "val", "test"):
        rows = np.unique(getattr(prep.split, name))
        if rows.size == 0:
            continue
        sel = observations.mask[rows]
        m = pooled_metrics(pred_all[rows][sel], observations.soc[rows][sel])
        m["failed_fraction"] = float(np.mean(status[rows] != Status.OK))
        evaluation[name] = m
    meta["evaluation"] = evaluation
    model.metadata = meta
    return model


def _predict_soc_rows(model: TrainedModel, x: torch.Tensor, forcing: Forcing, obs: ObservationBatch, grid: Grid,
                      closure: str) -> tuple[np.ndarray, np.ndarray]:
    """Modelled SOC at the observed depths (N, K) and status (N,) for every row with finite inputs.

    Rows with NaN inputs or a failed solve get NaN; their status is ``INVALID_INPUT`` / the solver's.
    """
    out = np.full(obs.depth.shape, np.nan)
    status = np.full(x.shape[0], int(Status.INVALID_INPUT), dtype=np.int8)
    ok_rows = np.flatnonzero(torch.isfinite(x).all(1).cpu().numpy())
    z = torch.as_tensor(grid.z_node, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for s in range(0, ok_rows.size, 16384):
            rows = ok_rows[s:s + 16384]
            r = torch.as_tensor(rows, device=x.device)
            theta = model.net(x[r])
            res = steady_state(params_from_theta(theta, clamp=False), forcing.subset(rows), grid, closure=closure)
            pred = model_at_obs(res.soc, z, torch.as_tensor(obs.depth[rows], device=x.device),
                                torch.as_tensor(obs.mask[rows], device=x.device)).cpu().numpy()
            st = res.status.cpu().numpy()
            pred[st != Status.OK] = np.nan
            out[rows] = pred
            status[rows] = st
    return out, status


def _for_method(config: TrainConfig | None, method: str) -> TrainConfig:
    if config is None:
        return TrainConfig(method=method)  # type: ignore[arg-type]
    if config.method != method:
        # The loss names differ by method: keep the loss only if it is valid for this method.
        loss = config.loss if config.loss in LOSSES[method] else None
        return config.replace(method=method, loss=loss)
    return config
