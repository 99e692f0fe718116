"""A new UDP flow's first datagram (worker.dissection.FirstDatagram) decides as the selector
does: the same entries as open_session's sessions make of the same datagrams, whichever way
the decision goes (claimed on the first datagram, handed to the selector, swapped roles,
learned hints, nothing claimed)."""

from __future__ import annotations

import ipaddress
import json
import struct
from typing import Any

import pytest

from factories import LINKTYPE_ETHERNET, udp_packet
from worker.dissection import Dissection
from worker.dissectors import fallback, registry
from worker.dissectors.base import Direction, Exchange, FlowInfo
from worker.dissectors.select import ServerHints, open_session
from worker.dissectors.ways import registered

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def _name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def query(ident: int, name: str = "a.example") -> bytes:
    return struct.pack("!6H", ident, 0x0100, 1, 0, 0, 0) + _name(name) + struct.pack("!HH", 1, 1)


def response(ident: int, name: str = "a.example", answers: int = 1) -> bytes:
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 0, 0, 9])
    return (struct.pack("!6H", ident, 0x8180, 1, answers, 0, 0) + _name(name)
            + struct.pack("!HH", 1, 1) + record * answers)


# (client port, server port, [(from the client?, payload)]) per flow, in the order they come.
Flow = tuple[int, int, list[tuple[bool, bytes]]]

CASES: dict[str, list[Flow]] = {
    "dns on any port, then its learned server": [
        (40001, 40523, [(True, query(1)), (False, response(1))]),
        (40002, 40523, [(True, query(2)), (False, response(2))])],
    "dns on its port": [(40001, 53, [(True, query(1)), (False, response(1))])],
    "a response first: roles swapped": [(40001, 40523, [(False, response(7))])],
    "not dns: the fallback": [(40001, 40523, [(True, b"hello"), (False, b"world")])],
    "a learned server's flow that is not dns": [
        (40001, 40523, [(True, query(1)), (False, response(1))]),
        (40002, 40523, [(True, b"hello")])],
    "empty datagrams only": [(40001, 40523, [(True, b""), (False, b"")])],
    "a first datagram past the first checkpoint": [
        (40001, 40523, [(False, response(3, answers=40)), (True, query(4))])],
    "a query unanswered": [(40001, 40523, [(True, query(5))])],
}


def _frames(flows: list[Flow]) -> list[bytes]:
    frames = []
    for client_port, server_port, datagrams in flows:
        for from_client, payload in datagrams:
            if from_client:
                frames.append(udp_packet(CLIENT, SERVER, client_port, server_port, payload))
            else:
                frames.append(udp_packet(SERVER, CLIENT, server_port, client_port, payload))
    return frames


def _through_dissection(flows: list[Flow]) -> list[tuple[Any, ...]]:
    dissection = Dissection("test")
    dissection.feed([((0, i), LINKTYPE_ETHERNET, 1_000_000 * (i + 1), frame, len(frame))
                     for i, frame in enumerate(_frames(flows))])
    dissection.close_all()
    out = []
    for row in dissection.take_rows():
        entry = json.loads(row.entry_json)
        out.append((entry["protocol"], entry["summary"], entry["request"], entry["response"],
                    entry["complete"], entry["notes"], entry["src"]["port"],
                    entry["dst"]["port"]))
    return sorted(out, key=repr)


def _through_selector(flows: list[Flow]) -> list[tuple[Any, ...]]:
    """open_session's selector per flow (the flow as the assembler makes it: the first
    sender taken for the client, roles guessed off the well-known ports)."""
    exchanges: list[tuple[Exchange, FlowInfo]] = []
    hints, dissectors, generic = ServerHints(), tuple(registry()), fallback()
    ip = {True: ipaddress.ip_address(CLIENT).packed, False: ipaddress.ip_address(SERVER).packed}
    sessions = []
    for client_port, server_port, datagrams in flows:
        first_from_client = datagrams[0][0]
        ports = {True: client_port, False: server_port}
        sender, receiver = first_from_client, not first_from_client
        guessed = ports[sender] >= 1024 and ports[receiver] >= 1024
        if not guessed and ports[sender] < ports[receiver]:
            sender, receiver = receiver, sender
        flow = FlowInfo("udp", ip[sender], ports[sender], ip[receiver], ports[receiver], guessed)
        selector = open_session(flow, None, dissectors, fallback=generic,  # type: ignore[arg-type]
                                hints=hints)
        selector._emit = lambda exchange, s=selector: exchanges.append((exchange, s))
        offsets = [0, 0]
        for i, (from_client, payload) in enumerate(datagrams):
            direction = Direction(0 if from_client == sender else 1)
            selector.on_data(direction, payload, offsets[direction], 1_000_000 * (i + 1), (0, i))
            offsets[direction] += len(payload)
        sessions.append(selector)
    for selector in sessions:
        selector.on_close(10**12)
    out = []
    for exchange, selector in exchanges:
        flow = selector.session_flow
        out.append((exchange.protocol, exchange.summary, exchange.request, exchange.response,
                    exchange.complete, exchange.notes, flow.client_port, flow.server_port))
    return sorted(json.loads(json.dumps(out)), key=repr)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_first_datagram_decides_as_the_selector_does(case: str) -> None:
    flows = CASES[case]
    assert _through_dissection(flows) == [tuple(row) for row in _through_selector(flows)]


def test_a_dns_flow_claimed_on_its_first_datagram_teaches_its_server() -> None:
    dissection = Dissection("test")
    frames = _frames(CASES["dns on any port, then its learned server"][:1])
    dissection.feed([((0, i), LINKTYPE_ETHERNET, 1_000_000 * (i + 1), frame, len(frame))
                     for i, frame in enumerate(frames)])
    learned = registered(tuple(dissection._dissectors)).hints.get(
        ("udp", ipaddress.ip_address(SERVER).packed, 40523))
    assert learned is not None and learned.name == "dns"
