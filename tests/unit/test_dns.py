"""DNS dissector: parsing, pairing by id over UDP and TCP, losses, malformed input."""

from __future__ import annotations

import struct

import dnslib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import sessions
from support.sessions import comparable
from shark.model import encode
from worker.dissectors.base import Detect, Direction, FlowInfo
from worker.dissectors.dns import (MAX_ANSWERS, QUERY_TIMEOUT_NS, DnsDissector, Malformed, detect,
                                   parse, read_name)

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
UDP = FlowInfo("udp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 53)
TCP = FlowInfo("tcp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 53)


def query(name: str = "example.com", qtype: str = "A", qid: int = 7, edns: bool = False) -> bytes:
    q = dnslib.DNSRecord.question(name, qtype)
    q.header.id = qid
    if edns:
        q.add_ar(dnslib.EDNS0(udp_len=1232))
    return bytes(q.pack())


def answer(name: str = "example.com", qtype: str = "A", qid: int = 7, rcode: int = 0,
           records: list[str] | None = None) -> bytes:
    q = dnslib.DNSRecord.question(name, qtype)
    q.header.id = qid
    r = q.reply()
    r.header.rcode = rcode
    for zone in records if records is not None else [f"{name}. 60 IN A 192.0.2.1"]:
        for rr in dnslib.RR.fromZone(zone):
            r.add_answer(rr)
    return bytes(r.pack())


def framed(msg: bytes) -> bytes:
    return struct.pack("!H", len(msg)) + msg


class Conv(sessions.Conv):
    def __init__(self, flow: FlowInfo = UDP, body_limit: int = 0) -> None:
        super().__init__(lambda emit: DnsDissector().session(flow, emit, body_limit), segment=1,
                         timed_gaps=False, close_ts=10 ** 12, check_errors=True)


# -- parsing -----------------------------------------------------------------------------

def test_parse_records_of_many_types() -> None:
    msg = parse(answer("example.com", "ANY", records=[
        "example.com. 60 IN A 192.0.2.1", "example.com. 60 IN AAAA 2001:db8::1",
        "example.com. 60 IN MX 10 mail.example.com.", 'example.com. 60 IN TXT "a b" "c"',
        "example.com. 60 IN CNAME other.example.com.",
        "example.com. 60 IN SOA ns.example.com. admin.example.com. 1 2 3 4 5",
        "_x._tcp.example.com. 60 IN SRV 1 2 8080 host.example.com.",
        "example.com. 60 IN CAA 0 issue \"ca.example\""]))
    assert [a["data"] for a in msg.answers] == [
        "192.0.2.1", "2001:db8::1", "10 mail.example.com", '"a b" "c"', "other.example.com",
        "ns.example.com admin.example.com 1 2 3 4 5", "1 2 8080 host.example.com",
        '0 issue "ca.example"']
    assert [a["type"] for a in msg.answers] == ["A", "AAAA", "MX", "TXT", "CNAME", "SOA", "SRV",
                                                "CAA"]
    assert msg.error == ""


def test_names_escape_odd_bytes_and_stop_on_loops() -> None:
    buf = b"\x00" * 12 + b"\x03a.b\x02\x00\xff\x00"
    assert read_name(buf, 12) == ("a\\.b.\\000\\255", 20)
    loop = b"\x00" * 12 + b"\xc0\x0c"
    try:
        read_name(loop, 12)
    except Malformed as exc:
        assert "loop" in str(exc)
    else:
        raise AssertionError("a pointer loop must raise Malformed")
    assert read_name(b"\x00", 0) == (".", 1)


def test_answers_capped_but_counted() -> None:
    records = [f"example.com. 60 IN A 192.0.2.{i}" for i in range(MAX_ANSWERS + 10)]
    conv = Conv()
    conv.send(C2S, query())
    conv.send(S2C, answer(records=records))
    (ex,) = conv.close()
    assert len(ex.response["answers"]) == MAX_ANSWERS
    assert ex.response["answer_count"] == MAX_ANSWERS + 10
    assert ex.notes == [f"{MAX_ANSWERS + 10} answers, {MAX_ANSWERS} listed"]


# -- detection ---------------------------------------------------------------------------

def test_detect() -> None:
    assert detect(query(), b"") is Detect.MATCH
    assert detect(b"", answer()) is Detect.MATCH
    assert detect(framed(query()), b"") is Detect.MATCH
    assert detect(framed(query())[:9], b"") is Detect.MORE
    assert detect(answer(), b"") is Detect.NO           # a response is not a query
    assert detect(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"") is Detect.NO
    assert detect(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), b"") is Detect.NO
    assert detect(b"*1\r\n$4\r\nPING\r\n", b"") is Detect.NO


# -- UDP pairing -------------------------------------------------------------------------

def test_udp_query_answer_and_fields() -> None:
    conv = Conv()
    conv.send(C2S, query("example.com", "AAAA", qid=99, edns=True))
    conv.send(S2C, answer("example.com", "AAAA", qid=99,
                          records=["example.com. 30 IN AAAA 2001:db8::5"]))
    (ex,) = conv.close()
    assert ex.summary == "AAAA example.com" and ex.status == 0 and ex.complete
    assert ex.request == {"id": 99, "opcode": "QUERY", "qname": "example.com", "qtype": "AAAA",
                          "qclass": "IN", "rd": True, "flags": 0x100, "questions": 1,
                          "edns": 1232}
    assert ex.response["answers"] == [{"name": "example.com", "type": "AAAA", "ttl": 30,
                                       "data": "2001:db8::5"}]
    assert ex.response["rcode"] == "NOERROR" and ex.response["error"] is None
    assert (ex.start_ns, ex.end_ns, ex.first_ref, ex.last_ref) == (1000, 2000, (1, 1), (1, 2))


def test_out_of_order_answers_pair_by_id() -> None:
    conv = Conv()
    conv.send(C2S, query("a.test", qid=1))
    conv.send(C2S, query("b.test", qid=2))
    conv.send(S2C, answer("b.test", qid=2, rcode=3, records=[]))
    conv.send(S2C, answer("a.test", qid=1))
    out = conv.close()
    assert [(e.summary, e.status) for e in out] == [("A b.test", 3), ("A a.test", 0)]
    assert out[0].response["error"] == "NXDOMAIN"


def test_many_pending_queries_pair_as_they_are_answered() -> None:
    # 200 waiting: the oldest 150 answered in order (the pending list's head moves on and its
    # left part is dropped on the way), then 30 of the rest newest first (left behind lazily);
    # the other 20 come out unanswered at the close, oldest first.
    conv = Conv()
    for i in range(200):
        conv.send(C2S, query(f"q{i}.test", qid=1000 + i))
    answered = [*range(150), *range(199, 169, -1)]
    for i in answered:
        conv.send(S2C, answer(f"q{i}.test", qid=1000 + i))
    out = conv.close()
    assert [(e.summary, e.request["id"]) for e in out] == [
        (f"A q{i}.test", 1000 + i) for i in [*answered, *range(150, 170)]]
    assert all(e.response is not None for e in out[:180])
    assert all(e.response is None and e.notes == ["no response"] for e in out[180:])


def test_kept_question_and_header_fields_are_each_messages_own() -> None:
    # The request and response fields are copies of what is kept per question and per
    # header: an entry's dict changed does not change the next one's, and a question that
    # differs only in type, class or opcode gets fields of its own.
    conv = Conv()
    conv.send(C2S, query("same.test", "A", qid=1))
    conv.send(S2C, answer("same.test", "A", qid=1))
    conv.send(C2S, query("same.test", "AAAA", qid=2))
    conv.send(S2C, answer("same.test", "AAAA", qid=2, rcode=3, records=[]))
    chaos = dnslib.DNSRecord.question("same.test", "A", "CH")
    chaos.header.id = 3
    conv.send(C2S, bytes(chaos.pack()))
    notify = dnslib.DNSRecord.question("same.test", "A")
    notify.header.id, notify.header.opcode = 4, 4
    conv.send(C2S, bytes(notify.pack()))
    first = conv.out[0]
    first.request["qname"] = "changed"
    first.response["rcode"] = "changed"
    first.response["answers"].append("changed")
    conv.send(C2S, query("same.test", "A", qid=5, edns=True))
    conv.send(S2C, answer("same.test", "A", qid=5))
    out = conv.close()
    assert [(e.summary, e.request["qtype"], e.request["qclass"], e.request["opcode"],
             e.request["id"], e.status) for e in out] == [
        ("A same.test", "A", "IN", "QUERY", 1, 0),
        ("AAAA same.test", "AAAA", "IN", "QUERY", 2, 3),
        ("A same.test", "A", "IN", "QUERY", 5, 0),
        ("A same.test", "A", "CH", "QUERY", 3, None),
        ("A same.test", "A", "IN", "NOTIFY", 4, None)]
    again = out[2]
    assert again.request == {"id": 5, "opcode": "QUERY", "qname": "same.test", "qtype": "A",
                             "qclass": "IN", "rd": True, "flags": 0x100, "questions": 1,
                             "edns": 1232}
    assert again.response["rcode"] == "NOERROR" and again.response["error"] is None
    assert again.response["answers"] == [{"name": "same.test", "type": "A", "ttl": 60,
                                          "data": "192.0.2.1"}]
    assert out[1].response["rcode"] == out[1].response["error"] == "NXDOMAIN"
    assert out[1].response["answers"] == [] and out[1].response["answer_count"] == 0


def test_pre_encoded_request_and_response_are_their_dicts_json() -> None:
    # Exchange.request_json (every exchange) and response_json (a response listing no records
    # or one A or AAAA record, outside the detail view) are kept in parts per question and per
    # header: each must be its own dict's encoding, whatever the id, flags, edns and name.
    odd = b"\x00\x09\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + \
        b'\x04q"\\x\x02\x01\xff\x04test\x00\x00\x01\x00\x01'     # a name needing escapes
    no_rd = dnslib.DNSRecord.question("same.test", "A")
    no_rd.header.id, no_rd.header.rd = 11, 0
    for body_limit in (0, 1000):
        conv = Conv(body_limit=body_limit)
        conv.send(C2S, query("same.test", qid=1))
        conv.send(S2C, answer("same.test", qid=1))                       # one record
        conv.send(C2S, query("same.test", qid=2, edns=True))
        conv.send(S2C, answer("same.test", qid=2, rcode=3, records=[]))  # NXDOMAIN, none
        conv.send(C2S, bytes(no_rd.pack()))
        conv.send(S2C, answer("same.test", "AAAA", qid=65535, records=[]))   # lone, none
        conv.send(C2S, query("c.test", qid=13))
        conv.send(S2C, answer("c.test", qid=13, records=["c.test. 60 IN CNAME x.test."]))
        conv.send(C2S, query("two.test", "AAAA", qid=14))
        conv.send(S2C, answer("two.test", "AAAA", qid=14, records=[
            "two.test. 60 IN AAAA 2001:db8::1", "two.test. 60 IN AAAA 2001:db8::2"]))
        conv.send(C2S, query("six.test", "AAAA", qid=15))
        conv.send(S2C, answer("six.test", "AAAA", qid=15, records=[
            "six.test. 300 IN AAAA 2001:db8::6"]))
        conv.send(C2S, odd)
        conv.send(C2S, query("same.test", qid=12))                     # never answered
        out = conv.close()
        assert len(out) == 9
        for ex in out:
            assert ex.request_json is not None and bytes(ex.request_json) == encode(ex.request)
            if ex.response_json is not None:
                assert bytes(ex.response_json) == encode(ex.response)
        assert out[7].request["qname"] == 'q\\"\\\\x.\\001\\255.test'
        made = [ex.response_json is not None for ex in out]
        # The detail view's responses have more keys: never pre-encoded.
        assert made == ([True, True, True, False, False, True, False, False, False]
                        if not body_limit else [False] * 9), made


def test_unanswered_and_lone_response() -> None:
    conv = Conv()
    conv.send(S2C, answer("late.test", qid=5))          # its query was before the capture
    conv.send(C2S, query("lost.test", qid=6))
    out = conv.close()
    assert [e.summary for e in out] == ["A late.test", "A lost.test"]
    lone, lost = out
    assert lone.notes == ["query not captured"] and not lone.complete
    assert lone.request["qname"] == "late.test" and lone.status == 0
    assert lost.response is None and lost.status is None and not lost.complete
    assert lost.notes == ["no response"]


def test_query_timeout_and_retransmission() -> None:
    conv = Conv()
    conv.send(C2S, query(qid=3), ts=0)
    conv.send(C2S, query(qid=3), ts=QUERY_TIMEOUT_NS // 2)     # a retry with the same id
    conv.send(S2C, answer(qid=3), ts=QUERY_TIMEOUT_NS // 2 + 10)
    conv.send(C2S, query("x.test", qid=4), ts=QUERY_TIMEOUT_NS // 2 + 20)
    conv.send(C2S, query("y.test", qid=5), ts=2 * QUERY_TIMEOUT_NS)
    out = conv.close()
    assert [(e.summary, e.response is not None) for e in out] == [
        ("A example.com", True), ("A example.com", False), ("A x.test", False),
        ("A y.test", False)]
    assert out[0].start_ns == 0                 # the oldest query with the id is answered
    assert out[2].notes == ["no response within 10 s"] and out[3].notes == ["no response"]


def test_malformed_udp_datagrams() -> None:
    conv = Conv()
    conv.send(C2S, b"\x00\x01")                 # shorter than a header: counted, dropped
    bad = bytearray(query(qid=8))
    bad[12] = 0xC0                              # a pointer into nowhere
    bad[13] = 0xFF
    conv.send(C2S, bytes(bad))
    conv.send(S2C, answer(qid=8)[:-3])          # the answer's record is cut
    (ex,) = conv.close()
    assert conv.session.malformed == 1
    assert ex.notes[0].startswith("malformed: ") and ex.notes[-1].startswith("malformed: ")
    assert ex.response is not None and ex.response["answers"] == []


# -- TCP ---------------------------------------------------------------------------------

def tcp_stream() -> tuple[bytes, bytes]:
    client = framed(query("a.test", qid=1)) + framed(query("b.test", "MX", qid=2))
    server = framed(answer("b.test", "MX", qid=2, records=["b.test. 60 IN MX 5 m.b.test."])) \
        + framed(answer("a.test", qid=1))
    return client, server


def test_tcp_pipelined_messages() -> None:
    client, server = tcp_stream()
    conv = Conv(TCP)
    conv.send(C2S, client)
    conv.send(S2C, server)
    out = conv.close()
    assert [(e.summary, e.response["answers"][0]["data"]) for e in out] == [
        ("MX b.test", "5 m.b.test"), ("A a.test", "192.0.2.1")]
    assert out[1].client_offset == 0 and out[0].client_offset == len(framed(query("a.test")))
    assert out[0].request_size == len(framed(query("b.test", "MX")))


def test_tcp_split_at_every_byte() -> None:
    client, server = tcp_stream()
    whole = Conv(TCP)
    whole.send(C2S, client)
    whole.send(S2C, server)
    expected = [comparable(e) for e in whole.close()]
    for cut in range(1, len(client)):
        conv = Conv(TCP)
        conv.send(C2S, client[:cut])
        conv.send(C2S, client[cut:])
        conv.send(S2C, server[:cut % len(server)])
        conv.send(S2C, server[cut % len(server):])
        assert [comparable(e) for e in conv.close()] == expected, cut


def test_tcp_gap_resyncs_on_next_message() -> None:
    first, second = framed(query("a.test", qid=1)), framed(query("b.test", qid=2))
    conv = Conv(TCP)
    conv.send(C2S, first[:10])
    conv.gap(C2S, len(first) - 10)
    conv.send(C2S, b"\x07garbage" + second)
    conv.send(S2C, framed(answer("b.test", qid=2)))
    out = conv.close()
    assert [e.summary for e in out] == ["A b.test"] and out[0].complete


# -- hypothesis --------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.binary(max_size=300), st.sampled_from([UDP, TCP]))
def test_random_bytes_never_raise(client: bytes, server: bytes, flow: FlowInfo) -> None:
    detect(client, server)
    conv = Conv(flow)
    conv.send(C2S, client)
    conv.send(S2C, server)
    conv.close()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_messages_never_raise_and_splits_do_not_matter(data: st.DataObject) -> None:
    client, server = tcp_stream()
    client = bytearray(client)
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(client) - 1))
        client[i] = data.draw(st.integers(0, 255))
    client = bytes(client)
    whole = Conv(TCP)
    whole.send(C2S, client)
    whole.send(S2C, server)
    expected = [comparable(e) for e in whole.close()]
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(client) - 1), max_size=5))))
    conv = Conv(TCP)
    last = 0
    for cut in [*cuts, len(client)]:
        conv.send(C2S, client[last:cut])
        last = cut
    conv.send(S2C, server)
    assert [comparable(e) for e in conv.close()] == expected
    udp = Conv(UDP)
    udp.send(C2S, client[2:])
    udp.close()
