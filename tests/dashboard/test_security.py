"""A shared link or an uploaded file never runs code in the viewer's page (real Chromium, served app).

Each payload tries to call ``alert()`` and to set ``document.title``; a test fails if any dialog opens,
the title changes, or an injected ``<img>``/``<svg>``/``<script>`` element appears anywhere in the page
(Playwright's CSS locators pierce Panel's shadow roots). The server runs with the options
``proda serve`` uses (security headers and CSP included, see ``conftest.served``).
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest
from playwright.sync_api import Page, expect

from dashboard.app import CONTENT_SECURITY_POLICY, TITLE
from dashboard.state import MECHANISMS, URL_PARAMS

from .helpers import open_app

pytestmark = pytest.mark.ui

#: Payload families: a script element, an event handler on an element, an attribute break-out with
#: SVG and a Markdown ``javascript:`` link. Each would set the title and open a dialog if it ran.
PAYLOADS = {
    "script": "<script>document.title='pwned';alert('script')</script>",
    "img": "<img src=x onerror=\"document.title='pwned';alert('img')\">",
    "svg": "\"><svg onload=\"document.title='pwned';alert('svg')\">[x](javascript:alert('md'))",
}

#: What an injected element would look like in the DOM (none may exist).
INJECTED = "img[src='x'], svg[onload], [onerror*='pwned'], [onload*='pwned'], a[href^='javascript']"


class Guard:
    """Records every dialog (and dismisses it) and the page title; :meth:`check` asserts nothing ran."""

    def __init__(self, page: Page) -> None:
        self.page, self.dialogs, self.csp_violations = page, [], []
        page.on("dialog", self._on_dialog)
        # the page must work under the served policy: any violation is a policy/app mismatch
        page.on("console", lambda m: self.csp_violations.append(m.text) if "Content Security Policy" in m.text
                else None)

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def check(self) -> None:
        assert self.dialogs == [], f"a payload opened dialogs: {self.dialogs}"
        assert self.page.title() == TITLE
        assert self.page.evaluate("document.title") == TITLE
        assert self.page.locator(INJECTED).count() == 0, "an injected element is in the page"
        assert self.page.locator("script:has-text('pwned')").count() == 0
        assert self.csp_violations == [], self.csp_violations[:3]




#: Records every notification toast the page ever shows (also in open shadow roots): a toast lives 8 s,
#: and on a loaded machine the page may take longer than that to settle before the test looks.
_TOAST_RECORDER = """
window.__toasts = [];
const __watch = (root) => new MutationObserver((ms) => {
  for (const m of ms) for (const n of m.addedNodes) {
    if (n.nodeType !== 1) continue;
    if (n.shadowRoot) __watch(n.shadowRoot);
    const found = n.matches('.notyf__toast') ? [n] : [...n.querySelectorAll('.notyf__toast')];
    for (const el of found) window.__toasts.push(el);
  }
}).observe(root, {childList: true, subtree: true});
const __attach = Element.prototype.attachShadow;
Element.prototype.attachShadow = function (init) { const r = __attach.call(this, init); __watch(r); return r; };
__watch(document);
"""


def _toasts(page: Page) -> list[str]:
    """Text of every toast shown since the page opened (see :data:`_TOAST_RECORDER`)."""
    return page.evaluate("window.__toasts.map((el) => el.textContent || '')")


def _link(base: str, query: dict[str, str]) -> str:
    return f"{base}?{urllib.parse.urlencode(query)}"


@pytest.mark.parametrize("family", list(PAYLOADS))
def test_payload_in_every_url_key_is_ignored_and_shown_as_text(page: Page, served, wait, artifacts, family):
    url, apps = served
    payload = PAYLOADS[family]
    guard = Guard(page)
    page.add_init_script(_TOAST_RECORDER)
    keys = [*URL_PARAMS.values(), "theme"]
    app = open_app(page, _link(url, dict.fromkeys(keys, payload)), apps, wait)
    s = app.state
    # every key fell back to its default
    assert (s.region, s.depth, s.variable, s.sites) == ("globe", "0-100cm", "soc_stock", False)
    assert all(getattr(s, m) == 0 for m in MECHANISMS)
    assert app.store.result.totals["region"] == "Globe"
    # one notice naming the keys (never the values), as text in the alert and a notification
    msg = app.store.message
    assert msg.startswith("Link settings ignored") and all(k in msg for k in keys) and "<" not in msg
    alert = page.locator(".proda-alert").first
    expect(alert).to_contain_text("Link settings ignored")
    expect(alert).to_contain_text("region")
    wait(lambda: len(_toasts(page)) >= 1, page, what="the notice's notification")
    page.wait_for_timeout(300)
    toasts = _toasts(page)
    assert len(toasts) == 1 and "Link settings ignored" in toasts[0], toasts  # exactly one notification: the notice
    # the URL now carries the state's own values, not the payload
    wait(lambda: "pwned" not in urllib.parse.unquote(page.url), page, what="URL rewritten from the state")
    assert "region=globe" in page.url
    page.wait_for_timeout(500)  # let any late render (notifications, deferred rows) happen
    guard.check()
    page.screenshot(path=str(artifacts / f"security-url-{family}.png"))


def test_issue_link_and_malformed_values_fall_back_with_one_notice(browser, served, wait, artifacts):
    """The reported link (an unknown region with a script) and malformed or out-of-range values next to
    valid ones: the valid ones apply, each bad key falls back, one notice names only the bad keys."""
    url, apps = served
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        guard = Guard(page)
        app = open_app(page, _link(url, {"region": "<script>alert('x')</script>"}), apps, wait, n=1)
        assert app.state.region == "globe" and app.store.message.endswith("region. The defaults are shown for them.")
        expect(page.locator(".proda-alert").first).to_contain_text("Link settings ignored")
        guard.check()

        query = {"A": "51", "K": "-51", "Xi": "²", "V": "5.5", "I": "nan", "NPP": "10", "depth": "1m",
                 "variable": "soc_change", "source": "no_such_source", "sites": "maybe",
                 "region": "box:1,2,3", "theme": "dark"}
        page2 = ctx.new_page()
        guard2 = Guard(page2)
        app2 = open_app(page2, _link(url, query), apps, wait, n=2)
        s = app2.state
        assert (s.NPP, s.variable) == (10, "soc_change")  # the valid values apply
        assert (s.A, s.K, s.Xi, s.V, s.I, s.depth, s.region, s.sites) == (0, 0, 0, 0, 0, "0-100cm", "globe", False)
        notice = app2.store.message
        assert notice == ("Link settings ignored (unknown or malformed value): region, depth, source, sites, "
                          "A, K, Xi, V, I. The defaults are shown for them.")
        assert app2.store.result.totals["change_pct"] == pytest.approx(10.0, rel=1e-6)
        expect(page2.locator(".proda-alert").first).to_contain_text("Xi")
        guard2.check()
        page2.screenshot(path=str(artifacts / "security-url-malformed.png"))
    finally:
        ctx.close()


def test_security_headers_are_served(served):
    url, _ = served
    with urllib.request.urlopen(url, timeout=20) as r:
        headers = r.headers
        body = r.read().decode()
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "object-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    assert f"<title>{TITLE}</title>" in body


def _upload(page: Page, name: str, data: bytes, mime: str = "application/geo+json") -> None:
    page.locator("input[type=file]").set_input_files({"name": name, "mimeType": mime, "buffer": data})


def test_payload_uploads_are_text_or_refused_and_the_server_keeps_serving(browser, page: Page, served, wait,
                                                                          artifacts):
    url, apps = served
    guard = Guard(page)
    app = open_app(page, url, apps, wait)

    # 1. a valid polygon whose file name and properties carry payloads: selected, its name shown as text
    ring = [[6.0, 45.5], [8.5, 45.5], [8.5, 47.5], [6.0, 47.5], [6.0, 45.5]]
    feature = {"type": "Feature", "properties": {"name": PAYLOADS["script"], "description": PAYLOADS["img"],
                                                 "license": PAYLOADS["svg"]},
               "geometry": {"type": "Polygon", "coordinates": [ring]}}
    name = "<img src=x onerror=\"document.title='pwned';alert(1)\">.geojson"
    _upload(page, name, json.dumps({"type": "FeatureCollection", "features": [feature]}).encode())
    wait(lambda: app.state.region.startswith("polygon:")
         and app.store.result.totals["region"].startswith("upload <img"), page, what="payload-named polygon solved")
    assert app.store.message == ""
    expect(page.locator(".card-total").first).to_contain_text("upload <img src=x onerror=")  # visible as text
    option = page.locator("select option", has_text="upload <img src=x")
    expect(option).to_have_count(1)
    page.wait_for_timeout(300)
    guard.check()

    # 2. refused files: each gives a plain message, the polygon stays selected, nothing runs
    refused = [
        ("<svg onload=alert(1)>.json", b'{"type": "<script>alert(1)</script>", ', "not a GeoJSON file"),
        ("nested.json", b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
        ("big.geojson", b'{"type": "Polygon", "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}', "too large"),
        ("nan.geojson", b'{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [NaN, 0]]]}',
         "not a number"),
        ("far.geojson", json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [1e9, 0], [1, 1], [0, 0]]]}).encode(),
         "lon/lat degrees"),
        ("text.geojson", json.dumps({"type": "Polygon", "coordinates": [[[0, 0], ["<img src=x>", 0], [1, 1],
                                                                          [0, 0]]]}).encode(), "finite numbers"),
    ]
    for fname, data, expected in refused:
        _upload(page, fname, data)
        wait(lambda e=expected: e in app.store.message, page, what=f"refusal of {fname}")
        assert app.store.message.startswith("GeoJSON upload failed")
        expect(page.locator(".proda-alert").first).to_contain_text(expected)
        assert app.state.region.startswith("polygon:")
    page.wait_for_timeout(300)
    guard.check()
    page.screenshot(path=str(artifacts / "security-upload.png"))

    # 3. the server still serves: a second session loads and solves
    ctx = browser.new_context()
    try:
        page2 = ctx.new_page()
        guard2 = Guard(page2)
        app2 = open_app(page2, url, apps, wait, n=2)
        assert app2.store.result.totals["total_pg"] > 0 and app2.store.message == ""
        guard2.check()
    finally:
        ctx.close()
    # and the first session is still alive: a slider step solves
    page.locator(".noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    wait(lambda: app.store.result.perturbation.get("A") == pytest.approx(0.01), page, what="first session solves")
