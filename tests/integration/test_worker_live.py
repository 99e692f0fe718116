"""The worker end to end on lo: real server, real clients (curl, httpx), live capture."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from support.processes import wait_for

pytestmark = pytest.mark.root


def curl(*args: str) -> str:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture
def worker(start_worker, http_server):
    return start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}")


def test_live_requests_become_entries(worker, http_server):
    base = f"http://127.0.0.1:{http_server}"
    curl(f"{base}/json?x=1")
    curl("-X", "POST", "-H", "Content-Type: application/json", "-d", '{"item": 7}', f"{base}/echo")
    curl(f"{base}/status/503")
    curl("-I", f"{base}/hello")
    started = time.monotonic()
    with httpx.Client(base_url=base) as client:  # one keep-alive connection, three exchanges
        for path in ("/a", "/b", "/slow/150"):
            client.get(path)
    client_elapsed_ms = (time.monotonic() - started) * 1000

    entries = wait_for(lambda: (e := worker.entries(limit=100)) and len(e) >= 7 and e,
                       what="7 entries")
    assert len(entries) == 7
    by_path = {e["request"]["path"]: e for e in entries}
    assert set(by_path) == {"/json", "/echo", "/status/503", "/hello", "/a", "/b", "/slow/150"}
    assert by_path["/json"]["request"]["query"] == {"x": ["1"]}
    assert by_path["/echo"]["request"]["method"] == "POST"
    assert by_path["/echo"]["size"]["request"] > len('{"item": 7}')
    assert by_path["/status/503"]["status"] == 503
    assert by_path["/hello"]["request"]["method"] == "HEAD"
    assert by_path["/hello"]["status"] == 200
    slow = by_path["/slow/150"]
    assert 150 <= slow["elapsed_ms"] <= client_elapsed_ms
    for entry in entries:
        assert entry["protocol"] == "http"
        assert entry["complete"] is True
        assert entry["dst"]["port"] == http_server
        assert entry["src"]["ip"] == entry["dst"]["ip"] == "127.0.0.1"
        assert entry["id"].startswith(f"{worker.node}:")
        assert "body" not in entry["request"]
    # newest first
    assert [e["ts"] for e in entries] == sorted((e["ts"] for e in entries), reverse=True)
    # the keep-alive connection's three exchanges share a client port
    assert by_path["/a"]["src"]["port"] == by_path["/b"]["src"]["port"] == slow["src"]["port"]

    status = worker.status()
    assert status["capture"]["received"] > 0
    assert status["capture"]["dropped"] == 0
    assert status["index"]["entries"] == 7
    assert status["store"]["bytes"] <= status["store"]["limit"]


def test_filters_narrow_entries(worker, http_server):
    base = f"http://127.0.0.1:{http_server}"
    for path in ("/status/500", "/status/502", "/status/404", "/json"):
        curl(f"{base}{path}")
    wait_for(lambda: len(worker.entries()) >= 4, what="4 entries")
    assert {e["status"] for e in worker.entries(q="status >= 500")} == {500, 502}
    assert [e["status"] for e in worker.entries(q="http and response.status == 404")] == [404]
    assert [e["request"]["path"] for e in worker.entries(q='request.path.startsWith("/js")')] == ["/json"]
    assert len(worker.entries(q="http", limit=2)) == 2
    assert worker.entries(q='request.method == "POST"') == []
    assert worker.entries(q="redis") == []
    assert len(worker.entries(q="")) == 4
    assert len(worker.entries(since="5m")) == 4
    assert worker.entries(until=str(time.time() - 3600)) == []


def test_detail_has_decoded_bodies(worker, http_server):
    base = f"http://127.0.0.1:{http_server}"
    curl("--compressed", f"{base}/gzip")
    curl("-X", "POST", "-H", "Content-Type: application/json", "-d", '{"item": 7}', f"{base}/echo")
    entries = wait_for(lambda: (e := worker.entries()) and len(e) >= 2 and e, what="2 entries")
    by_path = {e["request"]["path"]: e for e in entries}

    gz = worker.get(f"/entries/{by_path['/gzip']['id']}").json()
    body = gz["response"]["body"]
    assert body["data"] == "compressed hello " * 50
    assert body["content_encoding"] == "gzip"
    assert body["truncated"] is False

    echo = worker.get(f"/entries/{by_path['/echo']['id']}").json()
    assert echo["request"]["body"]["data"] == '{"item": 7}'
    assert echo["response"]["body"]["data"] == '{"item": 7}'


def test_entry_pcap_is_read_by_tshark(worker, http_server, tmp_path):
    curl(f"http://127.0.0.1:{http_server}/json")
    entry = wait_for(lambda: worker.entries(), what="an entry")[0]
    response = worker.get(f"/entries/{entry['id']}/pcap")
    assert response.headers["content-type"].startswith("application/vnd.tcpdump.pcap")
    path = tmp_path / "entry.pcap"
    path.write_bytes(response.content)
    fields = subprocess.run(
        ["tshark", "-r", str(path), "-d", f"tcp.port=={http_server},http", "-Y", "http",
         "-T", "fields", "-e", "http.request.method", "-e", "http.request.uri",
         "-e", "http.response.code"],
        check=True, capture_output=True, text=True).stdout.split("\n")
    rows = [line.split("\t") for line in fields if line.strip()]
    assert rows == [["GET", "/json", ""], ["", "", "200"]]


def _sse(stream) -> Iterator[tuple[str, str | None, str]]:  # noqa: ANN001
    """(event, id, data) of an SSE response, as they come."""
    kind, event_id, data = "message", None, []
    for line in stream.iter_lines():
        if line == "":
            if data:
                yield kind, event_id, "\n".join(data)
            kind, event_id, data = "message", None, []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def test_sse_stream_delivers_new_entries(worker, http_server):
    base = f"http://127.0.0.1:{http_server}"
    with httpx.Client(timeout=20) as client:
        with client.stream("GET", f"{worker.url}/stream", params={"q": "status >= 500"}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = _sse(stream)
            kind, _, data = next(events)
            # first the hello: which node and store, and the seq the live entries come after
            hello = json.loads(data)
            assert kind == "hello" and hello["node"] == worker.node and hello["reset"] is False
            assert hello["store"].isalnum() and isinstance(hello["head"], int)
            curl(f"{base}/status/200")
            curl(f"{base}/status/500")
            kind, event_id, data = next(events)
    entry = json.loads(data)
    assert (kind, entry["status"]) == ("entry", 500)
    assert event_id == entry["id"].split(":")[1] and int(event_id) > hello["head"]

    # Resume: with Last-Event-ID (SEQ, or STORE:SEQ as the hub sends) the stream first replays
    # what came after that event, then says `live`.
    curl(f"{base}/status/501")
    wait_for(lambda: worker.entries(q="status == 501"), what="the 501 entry")
    for last in (event_id, f"{hello['store']}:{event_id}"):
        with httpx.Client(timeout=20) as client:
            with client.stream("GET", f"{worker.url}/stream", params={"q": "status >= 500"},
                               headers={"Last-Event-ID": last}) as stream:
                events = _sse(stream)
                assert json.loads(next(events)[2])["reset"] is False
                kind, _, data = next(events)
                assert kind == "entry" and json.loads(data)["status"] == 501
                kind, _, data = next(events)
                assert kind == "live" and json.loads(data)["evicted"] == 0
    # an id of another store (this one reset since) replays all this store holds
    with httpx.Client(timeout=20) as client:
        with client.stream("GET", f"{worker.url}/stream", params={"q": "status >= 500"},
                           headers={"Last-Event-ID": f"0other0:{event_id}"}) as stream:
            events = _sse(stream)
            assert json.loads(next(events)[2])["reset"] is True
            replayed = []
            for kind, _, data in events:
                if kind == "live":
                    break
                replayed.append(json.loads(data)["status"])
            assert replayed[-2:] == [500, 501]


def test_bad_query_parameters_name_the_field(worker):
    cases = {
        "/entries?limit=abc": "limit",
        "/entries?limit=0": "limit",
        "/entries?status=500": "status",
        "/entries?since=yesterday": "since",
        "/entries?since=nan": "since",
        "/pcap?until=1e300": "until",          # reached int(until * 1e9): the stream died, no answer
        "/entries?since=1m&until=5m": "until",  # a window that ends before it starts
        "/entries?colour=red": "colour",
        "/stream?port=80": "port",
        "/entries/test-node:notanumber": "id",
    }
    for path, field in cases.items():
        response = worker.get(path)
        assert response.status_code == 400, path
        body = response.json()
        assert body["error"] == "bad request"
        assert body["detail"].startswith(field), (path, body)
    assert worker.get("/entries/test-node:999999").status_code == 404
    assert worker.get("/entries/other-node:1").status_code == 404


def test_ids_no_entry_can_have_are_400_never_500(worker):
    # a number past SQLite's INTEGER made the index raise OverflowError, and '²' passed
    # str.isdigit() but not int(): both were a 500 (the Last-Event-ID one through latin-1 \xb2)
    for number in ("99999999999999999999999", "9223372036854775808", "\u00b2"):
        for path in (f"/entries/test-node:{number}", f"/entries/test-node:{number}/pcap"):
            response = worker.get(path)
            assert response.status_code == 400, (path, response.text)
            assert response.json()["detail"].startswith("id: "), response.text
        tags = httpx.post(worker.url + "/tags", timeout=10, headers={"Content-Type": "application/json"},
                          content=json.dumps({"changes": [{"id": f"test-node:{number}", "add": ["x"]}]}))
        assert tags.status_code == 400 and tags.json()["detail"].startswith("changes[0].id: "), tags.text
        stream = worker.get("/stream", headers={"Last-Event-ID": number.encode("latin-1")})
        assert stream.status_code == 400 and stream.json()["detail"].startswith("Last-Event-ID: "), stream.text
    assert worker.get("/entries/test-node:9223372036854775807").status_code == 404


def test_bad_queries_are_400_with_the_column(worker):
    for route in ("/entries", "/stream", "/pcap"):
        response = worker.get(route, params={"q": "status =="})
        assert response.status_code == 400, route
        assert response.json() == {
            "error": "bad request", "column": 10,
            "detail": "q: column 10: expected a value after '==', got end of query"}
    # a pattern RE2 cannot run in linear time: 400 with its column, never a frozen worker
    refused = worker.get("/entries", params={"q": 'request.path.matches("x(?=y)")'})
    assert refused.status_code == 400 and refused.json()["column"] == 24
    assert "lookahead (?=...) is not supported" in refused.json()["detail"]
    valid = worker.get("/query/validate", params={"q": 'http and request.path.startsWith("/api")'})
    assert valid.status_code == 200 and valid.json() == {"valid": True, "error": None, "column": None}
    invalid = worker.get("/query/validate", params={"q": "http and (status == 500"}).json()
    assert invalid["valid"] is False and invalid["column"] == 24
    assert invalid["error"].startswith("column 24: expected")
    assert worker.get("/query/validate").json()["valid"] is True   # empty matches everything


def test_config_and_targets_validate_input(worker, http_server):
    put = lambda path, body: httpx.put(worker.url + path, content=body, timeout=10,  # noqa: E731
                                       headers={"Content-Type": "application/json"})
    assert put("/config", b'{"storage_limit": "lots"}').json()["detail"].startswith("storage_limit")
    assert put("/config", b'{"storage_limit": "1MB"}').status_code == 400
    assert put("/config", b'{"colour": 1}').json()["detail"].startswith("colour")
    assert put("/config", b"not json").json()["detail"].startswith("body")
    ok = put("/config", b'{"storage_limit": "50MB"}')
    assert ok.status_code == 200 and ok.json() == {"storage_limit": 50_000_000}
    assert worker.status()["store"]["limit"] == 50_000_000

    bad = put("/targets", b'{"ips": ["127.0.0.1", "not-an-ip"]}')
    assert bad.status_code == 400 and bad.json()["detail"].startswith("ips[1]")
    assert put("/targets", b'{"ips": "127.0.0.1"}').status_code == 400
    # Targeting an address that carries no traffic narrows capture to nothing ...
    narrowed = put("/targets", b'{"ips": ["10.213.99.99"]}')
    assert narrowed.status_code == 200
    assert narrowed.json()["bpf"] == f"(tcp port {http_server}) and (host 10.213.99.99)"
    curl(f"http://127.0.0.1:{http_server}/ignored")
    # ... and clearing the targets brings it back.
    assert put("/targets", b'{"ips": []}').status_code == 200
    curl(f"http://127.0.0.1:{http_server}/seen")
    entries = wait_for(lambda: worker.entries(), what="an entry after clearing targets")
    assert [e["request"]["path"] for e in entries] == ["/seen"]


def test_a_huge_contiguous_target_list_becomes_a_few_networks(worker, http_server):
    """60k target IPs made a 1.2 MB BPF filter that libpcap refused: consecutive addresses are
    now merged into the networks they fill, an exact filter of a few terms."""
    ips = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(60_000)]
    applied = httpx.put(worker.url + "/targets", json={"ips": ips}, timeout=60)
    assert applied.status_code == 200, applied.text[:500]
    answer = applied.json()
    assert answer["exact_in_kernel"] is True and len(answer["bpf"]) < 300, answer["bpf"]
    assert answer["bpf"].startswith(f"(tcp port {http_server}) and (net 10.0.0.0/17 or ")
    assert httpx.put(worker.url + "/targets", json={"ips": []}, timeout=10).status_code == 200
    curl(f"http://127.0.0.1:{http_server}/still")
    wait_for(lambda: any(e["request"]["path"] == "/still" for e in worker.entries()), what="an entry after the change")


def test_a_long_sparse_target_list_applies_at_once_and_keeps_only_its_addresses(worker, http_server):
    """2000 scattered pod addresses: libpcap spent seconds of CPU on their `host` chain in the
    capture loop (capture and /status stalled; the API gave up after 10 s with a 400) and made a
    program the kernel refuses. Now the kernel gets a few covering networks and the capture
    child keeps exactly the packets of the targets: 127.0.0.2 is one, 127.0.0.3 is not (both
    are inside the covering network of 127.0.0.2)."""
    scattered = [f"10.{1 + i // 250}.{i * 37 % 256}.{1 + i % 250}" for i in range(1999)]
    started = time.monotonic()
    applied = httpx.put(worker.url + "/targets", json={"ips": ["127.0.0.2", *scattered]}, timeout=60)
    took = time.monotonic() - started
    assert applied.status_code == 200, applied.text[:500]
    assert took < 5.0, took
    assert applied.json()["exact_in_kernel"] is False and len(applied.json()["bpf"]) < 1000
    status = worker.status()
    assert status["capture"]["running"] and len(status["targets"]["ips"]) == 2000
    base = f"http://127.0.0.1:{http_server}"
    curl("--interface", "127.0.0.3", f"{base}/other")
    curl("--interface", "127.0.0.2", f"{base}/target")
    entries = wait_for(lambda: [e for e in worker.entries() if e["request"]["path"] == "/target"],
                       what="the target's entry")
    assert entries[0]["src"]["ip"] == "127.0.0.2"
    assert wait_for(lambda: worker.status()["capture"]["target_left_out"], what="the non-target's packets dropped") > 0
    assert [e["request"]["path"] for e in worker.entries()] == ["/target"]
