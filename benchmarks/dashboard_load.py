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


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the server's forked processes with ``--num-procs``)."""
    parent: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += [c for c, pp in parent.items() if pp == p]
    return out


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of the server: ``pid`` and its forked processes."""
    total = 0.0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _rss_mb(pid: int) -> float:
    """Resident memory (MB) of the server: ``pid`` and its forked processes (shared pages counted in each)."""
    total = 0.0
    for p in _tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:")), 0.0)
    return total


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


#: "Interactive", checked on the page's own Bokeh views (not just elements in the DOM): the total card shows
#: a number, the map's figure has painted with its image data, and the sliders' views are rendered with the
#: document connected (the page's first slider step then measures that a step works).
READY_JS = """
() => {
  if (!(window.Bokeh && Bokeh.documents.length > 0)) return false;
  const sub = (v) => {
    const out = [];
    const walk = (x) => { out.push(x); for (const c of x.children()) walk(c); };
    walk(v);
    return out;
  };
  const all = [...Bokeh.index].flatMap(sub);
  const cls = (c) => all.filter(v => (v.model.css_classes || []).includes(c));
  const map = cls("proda-map")[0];
  if (!map) return false;
  const views = sub(map);
  const images = views.filter(v => v.model.type === "GlyphRenderer" && v.model.glyph.type === "Image");
  const painted = views.filter(v => v.model.type === "Figure" || v.model.type === "Plot").every(v => v.has_finished())
    && images.length > 0 && images.every(v => v.has_finished() && (v.model.data_source.data.image || []).length > 0);
  const card = cls("card-total")[0];
  if (!painted || !card || !card.has_finished()) return false;
  const html = document.createElement("div");
  html.innerHTML = card.model.text;  // the pane's text is escaped HTML: decode it once, then read the value
  const inner = document.createElement("div");
  inner.innerHTML = html.textContent;
  const value = inner.querySelector(".proda-card-value");
  const sliders = cls("slider-A");
  return !!value && /[0-9]/.test(value.textContent) && sliders.length > 0 && sliders.every(v => v.has_finished());
}
"""


#: Seconds between the single page loads (the server idle again: see ``_run``).
PAGE_GAP = 3.0


async def _ready(page, timeout_ms: float = 120_000) -> None:
    """Interactive (:data:`READY_JS`), then the paint that follows."""
    await page.wait_for_function(READY_JS, timeout=timeout_ms, polling=50)
    await page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


async def _open(browser, url: str, t_start: float, nav: list | None = None):
    """A new page (in a new browser context: empty cache) at ``url``, once interactive; seconds since ``t_start``.

    ``nav`` (if given) gets the seconds from the navigation itself: a page load as web timing counts it (the
    URL asked for -> interactive), without Playwright's new context and renderer process (~0.2-0.4 s here)."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    t_nav = time.monotonic()
    await page.goto(url, timeout=180_000)
    await _ready(page)
    t = time.monotonic()
    if nav is not None:
        nav.append(t - t_nav)
    return page, t - t_start


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


async def _raw_open(url: str, mechanism: str, t0: float):
    """Open a session the way a page does, without any client-side decoding: connect the websocket with a
    new session token, receive the server's ``ACK``, ask for the document (``PULL-DOC-REQ``) and time
    until the whole reply has arrived; then announce ``DocumentReady`` as BokehJS does once rendered (the
    server then builds the deferred rows, as for a real page). Returns (socket, seconds since ``t0``,
    interactive), where interactive means the reply holds what a page needs (:func:`_doc_interactive`).

    This is the server's part of a page load: the session build, its serialisation and the transfer, with
    no Python or browser decoding on this machine's two cores."""
    from bokeh.client.websocket import WebSocketClientConnectionWrapper
    from bokeh.document import Document
    from bokeh.document.events import MessageSentEvent
    from bokeh.events import DocumentReady
    from bokeh.protocol import Protocol
    from bokeh.protocol.receiver import Receiver
    from bokeh.util.token import generate_jwt_token, generate_session_id
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    protocol = Protocol()
    receiver = Receiver(protocol)
    raw = await websocket_connect(HTTPRequest(url.replace("http", "ws", 1) + "ws"),
                                  subprotocols=["bokeh", generate_jwt_token(generate_session_id())],
                                  max_message_size=512 * 2**20)
    ws = WebSocketClientConnectionWrapper(raw)

    async def receive(msgtype: str):
        while True:
            fragment = await raw.read_message()
            if fragment is None:
                raise RuntimeError(f"the server closed the websocket before {msgtype}")
            msg = await receiver.consume(fragment)
            if msg is not None and msg.msgtype == msgtype:
                return msg

    await receive("ACK")
    await protocol.create("PULL-DOC-REQ").send(ws)
    reply = await receive("PULL-DOC-REPLY")
    seconds = time.monotonic() - t0
    interactive = _doc_interactive(reply.content["doc"], mechanism)
    ready = MessageSentEvent(Document(), "bokeh_event", DocumentReady())
    await protocol.create("PATCH-DOC", [ready]).send(ws)
    return raw, seconds, interactive


def _models(node):
    """Every serialised model (a dict with ``attributes``) in a pulled document's JSON."""
    if isinstance(node, dict):
        if "attributes" in node:
            yield node
        for v in node.values():
            yield from _models(v)
    elif isinstance(node, list):
        for v in node:
            yield from _models(v)


def _doc_interactive(doc: dict, mechanism: str) -> bool:
    """A pulled document (JSON) holds an interactive page: the total card shows a number, the map's image
    source has data, and the session's slider exists (:data:`READY_JS` without the painting)."""
    by_class = {c: m for m in _models(doc) for c in (m["attributes"].get("css_classes") or [])}
    card = by_class.get("card-total", {"attributes": {}})
    text = html.unescape(html.unescape(card["attributes"].get("text", "") or ""))
    value = text.split("proda-card-value", 1)[-1][:80]
    images = [m for m in _models(doc) if m.get("name") == "ColumnDataSource"
              and "image" in str(m["attributes"].get("data", ""))]
    return any(ch.isdigit() for ch in value) and bool(images) and f"slider-{mechanism}" in by_class


class ClientSession(threading.Thread):
    """One viewer as a Bokeh client (``--driver client``): pulls a new session of the served app, then steps
    its slider model; a step ends when the map data and a card's text patches of the server
    have both arrived after the new value was sent (Python-side timing, no rendering)."""

    def __init__(self, i: int, url: str, args, sampler: Sampler | None, start: threading.Event) -> None:
        super().__init__(daemon=True, name=f"client-{i}")
        self.i, self.url, self.args, self.sampler, self.start_steps = i, url, args, sampler, start
        self.mechanism = MECHANISMS[i % len(MECHANISMS)]
        self.sign = 1 if (i // len(MECHANISMS)) % 2 == 0 else -1
        self.latency_ms: list[float] = []
        self.position = 0
        self.final_text, self.final_ok, self.error = "", False, None
        self.ready = threading.Event()

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
            for _ in range(150 if self.args.steps else 0):
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


#: Bokeh's client connection handles each message one call level deeper (``_handle_messages`` awaits
#: ``_next``, which awaits the state's ``run``, which awaits ``_handle_messages`` again), so a client session
#: that received more than ~300 messages died with a RecursionError in a 500-step run. The client threads get
#: room for that: a deeper recursion limit and a larger thread stack.
CLIENT_RECURSION_LIMIT = 100_000
CLIENT_THREAD_STACK = 256 * 2**20


def _pages_and_clients(args) -> tuple[int, int]:
    """(Chromium pages, Bokeh client sessions) of a run: all pages, all clients, or ``--browsers`` pages and
    clients for the rest (``--driver mixed``)."""
    pages = {"chromium": args.sessions, "client": 0, "mixed": min(args.browsers, args.sessions)}[args.driver]
    return pages, args.sessions - pages


async def _run(args, url: str, server) -> None:
    """Open the sessions (one on the warm server, then all at once), step them, report.

    Chromium pages and Bokeh client sessions run in the same stretch of time: the pages in this event loop
    (Playwright), each client in its own thread; sessions ``0 .. pages-1`` are pages, the rest clients, so
    each session still moves its own slider."""
    import panel.models  # noqa: F401  (registers Panel's Bokeh models, so a client can decode the document)

    n_pages, n_clients = _pages_and_clients(args)
    pw = browser = None
    if n_pages:
        from playwright.async_api import async_playwright

        pw = await async_playwright().start()
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    try:
        # the first session after start-up pays per-process costs: one of each kind first, untimed
        if n_pages:
            page, _ = await _open(browser, url, time.monotonic())
            await page.close()
            ones, navs = [], []
            for _ in range(args.page_loads):  # each a fresh browser context: nothing cached from the last
                # a warm server that is idle: the last page's session builds its deferred rows (~0.3-0.5 s of
                # the event loop) after it reported itself ready; 1 s apart, that work overlapped the next
                # page's build (measured: median 1.94-2.02 s against 1.62 s with the server idle)
                await asyncio.sleep(PAGE_GAP)
                page, one = await _open(browser, url, time.monotonic(), navs)
                await page.close()
                ones.append(one * 1000)
            navs = [v * 1000 for v in navs]
            print(f"page load, one Chromium page at a time on the warm server, {len(navs)} loads, from the "
                  f"navigation to interactive: median {statistics.median(navs):.0f} ms (target <= 2000 ms), min "
                  f"{min(navs):.0f}, max {max(navs):.0f} ms; each: {', '.join(f'{v:.0f}' for v in navs)}")
            print(f"  the same with Playwright's new browser context counted: median {statistics.median(ones):.0f} "
                  f"ms, min {min(ones):.0f}, max {max(ones):.0f} ms")
            await asyncio.sleep(3)
        if n_clients:
            for _ in range(2):  # the first one after the page(s) is not timed either
                raw, one, ok = await _raw_open(url, MECHANISMS[0], time.monotonic())
                raw.close()
            print(f"session load, one client session on the warm server: {one * 1000:.0f} ms (document received; "
                  f"interactive: {ok})")
            await asyncio.sleep(3)
        cpu0, t0 = _cpu_seconds(server.pid), time.monotonic()
        kinds = await asyncio.gather(*(_open(browser, url, t0) for _ in range(n_pages)),
                                     *(_raw_open(url, MECHANISMS[i % len(MECHANISMS)], t0)
                                       for i in range(n_pages, args.sessions)))
        wall_load, cpu_load = time.monotonic() - t0, _cpu_seconds(server.pid) - cpu0
        opened, raws = kinds[:n_pages], kinds[n_pages:]
        page_loads, client_loads = [t for _, t in opened], [t for _, t, _ in raws]
        print(f"{args.sessions} sessions opened at once ({n_pages} Chromium pages, {n_clients} client sessions): all "
              f"interactive after {max(page_loads + client_loads):.1f} s (target <= 10 s); server CPU "
              f"{cpu_load:.1f} s in {wall_load:.1f} s")
        if page_loads:
            print(f"  Chromium pages: max {max(page_loads):.1f} s, median {statistics.median(page_loads):.1f} s")
        if client_loads:
            print(f"  client sessions (document received): max {max(client_loads):.1f} s, median "
                  f"{statistics.median(client_loads):.1f} s; {sum(ok for *_, ok in raws)} of {n_clients} with a "
                  "value, map data and slider")
        for raw, *_ in raws:
            raw.close()
        # the stepping client sessions: pulled and decoded now (not timed; their decoding is this process's
        # cost, not the server's), the load-phase sessions above are left to expire
        start = threading.Event()
        sampler = Sampler(server.pid)
        sys.setrecursionlimit(max(sys.getrecursionlimit(), CLIENT_RECURSION_LIMIT))
        stack = threading.stack_size(CLIENT_THREAD_STACK)
        clients = [ClientSession(i, url, args, sampler, start) for i in range(n_pages, args.sessions)]
        for c in clients:
            c.start()
        threading.stack_size(stack)
        await asyncio.to_thread(lambda: [c.ready.wait(300) for c in clients])
        errors = [c.error for c in clients if c.error is not None]
        if errors:
            raise RuntimeError(f"client sessions failed: {errors}")
        pages = [p for p, _ in opened]
        await asyncio.sleep(5)  # let the deferred chart and scenario rows of every session finish
        rss0, cpu0, wall0, load0 = _rss_mb(server.pid), _cpu_seconds(server.pid), time.monotonic(), os.getloadavg()
        sampler.start()
        start.set()
        results = list(await asyncio.gather(*(_session(i, p, args.steps, args.pause, sampler, args.limit * 1000)
                                              for i, p in enumerate(pages))))
        await asyncio.to_thread(lambda: [c.join() for c in clients])
        wall, cpu = time.monotonic() - wall0, _cpu_seconds(server.pid) - cpu0
        sampler.stop.set()
        load1 = os.getloadavg()
        await asyncio.gather(*(_final_state(r) for r in results))
        errors = [c.error for c in clients if c.error is not None]
        if errors:
            raise RuntimeError(f"client sessions failed: {errors}")
        for r in results:
            r["kind"] = "Chromium page"
        results += [{"session": c.i, "mechanism": c.mechanism, "position": c.position, "latency_ms": c.latency_ms,
                     "final_ok": c.final_ok, "final_text": c.final_text, "kind": "client"} for c in clients]
    finally:
        if browser is not None:
            await browser.close()
        if pw is not None:
            await pw.stop()
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
    kinds = sorted({r.get("kind", "") for r in results})
    if len(kinds) > 1:  # mixed: the pages' browser-side times beside the clients' server-side ones
        for kind in kinds:
            v = [x for r in results if r.get("kind") == kind for x in r["latency_ms"] if x == x]
            if v:
                print(f"  {kind}s: {len(v)} steps, median {statistics.median(v):.0f} ms, p95 {_pct(v, 0.95):.0f} ms, "
                      f"max {max(v):.0f} ms")
    for r in results:
        v = [x for x in r["latency_ms"] if x == x]
        print(f"  session {r['session']} [{r.get('kind', '')}] ({r['mechanism']} {r['position']:+d} %): median "
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
    ap.add_argument("--driver", choices=("chromium", "client", "mixed"), default="chromium",
                    help="real Chromium pages, Bokeh client sessions (server cost without the renderers), or "
                         "--browsers Chromium pages beside client sessions for the rest")
    ap.add_argument("--browsers", type=int, default=1, help="Chromium pages of --driver mixed (default 1)")
    ap.add_argument("--url", default=None, help="drive an already running server at this URL (CPU/RSS of --pid)")
    ap.add_argument("--pid", type=int, default=None, help="process id of the server given by --url")
    ap.add_argument("--page-loads", type=int, default=5,
                    help="single page loads timed one after another on the warm server (median, min, max)")
    ap.add_argument("--num-procs", type=int, default=1,
                    help="server processes (Bokeh's num_procs: forked, then each warmed; CPU/RSS summed over them)")
    args = ap.parse_args()
    def run(u: str, srv) -> None:
        asyncio.run(_run(args, u, srv))

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
