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


def activate_tool(page: Page, scope: str, tool: str, tries: int = 3) -> None:
    """Switch on a Bokeh toolbar tool (``tool`` as in ``bk-tool-icon-<tool>``) inside ``scope`` and wait
    until its button says so (``bk-active`` on the button, the icon's shadow host).

    A click that lands while the page is still laying out can be lost; a person would click again, so
    this does, up to ``tries`` times, and fails naming the tool otherwise.
    """
    icon = page.locator(f"{scope} .bk-tool-icon-{tool}").first

    def active() -> bool:
        return "bk-active" in icon.evaluate("e => e.getRootNode().host.className")

    for _ in range(tries):
        if active():  # checked before each click: a late first click must not be toggled off again
            return
        icon.click()
        for _ in range(20):
            if active():
                return
            page.wait_for_timeout(100)
    raise AssertionError(f"the {tool} tool in {scope} did not become active after {tries} clicks")


def settled_box(page: Page, selector: str, checks: int = 3, gap_ms: int = 150) -> dict:
    """The bounding box of ``selector`` once it stopped moving (``checks`` equal reads ``gap_ms`` apart):
    mouse gestures at page coordinates must not land on a layout that is still shifting."""
    loc = page.locator(selector).first
    last, same = None, 0
    for _ in range(100):
        box = loc.bounding_box()
        same = same + 1 if box == last and box is not None else 0
        if same >= checks:
            return box
        last = box
        page.wait_for_timeout(gap_ms)
    raise AssertionError(f"{selector} kept moving: last box {last}")
