"""Validated training configuration for the parameter up-scaling network (spec §(m)).

One :class:`TrainConfig` per run: built from a dict or YAML, unknown keys rejected, every value
checked by its type (a frozen pydantic model, :mod:`proda_engine.config`), and written back
(``to_dict``) into the model file and ``train_<source>/config.yaml`` so a run can be repeated.

Example
-------
>>> cfg = TrainConfig.from_dict({"method": "two-step", "hidden": [64, 64], "max_epochs": 5})
>>> cfg.loss, cfg.hidden
('mse', (64, 64))
>>> TrainConfig.from_dict({"lerning_rate": 0.1})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
proda_engine.config.ConfigError: unknown TrainConfig key(s) ['lerning_rate']; valid keys: ...
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, get_args

import yaml
from pydantic import Field, model_validator

from proda_engine.config import (
    ConfigError,
    Expect,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    RunConfig,
)

Method = Literal["two-step", "end-to-end"]
Loss = Literal["mse", "proda", "cost", "log_mse"]
Optimizer = Literal["adam", "adamw", "adadelta"]
Device = Literal["cpu", "cuda", "auto"]
DType = Literal["float32", "float64"]
Weights = Literal["rank", "depth_exp", "none"]

#: Loss names valid for each training method (the first is the default).
LOSSES: dict[str, tuple[str, ...]] = {
    "two-step": ("mse", "proda"),
    "end-to-end": ("cost", "log_mse"),
}
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
DEVICES: tuple[str, ...] = get_args(Device)
DTYPES: tuple[str, ...] = get_args(DType)
WEIGHTS: tuple[str, ...] = get_args(Weights)

_Width = Annotated[int, Field(ge=1)]
_Fraction01 = Annotated[float, Field(ge=0.0, lt=1.0), Expect("in [0, 1)")]


class TrainConfig(RunConfig):
    """What to train and how (spec §(m); defaults noted where they differ from the original).

    Every field's meaning is its ``description`` (also the help of ``proda train --<field>``).
    ``loss=None`` picks the method's default (``"mse"`` / ``"cost"``) when the config is built.
    """

    label: ClassVar[str] = "TrainConfig"
    value_template: ClassVar[str] = "TrainConfig.{key} must be {expected}, found {found!r}"
    unknown_template: ClassVar[str] = "unknown TrainConfig key(s) {unknown}; valid keys: {valid}"

    method: Method = Field("two-step", description='"two-step" (regress MCMC posterior means) or "end-to-end" '
                           "(NN -> physics -> observations)")
    hidden: Annotated[tuple[_Width, ...], Field(strict=False, min_length=1),
                      Expect("a non-empty list of positive ints")] = Field(
        (256, 512, 512, 256), description="hidden layer widths (original: 256, 512, 512, 256)")
    dropout: _Fraction01 = Field(0.0, description="dropout probability after each hidden layer (original: 0)")
    loss: Loss | None = Field(None, description='two-step "mse" | "proda"; end-to-end "cost" | "log_mse"; None '
                              'picks the method\'s default ("mse" / "cost")')
    weights: Weights = Field("rank", description='end-to-end depth weights: "rank" (code), "depth_exp" (chapter) '
                             'or "none"')
    rel_error: PositiveFloat = Field(0.6, description='relative observation error of the end-to-end "cost" loss '
                                     "(0.6, spec §(k))")
    bias_weight: NonNegativeFloat = Field(
        0.0, description="end to end, weight λ of a minibatch bias term added to the loss, λ (ln Σ w m / Σ w o)² "
        "over the minibatch's observed layers: a log-space loss fits the median of log-normal scatter and leaves "
        "totals biased low (on measured profiles ~-18 % PBIAS); this term pulls the summed carbon toward the "
        "observed sum (0 = off)")
    optimizer: Optimizer = Field("adam", description='"adam" (default: robust without tuning), "adamw" or '
                                 '"adadelta" (original, Keras defaults; lr 1e-3 in TF2)')
    lr: PositiveFloat = Field(1e-3, description="learning rate")
    weight_decay: NonNegativeFloat = Field(0.0, description="L2 / decoupled weight decay (original: 0)")
    batch_size: PositiveInt = Field(256, description="sites per minibatch (original: 32; end-to-end wants ~2,048 "
                                    "for the batched solve)")
    max_epochs: PositiveInt = Field(500, description="early stopping: at most this many epochs (original: 6,000)")
    patience: PositiveInt = Field(30, description="early stopping: epochs without a validation-loss improvement "
                                  "(original: 1,200)")
    min_delta: NonNegativeFloat = Field(0.0, description="an epoch improves only if val_loss < best - min_delta")
    grad_clip: PositiveFloat | None = Field(10.0, description="max global gradient norm (None = no clipping); "
                                            "guards end-to-end steps where a stiff site gives one large adjoint "
                                            "gradient")
    block_size: PositiveFloat = Field(5.0, description="side of the lat/lon blocks of the spatial split, degrees")
    buffer: NonNegativeFloat = Field(0.0, description="train/val sites closer than this (degrees, Chebyshev "
                                     "lat/lon) to a test site are removed (0 = block-disjoint only)")
    test_fraction: _Fraction01 = Field(0.2, description="share of sites in the test blocks (spec: 20 %)")
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0), Expect("in (0, 1)")] = Field(
        0.1, description="share of the remaining (non-test) sites used for validation (10 %)")
    seed: NonNegativeInt = Field(0, description="seeds the weights, the minibatch order and dropout")
    split_seed: NonNegativeInt = Field(0, description="seeds the spatial split")
    n_members: PositiveInt = Field(1, description="ensemble size (proda_engine.learning.ensembles)")
    bootstrap: bool = Field(True, description="ensemble members train on bootstrap resamples (True) or differ by "
                            "seed only")
    device: Device = Field("cpu", description='"cpu", "cuda" or "auto"')
    dtype: DType = Field("float32", description="network dtype (the physics always runs in float64: the "
                         "steady-state system is ill-conditioned)")
    max_failed_fraction: Annotated[float, Field(ge=0.0, le=1.0), Expect("in [0, 1]")] = Field(
        0.2, description="end-to-end warns when more than this share of a minibatch's sites fail to solve "
        "(status != 0)")
    progress: bool = Field(False, description="show a tqdm bar over epochs")
    extra: dict[str, Any] = Field(default_factory=dict, description="free-form notes kept with the run")

    @model_validator(mode="before")
    @classmethod
    def _default_loss(cls, data: Any) -> Any:
        """``loss=None`` -> the method's first loss (a wrong method is reported by its own check)."""
        if isinstance(data, Mapping) and data.get("loss") is None:
            method = data.get("method", "two-step")
            if method in LOSSES:
                data = {**data, "loss": LOSSES[method][0]}
        return data

    @model_validator(mode="after")
    def _loss_fits_method(self) -> Self:
        if self.loss not in LOSSES[self.method]:
            raise ValueError(f"TrainConfig.loss {self.loss!r} is not valid for method {self.method!r}; "
                             f"choose one of {list(LOSSES[self.method])}")
        return self

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, source: str | PathLike[str]) -> Self:
        """Build from a YAML file path or a YAML string. A top-level ``train:`` section is accepted."""
        if _is_path(source):
            return super().from_yaml(source)
        try:
            data = yaml.safe_load(str(source)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"TrainConfig: cannot be parsed as YAML ({exc})") from exc
        if not isinstance(data, Mapping):
            raise ConfigError("a TrainConfig YAML must be a mapping")
        return cls.from_dict(cls._unwrap(data))

    @classmethod
    def _unwrap(cls, raw: Mapping[str, Any]) -> Mapping[str, Any]:
        return raw["train"] if set(raw) == {"train"} else raw


def _is_path(source: str | PathLike[str]) -> bool:
    if not isinstance(source, str):
        return True
    return "\n" not in source and ":" not in source and Path(source).suffix in (".yml", ".yaml")
