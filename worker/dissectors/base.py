"""The dissector interface: bytes in, exchanges out; no I/O, no globals.

The assembler hands each flow's reassembled bytes to one Session. A Session is made by the
dissector that claimed the flow by content (see worker.dissectors.select), after the bytes seen
so far were replayed to it ("rewind"). Sessions call `emit` with each finished or abandoned
request/response Exchange; the pipeline turns Exchanges into Entries and index rows.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Final, Protocol

import msgspec

from worker.packet import PacketRef


class Direction(enum.IntEnum):
    CLIENT_TO_SERVER = 0
    SERVER_TO_CLIENT = 1


class Detect(enum.Enum):
    MATCH = "match"   # this dissector claims the flow
    NO = "no"         # never this protocol
    MORE = "more"     # cannot tell yet: wait for more bytes


@dataclass(slots=True, unsafe_hash=True, init=False)
class FlowInfo:
    """A flow's addresses, ports and roles; never changed once made (treat as frozen).

    Equality, hash and repr are frozen=True's (unsafe_hash: the same __hash__). Not frozen, and
    its __init__ written out: frozen's generated __init__ sets each field through
    object.__setattr__ and is interpreted even when compiled (~14k instructions a flow, a
    twelfth of a DNS flow's dissection); this one stores the fields natively."""

    transport: str        # "tcp" | "udp"
    client_ip: bytes      # packed
    client_port: int
    server_ip: bytes
    server_port: int
    # True when nothing decided the roles (no SYN, no port hint, no server seen before) and the
    # first sender was taken for the client: the selector may swap them by content.
    roles_guessed: bool = field(default=False, compare=False)
    # True when the flow was opened by its SYN or SYN-ACK: each direction's first byte is the
    # connection's first (so "the server spoke first" is a fact, not an artefact of capture).
    handshake: bool = field(default=False, compare=False)
    # The assembler's worker.connections.TcpFacts of a TCP flow (None for UDP and in the
    # detail view): read when an exchange becomes an entry, never by dissectors.
    facts: Any = field(default=None, compare=False, repr=False)

    def __init__(self, transport: str, client_ip: bytes, client_port: int, server_ip: bytes,
                 server_port: int, roles_guessed: bool = False, handshake: bool = False,
                 facts: Any = None) -> None:
        self.transport = transport
        self.client_ip = client_ip
        self.client_port = client_port
        self.server_ip = server_ip
        self.server_port = server_port
        self.roles_guessed = roles_guessed
        self.handshake = handshake
        self.facts = facts


@dataclass(slots=True, init=False)
class Exchange:
    """One request and its response (or a lone message), as a dissector saw it.

    A dataclass (equality, repr, asdict) whose __init__ is written out: the one dataclasses
    generates is interpreted Python even when this module is compiled (mypyc), and cost about
    as much as the rest of making an exchange (py-spy: 3% of a Redis capture's dissection)."""

    protocol: str
    start_ns: int                   # first byte of the request
    end_ns: int | None              # last byte of the response; None when there is none
    summary: str
    request: dict[str, Any]
    response: dict[str, Any] | None
    status: int | None = None
    request_size: int = 0           # bytes on the wire, headers included
    response_size: int = 0
    complete: bool = True           # False when cut by a gap, an eviction or the end of data
    # Where to find it again (see worker.detail): the packets holding the first byte of the
    # request and the last byte of the response, and the stream offsets (per direction, as
    # given to Session.on_data) of the request's and the response's first bytes.
    first_ref: PacketRef = (0, 0)
    last_ref: PacketRef = (0, 0)
    client_offset: int = 0
    server_offset: int | None = None
    # Only filled when the session was made with body_limit > 0 (the detail view).
    request_body: bytes | None = None
    response_body: bytes | None = None
    notes: list[str] = field(default_factory=list)   # e.g. "gap in response body"
    # `request` as msgspec encodes it, when a dissector's fast path has it for less than
    # encoding the dict costs (MQTT's PUBLISH: its JSON kept per topic and flags, the numbers
    # joined in): the entry splices it in. Never other than encode(request) (so the dict is
    # not changed after the emit); not compared (the dict is).
    request_json: msgspec.Raw | None = field(default=None, compare=False, repr=False)
    # `response` likewise (DNS: a response without records listed), never other than
    # encode(response).
    response_json: msgspec.Raw | None = field(default=None, compare=False, repr=False)

    def __init__(self, protocol: str, start_ns: int, end_ns: int | None, summary: str,
                 request: dict[str, Any], response: dict[str, Any] | None,
                 status: int | None = None, request_size: int = 0, response_size: int = 0,
                 complete: bool = True, first_ref: PacketRef = (0, 0),
                 last_ref: PacketRef = (0, 0), client_offset: int = 0,
                 server_offset: int | None = None, request_body: bytes | None = None,
                 response_body: bytes | None = None, notes: list[str] | None = None,
                 request_json: msgspec.Raw | None = None,
                 response_json: msgspec.Raw | None = None) -> None:
        # The fields in order, as the generated __init__ took them (notes: a new list each).
        self.protocol = protocol
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.summary = summary
        self.request = request
        self.response = response
        self.status = status
        self.request_size = request_size
        self.response_size = response_size
        self.complete = complete
        self.first_ref = first_ref
        self.last_ref = last_ref
        self.client_offset = client_offset
        self.server_offset = server_offset
        self.request_body = request_body
        self.response_body = response_body
        self.notes = [] if notes is None else notes
        self.request_json = request_json
        self.response_json = response_json


Emit = Callable[[Exchange], None]

# Database protocols (postgres, mysql, redis) share one meaning of `status`, as gRPC and DNS
# do: 0 for a reply that is not an error, non-zero for an error reply (MySQL: its ERR code;
# PostgreSQL and Redis, whose codes are not numbers: 1, the code is in response.error), null
# without a reply. So `status != 0` finds the failures of every one of them.
DB_ERROR: Final = 1


def db_status(answered: bool, error: bool) -> int | None:
    if not answered:
        return None
    return DB_ERROR if error else 0


class Session(Protocol):
    """The per-flow state of one dissector."""

    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        """In-order bytes of one direction; offset counts bytes since that direction's
        first byte, gaps included. For UDP, one call per datagram."""

    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        """`length` bytes at `offset` were lost; resync or give up cleanly."""

    def on_close(self, ts_ns: int) -> None:
        """The flow ended (FIN/RST, idle timeout, eviction, end of capture): emit what is
        pending, marked incomplete where it is cut."""

    def held_bytes(self) -> int:
        """Bytes of the flow the session holds now: unparsed buffers, message heads and
        bodies kept for exchanges not emitted yet, decoder tables (HPACK). What a worker-wide
        memory budget counts; Python's per-object overhead is not included. 0 once closed
        (the assembler drops a closed session)."""


class DatagramSession(ABC):
    """A Session as a native class, for the assembler's UDP path: compiled, a datagram is
    handed to one of these by a direct call (its arguments as they are), where a Session is
    called by the method's name with its numbers and PacketRef boxed and parsed again by the
    callee (~1k instructions a datagram). worker.dissection.FirstDatagram, every new UDP
    flow's session, is one."""

    @abstractmethod
    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        """Session.on_data."""

    @abstractmethod
    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        """Session.on_gap."""

    @abstractmethod
    def on_close(self, ts_ns: int) -> None:
        """Session.on_close."""

    @abstractmethod
    def held_bytes(self) -> int:
        """Session.held_bytes."""


class Dissector(Protocol):
    name: str                         # the Entry.protocol it produces
    transports: frozenset[str]        # {"tcp"}, {"udp"} or both
    ports: frozenset[int]             # only a hint: these flows are tried with it first
    # True when the client always sends first on a new connection (HTTP, TLS, PostgreSQL...):
    # such a protocol is not tried on a connection whose server spoke first (MySQL's greeting).
    client_first: bool

    def detect(self, client: bytes, server: bytes) -> Detect:
        """Look at the first bytes of each direction (either may be empty)."""

    def session(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> Session:
        """A new session; body_limit > 0 keeps up to that many body bytes per message."""
