"""The dashboard's runner: latest-only slots, cancellation on close, exceptions stay local, shared results.

Real worker threads; a job blocks on an Event so the tests control what is running and what is queued.
"""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from dashboard.runner import Lane, Runner, Superseded

TIMEOUT = 30


class Gate:
    """A job function that records its calls and blocks until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls: list[object] = []

    def __call__(self, value):
        self.calls.append(value)
        self.started.set()
        assert self.release.wait(TIMEOUT), "test gate never released"
        return value


def _runner(**kw) -> Runner:
    return Runner((Lane("engine", 1), Lane("members", 1)), **kw)


def test_newer_request_supersedes_the_queued_one_and_the_running_one_finishes():
    r = _runner()
    gate = Gate()
    busy = r.submit("other", "what-if", gate, "other-running")  # holds the only engine thread
    assert gate.started.wait(TIMEOUT)
    first = r.submit("s1", "what-if", gate, 1)
    second = r.submit("s1", "what-if", gate, 2)
    third = r.submit("s1", "what-if", gate, 3)
    assert isinstance(first.exception(TIMEOUT), Superseded)
    assert isinstance(second.exception(TIMEOUT), Superseded)
    gate.release.set()
    assert busy.result(TIMEOUT) == "other-running"
    assert third.result(TIMEOUT) == 3
    assert gate.calls == ["other-running", 3]  # positions 1 and 2 were never solved
    assert r.stats["superseded"] == 2


def test_slots_are_per_session_and_kind():
    r = _runner()
    gate = Gate()
    r.submit("blocker", "what-if", gate, 0)
    assert gate.started.wait(TIMEOUT)
    a = r.submit("s1", "what-if", gate, "s1")
    b = r.submit("s2", "what-if", gate, "s2")
    c = r.submit("s1", "comparison", gate, "s1-cmp")
    gate.release.set()
    assert (a.result(TIMEOUT), b.result(TIMEOUT), c.result(TIMEOUT)) == ("s1", "s2", "s1-cmp")


def test_closing_a_session_cancels_its_queued_work_and_refuses_new_work():
    r = _runner()
    gate = Gate()
    running = r.submit("s1", "what-if", gate, "running")
    assert gate.started.wait(TIMEOUT)
    queued = r.submit("s1", "comparison", gate, "queued")
    assert r.pending("engine") == 1
    assert r.close_session("s1") == 2
    assert queued.cancelled() and running.cancelled()  # the waiters are gone
    assert r.pending("engine") == 0
    assert r.submit("s1", "what-if", gate, "late").cancelled()
    gate.release.set()
    done = r.submit("s2", "what-if", lambda: "after")
    assert done.result(TIMEOUT) == "after"
    assert gate.calls == ["running"]  # the queued job never ran


def test_an_exception_reaches_only_its_own_session_and_the_worker_keeps_serving():
    r = _runner()

    def boom():
        raise RuntimeError("engine exploded for s1")

    bad = r.submit("s1", "what-if", boom, key=("bad",))
    good = r.submit("s2", "what-if", lambda: 42, key=("good",))
    with pytest.raises(RuntimeError, match="s1"):
        bad.result(TIMEOUT)
    assert good.result(TIMEOUT) == 42
    assert r.submit("s1", "what-if", lambda: "again").result(TIMEOUT) == "again"
    assert not r.cached(("bad",)) and r.cached(("good",))
    assert r.stats["failed"] == 1


def test_same_request_from_many_sessions_solves_once():
    r = _runner()
    gate = Gate()
    futs = [r.submit(f"s{i}", "what-if", gate, "shared", key=("world", "globe", 0.05)) for i in range(8)]
    assert gate.started.wait(TIMEOUT)
    gate.release.set()
    assert [f.result(TIMEOUT) for f in futs] == ["shared"] * 8
    assert gate.calls == ["shared"]
    assert r.stats["joined"] == 7
    later = r.submit("s9", "what-if", gate, "other", key=("world", "globe", 0.05))
    assert later.result(TIMEOUT) == "shared" and r.stats["cache_hits"] == 1
    assert r.call(gate, "inline", key=("world", "globe", 0.05)) == "shared"
    assert gate.calls == ["shared"]


def test_a_superseded_waiter_does_not_cancel_a_job_others_still_want():
    r = _runner()
    gate = Gate()
    r.submit("blocker", "what-if", gate, 0)
    assert gate.started.wait(TIMEOUT)
    a = r.submit("s1", "what-if", gate, "x", key=("x",))
    b = r.submit("s2", "what-if", gate, "x", key=("x",))
    r.submit("s1", "what-if", gate, "y", key=("y",))  # s1 moves on; s2 still wants x
    gate.release.set()
    assert isinstance(a.exception(TIMEOUT), Superseded)
    assert b.result(TIMEOUT) == "x"


def test_cache_is_bounded_lru_and_none_is_not_cached():
    r = _runner(cache_size=3)
    for i in range(5):
        assert r.submit("s", "what-if", lambda v=i: v, key=("k", i)).result(TIMEOUT) == i
    assert [r.cached(("k", i)) for i in range(5)] == [False, False, True, True, True]
    assert r.submit("s", "what-if", lambda: None, key=("none",)).result(TIMEOUT) is None
    assert not r.cached(("none",))


def test_priority_puts_slider_steps_before_ensemble_members():
    r = Runner((Lane("engine", 1),))
    gate = Gate()
    order: list[str] = []
    r.submit("blocker", "what-if", gate, 0)
    assert gate.started.wait(TIMEOUT)
    futs = [r.submit("s1", "uncertainty", order.append, "members"),
            r.submit("s2", "comparison", order.append, "comparison"),
            r.submit("s3", "what-if", order.append, "step")]
    gate.release.set()
    concurrent.futures.wait(futs, TIMEOUT)
    assert order == ["step", "comparison", "members"]


def test_lanes_run_side_by_side():
    r = _runner()
    gate = Gate()
    r.submit("s1", "what-if", gate, "engine", lane="engine")
    assert gate.started.wait(TIMEOUT)
    assert r.submit("s2", "uncertainty", lambda: "members", lane="members").result(TIMEOUT) == "members"
    gate.release.set()
    with pytest.raises(ValueError, match="unknown lane"):
        r.submit("s1", "what-if", gate, 1, lane="nope")


def test_store_shares_outcomes_and_close_stops_its_members(world):
    """Two sessions asking the same thing share one outcome; a closed session's members stop at once."""
    from dashboard.runner import RUNNER
    from dashboard.state import DashboardState
    from dashboard.store import ResultStore

    RUNNER.clear_cache()
    state1, state2 = DashboardState(world=world), DashboardState(world=world)
    s1 = ResultStore(state1, world=world)
    s2 = ResultStore(state2, world=world)
    assert s2.result is s1.result  # the second session's first page came from the shared cache
    state1.A = 7
    state2.A = 7
    assert s2.result is s1.result and s1.result.perturbation["A"] == pytest.approx(0.07)
    state1.source = state2.source = "twin_truth"  # the test world's ensemble source
    key = s1._uncertainty_key()
    assert key is not None and s1._compute_uncertainty(key, s1._requested) is not None
    state1.A = 8
    s1.close()
    assert s1.closed and RUNNER.is_closed(s1.session_id)
    assert s1._compute_uncertainty(s1._uncertainty_key(), s1._requested) is None  # stopped before any member
    assert RUNNER.submit(s1.session_id, "what-if", lambda: 1).cancelled()
    assert not RUNNER.is_closed(s2.session_id)


def test_background_lanes_run_at_lower_priority():
    import os

    r = Runner((Lane("engine", 1), Lane("members", 1, nice=10)))
    tid = r.submit("s", "uncertainty", threading.get_native_id, lane="members").result(TIMEOUT)
    main = r.submit("s", "what-if", threading.get_native_id, lane="engine").result(TIMEOUT)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, tid) == min(19, base + 10)
    assert os.getpriority(os.PRIO_PROCESS, main) == base


def test_served_engine_lane_solves_two_sessions_at_once(monkeypatch):
    """The served lanes give the slider solves two workers: a second session's step starts while the
    first one's is still running (the engine solves outside its cache lock, tests/products/
    test_whatif_threads.py); PRODA_ENGINE_THREADS sets the count and refuses nonsense."""
    from dashboard.runner import LANES, engine_threads

    assert next(lane for lane in LANES if lane.name == "engine").threads == 2
    r = Runner(tuple(lane for lane in LANES if lane.name == "engine"))
    first, second = Gate(), Gate()
    r.submit("s1", "what-if", first, 1, lane="engine")
    r.submit("s2", "what-if", second, 2, lane="engine")
    assert first.started.wait(TIMEOUT) and second.started.wait(TIMEOUT)
    first.release.set()
    second.release.set()
    monkeypatch.setenv("PRODA_ENGINE_THREADS", "1")
    assert engine_threads() == 1
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("PRODA_ENGINE_THREADS", bad)
        with pytest.raises(ValueError, match="PRODA_ENGINE_THREADS"):
            engine_threads()


def test_latest_follower_runs_one_loop_at_a_time(monkeypatch):
    """Calls while a view's query loop runs return at once (the loop re-asks with the newest request);
    after it ends, the next call starts a new loop; a loop that raises frees the follower too."""
    import asyncio

    import dashboard.runner as runner_mod

    loops: list[tuple] = []
    gate: dict[str, asyncio.Event] = {}

    async def fake_follow(*args, **kwargs):
        loops.append(args)
        await gate["release"].wait()
        if kwargs.get("boom"):
            raise RuntimeError("boom")

    monkeypatch.setattr(runner_mod, "follow_latest", fake_follow)

    async def scenario() -> None:
        release = gate["release"] = asyncio.Event()
        follow = runner_mod.LatestFollower()
        first = asyncio.ensure_future(follow("a"))
        await asyncio.sleep(0)
        assert follow.running and loops == [("a",)]
        await asyncio.wait_for(follow("b"), 1)  # returns at once: the running loop covers it
        assert loops == [("a",)]
        release.set()
        await first
        assert not follow.running
        await follow("c")
        assert loops == [("a",), ("c",)]
        with pytest.raises(RuntimeError):
            await follow("d", boom=True)
        assert not follow.running

    # in a thread of its own: other tests of the session may leave this thread's event loop running
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(scenario())
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(TIMEOUT)
    assert not t.is_alive() and not errors, errors


def test_shutdown_drops_queued_work_lets_the_running_job_finish_and_ends_every_worker():
    r = _runner()
    gate = Gate()
    running = r.submit("s1", "what-if", gate, "running", key=("k", 1))
    assert gate.started.wait(TIMEOUT)
    queued = r.submit("s2", "what-if", gate, "queued", key=("k", 2))
    threads = list(r._threads)
    assert len(threads) == 2 and all(t.is_alive() for t in threads)
    left = concurrent.futures.ThreadPoolExecutor(1).submit(r.shutdown, TIMEOUT)
    gate.release.set()
    assert left.result(TIMEOUT) == 0  # every worker ended
    assert not any(t.is_alive() for t in threads)
    assert running.result(TIMEOUT) == "running"  # not interrupted; its result is kept for the cache
    assert queued.cancelled() and gate.calls == ["running"]  # the queued job was never solved
    assert r.cached(("k", 1)) and r.pending() == 0
    assert r.submit("s3", "what-if", gate, "late").cancelled()  # nothing new after shutdown


def test_the_served_runner_ends_its_workers_at_exit():
    """In a fresh interpreter: an exit handler registered before the runner is imported runs after the
    runner's own (handlers run last-in first-out) and counts the runner's live worker threads."""
    import subprocess
    import sys

    code = (
        "import atexit, threading\n"
        "atexit.register(lambda: print('alive', sum(t.name.startswith('proda-') and t.is_alive()"
        " for t in threading.enumerate())))\n"
        "from dashboard.runner import RUNNER\n"
        "print('result', RUNNER.submit('s', 'what-if', sum, range(1000)).result(60))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["result", str(sum(range(1000))), "alive", "0"], out.stdout
