"""Faults stay local, at the level of the served app (issue 16): real sessions of a threaded Panel server,
opened and closed by Bokeh clients (a browser tab's websocket without the browser), changed on the server's
event loop as a widget change would be. A session closed while its step is queued or solving frees its work
(the runner drops the queued job, a running one finishes for the cache only); an engine exception in one
session's request is a message in that session only."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterator

import pytest

from dashboard.runner import RUNNER
from proda_engine import api

from .conftest import serve_threaded


@pytest.fixture
def served_clients(world: str) -> Iterator[tuple[str, list, list]]:
    """A threaded server (``proda serve``'s options) whose sessions are destroyed 0.3 s after their last
    connection closes; yields (url, apps, docs) with each session's app and server-side document."""
    import panel as pn

    from dashboard.app import build_app

    apps, docs = [], []

    def factory():
        app = build_app(world)
        apps.append(app)
        docs.append(pn.state.curdoc)
        return app.template

    server, url = serve_threaded(factory, unused_session_lifetime_milliseconds=300,
                                 check_unused_sessions_milliseconds=100)
    try:
        yield url, apps, docs
    finally:
        server.stop()
        server.join(10)
        pn.state.reset()


class _Client:
    """A Bokeh client session (a tab's websocket), opened and closed on a thread of its own with its own event
    loop: the sync Playwright of the browser tests leaves a running loop in the test thread."""

    def __init__(self, url: str) -> None:
        from bokeh.client import pull_session

        self.pool = concurrent.futures.ThreadPoolExecutor(1, initializer=lambda: asyncio.set_event_loop(
            asyncio.new_event_loop()))
        self.session = self.pool.submit(pull_session, url=url).result(120)

    def close(self) -> None:
        try:
            self.pool.submit(self.session.close).result(60)
        finally:
            self.pool.shutdown(wait=False)


def _open(url: str, apps: list, n: int, wait_until):
    """Pull a client session (the server builds the n-th app) and wait until its first result is shown."""
    session = _Client(url)
    wait_until(lambda: len(apps) >= n and apps[n - 1].store.result is not None, timeout=60,
               what=f"session {n} built")
    return session


def _set(doc, state, **values) -> None:
    """Change a session's state on the server's event loop, in its document (as a widget change arrives)."""
    doc.add_next_tick_callback(lambda: state.param.update(**values))


class _Gate:
    """``api.what_if`` that holds every perturbed solve until released (records what was asked)."""

    def __init__(self, real) -> None:
        self.real, self.release, self.calls, self.lock = real, threading.Event(), [], threading.Lock()

    def __call__(self, perturbation=None, **kw):
        asked = {k: round(v, 4) for k, v in (perturbation or {}).items() if v}
        with self.lock:
            self.calls.append(asked)
        if asked:
            self.release.wait(60)
        return self.real(perturbation, **kw)

    def running(self) -> int:
        with self.lock:
            return sum(1 for c in self.calls if c)


def test_a_closed_session_frees_its_queued_and_running_work(served_clients, monkeypatch, wait):
    wait_until = wait
    url, apps, docs = served_clients
    clients = [_open(url, apps, n, wait) for n in (1, 2, 3, 4)]
    workers = RUNNER.lanes["engine"].threads
    gate = _Gate(api.what_if)
    monkeypatch.setattr(api, "what_if", gate)
    RUNNER.clear_cache()
    try:
        # sessions 2.. take every engine worker (held in the gate); session 1's step then waits in the queue
        busy = [(2, "K"), (3, "V"), (4, "I")][:workers]
        for n, mech in busy:
            _set(docs[n - 1], apps[n - 1].state, **{mech: 2})
        wait_until(lambda: gate.running() == len(busy), timeout=30, what="every engine worker solving")
        pending = RUNNER.pending("engine")
        _set(docs[0], apps[0].state, A=3)
        wait_until(lambda: RUNNER.pending("engine") == pending + 1, timeout=30, what="session 1's step queued")
        versions = {n: apps[n - 1].store.version for n in (1, 2)}
        # close session 1 (queued step) and session 2 (its step is solving): the tabs go away
        clients[0].close()
        clients[1].close()
        wait_until(lambda: apps[0].store.closed and apps[1].store.closed, timeout=30, what="both sessions destroyed")
        assert RUNNER.is_closed(apps[0].store.session_id) and RUNNER.is_closed(apps[1].store.session_id)
        assert RUNNER.pending("engine") == pending  # session 1's queued job was dropped, not left to run
        gate.release.set()
        for n, mech in busy[1:]:  # the sessions still open get their own results
            wait_until(lambda n=n, mech=mech: apps[n - 1].store.result.perturbation[mech] == pytest.approx(0.02),
                       timeout=60, what=f"session {n}'s {mech} +2 %")
            assert apps[n - 1].store.message == ""
        wait_until(lambda: RUNNER.pending("engine") == 0, timeout=30, what="the queue drained")
        time.sleep(0.5)
        assert {"A": 0.03} not in gate.calls  # the closed session's queued step was never solved
        # the running solve of the closed session finished for the shared cache, not for its session
        store2 = apps[1].store
        assert RUNNER.cached(store2._outcome_key(store2._request()))
        assert apps[1].store.version == versions[2] and apps[1].store.result.perturbation["K"] == 0.0
        assert apps[0].store.version == versions[1] and apps[0].store.result.perturbation["A"] == 0.0
    finally:
        gate.release.set()
        for c in clients[2:]:
            c.close()


def test_an_engine_failure_is_a_message_in_its_own_session_only(served_clients, monkeypatch, wait):
    wait_until = wait
    url, apps, docs = served_clients
    clients = [_open(url, apps, n, wait) for n in (1, 2)]
    real = api.what_if

    def failing(perturbation=None, **kw):
        if (perturbation or {}).get("V") == pytest.approx(0.02):
            raise RuntimeError("injected engine failure")
        return real(perturbation, **kw)

    monkeypatch.setattr(api, "what_if", failing)
    RUNNER.clear_cache()
    try:
        _set(docs[0], apps[0].state, V=2)
        _set(docs[1], apps[1].state, K=2)
        wait_until(lambda: "injected engine failure" in apps[0].store.message, timeout=60, what="session 1's message")
        wait_until(lambda: apps[1].store.result.perturbation["K"] == pytest.approx(0.02), timeout=60,
                   what="session 2's result")
        assert apps[1].store.message == ""
        assert apps[0].store.result.perturbation["V"] == 0.0  # the last good result stays on screen
        # the failing session recovers with its next position; the other keeps updating
        _set(docs[0], apps[0].state, V=3)
        _set(docs[1], apps[1].state, K=3)
        wait_until(lambda: apps[0].store.result.perturbation["V"] == pytest.approx(0.03), timeout=60,
                   what="session 1 recovered")
        wait_until(lambda: apps[1].store.result.perturbation["K"] == pytest.approx(0.03), timeout=60,
                   what="session 2 still updating")
        assert apps[0].store.message == "" and apps[1].store.message == ""
    finally:
        for c in clients:
            c.close()


def test_an_app_built_beside_a_session_being_built_stays_inline(world, wait):
    """An app built outside any session (a notebook beside a running server; these unit tests beside the
    browser tests' threaded servers) solves inline, even while a server thread is building a session:
    Panel's ``state.curdoc`` falls back to Bokeh's process-wide stack of patched documents, so it can return
    the other thread's session document."""
    from dashboard.app import build_app

    building, release, apps = threading.Event(), threading.Event(), []

    def factory():
        building.set()
        release.wait(60)  # hold the server thread inside the session's build
        app = build_app(world)
        apps.append(app)
        return app.template

    server, url = serve_threaded(factory)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        opening = pool.submit(_Client, url)
        assert building.wait(60), "the server never started building the session"
        app = build_app(world)  # this thread, while the server's thread is in the middle of its build
        assert not app.store.background
        app.state.A = 5  # inline: the result is there when the assignment returns
        assert app.store.result.perturbation["A"] == pytest.approx(0.05)
        release.set()
        client = opening.result(120)
        wait(lambda: apps and apps[0].store.background, what="the served session's app")  # it is served
        client.close()
    finally:
        release.set()
        pool.shutdown(wait=False)
        server.stop()
        server.join(10)
