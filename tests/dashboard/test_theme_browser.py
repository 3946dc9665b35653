"""Both themes read: text against what it is drawn on, measured in a real browser (WCAG contrast ratio).

The dashboard's own colours come from Panel's theme variables (dashboard.style); this checks the result
where a person sees it, on the default theme and on ``?theme=dark``: the card numbers, their secondary
lines, and the active tab's label (Bokeh's tab strip kept a near-black label on the dark theme).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page

from .helpers import open_app

pytestmark = pytest.mark.ui

_NUM = r"[-+0-9.e]+"


def parse_css_color(text: str) -> tuple[float, float, float, float]:
    """(r, g, b, alpha) in 0..1 from a computed CSS colour: ``rgb()``, ``rgba()`` or ``color(srgb ...)``
    (what Chromium reports for ``color-mix``)."""
    text = text.strip()
    m = re.fullmatch(rf"rgba?\(({_NUM}),\s*({_NUM}),\s*({_NUM})(?:,\s*({_NUM}))?\)", text)
    if m:
        r, g, b = (float(v) / 255 for v in m.groups()[:3])
        return r, g, b, float(m.group(4)) if m.group(4) is not None else 1.0
    m = re.fullmatch(rf"color\(srgb ({_NUM}) ({_NUM}) ({_NUM})(?: / ({_NUM}))?\)", text)
    if m:
        r, g, b = (float(v) for v in m.groups()[:3])
        return r, g, b, float(m.group(4)) if m.group(4) is not None else 1.0
    raise ValueError(f"unparsed CSS colour {text!r}")


def _luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (components 0..1)."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of text colour ``fg`` over an opaque background ``bg`` (a translucent text
    colour is first composited over the background, as the browser paints it)."""
    *f, a = parse_css_color(fg)
    *b, _ = parse_css_color(bg)
    painted = [a * fc + (1 - a) * bc for fc, bc in zip(f, b)]
    hi, lo = sorted((_luminance(painted), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_contrast_ratio_matches_the_wcag_examples():
    assert contrast("rgb(0, 0, 0)", "rgb(255, 255, 255)") == pytest.approx(21.0)
    assert contrast("rgb(255, 255, 255)", "rgb(255, 255, 255)") == pytest.approx(1.0)
    assert contrast("rgb(118, 118, 118)", "rgb(255, 255, 255)") == pytest.approx(4.54, abs=0.01)  # #767676
    # half-transparent black over white paints mid grey
    assert contrast("color(srgb 0 0 0 / 0.5)", "rgb(255, 255, 255)") == pytest.approx(
        contrast("rgb(127.5, 127.5, 127.5)", "rgb(255, 255, 255)"))


_READ = """() => {
  const deep = (root, sel) => {  // querySelector through open shadow roots
    const hit = root.querySelector(sel); if (hit) return hit;
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) { const h = deep(el.shadowRoot, sel); if (h) return h; }
    }
    return null;
  };
  const bg = el => {  // the first opaque background at or above el (crossing shadow hosts)
    for (let e = el; e; e = e.parentElement || (e.getRootNode() && e.getRootNode().host)) {
      const c = getComputedStyle(e).backgroundColor;
      if (c && !/rgba\\(0, 0, 0, 0\\)|transparent/.test(c)) return c;
    }
    return getComputedStyle(document.body).backgroundColor;
  };
  const pair = sel => { const e = deep(document, sel); return e ? [getComputedStyle(e).color, bg(e)] : null; };
  return {value: pair('.proda-card-value'), sub: pair('.proda-card-sub'), title: pair('.proda-card-title'),
          tab: pair('.bk-tab.bk-active')};
}"""


@pytest.mark.parametrize("theme", ["default", "dark"])
def test_text_reads_on_both_themes(page: Page, served, wait, artifacts, theme):
    url, apps = served
    app = open_app(page, f"{url}?theme={theme}", apps, wait)
    wait(lambda: app.store.result is not None, page, what="the first result")
    page.locator(".bk-tab.bk-active").first.wait_for(timeout=20_000)  # the chart row is deferred
    pairs = page.evaluate(_READ)
    assert all(pairs[k] is not None for k in pairs), pairs
    ratios = {k: contrast(*pairs[k]) for k in pairs}
    # WCAG AA for normal text: 4.5:1, the secondary lines included (they are small)
    assert min(ratios.values()) >= 4.5, (theme, ratios, pairs)
    page.screenshot(path=str(artifacts / f"dashboard-theme-{theme}.png"))
