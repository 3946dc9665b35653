"""Exceptions raised by the data layer.

Every error is a :class:`ValueError` so callers that only care about "bad input" can catch one type,
and every message names the file, the variable or column, the row where it applies, what was
expected and what was found (data contract §5).
"""

from __future__ import annotations


class DataError(ValueError):
    """Base class for bad input detected by :mod:`proda_engine.data`."""


class ForcingError(DataError):
    """A forcing file is missing variables, has wrong units/shapes, or out-of-range values."""


class ProfileError(DataError):
    """A soil-profile table is structurally unusable (missing column, unreadable file, unknown layout)."""


class CovariateError(DataError):
    """A covariate grid cannot be read or does not line up with the others."""


class CatalogError(DataError):
    """The data catalog has unknown keys, missing files or an unknown source."""


class ParameterFileError(DataError):
    """A parameter file has unknown names, another grid, or a closure/soil grid that does not match."""
