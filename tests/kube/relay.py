"""The port-forward tests inject in place of `kubectl port-forward`: a TCP relay on this machine."""

from __future__ import annotations

import socket
import threading

from support.relay import pipe


class RelayForward:
    """A forward that relays local_host:local_port to a server on this machine, as `kubectl
    port-forward` relays to the hub pod; `drop()` ends it as a hub pod going away does."""

    def __init__(self, local_host: str, local_port: int, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server((local_host, local_port))
        self.url = f"http://{local_host}:{self.listener.getsockname()[1]}"
        self.ended = threading.Event()
        self.reason = ""
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.ended.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            pipe(client, upstream)

    def wait(self, timeout: float | None = None) -> str | None:
        return self.reason if self.ended.wait(timeout) else None

    def drop(self, reason: str = "lost connection to pod") -> None:
        self.reason = reason
        self.stop()

    def stop(self) -> None:
        self.ended.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)    # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.listener.close()


class RelayForwarder:
    """The forwarder tests inject: records each call and relays to `target`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.calls: list[tuple[str, str, int, str, int]] = []
        self.forwards: list[RelayForward] = []
        self.started = threading.Event()

    def __call__(self, namespace: str, service: str, port: int, local_host: str, local_port: int) -> RelayForward:
        self.calls.append((namespace, service, port, local_host, local_port))
        forward = RelayForward(local_host, local_port, self.target)
        self.forwards.append(forward)
        self.started.set()
        return forward
