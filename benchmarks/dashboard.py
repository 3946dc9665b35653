"""Dashboard latency in a real browser: first page load and slider step -> repainted map and totals.

Serves the app (``dashboard.app.serve``) in a subprocess on the chosen world (default: the globe),
drives Debian Chromium with Playwright and hooks Bokeh document changes in the page: a step's
latency runs from just before the key press to the paint (double requestAnimationFrame) after the
last document change, once the document has been quiet for 400 ms (ecosystem guide §3.6).

Two kinds of steps are reported, because they measure different things:

* *new* positions (CUE +1, +2, ... %): a cold engine solve of every land cell, plus the dashboard;
* *revisited* positions (back down again): the engine's result cache answers, so this is the
  dashboard's own cost (websocket round trip, HoloViews update, ~0.5-1 MB image, repaint).

Each step reports two times: the map and cards on screen (phase 1: the solve, realised in the units of
the bulk process) and, where the source has an ensemble, everything settled including the ± s.d. of the
members solved under the same request (phase 2).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dashboard.py [--world default] [--moves 10]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Every document change is recorded with its kind: the slider echo and the busy spinner change at
# once, the map ("data" of the image's ColumnDataSource) and the cards ("text") only after the solve.
HOOK_JS = """
() => {
  window.__changes = []; window.__paints = [];
  Bokeh.documents[0].on_change((e) => {
    const kind = e.attr || (e.constructor && e.constructor.name) || "?";
    window.__changes.push({t: performance.now(), kind: kind});
    requestAnimationFrame(() => requestAnimationFrame(() => window.__paints.push(performance.now())));
  });
}
"""

# Settled = the map data and the card text have both changed since t0, then 400 ms of quiet.
SETTLE_JS = """
async (t0) => {
  const quiet = 400, limit = 60000;
  const start = performance.now();
  while (performance.now() - start < limit) {
    await new Promise(r => setTimeout(r, 25));
    const ch = window.__changes.filter(c => c.t >= t0);
    const map = ch.some(c => c.kind === "data" || c.kind.startsWith("Column"));
    const text = ch.some(c => c.kind === "text" || c.kind === "object");
    if (map && text && performance.now() - ch[ch.length - 1].t > quiet) {
      const last = ch[ch.length - 1].t;
      const paint = window.__paints.filter(t => t >= last);
      const mapAt = ch.find(c => c.kind === "data" || c.kind.startsWith("Column")).t;
      const mapPaint = window.__paints.filter(t => t >= mapAt);
      return {latency: (paint.length ? paint[0] : last) - t0, map: (mapPaint.length ? mapPaint[0] : mapAt) - t0,
              changes: ch.length, first: ch[0].t - t0, kinds: [...new Set(ch.map(c => c.kind))].join(",")};
    }
  }
  const ch = window.__changes.filter(c => c.t >= t0);
  return {latency: NaN, map: NaN, changes: ch.length, first: NaN, kinds: [...new Set(ch.map(c => c.kind))].join(",")};
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_live(url: str, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with urllib.request.urlopen(f"{url}liveness", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"server did not answer {url}liveness within {timeout} s")


def _uncertainty_step(page, key: str, timeout: float = 60.0) -> float:
    """Seconds from a key press to the ± s.d. of the members on the change card (phase 2 of a step):
    the card first loses its ± (new numbers of another request), then gets the members' ±."""
    card = page.locator(".card-change .proda-card").first
    t0 = time.monotonic()
    page.keyboard.press(key)
    seen_plain = False
    while time.monotonic() - t0 < timeout:
        text = card.inner_text()
        seen_plain |= "±" not in text
        if seen_plain and "±" in text:
            return time.monotonic() - t0
        page.wait_for_timeout(25)
    return float("nan")


def _step(page, key: str) -> dict:
    t0 = page.evaluate("performance.now()")
    page.keyboard.press(key)
    return page.evaluate(SETTLE_JS, t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="default", help="world to serve (default: the 0.5° globe)")
    ap.add_argument("--moves", type=int, default=10, help="slider steps per kind")
    ap.add_argument("--mechanism", default="A", choices=["A", "K", "Xi", "V", "I", "NPP"],
                    help="which what-if slider to step (default A, microbial CUE)")
    ap.add_argument("--screenshot", default=None, help="save a screenshot of the loaded app here")
    ap.add_argument("--scenario", action="store_true",
                    help="also time a climate-scenario run (default 2 K / +10 %% NPP / 100 yr, with comparison)")
    ap.add_argument("--scenario-screenshot", default=None, help="save a screenshot of the scenario row here")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "PRODA_WORLD": args.world, "PRODA_DASHBOARD_WEBGL": "0",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = (f"from dashboard.app import serve; serve(port={port}, address='127.0.0.1', world={args.world!r}, "
            "liveness=True)")
    t_start = time.monotonic()
    server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    try:
        startup = _wait_live(url, timeout=900)
        print(f"world {args.world}: server up (imports, world load, warm) in {startup:.1f} s")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1250})
            loads = []
            for _ in range(3):  # the first session pays per-process costs (and a cold browser cache)
                t0 = time.monotonic()
                page.goto(url)
                page.locator(".card-total").first.wait_for(state="visible", timeout=120_000)
                page.locator(".proda-map .bk-Canvas").first.wait_for(state="visible", timeout=120_000)
                page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=120_000)
                page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
                loads.append(time.monotonic() - t0)
                # After the cards and map, the page builds its chart and scenario rows (defer_load, ~1-2 s
                # of server work): let them finish, or the next page's timing would include them.
                page.locator(".proda-tabs").first.wait_for(state="visible", timeout=120_000)
                page.wait_for_timeout(2000)
            print(f"first page load: {loads[0] * 1000:.0f} ms (first session), "
                  f"{statistics.median(loads[1:]) * 1000:.0f} ms (next sessions, median of {len(loads) - 1})")
            page.evaluate(HOOK_JS)
            page.locator(f".slider-{args.mechanism} .noUi-handle").first.focus()
            new, back = [], []
            for _ in range(args.moves):
                new.append(_step(page, "ArrowRight"))
            for _ in range(args.moves):
                back.append(_step(page, "ArrowLeft"))
            page.wait_for_timeout(3000)
            plus_minus = [_uncertainty_step(page, k) for k in ("ArrowRight", "ArrowRight", "ArrowRight")]
            if args.screenshot:  # the docs picture: a tapped profile and the scatter tab open
                box = page.locator(".proda-map .bk-Canvas").first.bounding_box()
                page.mouse.click(box["x"] + box["width"] * 0.62, box["y"] + box["height"] * 0.33)
                page.get_by_text("Observed vs modelled").first.click()
                page.wait_for_timeout(6000)
                page.screenshot(path=args.screenshot)
            if args.scenario or args.scenario_screenshot:
                page.locator(".proda-sc-compare input").first.check()
                t0 = time.monotonic()
                page.locator(".proda-run-scenario button").first.click()
                # locators pierce the shadow DOM; the summary names the committed change only when done
                page.locator(".proda-scenario-summary", has_text="committed change").first.wait_for(
                    state="visible", timeout=600_000)
                print(f"climate scenario (globe lattice, 100 yr, 3 sources) from click to summary: "
                      f"{time.monotonic() - t0:.1f} s")
                if args.scenario_screenshot:
                    page.locator(".proda-scenario-trajectory").first.scroll_into_view_if_needed()
                    page.wait_for_timeout(3000)
                    page.screenshot(path=args.scenario_screenshot)
            # stop the server first: a page closing under it made tornado log closed-socket tracebacks
            server.terminate()
            server.wait(20)
            browser.close()
        print(f"slider: {args.mechanism}")
        for name, rows in (("new position (cold engine solve)", new), ("revisited position (cached)", back)):
            if os.environ.get("PRODA_BENCH_VERBOSE"):
                print(rows)
            lat = [r["latency"] for r in rows]
            first = [r["first"] for r in rows]
            shown = [r.get("map", r["latency"]) for r in rows]
            print(f"slider step, {name}: map and cards median {statistics.median(shown):.0f} ms "
                  f"(min {min(shown):.0f}, max {max(shown):.0f}); all settled (with the ensemble ±) median "
                  f"{statistics.median(lat):.0f} ms (min {min(lat):.0f}, max {max(lat):.0f}); first document "
                  f"change after {statistics.median(first):.0f} ms; {len(lat)} moves")
        ok = [v for v in plus_minus if v == v]
        if ok:
            print("ensemble ± on the cards after a new position (members solved after a pause of "
                  f"store.UNCERTAINTY_DELAY): median "
                  f"{statistics.median(ok) * 1000:.0f} ms (min {min(ok) * 1000:.0f}, max {max(ok) * 1000:.0f})")
        else:
            print("no ensemble ± seen (the source has no ensemble)")
        print(f"target < 500 ms per step; total benchmark time {time.monotonic() - t_start:.0f} s")
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
