"""Spatially blocked train / validation / test split of sites (spec §(m) "Split").

Nearby soil profiles share climate, parent material and land use, so a random site split leaks:
a test site usually has a training neighbour a few kilometres away and the test score measures
interpolation, not prediction. Here sites are grouped into lat/lon blocks of ``block_size``
degrees and **whole blocks** are assigned:

1. block id ``b = (floor((lat + 90) / s), floor((lon + 180) / s) mod n_lon)``;
2. blocks are shuffled (seeded) and taken into the **test** set until it holds
   ``test_fraction`` of the sites (20 %, spec) — the site share, not the block share, because
   blocks hold very different numbers of profiles;
3. the remaining blocks are split the same way into **validation** (``val_fraction``, 10 %) and
   **training** (90 %). Validation is spatially blocked too, so early stopping monitors
   out-of-block error.

So a test site never shares a block with a training or validation site. With ``buffer > 0``,
training and validation sites closer than ``buffer`` degrees (Chebyshev distance in lat/lon, with
longitude wrap-around) to any test site are also removed (counted as ``buffer`` sites): with
``buffer = block_size`` no training site lies within one block size of a test site.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> lat, lon = rng.uniform(-60, 70, 1000), rng.uniform(-180, 180, 1000)
>>> s = spatial_block_split(lat, lon, block_size=5.0, seed=1)
>>> len(s.train) + len(s.val) + len(s.test) == 1000
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial import cKDTree


@dataclass
class Split:
    """Site indices (into the table the split was made on) of each subset.

    Attributes:
        train, val, test: sorted int64 index arrays (``train`` may hold repeats for bootstrap
            members, see :meth:`bootstrap`).
        buffer: sites removed because they lie within ``buffer`` degrees of a test site.
        block: (N,) block id per site (-1 if the split was given explicitly).
        info: settings and counts (block size, seed, number of blocks per subset).
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    block: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train", "val", "test", "buffer"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        if np.intersect1d(self.val, self.test).size or np.intersect1d(self.train, self.test).size \
                or np.intersect1d(self.train, self.val).size:
            raise ValueError("train, val and test must be disjoint")
        if self.val.size == 0:
            raise ValueError("the validation set is empty: early stopping needs validation sites")

    @property
    def n_sites(self) -> int:
        return int(np.unique(np.concatenate([self.train, self.val, self.test, self.buffer])).size)

    def counts(self) -> dict[str, int]:
        return {"train": int(self.train.size), "val": int(self.val.size), "test": int(self.test.size),
                "buffer": int(self.buffer.size)}

    def bootstrap(self, seed: int) -> Split:
        """Same val/test, training sites resampled with replacement (same size), seeded."""
        rng = np.random.default_rng(seed)
        train = np.sort(rng.choice(self.train, size=self.train.size, replace=True))
        return Split(train=train, val=self.val, test=self.test, buffer=self.buffer, block=self.block,
                     info={**self.info, "bootstrap_seed": int(seed)})

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (index lists), stored in the model file."""
        return {"train": self.train.tolist(), "val": self.val.tolist(), "test": self.test.tolist(),
                "buffer": self.buffer.tolist(), "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Split:
        return cls(train=np.asarray(d["train"]), val=np.asarray(d["val"]), test=np.asarray(d["test"]),
                   buffer=np.asarray(d.get("buffer", [])), info=dict(d.get("info", {})))


def block_ids(lat: np.ndarray, lon: np.ndarray, block_size: float = 5.0) -> np.ndarray:
    """Integer block id per site for ``block_size``-degree lat/lon blocks (longitude wraps at ±180)."""
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    if lat.shape != lon.shape or lat.ndim != 1:
        raise ValueError("lat and lon must be 1-D arrays of equal length")
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
        raise ValueError("lat/lon must be finite (drop sites without coordinates first)")
    if (np.abs(lat) > 90).any():
        raise ValueError("latitude outside [-90, 90]")
    n_lon = int(np.ceil(360.0 / block_size))
    n_lat = int(np.ceil(180.0 / block_size))
    i = np.clip(np.floor((lat + 90.0) / block_size).astype(np.int64), 0, n_lat - 1)
    j = np.mod(np.floor((np.mod(lon + 180.0, 360.0)) / block_size).astype(np.int64), n_lon)
    return i * n_lon + j


def _take_blocks(blocks: np.ndarray, sites_per_block: np.ndarray, fraction: float) -> np.ndarray:
    """First blocks of the (shuffled) order until their sites reach ``fraction`` of the total.

    Stops at whichever cut point (before or after the crossing block) is closer to the target, so
    the realised share is within half a block of ``fraction``.
    """
    if fraction <= 0 or blocks.size == 0:
        return blocks[:0]
    target = fraction * sites_per_block.sum()
    cum = np.cumsum(sites_per_block)
    k = int(np.searchsorted(cum, target))  # cum[k] >= target
    k = min(k, blocks.size - 1)
    before = cum[k - 1] if k > 0 else 0
    n = k if (target - before) < (cum[k] - target) and k > 0 else k + 1
    return blocks[:n]


def spatial_block_split(lat: np.ndarray, lon: np.ndarray, *, block_size: float = 5.0,
                        test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0,
                        buffer: float = 0.0) -> Split:
    """Blocked split of sites at (lat, lon) degrees into train / val / test (see module docstring).

    Args:
        lat, lon: (N,) site coordinates, degrees.
        block_size: block side, degrees (5).
        test_fraction: share of sites in test blocks (0.2); 0 gives an empty test set.
        val_fraction: share of the non-test sites in validation blocks (0.1).
        seed: seeds the block order (the split is a pure function of the inputs and the seed).
        buffer: remove train/val sites within this Chebyshev lat/lon distance (degrees) of a test site.

    Returns:
        :class:`Split`. Raises ``ValueError`` if there are too few blocks for a non-empty
        training and validation set.
    """
    if not 0.0 <= test_fraction < 1.0 or not 0.0 < val_fraction < 1.0:
        raise ValueError("need 0 <= test_fraction < 1 and 0 < val_fraction < 1")
    block = block_ids(lat, lon, block_size)
    rng = np.random.default_rng(seed)
    uniq, counts = np.unique(block, return_counts=True)
    order = rng.permutation(uniq.size)
    uniq, counts = uniq[order], counts[order]
    test_blocks = _take_blocks(uniq, counts, test_fraction)
    rest, rest_counts = uniq[test_blocks.size:], counts[test_blocks.size:]
    val_blocks = _take_blocks(rest, rest_counts, val_fraction)
    train_blocks = rest[val_blocks.size:]
    if val_blocks.size == 0 or train_blocks.size == 0:
        raise ValueError(f"only {uniq.size} blocks of {block_size} degrees: too few for train/val/test; "
                         "use a smaller block_size")
    test = np.flatnonzero(np.isin(block, test_blocks))
    val = np.flatnonzero(np.isin(block, val_blocks))
    train = np.flatnonzero(np.isin(block, train_blocks))
    removed = np.zeros(0, np.int64)
    if buffer > 0 and test.size:
        near = _near(np.asarray(lat, float), np.asarray(lon, float), test, buffer)
        removed = np.flatnonzero(near & ~np.isin(np.arange(block.size), test))
        train, val = np.setdiff1d(train, removed), np.setdiff1d(val, removed)
        if train.size == 0 or val.size == 0:
            raise ValueError(f"buffer={buffer} removes every training or validation site")
    info = {"block_size": float(block_size), "test_fraction": float(test_fraction),
            "val_fraction": float(val_fraction), "seed": int(seed), "buffer": float(buffer),
            "n_blocks": {"train": int(train_blocks.size), "val": int(val_blocks.size),
                         "test": int(test_blocks.size)}}
    return Split(train=train, val=val, test=test, buffer=removed, block=block, info=info)


def _wrapped_tree(lat: np.ndarray, lon: np.ndarray) -> cKDTree:
    """KD-tree of (lat, lon) points plus copies shifted by +-360 degrees, so that Chebyshev
    distances are measured across the date line too."""
    shift = np.array([0.0, 360.0])
    pts = np.column_stack([lat, lon])
    return cKDTree(np.concatenate([pts, pts + shift, pts - shift]))


def _near(lat: np.ndarray, lon: np.ndarray, ref: np.ndarray, radius: float) -> np.ndarray:
    """(N,) True where a site is within ``radius`` degrees (Chebyshev, lon wrap) of a site in ``ref``."""
    tree = _wrapped_tree(lat[ref], lon[ref])
    d, _ = tree.query(np.column_stack([lat, lon]), k=1, p=np.inf, distance_upper_bound=radius)
    return d < radius


def min_distance(lat: np.ndarray, lon: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Smallest Chebyshev lat/lon distance (degrees, lon wrap) between sites ``a`` and sites ``b``."""
    if a.size == 0 or b.size == 0:
        return float("inf")
    lat = np.asarray(lat, float)
    lon = np.asarray(lon, float)
    tree = _wrapped_tree(lat[b], lon[b])
    d, _ = tree.query(np.column_stack([lat[a], lon[a]]), k=1, p=np.inf)
    return float(d.min())
