"""Helpers shared by the real-browser test modules."""

from __future__ import annotations

from playwright.sync_api import Page, expect


def open_app(page: Page, url: str, apps: list, wait, n: int = 1):
    """Open ``url``, wait until the server built the session's app (the n-th) and the map is drawn."""
    page.goto(url)
    wait(lambda: len(apps) >= n, page, what="the session's app")
    app = apps[n - 1]
    expect(page.locator(".bk-Canvas").first).to_be_visible(timeout=20_000)
    return app
