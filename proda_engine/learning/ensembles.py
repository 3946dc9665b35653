"""Ensembles of parameter networks (spec §(m) "Ensembles").

* **bootstrap** (``config.bootstrap=True``): member ``m`` trains on a resample *with replacement*
  of the training sites (same size), drawn with a seed derived from ``(config.seed, m)``; the
  validation and test sites stay fixed, so every member early-stops on the same held-out blocks
  and the test score is comparable. (The original resampled all valid sites, 200 members, with no
  test hold-out; pass ``test_fraction=0`` to do the same.)
* **seeds only** (``bootstrap=False``, the original "best guess" ensemble of 10): members see the
  same sites and differ only in initial weights and minibatch order (``seed + m``).

The encoder and the split are made once and shared, so all members take the same inputs.
``predict`` returns ``(member, N, 21)``; ``mean_sd`` the ensemble mean and standard deviation
(ddof = 1, as MATLAB's ``std``).

:func:`permutation_importance` is the spec's covariate-category test (randomise one category,
ratio of Pearson r against the benchmark, per parameter group).

Example
-------
>>> import numpy as np
>>> from proda_engine.learning import TrainConfig
>>> rng = np.random.default_rng(0)
>>> x = {"a": rng.uniform(size=200), "lat": rng.uniform(-60, 60, 200), "lon": rng.uniform(-180, 180, 200)}
>>> y = np.clip(0.3 + 0.4 * np.outer(x["a"], np.ones(21)), 0.01, 0.99)
>>> ens = train_ensemble(x, targets_theta=y, config=TrainConfig(hidden=(8,), max_epochs=2, n_members=2,
...                                                              block_size=20.0))
>>> ens.predict(x).shape
(2, 200, 21)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from proda_engine.data.writers import version_attrs
from proda_engine.inference.likelihood import ObservationBatch
from proda_engine.learning.config import TrainConfig
from proda_engine.learning.features import FeatureEncoder, table_length
from proda_engine.learning.splits import Split
from proda_engine.learning.training import (
    TrainedModel,
    _atomic_torch_save,
    _targets_array,
    prepare,
    train_end_to_end,
    train_two_step,
)
from proda_engine.parameters import GROUPS
from proda_engine.physics import Forcing

log = logging.getLogger(__name__)

ENSEMBLE_FORMAT = "proda-parameter-ensemble"


def member_seed(seed: int, member: int) -> int:
    """Independent, reproducible bootstrap seed for ``member`` (numpy SeedSequence of (seed, member))."""
    return int(np.random.SeedSequence([int(seed), int(member)]).generate_state(1)[0])


@dataclass
class Ensemble:
    """Trained members sharing one encoder and split."""

    members: list[TrainedModel]

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one member")

    def __len__(self) -> int:
        return len(self.members)

    @property
    def encoder(self) -> FeatureEncoder:
        return self.members[0].encoder

    def predict(self, table: Mapping[str, Any]) -> np.ndarray:
        """theta per member, (member, N, 21) float64; NaN rows where a covariate is NaN."""
        enc = self.encoder.transform(table)  # encode once: all members share the encoder
        out = np.full((len(self.members), enc.n_rows, self.members[0].net.n_out), np.nan)
        for m, member in enumerate(self.members):
            out[m, enc.index] = member.predict_encoded(enc.x)
        return out

    def mean_sd(self, table: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and s.d. (ddof 1; 0 for a single member) of theta, each (N, 21)."""
        p = self.predict(table)
        sd = p.std(0, ddof=1) if len(self.members) > 1 else np.zeros_like(p[0])
        return p.mean(0), sd

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One file with every member (atomic write)."""
        return _atomic_torch_save({"format": ENSEMBLE_FORMAT, "format_version": 1, **version_attrs(),
                                   "members": [m.to_dict() for m in self.members]}, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Ensemble:
        d = torch.load(Path(path), map_location="cpu", weights_only=True)
        if d.get("format") != ENSEMBLE_FORMAT:
            raise ValueError(f"not a {ENSEMBLE_FORMAT} file (format={d.get('format')!r})")
        return cls([TrainedModel.from_dict(m, device=device) for m in d["members"]])


def train_ensemble(features: Mapping[str, Any], *, targets_theta: Any = None, forcing_sites: Forcing | None = None,
                   observations: ObservationBatch | None = None, config: TrainConfig | None = None,
                   lat: np.ndarray | None = None, lon: np.ndarray | None = None, split: Split | None = None,
                   encoder: FeatureEncoder | None = None, covariates: Sequence[str] | None = None,
                   categorical: Sequence[str] = (), scaling: str = "minmax", **kwargs: Any) -> Ensemble:
    """Train ``config.n_members`` networks (bootstrap or seed ensemble) with one shared split and encoder.

    Two-step when ``targets_theta`` is given, end-to-end when ``forcing_sites`` and
    ``observations`` are (``config.method`` must agree). Extra ``kwargs`` go to the trainer.
    """
    config = config or TrainConfig()
    two_step = targets_theta is not None
    if two_step == (forcing_sites is not None and observations is not None):
        raise ValueError("give either targets_theta (two-step) or forcing_sites + observations (end-to-end)")
    method = "two-step" if two_step else "end-to-end"
    if config.method != method:
        raise ValueError(f"config.method is {config.method!r} but the inputs are for {method!r}")
    n = table_length(features)
    if two_step:
        bad = ~np.isfinite(_targets_array(targets_theta, n)).all(1)
    else:
        assert observations is not None
        bad = ~np.asarray(observations.mask, bool).any(1)
    prep = prepare(features, config, valid=~bad, lat=lat, lon=lon, split=split, encoder=encoder,
                   covariates=covariates, categorical=categorical, scaling=scaling)
    members: list[TrainedModel] = []
    for m in range(config.n_members):
        cfg = config.replace(seed=config.seed + m)
        msplit = prep.split.bootstrap(member_seed(config.seed, m)) if config.bootstrap else prep.split
        log.info("ensemble member %d/%d (%s)", m + 1, config.n_members, "bootstrap" if config.bootstrap else "seed")
        if two_step:
            model = train_two_step(features, targets_theta, config=cfg, split=msplit, encoder=prep.encoder, **kwargs)
        else:
            assert forcing_sites is not None and observations is not None
            model = train_end_to_end(features, forcing_sites, observations, config=cfg, split=msplit,
                                     encoder=prep.encoder, **kwargs)
        model.metadata["member"] = m
        model.metadata["bootstrap_seed"] = msplit.info.get("bootstrap_seed")
        members.append(model)
    return Ensemble(members)


#: Parameter groups of the permutation test: the sensitivity groups with K labelled "Tau" (spec §(m)).
IMPORTANCE_GROUPS: dict[str, tuple[int, ...]] = {("Tau" if g == "K" else g): idx for g, idx in GROUPS.items()}


def _pooled_r(pred: np.ndarray, target: np.ndarray) -> float:
    a, b = pred.ravel(), target.ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def permutation_importance(model: TrainedModel | Ensemble, table: Mapping[str, Any], targets_theta: Any,
                           categories: Mapping[str, Sequence[str]], *, n_repeats: int = 1000,
                           mode: str = "randomize", seed: int = 0) -> Any:
    """Importance of covariate categories for each parameter group (spec §(m) "Permutation importance").

    Benchmark: ``r0_g`` = Pearson r between predicted and target theta pooled over the parameters
    of group ``g`` (A, Tau, Xi, V, I) and all sites. For each category and repeat, its inputs are
    destroyed and ``r_g / r0_g`` is recorded; the table reports its mean and s.d. over repeats.

    * ``mode="randomize"`` (original): every scaled continuous column of the category is replaced
      at all sites by **one** U(0, 1) draw (this is a randomisation, not a permutation); a
      categorical column gets one random known category at all sites (one-hot).
    * ``mode="permute"``: the category's columns are permuted jointly across sites.

    Args:
        model: a trained model or an ensemble (ensemble mean prediction).
        table: covariate table; targets_theta: (N, 21) unit-space targets (MCMC means).
        categories: category -> covariate names (e.g. ``{"climate": ["BIO1", ...], ...}``).

    Returns:
        pandas DataFrame with columns category, group, benchmark_r, ratio_mean, ratio_sd.
    """
    import pandas as pd

    if mode not in ("randomize", "permute"):
        raise ValueError(f"mode must be 'randomize' or 'permute', found {mode!r}")
    members = model.members if isinstance(model, Ensemble) else [model]
    encoder = members[0].encoder
    enc = encoder.transform(table)
    y = _targets_array(targets_theta, enc.n_rows)[enc.index]
    ok = np.isfinite(y).all(1)
    x0, y = enc.x[ok], y[ok]
    names = encoder.feature_names

    def predict(x: np.ndarray) -> np.ndarray:
        return np.mean([m.predict_encoded(x) for m in members], axis=0)

    def columns(cov: str) -> list[int]:
        if cov in encoder.categorical:
            return [i for i, n in enumerate(names) if n.startswith(f"{cov}=")]
        if cov not in names:
            raise KeyError(f"covariate {cov!r} is not an input of the model")
        return [names.index(cov)]

    base = predict(x0)
    r0 = {g: _pooled_r(base[:, list(idx)], y[:, list(idx)]) for g, idx in IMPORTANCE_GROUPS.items()}
    rng = np.random.default_rng(seed)
    rows = []
    for cat, covs in categories.items():
        cont = [c for c in covs if c not in encoder.categorical]
        cats = [c for c in covs if c in encoder.categorical]
        ratios = {g: [] for g in IMPORTANCE_GROUPS}
        for _ in range(n_repeats):
            x = x0.copy()
            if mode == "permute":
                cols = [j for c in covs for j in columns(c)]
                x[:, cols] = x0[rng.permutation(x0.shape[0])][:, cols]
            else:
                u = rng.uniform()
                for c in cont:
                    x[:, columns(c)] = u
                for c in cats:
                    cols = columns(c)
                    x[:, cols] = 0.0
                    x[:, cols[rng.integers(len(cols))]] = 1.0
            p = predict(x)
            for g, idx in IMPORTANCE_GROUPS.items():
                ratios[g].append(_pooled_r(p[:, list(idx)], y[:, list(idx)]) / r0[g])
        for g in IMPORTANCE_GROUPS:
            v = np.asarray(ratios[g])
            rows.append({"category": cat, "group": g, "benchmark_r": r0[g], "ratio_mean": float(np.nanmean(v)),
                         "ratio_sd": float(np.nanstd(v, ddof=1)) if v.size > 1 else 0.0})
    return pd.DataFrame(rows)
