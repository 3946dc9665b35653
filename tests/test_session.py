"""The world session under the front doors: one build per world under concurrent calls, LRU, clearing;
the front doors' public functions show their real signatures."""

import inspect
import threading
import time

import pytest

from proda_engine import api, scenario_api, session
from proda_engine.session import WorldCache, world_cache


class _Builds:
    """A build function that records its calls and can be held open to let other threads pile up."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()

    def __call__(self, world: str | None = None) -> dict:
        with self.lock:
            self.calls.append(world)
        self.release.wait(timeout=30)
        return {"world": world}


def test_concurrent_first_calls_build_a_world_once():
    builds = _Builds()
    builds.release.clear()
    cache = WorldCache(builds, maxsize=4)
    out: list[dict] = []
    threads = [threading.Thread(target=lambda: out.append(cache("tiny"))) for _ in range(8)]
    for t in threads:
        t.start()
    while not builds.calls:  # the first build has started; the others must wait for it
        time.sleep(0.001)
    builds.release.set()
    for t in threads:
        t.join(timeout=30)
    assert builds.calls == ["tiny"]
    assert len(out) == 8 and all(o is out[0] for o in out)


def test_other_worlds_do_not_wait_for_a_slow_build():
    builds = _Builds()
    builds.release.clear()
    cache = WorldCache(lambda w: builds(w) if w == "default" else {"world": w}, maxsize=4)
    slow = threading.Thread(target=lambda: cache("default"))
    slow.start()
    while not builds.calls:
        time.sleep(0.001)
    assert cache("tiny") == {"world": "tiny"}
    assert slow.is_alive()  # answered while "default" was still building
    builds.release.set()
    slow.join(timeout=30)


def test_none_is_the_current_world_and_lru_keeps_maxsize(monkeypatch):
    builds = _Builds()
    cache = WorldCache(builds, maxsize=2)
    monkeypatch.setenv("PRODA_WORLD", "europe")
    assert cache() is cache("europe")
    cache("tiny")
    cache("europe")  # most recently used: kept
    cache("default")  # evicts "tiny"
    cache("tiny")
    assert builds.calls == ["europe", "tiny", "default", "tiny"]


def test_clear_forgets_and_a_build_running_during_a_clear_is_not_kept():
    builds = _Builds()
    cache = WorldCache(builds, maxsize=4)
    first = cache("tiny")
    cache.cache_clear()
    assert cache("tiny") is not first
    builds.release.clear()
    t = threading.Thread(target=lambda: cache("europe"))
    t.start()
    while builds.calls[-1] != "europe":
        time.sleep(0.001)
    cache.cache_clear()
    builds.release.set()
    t.join(timeout=30)
    cache("europe")
    assert builds.calls.count("europe") == 2


def test_a_failed_build_is_not_cached():
    calls = []

    @world_cache(maxsize=4)
    def flaky(world: str | None = None) -> str:
        """Fails the first time."""
        calls.append(world)
        if len(calls) == 1:
            raise FileNotFoundError(world)
        return world

    with pytest.raises(FileNotFoundError):
        flaky("tiny")
    assert flaky("tiny") == "tiny" and calls == ["tiny", "tiny"]
    assert flaky.__doc__ == "Fails the first time." and flaky.__name__ == "flaky"


def test_front_doors_share_the_session():
    assert api.world_engine is session.world_engine and api.regions is session.regions
    assert api.scenario is scenario_api.scenario
    assert api.use_catalog is session.use_catalog and api.world_name is session.world_name
    assert list(inspect.signature(api.world_engine).parameters) == ["world"]


@pytest.mark.parametrize("module", [api, scenario_api])
def test_public_functions_show_their_real_signatures(module):
    """No public function of a front door hides its parameters behind *args / **kwargs."""
    hidden = {}
    for name in module.__all__:
        obj = getattr(module, name)
        if not callable(obj) or inspect.isclass(obj):
            continue
        kinds = {p.kind for p in inspect.signature(obj).parameters.values()}
        if kinds & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}:
            hidden[name] = str(inspect.signature(obj))
    assert not hidden, f"{module.__name__}: signatures hidden behind *args/**kwargs: {hidden}"
