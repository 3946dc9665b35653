"""Soil layer grids (spec §(a)). All depths in metres.

A :class:`Grid` holds N model layers plus one extra row (N+1): the first layer below the model
(CLM5 bedrock layer 21 for ``clm5_20``; node 11 of the CLM4.5 15-layer grid for ``clm45_10``).
That row is not a model layer; vertical transport reads its interface depth when it builds the
cryoturbation profile (spec §(g)).

>>> g = get_grid("clm5_20")
>>> g.n_layers, round(float(g.z_interface[-1]), 2)
(20, 8.6)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Default standard depth intervals (m) used for stocks and turnover (spec §(i)).
DEPTH_INTERVALS: dict[str, tuple[float, float | None]] = {
    "0-30cm": (0.0, 0.30),
    "0-100cm": (0.0, 1.00),
    "0-200cm": (0.0, 2.00),
    "whole": (0.0, None),
}


@dataclass(frozen=True)
class Grid:
    """A vertical soil grid.

    Attributes:
        name: preset name.
        dz: layer thickness Delta z_j, shape (N,), m.
        z_node: node depth z_j, shape (N,), m.
        z_interface: bottom interface depth z^i_j, shape (N,), m (top of layer 1 is 0).
        z_node_below, z_interface_below, dz_below: the (N+1)-th row (first layer below the model).
    """

    name: str
    dz: np.ndarray
    z_node: np.ndarray
    z_interface: np.ndarray
    dz_below: float
    z_node_below: float
    z_interface_below: float
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_layers(self) -> int:
        return int(self.dz.shape[0])

    @property
    def depth(self) -> float:
        """Total model depth (bottom interface of layer N), m."""
        return float(self.z_interface[-1])

    @property
    def z_top(self) -> np.ndarray:
        """Top interface of every layer, shape (N,), m."""
        return np.concatenate([[0.0], self.z_interface[:-1]])

    @property
    def z_node_ext(self) -> np.ndarray:
        """Node depths with the row below appended, shape (N+1,)."""
        return np.append(self.z_node, self.z_node_below)

    @property
    def z_interface_ext(self) -> np.ndarray:
        """Interface depths with the row below appended, shape (N+1,)."""
        return np.append(self.z_interface, self.z_interface_below)

    @property
    def dn(self) -> np.ndarray:
        """Node-to-node distance Delta n_j = z_j - z_{j-1} (z_0 = 0), shape (N+1,) incl. the row below."""
        z = self.z_node_ext
        return np.diff(np.concatenate([[0.0], z]))

    def interval_weights(self, top: float, bottom: float | None) -> np.ndarray:
        """Fraction of each layer's thickness inside [top, bottom] m, shape (N,).

        This is spec §(i)'s partial-layer rule: layers fully inside count 1, the layer straddling a
        boundary counts the linear fraction inside (e.g. 0-30 cm on clm5_20 gives layer 5 x 0.8333).
        ``bottom=None`` means the whole profile.
        """
        b = self.depth if bottom is None else min(bottom, self.depth)
        key = (round(top, 9), round(b, 9))
        if key not in self._cache:
            lo = np.clip(self.z_top, top, b)
            hi = np.clip(self.z_interface, top, b)
            frac = (hi - lo) / self.dz
            # Layers fully inside count exactly 1 (no round-off from differencing depths).
            inside = (self.z_top >= top - 1e-12) & (self.z_interface <= b + 1e-12)
            self._cache[key] = np.where(inside, 1.0, frac)
        return self._cache[key]


def _clm5_20() -> Grid:
    dz = np.array([0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.20, 0.24, 0.28, 0.32,
                   0.36, 0.40, 0.44, 0.54, 0.64, 0.74, 0.84, 0.94, 1.04, 1.14])
    zi = np.array([0.02, 0.06, 0.12, 0.20, 0.32, 0.48, 0.68, 0.92, 1.20, 1.52,
                   1.88, 2.28, 2.72, 3.26, 3.90, 4.64, 5.48, 6.42, 7.46, 8.60])
    zn = np.array([0.01, 0.04, 0.09, 0.16, 0.26, 0.40, 0.58, 0.80, 1.06, 1.36,
                   1.70, 2.08, 2.50, 2.99, 3.58, 4.27, 5.06, 5.95, 6.94, 8.03])
    return Grid("clm5_20", dz, zn, zi, dz_below=2.39, z_node_below=9.795, z_interface_below=10.99)


def _clm45_10() -> Grid:
    # CLM4.5 exponential grid truncated at 10 layers; formulas need node 11 of the 15-layer grid.
    j = np.arange(1, 13)
    z = 0.025 * (np.exp(0.5 * (j - 0.5)) - 1.0)  # nodes 1..12
    zi = 0.5 * (z[:-1] + z[1:])  # interfaces 1..11
    dz = np.empty(11)
    dz[0] = 0.5 * (z[0] + z[1])
    dz[1:] = 0.5 * (z[2:12] - z[0:10])
    return Grid("clm45_10", dz[:10], z[:10], zi[:10], dz_below=float(dz[10]),
                z_node_below=float(z[10]), z_interface_below=float(zi[10]))


GRIDS = {"clm5_20": _clm5_20, "clm45_10": _clm45_10}


def get_grid(name: str = "clm5_20") -> Grid:
    """Return a grid preset by name (``clm5_20`` default, ``clm45_10`` chapter version)."""
    try:
        return GRIDS[name]()
    except KeyError:
        raise ValueError(f"unknown grid {name!r}; expected one of {sorted(GRIDS)}") from None
