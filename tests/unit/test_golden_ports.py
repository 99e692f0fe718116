"""Every golden capture gives the same entries on any port: detection goes by content, ports
are only a hint (issue 15). Each capture's server port is rewritten to a random unprivileged
port and to other protocols' well-known ports, whole and as if capture had started late."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from support.golden import GOLDEN
from support.rewrite import Capture, dissect_packets, drop_leading, move_port, read_packets, server_ports
from worker.packet import decode

CAPTURES = sorted(GOLDEN.glob("*/*.pcap"))
# Ports other protocols are hinted on (and HTTP's, TLS's, DNS's): a capture moved there is
# tried with that protocol first.
WELL_KNOWN = [3306, 5432, 6379, 5672, 1883, 9092, 80, 443, 53, 50051]
SETTINGS = settings(max_examples=8, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


def _load(path) -> tuple[Capture, int, set[int]]:
    capture = read_packets(path)
    port = server_ports(capture).most_common(1)[0][0]
    used = set()
    for _, frame in capture.packets:
        decoded = decode(capture.linktype, frame)
        if decoded is not None:
            used |= {decoded.sport, decoded.dport}
    return capture, port, used


def _role_free(entry: dict[str, Any]) -> bool:
    """An entry whose content says nothing of who is the client: a generic (tcp/udp) flow, or
    TLS records without the handshake. Seen without the SYN, only ports suggest its roles."""
    return entry["protocol"] in ("tcp", "udp") or (
        entry["protocol"] == "tls" and "handshake not captured" in entry["notes"])


def _seen(entries: list[dict[str, Any]]) -> list[tuple]:
    """What must not change with the port: protocol, summary, status, completeness, notes and
    the protocol fields; for a role-free entry, its two sides unordered."""
    seen = []
    for e in entries:
        if _role_free(e):
            sides = sorted(json.dumps(side, sort_keys=True).replace('"client"', '"side"')
                           .replace('"server"', '"side"').replace(" client:", " side:")
                           .replace(" server:", " side:") for side in (e["request"], e["response"]))
            seen.append((e["protocol"], e["complete"], e["notes"], sides,
                         sorted(e["size"].values())))
        else:
            seen.append((e["protocol"], e["summary"], e["status"], e["complete"], e["notes"],
                         e["request"], e["response"]))
    return seen


def _same_on(capture: Capture, real: int, port: int) -> None:
    expected = _seen(dissect_packets(capture))
    moved = _seen(dissect_packets(move_port(capture, real, port)))
    assert moved == expected, f"port {real} -> {port}"


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_same_entries_on_any_port(path) -> None:
    capture, real, used = _load(path)
    assert dissect_packets(capture), "a golden capture gives entries"

    @SETTINGS
    @given(port=st.integers(1024, 65535) | st.sampled_from(WELL_KNOWN))
    def moved(port: int) -> None:
        assume(port not in used)
        _same_on(capture, real, port)

    moved()


def _client_speaks_first(capture: Capture, real: int) -> bool:
    """The first payload is a client's (sent to the server port). When the server's bytes come
    first without a SYN, and its messages could be sent by either side (HTTP/2 frames, Kafka
    length prefixes, MQTT PUBLISH), nothing but ports can tell the roles; not tested here."""
    for _, frame in capture.packets:
        decoded = decode(capture.linktype, frame)
        if decoded is not None and decoded.payload:
            return decoded.dport == real
    return False


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_same_entries_on_any_port_mid_connection(path) -> None:
    capture, real, used = _load(path)

    @SETTINGS
    @given(port=st.integers(1024, 65535) | st.sampled_from(WELL_KNOWN),
           dropped=st.integers(1, 12))
    def moved(port: int, dropped: int) -> None:
        assume(port not in used)
        late = drop_leading(capture, dropped)
        assume(_client_speaks_first(late, real))
        _same_on(late, real, port)

    moved()
