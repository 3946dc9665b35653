"""Dask helpers: a client for a local or remote cluster, and bounded task maps.

The engine's heavy loops (site-level MCMC over tens of thousands of profiles) are split into
independent tasks. :func:`get_client` gives a ``dask.distributed`` client — a ``LocalCluster`` of
single-threaded worker *processes* by default (the solver and the sampler are single-threaded numba
/ torch code, so processes avoid the GIL and oversubscription), or a client of an existing
scheduler when an address is given, or nothing at all for ``scheduler="inline"`` (run in this
process: debugging, tests, profiling). :func:`map_as_completed` submits one task per item with a
bound on the tasks in flight and yields results as they complete, so the caller can write each
result to disk at once (an interrupted run loses only the tasks in flight).

Example
-------
>>> with get_client("inline") as client:
...     out = sorted(r for _, r in map_as_completed(pow, [(2, 3), (3, 2)], client=client))
>>> out
[8, 9]
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

R = TypeVar("R")

#: Environment of local worker processes: one thread per math library, since every worker runs one
#: single-threaded task at a time and the machine's cores are shared.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1"}

INLINE = "inline"

_QUIET_LOGGERS = ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.worker",
                  "distributed.core", "distributed.http.proxy", "bokeh", "tornado")


@contextlib.contextmanager
def _quiet_logs(level: int = logging.ERROR) -> Iterator[None]:
    """Silence dask's INFO/WARNING chatter in this process for the duration."""
    saved = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, lvl in saved.items():
            logging.getLogger(name).setLevel(lvl)


@contextlib.contextmanager
def get_client(scheduler: str | None = None, n_workers: int = 2) -> Iterator[Any]:
    """A ``dask.distributed.Client`` for the duration of the ``with`` block.

    Args:
        scheduler: None → start a ``LocalCluster`` of ``n_workers`` worker processes with one
            thread each (no dashboard, logs silenced) and shut it down afterwards; ``"inline"`` →
            yield None (callers then run tasks in this process); any other string → connect to that
            scheduler address (the cluster is left running).
        n_workers: local workers (ignored for an address).

    Yields:
        a ``Client``, or None for ``"inline"``.
    """
    if scheduler == INLINE:
        yield None
        return
    from distributed import Client, LocalCluster

    with _quiet_logs():
        if scheduler is None:
            if n_workers < 1:
                raise ValueError(f"n_workers: expected >= 1, found {n_workers}")
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                   silence_logs=logging.ERROR, dashboard_address=None,
                                   env=dict(WORKER_ENV))
            client = Client(cluster)
        else:
            cluster = None
            client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def map_as_completed(
    func: Callable[..., R],
    items: Iterable[Sequence[Any]],
    *,
    client: Any = None,
    max_in_flight: int = 4,
    keys: Iterable[Any] | None = None,
) -> Iterator[tuple[Any, R]]:
    """``func(*item)`` for every item, yielding ``(key, result)`` as tasks complete.

    At most ``max_in_flight`` tasks are submitted but not yet yielded, so memory stays bounded and an
    interruption loses at most that many results. With ``client=None`` the items run in order in
    this process (same results: the tasks must be pure functions of their arguments).

    Args:
        func: a picklable (module-level) function.
        items: argument tuples, consumed lazily.
        client: a ``dask.distributed.Client`` or None (inline).
        max_in_flight: bound on pending tasks (>= 1).
        keys: labels yielded with the results (default: the item's position).

    Raises:
        the first exception a task raised (remaining tasks are cancelled).
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight: expected >= 1, found {max_in_flight}")
    key_iter = iter(keys) if keys is not None else None
    labelled = ((next(key_iter) if key_iter is not None else i, item) for i, item in enumerate(items))
    if client is None:
        for key, item in labelled:
            yield key, func(*item)
        return

    from distributed import as_completed

    def submit(key: Any, item: Sequence[Any]) -> Any:
        # pure=False: a task is a unit of work to run, never to be deduplicated against a cached
        # result of an earlier (possibly cancelled) submission.
        fut = client.submit(func, *item, pure=False)
        label[fut.key] = key
        return fut

    label: dict[str, Any] = {}
    pending = as_completed()
    for key, item in labelled:
        pending.add(submit(key, item))
        if pending.count() >= max_in_flight:
            break
    try:
        for fut in pending:
            result = fut.result()  # re-raises the task's exception here
            key = label.pop(fut.key)
            fut.release()
            nxt = next(labelled, None)
            if nxt is not None:
                pending.add(submit(*nxt))
            yield key, result
    finally:
        for fut in list(pending.futures):
            fut.cancel()


def cpu_count() -> int:
    """Cores available to this process (respects affinity masks)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
