"""What the UI says when things break: the hub goes away (and comes back), a worker dies, and
server-sent events do not get through (the WebSocket takes over)."""

from __future__ import annotations

import re
import signal
import sys

import pytest
from playwright.sync_api import expect

from support.processes import Proc, Worker
from ui_support import ROOT, open_ui, start_tap, tap_command, wait_tap

pytestmark = pytest.mark.root

ROWS = "#feed .feed-spacer .feed-row:not([hidden])"
GOLDEN_HTTP = ROOT / "tests" / "golden" / "http1" / "basic.pcap"


def test_the_hub_going_away_is_said_and_the_feed_resumes_when_it_is_back(page, site, tmp_path):
    tap = start_tap(tmp_path / "state", site.port)
    try:
        open_ui(page, tap, site.kfl)
        site.get("/json?t=down-before")
        expect(page.locator(ROWS).filter(has_text="t=down-before")).to_have_count(1)

        assert tap.proc.stop() == 0
        banner = page.get_by_role("alert").filter(has_text="Cannot reach the hub")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("the feed resumes by itself")
        expect(page.locator("#live-state")).to_have_text("reconnecting…")
        expect(page.locator("#workers-pill")).to_have_text("hub down")
        # what was shown stays
        expect(page.locator(ROWS).filter(has_text="t=down-before")).to_have_count(1)

        # the same tap again, on the same port and store
        port = tap.url.rsplit(":", 1)[1]
        again = Proc(tap_command(tap.state_dir, port, site.port))
        tap = wait_tap(again, tap.state_dir, port)     # the same token: the page's cookie still counts
        expect(banner).to_have_count(0)
        expect(page.locator("#live-state")).to_have_text(re.compile(r"^live \("), timeout=40_000)
        site.get("/json?t=down-after")
        expect(page.locator(ROWS).filter(has_text="t=down-after")).to_have_count(1)
        expect(page.locator(ROWS).filter(has_text="t=down-before")).to_have_count(1)
    finally:
        tap.proc.stop()


def test_a_worker_that_dies_is_named_with_its_error(page, tmp_path):
    worker = Worker(["--pcap", str(GOLDEN_HTTP)], tmp_path / "store", node="ui-failing-node")
    hub = Proc([sys.executable, "-m", "hub", "--worker", worker.url, "--listen", "127.0.0.1:0",
                "--poll-interval", "0.5"])
    try:
        url = hub.wait_line(r"hub serving on (http://\S+)").group(1)
        page.goto(url + "/")
        expect(page.locator("#live-state")).to_have_text("live (SSE)")
        expect(page.locator(ROWS).first).to_be_visible()   # the replayed capture's entries
        expect(page.get_by_role("button", name="workers 1/1")).to_be_visible()

        worker.signal(signal.SIGKILL)
        worker.process.wait(10)
        banner = page.get_by_role("alert").filter(has_text="Worker ui-failing-node is down")
        expect(banner).to_contain_text("cannot connect")
        expect(page.get_by_role("button", name="workers 0/1")).to_be_visible()
        expect(page.locator("#live-state")).to_have_text("connected (SSE), no worker streaming")
        page.get_by_role("button", name="workers 0/1").click()
        row = page.get_by_role("table", name="Workers").locator('tr[data-node="ui-failing-node"]')
        expect(row.locator("td").first).to_have_text("down")
        expect(row.locator("td.problems")).to_contain_text("cannot connect")
    finally:
        hub.stop()
        worker.stop()


def test_the_websocket_takes_over_when_server_sent_events_fail(page, tap, site):
    # a proxy in the way that refuses event streams
    page.route(re.compile(r"/api/v1/stream(\?|$)"), lambda route: route.abort("connectionrefused"))
    page.goto(tap.login_url(q=site.kfl))
    expect(page.locator("#live-state")).to_have_text("live (WebSocket)")
    expect(page.locator("#live-state")).to_have_attribute("title", re.compile(r"server-sent events failed"))
    site.get("/json?t=ws-live-1")
    site.get("/status/502?t=ws-live-2")
    expect(page.locator(ROWS).filter(has_text="t=ws-live-1")).to_have_count(1)
    failing = page.locator(ROWS).filter(has_text="t=ws-live-2")
    expect(failing.locator(".c-status")).to_have_text("502")
    # the filter went to the hub over the socket: other traffic stays out
    summaries = page.locator(f"{ROWS} .c-dst").all_inner_texts()
    assert summaries and set(summaries) == {f"127.0.0.1:{site.port}"}, summaries


def test_forcing_the_websocket_from_the_url(page, tap, site):
    open_ui(page, tap, site.kfl, transport="ws")
    expect(page.locator("#live-state")).to_have_text("live (WebSocket)")
    site.get("/json?t=ws-forced")
    expect(page.locator(ROWS).filter(has_text="t=ws-forced")).to_have_count(1)
