"""Regenerate tests/golden/http2/*.pcap from real libraries on 127.0.0.1.

    .venv/bin/python tests/golden/capture_http2.py      (as root; then UPDATE_GOLDEN=1 tests)

- h2c.pcap: httpx (http2=True, http1=False: prior knowledge) against hypercorn.
- upgrade.pcap: the h2 library's client doing `Upgrade: h2c` by hand against hypercorn.
- grpc.pcap: grpcio client and server with generic handlers and raw-bytes messages (protobuf
  bytes built by hand, no protoc): a unary call, a server-streaming call, a client-streaming
  call and a call answered NOT_FOUND.

The servers run in child processes of this script (`serve-h2 PORT`, `serve-grpc PORT`).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.golden import GOLDEN, Scenario, record_all  # noqa: E402
from support.processes import Proc, free_port  # noqa: E402

OUT = GOLDEN / "http2"


# -- servers ----------------------------------------------------------------------------

async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    """A tiny ASGI app: /json, /echo (POST body back), anything else 404."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/json":
        status, ctype, out = 200, b"application/json", b'{"ok": true, "items": [1, 2, 3]}'
    elif path == "/echo":
        status, ctype, out = 200, b"application/octet-stream", body
    else:
        status, ctype, out = 404, b"text/plain", b"not found"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"x-golden", b"h2")]})
    await send({"type": "http.response.body", "body": out})


def serve_h2(port: int) -> None:
    import asyncio

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    # hypercorn ends a connection (GOAWAY) after 1000 requests by default; the benchmark's
    # clients keep one connection for thousands
    config.keep_alive_max_requests = 1_000_000
    print("listening", flush=True)
    asyncio.run(serve(app, config))


def _unary_echo(request: bytes, context) -> bytes:  # type: ignore[no-untyped-def]
    import grpc
    if request.startswith(b"\x0a\x07missing"):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such item: missing")
    return b"\x0a\x05hello\x10\x2a\x1a\x04\x08\x01\x10\x02"   # {1:"hello", 2:42, 3:{1:1,2:2}}


def _list(request: bytes, context):  # type: ignore[no-untyped-def]
    for i in range(3):
        yield bytes([0x08, i + 1, 0x12, 0x04]) + b"item"     # {1:i+1, 2:"item"}


def _sum(requests, context) -> bytes:  # type: ignore[no-untyped-def]
    total = sum(r[1] for r in requests)
    return bytes([0x08, total])


def serve_grpc(port: int) -> None:
    from concurrent import futures

    import grpc

    def ident(b: bytes) -> bytes:
        return b
    handlers = grpc.method_handlers_generic_handler("golden.Items", {
        "Get": grpc.unary_unary_rpc_method_handler(_unary_echo, ident, ident),
        "List": grpc.unary_stream_rpc_method_handler(_list, ident, ident),
        "Sum": grpc.stream_unary_rpc_method_handler(_sum, ident, ident),
    })
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handlers,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


# -- clients ----------------------------------------------------------------------------

def h2c_traffic(port: int) -> None:
    import httpx
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", http1=False, http2=True) as client:
        client.get("/json?q=1")
        client.post("/echo", content=b"ping " * 20, headers={"content-type": "text/plain"})
        client.get("/missing")


def upgrade_traffic(port: int) -> None:
    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection(("127.0.0.1", port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = conn.initiate_upgrade_connection()
    sock.sendall(b"GET /json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings"
                 b"\r\nUpgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.sendall(conn.data_to_send())
    done: set[int] = set()

    def pump(until: int) -> None:
        nonlocal rest
        while until not in done:
            chunk, rest = (rest, b"") if rest else (sock.recv(65536), b"")
            if not chunk:
                raise RuntimeError("server closed")
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length,
                                                   event.stream_id)
                if isinstance(event, h2.events.StreamEnded):
                    done.add(event.stream_id)
            sock.sendall(conn.data_to_send())
    pump(1)
    conn.send_headers(3, [(":method", "GET"), (":path", "/missing"), (":scheme", "http"),
                          (":authority", "127.0.0.1")], end_stream=True)
    sock.sendall(conn.data_to_send())
    pump(3)
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    sock.close()


def grpc_traffic(port: int) -> None:
    import grpc

    def ident(b: bytes) -> bytes:
        return b
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        get = channel.unary_unary("/golden.Items/Get", ident, ident)
        get(b"\x0a\x05world\x10\x07")
        items = channel.unary_stream("/golden.Items/List", ident, ident)
        list(items(b"\x08\x03"))
        total = channel.stream_unary("/golden.Items/Sum", ident, ident)
        total(iter([b"\x08\x01", b"\x08\x02", b"\x08\x04"]))
        try:
            get(b"\x0a\x07missing")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "serve-h2":
        serve_h2(int(sys.argv[2]))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "serve-grpc":
        serve_grpc(int(sys.argv[2]))
        return
    record_all(scenarios)
    for name in ("h2c", "upgrade", "grpc"):
        print(name, (OUT / f"{name}.pcap").stat().st_size, "bytes")


@contextmanager
def scenarios() -> Iterator[list[Scenario]]:
    """hypercorn and a grpcio server, each in a child process of this script."""
    me = str(Path(__file__).resolve())
    h2_port, grpc_port = free_port(), free_port()
    servers = [Proc([sys.executable, me, "serve-h2", str(h2_port)]),
               Proc([sys.executable, me, "serve-grpc", str(grpc_port)])]
    try:
        for server in servers:
            server.wait_line("listening")
        time.sleep(0.5)
        yield [Scenario(OUT / "h2c.pcap", f"tcp port {h2_port}", lambda: h2c_traffic(h2_port)),
               Scenario(OUT / "upgrade.pcap", f"tcp port {h2_port}", lambda: upgrade_traffic(h2_port)),
               Scenario(OUT / "grpc.pcap", f"tcp port {grpc_port}", lambda: grpc_traffic(grpc_port))]
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
