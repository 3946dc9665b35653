"""The dashboard's one runner for engine work: latest-only per session, shared results, both cores.

Every engine call a served session makes (the what-if solve with its profile, the ensemble members, the
observed-vs-modelled comparison, the sensitivity) goes through :data:`RUNNER`:

* **latest-only per slot**: a slot is ``(session, kind)``; a newer request for a slot supersedes its
  queued one (the waiter gets :class:`Superseded`); a running job finishes, and its caller decides
  whether the result is stale (the store compares request generations);
* **closed sessions free their work**: :meth:`Runner.close_session` drops the session's queued jobs
  and cancels its waiters (a running job is not interrupted: its result may still serve others);
* **faults stay local**: an exception in a job reaches only the waiters of that job (the same request);
  the worker threads keep serving;
* **shared across sessions**: results are kept in a bounded LRU keyed by the full request (world,
  source, region, depth, perturbation, ...), and a request already queued or running for one session is
  joined by another session asking the same thing, so eight viewers asking one thing solve once;
* **lanes**: each lane is a set of worker threads with a priority queue. The default lanes put the
  slider solves on two threads (two sessions' steps solve at once, ``PRODA_ENGINE_THREADS``), the
  ensemble members (a separate engine, :class:`MemberEnsemble`) on another at a lower priority, and the
  minutes-long first sensitivity on a third that never holds up a slider.

The compiled kernels run on an OpenMP team that belongs to the calling thread, so each lane's threads
are long-lived (a warm team each) and set their own kernel thread count (:class:`Lane`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import heapq
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: Priority of each kind of work inside a lane (lower runs first): a slider step is never queued
#: behind another session's ensemble members or comparison.
PRIORITY: dict[str, int] = {"what-if": 0, "comparison": 1, "uncertainty": 2, "sensitivity": 3}


class Superseded(Exception):
    """A newer request for the same slot replaced this queued one before it started."""


@dataclass(frozen=True)
class Lane:
    """A pool of long-lived worker threads.

    ``kernel_threads`` is numba's thread count in each worker (per calling thread): 1 when two lanes
    solve at once on two cores, so the OpenMP teams never oversubscribe the machine (their barriers
    spin; oversubscribed they were measured 10-20x slower, see :mod:`proda_engine.physics.threads`).
    ``None`` keeps numba's default. ``nice`` (Linux: per thread) lowers the lane's CPU share when the
    cores are contended, so background work (ensemble members, the first sensitivity) yields to the slider
    solves and to the event loop that sends the pages their updates.
    """

    name: str
    threads: int = 1
    kernel_threads: int | None = None
    nice: int = 0


@dataclass(eq=False)
class _Job:
    key: Hashable | None
    fn: Callable
    args: tuple
    lane: str
    priority: int
    seq: int
    waiters: dict[tuple, concurrent.futures.Future] = field(default_factory=dict)
    started: bool = False

    def __lt__(self, other: _Job) -> bool:
        return (self.priority, self.seq) < (other.priority, other.seq)


class Runner:
    """Latest-only, shared, multi-lane executor of engine work (see the module docstring).

    ``cache_size`` bounds the shared result cache (entries; a what-if outcome of the 0.5° globe is
    ~12 MB, so the default 16 keeps it under ~0.2 GB).
    """

    def __init__(self, lanes: tuple[Lane, ...], cache_size: int = 16) -> None:
        if not lanes:
            raise ValueError("a runner needs at least one lane")
        self.lanes = {lane.name: lane for lane in lanes}
        self.cache_size = cache_size
        self._lock = threading.Condition()
        self._queues: dict[str, list[_Job]] = {name: [] for name in self.lanes}
        self._cache: OrderedDict[Hashable, object] = OrderedDict()
        self._inflight: dict[Hashable, _Job] = {}  # key -> queued or running job
        self._slots: dict[tuple, _Job] = {}  # (session, kind) -> the job its waiter waits on
        self._closed: set[Hashable] = set()
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopping = False  # set by shutdown(): no new work, workers leave after their job
        self.stats = {"submitted": 0, "ran": 0, "cache_hits": 0, "joined": 0, "superseded": 0, "cancelled": 0,
                      "failed": 0}

    # -- public ----------------------------------------------------------------------------
    def submit(self, session: Hashable, kind: str, fn: Callable, *args, key: Hashable | None = None,
               lane: str | None = None) -> concurrent.futures.Future:
        """Queue ``fn(*args)`` for ``session``'s slot ``kind``; returns a future of its result.

        With ``key`` (hashable, the full request) the result is shared: a cached result returns at
        once, and a job for the same key already queued or running is joined instead of run twice.
        ``None`` results are never cached (they mean "abandoned" or "nothing here", both cheap to ask again).
        A queued job of the same slot is superseded (its future raises :class:`Superseded`).
        """
        lane = lane or next(iter(self.lanes))
        if lane not in self.lanes:
            raise ValueError(f"unknown lane {lane!r}; expected one of {list(self.lanes)}")
        slot = (session, kind)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._ensure_started()
            self.stats["submitted"] += 1
            if session in self._closed or self._stopping:
                fut.cancel()
                return fut
            self._release_slot(slot, Superseded(f"a newer {kind} request replaced this one"))
            if key is not None and key in self._cache:
                self._cache.move_to_end(key)
                self.stats["cache_hits"] += 1
                fut.set_result(self._cache[key])
                return fut
            job = self._inflight.get(key) if key is not None else None
            if job is not None:
                self.stats["joined"] += 1
            else:
                job = _Job(key, fn, args, lane, PRIORITY.get(kind, 5), next(self._seq))
                if key is not None:
                    self._inflight[key] = job
                heapq.heappush(self._queues[lane], job)
                self._lock.notify_all()
            job.waiters[slot] = fut
            self._slots[slot] = job
        return fut

    async def run(self, session: Hashable, kind: str, fn: Callable, *args, key: Hashable | None = None,
                  lane: str | None = None):
        """:meth:`submit` awaited on the running event loop (never blocks it)."""
        return await asyncio.wrap_future(self.submit(session, kind, fn, *args, key=key, lane=lane))

    def call(self, fn: Callable, *args, key: Hashable | None = None):
        """``fn(*args)`` in the calling thread through the shared cache (inline use: tests, notebooks)."""
        if key is not None:
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    self.stats["cache_hits"] += 1
                    return self._cache[key]
        out = fn(*args)
        if key is not None and out is not None:
            with self._lock:
                self._remember(key, out)
        return out

    def open_session(self, session: Hashable) -> None:
        """Allow work for ``session`` again (ids are never reused in practice; tests reuse them)."""
        with self._lock:
            self._closed.discard(session)

    def close_session(self, session: Hashable) -> int:
        """Drop ``session``'s queued work and cancel its waiters; returns how many waiters were cancelled.
        Later submissions for the session are cancelled at once."""
        with self._lock:
            self._closed.add(session)
            slots = [s for s in self._slots if s[0] == session]
            for slot in slots:
                self._release_slot(slot, None)
            self.stats["cancelled"] += len(slots)
            return len(slots)

    def shutdown(self, timeout: float = 10.0) -> int:
        """Stop the workers: queued jobs are dropped (their waiters cancelled), each running job finishes,
        and every worker thread ends; returns how many were still running after ``timeout`` seconds.

        Registered at exit for :data:`RUNNER`: the workers are daemon threads, each with its own OpenMP team
        (the compiled kernels); left to die with the interpreter they aborted it now and then ("terminate
        called without an active exception", exit status 134, after every test had passed). A running job
        is not interrupted: exit waits for it up to ``timeout`` (a first sensitivity can take longer; its
        thread then dies with the interpreter as before).
        """
        with self._lock:
            self._stopping = True
            for queue in self._queues.values():
                for job in queue:
                    for fut in job.waiters.values():
                        fut.cancel()
                    job.waiters.clear()
                    if job.key is not None and not job.started:
                        self._inflight.pop(job.key, None)
                queue.clear()
            self._slots = {slot: job for slot, job in self._slots.items() if job.started}
            self._lock.notify_all()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return sum(t.is_alive() for t in threads)

    def is_closed(self, session: Hashable) -> bool:
        with self._lock:
            return session in self._closed

    def pending(self, lane: str | None = None) -> int:
        """Queued (not yet started, not dropped) jobs in ``lane`` or in all lanes."""
        with self._lock:
            lanes = [lane] if lane else list(self._queues)
            return sum(1 for n in lanes for j in self._queues[n] if j.waiters and not j.started)

    def cached(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._cache

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    # -- internals (all under self._lock) -------------------------------------------------------
    def _release_slot(self, slot: tuple, exc: BaseException | None) -> None:
        """Detach ``slot``'s waiter from its job: it raises ``exc`` (cancelled if None). A queued job
        with no waiter left is dropped; a running one finishes (its result goes to the cache)."""
        job = self._slots.pop(slot, None)
        if job is None:
            return
        fut = job.waiters.pop(slot, None)
        if fut is not None and not fut.done():
            if exc is None:
                fut.cancel()
            else:
                fut.set_exception(exc)
                self.stats["superseded"] += 1
        if not job.waiters and not job.started and job.key is not None:
            self._inflight.pop(job.key, None)  # nobody wants it: the worker skips it

    def _remember(self, key: Hashable, value: object) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _ensure_started(self) -> None:
        if self._threads:
            return
        for lane in self.lanes.values():
            for i in range(lane.threads):
                t = threading.Thread(target=self._worker, args=(lane,), name=f"proda-{lane.name}-{i}", daemon=True)
                t.start()
                self._threads.append(t)

    def _next(self, lane: str) -> _Job | None:
        """The lane's next wanted job (blocking), or None once the runner is shutting down."""
        queue = self._queues[lane]
        while True:
            while not queue:
                if self._stopping:
                    return None
                self._lock.wait()
            job = heapq.heappop(queue)
            if job.waiters:
                job.started = True
                return job

    def _worker(self, lane: Lane) -> None:
        if lane.nice:
            try:  # a thread is its own task on Linux: this lowers this worker only
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + lane.nice))
            except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run at normal priority
                log.info("runner lane %s: could not lower priority: %s", lane.name, exc)
        if lane.kernel_threads is not None:
            import numba

            numba.set_num_threads(max(1, min(lane.kernel_threads, numba.config.NUMBA_NUM_THREADS)))
        while True:
            with self._lock:
                job = self._next(lane.name)
            if job is None:  # shutdown(): the thread ends (and its OpenMP team with it)
                return
            try:
                out, exc = job.fn(*job.args), None
            except BaseException as e:  # delivered to this job's waiters only, the worker keeps serving
                out, exc = None, e
            with self._lock:
                self.stats["ran"] += 1
                if job.key is not None:
                    self._inflight.pop(job.key, None)
                    if exc is None and out is not None:
                        self._remember(job.key, out)
                if exc is not None:
                    self.stats["failed"] += 1
                for slot, fut in list(job.waiters.items()):
                    if self._slots.get(slot) is job:
                        del self._slots[slot]
                    if fut.done():
                        continue
                    if exc is None:
                        fut.set_result(out)
                    else:
                        fut.set_exception(exc)
                job.waiters.clear()
                job.fn = job.args = None  # release the request's references


def engine_threads() -> int:
    """Worker threads of the ``engine`` lane: ``PRODA_ENGINE_THREADS`` (default 2, one per core of this
    machine class). The main engine solves in the calling thread outside its cache lock, so two sessions'
    slider steps solve at once (:mod:`proda_engine.products.whatif`); 1 serialises them as before."""
    raw = os.environ.get("PRODA_ENGINE_THREADS", "2")
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"PRODA_ENGINE_THREADS must be a whole number >= 1, found {raw!r}") from None
    if n < 1:
        raise ValueError(f"PRODA_ENGINE_THREADS must be a whole number >= 1, found {raw!r}")
    return n


#: Lanes of the served dashboard: slider solves (main engine, two sessions' steps at once), ensemble
#: members (their own engine, beside the slider solves at a lower priority), and the slow first
#: sensitivity (lowest priority).
LANES = (Lane("engine", engine_threads(), kernel_threads=1), Lane("members", 1, kernel_threads=1, nice=10),
         Lane("slow", 1, nice=15))

#: The process's one runner (all sessions of the server share it).
RUNNER = Runner(LANES)
atexit.register(RUNNER.shutdown)


async def follow_latest(store, kind: str, generation: Callable[[], int], request: Callable[[], Hashable],
                        compute: Callable, apply: Callable[[Hashable, object], None], what: str,
                        lane: str = "engine") -> None:
    """Ask :data:`RUNNER` (``lane``, shared cache) for ``compute(request())`` until the answer is current.

    For a view's own query (point query, comparison B): ``generation()`` counts the view's changes; an answer
    whose generation moved on is asked again with the newest request, a superseded one too. A failure is a
    message in that session (``store.fail``); a closed session ends the loop. ``store`` needs
    ``session_id``, ``world`` and ``fail``.
    """
    while True:
        gen, req = generation(), request()
        try:
            out = await RUNNER.run(store.session_id, kind, compute, req, key=(kind, store.world, req), lane=lane)
        except Superseded:  # a newer request of this session took the slot: look again
            continue
        except asyncio.CancelledError:  # the session closed
            return
        except Exception as exc:
            store.fail(exc, what)
            return
        if gen == generation():
            apply(req, out)
            return


class LatestFollower:
    """At most one :func:`follow_latest` loop per view at a time.

    A view calls this on every change of its request; while a loop is running a call returns at once,
    because the running loop asks again with the newest request when its answer arrives (its
    ``generation`` moved on), so a burst of changes costs one loop, not one per change."""

    def __init__(self) -> None:
        self.running = False

    async def __call__(self, *args, **kwargs) -> None:
        if self.running:
            return
        self.running = True
        try:
            await follow_latest(*args, **kwargs)
        finally:
            self.running = False
