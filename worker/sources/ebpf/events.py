"""The records the bcc program puts in its ring buffer, decoded. Pure: bytes in, events out."""

from __future__ import annotations

from struct import Struct
from typing import NamedTuple

from worker.sources.ebpf.program import (EVENT_HEADER_FORMAT, EVENT_HEADER_SIZE, FLAG_READ_FAILED,
                                         FLAG_TUPLE, KIND_CLOSE, KIND_EXIT, KIND_READ, KIND_WRITE,
                                         ROLE_CLIENT, ROLE_SERVER)

_header = Struct(EVENT_HEADER_FORMAT)
assert _header.size == EVENT_HEADER_SIZE, "EVENT_HEADER_FORMAT disagrees with the C struct"

_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
_KINDS = {KIND_WRITE, KIND_READ, KIND_CLOSE, KIND_EXIT}

# A connection as the synthesized packets show it: (client ip, client port, server ip,
# server port); addresses packed, 4 bytes for IPv4 (v4-mapped IPv6 included), 16 for IPv6.
ConnKey = tuple[bytes, int, bytes, int]


class EventError(ValueError):
    """A ring-buffer record that is not an event of our program."""


class TlsEvent(NamedTuple):
    ts_ns: int          # CLOCK_MONOTONIC, as bpf_ktime_get_ns() gives it
    ssl: int            # address of the SSL object in the process: one TLS connection
    tgid: int           # process
    tid: int            # thread
    fd: int             # socket descriptor, -1 when unknown
    kind: int           # KIND_WRITE | KIND_READ | KIND_CLOSE | KIND_EXIT
    role: int           # ROLE_CLIENT | ROLE_SERVER | ROLE_UNKNOWN
    family: int
    flags: int          # FLAG_TUPLE, FLAG_READ_FAILED
    length: int         # cleartext bytes this event stands for
    total: int          # bytes the whole SSL call moved
    offset: int         # stream offset of the first byte, per SSL object and direction
    lport: int
    rport: int
    laddr: bytes        # 16 bytes (IPv4 as v4-mapped IPv6)
    raddr: bytes
    data: bytes         # the cleartext; empty when FLAG_READ_FAILED

    @property
    def has_tuple(self) -> bool:
        return bool(self.flags & FLAG_TUPLE)

    @property
    def read_failed(self) -> bool:
        return bool(self.flags & FLAG_READ_FAILED)


def parse_event(raw: bytes) -> TlsEvent:
    """One ring-buffer record; EventError naming what is wrong with a damaged one."""
    if len(raw) < EVENT_HEADER_SIZE:
        raise EventError(f"event of {len(raw)} bytes is shorter than its "
                         f"{EVENT_HEADER_SIZE}-byte header")
    fields = _header.unpack_from(raw)
    kind, flags, length = fields[5], fields[8], fields[9]
    if kind not in _KINDS:
        raise EventError(f"event kind {kind} is unknown (expected one of {sorted(_KINDS)})")
    data = raw[EVENT_HEADER_SIZE:]
    if flags & FLAG_READ_FAILED:
        if data:
            raise EventError(f"event marked unreadable carries {len(data)} bytes")
    elif len(data) != length:
        raise EventError(f"event says {length} bytes of data but carries {len(data)}")
    return TlsEvent(*fields, data)


def unmap_address(address: bytes) -> bytes:
    """A 16-byte address as the wire shows it: v4-mapped IPv6 becomes 4-byte IPv4."""
    if len(address) == 16 and address.startswith(_V4_MAPPED):
        return address[12:]
    return address


def connection_of(role: int, laddr: bytes, lport: int, raddr: bytes, rport: int) -> ConnKey | None:
    """The connection seen from one end; None when the role is unknown."""
    local, remote = unmap_address(laddr), unmap_address(raddr)
    if role == ROLE_CLIENT:
        return (local, lport, remote, rport)
    if role == ROLE_SERVER:
        return (remote, rport, local, lport)
    return None


def event_connection(event: TlsEvent) -> ConnKey | None:
    """The connection an event names (FLAG_TUPLE), or None."""
    if not event.has_tuple:
        return None
    return connection_of(event.role, event.laddr, event.lport, event.raddr, event.rport)
