"""Validated training configuration for the parameter up-scaling network (spec §(m)).

One :class:`TrainConfig` per run: built from a dict or YAML, unknown keys rejected, every value
checked, and written back (``to_dict``) into the model file so a run can be repeated.

Example
-------
>>> cfg = TrainConfig.from_dict({"method": "two-step", "hidden": [64, 64], "max_epochs": 5})
>>> cfg.loss, cfg.hidden
('mse', (64, 64))
>>> TrainConfig.from_dict({"lerning_rate": 0.1})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown TrainConfig key(s) ['lerning_rate']; valid keys: ...
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

Method = Literal["two-step", "end-to-end"]

#: Loss names valid for each training method (the first is the default).
LOSSES: dict[str, tuple[str, ...]] = {
    "two-step": ("mse", "proda"),
    "end-to-end": ("cost", "log_mse"),
}
OPTIMIZERS = ("adam", "adamw", "adadelta")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "float64")
WEIGHTS = ("rank", "depth_exp", "none")


@dataclass
class TrainConfig:
    """What to train and how (spec §(m); defaults noted where they differ from the original).

    Attributes:
        method: ``"two-step"`` (regress MCMC posterior means) or ``"end-to-end"`` (NN -> physics ->
            observations).
        hidden: hidden layer widths (original: 256, 512, 512, 256).
        dropout: dropout probability after each hidden layer (original: 0).
        loss: two-step ``"mse"`` | ``"proda"``; end-to-end ``"cost"`` | ``"log_mse"``. ``None`` picks
            the method's default (``"mse"`` / ``"cost"``).
        weights: end-to-end depth weights: ``"rank"`` (code), ``"depth_exp"`` (chapter) or ``"none"``.
        rel_error: relative observation error of the end-to-end ``"cost"`` loss (0.6, spec §(k)).
        bias_weight: end to end, weight ``λ`` of a minibatch bias term added to the loss,
            ``λ (ln Σ w m / Σ w o)²`` over the minibatch's observed layers: a log-space loss fits the
            median of log-normal scatter and leaves totals biased low (on measured profiles ~−18 %
            PBIAS); this term pulls the summed carbon toward the observed sum (0 = off).
        optimizer: ``"adam"`` (default: robust without tuning), ``"adamw"`` or ``"adadelta"``
            (original, Keras defaults; lr 1e-3 in TF2).
        lr: learning rate. weight_decay: L2 / decoupled weight decay (original: 0).
        batch_size: sites per minibatch (original: 32; end-to-end wants ~2,048 for the batched solve).
        max_epochs, patience: early stopping on the validation loss (original: 6,000 / 1,200).
        min_delta: an epoch improves only if val_loss < best - min_delta.
        grad_clip: max global gradient norm (``None`` = no clipping); guards end-to-end steps
            where a stiff site gives one large adjoint gradient.
        block_size: side of the lat/lon blocks of the spatial split, degrees.
        buffer: train/val sites closer than this (degrees, Chebyshev lat/lon) to a test site are
            removed (0 = block-disjoint only).
        test_fraction, val_fraction: share of sites in the test blocks (spec: 20 %), and share of the
            remaining sites used for validation (10 %).
        seed: seeds the weights, the minibatch order and dropout. split_seed: seeds the split.
        n_members: ensemble size (:mod:`proda_engine.learning.ensembles`).
        bootstrap: ensemble members train on bootstrap resamples (True) or differ by seed only.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``. dtype: network dtype (the physics always runs
            in float64: the steady-state system is ill-conditioned).
        max_failed_fraction: end-to-end warns when more than this share of a minibatch's sites fail
            to solve (status != 0).
        progress: show a tqdm bar over epochs.
    """

    method: Method = "two-step"
    hidden: tuple[int, ...] = (256, 512, 512, 256)
    dropout: float = 0.0
    loss: str | None = None
    weights: str = "rank"
    rel_error: float = 0.6
    bias_weight: float = 0.0
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 500
    patience: int = 30
    min_delta: float = 0.0
    grad_clip: float | None = 10.0
    block_size: float = 5.0
    buffer: float = 0.0
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    seed: int = 0
    split_seed: int = 0
    n_members: int = 1
    bootstrap: bool = True
    device: str = "cpu"
    dtype: str = "float32"
    max_failed_fraction: float = 0.2
    progress: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Check every field; raise ``ValueError`` naming the bad key and the valid choices."""

        def choice(key: str, options: tuple[str, ...]) -> None:
            v = getattr(self, key)
            if v not in options:
                raise ValueError(f"TrainConfig.{key} must be one of {list(options)}, found {v!r}")

        def positive(key: str, *, allow_zero: bool = False, integer: bool = False) -> None:
            v = getattr(self, key)
            if integer and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"TrainConfig.{key} must be an integer, found {v!r}")
            if not isinstance(v, int | float) or isinstance(v, bool) or not (v > 0 or (allow_zero and v == 0)):
                raise ValueError(f"TrainConfig.{key} must be {'>= 0' if allow_zero else '> 0'}, found {v!r}")

        choice("method", tuple(LOSSES))
        if self.loss is None:
            self.loss = LOSSES[self.method][0]
        if self.loss not in LOSSES[self.method]:
            raise ValueError(f"TrainConfig.loss {self.loss!r} is not valid for method {self.method!r}; "
                             f"choose one of {list(LOSSES[self.method])}")
        choice("weights", WEIGHTS)
        choice("optimizer", OPTIMIZERS)
        choice("device", DEVICES)
        choice("dtype", DTYPES)
        self.hidden = tuple(self.hidden)
        if not self.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"TrainConfig.hidden must be a non-empty list of positive ints, found {self.hidden!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TrainConfig.dropout must be in [0, 1), found {self.dropout!r}")
        for key in ("lr", "rel_error", "block_size"):
            positive(key)
        for key in ("weight_decay", "min_delta", "buffer", "bias_weight"):
            positive(key, allow_zero=True)
        for key in ("batch_size", "max_epochs", "patience", "n_members"):
            positive(key, integer=True)
        for key in ("seed", "split_seed"):
            positive(key, allow_zero=True, integer=True)
        if self.grad_clip is not None:
            positive("grad_clip")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"TrainConfig.test_fraction must be in [0, 1), found {self.test_fraction!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"TrainConfig.val_fraction must be in (0, 1), found {self.val_fraction!r}")
        if not 0.0 <= self.max_failed_fraction <= 1.0:
            raise ValueError(f"TrainConfig.max_failed_fraction must be in [0, 1], found {self.max_failed_fraction!r}")
        if not isinstance(self.extra, dict):
            raise ValueError("TrainConfig.extra must be a mapping")

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
        """Build from a mapping (e.g. parsed YAML); unknown keys raise ``ValueError``."""
        merged = {**(data or {}), **overrides}
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(merged) - set(names))
        if unknown:
            raise ValueError(f"unknown TrainConfig key(s) {unknown}; valid keys: {names}")
        return cls(**merged)

    @classmethod
    def from_yaml(cls, source: str | PathLike[str]) -> TrainConfig:
        """Build from a YAML file path or a YAML string. A top-level ``train:`` section is accepted."""
        import yaml

        text = Path(source).read_text() if _is_path(source) else str(source)
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError("a TrainConfig YAML must be a mapping")
        if set(data) == {"train"}:
            data = data["train"]
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (lists, not tuples), round-trips through :meth:`from_dict`."""
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes``."""
        return TrainConfig.from_dict(self.to_dict(), **changes)


def _is_path(source: str | PathLike[str]) -> bool:
    if not isinstance(source, str):
        return True
    return "\n" not in source and ":" not in source and Path(source).suffix in (".yml", ".yaml")
