"""Many viewers at once, in real Chromium pages on one threaded server (issue 16): sessions stepping
different sliders at the same time each end in their own state, and an engine failure in one session's
request is a message in that session only while another session keeps updating."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from dashboard.runner import RUNNER
from proda_engine import api

from .helpers import open_app

pytestmark = pytest.mark.ui


def _pages(browser, n: int):
    contexts = [browser.new_context(viewport={"width": 1300, "height": 1000}) for _ in range(n)]
    return contexts, [c.new_page() for c in contexts]


def test_three_sessions_at_once_each_end_in_their_own_state(browser, served, wait):
    url, apps = served
    contexts, pages = _pages(browser, 3)
    try:
        sessions = [open_app(p, url, apps, wait, n=i + 1) for i, p in enumerate(pages)]
        plan = [(0, "A", "ArrowRight", 4), (1, "K", "ArrowLeft", 3), (4, "I", "ArrowRight", 5)]  # slider index
        for page, (idx, _, _, _) in zip(pages, plan):
            page.locator(".noUi-handle").nth(idx).focus()
        # interleaved key presses: the three sessions' requests overlap in the server
        for step in range(max(n for *_, n in plan)):
            for page, (_, _, key, n) in zip(pages, plan):
                if step < n:
                    page.keyboard.press(key)
        for page, app, (_, mech, key, n) in zip(pages, sessions, plan):
            want = (n if key == "ArrowRight" else -n) / 100
            wait(lambda app=app, mech=mech, want=want: not app.store.busy
                 and app.store.result.perturbation[mech] == pytest.approx(want), page, timeout=60,
                 what=f"{mech} {want:+.2f} solved in its own session")
        for app, (_, mech, key, n) in zip(sessions, plan):
            want = {m: 0.0 for m in api.mechanisms()} | {mech: (n if key == "ArrowRight" else -n) / 100}
            assert app.store.result.perturbation == pytest.approx(want)
            assert app.store.message == ""
        expect(pages[1].locator(".realised-K").first).to_contain_text("K̄ -3.0 %")
    finally:
        for c in contexts:
            c.close()


def test_engine_failure_in_one_session_stays_there(browser, served, wait, monkeypatch):
    url, apps = served
    contexts, pages = _pages(browser, 2)
    real = api.what_if

    def failing(perturbation=None, **kw):
        if perturbation and perturbation.get("V") == pytest.approx(0.02):  # only session 2's request
            raise RuntimeError("injected engine failure")
        return real(perturbation, **kw)

    try:
        a1 = open_app(pages[0], url, apps, wait, n=1)
        a2 = open_app(pages[1], url, apps, wait, n=2)
        monkeypatch.setattr(api, "what_if", failing)
        RUNNER.clear_cache()
        pages[0].locator(".noUi-handle").first.focus()
        pages[1].locator(".noUi-handle").nth(3).focus()  # V̄
        pages[1].keyboard.press("ArrowRight")
        pages[1].keyboard.press("ArrowRight")
        for _ in range(3):
            pages[0].keyboard.press("ArrowRight")
        wait(lambda: "injected engine failure" in a2.store.message, pages[1], timeout=60, what="session 2's message")
        expect(pages[1].locator(".proda-alert").first).to_contain_text("injected engine failure")
        wait(lambda: a1.store.result.perturbation["A"] == pytest.approx(0.03), pages[0], timeout=60,
             what="session 1 kept updating")
        assert a1.store.message == ""
        expect(pages[0].locator(".proda-alert").first).to_be_hidden()
        # the failing session recovers with its next position, and the server still serves new pages
        pages[1].keyboard.press("ArrowRight")
        wait(lambda: a2.store.result.perturbation["V"] == pytest.approx(0.03), pages[1], timeout=60,
             what="session 2 recovered")
        for _ in range(2):
            pages[0].keyboard.press("ArrowRight")
        wait(lambda: a1.store.result.perturbation["A"] == pytest.approx(0.05), pages[0], timeout=60,
             what="session 1 still updating")
    finally:
        for c in contexts:
            c.close()
