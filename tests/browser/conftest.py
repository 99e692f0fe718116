"""Browser tests of the web UI (spa/): Debian's Chromium driven by Playwright (no browser
download), against a real `kubectl shark tap --local` capturing lo, with real HTTP traffic made
against the test server of tests/support.

Each module gets its own tap, test server and browser; each test gets a fresh browser context.
A failed test leaves a screenshot in tests/artifacts/browser/.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.processes import Proc, free_port
from ui_support import ARTIFACTS, CHROMIUM_FLAGS, EXPECT_TIMEOUT_MS, ROOT, VIEWPORT, Site, Tap, chromium_path, start_tap


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so the page fixture knows whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium (apt-get install chromium), headless, one per module."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    sync_api.expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def tap(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[Tap]:
    """`kubectl shark tap --local -i lo` as a real process: a worker capturing lo and the hub."""
    tap = start_tap(tmp_path_factory.mktemp("tap"), site.port)
    yield tap
    tap.proc.stop()


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    port = free_port()
    server = Proc([sys.executable, "-m", "support.http_server", str(port)],
                  env={"PYTHONPATH": str(ROOT / "tests")})
    server.wait_line(r"listening")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield Site(port, client)
    server.stop()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh context and page; uncaught page errors fail the test; a screenshot on failure."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        except Exception as error:   # the page may be gone; the failure itself matters more
            print(f"no failure screenshot: {error}", file=sys.stderr)
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
