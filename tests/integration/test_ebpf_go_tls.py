"""eBPF TLS capture of what does not go through a shared libssl: Go's crypto/tls (net/http over
HTTP/1.1 and HTTP/2, gRPC, a stripped binary) and a C client linked with OpenSSL's static
libraries. The programs are built from tests/support/tlsprograms/ (support/programs.py) and
started after the worker, which finds them while running."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.ebpf import ProbedFiles, ebpf_problem, make_certs, tls_entries
from support.processes import Proc, Worker, free_port, wait_for
from support.programs import (ProgramUnavailable, go_program, static_openssl_client, with_go_version,
                              without_section_headers)

pytestmark = pytest.mark.root

KUBECTL = "/usr/bin/kubectl"
READ, WRITE = 2, 1
CLIENT, SERVER = 1, 2


@pytest.fixture(scope="module")
def problem() -> str | None:
    return ebpf_problem()


@pytest.fixture(scope="module")
def programs(problem) -> dict[str, Path]:
    if problem is not None:
        pytest.skip(problem)
    try:
        return {"gohttps": go_program("gohttps"),
                "stripped": go_program("gohttps", "stripped"),
                "gogrpc": go_program("gogrpc"),
                "openssl": static_openssl_client()}
    except ProgramUnavailable as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def worker(programs, tmp_path_factory) -> Iterator[Worker]:
    # Only the test's own servers' traffic: their ports are chosen now, before they start.
    ports = {name: free_port() for name in ("https", "grpc", "stripped", "wrapped",
                                            "sectionless")}
    running = Worker(["--iface", "lo", "--tls", "--bpf",
                      " or ".join(f"tcp port {port}" for port in ports.values())],
                     tmp_path_factory.mktemp("store"))
    running.wait_line(r"tls: eBPF probes loaded")
    running.ports = ports   # type: ignore[attr-defined]
    yield running
    running.stop()


def start_server(binary: Path, port: int, certs: tuple[str, str], *extra: str) -> Proc:
    server = Proc([str(binary), "-mode", "server", "-addr", f"127.0.0.1:{port}",
                   "-cert", certs[0], "-key", certs[1], *extra])
    server.wait_line("listening")
    return server


def hooked(worker: Worker, binary: Path) -> dict:
    """The /status entry of a binary the worker found while running (waits for it)."""
    def find() -> dict | None:
        for library in worker.status()["ebpf"]["libraries"]:
            if os.path.realpath(library["path"]) == os.path.realpath(binary) and (
                    library["probes"] or library["error"]):
                return library
        return None
    return wait_for(find, 20, f"{binary} in /status")


@pytest.fixture(scope="module")
def https_server(worker, programs, certs) -> Iterator[int]:
    port = worker.ports["https"]
    server = start_server(programs["gohttps"], port, certs)
    hooked(worker, programs["gohttps"])
    yield port
    server.stop()


def go_client(binary: Path, *args: str) -> None:
    done = subprocess.run([str(binary), "-mode", "client", *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "done 0 failures", (
        done.stdout, done.stderr)


def expected_requests(tag: str, workers: int, requests: int) -> dict[str, tuple[str, int, str]]:
    """What gohttps's client sends: path -> (method, status, request body)."""
    wanted = {}
    for w in range(workers):
        for r in range(requests):
            method, body = ("POST", f"payload-{w}-{r}") if r % 2 else ("GET", "")
            wanted[f"/{tag}/w{w}/r{r}"] = (method, 404 if r % 3 == 2 else 200, body)
    return wanted


def body_text(part: dict) -> str:
    body = part.get("body") or {}
    return body.get("data", "") if body.get("encoding") == "text" else ""


def check_every_request(worker: Worker, port: int, tag: str, protocol: str, version: str,
                        workers: int, requests: int) -> list[dict]:
    wanted = expected_requests(tag, workers, requests)
    entries = tls_entries(worker, port, len(wanted),
                          f'request.path.startsWith("/{tag}/")', timeout=60)
    assert sorted(e["request"]["path"] for e in entries) == sorted(wanted)
    for entry in entries:
        method, status, body = wanted[entry["request"]["path"]]
        assert (entry["protocol"], entry["request"]["method"], entry["status"]) == (
            protocol, method, status), entry
        assert entry["complete"] and entry["tls"]
        detail = worker.get(f"/entries/{entry['id']}").json()
        assert body_text(detail["request"]) == body, detail["request"]
        path = entry["request"]["path"]
        assert body_text(detail["response"]) == f"{version} {method} {path} body={body}"
    return entries


def test_go_http1_keep_alive_many_goroutines(worker, https_server, programs, tmp_path):
    go_client(programs["gohttps"], "-url", f"https://127.0.0.1:{https_server}", "-proto", "h1",
              "-workers", "8", "-requests", "6", "-tag", "h1")
    entries = check_every_request(worker, https_server, "h1", "http", "HTTP/1.1", 8, 6)
    # keep-alive: connections carry several requests (Go's pool may dial a few spare ones)
    per_connection = Counter(e["src"]["port"] for e in entries)
    assert len(per_connection) < len(entries) and max(per_connection.values()) >= 3
    # the pcap export of an entry is the cleartext stream of its real connection
    entry = entries[1]
    pcap = tmp_path / "entry.pcap"
    pcap.write_bytes(worker.get(f"/entries/{entry['id']}/pcap").content)
    rows = [line.split("\t") for line in subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "http", "-T", "fields", "-e", "tcp.srcport",
         "-e", "http.request.uri", "-e", "http.response.code"],
        check=True, capture_output=True, text=True).stdout.splitlines()]
    assert [r[1] for r in rows if r[1]] == [entry["request"]["path"] + f"?status={entry['status']}"]
    assert [r[2] for r in rows if r[2]] == [str(entry["status"])]
    assert {int(r[0]) for r in rows} == {entry["src"]["port"], https_server}
    # (the counters are the node's: other processes' TLS counts too, so only this is sure;
    # where this program's sockets come from is checked with it hooked alone, below)
    assert worker.status()["ebpf"]["go_calls"] >= 8 * 6


def test_go_http2_one_connection_many_streams(worker, https_server, programs):
    go_client(programs["gohttps"], "-url", f"https://127.0.0.1:{https_server}", "-proto", "h2",
              "-workers", "8", "-requests", "6", "-tag", "h2")
    entries = check_every_request(worker, https_server, "h2", "http2", "HTTP/2.0", 8, 6)
    # streams multiplexed (goroutines that start before the first connection is up may each
    # dial one: Go's transport then keeps using one of them)
    per_connection = Counter(e["src"]["port"] for e in entries)
    assert len(per_connection) <= 8 and max(per_connection.values()) >= 8


@pytest.mark.parametrize("wrap", ["none", "embed", "field"])
def test_both_ends_of_a_go_connection_see_the_cleartext(problem, programs, certs, wrap):
    """Hooked alone (no worker), each Go process reports its own side: the client writes the
    requests and reads the answers, the server the other way round, on mirrored 5-tuples.
    The server's TCP connections are also tried inside wrappers that hold the net.Conn as a
    field, first or not: the probe sees through them (one level down) to the socket."""
    probe = ProbedFiles(programs["gohttps"])
    port = free_port()
    server = start_server(programs["gohttps"], port, certs, "-wrap", wrap)
    try:
        go_client(programs["gohttps"], "-url", f"https://127.0.0.1:{port}", "-proto", "h1",
                  "-workers", "3", "-requests", "3", "-tag", "ends")
        events, counters = probe.events()
    finally:
        server.stop()
        probe.close()
    mine = [e for e in events if port in (e["lport"], e["rport"])]
    server_events = [e for e in mine if e["tgid"] == server.process.pid]
    client_events = [e for e in mine if e["tgid"] != server.process.pid]
    assert {e["role"] for e in server_events} == {SERVER}
    assert {e["role"] for e in client_events} == {CLIENT}
    for path in expected_requests("ends", 3, 3):
        for side, sends, receives in ((client_events, WRITE, READ), (server_events, READ, WRITE)):
            sent = "".join(e["data"] for e in side if e["kind"] == sends)
            answered = "".join(e["data"] for e in side if e["kind"] == receives)
            assert f" {path}?status=" in sent
            assert f" {path} body=" in answered
    client_tuples = {(e["lport"], e["rport"]) for e in client_events}
    assert client_tuples == {(r, l) for l, r in {(e["lport"], e["rport"]) for e in server_events}}
    assert counters["go_syscall_fds"] == 0


# Keep-alive HTTP/1.1 over asyncio's TLS, whose SSL calls run on memory buffers: they make no
# syscall, so the probes never learn this client's socket and its end is not reported. What
# the worker shows of these connections comes from the server's end alone.
ASYNCIO_CLIENT = """
import asyncio, ssl, sys

async def connection(port, number):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    for request in range(4):
        path = f"/server-end/c{number}/r{request}"
        body = f"data-{number}-{request}".encode() if request % 2 else b""
        method = "POST" if body else "GET"
        writer.write(f"{method} {path} HTTP/1.1\\r\\nHost: x\\r\\n"
                     f"Content-Length: {len(body)}\\r\\n\\r\\n".encode() + body)
        head = await reader.readuntil(b"\\r\\n\\r\\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\\r\\n")[0])
        answer = await reader.readexactly(length)
        assert answer == f"HTTP/1.1 {method} {path} body={body.decode()}".encode(), answer
    writer.close()
    await writer.wait_closed()

async def main(port):
    await asyncio.gather(*(connection(port, number) for number in range(3)))
    print("done")

asyncio.run(main(int(sys.argv[1])))
"""


def test_the_server_end_alone_behind_a_wrapper_it_cannot_see_through(worker, programs, certs):
    """A Go server whose TCP connections sit behind a pointer in a wrapper: each call's socket
    comes from its syscalls, and the first request of each connection, which Go reads into
    its buffer during the handshake and Read then serves without a syscall, is held until
    the connection's next call names the socket."""
    port = worker.ports["wrapped"]
    server = start_server(programs["gohttps"], port, certs, "-wrap", "deep")
    hooked(worker, programs["gohttps"])
    before = worker.status()["ebpf"]["go_syscall_fds"]
    client = Proc([sys.executable, "-c", ASYNCIO_CLIENT, str(port)])
    try:
        assert client.process.wait(60) == 0, client.output
        entries = tls_entries(worker, port, 12, 'request.path.startsWith("/server-end/")')
    finally:
        client.stop()
        server.stop()
    wanted = {f"/server-end/c{c}/r{r}": ("POST", f"data-{c}-{r}") if r % 2 else ("GET", "")
              for c in range(3) for r in range(4)}
    assert sorted(e["request"]["path"] for e in entries) == sorted(wanted)
    for entry in entries:
        method, body = wanted[entry["request"]["path"]]
        assert (entry["request"]["method"], entry["status"], entry["complete"]) == (
            method, 200, True)
        detail = worker.get(f"/entries/{entry['id']}").json()
        assert body_text(detail["request"]) == body
    assert len({e["src"]["port"] for e in entries}) == 3
    assert worker.status()["ebpf"]["go_syscall_fds"] > before


def test_grpc_over_tls(worker, programs, certs):
    port = worker.ports["grpc"]
    server = start_server(programs["gogrpc"], port, certs, "-workers", "4", "-requests", "5",
                          "-tag", "svc")
    try:
        hooked(worker, programs["gogrpc"])
        done = subprocess.run([str(programs["gogrpc"]), "-mode", "client", "-addr",
                               f"127.0.0.1:{port}", "-workers", "4", "-requests", "5", "-tag", "svc"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "done 0 failures", done
        entries = tls_entries(worker, port, 20, "grpc", timeout=60)
    finally:
        server.stop()
    assert len(entries) == 20
    assert {e["request"]["path"] for e in entries} == {"/grpc.health.v1.Health/Check"}
    assert len({e["src"]["port"] for e in entries}) == 1       # one connection, 20 streams
    by_service = {}
    for entry in entries:
        detail = worker.get(f"/entries/{entry['id']}").json()
        text = json.dumps(detail["request"].get("body"))
        names = [f"svc-w{w}-r{r}" for w in range(4) for r in range(5) if f'"svc-w{w}-r{r}"' in text]
        assert len(names) == 1, detail["request"]
        by_service[names[0]] = entry["status"]
    # even calls name a registered service (SERVING, status 0), odd ones answer NotFound (5)
    assert by_service == {f"svc-w{w}-r{r}": 0 if r % 2 == 0 else 5
                          for w in range(4) for r in range(5)}


def test_stripped_go_binary_is_found_through_gopclntab(worker, programs, certs):
    port = worker.ports["stripped"]
    server = start_server(programs["stripped"], port, certs)
    try:
        library = hooked(worker, programs["stripped"])
        assert library["kind"] == "go" and library["version"].startswith("go1.")
        assert library["probes"] > 2 and library["error"] == ""
        assert library["notes"] == [
            "no symbol table (stripped): crypto/tls functions found through .gopclntab"]
        go_client(programs["stripped"], "-url", f"https://127.0.0.1:{port}", "-proto", "h1",
                  "-workers", "2", "-requests", "3", "-tag", "stripped")
        check_every_request(worker, port, "stripped", "http", "HTTP/1.1", 2, 3)
    finally:
        server.stop()


def test_a_go_binary_without_section_headers_is_named_with_what_is_missing(
        worker, programs, certs, tmp_path):
    """No sections: the function table is found by its header in the file, but there is no
    .itablink to read *net.TCPConn's type from, so sockets come from each call's syscalls
    (and a first request served from Go's buffer waits for the next call to name it)."""
    binary = without_section_headers(programs["stripped"], tmp_path / "sectionless")
    port = worker.ports["sectionless"]
    server = start_server(binary, port, certs)
    try:
        library = hooked(worker, binary)
        go_client(binary, "-url", f"https://127.0.0.1:{port}", "-proto", "h1",
                  "-workers", "2", "-requests", "3", "-tag", "sectionless")
        check_every_request(worker, port, "sectionless", "http", "HTTP/1.1", 2, 3)
    finally:
        server.stop()
    assert library["kind"] == "go" and library["probes"] > 2 and library["error"] == ""
    assert library["version"].startswith("go1.")      # found by searching the data segment
    assert library["notes"] == [
        "no symbol table (stripped): crypto/tls functions found through its header, searched "
        "for in the file",
        "no *net.TCPConn itab (no .itablink section, no symbols): each call's socket comes "
        "from the syscalls it makes"]


def test_a_go_binary_too_old_to_probe_is_named_with_why(worker, programs, certs, tmp_path):
    binary = with_go_version(programs["gohttps"], tmp_path / "old-go", "go1.16.9")
    server = start_server(binary, free_port(), certs)
    try:
        library = hooked(worker, binary)
    finally:
        server.stop()
    assert (library["probes"], library["kind"], library["version"]) == (0, "go", "go1.16.9")
    assert library["processes"] == 1          # the processes running it are counted too
    assert library["error"] == ("go1.16.9: Go before 1.17 passes arguments on the stack "
                                "(ABI0); only the register ABI of Go 1.17+ is supported")


def test_static_openssl_client(worker, https_server, programs):
    """A C client linked with libssl.a, against the Go server: the SSL_write/SSL_read (and
    _ex) of its own executable are hooked, seen alone (ProbedFiles) and through the worker."""
    binary = programs["openssl"]
    paths = ["/static/a?status=200", "/static/b?status=404", "/static/c?status=200",
             "/static/d?status=500"]
    probe = ProbedFiles(binary)
    try:
        client = Proc([str(binary), str(https_server)], stdin=True)
        client.wait_line("ready")
        library = hooked(worker, binary)     # found while running, before it says anything
        client.send("".join(f"{path}\n" for path in paths), close=True)
        assert client.process.wait(60) == 0, client.output
        assert [line.split(" ", 1)[1] for line in client.lines[1:]] == [
            "200 OK", "404 Not Found", "200 OK", "500 Internal Server Error"]
        events, _counters = probe.events()
    finally:
        probe.close()
    assert library["kind"] == "openssl-static" and library["probes"] == 8
    mine = [e for e in events if e["tgid"] == client.process.pid]
    assert {(e["role"], e["rport"]) for e in mine} == {(CLIENT, https_server)}
    sent = "".join(e["data"] for e in mine if e["kind"] == WRITE)
    received = "".join(e["data"] for e in mine if e["kind"] == READ)
    assert [f"GET {path} HTTP/1.1" in sent for path in paths] == [True] * 4
    assert re.findall(r"HTTP/1\.1 (\d{3}) ", received) == ["200", "404", "200", "500"]
    assert received.count(" body=") == 4
    entries = tls_entries(worker, https_server, 4, 'request.path.startsWith("/static/")')
    assert [(e["request"]["method"], e["request"]["path"], e["status"]) for e in entries] == [
        ("GET", "/static/a", 200), ("GET", "/static/b", 404), ("GET", "/static/c", 200),
        ("GET", "/static/d", 500)]
    assert len({e["src"]["port"] for e in entries}) == 1
    detail = worker.get(f"/entries/{entries[1]['id']}").json()
    assert body_text(detail["response"]) == "HTTP/1.1 GET /static/b body="


def test_a_stripped_release_binary_of_another_go_version(problem, programs, certs, tmp_path):
    """kubectl as shipped (stripped, static, built by a newer Go than the test programs),
    hooked alone: its HTTP/2 requests to the Go server and the answers, read through the
    *net.TCPConn offsets of that version."""
    if problem is not None:
        pytest.skip(problem)
    kubectl = os.path.realpath(KUBECTL)
    if not os.path.exists(kubectl):
        pytest.skip(f"no {KUBECTL} on this machine")
    probe = ProbedFiles(kubectl)
    port = free_port()
    server = start_server(programs["gohttps"], port, certs)
    try:
        done = subprocess.run(
            [kubectl, f"--server=https://127.0.0.1:{port}", "--insecure-skip-tls-verify=true",
             "--token=test", "get", "--raw", "/kubectl/raw"], capture_output=True, text=True,
            timeout=60, stdin=subprocess.DEVNULL,
            env={**os.environ, "HOME": str(tmp_path), "KUBECONFIG": os.devnull})
        assert done.returncode == 0 and done.stdout == "HTTP/2.0 GET /kubectl/raw body=", done
        events, counters = probe.events()
    finally:
        server.stop()
        probe.close()
    mine = [e for e in events if e["rport"] == port]
    assert mine and {e["role"] for e in mine} == {CLIENT}
    assert "PRI * HTTP/2.0" in "".join(e["data"] for e in mine if e["kind"] == WRITE)
    assert "HTTP/2.0 GET /kubectl/raw body=" in "".join(e["data"] for e in mine if e["kind"] == READ)
    assert counters["go_calls"] > 0 and counters["go_syscall_fds"] == 0
