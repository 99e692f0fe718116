"""eBPF TLS capture end to end: a worker with --tls on lo, real TLS servers (Python's ssl,
openssl s_server, hypercorn for HTTP/2) and real clients that use the system libssl (curl,
openssl s_client, Python's ssl): the cleartext becomes entries marked tls, with details and
pcaps made of the synthesized packets, beside the encrypted connection seen on the wire."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import httpx
import pytest

from support.ebpf import ebpf_problem, make_certs, tls_entries
from support.processes import ROOT, Proc, Worker, free_port, wait_for

pytestmark = pytest.mark.root

TESTS = Path(__file__).resolve().parents[1]

H2_SERVER = """
import asyncio, sys
from hypercorn.asyncio import serve
from hypercorn.config import Config

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = ("h2 " + scope["path"]).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

config = Config()
config.bind = ["127.0.0.1:" + sys.argv[1]]
config.certfile, config.keyfile = sys.argv[2], sys.argv[3]
config.alpn_protocols = ["h2"]
config.accesslog = config.errorlog = None
print("listening", flush=True)
asyncio.run(serve(app, config))
"""

# Reads the start of a big response, then the process exits without closing anything.
EXITING_CLIENT = """
import os, socket, ssl, sys
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
raw = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
tls = context.wrap_socket(raw)
tls.sendall(b"GET /bytes/3000000 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
got = 0
while got < 40000:
    got += len(tls.recv(16384))
print("read", got, flush=True)
os._exit(0)
"""


# A source with an 8-page (32 KiB) ring buffer that nobody reads while a 300 kB response
# flows: chunks are lost in the kernel; then what was kept is dissected.
SMALL_RING = """
import json, subprocess, sys
from worker.dissection import Dissection
from worker.packet import LINKTYPE_ETHERNET
from worker.sources.ebpf.source import EbpfTlsSource
source = EbpfTlsSource(LINKTYPE_ETHERNET, 262144, ringbuf_pages=8)
subprocess.run(["curl", "-sk", "-o", "/dev/null", sys.argv[1]], check=True)
packets = source.read_batch(100000)
status = source.status()
dissection = Dissection("lossy")
dissection.feed([((1, 24 + i), LINKTYPE_ETHERNET, ts, frame, size)
                 for i, (ts, frame, size) in enumerate(packets)])
dissection.close_all()
rows = [json.loads(row.entry_json) for row in dissection.take_rows()]
mine = [e for e in rows if e["request"].get("path") == "/bytes/300000"]
print(json.dumps({"lost_events": status.lost_events, "lost_bytes": status.lost_bytes,
                  "gaps": status.gaps, "gap_bytes": status.gap_bytes, "entries": mine}))
source.close()
"""

# The program alone, hooked on the libssl files mapped now, while one process makes
# sequential connections to a Python https server (which frees each connection's SSL object
# and gets the same address and fd number for the next): the server's events, per connection.
SERVER_OFFSETS = """
import json, ssl, socket, sys, time
from worker.sources.ebpf.events import parse_event
from worker.sources.ebpf.libraries import LIBSSL, LibraryScanner
from worker.sources.ebpf.loader import BccProgram
from worker.sources.ebpf.program import KIND_READ, KIND_WRITE
port, server_pid = int(sys.argv[1]), int(sys.argv[2])
records = []
program = BccProgram(records.append, 16, 2048)
for path, kind in LibraryScanner("/proc").scan(time.monotonic()).values():
    if kind == LIBSSL:
        program.attach_library(path)
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
for number in range(3):
    with context.wrap_socket(socket.create_connection(("127.0.0.1", port))) as tls:
        tls.sendall(b"GET /json?offsets=%d HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n" % number)
        while tls.recv(65536):
            pass
    time.sleep(0.2)
program.consume()
events = [parse_event(r) for r in records]
mine = [e for e in events if e.tgid == server_pid and e.kind in (KIND_READ, KIND_WRITE)]
print(json.dumps([{"port": e.rport, "kind": e.kind, "offset": e.offset, "length": e.length,
                   "ssl": e.ssl, "fd": e.fd} for e in mine]))
program.close()
"""


@pytest.fixture(scope="module")
def problem() -> str | None:
    return ebpf_problem()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return make_certs(tmp_path_factory.mktemp("certs"))


class Servers:
    def __init__(self, certs: tuple[str, str], www: Path) -> None:
        cert, key = certs
        self.https, self.s_server, self.h2 = free_port(), free_port(), free_port()
        self.procs = [
            Proc([sys.executable, "-m", "support.http_server", str(self.https), "127.0.0.1", "--tls", cert, key],
                 env={"PYTHONPATH": str(TESTS)}),
            Proc([sys.executable, "-c", H2_SERVER, str(self.h2), cert, key]),
        ]
        for proc in self.procs:
            proc.wait_line("listening")
        # openssl s_server -WWW serves files from its directory (its reads and writes go
        # through an SSL BIO, not SSL_read/SSL_write: only its clients' ends are seen).
        s_server = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{self.s_server}", "-cert", cert,
             "-key", key, "-WWW", "-quiet"], cwd=www, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.openssl = s_server
        wait_for(lambda: _accepts(self.s_server), what="openssl s_server listening")

    def bpf(self) -> str:
        return " or ".join(f"tcp port {port}" for port in (self.https, self.s_server, self.h2))

    def stop(self) -> None:
        self.openssl.terminate()
        self.openssl.wait(10)
        for proc in self.procs:
            proc.stop()


def _accepts(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def servers(certs, tmp_path_factory) -> Iterator[Servers]:
    www = tmp_path_factory.mktemp("www")
    (www / "index.html").write_text("<h1>served by s_server</h1>\n")
    running = Servers(certs, www)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def worker(problem, servers, tmp_path_factory) -> Iterator[Worker]:
    if problem is not None:
        pytest.skip(problem)
    running = Worker(["--iface", "lo", "--tls", "--bpf", servers.bpf()],
                     tmp_path_factory.mktemp("store"))
    running.wait_line(r"tls: eBPF probes loaded")
    yield running
    running.stop()


def curl(*args: str) -> str:
    return subprocess.run(["curl", "-sSk", "--max-time", "20", *args], check=True,
                          capture_output=True, text=True).stdout


def test_curl_requests_become_tls_entries_with_keep_alive(worker, servers):
    base = f"https://127.0.0.1:{servers.https}"
    out = curl(f"{base}/json?run=keep", f"{base}/status/404?run=keep", "--next", "-k", "-X",
               "POST", "-H", "Content-Type: application/json", "-d", '{"item": 7}',
               f"{base}/echo?run=keep")
    assert "orders" in out and out.endswith('{"item": 7}')
    entries = tls_entries(worker, servers.https, 3, 'request.query["run"][0] == "keep"')
    assert [(e["request"]["method"], e["request"]["path"], e["status"]) for e in entries] == [
        ("GET", "/json", 200), ("GET", "/status/404", 404), ("POST", "/echo", 200)]
    assert all(e["protocol"] == "http" and e["complete"] for e in entries)
    assert entries[2]["size"]["request"] > len('{"item": 7}')
    # one keep-alive connection: the same client port, and its real 5-tuple
    assert len({e["src"]["port"] for e in entries}) == 1
    assert {(e["src"]["ip"], e["dst"]["ip"]) for e in entries} == {("127.0.0.1", "127.0.0.1")}
    # the same connection on the wire: encrypted, dissected as TLS, not marked
    wire = wait_for(lambda: [e for e in worker.entries(q=f"dst.port == {servers.https}")
                             if not e["tls"] and e["src"]["port"] == entries[0]["src"]["port"]],
                    what="the wire's TLS entry")
    assert [e["protocol"] for e in wire] == ["tls"]


def test_detail_and_pcap_are_the_cleartext(worker, servers, tmp_path):
    curl(f"https://127.0.0.1:{servers.https}/json?detail=1")
    [entry] = tls_entries(worker, servers.https, 1, 'request.path == "/json" and '
                                                    'request.query["detail"][0] == "1"')
    detail = worker.get(f"/entries/{entry['id']}").json()
    assert detail["tls"] is True
    assert json.loads(detail["response"]["body"]["data"])["orders"] == [1, 2, 3]
    pcap = tmp_path / "entry.pcap"
    response = worker.get(f"/entries/{entry['id']}/pcap")
    assert response.status_code == 200
    pcap.write_bytes(response.content)
    fields = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport",
         "-e", "http.request.uri", "-e", "http.response.code", "-e", "tls.record.version"],
        check=True, capture_output=True, text=True).stdout.splitlines()
    rows = [line.split("\t") for line in fields]
    assert ["/json?detail=1"] == [r[2] for r in rows if r[2]]
    assert ["200"] == [r[3] for r in rows if r[3]]
    assert not any(r[4] for r in rows), "no TLS record in the cleartext pcap"
    ports = {int(entry["src"]["port"]), servers.https}
    assert all({int(r[0]), int(r[1])} == ports for r in rows)
    # the merged pcap of the entry's query carries the same stream
    q = f'request.query["detail"][0] == "1" and dst.port == {servers.https}'
    merged = worker.get("/pcap", params={"q": q}).content
    assert merged[24:] and merged[24:] == response.content[24:]


def test_python_clients_in_threads_on_concurrent_connections(worker, servers):
    base = f"https://127.0.0.1:{servers.https}"
    errors: list[BaseException] = []

    def client(number: int) -> None:
        try:
            with httpx.Client(verify=False, timeout=20) as session:   # one connection each
                for request in range(5):
                    assert session.get(f"{base}/json?c={number}&r={request}").status_code == 200
        except BaseException as error:  # reported below
            errors.append(error)
    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    entries = tls_entries(worker, servers.https, 40, 'request.query["c"][0] != null')
    seen = {(e["request"]["query"]["c"][0], e["request"]["query"]["r"][0]) for e in entries}
    assert seen == {(str(c), str(r)) for c in range(8) for r in range(5)}
    ports = {}
    for e in entries:
        ports.setdefault(e["request"]["query"]["c"][0], set()).add(e["src"]["port"])
    assert all(len(p) == 1 for p in ports.values())          # each client kept its connection
    assert len(set().union(*ports.values())) == 8
    assert all(e["status"] == 200 and e["complete"] for e in entries)


def test_openssl_s_client_against_s_server(worker, servers):
    done = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{servers.s_server}",
                           "-quiet"], input=b"GET /index.html HTTP/1.0\r\n\r\n",
                          capture_output=True, timeout=30)
    assert b"served by s_server" in done.stdout
    [entry] = tls_entries(worker, servers.s_server, 1)
    assert (entry["request"]["method"], entry["request"]["path"], entry["status"]) == (
        "GET", "/index.html", 200)
    detail = worker.get(f"/entries/{entry['id']}").json()
    assert "served by s_server" in detail["response"]["body"]["data"]


def test_http2_over_tls(worker, servers):
    base = f"https://127.0.0.1:{servers.h2}"
    out = curl("--http2", f"{base}/one", f"{base}/two")
    assert out == "h2 /oneh2 /two"
    entries = tls_entries(worker, servers.h2, 2)
    assert [(e["protocol"], e["request"]["path"], e["status"]) for e in entries] == [
        ("http2", "/one", 200), ("http2", "/two", 200)]


def test_a_process_that_exits_mid_stream(worker, servers):
    client = Proc([sys.executable, "-c", EXITING_CLIENT, str(servers.https)])
    client.wait_line(r"read \d+")
    assert client.process.wait(20) == 0
    # The exit ends the connection at once (no idle timeout): an incomplete entry.
    # Python's server is hooked too; whichever end is seen first, the client's end is kept
    # (the server's write of the body fails: it reports nothing of it).
    [entry] = tls_entries(worker, servers.https, 1, 'request.path == "/bytes/3000000"')
    ebpf = worker.status()["ebpf"]
    assert entry["status"] == 200
    assert entry["complete"] is False
    assert entry["response"]["headers"]["content-length"] == "3000000"
    if ebpf["lost_events"] == 0:
        assert 40000 <= entry["size"]["response"] < 3000000, (entry, ebpf)
    else:   # the ring buffer overflowed: what is missing must be a gap the entry notes
        assert any("gap" in note for note in entry["notes"]), (entry, ebpf)


def test_stream_offsets_restart_with_each_connection(problem, servers):
    """A server reusing an SSL object's address and fd number counts each connection from
    0 (the counts end with close()); else its view of the next one would start with a hole,
    and the client's end could not take a connection over from it."""
    if problem is not None:
        pytest.skip(problem)
    server = servers.procs[0]                     # Python's https server
    done = subprocess.run([sys.executable, "-c", SERVER_OFFSETS, str(servers.https),
                           str(server.process.pid)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    events = json.loads(done.stdout.splitlines()[-1])
    by_connection: dict[int, list[dict]] = {}
    for event in events:
        by_connection.setdefault(event["port"], []).append(event)
    assert len(by_connection) == 3, events
    for port, seen in by_connection.items():
        for kind in (1, 2):                    # writes, reads: contiguous from 0
            offsets = [(e["offset"], e["length"]) for e in seen if e["kind"] == kind]
            assert offsets and offsets[0][0] == 0, (port, seen)
            assert all(a + n == b for (a, n), (b, _m) in pairwise(offsets)), (port, seen)


def test_status_reports_the_probes(worker, servers):
    curl(f"https://127.0.0.1:{servers.https}/status/204")
    tls_entries(worker, servers.https, 1, "status == 204")
    ebpf = worker.status()["ebpf"]
    assert ebpf["enabled"] and ebpf["loaded"] and ebpf["error"] == ""
    assert ebpf["probes_attached"] >= 4 and ebpf["tracepoints"] >= 10
    assert any(lib["path"].endswith("libssl.so.3") and lib["processes"] >= 1
               for lib in ebpf["libraries"])
    assert ebpf["processes_hooked"] >= 1
    assert ebpf["chunks"] > 0 and ebpf["packets"] > 0 and ebpf["connections"] > 0
    assert ebpf["lost_events"] == 0
    # Python's server is hooked too: its copies of the bytes are left out, not doubled.
    assert ebpf["duplicate_chunks"] > 0
    tls_source = [s for s in worker.status()["capture"]["sources"] if s["kind"] == "ebpf"]
    assert tls_source and tls_source[0]["received"] > 0


def test_ring_buffer_losses_are_counted_and_become_gaps(worker, servers):
    done = subprocess.run([sys.executable, "-c", SMALL_RING,
                           f"https://127.0.0.1:{servers.https}/bytes/300000"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["lost_events"] > 0 and report["lost_bytes"] > 0
    assert report["gaps"] >= 1 and report["gap_bytes"] > 0
    [entry] = report["entries"]            # the request came through; the body has holes
    assert entry["status"] == 200 and entry["tls"] is True
    assert entry["complete"] is False


def test_the_capture_filter_applies_to_cleartext(worker, servers):
    """The hub's idle filter drops the synthesized packets as it drops the wire's."""
    base = f"https://127.0.0.1:{servers.https}"
    before = worker.status()["ebpf"]["filtered"]
    assert httpx.put(worker.url + "/targets", json={"ips": [], "idle": True}, timeout=10).is_success
    try:
        curl(f"{base}/json?idle=1")
        wait_for(lambda: worker.status()["ebpf"]["filtered"] > before, what="filtered packets")
    finally:
        assert httpx.put(worker.url + "/targets", json={"ips": []}, timeout=10).is_success
    curl(f"{base}/json?idle=2")
    [entry] = tls_entries(worker, servers.https, 1, 'request.query["idle"][0] == "2"')
    assert entry["status"] == 200
    assert worker.entries(q='request.query["idle"][0] == "1"') == []


def test_without_the_capabilities_capture_goes_on_and_says_what_is_missing(
        problem, start_worker, http_server):
    if problem is not None:
        pytest.skip(problem)
    dropped = "-bpf,-perfmon,-sys_admin"
    worker = start_worker("--iface", "lo", "--tls", "--bpf", f"tcp port {http_server}",
                          prefix=["setpriv", f"--inh-caps={dropped}", f"--bounding-set={dropped}"])
    [line] = [line for line in worker.lines if "eBPF TLS capture is off" in line]
    assert "missing: the capabilities CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)" in line
    ebpf = worker.status()["ebpf"]
    assert (ebpf["enabled"], ebpf["loaded"]) == (True, False)
    assert "CAP_BPF" in ebpf["error"]
    httpx.get(f"http://127.0.0.1:{http_server}/json", timeout=10)
    [entry] = wait_for(lambda: worker.entries(), what="the plaintext entry")
    assert (entry["request"]["path"], entry["tls"]) == ("/json", False)


def test_tap_local_passes_tls_on(problem, servers, tmp_path):
    if problem is not None:
        pytest.skip(problem)
    port = free_port()
    tap = Proc([sys.executable, "-m", "shark.cli", "tap", "--local", "--tls", "--no-open",
                "-i", "lo", "--proxy-port", str(port)],
               env={"XDG_STATE_HOME": str(tmp_path / "state")})
    try:
        tap.wait_line(r"tls: eBPF probes loaded \(\d+ on libssl")
        tap.wait_line(rf"UI and API at http://127\.0\.0\.1:{port}")
        curl(f"https://127.0.0.1:{servers.https}/json?via=tap")

        token = (tmp_path / "state" / "shark" / "token").read_text().strip()     # tap --local made it

        def via_hub() -> list[dict] | None:
            body = httpx.get(f"http://127.0.0.1:{port}/api/v1/entries", headers={"Authorization": f"Bearer {token}"},
                             params={"q": 'request.query["via"][0] == "tap"'}, timeout=10).json()
            return [e for e in body["entries"] if e["tls"]] or None
        [entry] = wait_for(via_hub, 30, "the tls entry through the hub")
        assert entry["request"]["path"] == "/json"
    finally:
        assert tap.stop() == 0, tap.output
    assert os.path.isdir(tmp_path / "state" / "shark" / "worker")
