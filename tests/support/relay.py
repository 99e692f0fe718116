"""TCP relays for tests: bytes copied both ways between two sockets, one thread per direction.

`Relay` accepts on a listening socket (which may live in another network namespace, see
support.netns) and opens the other end with `connect()` for each connection: a port-forward
into a namespace, or a way out of one. With `tls`, it terminates TLS on the accepted side.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable


def pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy a -> b and b -> a until either side ends; then both sockets are shut and closed."""
    finished: list[int] = []

    def copy(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            finished.append(1)                      # list.append is atomic
            if len(finished) == 2:                  # both directions done: nobody uses the sockets
                a.close()
                b.close()
    for source, sink in ((a, b), (b, a)):
        threading.Thread(target=copy, args=(source, sink), daemon=True).start()


class Relay:
    """Every connection accepted on `listener` is relayed to a socket from `connect()`."""

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket],
                 tls: ssl.SSLContext | None = None) -> None:
        self.listener = listener
        self.connect = connect
        self.tls = tls
        self.errors: list[str] = []                 # what went wrong per connection, for assertions
        self.address = listener.getsockname()[:2]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            if self.tls is not None:
                client = self.tls.wrap_socket(client, server_side=True)
            upstream = self.connect()
            upstream.settimeout(None)
        except (OSError, ssl.SSLError) as error:
            self.errors.append(f"{type(error).__name__}: {error}")
            client.close()
            return
        pipe(client, upstream)

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)   # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.listener.close()
