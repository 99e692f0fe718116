"""The service map, the stats (traffic over time, worker health), downloads of the current
filter (pcap, HAR) and the themes, in a real browser against a real tap."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import dpkt
import httpx
import pytest
from playwright.sync_api import expect

from ui_support import ROOT, open_ui, settled

pytestmark = pytest.mark.root

ROWS = "#feed .feed-spacer .feed-row:not([hidden])"


def make_traffic(site, tag: str) -> None:
    for number in range(4):
        site.get(f"/json?t={tag}-{number}")
    site.get(f"/status/500?t={tag}-fail")
    site.get(f"/slow/50?t={tag}-slow")


def test_the_service_map_shows_the_connection_with_counts_errors_and_latency(page, tap, site):
    open_ui(page, tap, site.kfl)
    make_traffic(site, "map")
    expect(page.locator(ROWS).filter(has_text="t=map-slow")).to_have_count(1)
    page.get_by_role("tab", name="Service map").click()
    expect(page).to_have_url(re.compile(r"view=map"))
    target = f"127.0.0.1:{site.port}"
    figure = page.get_by_role("img", name="Service map: 2 endpoints, 1 connection")
    expect(figure).to_be_visible()
    expect(figure.locator(f'g.node[data-id="{target}"]')).to_have_count(1)
    expect(figure.locator('g.node[data-id="127.0.0.1"]')).to_have_count(1)
    edge = figure.locator(f'g.edge[data-source="127.0.0.1"][data-target="{target}"]')
    expect(edge.locator(".edge-label")).to_have_text(re.compile(r"^6 req · 17% err · p50 [0-9.]+ m?s / p99 [0-9.]+ m?s$"))
    # the edge and both nodes are drawn where they can be seen
    box = figure.bounding_box()
    for element in (edge.locator("path"), figure.locator("g.node").first):
        inner = element.bounding_box()
        assert box["x"] <= inner["x"] and inner["x"] + inner["width"] <= box["x"] + box["width"] + 1, (box, inner)

    row = page.get_by_role("table", name="Connections").locator(f'tr[data-target="{target}"]')
    cells = row.locator("td").all_inner_texts()
    # ... errors, error rate, failed connections (none), unanswered
    assert cells[:8] == ["127.0.0.1", target, "http", "6", "1", "17%", "0", "0"], cells
    p99 = cells[9]
    assert re.fullmatch(r"[0-9.]+ ms", p99) and float(p99.split()[0]) >= 50, cells   # /slow/50 is the slowest

    # the map's numbers are the hub's
    hub = tap.api("/servicemap", params={"q": site.kfl}).json()
    assert hub["edges"][0]["count"] == 6 and hub["edges"][0]["errors"] == 1

    # a connection leads to its traffic
    row.get_by_role("button", name=re.compile("^Show traffic")).click()
    expect(page.get_by_role("tab", name="Traffic")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("combobox", name="KFL filter")).to_have_value(
        f'src.ip == "127.0.0.1" and dst.ip == "127.0.0.1" and dst.port == {site.port}')
    expect(page.locator(ROWS).filter(has_text="t=map-")).to_have_count(6)


def test_stats_show_traffic_over_time_and_worker_health(page, tap, site):
    open_ui(page, tap, site.kfl)
    make_traffic(site, "stats")
    expect(page.locator(ROWS).filter(has_text="t=stats-slow")).to_have_count(1)
    count = page.locator(ROWS).count()
    errors = page.locator(f"{ROWS} .c-status.st-error").count()
    assert errors >= 1
    page.keyboard.press("3")
    expect(page.get_by_role("tab", name="Stats")).to_have_attribute("aria-selected", "true")
    protocols = page.get_by_role("img", name=re.compile(r"^Entries per protocol: "))
    expect(protocols).to_have_attribute("aria-label", f"Entries per protocol: HTTP {count}")
    statuses = page.get_by_role("img", name=re.compile(r"^Entries per status: "))
    expect(statuses).to_have_attribute("aria-label", f"Entries per status: success {count - errors}, error {errors}")
    table = page.get_by_role("table", name="Entries per protocol")
    expect(table.locator('tr[data-protocol="http"] td').nth(1)).to_have_text(str(count))

    workers = page.get_by_role("table", name="Workers")
    status = tap.api("/status").json()
    node = status["workers"][0]["node"]
    row = workers.locator(f'tr[data-node="{node}"]')
    expect(row.locator("td").first).to_have_text("up")
    expect(row.locator("td").nth(1)).to_contain_text("af_packet:lo")
    # the hub polls each worker's /status every 2 s and the page the hub every 3 s: the
    # counter can lag the traffic by a poll or two
    expect(row.locator("td").nth(2)).to_have_text(re.compile(r"^[1-9][0-9,]*$"), timeout=15_000)
    expect(row.get_by_role("meter", name=f"storage of {node}")).to_be_visible()
    expect(row.locator("td").nth(5)).to_contain_text("/ 191 MiB")   # the default 200MB limit
    expect(page.get_by_role("button", name="workers 1/1")).to_be_visible()


def test_pcap_and_har_of_the_current_filter_download(page, tap, site):
    query = f'{site.kfl} and request.path == "/status/500" and request.query["t"][0].startsWith("dl-")'
    open_ui(page, tap, query)
    site.get("/json?t=dl-other")
    site.get("/status/500?t=dl-a")
    site.get("/status/500?t=dl-b")
    expect(page.locator(ROWS).filter(has_text="t=dl-")).to_have_count(2)

    with page.expect_download() as info:
        page.get_by_role("link", name="Download pcap of the filtered traffic").click()
    data = Path(info.value.path()).read_bytes()
    reader = dpkt.pcap.Reader(io.BytesIO(data))
    payloads = []
    for _, frame in reader:
        ip = dpkt.ethernet.Ethernet(frame).data if reader.datalink() == dpkt.pcap.DLT_EN10MB else dpkt.ip.IP(frame)
        if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP) and ip.data.data:
            payloads.append(bytes(ip.data.data))
    requests = sorted(p.split(b"\r\n")[0] for p in payloads if p.startswith(b"GET "))
    assert requests == [b"GET /status/500?t=dl-a HTTP/1.1", b"GET /status/500?t=dl-b HTTP/1.1"], requests

    with page.expect_download() as info:
        page.get_by_role("link", name="Download HAR of the filtered traffic").click()
    assert info.value.suggested_filename == "shark.har"
    har = json.loads(Path(info.value.path()).read_text())
    urls = sorted(entry["request"]["url"] for entry in har["log"]["entries"])
    assert urls == [f"http://127.0.0.1:{site.port}/status/500?t=dl-a", f"http://127.0.0.1:{site.port}/status/500?t=dl-b"]
    assert {entry["response"]["status"] for entry in har["log"]["entries"]} == {500}


def test_dark_and_light_themes_switch_and_stick(page, tap, site):
    open_ui(page, tap)
    html = page.locator("html")
    start = html.get_attribute("data-theme")
    other = "light" if start == "dark" else "dark"
    page.get_by_role("button", name=f"Switch to {other} theme").click()
    expect(html).to_have_attribute("data-theme", other)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.reload()
    expect(html).to_have_attribute("data-theme", other)
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == background
    page.get_by_role("button", name=f"Switch to {start} theme").click()
    expect(html).to_have_attribute("data-theme", start)
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != background


def test_the_hub_serves_the_page_and_its_modules_with_their_types(tap):
    spa = ROOT / "spa"
    page = httpx.get(tap.url + "/", timeout=10)
    assert page.status_code == 200
    assert '<script type="module" src="js/main.js">' in page.text
    # a shared link with a filter loads the same page
    assert httpx.get(tap.url + "/", params={"q": "http and status >= 500"}, timeout=10).text == page.text
    for module in sorted(spa.rglob("*.js")):
        response = httpx.get(f"{tap.url}/{module.relative_to(spa).as_posix()}", timeout=10)
        assert response.status_code == 200, module
        # browsers refuse ES modules served with another type
        assert response.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert httpx.get(tap.url + "/app.css", timeout=10).headers["content-type"].startswith("text/css")


def test_a_snapshot_of_the_filtered_traffic_is_saved_downloaded_and_deleted(page, tap, site):
    query = f'{site.kfl} and request.query["t"][0].startsWith("snap-")'
    open_ui(page, tap, query)
    site.get("/json?t=snap-a")
    site.get("/status/500?t=snap-b")
    site.get("/json?t=other")
    expect(page.locator(ROWS).filter(has_text="t=snap-")).to_have_count(2)

    page.get_by_role("tab", name="Snapshots").click()
    page.get_by_label("Snapshot name").fill("ui-snap")
    page.get_by_role("button", name="Save snapshot").click()
    expect(page.locator("#snapshot-message")).to_have_text(re.compile(r"^saved ui-snap: 2 entries, "))
    row = page.locator("table.snapshots tr[data-name=ui-snap]")
    expect(row).to_contain_text("startsWith(\"snap-\")")

    with page.expect_download() as info:
        page.get_by_role("link", name="Download pcap of ui-snap").click()
    reader = dpkt.pcap.Reader(io.BytesIO(Path(info.value.path()).read_bytes()))
    requests = sorted(bytes(tcp.data).split(b" HTTP/")[0] for _, frame in reader
                      for tcp in [dpkt.ethernet.Ethernet(frame).data.data]
                      if isinstance(tcp, dpkt.tcp.TCP) and tcp.data.startswith(b"GET "))
    assert requests == [b"GET /json?t=snap-a", b"GET /status/500?t=snap-b"], requests

    page.get_by_role("button", name="Save snapshot").click()      # the same name again: refused, said
    expect(page.locator("#snapshot-message")).to_contain_text("not saved: 409 name: a snapshot named 'ui-snap' exists")
    page.get_by_role("button", name="Delete ui-snap").click()
    expect(row).to_have_count(0)
    expect(page.locator("#snapshot-message")).to_have_text("deleted ui-snap")


def test_an_opened_snapshot_shows_its_entries_read_only_filtered_and_in_full(page, tap, site):
    query = f'{site.kfl} and request.query["t"][0].startsWith("open-")'
    open_ui(page, tap, query)
    site.post("/echo?t=open-json", json={"order": 7, "paid": True})
    site.get("/status/500?t=open-fail")
    expect(page.locator(ROWS).filter(has_text="t=open-")).to_have_count(2)
    page.get_by_role("tab", name="Snapshots").click()
    page.get_by_label("Snapshot name").fill("ui-open")
    page.get_by_role("button", name="Save snapshot").click()
    expect(page.locator("#snapshot-message")).to_have_text(re.compile(r"^saved ui-open: 2 entries, "))
    site.get("/json?t=open-later")           # live traffic after the snapshot: not in it

    page.get_by_role("button", name="Open ui-open").click()
    expect(page).to_have_url(re.compile(r"snapshot=ui-open"))
    expect(page.get_by_role("tab", name="Traffic")).to_have_attribute("aria-selected", "true")
    banner = page.get_by_role("region", name="Opened snapshot")
    expect(banner).to_contain_text(re.compile(r"Snapshot ui-open — read-only: 2 entries saved .*not live traffic"))
    expect(page.locator("#live-state")).to_have_text("snapshot (not live)")
    settled(page)
    expect(page.locator(ROWS).filter(has_text="t=open-")).to_have_count(2)
    expect(page.locator(ROWS).filter(has_text="t=open-later")).to_have_count(0)
    expect(page.locator("#pause")).to_be_disabled()

    # KFL filters the saved entries (a KFL2 name here), as it does live ones
    box = page.get_by_role("combobox", name="KFL filter")
    box.fill("status_code >= 500")
    expect(page.locator("#kfl-form")).to_have_attribute("data-state", "valid")
    box.press("Enter")
    expect(page.locator(ROWS)).to_have_count(1)
    expect(page.locator(ROWS)).to_contain_text("GET /status/500?t=open-fail")
    expect(banner).to_be_visible()

    # an entry opens in full from what the snapshot saved (the request body is in it)
    box.fill('path == "/echo"')
    box.press("Enter")
    row = page.locator(ROWS).filter(has_text="POST /echo?t=open-json")
    expect(row).to_have_count(1)
    settled(page)
    with page.expect_response(re.compile(r"/api/v1/snapshots/ui-open/entries/[^/?]+$")) as answer:
        row.click()
    assert answer.value.status == 200
    detail = page.get_by_role("region", name="Entry detail")
    expect(detail.locator("h2")).to_have_text("POST /echo?t=open-json")
    body = detail.get_by_role("region", name="Request", exact=True).get_by_role("region", name="Request body")
    expect(body.locator("pre.body.json")).to_contain_text('"paid": true')
    expect(detail.get_by_role("link", name="Download the snapshot's pcap")).to_have_attribute(
        "href", re.compile(r"/api/v1/snapshots/ui-open/pcap$"))

    # back to live: the banner goes, the live feed and its newer traffic come back
    banner.get_by_role("button", name="Back to live").click()
    expect(banner).to_be_hidden()
    expect(page).not_to_have_url(re.compile(r"snapshot="))
    expect(page.locator("#live-state")).to_have_text(re.compile(r"^live \((SSE|WebSocket)\)$"))
    box.fill(query)
    box.press("Enter")
    expect(page.locator(ROWS).filter(has_text="t=open-later")).to_have_count(1)

    # the snapshot shown is deleted: the page goes back to live traffic
    page.get_by_role("tab", name="Snapshots").click()
    page.get_by_role("button", name="Open ui-open").click()
    expect(banner).to_be_visible()
    page.get_by_role("tab", name="Snapshots").click()
    page.get_by_role("button", name="Delete ui-open").click()
    expect(page.locator("#snapshot-message")).to_have_text("deleted ui-open")
    expect(banner).to_be_hidden()
    expect(page).not_to_have_url(re.compile(r"snapshot="))
    expect(page.locator("#live-state")).to_have_text(re.compile(r"^live \((SSE|WebSocket)\)$"))
