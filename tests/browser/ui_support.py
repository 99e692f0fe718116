"""Helpers of the browser tests: the tap under test, the test server, opening the UI.

(Kept apart from conftest.py, which only holds fixtures and hooks: test modules import these
by a name no other directory uses.)
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from support.processes import Proc, free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
CHROMIUM_PATHS = (Path("/usr/lib/chromium/chromium"), Path("/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1440, "height": 900}
EXPECT_TIMEOUT_MS = 20_000   # capture -> dissection -> hub -> page, on a machine shared with others


def chromium_path() -> Path | None:
    return next((path for path in CHROMIUM_PATHS if path.is_file()), None)


@dataclass
class Tap:
    url: str            # the UI and the API, e.g. http://127.0.0.1:41234
    proc: Proc
    state_dir: Path
    token: str          # what tap put in the address it printed to log in with

    def api(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}/api/v1{path}", timeout=30, headers={"Authorization": f"Bearer {self.token}"},
                         **kwargs)

    def login_url(self, **params: str) -> str:
        """The address tap prints (and opens), with more parameters (a filter, a view) after it."""
        return str(httpx.URL(self.url + "/", params={"token": self.token, **params}))


def wait_tap(proc: Proc, state_dir: Path, port: int | str) -> Tap:
    url = proc.wait_line(rf"UI and API at (http://127\.0\.0\.1:{port})", timeout=60).group(1)
    login = proc.wait_line(rf"log in to the UI at {re.escape(url)}/\?token=(\S+)").group(1)
    return Tap(url, proc, state_dir, login)


def tap_command(state_dir: Path, proxy_port: int | str, site_port: int) -> list[str]:
    """`tap --local` on lo capturing only the test site's port (lo carries other tests' traffic)."""
    return [sys.executable, "-m", "shark.cli", "tap", "--local", "-i", "lo", "--bpf", f"tcp port {site_port}",
            "--no-open", "--proxy-port", str(proxy_port), "--state-dir", str(state_dir)]


def start_tap(state_dir: Path, site_port: int) -> Tap:
    port = free_port()
    return wait_tap(Proc(tap_command(state_dir, port, site_port)), state_dir, port)


@dataclass
class Site:
    """The HTTP test server (tests/support/http_server.py) and a client that makes traffic."""
    port: int
    client: httpx.Client

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)

    @property
    def kfl(self) -> str:
        """Only this server's traffic: lo carries other tests' traffic too."""
        return f"dst.port == {self.port}"


def open_ui(page: Any, tap: Tap, query: str = "", **params: str) -> None:
    """Load the UI (optionally with a filter in the URL) the way tap opens it, logged in with the
    token in the address, and wait until the live feed is up."""
    page.goto(tap.login_url(**({"q": query} if query else {}), **params))
    expect(page.locator("#live-state")).to_have_text(re.compile(r"^live \((SSE|WebSocket)\)$"))
    settled(page)


def settled(page: Any) -> None:
    """Wait until the page has no entry list loading: rows loaded from the REST API go in
    among the streamed ones and move them, so clicks wait for this."""
    expect(page.locator("#feed")).to_have_attribute("aria-busy", "false")


def update_screenshot() -> bool:
    return os.environ.get("UPDATE_SCREENSHOT") == "1"
