"""The parameter up-scaling network: covariates -> 21 unit-interval parameters (spec §(m)).

The original is a Keras ReLU MLP 256-512-512-256 with a **linear** 21-wide output, so its
predictions can leave (0, 1) and must be clamped before the physics (spec §(c), "Singularities").
Here the output layer is **bounded**::

    theta_i = lo_i + (hi_i - lo_i) * sigmoid(z_i),    lo_i = 1e-4,  hi_i = 1  (beta: hi = 0.98)

so every prediction lies inside the spec's clamp range by construction, the physics never sees a
singular parameter (tau_L1 = 0, tau_S1 = 0, efolding = 0), and no clamp, logged or silent, is ever
needed downstream.

Example
-------
>>> import torch
>>> net = ParameterNet(5, hidden=(16, 16))
>>> theta = net(torch.randn(3, 5) * 1e6)
>>> theta.shape, bool((theta >= 1e-4).all()), bool((theta[:, 20] <= 0.98).all())
(torch.Size([3, 21]), True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from proda_engine.parameters import BETA_THETA_MAX, N_PARAMS, PARAMETER_INDEX, THETA_MAX, THETA_MIN

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``"cpu"``, ``"cuda"`` (error if unavailable) or ``"auto"`` (CUDA when available)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but CUDA is not available; use 'cpu' or 'auto'")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', found {device!r}")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype = "float32") -> torch.dtype:
    """``"float32"`` / ``"float64"`` (or a torch dtype) -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be float32 or float64, found {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, found {dtype!r}")
    return DTYPES[dtype]


def output_bounds(n_out: int = N_PARAMS) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower / upper output bounds, (n_out,) float64: the spec's clamp range [1e-4, 1], beta <= 0.98."""
    lo = torch.full((n_out,), THETA_MIN, dtype=torch.float64)
    hi = torch.full((n_out,), THETA_MAX, dtype=torch.float64)
    if n_out == N_PARAMS:
        hi[PARAMETER_INDEX["beta"]] = BETA_THETA_MAX
    return lo, hi


class BoundedOutput(nn.Module):
    """``y = lo + (hi - lo) * sigmoid(z)`` elementwise, computed and returned in **float64**.

    float64 because that is what the physics takes, and because the bounds themselves are not
    float32 numbers (float32 0.98 is 0.98000002 > 0.98): a float32 output could sit one ulp outside
    the spec's range and trigger the physics' logged clamp. The final ``clamp`` only removes
    float64 rounding; it never moves a value by more than one ulp, so it is not a hidden clamp.
    The bounds are kept as Python floats, not buffers, so ``net.to(float32)`` cannot round them.
    """

    def __init__(self, lower: torch.Tensor, upper: torch.Tensor) -> None:
        super().__init__()
        if lower.shape != upper.shape or bool((upper <= lower).any()):
            raise ValueError("bounds must have equal shapes and upper > lower")
        self.lower_values: list[float] = [float(v) for v in lower]
        self.upper_values: list[float] = [float(v) for v in upper]

    def bounds(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        kw = {"dtype": torch.float64, "device": device}
        return torch.tensor(self.lower_values, **kw), torch.tensor(self.upper_values, **kw)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lo, hi = self.bounds(z.device)
        y = lo + (hi - lo) * torch.sigmoid(z.to(torch.float64))
        return torch.minimum(torch.maximum(y, lo), hi)


class ParameterNet(nn.Module):
    """ReLU MLP ``n_in -> hidden... -> n_out`` with a bounded (sigmoid) output layer.

    Args:
        n_in: number of encoded covariates (:attr:`FeatureEncoder.n_features`).
        hidden: hidden layer widths (original: 256, 512, 512, 256).
        n_out: outputs (21 = the parameter table; other widths get the generic [1e-4, 1] range).
        dropout: dropout after each hidden ReLU (original: 0).
        init_output_scale: the last layer's weights are multiplied by this at initialisation, so
            an untrained net predicts theta close to 0.5 everywhere (the MCMC's starting point,
            a well-conditioned solve) instead of random corners of the box. 1 = PyTorch default.

    Input (N, n_in) in the network dtype; output (N, n_out) unit-interval theta, always float64
    (the physics' dtype), inside [1e-4, 1] with beta <= 0.98.
    """

    def __init__(self, n_in: int, hidden: Sequence[int] = (256, 512, 512, 256), n_out: int = N_PARAMS,
                 dropout: float = 0.0, *, init_output_scale: float = 0.1) -> None:
        super().__init__()
        if n_in < 1 or n_out < 1:
            raise ValueError(f"n_in and n_out must be positive, found {n_in}, {n_out}")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.init_output_scale = float(init_output_scale)
        layers: list[nn.Module] = []
        width = self.n_in
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if self.dropout > 0:
                layers.append(nn.Dropout(self.dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, self.n_out)
        with torch.no_grad():
            self.head.weight.mul_(self.init_output_scale)
            self.head.bias.zero_()
        self.bound = BoundedOutput(*output_bounds(self.n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bound(self.head(self.body(x)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs (N, n_out), e.g. to inspect saturation."""
        return self.head(self.body(x))

    def spec(self) -> dict[str, Any]:
        """Constructor arguments (saved with the weights so :meth:`from_spec` rebuilds the net)."""
        return {"n_in": self.n_in, "hidden": list(self.hidden), "n_out": self.n_out, "dropout": self.dropout,
                "init_output_scale": self.init_output_scale}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ParameterNet:
        return cls(spec["n_in"], tuple(spec["hidden"]), spec["n_out"], spec["dropout"],
                   init_output_scale=spec.get("init_output_scale", 0.1))


def build_network(n_in: int, hidden: Sequence[int] = (256, 512, 512, 256), *, dropout: float = 0.0,
                  device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
                  seed: int | None = None) -> ParameterNet:
    """A :class:`ParameterNet` on ``device`` in ``dtype``; ``seed`` makes the initial weights repeatable."""
    if seed is not None:
        torch.manual_seed(seed)
    net = ParameterNet(n_in, hidden, dropout=dropout)
    return net.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
