"""A real HTTP/1.1 server for capture tests, run as its own process.

python -m support.http_server PORT [HOST] [--tls CERT KEY] [--nodelay]   (from tests/, or with tests/ on sys.path)
--nodelay sets TCP_NODELAY: a response goes out as two writes (headers, then the body), and with
Nagle's algorithm on, the body waits for the client's delayed ACK (40 ms on lo) on every request
of a keep-alive connection (~20 requests/s). Off by default: the tests that compare segments with
tshark (pipelining) were checked with the segments Nagle makes.
Routes: /status/NNN, /json, /gzip, /deflate, /chunked, /bytes/N, /echo (POST), /slow/MS,
/nobody (204), anything else 200 with a short text body. Keep-alive on; HTTP/1.1.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


SESSION = "server-session-5e1b0c"   # the cookie /setcookie sets


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "shark-test/1.0"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "text/plain",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status not in (204, 304) and self.command != "HEAD":
            self.send_header("Content-Length", str(len(body)))
        elif self.command == "HEAD":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status not in (204, 304) and self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        if parts[0] == "status" and len(parts) == 2:
            status = int(parts[1])
            self._send(status, f"status {status}\n".encode())
        elif parts[0] == "json":
            self._send(200, json.dumps({"orders": [1, 2, 3], "path": self.path}).encode(),
                       "application/json")
        elif parts[0] == "gzip":
            body = gzip.compress(b"compressed hello " * 50)
            self._send(200, body, "text/plain", {"Content-Encoding": "gzip"})
        elif parts[0] == "deflate":
            self._send(200, zlib.compress(b"deflated hello " * 50), "text/plain",
                       {"Content-Encoding": "deflate"})
        elif parts[0] == "chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"first chunk\n", b"second chunk\n", b"third\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif parts[0] == "bytes" and len(parts) == 2:
            self._send(200, b"x" * int(parts[1]), "application/octet-stream")
        elif parts[0] == "slow" and len(parts) == 2:
            time.sleep(int(parts[1]) / 1000)
            self._send(200, b"slow\n")
        elif parts[0] == "setcookie":            # a session cookie set by the server
            self._send(200, b"cookie set\n", "text/plain",
                       {"Set-Cookie": f"sid={SESSION}; Path=/; HttpOnly"})
        elif parts[0] == "nobody":
            self._send(204, b"")
        else:
            self._send(200, b"hello\n")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self._send(201 if self.path.startswith("/created") else 200, body,
                   self.headers.get("Content-Type", "application/octet-stream"))

    do_PUT = do_POST


def main() -> None:
    args = sys.argv[1:]
    tls = None
    if "--tls" in args:                      # HTTPS with this certificate and key
        at = args.index("--tls")
        tls, args = args[at + 1:at + 3], args[:at] + args[at + 3:]
    if "--nodelay" in args:
        args.remove("--nodelay")
        Handler.disable_nagle_algorithm = True
    port = int(args[0])
    host = args[1] if len(args) > 1 else "127.0.0.1"
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    if tls:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening {host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
