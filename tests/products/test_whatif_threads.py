"""What-if engine under threads: two threads solve at once (per-thread work arrays, the caches lock
themselves) and get exactly the numbers a serial engine gets; one key is solved once."""

import threading
from pathlib import Path

import numpy as np
import pytest

from proda_engine import api
from proda_engine.products.whatif import WhatIfEngine

FIX = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "clm5" / "case.clm2.h0.clim.nc"

#: Multiplier-space requests (deterministic: the bulk root solve's start depends on earlier requests),
#: touching every cached piece: decay rates (K, Xi), transport (V), input profile (I), inputs (NPP), CUE (A).
REQUESTS = [{"K": 0.1}, {"A": -0.05}, {"Xi": 0.2}, {"V": -0.3}, {"I": 0.15}, {"NPP": 0.1}, {"K": -0.2, "V": 0.1},
            {"A": 0.03, "I": -0.1}, {"Xi": -0.1, "NPP": -0.2}, {"K": 0.05}]


def _engine() -> WhatIfEngine:
    ds = api.read_forcing(FIX)
    n = int(ds["valid"].sum())
    rng = np.random.default_rng(3)
    return WhatIfEngine(ds, {"twin": rng.uniform(0.3, 0.7, (n, 21))}, cache_size=4)


def _numbers(res) -> dict[str, np.ndarray]:
    out = {f"stock {k}": v for k, v in res.stocks.items()}
    out.update({f"cue {k}": v for k, v in res.cue.items()})
    out.update({f"diag {k}": v for k, v in res.diagnostics.items()})
    out.update(soc=res.soc, status=res.status, valid=res.valid)
    return out


def _assert_same(a, b, what: str) -> None:
    na, nb = _numbers(a), _numbers(b)
    assert na.keys() == nb.keys()
    for k in na:
        np.testing.assert_array_equal(na[k], nb[k], err_msg=f"{what}: {k}")


@pytest.fixture(scope="module")
def serial():
    eng = _engine()
    return {i: eng.cell_results("twin", r, space="multiplier") for i, r in enumerate(REQUESTS)}


def _run_threads(eng: WhatIfEngine, jobs: list[list[int]]) -> tuple[dict[tuple[int, int], object], list]:
    """Each thread solves its list of request indices; a barrier starts them together."""
    got, errors = {}, []
    barrier = threading.Barrier(len(jobs))

    def work(t: int, idx: list[int]) -> None:
        try:
            barrier.wait()
            for i in idx:
                got[(t, i)] = eng.cell_results("twin", REQUESTS[i], space="multiplier")
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t, idx)) for t, idx in enumerate(jobs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    return got, errors


def test_two_threads_solve_what_a_serial_engine_solves(serial):
    """Two threads on one engine, different requests interleaved (a small result cache, so most are
    solved while the other thread solves too): every result equals the serial engine's, bit for bit."""
    eng = _engine()
    jobs = [list(range(0, len(REQUESTS), 2)) * 2, list(range(1, len(REQUESTS), 2)) * 2]
    got, errors = _run_threads(eng, jobs)
    assert not errors, errors
    assert len(got) == len(REQUESTS)
    for (_, i), res in got.items():
        _assert_same(res, serial[i], f"request {REQUESTS[i]}")
    # both threads kept their own work arrays: the engine holds no shared one any more
    assert not hasattr(eng, "_work") and not hasattr(eng, "_scratch")


def test_one_key_asked_by_two_threads_is_solved_once(serial):
    eng = _engine()
    eng.baseline("twin")
    before = eng.stats["solves"]
    got, errors = _run_threads(eng, [[0], [0], [0]])
    assert not errors, errors
    assert eng.stats["solves"] - before == 1
    results = list(got.values())
    assert all(r is results[0] for r in results)
    _assert_same(results[0], serial[0], "joined")


def test_bulk_requests_from_two_threads_realise_their_changes():
    """Bulk space from two threads (shared root-solve history): each realises its own request."""
    eng = _engine()
    got, errors = {}, []

    def work(mech: str, value: float) -> None:
        try:
            got[mech] = eng.what_if({mech: value}, space="bulk")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=a) for a in (("K", 0.1), ("V", -0.2))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    assert abs(got["K"].realised["K"] - 0.1) <= 5e-4
    assert abs(got["V"].realised["V"] + 0.2) <= 5e-4
