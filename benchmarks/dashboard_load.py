"""Many viewers at once (issue 16): N real Chromium pages on one server, each moving its own slider.

Serves the app (``dashboard.app.serve``) in a subprocess, opens ``--sessions`` pages in one headless
Debian Chromium (Playwright, asyncio: the pages step concurrently) and, in each page, steps a different
what-if slider to new positions: session i moves mechanism ``MECHANISMS[i % 6]`` up (the first six) or
down (the next ones), one per cent per step, so every step of every session is a new solve. A step's
latency runs from just before the key press to the paint (double requestAnimationFrame) after both the
map's image data and a card's text changed in that page's Bokeh document (the document-change hooks of
``benchmarks/dashboard.py``). A step with no update within 60 s is *lost*.

Reported: page loads (one page on the warm server, then ``--sessions`` pages opened at once, each until
its cards, map and sliders are on screen), step latency median / p95 / max over all steps, lost steps,
each session's final state (the realised change under its slider is its own last position), the
server's CPU (per cent of one core) and RSS (sampled every second) over the steps, and the machine's load
average before and after (the machine may be shared: read the numbers with the load).

``--driver client`` drives the same sessions without a browser: each session is a Bokeh client
(``bokeh.client.pull_session`` in its own thread and event loop) that sets its slider model's value and
times until the server's patches for the step have arrived: the map's ``ColumnDataSource`` data and the
a card's text (the same two changes the browser waits for, without the rendering). It isolates the
server's cost from the N renderers that share the machine's cores; a page load is then the pull of a new
session's document (the server builds the session). Run both and compare.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dashboard_load.py --sessions 8 --steps 24
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dashboard_load.py --sessions 8 --steps 63 --pause 0.5  # ~500 steps
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dashboard_load.py --driver client --sessions 8 --steps 24
"""

from __future__ import annotations

import argparse
import asyncio
import html
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path


def _single_session_benchmark():
    """``benchmarks/dashboard.py`` (its server start, Chromium flags and document hooks), loaded by path:
    its module name would shadow the ``dashboard`` package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dashboard_benchmark", Path(__file__).with_name("dashboard.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_B = _single_session_benchmark()
CHROMIUM, CHROMIUM_ARGS, HOOK_JS, ROOT = _B.CHROMIUM, _B.CHROMIUM_ARGS, _B.HOOK_JS, _B.ROOT

MECHANISMS = ("A", "K", "Xi", "V", "I", "NPP")
#: What the line under each slider calls its process (``proda_engine.api.BULK_SYMBOL``).
SYMBOL = {"A": "CUE", "K": "K̄", "Xi": "ξ̄", "V": "V̄", "I": "Ī", "NPP": "NPP"}
#: A session walks its slider out to this position, then back (new positions until then).
TURN = 45

# Resolves when, after t0, the map's image data and a card's text have both changed, at the paint that
# follows the later of the two; NaN after the limit (a lost step).
STEP_JS = """
async ([t0, limit]) => {
  const start = performance.now();
  while (performance.now() - start < limit) {
    await new Promise(r => setTimeout(r, 20));
    const ch = window.__changes.filter(c => c.t >= t0);
    const map = ch.find(c => c.kind === "data" || c.kind.startsWith("Column"));
    const text = ch.find(c => c.kind === "text" || c.kind === "object");
    if (map && text) {
      const last = Math.max(map.t, text.t);
      const paint = window.__paints.filter(t => t >= last);
      if (paint.length) return paint[0] - t0;
    }
  }
  return NaN;
}
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler(threading.Thread):
    """RSS of the server every second, with the number of steps done so far."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.steps, self.stop = pid, [], 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.samples.append((self.steps, _rss_mb(self.pid)))
            except OSError:
                return


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, math.ceil(q * len(v)) - 1)] if v else float("nan")


async def _ready(page, timeout_ms: float = 120_000) -> None:
    """Cards, map canvas and sliders on screen, Bokeh document connected."""
    await page.locator(".card-total").first.wait_for(state="visible", timeout=timeout_ms)
    await page.locator(".proda-map .bk-Canvas").first.wait_for(state="visible", timeout=timeout_ms)
    await page.locator(".slider-A .noUi-handle").first.wait_for(state="visible", timeout=timeout_ms)
    await page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=timeout_ms)
    await page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


async def _open(browser, url: str, t_start: float):
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await page.goto(url, timeout=180_000)
    await _ready(page)
    return page, time.monotonic() - t_start


async def _session(i: int, page, steps: int, pause: float, sampler: Sampler, limit_ms: float) -> dict:
    mech = MECHANISMS[i % len(MECHANISMS)]
    sign = 1 if (i // len(MECHANISMS)) % 2 == 0 else -1
    await page.evaluate(HOOK_JS)
    await page.locator(f".slider-{mech} .noUi-handle").first.focus()
    lat, position = [], 0
    for _ in range(steps):
        await asyncio.sleep(_pause(i, len(lat), pause))  # spread steps
        if abs(position) >= TURN:
            sign = -sign
        t0 = await page.evaluate("performance.now()")
        await page.keyboard.press("ArrowRight" if sign > 0 else "ArrowLeft")
        position += sign
        lat.append(await page.evaluate(STEP_JS, [t0, limit_ms]))
        sampler.steps += 1
    return {"session": i, "page": page, "mechanism": mech, "position": position, "latency_ms": lat}


async def _final_state(r: dict) -> None:
    """The session ends with its own state: the line under its slider shows its own last position."""
    # realised as asked, or (past what the engine can realise) "limit reached, asked <its position>"
    wants = (f"{SYMBOL[r['mechanism']]} {r['position']:+.1f} %", f"asked {r['position']:+d} %")
    text = ""
    for _ in range(150):
        text = await r["page"].locator(f".realised-{r['mechanism']} .proda-realised").first.inner_text()
        if any(w in text for w in wants):
            break
        await asyncio.sleep(0.2)
    r["final_ok"], r["final_text"] = any(w in text for w in wants), text.strip()


def _pause(i: int, n: int, pause: float) -> float:
    """Seconds session ``i`` waits before its step ``n`` (uniform-looking 0.5-1.5 x ``pause``, reproducible)."""
    return pause * (0.5 + ((i * 7919 + n * 104729) % 1000) / 1000)


class ClientSession(threading.Thread):
    """One viewer as a Bokeh client (``--driver client``): pulls a new session of the served app, then steps
    its slider model; a step ends when the map data and a card's text patches of the server
    have both arrived after the new value was sent (Python-side timing, no rendering)."""

    def __init__(self, i: int, url: str, args, sampler: Sampler | None, start: threading.Event) -> None:
        super().__init__(daemon=True, name=f"client-{i}")
        self.i, self.url, self.args, self.sampler, self.start_steps = i, url, args, sampler, start
        self.mechanism = MECHANISMS[i % len(MECHANISMS)]
        self.sign = 1 if (i // len(MECHANISMS)) % 2 == 0 else -1
        self.load_s = float("nan")
        self.latency_ms: list[float] = []
        self.position = 0
        self.final_text, self.final_ok, self.error = "", False, None
        self.ready = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the main thread
            self.error = exc
            self.ready.set()

    def _run(self) -> None:
        from bokeh.client import pull_session
        from tornado.ioloop import IOLoop

        asyncio.set_event_loop(asyncio.new_event_loop())
        io = IOLoop.current()
        from bokeh.document.events import MessageSentEvent
        from bokeh.events import DocumentReady

        session = pull_session(url=self.url, io_loop=io)
        self.load_s = time.monotonic() - self.t0
        doc = session.document
        # what BokehJS sends once the page is rendered: Panel then runs the onload work (deferred rows) and
        # from then on sends model changes made outside the document lock (the map's data swap)
        doc.callbacks.trigger_on_change(MessageSentEvent(doc, "bokeh_event", DocumentReady()))
        by_class = {c: m for m in doc.models for c in (getattr(m, "css_classes", None) or [])}
        slider = by_class[f"slider-{self.mechanism}"]
        # the cards, and the line under this session's slider (it names the new position on every step;
        # a step whose rounded card numbers do not move, e.g. V̄ +1 % more, changes only that line)
        cards = {id(m) for c, m in by_class.items() if c.startswith("card-") or c == f"realised-{self.mechanism}"}
        realised = by_class[f"realised-{self.mechanism}"]
        changes: list[tuple[float, str]] = []
        arrived = asyncio.Event()

        def on_change(event) -> None:
            model, attr = getattr(event, "model", None), getattr(event, "attr", None)
            if id(model) in cards and attr == "text":
                changes.append((time.monotonic(), "text"))
            elif type(model).__name__ == "ColumnDataSource" and (attr == "data" or event.kind.startswith("Column")):
                changes.append((time.monotonic(), "data"))
            else:
                return
            arrived.set()

        doc.on_change(on_change)

        async def drive() -> None:
            self.ready.set()
            while not self.start_steps.is_set():
                await asyncio.sleep(0.05)
            for n in range(self.args.steps):
                await asyncio.sleep(_pause(self.i, n, self.args.pause))
                if abs(self.position) >= TURN:
                    self.sign = -self.sign
                self.position += self.sign
                t0 = time.monotonic()
                # sent to the server as one patch of this session's document (a browser's key press sets both)
                slider.value = self.position
                slider.set_from_json("value_throttled", self.position)  # read-only in Python, not on the wire
                self.latency_ms.append(await self._wait(changes, arrived, t0))
                if self.sampler is not None:
                    self.sampler.steps += 1
            wants = (f"{SYMBOL[self.mechanism]} {self.position:+.1f} %", f"asked {self.position:+d} %")
            for _ in range(150):
                if any(w in html.unescape(html.unescape(realised.text or "")) for w in wants):
                    break
                await asyncio.sleep(0.2)
            self.final_text = " ".join(html.unescape(html.unescape(realised.text or "")).split())
            self.final_ok = any(w in self.final_text for w in wants)
            session.close()

        io.add_callback(drive)
        session._connection.loop_until_closed()  # bokeh 3: the session no longer exposes it

    async def _wait(self, changes: list, arrived: asyncio.Event, t0: float) -> float:
        """ms from ``t0`` until both a map-data and a card-text change arrived after it (NaN past the limit)."""
        deadline = t0 + self.args.limit
        while time.monotonic() < deadline:
            kinds = {kind: t for t, kind in changes if t >= t0}
            if "data" in kinds and "text" in kinds:
                return 1000 * (max(t for t, _ in changes if t >= t0) - t0)
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
        return float("nan")


def _run_client(args, url: str, server: subprocess.Popen) -> None:
    """``--driver client``: the sessions as Bokeh clients (see :class:`ClientSession`)."""
    import panel.models  # noqa: F401  (registers Panel's Bokeh models, so a client can decode the document)

    go = threading.Event()
    warm = ClientSession(0, url, argparse.Namespace(steps=0, pause=0, limit=args.limit), None, go)
    go.set()
    warm.start()
    warm.join(300)
    one = ClientSession(0, url, argparse.Namespace(steps=0, pause=0, limit=args.limit), None, go)
    one.start()
    one.join(300)
    print(f"session load, one client session on the warm server: {one.load_s * 1000:.0f} ms")
    time.sleep(3)
    start = threading.Event()
    sampler = Sampler(server.pid)
    sessions = [ClientSession(i, url, args, sampler, start) for i in range(args.sessions)]
    for s in sessions:
        s.start()
    for s in sessions:
        s.ready.wait(300)
    errors = [s.error for s in sessions if s.error is not None]
    if errors:
        raise RuntimeError(f"client sessions failed: {errors}")
    loads = [s.load_s for s in sessions]
    print(f"session load, {args.sessions} client sessions opened at once: all pulled after {max(loads):.1f} s "
          f"(median {statistics.median(loads):.1f} s)")
    time.sleep(5)
    rss0, cpu0, wall0, load0 = _rss_mb(server.pid), _cpu_seconds(server.pid), time.monotonic(), os.getloadavg()
    sampler.start()
    start.set()
    for s in sessions:
        s.join()
    wall, cpu = time.monotonic() - wall0, _cpu_seconds(server.pid) - cpu0
    sampler.stop.set()
    load1 = os.getloadavg()
    errors = [s.error for s in sessions if s.error is not None]
    if errors:
        raise RuntimeError(f"client sessions failed: {errors}")
    results = [{"session": s.i, "mechanism": s.mechanism, "position": s.position, "latency_ms": s.latency_ms,
                "final_ok": s.final_ok, "final_text": s.final_text} for s in sessions]
    _report(args, results, sampler, rss0, cpu, wall, load0, load1)


async def _run(args, url: str, server: subprocess.Popen) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        # warm page: the first session after start-up pays per-process costs; then one timed page alone
        page, _ = await _open(browser, url, time.monotonic())
        await page.close()
        _, one = await _open(browser, url, time.monotonic())
        print(f"page load, one page on the warm server: {one * 1000:.0f} ms (target <= 2000 ms)")
        await asyncio.sleep(3)
        t0 = time.monotonic()
        opened = await asyncio.gather(*(_open(browser, url, t0) for _ in range(args.sessions)))
        loads = [t for _, t in opened]
        print(f"page load, {args.sessions} pages opened at once: all interactive after {max(loads):.1f} s "
              f"(median {statistics.median(loads):.1f} s; target <= 10 s)")
        pages = [p for p, _ in opened]
        await asyncio.sleep(5)  # let the deferred chart and scenario rows of every page finish
        sampler = Sampler(server.pid)
        rss0, cpu0, wall0, load0 = _rss_mb(server.pid), _cpu_seconds(server.pid), time.monotonic(), os.getloadavg()
        sampler.start()
        results = await asyncio.gather(*(_session(i, p, args.steps, args.pause, sampler, args.limit * 1000)
                                         for i, p in enumerate(pages)))
        wall, cpu = time.monotonic() - wall0, _cpu_seconds(server.pid) - cpu0
        sampler.stop.set()
        load1 = os.getloadavg()
        await asyncio.gather(*(_final_state(r) for r in results))
        await browser.close()
    _report(args, results, sampler, rss0, cpu, wall, load0, load1)


def _report(args, results: list[dict], sampler: Sampler, rss0: float, cpu: float, wall: float, load0, load1) -> None:
    """Print the step latencies, lost steps, final states, server CPU and RSS and the load average."""
    lat = [v for r in results for v in r["latency_ms"] if v == v]
    lost = sum(1 for r in results for v in r["latency_ms"] if v != v)
    total = sum(len(r["latency_ms"]) for r in results)
    print(f"{args.sessions} sessions x {args.steps} steps (pause {args.pause} s x 0.5-1.5 between steps): "
          f"{total} steps, {lost} lost (> {args.limit:.0f} s)")
    if lat:
        print(f"step latency: median {statistics.median(lat):.0f} ms, p95 {_pct(lat, 0.95):.0f} ms, "
              f"max {max(lat):.0f} ms (targets: median <= 500, p95 <= 1500)")
    for r in results:
        v = [x for x in r["latency_ms"] if x == x]
        print(f"  session {r['session']} ({r['mechanism']} {r['position']:+d} %): median "
              f"{statistics.median(v) if v else float('nan'):.0f} ms, {len(r['latency_ms']) - len(v)} lost, "
              f"final state "
              f"{'ok' if r['final_ok'] else 'WRONG: ' + r['final_text']!s}")
    print(f"final state: {sum(r['final_ok'] for r in results)} of {len(results)} sessions show their own position")
    rss = [m for _, m in sampler.samples]
    print(f"server CPU over the steps: {100 * cpu / wall:.0f} % of one core ({cpu:.0f} s in {wall:.0f} s)")
    if rss:
        marks = {}
        for n, m in sampler.samples:
            marks.setdefault(n // 100 * 100, m)
        trail = ", ".join(f"{k}: {v:.0f}" for k, v in sorted(marks.items()))
        print(f"server RSS: {rss0:.0f} MB before the steps, max {max(rss):.0f} MB, end {rss[-1]:.0f} MB; "
              f"at step n (MB): {trail}")
    print(f"load average before {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f}, after "
          f"{load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} ({os.cpu_count()} cores)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="default", help="world to serve (default: the 0.5° globe)")
    ap.add_argument("--sessions", type=int, default=8, help="pages stepping at once")
    ap.add_argument("--steps", type=int, default=24,
                    help=f"slider steps per session (all new positions up to {TURN}, then the slider walks back)")
    ap.add_argument("--pause", type=float, default=1.0,
                    help="mean seconds a viewer waits between steps (uniform 0.5-1.5 x this)")
    ap.add_argument("--limit", type=float, default=60.0, help="seconds after which a step counts as lost")
    ap.add_argument("--driver", choices=("chromium", "client"), default="chromium",
                    help="real Chromium pages, or Bokeh client sessions (server cost without the renderers)")
    ap.add_argument("--url", default=None, help="drive an already running server at this URL (CPU/RSS of --pid)")
    ap.add_argument("--pid", type=int, default=None, help="process id of the server given by --url")
    ap.add_argument("--num-procs", type=int, default=1,
                    help="server processes (Bokeh's num_procs: forked after the warm-up; CPU/RSS of the parent only)")
    args = ap.parse_args()
    run = (lambda u, srv: _run_client(args, u, srv)) if args.driver == "client" else (
        lambda u, srv: asyncio.run(_run(args, u, srv)))
    if args.url:
        if args.pid is None:
            ap.error("--url needs --pid (the server's process id, for its CPU and RSS)")
        run(args.url, argparse.Namespace(pid=args.pid))
        return
    port = _B._free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "PRODA_WORLD": args.world, "PRODA_DASHBOARD_WEBGL": "0",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = (f"from dashboard.app import serve; serve(port={port}, address='127.0.0.1', world={args.world!r}, "
            f"liveness=True, num_procs={args.num_procs})")
    server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    try:
        print(f"world {args.world}: server up in {_B._wait_live(url, timeout=900):.1f} s")
        run(url, server)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
