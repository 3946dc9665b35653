"""Shared fixtures. Threads are pinned so tests behave on the shared 2-core machine."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Worlds built by tests go to a per-session temporary cache, never the user's ~/.cache/proda.
os.environ.setdefault("PRODA_CACHE", tempfile.mkdtemp(prefix="proda-test-cache-"))

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
