"""Thread policy for the compiled kernels.

Parallel kernels split cells into blocks across threads. For small batches (MCMC steps, minibatches,
single sites) the cost of waking the thread pool exceeds the work, and on a busy shared machine it was
measured 10-20x slower than one thread. Kernels therefore run single-threaded below
:data:`PARALLEL_MIN_CELLS`; numba's thread count is per calling thread, so this is safe when several
threads (dashboard sessions, Dask workers) call kernels at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba

PARALLEL_MIN_CELLS = 4096


@contextmanager
def kernel_threads(n_cells: int) -> Iterator[None]:
    """Use numba's configured threads for large batches, one thread below ``PARALLEL_MIN_CELLS``."""
    if n_cells >= PARALLEL_MIN_CELLS or numba.get_num_threads() == 1:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(old)
