"""The hub's worker client and pool against mocked workers (respx): failures are stated."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest
import respx
from litestar.testing import TestClient

from factories import tentry_json
from hub.app import HubSettings, create_app
from hub.har import har_log
from hub.workers import WorkerClient, WorkerPool
from shark.model import WorkerPart
from shark.pcap import encode_header, encode_record

URLS = ["http://w1:8897", "http://w2:8897", "http://w3:8897"]
LOCAL = "http://127.0.0.1"        # a Host the hub serves (shark/auth.py refuses others)


def entry(node: str, seq: int, ts: float, **extra) -> dict:
    return tentry_json(id=f"{node}:{seq}", node=node, ts=ts, summary=f"GET /{seq}", **extra)


def ndjson(*entries: dict) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in entries)


def status(node: str) -> httpx.Response:
    return httpx.Response(200, json={"node": node, "capture": {"received": 1}})


def pool(urls=URLS, **options) -> WorkerPool:
    return WorkerPool(urls, retries=options.pop("retries", 2), backoff=0.001, timeout=1.0, **options)


def run(coro):
    return asyncio.run(coro)


@respx.mock
def test_merge_is_newest_first_across_workers():
    respx.get("http://w1:8897/api/v1/entries").respond(200, content=ndjson(entry("a", 3, 30.0), entry("a", 1, 10.0)))
    respx.get("http://w2:8897/api/v1/entries").respond(200, content=ndjson(entry("b", 2, 25.0), entry("b", 1, 5.0)))
    # a worker that sends oldest first is sorted, not trusted
    respx.get("http://w3:8897/api/v1/entries").respond(200, content=ndjson(entry("c", 1, 12.0), entry("c", 2, 28.0)))

    async def go():
        p = pool()
        try:
            return await p.entries({}, limit=5)
        finally:
            await p.close()
    answer = run(go())
    assert [e["id"] for e in answer.entries] == ["a:3", "c:2", "b:2", "c:1", "a:1"]
    assert all(w.ok for w in answer.workers)
    assert [w.count for w in answer.workers] == [2, 2, 2]


SEQ_MARK, TS_MARK = "@seq@", 123456789.25


def line_maker(node: str, **extra: Any) -> Callable[[int, float], bytes]:
    """`json.dumps(entry(node, seq, ts, **extra))` and a newline, made from a template dumped
    once: tens of thousands of json.dumps of whole entries (under tracemalloc) took most of the
    time of the tests that stream big answers. Checked against the plain way once."""
    template = json.dumps(entry(node, SEQ_MARK, TS_MARK, **extra))   # type: ignore[arg-type]

    def line(seq: int, ts: float) -> bytes:
        return template.replace(SEQ_MARK, str(seq)).replace(repr(TS_MARK), repr(ts)).encode() + b"\n"
    assert line(7, 7.5) == json.dumps(entry(node, 7, 7.5, **extra)).encode() + b"\n"
    return line


class Lines(httpx.AsyncByteStream):
    """A worker answer made as it is read (nothing of it held before): `count` entries of
    `node`, oldest first (the order a worker must not send, which the hub still sorts)."""

    def __init__(self, node: str, count: int) -> None:
        self.node, self.count = node, count
        self.line = line_maker(node, pad="x" * 150)

    async def __aiter__(self):
        for seq in range(self.count):
            yield self.line(seq, seq + 0.001 * int(self.node[1:]))


@respx.mock
def test_whole_answers_hold_limit_entries_not_workers_times_limit():
    """In cluster mode (names filled in) and for scripts, HAR and the service map, the hub
    reads the workers' answers whole: 40 workers x 1500 entries (about 13 MB of lines) for
    a limit of 20 must not be held."""
    import tracemalloc
    urls = [f"http://w{n}:8897" for n in range(1, 41)]
    for n, url in enumerate(urls, 1):
        respx.get(f"{url}/api/v1/entries").mock(return_value=httpx.Response(200, stream=Lines(f"w{n}", 1500)))

    async def go():
        p = pool(urls)
        try:
            tracemalloc.start()
            answer = await p.entries({}, limit=20)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            return answer, peak
        finally:
            await p.close()
    answer, peak = run(go())
    # the newest 20 across all workers: seq 1499 of each of the 20 highest-numbered nodes
    assert [e["id"] for e in answer.entries] == [f"w{n}:1499" for n in range(40, 20, -1)]
    assert [w.count for w in answer.workers] == [1500] * 40
    assert peak < 3 * 1024 * 1024, f"{peak / 1e6:.1f} MB held while merging"


@respx.mock
def test_limit_and_query_are_pushed_down():
    route = respx.get("http://w1:8897/api/v1/entries").respond(200, content=b"")

    async def go():
        p = pool(URLS[:1])
        try:
            await p.entries({"q": "http", "since": "5m"}, limit=7)
        finally:
            await p.close()
    run(go())
    params = route.calls.last.request.url.params
    assert (params["q"], params["since"], params["limit"]) == ("http", "5m", "7")


@respx.mock
def test_one_of_three_failing_is_a_partial_answer_naming_it():
    respx.get("http://w1:8897/api/v1/status").mock(return_value=status("a"))
    respx.get("http://w2:8897/api/v1/status").mock(return_value=status("b"))
    respx.get("http://w3:8897/api/v1/status").mock(return_value=status("c"))
    respx.get("http://w1:8897/api/v1/entries").respond(200, content=ndjson(entry("a", 1, 10.0)))
    respx.get("http://w2:8897/api/v1/entries").mock(side_effect=httpx.ConnectError("refused"))
    respx.get("http://w3:8897/api/v1/entries").respond(200, content=ndjson(entry("c", 1, 11.0)))

    async def go():
        p = pool()
        try:
            await p.refresh_all()
            return await p.entries({}, limit=10), p.health()
        finally:
            await p.close()
    answer, health = run(go())
    assert [e["id"] for e in answer.entries] == ["c:1", "a:1"]
    failed = [w for w in answer.workers if not w.ok]
    assert len(failed) == 1
    assert failed[0].node == "b" and failed[0].url == "http://w2:8897/api/v1"
    assert "cannot connect" in failed[0].error
    assert [h["ok"] for h in health] == [True, False, True]


@respx.mock
def test_timeout_is_reported():
    respx.get("http://w1:8897/api/v1/entries").respond(200, content=ndjson(entry("a", 1, 10.0)))
    slow = respx.get("http://w2:8897/api/v1/entries").mock(side_effect=httpx.ReadTimeout("slow"))

    async def go():
        p = pool(URLS[:2])
        try:
            return await p.entries({}, limit=10)
        finally:
            await p.close()
    answer = run(go())
    assert [e["id"] for e in answer.entries] == ["a:1"]
    assert answer.workers[1].ok is False
    assert "timed out" in answer.workers[1].error
    assert slow.call_count == 3   # one try + two retries


@respx.mock
def test_malformed_lines_are_skipped_and_counted():
    body = ndjson(entry("a", 2, 20.0)) + b"{not json\n" + b'"a string"\n' + ndjson(entry("a", 1, 10.0))
    respx.get("http://w1:8897/api/v1/entries").respond(200, content=body)

    async def go():
        p = pool(URLS[:1])
        try:
            return await p.entries({}, limit=10)
        finally:
            await p.close()
    answer = run(go())
    assert [e["id"] for e in answer.entries] == ["a:2", "a:1"]
    assert msgspec.to_builtins(answer.workers) == [{"node": "a", "url": "http://w1:8897/api/v1", "ok": True, "error": None,
                               "count": 2, "skipped": 2}]


@respx.mock
def test_retries_with_backoff_then_success():
    route = respx.get("http://w1:8897/api/v1/status").mock(side_effect=[
        httpx.ConnectError("refused"), httpx.Response(503, json={"error": "unavailable", "detail": "busy"}),
        status("a")])

    async def go():
        client = WorkerClient(URLS[0], retries=2, backoff=0.001)
        try:
            answer = await client.refresh()
            return answer, client
        finally:
            await client.aclose()
    answer, client = run(go())
    assert answer["node"] == "a" and client.node == "a"
    assert route.call_count == 3
    assert client.health.ok is True and client.health.last_seen is not None


@respx.mock
def test_a_4xx_is_not_retried():
    route = respx.get("http://w1:8897/api/v1/entries/a:9").respond(404, json={"error": "not found", "detail": "no entry"})

    async def go():
        client = WorkerClient(URLS[0], retries=3, backoff=0.001)
        try:
            await client.get("/entries/a:9")
        finally:
            await client.aclose()
    with pytest.raises(Exception, match="no entry"):
        run(go())
    assert route.call_count == 1


def _pcap(linktype: int, *stamps_ns: int) -> bytes:
    return encode_header(linktype, 65535) + b"".join(
        encode_record(ts, f"pkt{ts}".encode(), 10) for ts in stamps_ns)


def _records(data: bytes) -> list[int]:
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data)
    assert magic == 0xA1B23C4D
    offset, stamps = 24, []
    while offset < len(data):
        sec, frac, incl, _ = struct.unpack_from("<IIII", data, offset)
        stamps.append(sec * 1_000_000_000 + frac)
        offset += 16 + incl
    return stamps


@respx.mock
def test_merged_pcap_is_time_ordered():
    respx.get("http://w1:8897/api/v1/pcap").respond(200, content=_pcap(1, 1_000, 5_000, 9_000_000_001))
    respx.get("http://w2:8897/api/v1/pcap").respond(200, content=_pcap(1, 2_000, 3_000, 7_000))
    respx.get("http://w3:8897/api/v1/pcap").mock(side_effect=httpx.ConnectError("refused"))

    async def go():
        p = pool()
        try:
            answer = await p.pcap({})
            return answer.workers, b"".join([chunk async for chunk in answer.chunks()])
        finally:
            await p.close()
    workers, data = run(go())
    assert _records(data) == [1_000, 2_000, 3_000, 5_000, 7_000, 9_000_000_001]
    assert [w.ok for w in workers] == [True, True, False]


@respx.mock
def test_merged_pcap_names_workers_it_leaves_out_and_ends_cut_short_when_one_breaks_midway():
    whole = _pcap(1, 1_000, 4_000)
    respx.get("http://w1:8897/api/v1/pcap").respond(200, content=whole)
    respx.get("http://w2:8897/api/v1/pcap").respond(200, content=_pcap(113, 2_000))   # Linux cooked
    respx.get("http://w3:8897/api/v1/pcap").respond(200, content=b"<html>not a pcap</html>" * 2)

    async def go(*extra):
        p = pool()
        try:
            answer = await p.pcap({})
            data = b""
            try:
                async for chunk in answer.chunks():
                    data += chunk
            except Exception as error:   # noqa: BLE001 - the test looks at it
                return answer.workers, data, error
            return answer.workers, data, None
        finally:
            await p.close()
    workers, data, error = run(go())
    assert error is None and _records(data) == [1_000, 4_000]
    assert [(w.ok, w.error) for w in workers][0] == (True, None)
    assert "link type is 113" in workers[1].error and "not a pcap" in workers[2].error

    # w3 sends a header and a packet, then its stream breaks: the others' packets all come,
    # then the answer fails instead of ending like a whole file
    broken = _pcap(1, 3_000, 5_000)[:-10]
    respx.get("http://w2:8897/api/v1/pcap").respond(200, content=_pcap(1, 2_000, 6_000))
    respx.get("http://w3:8897/api/v1/pcap").respond(200, content=broken)
    workers, data, error = run(go())
    assert all(w.ok for w in workers)
    assert _records(data) == [1_000, 2_000, 3_000, 4_000, 6_000]
    assert type(error).__name__ == "PcapCutShort" and "cut short" in str(error)


@respx.mock
def test_app_validates_kfl_before_asking_workers():
    respx.get("http://w1:8897/api/v1/status").mock(return_value=status("a"))
    entries = respx.get("http://w1:8897/api/v1/entries").respond(200, content=b"")
    app = create_app(HubSettings(workers=URLS[:1], poll_interval=60, backoff=0.001))
    with TestClient(app, base_url=LOCAL) as client:
        for path in ("/api/v1/entries", "/api/v1/pcap", "/api/v1/har"):
            response = client.get(path, params={"q": "http and =="})
            assert response.status_code == 400, path
            assert response.json()["column"] == 10
            assert set(response.json()) == {"error", "detail", "column"}
        assert client.get("/api/v1/query/validate", params={"q": "dns or"}).json()["valid"] is False
        assert client.get("/api/v1/query/validate", params={"q": "dns"}).json() == {
            "valid": True, "error": None, "column": None}
        assert client.get("/api/v1/entries", params={"bogus": "1"}).status_code == 400
    assert entries.call_count == 0


@respx.mock
def test_app_routes_detail_to_the_owner():
    respx.get("http://w1:8897/api/v1/status").mock(return_value=status("a"))
    respx.get("http://w2:8897/api/v1/status").mock(return_value=status("b"))
    respx.get("http://w2:8897/api/v1/entries/b:4").respond(200, json=entry("b", 4, 1.0))
    respx.get("http://w2:8897/api/v1/entries/b:5").respond(410, json={"error": "gone", "detail": "evicted"})
    app = create_app(HubSettings(workers=URLS[:2], poll_interval=60, backoff=0.001))
    with TestClient(app, base_url=LOCAL) as client:
        assert client.get("/api/v1/entries/b:4").json()["id"] == "b:4"
        gone = client.get("/api/v1/entries/b:5")
        assert gone.status_code == 410 and gone.json() == {"error": "gone", "detail": "evicted"}
        missing = client.get("/api/v1/entries/zz:1")
        assert missing.status_code == 404 and "zz" in missing.json()["detail"]
        assert client.get("/api/v1/entries/nonsense").status_code == 400
        assert [w["node"] for w in client.get("/api/v1/workers").json()] == ["a", "b"]
        assert client.get("/api/v1/status").json()["hub"]["workers_ok"] == 2


def test_har_of_an_http_entry():
    e = entry("a", 1, 1764150000.5, elapsed_ms=12.5, status=200,
              request={"method": "GET", "path": "/x", "query": {"a": ["1"]}, "version": "HTTP/1.1",
                       "headers": {"host": "svc"}, "host": "svc"},
              response={"status": 200, "reason": "OK", "version": "HTTP/1.1",
                        "headers": {"content-type": "text/plain"}, "content_length": 5})
    har = har_log([e], [WorkerPart("a", "u", True, None)])["log"]
    assert har["version"] == "1.2"
    one = har["entries"][0]
    assert one["startedDateTime"] == "2025-11-26T09:40:00.500Z"
    assert one["request"]["url"] == "http://svc/x?a=1"
    assert one["request"]["queryString"] == [{"name": "a", "value": "1"}]
    assert one["response"]["content"] == {"size": 5, "mimeType": "text/plain"}
    assert one["time"] == 12.5


def test_client_queue_drops_the_oldest_and_counts():
    from hub.events import HubEvent, entry_event
    from shark.queues import DropOldest

    async def go():
        queue: DropOldest[HubEvent] = DropOldest(size=3)
        for number in range(5):
            queue.put(entry_event(str(number).encode(), str(number)))
        first, lost = await queue.get()
        second, lost_after = await queue.get()
        return first.data, lost, second.data, lost_after
    assert run(go()) == (b"2", 2, b"3", 0)


def test_event_ids_are_positions_per_node_and_bad_ones_name_the_part():
    from hub.stream import format_positions, parse_positions
    positions = {"node-b": ("a1b2c3d4", 7), "ip-10-0-0-5.ec2.internal": ("ffee0011", 42), "odd,name@x:": ("", 3)}
    text = format_positions(positions)
    assert text.startswith("ip-10-0-0-5.ec2.internal@ffee0011:42,")        # sorted by node
    assert "\n" not in text and parse_positions(text) == positions
    one = {"odd,name@x:": ("", 3)}                     # one node: the id of a single worker's feed
    assert format_positions(one) == "odd%2Cname%40x%3A@:3" and parse_positions(format_positions(one)) == one
    for bad, part in [("node-a@x1:", 1), ("node-a@x1:4,node-b", 2), ("@x1:4", 1), ("n@x-1:4", 1), ("n@s:-4", 1)]:
        try:
            parse_positions(bad)
        except ValueError as error:
            assert f"part {part}" in str(error) and "NODE@STORE:SEQ" in str(error)
        else:
            raise AssertionError(f"{bad!r} was accepted")


class StreamingWorkers(httpx.AsyncBaseTransport):
    """Workers whose /entries bodies are async generators, so a test controls when each line
    is sent."""

    def __init__(self, bodies) -> None:  # noqa: ANN001
        self.bodies = bodies

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = self.bodies[request.url.host]
        if isinstance(body, Exception):
            raise body
        return httpx.Response(200, content=body())


def test_entries_stream_merged_newest_first_before_the_slowest_worker_ends():
    released = asyncio.Event()

    def fast():
        async def lines():
            yield ndjson(entry("a", 3, 30.0), entry("a", 1, 10.0))
            yield b"{not json\n"
        return lines()

    def slow():
        async def lines():
            yield ndjson(entry("b", 2, 25.0))
            await released.wait()                         # the rest only when the test says so
            yield ndjson(entry("b", 1, 5.0), entry("b", 0, 12.0))   # 12.0 after 5.0: out of order
        return lines()

    async def go():
        p = WorkerPool(URLS, retries=0, timeout=2.0, transport=StreamingWorkers(
            {"w1": fast, "w2": slow, "w3": httpx.ConnectError("refused")}))
        try:
            merged = await p.open_entries({}, limit=10)
            chunks = merged.chunks(flush_at=1)
            first = await chunks.__anext__()
            assert not released.is_set()
            released.set()
            rest = [chunk async for chunk in chunks]
            return first, json.loads(first + b"".join(rest))
        finally:
            await p.close()
    first, answer = run(go())
    assert json.loads(first.removeprefix(b'{"entries":['))["id"] == "a:3"   # out before b's end
    assert [e["id"] for e in answer["entries"]] == ["a:3", "b:2", "a:1", "b:1", "b:0"]
    w1, w2, w3 = answer["workers"]
    assert (w1["ok"], w1["count"], w1["skipped"]) == (True, 2, 1)
    assert (w2["ok"], w2["count"], w2["unordered"]) == (True, 3, 1)
    assert w3["ok"] is False and "cannot connect" in w3["error"]


def test_entries_stream_stops_at_the_limit_and_a_worker_failing_midway_is_named():
    def steady():
        async def lines():
            for n in range(100, 0, -1):
                yield ndjson(entry("a", n, float(n)))
        return lines()

    def breaking():
        async def lines():
            yield ndjson(entry("b", 1, 99.5))
            raise httpx.ReadError("connection reset")
        return lines()

    async def go():
        p = WorkerPool(URLS[:2], retries=0, timeout=2.0, transport=StreamingWorkers({"w1": steady, "w2": breaking}))
        try:
            merged = await p.open_entries({}, limit=5)
            return json.loads(b"".join([chunk async for chunk in merged.chunks()]))
        finally:
            await p.close()
    answer = run(go())
    assert [e["id"] for e in answer["entries"]] == ["a:100", "b:1", "a:99", "a:98", "a:97"]
    w1, w2 = answer["workers"]
    assert w1["ok"] is True
    assert w2["ok"] is False and "connection reset" in w2["error"] and "after 1 entries" in w2["error"]


def test_har_streamed_from_the_lines_is_har_log_and_holds_no_dicts_of_all_entries():
    """/har was har_log over every entry decoded (dicts of entries and of HAR entries): one
    limit=100000 request took the hub from 60 MB to ~330 MB. har_chunks makes the same
    document an entry at a time from the workers' lines."""
    import tracemalloc

    from hub.har import har_chunks
    entries = [entry("a", seq, 1764150000.0 + seq // 2, status=200, elapsed_ms=1.5,
                     request={"method": "GET", "path": f"/{seq}", "headers": {"host": "svc"}, "host": "svc",
                              "query": {"q": ["x" * 300]}},
                     response={"status": 200, "reason": "OK", "headers": {"content-type": "text/plain"}})
               for seq in range(4000, 0, -1)]       # newest first, as the workers send; ties of two
    raws = [json.dumps(e).encode() for e in entries]
    workers = [WorkerPart("a", "u", True, None), WorkerPart("b", "v", False, "refused")]
    expected = har_log([json.loads(r) for r in raws], workers)

    async def body() -> bytes:
        return b"".join([chunk async for chunk in har_chunks(list(raws), workers)])
    assert json.loads(run(body())) == expected

    async def peak() -> int:
        tracemalloc.start()
        try:
            async for _chunk in har_chunks(list(raws), workers):
                pass      # sent on: not held
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    lines = len(b"".join(raws))
    # about 0.11x the lines (the order and the chunk being made); har_log over them: 8.2x
    assert run(peak()) < lines, f"{run(peak()) / 1e6:.1f} MB for {lines / 1e6:.1f} MB of lines"


class NewestFirst(httpx.AsyncByteStream):
    """A worker's /entries as the contract has it, newest first, made as it is read."""

    def __init__(self, node: str, count: int) -> None:
        self.node, self.count = node, count
        self.makers: dict[tuple[int, int], Callable[[int, float], bytes]] = {}

    async def __aiter__(self):
        for seq in range(self.count, 0, -1):
            key = (seq % 7, 500 if seq % 10 == 0 else 200)
            if key not in self.makers:
                self.makers[key] = line_maker(self.node, pad="x" * 150, elapsed_ms=float(key[0]), status=key[1])
            yield self.makers[key](seq, float(seq))


@respx.mock
def test_the_service_map_folds_entries_in_as_they_stream():
    """It decoded every entry of the answer first: one limit=100000 request took a hub to 886 MB
    (its limit is 512Mi). Now each entry is folded in and dropped as it arrives."""
    import tracemalloc
    for n, url in enumerate(URLS[:2], 1):
        respx.get(f"{url}/api/v1/status").mock(return_value=status(f"w{n}"))
        respx.get(f"{url}/api/v1/entries").mock(return_value=httpx.Response(200, stream=NewestFirst(f"w{n}", 20_000)))
    app = create_app(HubSettings(workers=URLS[:2], poll_interval=60, backoff=0.001))
    with TestClient(app, base_url=LOCAL) as client:
        tracemalloc.start()
        try:
            body = client.get("/api/v1/servicemap", params={"limit": "100000"}).json()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert body["entries"] == 40_000 and [w["count"] for w in body["workers"]] == [20_000, 20_000]
    [edge] = body["edges"]
    assert (edge["count"], edge["errors"], edge["p99_ms"]) == (40_000, 4_000, 6.0)
    assert peak < 8_000_000, f"{peak / 1e6:.1f} MB held for ~20 MB of lines"


@respx.mock
def test_entries_with_on_item_queried_go_through_the_scripts_in_batches():
    """With a script's onItemQueried the hub read every entry of the answer, decoded, and
    handed them all to the scripts at once. Now batches of 500 go through as they stream in,
    and the script's time limit still holds for the whole answer."""
    import tracemalloc

    from hub.scripts import ScriptSettings
    for n, url in enumerate(URLS[:2], 1):
        respx.get(f"{url}/api/v1/status").mock(return_value=status(f"w{n}"))
        respx.get(f"{url}/api/v1/entries").mock(
            side_effect=lambda request, n=n: httpx.Response(200, stream=NewestFirst(f"w{n}", 10_000)))
    app = create_app(HubSettings(workers=URLS[:2], poll_interval=60, backoff=0.001,
                                 scripts=ScriptSettings(time_limit_s=60.0)))
    with TestClient(app, base_url=LOCAL) as client:
        made = client.post("/api/v1/scripts", json={"name": "mark", "code":
                           "function onItemQueried(e) { e.summary = 'seen ' + e.id; }"})
        assert made.status_code == 201, made.text
        tracemalloc.start()
        try:
            answer = client.get("/api/v1/entries", params={"limit": "100000"})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    body = answer.json()
    assert len(body["entries"]) == 20_000 and [w["count"] for w in body["workers"]] == [10_000, 10_000]
    assert all(e["summary"] == f"seen {e['id']}" for e in body["entries"])
    # 26.6 MB with the 12.3 MB answer the test client buffers; every entry decoded and handed
    # to the script at once: 182.7 MB
    assert peak < 60_000_000, f"{peak / 1e6:.1f} MB for {len(answer.content) / 1e6:.1f} MB answered"
