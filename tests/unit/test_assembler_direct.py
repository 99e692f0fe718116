"""The assembler calls the TwoWaySession that claimed a flow directly (not through its
selector's rebound method) once it has found it, and never when that could differ: a session
class with its own on_data, a session that is no selector, a flow whose session restarted."""

from __future__ import annotations

from collections.abc import Sequence

from factories import LINKTYPE_ETHERNET, tcp_conversation
from test_mqtt import ack, connack, connect, publish

from worker.assembler import Assembler
from worker.assembler.flows import STREAM_PROBES, Flow
from worker.dissection import Dissection
from worker.dissectors.base import Direction, FlowInfo
from worker.dissectors.mqtt import MqttSession
from worker.packet import PacketRef, decode
from worker.store.index import IndexValues


def mqtt_packets(count: int, close: str | None = None) -> list:
    """A client publishing `count` times at QoS 0 and 1 (each acknowledged), its connection
    left open unless `close`."""
    client = [connect()] + [publish(f"t/{n % 3}", b"x" * n, qos=n % 2, pid=n + 1)
                            for n in range(count)]
    server = [connack()] + [ack(4, n + 1) if n % 2 else b"" for n in range(count)]
    server = [chunk for chunk in server if chunk]
    return tcp_conversation(client, server, server=("10.0.0.2", 1883), close=close)


def feed(dissection: Dissection, packets: Sequence, first: int = 0) -> list[IndexValues]:
    dissection.feed([((0, first + n), LINKTYPE_ETHERNET, ts, frame, wirelen)
                     for n, (ts, frame, wirelen) in enumerate(packets)])
    return dissection.take_values()


def the_flow(dissection: Dissection) -> Flow:
    flows = list(dissection._assembler._order)
    assert len(flows) == 1
    return flows[0]


def entries(values: list[IndexValues]) -> list[bytes]:
    return [bytes(value[3]) for value in values]


def test_a_claimed_two_way_session_is_called_directly_with_the_same_entries() -> None:
    packets = mqtt_packets(40)
    direct = Dissection("n", numbered=True)
    made = feed(direct, packets)
    flow = the_flow(direct)
    claimed = flow.session.session        # type: ignore[union-attr]
    assert isinstance(claimed, MqttSession)
    assert flow.stream is claimed and flow.probes == 0
    # The same packets with the probe off from the SYN on: every chunk through the selector.
    selected = Dissection("n", numbered=True)
    through = feed(selected, packets[:1])
    the_flow(selected).probes = 0
    through += feed(selected, packets[1:], 1)
    assert the_flow(selected).stream is None
    assert len(made) == 41 and entries(through) == entries(made)   # CONNECT, 40 PUBLISH


def test_a_restarted_session_is_looked_for_again() -> None:
    packets = mqtt_packets(30)
    dissection = Dissection("n", numbered=True)
    made = feed(dissection, packets[:20])
    flow = the_flow(dissection)
    old = flow.stream
    assert old is not None
    assert dissection._assembler.restart_session(flow.info, packets[19][0])
    assert flow.stream is None and flow.probes == STREAM_PROBES
    made += feed(dissection, packets[20:], 20)
    # The new selector claims the flow again: its own session is called from then on.
    assert flow.stream is not None and flow.stream is not old
    assert flow.stream is flow.session.session   # type: ignore[union-attr]
    assert len(made) >= 10


def test_a_session_with_its_own_on_data_goes_through_its_selector() -> None:
    request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    dissection = Dissection("n", numbered=True)
    made = feed(dissection, tcp_conversation([request] * 3, [response] * 3, close=None))
    flow = the_flow(dissection)
    claimed = flow.session.session        # type: ignore[union-attr]
    assert type(claimed).__name__ == "HttpSession"     # overrides TwoWaySession.on_data
    assert flow.stream is None and flow.probes == 0
    assert len(made) == 3


class Plain:
    """A session that is no selector (tests', the detail view's)."""

    def __init__(self, flow: FlowInfo) -> None:
        self.flow = flow
        self.data: list[bytes] = []

    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        self.data.append(data)

    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        pass

    def on_close(self, ts_ns: int) -> None:
        pass


def test_a_session_that_is_no_selector_is_probed_a_few_times_then_left_alone() -> None:
    sessions: list[Plain] = []

    def open_session(flow: FlowInfo) -> Plain:
        sessions.append(Plain(flow))
        return sessions[-1]

    assembler = Assembler(open_session)  # type: ignore[arg-type]
    chunks = [b"c%d" % n for n in range(STREAM_PROBES * 2)]
    packets = tcp_conversation(chunks, [], close=None)
    for n, (ts, frame, _wirelen) in enumerate(packets):
        decoded = decode(LINKTYPE_ETHERNET, frame)
        assert decoded is not None
        assembler.packet(ts, (0, n), decoded)
    flow = list(assembler._order)[0]
    assert flow.probes == 0 and flow.stream is None
    assert sessions[0].data == chunks


def test_a_closed_flow_holds_no_stream_session() -> None:
    """A closed flow lingers in the table for a while: the session it called directly is
    let go with its session, not held until the flow leaves."""
    dissection = Dissection("n", numbered=True)
    made = feed(dissection, mqtt_packets(10, close="fin"))
    flow = the_flow(dissection)
    assert flow.closed and flow.session is None
    assert flow.stream is None and made
