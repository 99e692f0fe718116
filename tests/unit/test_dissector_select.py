"""Choosing a dissector by content: port-hint order, rewind, undissected flows, gaps."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.dissectors import fallback as fallback_dissector
from worker.dissectors import registry
from worker.dissectors.base import Detect, Direction, Exchange, FlowInfo
from worker.dissectors.http1 import Http1Dissector
from worker.dissectors.select import ServerHints, open_session

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
REQUEST = b"GET /api/orders?id=7 HTTP/1.1\r\nHost: shop\r\nAccept: */*\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
TLS_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64))


def flow(server_port: int = 8080, transport: str = "tcp") -> FlowInfo:
    return FlowInfo(transport, b"\x0a\xd5\x00\x01", 40000, b"\x0a\xd5\x00\x02", server_port)


@dataclass
class Recorder:
    """A session that records its calls."""

    calls: list[tuple] = field(default_factory=list)

    def on_data(self, direction, data, offset, ts_ns, ref):
        self.calls.append(("data", direction, data, offset, ts_ns, ref))

    def on_gap(self, direction, offset, length, ts_ns):
        self.calls.append(("gap", direction, offset, length, ts_ns))

    def on_close(self, ts_ns):
        self.calls.append(("close", ts_ns))


class Fake:
    """A dissector that claims flows whose client bytes start with `magic`."""

    transports = frozenset({"tcp"})

    def __init__(self, name: str, magic: bytes, ports: set[int] = frozenset()) -> None:
        self.name, self.magic, self.ports = name, magic, frozenset(ports)
        self.sessions: list[Recorder] = []
        self.asked = 0

    def detect(self, client: bytes, server: bytes) -> Detect:
        self.asked += 1
        if client.startswith(self.magic):
            return Detect.MATCH
        return Detect.MORE if self.magic.startswith(client) else Detect.NO

    def session(self, flow, emit, body_limit=0):
        self.sessions.append(Recorder())
        return self.sessions[-1]


def feed_one_byte_at_a_time(session, client: bytes, server: bytes) -> None:
    for i in range(len(client)):
        session.on_data(C2S, client[i:i + 1], i, 100 + i, (1, i))
    for i in range(len(server)):
        session.on_data(S2C, server[i:i + 1], i, 1000 + i, (2, i))


def test_registry_has_one_dissector_per_protocol():
    names = [d.name for d in registry()]
    assert len(names) == len(set(names))
    assert {"http", "http2", "dns", "redis", "kafka", "amqp", "postgres", "mysql", "mqtt",
            "tls"} <= set(names)
    assert all(isinstance(d.ports, frozenset) for d in registry())


def test_rewind_one_byte_chunks_give_the_same_exchange_as_one_chunk():
    whole: list[Exchange] = []
    session = open_session(flow(), whole.append, registry())
    session.on_data(C2S, REQUEST, 0, 100, (1, 0))
    session.on_data(S2C, RESPONSE, 0, 1000, (2, 0))
    session.on_close(5000)

    split: list[Exchange] = []
    session = open_session(flow(), split.append, registry())
    feed_one_byte_at_a_time(session, REQUEST, RESPONSE)
    session.on_close(5000)

    assert len(whole) == len(split) == 1
    a, b = whole[0], split[0]
    assert b.summary == a.summary == "GET /api/orders?id=7"
    assert (b.request, b.response, b.status, b.complete) == (a.request, a.response, 200, True)
    assert (b.request_size, b.response_size) == (len(REQUEST), len(RESPONSE))
    # The replayed chunks kept their own ts and refs: first and last byte of the exchange.
    assert (b.start_ns, b.first_ref) == (100, (1, 0))
    assert (b.end_ns, b.last_ref) == (1000 + len(RESPONSE) - 1, (2, len(RESPONSE) - 1))
    assert session.dissector.name == "http"


def test_replay_keeps_the_original_order_of_data_and_gaps():
    fake = Fake("fake", b"MAGIC!")
    session = open_session(flow(), [].append, [fake])
    session.on_data(C2S, b"MAG", 0, 1, (0, 1))
    session.on_data(S2C, b"srv", 0, 2, (0, 2))
    session.on_data(C2S, b"IC", 3, 3, (0, 3))
    assert fake.sessions == []
    session.on_data(C2S, b"!", 5, 4, (0, 4))
    session.on_gap(S2C, 3, 10, 5)
    session.on_close(6)
    (recorder,) = fake.sessions
    assert recorder.calls == [
        ("data", C2S, b"MAG", 0, 1, (0, 1)), ("data", S2C, b"srv", 0, 2, (0, 2)),
        ("data", C2S, b"IC", 3, 3, (0, 3)), ("data", C2S, b"!", 5, 4, (0, 4)),
        ("gap", S2C, 3, 10, 5), ("close", 6)]


def test_flow_no_dissector_wants_is_ignored_and_counted():
    out: list[Exchange] = []
    fake = Fake("fake", b"MAGIC")
    # Only HTTP and a fake are candidates here, so TLS bytes are wanted by nobody.
    session = open_session(flow(443), out.append, [Http1Dissector(), fake])
    session.on_data(C2S, TLS_HELLO, 0, 1, (0, 1))
    assert not session.ignored          # http waits: the client may have started mid-message
    session.on_data(S2C, b"\x16\x03\x03\x00\x5a", 0, 2, (0, 2))
    assert session.ignored and session.dissector is None
    session.on_data(C2S, REQUEST, len(TLS_HELLO), 3, (0, 3))    # even HTTP now: ignored
    session.on_close(4)
    assert out == [] and fake.sessions == []
    assert session.ignored_bytes == len(TLS_HELLO) + 5 + len(REQUEST)


def test_undecided_bytes_past_the_detect_limit_become_a_gap_and_detection_goes_on():
    # The server direction starts in the middle of a long body: no message start in it.
    # Past detect_limit its bytes are replayed as one gap; the client's next message claims.
    fake = Fake("fake", b"MAGIC")
    session = open_session(flow(), [].append, [fake], detect_limit=50)
    session.on_data(S2C, b"b" * 30, 1000, 1, (0, 1))
    session.on_data(S2C, b"b" * 30, 1030, 2, (0, 2))
    assert not session.ignored and session.skipped_bytes == 60
    session.on_data(S2C, b"b" * 10, 1060, 3, (0, 3))
    session.on_data(C2S, b"MAGIC!", 0, 4, (0, 4))
    assert session.dissector is fake
    assert fake.sessions[0].calls == [
        ("gap", S2C, 1000, 60, 2),
        ("data", S2C, b"b" * 10, 1060, 3, (0, 3)),
        ("data", C2S, b"MAGIC!", 0, 4, (0, 4)),
    ]


def test_port_hint_goes_first_then_registry_order():
    first, hinted = Fake("first", b"SAME"), Fake("hinted", b"SAME", {6379})
    session = open_session(flow(6379), [].append, [first, hinted])
    session.on_data(C2S, b"SAME", 0, 1, (0, 1))
    assert session.dissector is hinted
    first, hinted = Fake("first", b"SAME"), Fake("hinted", b"SAME", {6379})
    session = open_session(flow(5432), [].append, [first, hinted])
    session.on_data(C2S, b"SAME", 0, 1, (0, 1))
    assert session.dissector is first


def test_an_earlier_candidate_that_says_more_is_waited_for():
    # "AB" is a MATCH for short but still a prefix for longer: the earlier one decides,
    # so the choice does not depend on how the bytes were chunked.
    longer, short = Fake("longer", b"ABCD"), Fake("short", b"AB")
    session = open_session(flow(), [].append, [longer, short])
    session.on_data(C2S, b"AB", 0, 1, (0, 1))
    assert session.dissector is None
    session.on_data(C2S, b"CD", 2, 2, (0, 2))
    assert session.dissector is longer


def test_a_candidate_that_said_no_is_skipped_after():
    never, late = Fake("never", b"ZZZ"), Fake("late", b"ABCD")
    session = open_session(flow(), [].append, [never, late])
    session.on_data(C2S, b"AB", 0, 1, (0, 1))
    asked = never.asked
    session.on_data(C2S, b"CD", 2, 2, (0, 2))
    assert session.dissector is late and never.asked == asked


def test_detection_restarts_after_a_gap_for_a_capture_started_mid_stream():
    out: list[Exchange] = []
    session = open_session(flow(), out.append, registry())
    session.on_data(C2S, b"tail of a previous upload", 0, 1, (0, 1))
    session.on_gap(C2S, 25, 100, 2)
    session.on_data(C2S, REQUEST, 125, 3, (0, 3))
    assert session.dissector is not None and session.dissector.name == "http"
    # The server answers the upload whose tail was seen, then the request.
    session.on_data(S2C, RESPONSE.replace(b"200 OK", b"201 Created") + RESPONSE, 0, 4, (0, 4))
    session.on_close(5)
    upload, ex = out
    assert upload.request == {} and upload.status == 201 and not upload.complete
    assert ex.summary == "GET /api/orders?id=7" and ex.complete and ex.status == 200
    assert ex.client_offset == 125 and ex.server_offset == len(RESPONSE) + 5


def test_all_no_goes_to_the_fallback_with_the_rewind():
    fallback = Fake("tcp", b"")
    session = open_session(flow(), [].append, [Http1Dissector()], fallback=fallback)
    session.on_data(C2S, TLS_HELLO, 0, 1, (0, 1))
    session.on_data(S2C, b"\x16\x03\x03", 0, 2, (0, 2))
    session.on_data(C2S, b"more", len(TLS_HELLO), 3, (0, 3))
    session.on_close(4)
    (recorder,) = fallback.sessions
    assert [c[0] for c in recorder.calls] == ["data", "data", "data", "close"]
    assert recorder.calls[0][2] == TLS_HELLO and not session.ignored


def test_short_flow_closed_before_detection_goes_to_the_fallback():
    fallback = Fake("tcp", b"")
    session = open_session(flow(), [].append, registry(), fallback=fallback)
    session.on_data(C2S, b"GE", 0, 1, (0, 1))
    session.on_close(2)
    assert fallback.sessions[0].calls == [("data", C2S, b"GE", 0, 1, (0, 1)), ("close", 2)]


def test_dissectors_of_another_transport_are_not_asked():
    out: list[Exchange] = []
    session = open_session(flow(80, "udp"), out.append, [Http1Dissector()])
    session.on_data(C2S, REQUEST, 0, 1, (0, 1))
    session.on_close(2)
    assert session.ignored and out == []


def test_guessed_roles_are_swapped_when_the_content_says_so():
    # Mid-stream, no port hint: the assembler took the first sender (really the server, in
    # the middle of a body) for the client. The request seen the other way claims the flow
    # with the roles reversed, and the session sees directions as they really are.
    guessed = FlowInfo("tcp", b"\x0a\x00\x00\x02", 45000, b"\x0a\x00\x00\x01", 51000,
                       roles_guessed=True)
    fake = Fake("fake", b"MAGIC")
    session = open_session(guessed, [].append, [fake])
    session.on_data(C2S, b"rest of a body", 500, 1, (0, 1))
    session.on_data(S2C, b"MAGIC request", 0, 2, (0, 2))
    assert session.dissector is fake and session.swapped
    assert session.session_flow == FlowInfo("tcp", b"\x0a\x00\x00\x01", 51000,
                                            b"\x0a\x00\x00\x02", 45000)
    session.on_data(C2S, b"response", 514, 3, (0, 3))
    assert fake.sessions[0].calls == [
        ("data", S2C, b"rest of a body", 500, 1, (0, 1)),
        ("data", C2S, b"MAGIC request", 0, 2, (0, 2)),
        ("data", S2C, b"response", 514, 3, (0, 3)),
    ]


def test_roles_decided_by_syn_or_ports_are_never_swapped():
    fake = Fake("fake", b"MAGIC")
    session = open_session(flow(), [].append, [fake])
    session.on_data(C2S, b"xyz", 0, 1, (0, 1))
    session.on_data(S2C, b"MAGIC request", 0, 2, (0, 2))
    assert session.dissector is None and not session.swapped


# -- the rule: who spoke first, and an earlier MORE that never ends ---------------------------

class Waiter(Fake):
    """Says MORE until its client bytes reach `patience`, then NO (a weak detector)."""

    def __init__(self, name: str, patience: int, client_first: bool = True) -> None:
        super().__init__(name, b"")
        self.patience, self.client_first = patience, client_first

    def detect(self, client: bytes, server: bytes) -> Detect:
        self.asked += 1
        return Detect.MORE if len(client) + len(server) < self.patience else Detect.NO


def handshake_flow(server_port: int = 13306) -> FlowInfo:
    return FlowInfo("tcp", b"\x0a\xd5\x00\x01", 40000, b"\x0a\xd5\x00\x02", server_port,
                    handshake=True)


def test_client_first_protocols_are_not_tried_when_the_server_spoke_first():
    # MySQL's greeting on a port no hint knows: the registry's client-first protocols (which
    # all answer MORE to server bytes alone) are out, and MySQL claims on the greeting.
    from test_mysql import greeting, handshake_response
    out: list[Exchange] = []
    session = open_session(handshake_flow(), out.append, registry())
    session.on_data(S2C, greeting(), 0, 1, (0, 1))
    assert session.server_first and session.dissector.name == "mysql"
    session.on_data(C2S, handshake_response(), 0, 2, (0, 2))
    assert session.dissector.name == "mysql"
    # The same bytes on a flow picked up mid-stream (no handshake): nothing is excluded.
    session = open_session(flow(13306), [].append, registry())
    session.on_data(S2C, greeting(), 0, 1, (0, 1))
    assert not session.server_first


def test_server_first_on_a_flow_without_a_server_first_candidate_goes_to_the_fallback():
    fallback = Fake("tcp", b"")
    session = open_session(handshake_flow(), [].append, [Http1Dissector()], fallback=fallback)
    session.on_data(S2C, b"220 smtp.example ESMTP\r\n", 0, 1, (0, 1))
    assert session.dissector is fallback
    assert fallback.sessions[0].calls == [("data", S2C, b"220 smtp.example ESMTP\r\n", 0, 1, (0, 1))]


def test_a_later_match_stops_waiting_for_an_earlier_more_at_a_checkpoint():
    slow, fake = Waiter("slow", 10**9), Fake("fake", b"MAGIC")
    session = open_session(flow(), [].append, [slow, fake])
    session.on_data(C2S, b"MAGIC" + b"x" * 500, 0, 1, (0, 1))
    assert session.dissector is None          # 505 bytes: slow still holds it
    session.on_data(S2C, b"y" * 10, 0, 2, (0, 2))
    assert session.dissector is fake          # 512 reached: the first MATCH in order claims


def test_a_match_waiting_at_close_claims_instead_of_the_fallback():
    fallback, slow, fake = Fake("tcp", b""), Waiter("slow", 10**9), Fake("fake", b"MAGIC")
    session = open_session(flow(), [].append, [slow, fake], fallback=fallback)
    session.on_data(C2S, b"MAGIC!", 0, 1, (0, 1))
    session.on_close(2)
    assert session.dissector is fake and fallback.sessions == []
    assert fake.sessions[0].calls == [("data", C2S, b"MAGIC!", 0, 1, (0, 1)), ("close", 2)]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(cuts=st.lists(st.integers(min_value=1, max_value=1299), max_size=12),
       patience=st.sampled_from([300, 700, 1100, 5000]), late=st.integers(0, 1200))
def test_the_choice_does_not_depend_on_chunking(cuts, patience, late):
    # An earlier candidate that gives up after `patience` bytes, a later one whose magic sits
    # `late` bytes in: whatever the chunking, the same one claims, on the same bytes.
    stream = b"z" * late + b"MAGIC" + b"w" * (1300 - late - 5)
    points = sorted(set(cuts)) + [len(stream)]

    def claim(chunks: list[bytes]) -> tuple[str | None, int]:
        slow, fake = Waiter("slow", patience), Fake("fake", b"z" * late + b"MAGIC")
        session = open_session(flow(), [].append, [slow, fake])
        at = 0
        for chunk in chunks:
            session.on_data(C2S, chunk, at, at, (0, at))
            at += len(chunk)
            if session.dissector is not None:
                break
        return (session.dissector.name if session.dissector else None), at

    starts = [0] + points[:-1]
    split = claim([stream[a:b] for a, b in zip(starts, points)])
    whole = claim([stream])
    assert split[0] == whole[0]
    # One byte at a time finds the earliest point: every chunking claims within that chunk.
    bytewise = claim([stream[i:i + 1] for i in range(len(stream))])
    assert bytewise[0] == whole[0]


def test_skipped_bytes_are_noted_as_skipped_not_as_lost():
    out: list[Exchange] = []
    session = open_session(flow(), out.append, [Fake("fake", b"MAGIC")], detect_limit=50,
                           fallback=fallback_dissector())
    session.on_data(S2C, b"b" * 60, 1000, 1, (0, 1))
    session.on_close(2)
    (ex,) = out
    assert ex.protocol == "tcp" and ex.complete and ex.response_size == 60
    assert ex.notes == ["detection skipped 60 captured bytes (no message start in them)"]
    # A claiming dissector gets them as a gap to resync on, and its first exchange says so.
    out.clear()
    session = open_session(flow(), out.append, registry(), detect_limit=50)
    session.on_data(C2S, b"\x00\x01" * 40, 0, 1, (0, 1))
    session.on_data(C2S, REQUEST, 80, 2, (0, 2))
    session.on_data(S2C, RESPONSE, 0, 3, (0, 3))
    session.on_close(4)
    # (HTTP takes the skipped bytes for a request it lost: the response answers that one.)
    assert "GET /api/orders?id=7" in [e.summary for e in out]
    assert "detection skipped 80 captured bytes (no message start in them)" in out[0].notes
    assert sum("detection skipped" in note for e in out for note in e.notes) == 1


def other_client(port: int, server_port: int = 8080) -> FlowInfo:
    return FlowInfo("tcp", b"\x0a\xd5\x00\x03", port, b"\x0a\xd5\x00\x02", server_port)


def test_a_learned_server_hint_asks_the_claiming_dissector_first():
    # A weak early candidate says MORE on the first request: without a hint every flow waits
    # for more bytes and asks it again; once the server was claimed, the next flow is
    # claimed by its first bytes and the early candidate is never asked.
    hints = ServerHints()
    slow, fake = Waiter("slow", 10**9), Fake("fake", b"MAGIC")
    first = open_session(flow(), [].append, [slow, fake], hints=hints)
    first.on_data(C2S, b"MAGIC!", 0, 1, (0, 1))
    assert first.dissector is None              # slow still holds it
    first.on_data(C2S, b"x" * 600, 6, 2, (0, 2))
    assert first.dissector is fake and len(hints) == 1
    asked = slow.asked
    second = open_session(other_client(40001), [].append, [slow, fake], hints=hints)
    second.on_data(C2S, b"MAGIC!", 0, 3, (0, 3))
    assert second.dissector is fake and slow.asked == asked
    assert fake.sessions[-1].calls == [("data", C2S, b"MAGIC!", 0, 3, (0, 3))]
    # Another server of the same flows is not hinted.
    third = open_session(other_client(40002, server_port=8081), [].append, [slow, fake],
                         hints=hints)
    third.on_data(C2S, b"MAGIC!", 0, 4, (0, 4))
    assert third.dissector is None and slow.asked == asked + 1


def test_a_hint_that_refuses_leaves_the_order_as_without_hints():
    # The server changed protocol: the hinted dissector says NO and the flow is decided in
    # the usual order, on the same bytes, as a flow without hints.
    def choose(hinted: bool) -> tuple[str, list[tuple], int]:
        longer, short, fake = Fake("longer", b"ABCD"), Fake("short", b"AB"), Fake("fake", b"MAGIC")
        hints = ServerHints()
        if hinted:
            hints.learn(("tcp", flow().server_ip, 8080), fake)
        session = open_session(flow(), [].append, [longer, short, fake], hints=hints)
        session.on_data(C2S, b"AB", 0, 1, (0, 1))
        assert session.dissector is None        # longer's MORE is waited for, hint or not
        session.on_data(C2S, b"CD", 2, 2, (0, 2))
        return session.dissector.name, session.dissector.sessions[0].calls, fake.asked

    name, calls, asked = choose(hinted=False)
    assert (name, calls, asked) == ("longer", [("data", C2S, b"AB", 0, 1, (0, 1)),
                                               ("data", C2S, b"CD", 2, 2, (0, 2))], 0)
    assert choose(hinted=True) == (name, calls, 1)   # asked once, first: NO


def test_a_hinted_candidate_saying_more_does_not_hold_up_an_earlier_match():
    hints = ServerHints()
    early, waiter = Fake("early", b"GET "), Waiter("waiter", 10**9)
    hints.learn(("tcp", flow().server_ip, 8080), waiter)
    session = open_session(flow(), [].append, [early, waiter], hints=hints)
    session.on_data(C2S, b"GET / HTTP/1.1\r\n", 0, 1, (0, 1))
    assert session.dissector is early and waiter.asked == 1


def test_the_fallback_teaches_no_hint_and_hints_are_bounded_least_recent_out():
    hints = ServerHints(limit=2)
    fallback = Fake("tcp", b"")
    session = open_session(flow(), [].append, [Fake("fake", b"MAGIC")], fallback=fallback,
                           hints=hints)
    session.on_data(C2S, b"nothing known", 0, 1, (0, 1))
    assert session.dissector is fallback and len(hints) == 0
    fake = Fake("fake", b"MAGIC")
    for port in (1, 2, 1, 3):   # 1 claimed again after 2: 2 is the least recent
        open_session(other_client(40000 + port, port), [].append, [fake],
                     hints=hints).on_data(C2S, b"MAGIC", 0, 1, (0, 1))
    server = other_client(0).server_ip
    assert [hints.get(("tcp", server, port)) for port in (1, 2, 3)] == [fake, None, fake]


def test_roles_swapped_by_content_teach_the_real_server():
    hints = ServerHints()
    fake = Fake("fake", b"MAGIC")
    guessed = FlowInfo("tcp", b"\x0a\xd5\x00\x01", 40000, b"\x0a\xd5\x00\x02", 41000,
                       roles_guessed=True)
    session = open_session(guessed, [].append, [fake], hints=hints)
    session.on_data(C2S, b"rest of a body", 500, 1, (0, 1))
    session.on_data(S2C, b"MAGIC request", 0, 2, (0, 2))
    assert session.swapped and len(hints) == 1
    assert hints.get(("tcp", guessed.client_ip, 40000)) is fake
    # The next guessed flow with that endpoint on the assembler's client side asks the
    # swapped way first.
    again = FlowInfo("tcp", b"\x0a\xd5\x00\x01", 40000, b"\x0a\xd5\x00\x09", 41001,
                     roles_guessed=True)
    session = open_session(again, [].append, [Fake("early", b"MAGIC"), fake], hints=hints)
    session.on_data(S2C, b"MAGIC request", 0, 1, (0, 1))
    assert session.dissector is fake and session.swapped
