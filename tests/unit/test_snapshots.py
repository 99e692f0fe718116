"""Traffic snapshots (hub/snapshots.py) over fake workers: created from a window's entries and
packets, listed, downloaded, durable across a new hub on the same state dir, bounded by bytes
with a clear 413, and bad requests named by field."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import dpkt
import httpx
from litestar.testing import TestClient, create_test_client

from factories import tcp_packet
from hub.app import HubSettings, create_app
from hub.api.snapshots import SnapshotsController
from hub.kube.names import Names
from hub.rowbudget import RowBudget
from hub.services import provided
from hub.snapshots import DIRECTORY, SnapshotStore
from hub.workers import WorkerPool
from support.prometheus import parse_prometheus

LOCAL = "http://127.0.0.1"
ENTRY = {"id": "a:1", "node": "a", "protocol": "http", "ts": 10.0, "summary": "GET /x", "status": 200,
         "src": {"ip": "10.0.0.1", "port": 40000}, "dst": {"ip": "10.0.0.2", "port": 80}}
DETAIL = {**ENTRY, "response": {"status": 200, "body": {"data": "hello", "size": 5}}}
# an entry whose packets the worker evicted before the snapshot asked for its detail
EVICTED = {**ENTRY, "id": "a:2", "ts": 11.0, "summary": "POST /y", "status": 503}


def pcap(packets: int) -> bytes:
    out = io.BytesIO()
    writer = dpkt.pcap.Writer(out, nano=True)
    for number in range(packets):
        writer.writepkt(tcp_packet(payload=b"GET /x HTTP/1.1\r\n\r\n"), ts=10.0 + number)
    return out.getvalue()


def transport(seen: list[httpx.Request], entries: tuple[dict, ...] = (ENTRY,)) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path.endswith("/status"):
            return httpx.Response(200, json={"node": "a"})
        if path.endswith("/entries"):
            return httpx.Response(200, content=b"".join(json.dumps(e).encode() + b"\n" for e in entries))
        if path.endswith("/entries/a:1"):
            return httpx.Response(200, json=DETAIL)
        if path.endswith("/entries/a:2"):
            return httpx.Response(410, json={"error": "gone", "detail": "its packets were evicted"})
        if path.endswith("/pcap"):
            return httpx.Response(200, content=pcap(50), headers={"content-type": "application/vnd.tcpdump.pcap"})
        return httpx.Response(404, json={"error": "not found", "detail": path})
    return httpx.MockTransport(handle)


def client(state: Path | None, seen: list[httpx.Request], limit: int = 10_000_000,
           entries: tuple[dict, ...] = (ENTRY,)) -> TestClient:
    return TestClient(create_app(HubSettings(workers=["http://w1:8897"], poll_interval=60, retries=0,
                                             state_dir=state, snapshot_limit=limit,
                                             client_options={"transport": transport(seen, entries)})), base_url=LOCAL)


def test_a_snapshot_is_saved_listed_downloaded_and_outlives_the_hub(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    with client(tmp_path, seen) as hub:
        made = hub.post("/api/v1/snapshots", json={"name": "incident-1", "q": "http", "since": 5, "until": "1m"})
        assert made.status_code == 201, made.text
        meta = made.json()
        assert (meta["name"], meta["entries"], meta["details"], meta["q"], meta["partial"]) == (
            "incident-1", 1, 1, "http", [])
        assert meta["pcap_bytes"] == len(pcap(50))
        # the window and the query went to the worker, for the entries and the packets alike: the
        # same window, fixed when the snapshot began (a duration or an open end, left to the
        # worker, moved between the two requests: the pcap held flows the entries lacked)
        asked = [r for r in seen if r.url.path.endswith(("/entries", "/pcap"))]
        [(q, since, until)] = {(r.url.params["q"], r.url.params["since"], r.url.params["until"]) for r in asked}
        assert (q, float(since)) == ("http", 5.0) and abs(float(until) - (time.time() - 60)) < 5
        seen.clear()
        assert hub.post("/api/v1/snapshots", json={"name": "open-ended", "since": "10m"}).status_code == 201
        asked = [r for r in seen if r.url.path.endswith(("/entries", "/pcap"))]
        [(since, until)] = {(r.url.params["since"], r.url.params["until"]) for r in asked}
        assert abs(float(until) - float(since) - 600) < 0.001 and abs(float(until) - time.time()) < 5
        assert hub.delete("/api/v1/snapshots/open-ended").status_code == 204
        assert hub.post("/api/v1/snapshots", json={"name": "incident-1"}).status_code == 409
    (tmp_path / DIRECTORY / ".half.part").mkdir()        # as a hub killed mid-write leaves it
    with client(tmp_path, []) as hub:                    # a new hub on the same state dir
        listed = hub.get("/api/v1/snapshots").json()
        assert [s["name"] for s in listed["snapshots"]] == ["incident-1"]
        assert listed["bytes"] == meta["bytes"] + len((tmp_path / DIRECTORY / "incident-1" / "meta.json").read_bytes())
        assert not (tmp_path / DIRECTORY / ".half.part").exists()
        assert hub.get("/api/v1/snapshots/incident-1").json() == meta
        packets = hub.get("/api/v1/snapshots/incident-1/pcap")
        assert packets.headers["content-type"] == "application/vnd.tcpdump.pcap"
        assert len(list(dpkt.pcap.Reader(io.BytesIO(packets.content)))) == 50
        assert hub.get("/api/v1/snapshots/incident-1/entries").json() == {"entries": [ENTRY]}
        assert hub.get("/api/v1/snapshots/incident-1/entries/a:1").json() == DETAIL   # with the worker long gone
        samples = parse_prometheus(hub.get("/metrics").text)
        assert samples[("shark_hub_snapshots", "")] == 1 and samples[("shark_hub_snapshot_bytes", "")] == listed["bytes"]
        assert hub.delete("/api/v1/snapshots/incident-1").status_code == 204
        assert hub.get("/api/v1/snapshots/incident-1").status_code == 404
        assert hub.get("/api/v1/snapshots").json()["snapshots"] == []


def test_the_limit_refuses_a_snapshot_whole(tmp_path: Path) -> None:
    with client(tmp_path, [], limit=len(pcap(50)) + 500) as hub:
        assert hub.post("/api/v1/snapshots", json={"name": "first"}).status_code == 201
        refused = hub.post("/api/v1/snapshots", json={"name": "second"})
        assert refused.status_code == 413
        assert "--snapshot-limit" in refused.json()["detail"] and "delete some" in refused.json()["detail"]
        assert sorted(p.name for p in (tmp_path / DIRECTORY).iterdir()) == ["first"]   # nothing half kept
        samples = parse_prometheus(hub.get("/metrics").text)
        assert samples[("shark_hub_snapshots_refused_total", "")] == 1
        assert samples[("shark_hub_snapshot_limit_bytes", "")] == len(pcap(50)) + 500


def test_bad_requests_name_the_field(tmp_path: Path) -> None:
    with client(tmp_path, []) as hub:
        for body, status, field in [({"name": "../x"}, 400, "name:"), ({"q": "http and"}, 400, "q: column 9"),
                                    ({"since": "ten minutes"}, 400, "since:"), ({"until": True}, 400, "until:"),
                                    ({"size": 1}, 400, "size: unknown field"), ([1], 400, "body:"),
                                    # not a time (nan and 1e300 reached the worker's pcap export and
                                    # killed it: a 502), and a window that ends before it starts (an
                                    # empty snapshot, saved without a word)
                                    ({"since": "nan"}, 400, "since: 'nan' is not a time"),
                                    ({"until": 1e300}, 400, "until: 1e+300 is not a time"),
                                    ({"since": -5}, 400, "since: -5 is not a time"),
                                    ({"since": "1m", "until": "5m"}, 400, "until: "),
                                    ({"since": 100, "until": 50}, 400, "until: 50.000 is before since 100.000")]:
            answer = hub.post("/api/v1/snapshots", json=body)
            assert answer.status_code == status and answer.json()["detail"].startswith(field), (body, answer.text)
        assert hub.get("/api/v1/snapshots/nope/pcap").status_code == 404
        assert hub.post("/api/v1/snapshots", json={"name": "s", "since": "100000d"}).status_code == 201   # all
        for query, message in [("since=nan", "since: 'nan' is not a time"), ("since=1m&until=5m", "is before since")]:
            answer = hub.get(f"/api/v1/snapshots/s/entries?{query}")
            assert answer.status_code == 400 and message in answer.json()["detail"], answer.text
    with client(None, []) as hub:
        answer = hub.post("/api/v1/snapshots", json={})
        assert answer.status_code == 409 and "--state-dir" in answer.json()["detail"]


def test_snapshots_are_behind_the_token(tmp_path: Path) -> None:
    app = create_app(HubSettings(workers=["http://w1:8897"], poll_interval=60, retries=0, state_dir=tmp_path,
                                 token="s3cret", client_options={"transport": transport([])}))
    with TestClient(app, base_url=LOCAL) as hub:
        for method, path in [("POST", "/api/v1/snapshots"), ("GET", "/api/v1/snapshots"),
                             ("GET", "/api/v1/snapshots/x/pcap"), ("DELETE", "/api/v1/snapshots/x")]:
            assert hub.request(method, path, json={}).status_code == 401, path
        made = hub.post("/api/v1/snapshots", json={"name": "ok"}, headers={"Authorization": "Bearer s3cret"})
        assert made.status_code == 201, made.text


def test_an_opened_snapshot_is_filtered_by_kfl_and_its_entries_open_in_full(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    with client(tmp_path, seen, entries=(EVICTED, ENTRY)) as hub:
        meta = hub.post("/api/v1/snapshots", json={"name": "two"}).json()
        assert (meta["entries"], meta["details"]) == (2, 1)
        assert meta["bytes"] == meta["pcap_bytes"] + sum(
            (tmp_path / DIRECTORY / "two" / part).stat().st_size for part in ("entries.json", "details.jsonl"))
    with client(tmp_path, []) as hub:       # a new hub: the workers no longer matter
        def ids(**params: str) -> list[str]:
            answer = hub.get("/api/v1/snapshots/two/entries", params=params)
            assert answer.status_code == 200, answer.text
            assert answer.json()["workers"] == []
            return [e["id"] for e in answer.json()["entries"]]
        assert ids(q="") == ["a:2", "a:1"]                      # newest first, as saved
        assert ids(q="status >= 500") == ["a:2"]
        assert ids(q="status_code < 500") == ["a:1"]           # KFL2 names work as live
        assert ids(limit="1") == ["a:2"]
        assert ids(until="11") == ["a:1"] and ids(since="11") == ["a:2"]
        bad = hub.get("/api/v1/snapshots/two/entries", params={"q": "status >="})
        assert bad.status_code == 400 and bad.json()["detail"].startswith("q: column") and bad.json()["column"] == 10
        for params, field in [({"limit": "0"}, "limit:"), ({"until": "soon"}, "until:"), ({"node": "a"}, "node:")]:
            answer = hub.get("/api/v1/snapshots/two/entries", params=params)
            assert answer.status_code == 400 and answer.json()["detail"].startswith(field), answer.text
        assert hub.get("/api/v1/snapshots/two/entries/a:1").json() == DETAIL
        summary = hub.get("/api/v1/snapshots/two/entries/a:2").json()    # evicted: the summary, said so
        assert {k: v for k, v in summary.items() if k != "notes"} == EVICTED
        assert "only this entry's summary was saved" in summary["notes"][0]
        for path in ("/api/v1/snapshots/nope/entries?q=http", "/api/v1/snapshots/nope/entries/a:1",
                     "/api/v1/snapshots/two/entries/a:9"):
            answer = hub.get(path)
            assert answer.status_code == 404 and answer.json()["error"] == "not found", path
        assert "has no entry 'a:9'" in hub.get("/api/v1/snapshots/two/entries/a:9").json()["detail"]


def test_in_a_cluster_the_entries_are_saved_with_the_names_of_that_moment(tmp_path: Path) -> None:
    """The hub names endpoints at read time (hub/kube/names.py); a snapshot keeps the names of
    when it was saved, since the pods may be gone when it is opened."""
    unnamed = {**ENTRY, "src": {"ip": "10.0.0.1", "port": 40000, "name": "", "namespace": "", "kind": ""}}
    detail = {**unnamed, "response": DETAIL["response"]}

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/status"):
            return httpx.Response(200, json={"node": "a"})
        if path.endswith("/entries"):
            return httpx.Response(200, content=json.dumps(unnamed).encode() + b"\n")
        if path.endswith("/entries/a:1"):
            return httpx.Response(200, json=detail)
        return httpx.Response(200, content=pcap(1))

    def fill(entry: dict) -> dict:
        if entry["src"]["ip"] == "10.0.0.1" and not entry["src"]["kind"]:
            entry["src"].update(name="frontend-7d9", namespace="shop", kind="pod")
        return entry

    # the controller alone, given a fill as hub/services.py gives it the cluster's
    pool = WorkerPool(["http://w1:8897"], poll_interval=60, retries=0, transport=httpx.MockTransport(handle))
    store = SnapshotStore(tmp_path / DIRECTORY)
    parts = {"pool": pool, "snapshots": store, "names": Names(fill), "row_budget": RowBudget()}
    with create_test_client(route_handlers=[SnapshotsController],
                            dependencies={name: provided(part) for name, part in parts.items()}) as hub:
        assert hub.post("/api/v1/snapshots", json={"name": "named"}).status_code == 201
        [saved] = hub.get("/api/v1/snapshots/named/entries").json()["entries"]
        full = hub.get("/api/v1/snapshots/named/entries/a:1").json()
    named = {"ip": "10.0.0.1", "port": 40000, "name": "frontend-7d9", "namespace": "shop", "kind": "pod"}
    assert saved["src"] == named and full["src"] == named
    assert full["response"]["body"]["data"] == "hello"


def test_a_snapshot_saves_and_answers_at_most_max_query_rows(tmp_path: Path) -> None:
    """--max-query-rows bounds a snapshot as it does a live query: the workers are asked for at
    most that many entries, and an opened snapshot's limit past it is a 400 naming the option."""
    seen: list[httpx.Request] = []
    app = create_app(HubSettings(workers=["http://w1:8897"], poll_interval=60, retries=0, state_dir=tmp_path,
                                 max_query_rows=7, client_options={"transport": transport(seen, (ENTRY, EVICTED))}))
    with TestClient(app, base_url=LOCAL) as hub:
        assert hub.post("/api/v1/snapshots", json={"name": "capped"}).status_code == 201
        assert {r.url.params["limit"] for r in seen if r.url.path.endswith("/entries")} == {"7"}
        over = hub.get("/api/v1/snapshots/capped/entries", params={"limit": "8"})
        assert over.status_code == 400 and "maximum of 7 rows per query (--max-query-rows)" in over.json()["detail"]
        assert len(hub.get("/api/v1/snapshots/capped/entries", params={"limit": "7"}).json()["entries"]) == 2


def test_a_snapshot_writes_its_entries_as_they_arrive_without_holding_them(tmp_path: Path) -> None:
    """Saving a snapshot held every entry the workers sent (up to 100k, as dicts) outside
    --max-held-rows until the last had arrived: two at once and a /har passed the hub's memory.
    The entries go to the snapshot's file as they stream in: when the worker sends its last
    line, those before it are on disk already."""
    count = 3_000
    on_disk_before_last: list[int] = []

    async def lines():
        for number in range(count, 0, -1):               # newest first, as workers send
            if number == 1:
                parts = list((tmp_path / DIRECTORY).glob(".*.part/entries.json"))
                on_disk_before_last.append(parts[0].stat().st_size if parts else 0)
            entry = {**ENTRY, "id": f"a:{number + 10}", "ts": 100.0 + number, "summary": "GET /" + "x" * 200}
            yield json.dumps(entry).encode() + b"\n"

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/status"):
            return httpx.Response(200, json={"node": "a"})
        if path.endswith("/entries"):
            return httpx.Response(200, content=lines())
        if path.endswith("/pcap"):
            return httpx.Response(200, content=pcap(1))
        return httpx.Response(410, json={"error": "gone", "detail": "evicted"})

    app = create_app(HubSettings(workers=["http://w1:8897"], poll_interval=60, retries=0, state_dir=tmp_path,
                                 client_options={"transport": httpx.MockTransport(handle)}))
    with TestClient(app, base_url=LOCAL) as hub:
        created = hub.post("/api/v1/snapshots", json={"name": "big"})
        assert created.status_code == 201, created.text
        assert created.json()["entries"] == count
        saved = hub.get("/api/v1/snapshots/big/entries").json()["entries"]
    assert [e["id"] for e in saved[:2]] == [f"a:{count + 10}", f"a:{count + 9}"] and len(saved) == count
    # ~240 bytes an entry: all but the last (less one write buffer) were written already
    assert on_disk_before_last and on_disk_before_last[0] > (count - 1) * 240 - 64 * 1024, on_disk_before_last
