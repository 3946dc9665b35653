"""Model forcing as tensors, cells last (layout: ``(month, layer, cell)``).

The physics never opens a file: readers in :mod:`proda_engine.data` return the *normalised forcing
Dataset* (see ``docs/data-contract``), and :meth:`Forcing.from_dataset` stacks it into tensors.

Cells are the last (contiguous) axis everywhere in the physics because every step of the
structured solver is a vector operation over cells for one layer (see the solver-performance guide).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from proda_engine.grid import Grid

INPUT_NAMES = ("input_cwd", "input_litter1", "input_litter2", "input_litter3")


@dataclass
class Forcing:
    """Monthly climatological forcing for C cells (spec §(d), §(g), §(h)).

    Attributes (torch tensors, one dtype/device):
        tsoi: soil temperature, (12, L, C), K.
        w_scalar: CLM5 water scalar W_SCALAR, (12, L, C), unitless in [0, 1].
        o_scalar: CLM5 oxygen scalar O_SCALAR, (12, L, C), unitless.
        fpi: fraction of potential N immobilisation FPI_vr, (12, L, C), unitless (litter only).
        altmax, altmax_lastyear: active-layer depth this year / last year, (12, C), m.
        nbedrock: index of the deepest soil layer above bedrock, (C,), int64 in 1..L.
        inputs: annual carbon input to CWD, L1, L2, L3, (4, C), g C m-2 yr-1.
        sand: layer sand content, (L, C), % (only for the default-CLM5 preset), optional.
        npp: net primary production, (C,), g C m-2 yr-1, optional.
    """

    tsoi: torch.Tensor
    w_scalar: torch.Tensor
    o_scalar: torch.Tensor
    fpi: torch.Tensor
    altmax: torch.Tensor
    altmax_lastyear: torch.Tensor
    nbedrock: torch.Tensor
    inputs: torch.Tensor
    sand: torch.Tensor | None = None
    npp: torch.Tensor | None = None
    _derived: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_cells(self) -> int:
        return int(self.tsoi.shape[-1])

    @property
    def n_layers(self) -> int:
        return int(self.tsoi.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.tsoi.dtype

    @property
    def device(self) -> torch.device:
        return self.tsoi.device

    @property
    def alt(self) -> torch.Tensor:
        """Active-layer depth used by transport: max(ALTMAX, ALTMAX_LASTYEAR), (12, C), m."""
        return torch.maximum(self.altmax, self.altmax_lastyear)

    @property
    def total_input(self) -> torch.Tensor:
        """C_in = sum of the four annual inputs, (C,), g C m-2 yr-1."""
        return self.inputs.sum(0)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Forcing:
        """Copy to another device and/or floating dtype (nbedrock stays int64)."""

        def cv(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            if t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return Forcing(*(cv(getattr(self, n)) for n in _FIELDS))

    def subset(self, idx: torch.Tensor | np.ndarray | slice) -> Forcing:
        """Cells ``idx`` of this forcing (a new object; derived caches are not shared)."""
        if not isinstance(idx, slice):
            idx = torch.as_tensor(np.asarray(idx), device=self.device)
        return Forcing(*(None if getattr(self, n) is None else getattr(self, n)[..., idx] for n in _FIELDS))

    def repeat(self, n: int) -> Forcing:
        """Tile every cell ``n`` times (cell-major: cell c appears at c*n .. c*n+n-1), e.g. for chains."""
        return Forcing(
            *(None if getattr(self, n_) is None else torch.repeat_interleave(getattr(self, n_), n, dim=-1)
              for n_ in _FIELDS)
        )

    def with_inputs(self, inputs: torch.Tensor) -> Forcing:
        """Same forcing with other annual inputs (4, C); derived caches that do not involve inputs are kept."""
        return replace(self, inputs=inputs, _derived=self._derived)

    @classmethod
    def uniform(
        cls,
        n_cells: int = 1,
        *,
        grid: Grid,
        tsoi: float | np.ndarray = 288.15,
        w_scalar: float = 0.5,
        o_scalar: float = 1.0,
        fpi: float = 0.8,
        altmax: float = 5.0,
        altmax_lastyear: float | None = None,
        nbedrock: int | None = None,
        inputs: tuple[float, float, float, float] = (100.0, 200.0, 150.0, 50.0),
        sand: float | None = None,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> Forcing:
        """Spatially uniform forcing, e.g. the spec's cross-check cases (§(q)).

        ``tsoi`` may be a scalar (K) or a length-12 array of monthly values applied to every layer.
        """
        L = grid.n_layers
        kw = {"dtype": dtype, "device": device}
        t = torch.as_tensor(np.asarray(tsoi, dtype=float), **kw)
        t = t.reshape(12, 1, 1) if t.numel() == 12 else t.reshape(1, 1, 1)
        full3 = torch.ones(12, L, n_cells, **kw)
        alt_ly = altmax if altmax_lastyear is None else altmax_lastyear
        return cls(
            tsoi=full3 * t,
            w_scalar=full3 * w_scalar,
            o_scalar=full3 * o_scalar,
            fpi=full3 * fpi,
            altmax=torch.full((12, n_cells), altmax, **kw),
            altmax_lastyear=torch.full((12, n_cells), alt_ly, **kw),
            nbedrock=torch.full((n_cells,), L if nbedrock is None else nbedrock, dtype=torch.int64,
                                device=device),
            inputs=torch.as_tensor(np.asarray(inputs, dtype=float), **kw).reshape(4, 1).expand(4, n_cells)
            .contiguous(),
            sand=None if sand is None else torch.full((L, n_cells), sand, **kw),
        )

    @classmethod
    def from_dataset(
        cls,
        ds,
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        only_valid: bool = True,
    ) -> tuple[Forcing, np.ndarray]:
        """Stack a normalised forcing Dataset into tensors.

        ``ds`` has dims ``month`` (12), ``layer`` (L) and either ``site`` or (``lat``, ``lon``).
        Returns the forcing and the flat indices of the cells used (into the stacked spatial dims,
        row-major), so results can be put back on the grid. With ``only_valid`` the ``valid``
        variable (if present) selects cells.
        """
        spatial = [d for d in ds["nbedrock"].dims]
        shape = tuple(ds.sizes[d] for d in spatial)
        n = int(np.prod(shape)) if shape else 1
        if only_valid and "valid" in ds:
            cells = np.flatnonzero(np.asarray(ds["valid"].transpose(*spatial).values).reshape(-1))
        else:
            cells = np.arange(n)

        def grab(name: str, lead: tuple[str, ...]) -> torch.Tensor:
            da = ds[name].transpose(*lead, *spatial)
            arr = np.asarray(da.values, dtype=float).reshape(*[ds.sizes[d] for d in lead], n)[..., cells]
            return torch.as_tensor(np.ascontiguousarray(arr), dtype=dtype, device=device)

        inputs = torch.stack([grab(nm, ()) for nm in INPUT_NAMES])
        nb = np.asarray(ds["nbedrock"].transpose(*spatial).values).reshape(n)[cells]
        f = cls(
            tsoi=grab("TSOI", ("month", "layer")),
            w_scalar=grab("W_SCALAR", ("month", "layer")),
            o_scalar=grab("O_SCALAR", ("month", "layer")),
            fpi=grab("FPI_vr", ("month", "layer")),
            altmax=grab("ALTMAX", ("month",)),
            altmax_lastyear=grab("ALTMAX_LASTYEAR", ("month",)),
            nbedrock=torch.as_tensor(nb.astype(np.int64), device=device),
            inputs=inputs,
            sand=grab("CELLSAND", ("layer",)) if "CELLSAND" in ds else None,
            npp=grab("NPP", ()) if "NPP" in ds else None,
        )
        f.validate()
        return f, cells

    def validate(self) -> None:
        """Check shapes and physical ranges; raise ValueError naming the field, expected and found."""
        L, C = self.n_layers, self.n_cells
        expect = {
            "tsoi": (12, L, C), "w_scalar": (12, L, C), "o_scalar": (12, L, C), "fpi": (12, L, C),
            "altmax": (12, C), "altmax_lastyear": (12, C), "nbedrock": (C,), "inputs": (4, C),
        }
        for name, shp in expect.items():
            got = tuple(getattr(self, name).shape)
            if got != shp:
                raise ValueError(f"Forcing.{name}: expected shape {shp}, found {got}")
        for name in ("tsoi", "w_scalar", "o_scalar", "fpi", "altmax", "altmax_lastyear", "inputs"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise ValueError(f"Forcing.{name}: expected finite values, found NaN/inf "
                                 "(drop invalid cells before building the forcing)")
        tmin, tmax = float(self.tsoi.min()), float(self.tsoi.max())
        if tmin < 150.0 or tmax > 360.0:
            raise ValueError(f"Forcing.tsoi: expected kelvin in 150..360, found {tmin:.1f}..{tmax:.1f}")
        nb = self.nbedrock
        if bool(((nb < 1) | (nb > L)).any()):
            raise ValueError(f"Forcing.nbedrock: expected 1..{L}, found {int(nb.min())}..{int(nb.max())}")
        if bool((self.inputs < 0).any()):
            raise ValueError("Forcing.inputs: expected non-negative carbon inputs, found negative values")


_FIELDS = ("tsoi", "w_scalar", "o_scalar", "fpi", "altmax", "altmax_lastyear", "nbedrock", "inputs",
           "sand", "npp")
