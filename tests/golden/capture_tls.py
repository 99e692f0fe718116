"""Regenerate tests/golden/tls/*.pcap: real TLS clients against real servers, and raw TCP/UDP
exchanges on unknown ports (the generic fallback).

    .venv/bin/python tests/golden/capture_tls.py      (as root; then UPDATE_GOLDEN=1 tests)

A throwaway self-signed certificate (CN and SAN shark.test) is made in a temp dir with the
openssl CLI. Captures:
  tls13.pcap          openssl s_client -servername shark.test -alpn h2,http/1.1 -> s_server -rev
  tls12.pcap          the same with -tls1_2
  python_https.pcap   httpx (Python ssl, SNI shark.test, ALPN http/1.1) -> an https server,
                      two requests on one connection
  fail_version.pcap   s_client -tls1_2 -> s_server -tls1_3: the server's protocol_version alert
  fail_unknown_ca.pcap  s_client -tls1_2 -verify_return_error: the client's unknown_ca alert
  generic_tcp.pcap    raw binary TCP exchange (1 KB up, 34 KB down) on an unknown port
  generic_udp.pcap    three UDP datagrams and their replies on an unknown port
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.golden import GOLDEN, record  # noqa: E402
from support.processes import Proc, free_port  # noqa: E402

OUT = GOLDEN / "tls"
CLIENT_BYTES = b"\xde\xad\xbe\xef" + bytes(range(256)) * 4 + b"\x00" * 20   # 1048 bytes
# Unknown to every dissector (b"\xca\xfe" + ... looked like a MySQL packet header to one).
SERVER_BYTES = b"\xca\xfe\xba\xbe" + bytes(range(256)) * 132 + b"\xff" * 4    # 33800 bytes


def make_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=shark.test", "-addext", "subjectAltName=DNS:shark.test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def s_server(port: int, cert: Path, key: Path, *extra: str) -> Proc:
    server = Proc(["openssl", "s_server", "-accept", str(port), "-cert", str(cert), "-key",
                   str(key), "-rev", "-alpn", "h2,http/1.1", *extra])
    server.wait_line("ACCEPT")
    return server


def s_client(port: int, *extra: str, line: bytes = b"hello shark\n", expect: bytes = b"krahs olleh",
             ok: bool = True) -> None:
    """One connection: send a line, wait for the reversed echo, close."""
    client = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "shark.test",
         "-alpn", "h2,http/1.1", *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    assert client.stdin is not None and client.stdout is not None
    if ok:
        time.sleep(0.5)           # the handshake is done before the line goes out
        client.stdin.write(line)
        client.stdin.flush()
        seen = b""
        deadline = time.monotonic() + 10
        while expect not in seen and time.monotonic() < deadline:
            chunk = client.stdout.read1(65536)
            if not chunk:
                break
            seen += chunk
        assert expect in seen, seen[-500:]
    client.stdin.close()
    client.wait(10)
    client.stdout.close()


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = f"hello {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def https_server(port: int, cert: Path, key: Path) -> ThreadingHTTPServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    server = ThreadingHTTPServer(("127.0.0.1", port), _Hello)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def tcp_exchange(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            got = b""
            while len(got) < len(CLIENT_BYTES):
                got += conn.recv(65536)
            # In pieces below the selector's detect window (DETECT_LIMIT): on lo one
            # sendall would be a single 32 KB segment (see the report on select.py).
            for start in range(0, len(SERVER_BYTES), 8192):
                conn.sendall(SERVER_BYTES[start:start + 8192])
                time.sleep(0.02)
    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(CLIENT_BYTES)
        got = b""
        while len(got) < len(SERVER_BYTES):
            got += sock.recv(65536)
    thread.join(10)
    listener.close()


def udp_exchange(port: int) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", port))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)
    for n in range(3):
        client.sendto(b"\xffping %d " % n + bytes(40), ("127.0.0.1", port))
        data, peer = server.recvfrom(2048)
        server.sendto(b"\xfepong " + data[1:] + bytes(100), peer)
        client.recvfrom(2048)
    client.close()
    server.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(Path(tmp))
        for name, server_args, client_args, ok in (
                ("tls13", (), (), True),
                ("tls12", (), ("-tls1_2",), True),
                ("fail_version", ("-tls1_3",), ("-tls1_2",), False),
                ("fail_unknown_ca", (), ("-tls1_2", "-verify_return_error"), False)):
            port = free_port()
            server = s_server(port, cert, key, *server_args)
            try:
                record(OUT / f"{name}.pcap", f"tcp port {port}",
                       lambda: s_client(port, *client_args, ok=ok))
            finally:
                server.stop()

        port = free_port()
        https = https_server(port, cert, key)
        context = ssl.create_default_context(cafile=str(cert))

        def python_client() -> None:
            with httpx.Client(verify=context) as client:
                for path in ("/one", "/two"):
                    response = client.get(f"https://127.0.0.1:{port}{path}",
                                          extensions={"sni_hostname": "shark.test"})
                    response.raise_for_status()
        try:
            record(OUT / "python_https.pcap", f"tcp port {port}", python_client)
        finally:
            https.shutdown()
            https.server_close()

    port = free_port()
    record(OUT / "generic_tcp.pcap", f"tcp port {port}", lambda: tcp_exchange(port))
    port = free_udp_port()
    record(OUT / "generic_udp.pcap", f"udp port {port}", lambda: udp_exchange(port))


if __name__ == "__main__":
    main()
