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

:func:`spatial_kfold` uses the same blocks for **k-fold cross-validation**: blocks are dealt to
``n_folds`` folds balanced in site count, every site is tested exactly once, validation blocks can
be carved from each fold's training blocks, and the optional buffer is a great-circle radius in km
(:func:`great_circle_km`) rather than a lat/lon box.

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


# ==================================================================================================
# Spatially blocked k-fold cross-validation with a great-circle buffer
# ==================================================================================================
#: Mean Earth radius (IUGG R1), km; great-circle distances below use a sphere of this radius.
EARTH_RADIUS_KM = 6371.0088


@dataclass
class Fold:
    """One fold of :func:`spatial_kfold`: site indices into the table the folds were made on.

    Attributes:
        k: fold number, 0 .. n_folds - 1.
        train: sorted int64 indices of the training sites (buffer sites and ``val`` removed).
        test: sorted int64 indices of the held-out sites (whole blocks; each site is in exactly one
            fold's ``test``).
        val: sorted int64 indices of validation sites, whole blocks carved from this fold's
            training blocks (for early stopping); empty when ``val_fraction = 0``.
        buffer: sorted int64 indices of the sites removed from training / validation because they
            lie closer than ``buffer_km`` (great circle) to a test site of this fold.
        info: settings and counts (``block_size``, ``buffer_km``, ``seed``, blocks per subset).
    """

    k: int
    train: np.ndarray
    test: np.ndarray
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train", "test", "val", "buffer"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        parts = (self.train, self.test, self.val, self.buffer)
        if sum(p.size for p in parts) != np.unique(np.concatenate(parts)).size:
            raise ValueError("train, test, val and buffer of a fold must be disjoint")

    @property
    def n_buffer_dropped(self) -> int:
        """Training + validation sites removed by the buffer (``buffer.size``)."""
        return int(self.buffer.size)

    def counts(self) -> dict[str, int]:
        return {"train": int(self.train.size), "val": int(self.val.size), "test": int(self.test.size),
                "buffer": int(self.buffer.size)}

    def to_split(self) -> Split:
        """The fold as a :class:`Split` (for the training code, which takes one); needs a non-empty val."""
        return Split(train=self.train, val=self.val, test=self.test, buffer=self.buffer,
                     info={**self.info, "fold": int(self.k)})


def great_circle_km(lat1: np.ndarray | float, lon1: np.ndarray | float, lat2: np.ndarray | float,
                    lon2: np.ndarray | float) -> np.ndarray:
    """Great-circle distance, km, on a sphere of radius :data:`EARTH_RADIUS_KM` (haversine).

    ``d = 2 R asin( sqrt( sin²(Δφ/2) + cos φ1 cos φ2 sin²(Δλ/2) ) )``, φ latitude, λ longitude
    (degrees in, broadcast like numpy).

    >>> round(float(great_circle_km(0.0, 0.0, 0.0, 1.0)), 3)   # one degree of the equator, km
    111.195
    """
    p1, p2 = np.radians(np.asarray(lat1, float)), np.radians(np.asarray(lat2, float))
    dl = np.radians(np.asarray(lon2, float) - np.asarray(lon1, float))
    h = np.sin((p2 - p1) / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2.0) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def _unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(N, 3) points on the unit sphere; chord length there is monotone in great-circle distance."""
    p, l = np.radians(lat), np.radians(lon)
    return np.column_stack([np.cos(p) * np.cos(l), np.cos(p) * np.sin(l), np.sin(p)])


def nearest_km(lat: np.ndarray, lon: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a),) great-circle distance, km, from each site in ``a`` to its nearest site in ``b``.

    A KD-tree on unit vectors finds the nearest neighbour by chord length (same order as the
    great-circle distance), then the haversine formula gives the distance; ``inf`` if ``b`` is empty.
    """
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    if b.size == 0:
        return np.full(a.size, np.inf)
    if a.size == 0:
        return np.zeros(0)
    _, j = cKDTree(_unit_vectors(lat[b], lon[b])).query(_unit_vectors(lat[a], lon[a]), k=1)
    return great_circle_km(lat[a], lon[a], lat[b[j]], lon[b[j]])


def min_distance_km(lat: np.ndarray, lon: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Smallest great-circle distance, km, between any site in ``a`` and any site in ``b`` (inf if empty)."""
    d = nearest_km(lat, lon, a, b)
    return float(d.min()) if d.size else float("inf")


def _balanced_fold_of_block(counts: np.ndarray, n_folds: int) -> np.ndarray:
    """Fold per block: blocks in the given (shuffled) order, each to the fold holding fewest sites.

    Greedy least-loaded assignment: at the end the largest and smallest fold differ by at most the
    largest block's site count (folds cannot be more balanced than whole blocks allow). Ties go to
    the lowest fold number, so the result is a pure function of the order.
    """
    load = np.zeros(n_folds, np.int64)
    fold = np.empty(counts.size, np.int64)
    for i, c in enumerate(counts):
        f = int(np.argmin(load))
        fold[i] = f
        load[f] += c
    return fold


def spatial_kfold(lat: np.ndarray, lon: np.ndarray, *, n_folds: int = 5, block_size: float = 5.0,
                  buffer_km: float = 0.0, val_fraction: float = 0.0, seed: int = 0) -> list[Fold]:
    """Spatially blocked k-fold cross-validation of sites, with an optional great-circle buffer.

    1. Sites are grouped into ``block_size``-degree lat/lon squares (:func:`block_ids`; longitude
       wraps at ±180). Blocks are squares in degrees, so they shrink in km toward the poles.
    2. The blocks are shuffled (``seed``) and dealt, in that order, to the fold currently holding
       the fewest sites: every site is in exactly one fold's ``test``, and fold sizes differ by at
       most the largest block's site count.
    3. For fold ``k`` the training blocks are all other blocks. With ``val_fraction > 0`` whole
       blocks holding about that share of the training sites (seeded, per fold) become ``val``.
    4. With ``buffer_km > 0`` every training or validation site whose great-circle distance to the
       nearest test site of fold ``k`` is ``< buffer_km`` is moved to ``fold.buffer`` (counted in
       ``fold.n_buffer_dropped``), so afterwards ``min distance(train ∪ val, test) >= buffer_km``.
       Test sets are never changed by the buffer.

    Args:
        lat, lon: (N,) site coordinates, degrees.
        n_folds: number of folds (>= 2).
        block_size: block side, degrees (5).
        buffer_km: exclusion radius around test sites, km (0: no buffer).
        val_fraction: share of each fold's training sites carved out as validation blocks (0: none).
        seed: seeds the block order and the validation blocks (folds are a pure function of inputs and seed).

    Returns:
        ``n_folds`` :class:`Fold` objects, in fold order. Raises ``ValueError`` when there are fewer
        non-empty blocks than folds, or when a fold would keep no training site (or no validation
        site although ``val_fraction > 0``).

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> lat, lon = rng.uniform(-60, 70, 500), rng.uniform(-180, 180, 500)
    >>> folds = spatial_kfold(lat, lon, n_folds=5, block_size=10.0, buffer_km=200.0, seed=1)
    >>> sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(500))
    True
    >>> all(min_distance_km(lat, lon, f.train, f.test) >= 200.0 for f in folds)
    True
    """
    if int(n_folds) != n_folds or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, found {n_folds!r}")
    if not block_size > 0:
        raise ValueError(f"block_size must be > 0 degrees, found {block_size!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"need 0 <= val_fraction < 1, found {val_fraction!r}")
    if not buffer_km >= 0.0:
        raise ValueError(f"buffer_km must be >= 0, found {buffer_km!r}")
    n_folds = int(n_folds)
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    block = block_ids(lat, lon, block_size)
    uniq, counts = np.unique(block, return_counts=True)
    if uniq.size < n_folds:
        raise ValueError(f"only {uniq.size} blocks of {block_size} degrees hold sites: too few for "
                         f"{n_folds} folds; use a smaller block_size or fewer folds")
    rng = np.random.default_rng(seed)
    order = rng.permutation(uniq.size)
    uniq, counts = uniq[order], counts[order]
    fold_of_block = _balanced_fold_of_block(counts, n_folds)
    lookup = dict(zip(uniq.tolist(), fold_of_block.tolist()))
    site_fold = np.fromiter((lookup[b] for b in block.tolist()), np.int64, block.size)
    folds = []
    for k in range(n_folds):
        test = np.flatnonzero(site_fold == k)
        rest = fold_of_block != k
        rest_blocks, rest_counts = uniq[rest], counts[rest]
        val_blocks = rest_blocks[:0]
        if val_fraction > 0:
            # Per-fold seeded shuffle of the training blocks (seed, k): folds do not share a val order.
            perm = np.random.default_rng([int(seed), k]).permutation(rest_blocks.size)
            val_blocks = _take_blocks(rest_blocks[perm], rest_counts[perm], val_fraction)
        val = np.flatnonzero(np.isin(block, val_blocks))
        train = np.flatnonzero((site_fold != k) & ~np.isin(block, val_blocks))
        removed = np.zeros(0, np.int64)
        if buffer_km > 0:
            cand = np.concatenate([train, val])
            near = nearest_km(lat, lon, cand, test) < buffer_km
            removed = np.sort(cand[near])
            train, val = np.setdiff1d(train, removed), np.setdiff1d(val, removed)
        if train.size == 0:
            raise ValueError(f"fold {k}: no training site left (buffer_km={buffer_km} removes them all)")
        if val_fraction > 0 and val.size == 0:
            raise ValueError(f"fold {k}: no validation site left (val_fraction={val_fraction}, "
                             f"buffer_km={buffer_km}); use smaller blocks or a smaller buffer")
        info = {"n_folds": n_folds, "block_size": float(block_size), "buffer_km": float(buffer_km),
                "val_fraction": float(val_fraction), "seed": int(seed),
                "n_blocks": {"test": int((fold_of_block == k).sum()), "val": int(val_blocks.size),
                             "train": int(rest.sum() - val_blocks.size)}}
        folds.append(Fold(k=k, train=train, test=test, val=val, buffer=removed, info=info))
    return folds
