"""The hub's live events: what hub/stream.py fans out to every client of a query, what scripts
and the edge metrics read, and what /stream and /ws send.

An event is made once and shared by every client of its group: an entry's data is the JSON the
worker sent, kept as bytes; the hub's own events carry a Struct. Each is encoded to SSE or to a
WebSocket message at most once, when the first client needs it (`sse`, `ws`), however many
clients send it.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Literal

import msgspec
from sse_starlette import ServerSentEvent

Kind = Literal["entry", "status", "lost", "tags"]


class WorkerStatus(msgspec.Struct):
    """`status`: a worker's stream for this query went up or down, or the worker is up but
    refuses it for now (`state` "busy": its --max-stream-clients; tried again in `retry_s`).
    `ok`: its entries are in this stream."""
    node: str | None
    url: str
    ok: bool
    error: str | None
    state: Literal["up", "down", "busy"] = "up"
    retry_s: float | None = None


class Lost(msgspec.Struct, omit_defaults=True):
    """`lost`: events this client will not get (None: how many is not known), and why."""
    lost: int | None
    reason: str | None = None
    node: str | None = None


class Tags(msgspec.Struct):
    """`tags`: a script tagged an entry after it was streamed."""
    id: str
    tags: list[str]


Payload = WorkerStatus | Lost | Tags


class HubEvent(msgspec.Struct, dict=True):   # dict: room for the cached encodings
    kind: Kind
    data: bytes | Payload    # bytes: an entry as the worker encoded it
    id: str | None = None    # an entry's position (hub/stream.py): the SSE id, the WS "seq"

    @cached_property
    def payload(self) -> bytes:
        """The data as JSON."""
        return self.data if isinstance(self.data, bytes) else msgspec.json.encode(self.data)

    @cached_property
    def sse(self) -> bytes:
        """The event as SSE, as sse_starlette writes it; the hub's own payloads spaced as
        json.dumps spaces them, as /stream always sent them."""
        if isinstance(self.data, bytes) and _one_line(self.data) and (self.id is None or _one_line(self.id.encode())):
            # an entry (one line of JSON): the bytes sse_starlette would write, joined here,
            # without a decode, an encoder object and an encode per entry (a busy feed's cost)
            head = b"event: " + self.kind.encode() + b"\r\n"
            if self.id is not None:
                head = b"id: " + self.id.encode() + b"\r\n" + head
            return head + b"data: " + self.data + b"\r\n\r\n"
        text = self.data.decode() if isinstance(self.data, bytes) else json.dumps(msgspec.to_builtins(self.data))
        return ServerSentEvent(data=text, event=self.kind, id=self.id).encode()

    @cached_property
    def ws(self) -> str:
        """The event as a WebSocket message {type, payload}; an entry's payload gets its
        position as "seq"."""
        payload = self.payload.strip()
        if self.kind == "entry" and self.id is not None and payload[:1] == b"{" and payload[-1:] == b"}":
            seq = b'"seq":' + msgspec.json.encode(self.id)
            inner = payload[1:-1].strip()
            payload = b"{" + inner + b"," + seq + b"}" if inner else b"{" + seq + b"}"
        return (b'{"type":"' + self.kind.encode() + b'","payload":' + payload + b"}").decode()


def _one_line(text: bytes) -> bool:
    return b"\n" not in text and b"\r" not in text


def entry_event(data: bytes, id: str | None) -> HubEvent:
    return HubEvent("entry", data, id)


def status_event(node: str | None, url: str, ok: bool, error: str | None,
                 state: Literal["up", "down", "busy"] | None = None, retry_s: float | None = None) -> HubEvent:
    return HubEvent("status", WorkerStatus(node, url, ok, error, state or ("up" if ok else "down"), retry_s))


def lost_event(lost: int | None, reason: str | None = None, node: str | None = None) -> HubEvent:
    return HubEvent("lost", Lost(lost, reason or None, node or None))


def tags_event(entry_id: str, tags: list[str]) -> HubEvent:
    return HubEvent("tags", Tags(entry_id, tags))
