"""The entry detail in a real browser: headers, bodies pretty-printed (JSON, XML, text) or as
hex, both ends, timing, tags; a field click adds it to the filter; this entry's pcap downloads.
Also makes the README's screenshot (docs/ui.png)."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import dpkt
import pytest
from playwright.sync_api import expect

from ui_support import ARTIFACTS, ROOT, open_ui, settled, update_screenshot

pytestmark = pytest.mark.root

ROWS = "#feed .feed-spacer .feed-row:not([hidden])"


def open_row(page, text: str):
    row = page.locator(ROWS).filter(has_text=text)
    expect(row).to_have_count(1)
    settled(page)
    row.click()
    detail = page.get_by_role("region", name="Entry detail")
    expect(detail.locator("h2")).to_have_text(text.split("  ")[0])
    expect(detail).not_to_have_attribute("aria-busy", "true")
    return detail


def test_detail_shows_headers_and_a_pretty_json_body(page, tap, site):
    open_ui(page, tap, site.kfl)
    site.post("/echo?t=detail-json", json={"order": {"id": 7, "items": ["a", "b"]}, "paid": True},
              headers={"X-Trace": "abc123"})
    detail = open_row(page, "POST /echo?t=detail-json")

    request = detail.get_by_role("region", name="Request", exact=True)
    expect(request.get_by_role("group", name="request headers")).to_contain_text("abc123")
    expect(request.get_by_role("button", name='Filter by request.headers["x-trace"] == "abc123"')).to_be_visible()
    body = request.get_by_role("region", name="Request body")
    expect(body).to_have_attribute("data-kind", "json")
    pretty = body.locator("pre.body.json")
    expect(pretty).to_have_text('{\n  "order": {\n    "id": 7,\n    "items": [\n      "a",\n      "b"\n    ]\n  },\n  "paid": true\n}')
    expect(pretty.locator(".j-key").first).to_have_text('"order"')
    body.get_by_role("button", name="Raw").click()
    expect(body.locator("pre.body.raw")).to_have_text('{"order":{"id":7,"items":["a","b"]},"paid":true}')

    response = detail.get_by_role("region", name="Response", exact=True)
    expect(response.get_by_role("button", name="Filter by response.status == 200")).to_be_visible()
    expect(response.get_by_role("region", name="Response body").locator("pre.body.json")).to_contain_text('"paid": true')

    ends = detail.get_by_role("region", name="Source → Destination")
    expect(ends.get_by_label("Destination")).to_contain_text(str(site.port))
    timing = detail.get_by_role("region", name="Timing")
    expect(timing).to_contain_text("response end")
    expect(detail.get_by_role("region", name="Overview")).to_contain_text("tags")

    # README screenshot: the dark theme, the feed filtered, this detail open
    for path in ("/api/orders?page=2", "/api/orders/7", "/status/500?t=checkout", "/json?t=catalog",
                 "/status/404?t=missing", "/gzip?t=assets", "/slow/120?t=report"):
        site.get(path)
    site.post("/echo?t=detail-json-2", json={"order": {"id": 8, "items": ["c"]}, "paid": False})
    expect(page.locator(ROWS).filter(has_text="t=report")).to_have_count(1)
    page.locator(ROWS).filter(has_text="POST /echo?t=detail-json").first.click()
    if page.evaluate("document.documentElement.dataset.theme") != "dark":
        page.get_by_role("button", name="Switch to dark theme").click()
    expect(detail.get_by_role("region", name="Request body")).to_be_attached()
    # the request's headers and body in view, below the panel's sticky header
    detail.get_by_role("region", name="Request", exact=True).evaluate("el => el.scrollIntoView({block: 'start'})")
    detail.evaluate("el => el.scrollBy(0, -el.querySelector('.detail-head').offsetHeight)")
    page.evaluate("document.activeElement.blur()")
    page.mouse.move(700, 880)   # no hover highlight in the picture
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "ui.png"
    page.screenshot(path=str(shot))
    target = ROOT / "docs" / "ui.png"
    if update_screenshot() or not target.exists():
        shutil.copyfile(shot, target)


def test_binary_bodies_are_a_hex_dump_and_compressed_ones_are_decoded(page, tap, site):
    open_ui(page, tap, site.kfl)
    site.get("/bytes/40?t=detail-bin")
    site.get("/gzip?t=detail-gzip")
    detail = open_row(page, "GET /bytes/40?t=detail-bin")
    body = detail.get_by_role("region", name="Response body")
    expect(body).to_have_attribute("data-kind", "binary")
    expect(body.locator("pre.body.hex")).to_have_text(
        "00000000  78 78 78 78 78 78 78 78  78 78 78 78 78 78 78 78  |xxxxxxxxxxxxxxxx|\n"
        "00000010  78 78 78 78 78 78 78 78  78 78 78 78 78 78 78 78  |xxxxxxxxxxxxxxxx|\n"
        "00000020  78 78 78 78 78 78 78 78                           |xxxxxxxx|")
    expect(body).to_contain_text("40 B binary")

    detail = open_row(page, "GET /gzip?t=detail-gzip")
    body = detail.get_by_role("region", name="Response body")
    expect(body).to_contain_text("decoded from gzip")
    expect(body.locator("pre.body.text")).to_contain_text("compressed hello compressed hello")


def test_clicking_a_field_adds_it_to_the_filter(page, tap, site):
    open_ui(page, tap, site.kfl)
    site.get("/json?t=detail-field-a", headers={"X-Team": "blue"})
    site.get("/json?t=detail-field-b", headers={"X-Team": "red"})
    detail = open_row(page, "GET /json?t=detail-field-a")
    detail.get_by_role("button", name='Filter by request.headers["x-team"] == "blue"').click()
    expected = f'{site.kfl} and request.headers["x-team"] == "blue"'
    expect(page.get_by_role("combobox", name="KFL filter")).to_have_value(expected)
    expect(page.locator(ROWS).filter(has_text="t=detail-field-a")).to_have_count(1)
    expect(page.locator(ROWS).filter(has_text="t=detail-field-b")).to_have_count(0)
    # the hub agrees the filter the page built is valid KFL, and means what the rows show
    assert tap.api("/query/validate", params={"q": expected}).json()["valid"] is True
    page.go_back()
    expect(page.get_by_role("combobox", name="KFL filter")).to_have_value(site.kfl)
    expect(page.locator(ROWS).filter(has_text="t=detail-field-b")).to_have_count(1)


def test_this_entrys_pcap_downloads(page, tap, site):
    open_ui(page, tap, site.kfl)
    site.get("/json?t=detail-pcap")
    detail = open_row(page, "GET /json?t=detail-pcap")
    with page.expect_download() as info:
        detail.get_by_role("link", name="Download this entry's pcap").click()
    download = info.value
    assert download.suggested_filename.endswith(".pcap")
    data = Path(download.path()).read_bytes()
    payloads = [bytes(ip.data.data) for ip in _ip_packets(data) if isinstance(ip.data, dpkt.tcp.TCP)]
    assert any(p.startswith(b"GET /json?t=detail-pcap HTTP/1.1") for p in payloads), payloads
    assert any(p.startswith(b"HTTP/1.0 200") or p.startswith(b"HTTP/1.1 200") for p in payloads)


def test_an_evicted_or_unknown_entry_says_why(page, tap, site):
    open_ui(page, tap, site.kfl, entry="nosuchnode:1")
    detail = page.get_by_role("region", name="Entry detail")
    expect(detail.get_by_role("alert")).to_have_text(re.compile(r"Cannot show nosuchnode:1: .*no worker named 'nosuchnode'"))


def _ip_packets(data: bytes):
    reader = dpkt.pcap.Reader(io.BytesIO(data))
    for _, frame in reader:
        if reader.datalink() == dpkt.pcap.DLT_EN10MB:
            packet = dpkt.ethernet.Ethernet(frame).data
        else:
            packet = dpkt.sll.SLL(frame).data if reader.datalink() == 113 else dpkt.ip.IP(frame)
        if isinstance(packet, (dpkt.ip.IP, dpkt.ip6.IP6)):
            yield packet
