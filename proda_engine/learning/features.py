"""Covariate encoding for the parameter network (spec §(m) "Inputs").

A :class:`FeatureEncoder` is fitted once on a covariate table (columns = covariate names, rows =
sites or grid cells) and then turns any table with the same columns into the network's input
matrix:

* **continuous** columns are scaled with statistics stored in the encoder,

  - ``"minmax"`` (original, [inferred]):  ``x' = (x - min) / (max - min)``, in [0, 1] on the fit table;
  - ``"robust"``:                           ``x' = (x - median) / IQR``;

  a constant column (zero range) is mapped to 0 and reported;
* **categorical** columns (land cover, texture class, soil orders, Köppen) are one-hot encoded over
  the categories seen at fit time. The original fed category codes as scaled numbers, which
  imposes a meaningless order; one-hot does not. A category unseen at fit time becomes an
  all-zero one-hot and is **counted** (:attr:`EncodedTable.unknown`), never silently mapped.

Rows with any NaN covariate are dropped with a counted reason (spec: "Sites with any NaN
covariate are dropped"); :attr:`EncodedTable.index` maps kept rows back to the input rows.

Example
-------
>>> import numpy as np
>>> enc = FeatureEncoder(categorical=["lc"]).fit({"t": np.array([0.0, 5.0, 10.0]), "lc": np.array([1, 2, 2])})
>>> enc.feature_names
['t', 'lc=1', 'lc=2']
>>> out = enc.transform({"t": np.array([5.0, np.nan, 10.0]), "lc": np.array([2, 1, 7])})
>>> out.x.tolist(), out.index.tolist(), out.unknown, out.dropped
([[0.5, 0.0, 1.0], [1.0, 0.0, 0.0]], [0, 2], {'lc': 1}, {'nan_covariate': 1})
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

Scaling = Literal["minmax", "robust"]
CovariateTable = Mapping[str, Any]  # a pandas DataFrame or a dict of 1-D arrays (one row per site)


def table_columns(table: Any) -> list[str]:
    """Column names of a DataFrame or a mapping of arrays."""
    if hasattr(table, "columns"):
        return [str(c) for c in table.columns]
    return [str(c) for c in table]


def table_column(table: Any, name: str) -> np.ndarray:
    """One column as a 1-D numpy array (object dtype preserved for string categories)."""
    col = table[name]
    arr = col.to_numpy() if hasattr(col, "to_numpy") else np.asarray(col)
    if arr.ndim != 1:
        raise ValueError(f"covariate {name!r} must be 1-D, found shape {arr.shape}")
    return arr


def table_length(table: Any) -> int:
    cols = table_columns(table)
    if not cols:
        raise ValueError("the covariate table has no columns")
    n = {len(table_column(table, c)) for c in cols}
    if len(n) != 1:
        raise ValueError(f"covariate columns differ in length: {sorted(n)}")
    return n.pop()


def is_missing(arr: np.ndarray) -> np.ndarray:
    """NaN / None per entry, for numeric and object (string) columns alike."""
    if arr.dtype.kind in "fc":
        return ~np.isfinite(arr)
    if arr.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and not np.isfinite(v)) for v in arr], dtype=bool)
    return np.zeros(arr.shape, dtype=bool)


def _plain(v: Any) -> Any:
    """numpy scalar -> Python scalar (keeps the saved encoder loadable with ``weights_only=True``)."""
    return v.item() if isinstance(v, np.generic) else v


@dataclass
class EncodedTable:
    """Network inputs for the rows of a covariate table that could be encoded.

    Attributes:
        x: (n_kept, n_features) float64 inputs.
        index: (n_kept,) positions of the kept rows in the input table.
        n_rows: rows in the input table.
        dropped: reason -> number of rows dropped (``"nan_covariate"``).
        unknown: categorical column -> number of rows with a category unseen at fit time.
        nan_columns: column -> number of NaN entries (explains the drops).
    """

    x: np.ndarray
    index: np.ndarray
    n_rows: int
    dropped: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)
    nan_columns: dict[str, int] = field(default_factory=dict)

    @property
    def keep(self) -> np.ndarray:
        """(n_rows,) bool: True where the row was encoded."""
        m = np.zeros(self.n_rows, dtype=bool)
        m[self.index] = True
        return m


class FeatureEncoder:
    """Scale continuous covariates and one-hot encode categorical ones; statistics are stored.

    Args:
        categorical: names of the categorical columns.
        scaling: ``"minmax"`` (original) or ``"robust"`` (median / IQR: less sensitive to outliers
            such as extreme bedrock depths).
        columns: covariates to use, in order (default: every column of the fit table).
    """

    def __init__(self, categorical: Sequence[str] = (), scaling: Scaling = "minmax",
                 columns: Sequence[str] | None = None) -> None:
        if scaling not in ("minmax", "robust"):
            raise ValueError(f"scaling must be 'minmax' or 'robust', found {scaling!r}")
        self.categorical: list[str] = [str(c) for c in categorical]
        self.scaling: Scaling = scaling
        self.columns: list[str] | None = None if columns is None else [str(c) for c in columns]
        self.center: dict[str, float] = {}  # continuous: subtracted (min or median)
        self.scale: dict[str, float] = {}  # continuous: divided by (range or IQR; 1 if zero)
        self.categories: dict[str, list[Any]] = {}
        self.constant: list[str] = []

    # ------------------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return bool(self.center) or bool(self.categories)

    @property
    def continuous(self) -> list[str]:
        return [c for c in (self.columns or []) if c not in self.categorical]

    @property
    def feature_names(self) -> list[str]:
        """Names of the encoded inputs, in network order (continuous first, then one-hots)."""
        names = list(self.continuous)
        for c in self.categorical:
            names += [f"{c}={v}" for v in self.categories[c]]
        return names

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    # ------------------------------------------------------------------------------------------
    def fit(self, table: CovariateTable, rows: np.ndarray | None = None) -> FeatureEncoder:
        """Learn scaling statistics and category lists from ``table`` (optionally only ``rows``).

        Rows with any NaN in the used columns are ignored for the statistics (they are dropped at
        transform time anyway).
        """
        cols = self.columns if self.columns is not None else table_columns(table)
        missing = sorted(set(cols) - set(table_columns(table)))
        if missing:
            raise KeyError(f"covariate table lacks columns {missing}")
        absent = sorted(set(self.categorical) - set(cols))
        if absent:
            raise KeyError(f"categorical columns {absent} are not among the covariates")
        self.columns = list(cols)
        data = {c: table_column(table, c) for c in cols}
        if rows is not None:
            data = {c: v[rows] for c, v in data.items()}
        ok = ~np.any([is_missing(v) for v in data.values()], axis=0)
        if not ok.any():
            raise ValueError("no row without NaN covariates to fit the encoder on")
        self.center, self.scale, self.categories, self.constant = {}, {}, {}, []
        for c in self.continuous:
            if data[c].dtype.kind not in "biuf":
                raise TypeError(f"covariate {c!r} is not numeric ({data[c].dtype}); list it in categorical=")
            v = data[c][ok].astype(float)
            if self.scaling == "minmax":
                lo, spread = float(v.min()), float(v.max() - v.min())
            else:
                q1, med, q3 = np.percentile(v, [25.0, 50.0, 75.0])
                lo, spread = float(med), float(q3 - q1)
            if spread <= 0.0:
                # A constant covariate carries no information here; map it to 0, do not divide by 0.
                self.constant.append(c)
                spread = 1.0
            self.center[c], self.scale[c] = lo, spread
        for c in self.categorical:
            self.categories[c] = [_plain(v) for v in sorted(set(data[c][ok].tolist()), key=_sort_key)]
        if self.constant:
            log.warning("constant covariates mapped to 0: %s", self.constant)
        return self

    def transform(self, table: CovariateTable) -> EncodedTable:
        """Encode ``table``; rows with any NaN covariate are dropped and counted."""
        if not self.fitted or self.columns is None:
            raise RuntimeError("FeatureEncoder.transform called before fit")
        missing = sorted(set(self.columns) - set(table_columns(table)))
        if missing:
            raise KeyError(f"covariate table lacks columns {missing}")
        data = {c: table_column(table, c) for c in self.columns}
        n = table_length({c: data[c] for c in self.columns})
        nan = {c: is_missing(v) for c, v in data.items()}
        bad = np.any(list(nan.values()), axis=0) if nan else np.zeros(n, bool)
        index = np.flatnonzero(~bad)
        blocks = []
        for c in self.continuous:
            v = data[c][index].astype(float)
            blocks.append(((v - self.center[c]) / self.scale[c])[:, None])
        unknown: dict[str, int] = {}
        for c in self.categorical:
            cats = self.categories[c]
            lookup = {_key(v): i for i, v in enumerate(cats)}
            codes = np.array([lookup.get(_key(_plain(v)), -1) for v in data[c][index]], dtype=np.int64)
            onehot = np.zeros((index.size, len(cats)))
            known = codes >= 0
            onehot[np.flatnonzero(known), codes[known]] = 1.0
            n_unknown = int((~known).sum())
            if n_unknown:
                unknown[c] = n_unknown
                log.warning("covariate %r: %d rows with a category unseen at fit time -> all-zero one-hot",
                            c, n_unknown)
            blocks.append(onehot)
        x = np.concatenate(blocks, axis=1) if blocks else np.zeros((index.size, 0))
        dropped = {"nan_covariate": int(bad.sum())} if bad.any() else {}
        nan_columns = {c: int(m.sum()) for c, m in nan.items() if m.any()}
        if dropped:
            log.info("dropped %d of %d rows with NaN covariates (%s)", dropped["nan_covariate"], n, nan_columns)
        return EncodedTable(x=x, index=index, n_rows=n, dropped=dropped, unknown=unknown, nan_columns=nan_columns)

    def fit_transform(self, table: CovariateTable) -> EncodedTable:
        return self.fit(table).transform(table)

    # ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (saved inside the model file)."""
        if self.columns is None:
            raise RuntimeError("cannot serialise an unfitted FeatureEncoder")
        return {
            "columns": list(self.columns),
            "categorical": list(self.categorical),
            "scaling": self.scaling,
            "center": {c: float(v) for c, v in self.center.items()},
            "scale": {c: float(v) for c, v in self.scale.items()},
            "categories": {c: [_plain(v) for v in vs] for c, vs in self.categories.items()},
            "constant": list(self.constant),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureEncoder:
        enc = cls(categorical=d["categorical"], scaling=d["scaling"], columns=d["columns"])
        enc.center = {str(c): float(v) for c, v in d["center"].items()}
        enc.scale = {str(c): float(v) for c, v in d["scale"].items()}
        enc.categories = {str(c): list(vs) for c, vs in d["categories"].items()}
        enc.constant = list(d.get("constant", []))
        return enc

    def __repr__(self) -> str:
        return (f"FeatureEncoder(columns={self.columns}, categorical={self.categorical}, "
                f"scaling={self.scaling!r}, n_features={self.n_features if self.fitted else '?'})")


def _key(v: Any) -> Any:
    """Lookup key: 3 and 3.0 are the same land-cover code."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _sort_key(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, int | float) else (1, str(v))
