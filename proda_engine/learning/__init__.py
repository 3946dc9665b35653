"""Parameter up-scaling: covariates -> 21 unit-interval parameters (spec §(m)).

* :mod:`~proda_engine.learning.features` — :class:`FeatureEncoder` (scaling, one-hot, NaN rows).
* :mod:`~proda_engine.learning.networks` — :class:`ParameterNet`, a ReLU MLP with a bounded output.
* :mod:`~proda_engine.learning.splits` — spatially blocked train / validation / test split.
* :mod:`~proda_engine.learning.training` — two-step (regress MCMC means) and end-to-end (through
  the differentiable steady state) training; :class:`TrainedModel` with save / load.
* :mod:`~proda_engine.learning.ensembles` — bootstrap and seed ensembles.
* :mod:`~proda_engine.learning.config` — :class:`TrainConfig`, validated, unknown keys rejected.
"""

from proda_engine.learning.config import TrainConfig
from proda_engine.learning.ensembles import Ensemble, permutation_importance, train_ensemble
from proda_engine.learning.features import EncodedTable, FeatureEncoder
from proda_engine.learning.networks import ParameterNet, build_network, resolve_device, resolve_dtype
from proda_engine.learning.splits import Split, block_ids, min_distance, spatial_block_split
from proda_engine.learning.training import (
    TrainedModel,
    end_to_end_batch,
    fit_loop,
    site_loss,
    train_end_to_end,
    train_two_step,
    two_step_loss,
)

__all__ = [
    "EncodedTable",
    "Ensemble",
    "FeatureEncoder",
    "ParameterNet",
    "Split",
    "TrainConfig",
    "TrainedModel",
    "block_ids",
    "build_network",
    "end_to_end_batch",
    "fit_loop",
    "min_distance",
    "permutation_importance",
    "resolve_device",
    "resolve_dtype",
    "site_loss",
    "spatial_block_split",
    "train_end_to_end",
    "train_ensemble",
    "train_two_step",
    "two_step_loss",
]
