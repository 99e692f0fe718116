"""The hub as a real process over two real workers capturing real HTTP traffic on lo."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hub.stream import parse_positions
from support.processes import TEST_TOKEN, Proc, free_port, wait_for

pytestmark = pytest.mark.root
TESTS = Path(__file__).resolve().parents[1]
# hub and workers ask for the token, as a tap's do; the hub sends it to the workers
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


class Hub(Proc):
    def __init__(self, *worker_urls: str, state_dir: Path | None = None) -> None:
        args = [a for url in worker_urls for a in ("--worker", url)]
        args += ["--state-dir", str(state_dir)] if state_dir is not None else []
        super().__init__([sys.executable, "-m", "hub", *args, "--listen", "127.0.0.1:0",
                          "--poll-interval", "0.3", "--timeout", "5"], env={"SHARK_TOKEN": TEST_TOKEN})
        self.url = self.wait_line(r"hub serving on (http://\S+)").group(1) + "/api/v1"

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, headers={**AUTH, **kwargs.pop("headers", {})}, **kwargs)


@pytest.fixture
def second_server():
    port = free_port()
    server = Proc([sys.executable, "-m", "support.http_server", str(port)], env={"PYTHONPATH": str(TESTS)})
    server.wait_line(r"listening")
    yield port
    server.stop()


@pytest.fixture
def cluster(start_worker, http_server, second_server, tmp_path):
    alpha = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}", node="alpha", token=TEST_TOKEN)
    beta = start_worker("--iface", "lo", "--bpf", f"tcp port {second_server}", node="beta", token=TEST_TOKEN)
    # both URL forms are accepted; a state dir for snapshots (docs/API.md's examples make one)
    hub = Hub(alpha.url, beta.url.removesuffix("/api/v1"), state_dir=tmp_path / "hub-state")
    yield hub, alpha, beta, http_server, second_server
    assert hub.stop() == 0, hub.output


def traffic(port_a: int, port_b: int) -> None:
    """Interleaved requests: a, b, a, b, a (3 on alpha, 2 on beta)."""
    for number, port in enumerate((port_a, port_b, port_a, port_b, port_a)):
        httpx.get(f"http://127.0.0.1:{port}/json?n={number}", timeout=10)


def all_entries(hub: Hub, count: int, **params) -> dict:
    def check():
        body = hub.get("/entries", params=params).json()
        return body if len(body["entries"]) >= count else None
    return wait_for(check, what=f"{count} entries through the hub")


def test_merged_answers_from_two_workers(cluster, tmp_path):
    hub, alpha, beta, port_a, port_b = cluster
    traffic(port_a, port_b)
    body = all_entries(hub, 5)
    entries = body["entries"]
    assert len(entries) == 5
    assert [e["node"] for e in entries] == ["alpha", "beta", "alpha", "beta", "alpha"]
    assert [e["ts"] for e in entries] == sorted((e["ts"] for e in entries), reverse=True)
    assert [e["request"]["query"]["n"] for e in entries] == [["4"], ["3"], ["2"], ["1"], ["0"]]
    assert {(w["node"], w["ok"]) for w in body["workers"]} == {("alpha", True), ("beta", True)}

    # q is pushed down; limit applies to the merged answer
    only_beta = hub.get("/entries", params={"q": 'node == "beta"'}).json()["entries"]
    assert [e["node"] for e in only_beta] == ["beta", "beta"]
    assert len(hub.get("/entries", params={"limit": 3}).json()["entries"]) == 3

    # detail of each node's entry, routed to its owner
    for entry in (entries[0], entries[1]):
        detail = hub.get(f"/entries/{entry['id']}")
        assert detail.status_code == 200, detail.text
        assert detail.json()["id"] == entry["id"]
        assert "body" in detail.json()["response"]
        pcap = hub.get(f"/entries/{entry['id']}/pcap")
        assert pcap.status_code == 200 and pcap.headers["content-type"].startswith("application/vnd.tcpdump.pcap")
        one = tmp_path / f"{entry['node']}.pcap"
        one.write_bytes(pcap.content)
        assert int(subprocess.run(["tshark", "-r", str(one), "-T", "fields", "-e", "frame.number"],
                                  capture_output=True, text=True, check=True).stdout.split()[-1]) > 0
    assert hub.get(f"/entries/{entries[0]['node']}:999999").status_code == 404

    # merged pcap: every packet of both workers, one file, time ordered
    merged = hub.get("/pcap")
    assert merged.status_code == 200
    path = tmp_path / "merged.pcap"
    path.write_bytes(merged.content)
    singles = [len(w.get("/pcap").content) for w in (alpha, beta)]
    assert len(merged.content) == sum(singles) - 24   # one header instead of two
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch",
                          "-e", "tcp.port"], capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines() if line]
    stamps = [float(row[0]) for row in rows]
    assert stamps == sorted(stamps)
    ports = {int(p) for row in rows for p in row[1].split(",")}
    assert {port_a, port_b} <= ports
    assert len(rows) > 10
    per_worker = []
    for worker in (alpha, beta):
        single = tmp_path / f"{worker.node}-all.pcap"
        single.write_bytes(worker.get("/pcap").content)
        per_worker.append(len(subprocess.run(["tshark", "-r", str(single), "-T", "fields", "-e", "frame.number"],
                                             capture_output=True, text=True, check=True).stdout.split()))
    assert len(rows) == sum(per_worker)

    # HAR 1.2
    har = hub.get("/har")
    assert har.status_code == 200
    log = json.loads(har.text)["log"]
    assert log["version"] == "1.2" and log["creator"]["name"]
    assert len(log["entries"]) == 5
    assert log["entries"][0]["request"]["url"].endswith("/json?n=0")
    assert log["entries"][0]["response"]["status"] == 200
    assert len(hub.get("/har", params={"q": 'node == "alpha"'}).json()["log"]["entries"]) == 3

    # bad KFL: 400 with the column, at the hub
    bad = hub.get("/entries", params={"q": "http and"})
    assert bad.status_code == 400
    assert bad.json()["column"] == 9 and bad.json()["error"] == "bad request"
    assert hub.get("/query/validate", params={"q": "http and"}).json()["valid"] is False

    assert hub.get("/status").json()["hub"]["workers_ok"] == 2
    assert httpx.get(hub.url.removesuffix("/api/v1") + "/schema/openapi.json", headers=AUTH).status_code == 200


def test_a_dead_worker_gives_a_partial_answer(cluster):
    hub, alpha, beta, port_a, port_b = cluster
    traffic(port_a, port_b)
    all_entries(hub, 5)
    beta.signal(signal.SIGKILL)
    beta.process.wait(10)
    body = hub.get("/entries").json()
    assert [e["node"] for e in body["entries"]] == ["alpha"] * 3
    by_node = {w["node"]: w for w in body["workers"]}
    assert by_node["alpha"]["ok"] is True
    assert by_node["beta"]["ok"] is False and "cannot connect" in by_node["beta"]["error"]
    wait_for(lambda: [w["ok"] for w in hub.get("/workers").json()] == [True, False], what="beta down in /workers")
    beta_entry = f"beta:{1}"
    gone = hub.get(f"/entries/{beta_entry}")
    assert gone.status_code == 502 and "beta" in gone.json()["detail"]
    pcap = hub.get("/pcap")
    assert pcap.status_code == 200 and pcap.headers["x-shark-partial"] == "beta"


class SseReader:
    """Reads the hub's SSE stream in a thread; `events` fills as they arrive."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, **params) -> None:
        import threading
        self.events: list[dict[str, str]] = []
        self.client = httpx.Client(timeout=httpx.Timeout(30, read=None))
        self.request = self.client.build_request("GET", url, params=params, headers={**AUTH, **(headers or {})})
        self.response = self.client.send(self.request, stream=True)
        assert self.response.status_code == 200, self.response.read()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event: dict[str, str] = {}
        try:
            for line in self.response.iter_lines():
                if not line:
                    if "data" in event:
                        self.events.append(event)
                    event = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    event[name] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass

    def entries(self) -> list[dict]:
        return [json.loads(e["data"]) | {"_id": e["id"]} for e in self.events if e.get("event") == "entry"]

    def of(self, kind: str) -> list[dict]:
        return [json.loads(e["data"]) for e in self.events if e.get("event") == kind]

    def close(self) -> None:
        self.response.close()
        self.client.close()


def test_stream_merges_resumes_and_reports_status(cluster):
    hub, alpha, beta, port_a, port_b = cluster
    bad = hub.get("/stream", params={"q": "http and"})
    assert bad.status_code == 400 and bad.json()["column"] == 9

    reader = SseReader(hub.url + "/stream", q="http")
    wait_for(lambda: len([e for e in reader.events if e.get("event") == "status"]) == 2, what="2 status events")
    traffic(port_a, port_b)
    got = wait_for(lambda: len(e := reader.entries()) >= 5 and e, what="5 entries on the stream")
    assert sorted(e["node"] for e in got) == ["alpha"] * 3 + ["beta"] * 2
    # each id is the position after that entry: per node, the entry's own seq
    ids = [e["_id"] for e in got]
    for entry in got:
        node, seq = entry["id"].split(":")
        assert parse_positions(entry["_id"])[node][1] == int(seq)
    assert len(set(ids)) == 5
    reader.close()

    # missed while away: replayed after Last-Event-ID, nothing twice
    for port in (port_a, port_b):
        httpx.get(f"http://127.0.0.1:{port}/missed", timeout=10)
    wait_for(lambda: len(all_entries(hub, 7)["entries"]) == 7, what="7 entries")
    resumed = SseReader(hub.url + "/stream", headers={"Last-Event-ID": str(ids[-1])}, q="http")
    back = wait_for(lambda: len(e := resumed.entries()) >= 2 and e, what="2 replayed entries")
    assert sorted(e["request"]["path"] for e in back) == ["/missed", "/missed"]
    assert resumed.of("lost") == []

    beta.signal(signal.SIGKILL)
    beta.process.wait(10)
    down = wait_for(lambda: [json.loads(e["data"]) for e in resumed.events
                             if e.get("event") == "status" and '"ok": false' in e["data"]],
                    what="a status event for beta going down")
    assert down[0]["node"] == "beta"
    httpx.get(f"http://127.0.0.1:{port_a}/after", timeout=10)
    wait_for(lambda: any(e["request"]["path"] == "/after" for e in resumed.entries()), what="alpha still streams")
    assert sorted(e["request"]["path"] for e in resumed.entries()) == ["/after", "/missed", "/missed"]
    resumed.close()


def test_a_hub_restarted_gives_a_resuming_client_what_was_captured_while_it_was_down(cluster):
    """The hub killed, traffic captured while none runs, a new hub process: the client's
    Last-Event-ID (the old hub's) gets every entry of that time, nothing twice, no `lost`.
    Ids are positions in the workers' stores, so the new hub's clock (behind or ahead) and
    its empty memory do not matter."""
    _, alpha, beta, port_a, port_b = cluster
    first = Hub(alpha.url, beta.url)
    reader = SseReader(first.url + "/stream", q="http")
    wait_for(lambda: len(reader.of("status")) == 2, what="2 status events")
    traffic(port_a, port_b)
    seen = wait_for(lambda: len(e := reader.entries()) >= 5 and e, what="5 entries on the stream")
    reader.close()
    first.signal(signal.SIGKILL)
    first.process.wait(10)
    for number, port in enumerate((port_a, port_b, port_a, port_b, port_a, port_a)):
        httpx.get(f"http://127.0.0.1:{port}/down?n={number}", timeout=10)
    for worker, count in ((alpha, 7), (beta, 4)):
        wait_for(lambda w=worker, c=count: len(w.entries(q="http")) >= c, what=f"{worker.node} indexed them")
    restarted = Hub(alpha.url, beta.url)
    try:
        resumed = SseReader(restarted.url + "/stream", headers={"Last-Event-ID": seen[-1]["_id"]}, q="http")
        back = wait_for(lambda: len(e := resumed.entries()) >= 6 and e, what="the 6 entries of the outage")
        assert sorted(e["request"]["query"]["n"] for e in back) == [[str(n)] for n in range(6)]
        assert resumed.of("lost") == []
        httpx.get(f"http://127.0.0.1:{port_b}/live-again", timeout=10)
        wait_for(lambda: any(e["request"]["path"] == "/live-again" for e in resumed.entries()), what="then live")
        assert len(resumed.entries()) == 7            # nothing twice
        resumed.close()
        # a client whose position names a store the worker no longer has is told, and given
        # what the store holds now
        stale = seen[-1]["_id"].replace(parse_positions(seen[-1]["_id"])["beta"][0], "0ld570re")
        other = SseReader(restarted.url + "/stream", headers={"Last-Event-ID": stale}, q="http")
        told = wait_for(lambda: other.of("lost"), what="a lost notice for beta's store")
        assert told[0]["node"] == "beta" and "another store" in told[0]["reason"]
        other.close()
        bad = restarted.get("/stream", headers={"Last-Event-ID": "alpha@x:1,beta"})
        assert bad.status_code == 400 and "part 2" in bad.json()["detail"]
    finally:
        assert restarted.stop() == 0, restarted.output


def hub_doc_commands() -> list[str]:
    import re
    text = (TESTS.parent / "docs" / "API.md").read_text().split("## Hub API", 1)[1]
    blocks = re.findall(r"```shell\n(.*?)```", text, re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("curl ")]


def test_every_hub_doc_example_runs(cluster, tmp_path):
    import os
    hub, alpha, beta, port_a, port_b = cluster
    commands = hub_doc_commands()
    for route in ("/entries?", "/entries/$ENTRY", "/entries/$ENTRY/pcap", "/pcap", "/har", "/stream",
                  "/query/validate", "/workers", "/status", "/schema", "/healthz", "/snapshots"):
        assert any(route in command for command in commands), route
    assert all('-H "Authorization: Bearer $SHARK_TOKEN"' in c for c in commands if "/healthz" not in c)
    traffic(port_a, port_b)
    entry = all_entries(hub, 5)["entries"][0]
    env = {**os.environ, "HUB": hub.url.removesuffix("/api/v1"), "ENTRY": entry["id"], "SHARK_TOKEN": TEST_TOKEN}
    for command in commands:
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=30)
        if "/stream" in command:
            assert result.returncode == 28, (command, result.stderr)  # a stream ends by timeout
            assert "event: entry" in result.stdout or "event: status" in result.stdout, command
        else:
            assert result.returncode == 0, (command, result.stderr)
    assert (tmp_path / "cluster.pcap").stat().st_size > 24
    assert json.loads((tmp_path / "traffic.har").read_text())["log"]["version"] == "1.2"
    assert (tmp_path / "incident-42.pcap").stat().st_size > 24
