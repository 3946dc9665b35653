"""Fixtures for the dashboard tests: a small world, a threaded Panel server, Debian Chromium.

Environment (set before the dashboard is imported): ``PRODA_WORLD=tiny`` for speed, ``PRODA_CACHE``
in a per-session temporary folder (the world is built once per test session), and WebGL off
(``PRODA_DASHBOARD_WEBGL=0``), which costs ~1 s per repaint in headless Chromium.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["PRODA_WORLD"] = os.environ.get("PRODA_TEST_WORLD", "tiny")
os.environ["PRODA_DASHBOARD_WEBGL"] = "0"
if "PRODA_TEST_CACHE" in os.environ:  # reuse a built world across runs when asked to
    os.environ["PRODA_CACHE"] = os.environ["PRODA_TEST_CACHE"]
else:
    os.environ["PRODA_CACHE"] = tempfile.mkdtemp(prefix="proda-dashboard-cache-")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """pytest-playwright launches Debian's Chromium (never `playwright install`)."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    # tall viewport: FastListTemplate's main area scrolls internally, so full_page screenshots miss it
    return {**browser_context_args, "viewport": {"width": 1500, "height": 1250}, "accept_downloads": True}


#: Source that gets a synthetic ensemble in the test world (the default source has none: both paths run).
ENSEMBLE_SOURCE = "twin_truth"


def write_test_ensemble(name: str, n_members: int = 4) -> Path:
    """``products/theta_twin_truth_members.nc``: the truth plus small per-member noise (test-only data)."""
    import numpy as np
    import xarray as xr

    from proda_engine.data.world import ensure_world

    root = ensure_world(name).root
    path = root / "products" / f"theta_{ENSEMBLE_SOURCE}_members.nc"
    if path.exists():
        return path
    path.parent.mkdir(exist_ok=True)
    with xr.open_dataset(root / "truth_parameters.nc") as ds:
        theta = ds["theta"].load()
    rng = np.random.default_rng(0)
    members = [(theta + 0.05 * rng.standard_normal(theta.shape)).clip(0.01, 0.97) for _ in range(n_members)]
    ens = xr.concat(members, dim="member").assign_coords(member=np.arange(n_members))
    xr.Dataset({"theta": ens}).to_netcdf(path)
    return path


@pytest.fixture(scope="session")
def world() -> str:
    """The test world, built (into the session's cache), given an ensemble for one source, warmed once."""
    from dashboard.app import warm

    name = os.environ["PRODA_WORLD"]
    if name == "tiny":
        write_test_ensemble(name)
    warm(name)
    return name


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_threaded(factory, **options):
    """Serve ``factory`` per session in a thread with the options `proda serve` uses (loopback, explicit
    websocket origins, the security headers: every browser test also shows the page works under that CSP),
    plus ``options``; return (server, url) once the server answers its liveness probe."""
    import panel as pn

    from dashboard.app import server_options

    port = _free_port()
    server = pn.serve(factory, threaded=True, show=False, liveness=True, **options,
                      **server_options("127.0.0.1", port))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:  # the server thread is up when it answers
        try:
            with urllib.request.urlopen(f"{url}liveness", timeout=2) as r:
                if r.status == 200:
                    return server, url
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def served(world: str) -> Iterator[tuple[str, list]]:
    """Serve a per-session factory as ``proda serve`` does; yield (url, apps) where ``apps`` collects each
    session's app."""
    import panel as pn

    from dashboard.app import build_app

    apps: list = []

    def factory():
        app = build_app(world)
        apps.append(app)
        return app.template

    server, url = serve_threaded(factory)
    try:
        yield url, apps
    finally:
        server.stop()
        server.join(10)
        pn.state.reset()


def wait_until(predicate: Callable[[], bool], page=None, timeout: float = 15.0, what: str = "condition") -> None:
    """Poll a predicate on Python state (Panel's own pattern), letting the page breathe in between."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # e.g. the session's app does not exist yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if page is not None:
            page.wait_for_timeout(100)
        else:
            time.sleep(0.1)


@pytest.fixture
def wait() -> Callable[..., None]:
    """The :func:`wait_until` helper as a fixture (test modules do not import conftest)."""
    return wait_until
