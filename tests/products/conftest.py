"""Shared fixtures for product tests: one tiny world per test session (in the session's temp cache)."""

import pytest

from proda_engine.products.gridded import load_grid_world


@pytest.fixture(scope="session")
def world():
    """The 10 x 10-cell `tiny` world (Alps), built once into the per-session PRODA_CACHE."""
    return load_grid_world("tiny")
