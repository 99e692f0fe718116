"""The wire model shared by worker, hub, CLI and SPA (see ARCHITECTURE.md, Wire model).

Entries cross the network as JSON encoded from these Structs; list and stream endpoints send
them without bodies, the detail endpoint adds `body` to request and response.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Protocol = Literal[
    "http", "http2", "grpc", "websocket", "dns", "redis", "kafka", "amqp",
    "postgres", "mysql", "mqtt", "tls", "tcp", "udp",
]
EndpointKind = Literal["pod", "service", "node", "external", "process", ""]


class Endpoint(msgspec.Struct, omit_defaults=False):
    ip: str
    port: int
    name: str = ""
    namespace: str = ""
    kind: EndpointKind = ""


class Size(msgspec.Struct):
    request: int = 0
    response: int = 0


class TcpInfo(msgspec.Struct):
    """Facts of the TCP connection an entry came over (worker/connections.py, docs/KFL.md)."""

    handshake_ms: float | None = None      # SYN to SYN-ACK as the capture saw them
    syns: int = 0                          # SYNs the client sent (1 = no retransmission)
    retransmitted_bytes: int = 0           # payload bytes seen again, both directions
    zero_windows: int = 0                  # segments advertising a zero receive window
    closed_by: Literal["client", "server"] | None = None    # the first FIN's sender
    rst: Literal["client", "server"] | None = None          # the RST's sender
    failure: Literal["refused", "reset", "timeout", "abandoned"] | None = None


class UdpInfo(msgspec.Struct):
    """Of the UDP flow an entry came over: refused when an ICMP port unreachable answered it."""

    failure: Literal["refused"] | None = None


class Entry(msgspec.Struct):
    id: str
    node: str
    protocol: str
    ts: float
    src: Endpoint
    dst: Endpoint
    summary: str
    elapsed_ms: float | None = None
    status: int | None = None
    request: dict[str, Any] = msgspec.field(default_factory=dict)
    response: dict[str, Any] | None = None
    size: Size = msgspec.field(default_factory=Size)
    tls: bool = False
    tags: list[str] = msgspec.field(default_factory=list)
    # False when the exchange was cut by a gap, an eviction or the end of capture.
    complete: bool = True
    # What the dissector noticed: "malformed: ...", "gap in response body", truncation, ...
    notes: list[str] = msgspec.field(default_factory=list)
    # The TCP connection's facts so far (null for UDP); `tcp.rst`, `tcp.handshake_ms` in KFL.
    tcp: TcpInfo | None = None
    # The UDP flow's: `udp.failure == "refused"` (ICMP port unreachable). Null for TCP.
    udp: UdpInfo | None = None


class Body(msgspec.Struct):
    """A message body in the detail view: text, or base64 with encoding="base64"."""

    data: str
    encoding: Literal["text", "base64"] = "text"
    size: int = 0                 # bytes after content decoding, before truncation
    truncated: bool = False
    content_encoding: str = ""    # e.g. "gzip" when the wire bytes were compressed


# The one JSON encoder: its bound `encode` is what hot loops call (no wrapper call).
ENCODER = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return ENCODER.encode(value)


def decode_entry(data: bytes | str) -> Entry:
    return msgspec.json.decode(data, type=Entry)


# -- bodies the hub sends a worker (decoded with shark.bodies.decode_body) ----------------------

class TargetsUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """PUT /api/v1/targets of a worker: capture only `ips` (none when idle, all when empty and
    not idle); `names` with `cluster_nets`, when given, replace the names stamped into entries
    (checked by worker.names.parse_names/parse_nets, which name the IP that is wrong)."""

    ips: Annotated[list[str], msgspec.Meta(
        description='a list of IP addresses, e.g. {"ips": ["10.0.0.5"]}')]
    idle: bool = False
    names: Any = msgspec.UNSET          # IP -> {name, namespace, kind}; msgspec.Raw when pre-encoded
    cluster_nets: Any = msgspec.UNSET   # ["10.244.0.0/16", ...] or null


class ConfigUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """PUT /api/v1/config of a worker."""

    storage_limit: Annotated[str | int, msgspec.Meta(description='a size, e.g. {"storage_limit": "500MB"}')]


TAG_DESCRIPTION = "a list of tags"


class TagChange(msgspec.Struct, forbid_unknown_fields=True):
    id: str                                                     # NODE:SEQ
    add: Annotated[list[str], msgspec.Meta(description=TAG_DESCRIPTION)] = []
    remove: Annotated[list[str], msgspec.Meta(description=TAG_DESCRIPTION)] = []


class TagChanges(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/v1/tags of a worker (the hub's scripts: test.pass / test.fail)."""

    changes: Annotated[list[TagChange], msgspec.Meta(
        description='a non-empty list, e.g. [{"id": "node-a:42", "add": ["test.fail"]}]')]


# -- what the hub says about its workers in a merged answer ---------------------------------------

class WorkerPart(msgspec.Struct, omit_defaults=True):
    """One worker's part in a merged answer: a row of the `workers` block of /entries, /har,
    /servicemap (and of a /pcap's X-Shark-Partial). `ok` and `error` are always sent."""

    node: str | None             # None until the worker has said its name
    url: str
    ok: bool
    error: str | None
    count: int | None = None     # its entries the hub read (None: its answer never opened)
    skipped: int | None = None   # its lines that were not valid entries (left out)
    unordered: int = 0           # its entries out of newest-first order (sent only when some)

    @property
    def name(self) -> str:
        return self.node or self.url

    @property
    def failure(self) -> str:
        """'name: why' of a part that failed."""
        return f"{self.name}: {self.error}"
