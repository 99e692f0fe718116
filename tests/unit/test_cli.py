"""The CLI in-process against a mocked hub (respx): output formats, errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner

from factories import tentry_json
from shark.cli import cli, format_row
from shark.model import Endpoint

HUB = "http://hub.test:8899"
API = HUB + "/api/v1"


class CLIResult(str):
    """stdout, with .stderr, .exit_status and .json attached (httpie's test helper)."""

    stderr: str
    exit_status: int

    @property
    def json(self) -> Any:
        return json.loads(self)


def shark(*args: str) -> CLIResult:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    out = CLIResult(result.stdout)
    out.stderr = result.stderr
    out.exit_status = result.exit_code
    return out


def entry(seq: int, ts: float, **extra: Any) -> dict[str, Any]:
    return tentry_json(**{"id": f"node-a:{seq}", "node": "node-a", "ts": ts, "summary": f"GET /orders/{seq}",
                          "dst": Endpoint("10.0.0.2", 80, "orders", "shop", "service"),
                          "elapsed_ms": 12.34, **extra})


ENTRIES = {"entries": [entry(2, 1764150002.5), entry(1, 1764150001.25, status=500)],
           "workers": [{"node": "node-a", "url": "http://w:8897/api/v1", "ok": True, "error": None}]}
BAD_KFL = {"error": "bad request", "detail": "q: column 9: expected a value after '=='", "column": 9}


@pytest.fixture
def hub() -> respx.MockRouter:
    with respx.mock(base_url=API, assert_all_called=False) as router:
        yield router


def test_query_table_lists_entries_oldest_first(hub: respx.MockRouter) -> None:
    route = hub.get("/entries").respond(json=ENTRIES)
    r = shark("query", "http", "--limit", "5", "--hub", HUB)
    assert r.exit_status == 0, r.stderr
    lines = r.splitlines()
    assert lines[0].split() == ["TIME", "PROTO", "SRC", "→", "DST", "SUMMARY", "STATUS", "ELAPSED"]
    assert "GET /orders/1" in lines[1] and "GET /orders/2" in lines[2]
    assert "10.0.0.1:40000 → shop/orders" in lines[1]
    assert lines[1].split()[-2:] == ["500", "12.3ms"]
    assert route.calls.last.request.url.params["q"] == "http"
    assert route.calls.last.request.url.params["limit"] == "5"


def test_query_json_prints_one_entry_per_line(hub: respx.MockRouter) -> None:
    hub.get("/entries").respond(json=ENTRIES)
    r = shark("query", "-o", "json", "--hub", HUB)
    assert r.exit_status == 0
    assert [json.loads(line)["id"] for line in r.splitlines()] == ["node-a:1", "node-a:2"]


def test_query_warns_about_partial_answers(hub: respx.MockRouter) -> None:
    hub.get("/entries").respond(json={"entries": [], "workers": [
        {"node": "node-b", "url": "http://b", "ok": False, "error": "timed out"}]})
    r = shark("query", "--hub", HUB)
    assert r.exit_status == 0
    assert "worker node-b did not answer: timed out" in r.stderr


def test_query_follow_reads_the_sse_stream(hub: respx.MockRouter) -> None:
    body = ("event: status\ndata: {\"node\": \"node-a\", \"ok\": true}\n\n: ping\n\n"
            f"event: entry\nid: 1\ndata: {json.dumps(entry(7, 1764150007.0))}\n\n"
            "event: lost\ndata: {\"lost\": 3}\n\n")
    hub.get("/stream").respond(text=body, headers={"content-type": "text/event-stream"})
    r = shark("query", "-f", "-o", "json", "dns or http", "--hub", HUB)
    assert r.exit_status == 0
    assert [json.loads(line)["id"] for line in r.splitlines()] == ["node-a:7"]
    assert "3 entries were lost" in r.stderr


def test_invalid_kfl_is_one_line_with_its_column(hub: respx.MockRouter) -> None:
    hub.get("/entries").respond(400, json=BAD_KFL)
    r = shark("query", "http and ==", "--hub", HUB)
    assert r.exit_status == 1
    assert r == ""
    assert r.stderr.splitlines()[0] == "kubectl-shark: query: column 9: expected a value after '=='"
    assert "Traceback" not in r.stderr


def test_hub_down_says_how_to_start_it(hub: respx.MockRouter) -> None:
    hub.get("/entries").mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    r = shark("query", "--hub", HUB)
    assert r.exit_status == 1
    assert f"cannot reach the hub at {HUB}: connection refused" in r.stderr
    assert "kubectl shark tap --local" in r.stderr
    assert "Traceback" not in r.stderr


def test_hub_down_is_real_against_a_closed_port() -> None:
    r = shark("status", "--hub", "http://127.0.0.1:1")
    assert r.exit_status == 1
    assert "cannot reach the hub at http://127.0.0.1:1" in r.stderr


def test_pcapdump_writes_the_file(hub: respx.MockRouter, tmp_path: Path) -> None:
    data = bytes.fromhex("4d3cb2a1020004000000000000000000ffff000001000000")
    route = hub.get("/pcap").respond(content=data, headers={"content-type": "application/vnd.tcpdump.pcap"})
    out = tmp_path / "x.pcap"
    r = shark("pcapdump", "-o", str(out), "-q", "http", "--since", "5m", "--hub", HUB)
    assert r.exit_status == 0, r.stderr
    assert out.read_bytes() == data
    assert f"wrote 24 B to {out}" in r.stderr
    params = route.calls.last.request.url.params
    assert params["q"] == "http" and float(params["since"]) > 1.7e9
    assert not (tmp_path / "x.pcap.part").exists()


def test_pcapdump_failure_leaves_no_file(hub: respx.MockRouter, tmp_path: Path) -> None:
    hub.get("/pcap").respond(502, json={"error": "bad gateway", "detail": "no worker answered: w: down"})
    out = tmp_path / "x.pcap"
    r = shark("pcapdump", "-o", str(out), "--hub", HUB)
    assert r.exit_status == 1
    assert "hub answered 502: no worker answered: w: down" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_export_har(hub: respx.MockRouter, tmp_path: Path) -> None:
    har = {"log": {"version": "1.2", "creator": {"name": "kubectl-shark", "version": "0"},
                   "entries": [{"request": {"method": "GET"}}]}}
    route = hub.get("/har").respond(json=har)
    out = tmp_path / "x.har"
    r = shark("export", "--format", "har", "-o", str(out), "-q", "request.path == \"/a\"", "--hub", HUB)
    assert r.exit_status == 0, r.stderr
    assert json.loads(out.read_text()) == har
    assert "wrote 1 HAR entries" in r.stderr
    assert route.calls.last.request.url.params["q"] == 'request.path == "/a"'


def test_status_shows_workers_and_fails_when_one_is_down(hub: respx.MockRouter) -> None:
    hub.get("/status").respond(json={
        "hub": {"version": "0.1.0", "uptime_s": 5, "workers": 2, "workers_ok": 1},
        "workers": [
            {"node": "a", "url": "http://a", "ok": True, "error": None,
             "status": {"capture": {"received": 10, "dropped": 1, "if_dropped": 2},
                        "store": {"bytes": 1000, "limit": 200_000_000}, "index": {"entries": 4},
                        "dissection": {"lag_seconds": 0.0, "shed_bytes": 0, "shards": [
                            {"shard": 0, "running": True, "restarts": 0, "last_failure": ""},
                            {"shard": 1, "running": True, "restarts": 1,
                             "last_failure": "shard 1 killed by SIGKILL; started again after packet 3:24"}]},
                        "redaction": {"enabled": True, "headers": ["cookie"], "fields": ["token"]}}},
            {"node": "c", "url": "http://c", "ok": True, "error": None,
             "status": {"redaction": {"enabled": False, "headers": [], "fields": []}}},
            {"node": "b", "url": "http://b", "ok": False, "error": "cannot connect"}]})
    r = shark("status", "--hub", HUB)
    assert "workers 1/2 ok" in r
    assert "worker a: ok; packets 10, dropped 1 (interface 2)" in r
    assert "storage 1KB of 200MB" in r
    assert "worker b: DOWN: cannot connect" in r
    lines = {line.split(":")[0].strip(): line for line in r.splitlines()}
    assert "NOT redacted" not in lines["worker a"]
    assert "; dissection shard 1 restarted 1x: shard 1 killed by SIGKILL; started again after packet 3:24" \
        in lines["worker a"]
    assert "shard 0" not in lines["worker a"]
    assert lines["worker c"].endswith("; credentials NOT redacted (--no-redact)")
    assert r.exit_status == 1
    assert "1 of 3 workers are down" in r.stderr


@pytest.mark.parametrize("args", [
    ["query", "--limit", "0"],
    ["query", "-o", "yaml"],
    ["nosuchcommand"],
    ["pcapdump"],
    ["pcapdump", "-o", "x", "--since", "soon"],
    ["export", "--format", "csv", "-o", "x"],
    ["tap", "--local", "--storage-limit", "lots"],
    ["tap", "--local", "-i", "lo", "--pcap", __file__],
    ["tap", "--local", "--no-redact", "--redact-field", "pin"],
    ["tap", "--local", "--redact-header", "X Bad"],
    ["tap", "--local", "--dissect-memory", "64KiB"],
    ["tap", "--dissect-memory", "lots"],
])
def test_usage_errors_exit_2(args: list[str]) -> None:
    r = shark(*args)
    assert r.exit_status == 2
    assert "Error:" in r.stderr and "Traceback" not in r.stderr


def test_unexpected_error_traceback_only_with_debug(hub: respx.MockRouter) -> None:
    hub.get("/entries").mock(side_effect=RuntimeError("boom"))
    r = shark("query", "--hub", HUB)
    assert r.exit_status == 1
    assert "unexpected error: RuntimeError: boom" in r.stderr
    assert "--debug" in r.stderr and "Traceback" not in r.stderr
    r = shark("--debug", "query", "--hub", HUB)
    assert r.exit_status == 1
    assert "Traceback" in r.stderr


def test_help_and_version_exit_0() -> None:
    assert shark("--help").exit_status == 0
    r = shark("version")
    assert r.exit_status == 0 and r.startswith("kubectl-shark ")


def test_format_row_without_response() -> None:
    row = format_row(entry(1, 1764150001.0, status=None, elapsed_ms=None, protocol="dns"))
    assert row.split()[1] == "dns"
    assert row.endswith("GET /orders/1")


def test_follow_with_invalid_kfl_fails_before_streaming(hub: respx.MockRouter) -> None:
    hub.get("/stream").respond(400, json=BAD_KFL)
    r = shark("query", "-f", "http and ==", "--hub", HUB)
    assert r.exit_status == 1
    assert r.stderr.startswith("kubectl-shark: query: column 9: ")


def test_output_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    for command in (["pcapdump"], ["export", "--format", "har"]):
        r = shark(*command, "-o", str(tmp_path / "nowhere" / "x"), "--hub", HUB)
        assert r.exit_status == 1
        assert r.stderr == f"kubectl-shark: cannot write {tmp_path}/nowhere/x: no directory {tmp_path}/nowhere\n"


def test_tap_without_local_says_what_works() -> None:
    r = shark("tap")
    assert r.exit_status == 1
    assert "kubectl shark tap --local" in r.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--to", "1e400"), "--to: '1e400' is not a time"),
    (("--from", "nan"), "--from: 'nan' is not a time"),
    (("--from", "-5"), "--from: '-5' is not a time"),
])
def test_snapshot_times_out_of_range_are_usage_errors(args: tuple[str, ...], message: str) -> None:
    """--to 1e400 used to end in 'unexpected error: ValueError: Out of range float values are
    not JSON compliant'; now a usage error before the hub is asked."""
    with respx.mock(assert_all_called=False) as mock:
        posted = mock.post(API + "/snapshots")
        out = shark("snapshot", "create", *args, "--hub", HUB)
    assert out.exit_status == 2 and message in out.stderr, out.stderr
    assert not posted.called
