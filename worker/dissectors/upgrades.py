"""What a connection becomes after HTTP/1.1 switches protocols (101) or opens a tunnel.

The HTTP/1 dissector calls the hook with the protocol name from the Upgrade header ("h2c",
"websocket", ...) once the 101 response has ended; the session it returns gets the rest of
the flow's bytes. A protocol is one entry in UPGRADES: name -> factory(flow, emit, body_limit).
"""

from __future__ import annotations

from typing import Callable

from worker.dissectors.base import Emit, FlowInfo, Session

SessionFactory = Callable[[FlowInfo, Emit, int], Session]


def _h2c(flow: FlowInfo, emit: Emit, body_limit: int) -> Session:
    from worker.dissectors.http2 import Http2Session
    return Http2Session(flow, emit, body_limit, upgraded=True)


def _websocket(flow: FlowInfo, emit: Emit, body_limit: int) -> Session:
    from worker.dissectors.websocket import WebSocketSession
    return WebSocketSession(flow, emit, body_limit)


UPGRADES: dict[str, SessionFactory] = {
    "h2c": _h2c,
    "websocket": _websocket,
}


def upgrade_session(protocol: str, flow: FlowInfo, emit: Emit | None = None,
                    body_limit: int = 0) -> Session | None:
    """The session that takes the flow over after an upgrade to `protocol`, or None (the
    rest of the flow is not dissected). Without `emit` nothing can be reported: None."""
    factory = UPGRADES.get(protocol.strip().lower())
    if factory is None or emit is None:
        return None
    return factory(flow, emit, body_limit)
