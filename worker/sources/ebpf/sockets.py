"""A socket descriptor's TCP connection, read from /proc: the fallback for connections the bcc
program did not see being made (opened before the worker started, or accept() called without
an address buffer).

/proc/PID/net/tcp{,6} list the sockets of that process's network namespace, so this works
for processes in pods as well. Roles: the end whose local port some socket of the same
namespace listens on is the server.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from worker.sources.ebpf.events import ConnKey

TCP_LISTEN = 0x0A
TCP_ESTABLISHED = 0x01
_SOCKET_LINK = re.compile(r"^socket:\[(\d+)\]$")


class ProcSocket(NamedTuple):
    local: bytes        # packed, 4 or 16 bytes
    local_port: int
    remote: bytes
    remote_port: int
    state: int
    inode: int


class SocketTableError(ValueError):
    """A line of /proc/net/tcp that does not parse; the message names the line and field."""


def _address(text: str, where: str) -> tuple[bytes, int]:
    host, sep, port = text.partition(":")
    if not sep or len(host) not in (8, 32):
        raise SocketTableError(f"{where}: address {text!r} is not HEX:PORT with 8 or 32 hex digits")
    try:
        raw = bytes.fromhex(host)
        port_number = int(port, 16)
    except ValueError:
        raise SocketTableError(f"{where}: address {text!r} is not hexadecimal") from None
    # The kernel prints each 32-bit word in host order (little endian here).
    packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(packed) == 16 and packed.startswith(b"\x00" * 10 + b"\xff\xff"):
        packed = packed[12:]
    return packed, port_number


def parse_socket_table(text: str) -> list[ProcSocket]:
    """The sockets of one /proc/net/tcp or tcp6 file (the header line is skipped)."""
    sockets = []
    for number, line in enumerate(text.splitlines()[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        where = f"line {number}"
        if len(fields) < 10:
            raise SocketTableError(f"{where}: {len(fields)} fields, expected at least 10")
        local, local_port = _address(fields[1], where)
        remote, remote_port = _address(fields[2], where)
        try:
            state = int(fields[3], 16)
            inode = int(fields[9])
        except ValueError:
            raise SocketTableError(f"{where}: state {fields[3]!r} or inode {fields[9]!r} "
                                   "is not a number") from None
        sockets.append(ProcSocket(local, local_port, remote, remote_port, state, inode))
    return sockets


def connection_from_table(sockets: list[ProcSocket], inode: int) -> tuple[ConnKey, bool] | None:
    """(connection, the socket's end is the client) for the socket with this inode, or None."""
    mine = next((s for s in sockets if s.inode == inode and s.remote_port), None)
    if mine is None:
        return None
    wildcard = (b"\x00" * 4, b"\x00" * 16)
    is_server = any(s.state == TCP_LISTEN and s.local_port == mine.local_port
                    and (s.local == mine.local or s.local in wildcard) for s in sockets)
    if is_server:
        return (mine.remote, mine.remote_port, mine.local, mine.local_port), False
    return (mine.local, mine.local_port, mine.remote, mine.remote_port), True


def socket_inode(link: str) -> int | None:
    """The inode in a /proc/PID/fd link ("socket:[1234]"), None for anything but a socket."""
    match = _SOCKET_LINK.match(link)
    return int(match.group(1)) if match else None


def resolve_fd(pid: int, fd: int, proc: str = "/proc") -> tuple[ConnKey, bool] | None:
    """The TCP connection behind descriptor `fd` of process `pid`, or None (gone, not a TCP
    socket, not connected)."""
    try:
        inode = socket_inode(os.readlink(f"{proc}/{pid}/fd/{fd}"))
    except OSError:
        return None
    if inode is None:
        return None
    sockets: list[ProcSocket] = []
    for name in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/{pid}/net/{name}", encoding="ascii") as file:
                sockets += parse_socket_table(file.read())
        except (OSError, SocketTableError):
            continue
    return connection_from_table(sockets, inode)
