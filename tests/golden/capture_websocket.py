"""Regenerate tests/golden/websocket/basic.pcap: the `websockets` library on both ends
(sync server and client on 127.0.0.1, a free port), through a plain HTTP/1.1 Upgrade.

    .venv/bin/python tests/golden/capture_websocket.py      (as root)

Connection 1 (no compression): text, binary, a fragmented text message, a ping and its pong,
the server's echo of each data message, a client close 1000. Connection 2 (permessage-deflate,
the library's default): compressed text both ways, then the server closes with 4000.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from websockets.sync.client import connect
from websockets.sync.server import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.golden import GOLDEN, Scenario, record_all  # noqa: E402
from support.processes import free_port  # noqa: E402


def handler(ws) -> None:  # noqa: ANN001 (websockets' connection)
    for message in ws:
        if message == "please close":
            ws.close(4000, "server says bye")
            return
        ws.send(message)


@contextmanager
def scenarios() -> Iterator[list[Scenario]]:
    port = free_port()
    server = serve(handler, "127.0.0.1", port, ping_interval=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"ws://127.0.0.1:{port}/chat"

    def traffic() -> None:
        with connect(url, compression=None, ping_interval=None) as ws:
            ws.send("hello websocket")
            ws.recv()
            ws.send(bytes(range(256)) * 2)
            ws.recv()
            ws.send(["fragmented ", "text ", "message"])
            ws.recv()
            ws.ping(b"are you there").wait(5)
            ws.close(1000, "done")
        with connect(url, ping_interval=None) as ws:     # permessage-deflate
            for n in range(3):
                ws.send(f'{{"seq": {n}, "payload": "{"compress me " * 20}"}}')
                ws.recv()
            ws.send("please close")
            try:
                ws.recv()
            except Exception:   # ConnectionClosedOK with 4000
                pass
    try:
        yield [Scenario(GOLDEN / "websocket" / "basic.pcap", f"tcp port {port}", traffic)]
    finally:
        server.shutdown()


if __name__ == "__main__":
    record_all(scenarios)
