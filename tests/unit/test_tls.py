"""TLS dissector: records, hellos, alerts, timing, losses and mid-stream starts."""

from __future__ import annotations

import struct
from dataclasses import asdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import sessions
from worker.dissectors.base import Detect, Direction, Exchange, FlowInfo
from worker.dissectors.select import open_session
from worker.dissectors.tls import HRR_RANDOM, TlsDissector, detect

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
FLOW = FlowInfo("tcp", b"\x0a\xd5\x00\x01", 40000, b"\x0a\xd5\x00\x02", 443)


# -- builders ----------------------------------------------------------------------------

def record(kind: int, payload: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", kind, version, len(payload)) + payload


def handshake(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def ext(kind: int, data: bytes) -> bytes:
    return struct.pack("!HH", kind, len(data)) + data


def vec(size: int, data: bytes) -> bytes:
    return len(data).to_bytes(size, "big") + data


def client_hello(sni: str | None = "example.internal", alpn: tuple[str, ...] = ("h2", "http/1.1"),
                 versions: tuple[int, ...] = (0x0A0A, 0x0304, 0x0303),
                 suites: tuple[int, ...] = (0x1A1A, 0x1301, 0x1302, 0xC02F)) -> bytes:
    exts = b""
    if sni is not None:
        exts += ext(0, vec(2, b"\x00" + vec(2, sni.encode())))
    if alpn:
        exts += ext(16, vec(2, b"".join(vec(1, p.encode()) for p in alpn)))
    if versions:
        exts += ext(43, vec(1, b"".join(struct.pack("!H", v) for v in versions)))
    exts += ext(10, b"\x00\x02\x00\x1d")
    body = (b"\x03\x03" + bytes(32) + vec(1, bytes(32))
            + vec(2, b"".join(struct.pack("!H", s) for s in suites)) + b"\x01\x00" + vec(2, exts))
    return handshake(1, body)


def server_hello(version: int = 0x0304, suite: int = 0x1301, alpn: str | None = None,
                 random: bytes = bytes(range(32))) -> bytes:
    exts = b""
    if version == 0x0304:
        exts += ext(43, struct.pack("!H", version))
    if alpn:
        exts += ext(16, vec(2, vec(1, alpn.encode())))
    legacy = 0x0303 if version == 0x0304 else version
    body = struct.pack("!H", legacy) + random + vec(1, bytes(32)) + struct.pack("!HB", suite, 0)
    return handshake(2, body + vec(2, exts))


APP = record(23, bytes(range(200)))


class Conv(sessions.Conv):
    def __init__(self, session=None) -> None:
        super().__init__(lambda emit: session or TlsDissector().session(FLOW, emit))


def tls13(conv: Conv) -> tuple[bytes, bytes]:
    client = [record(22, client_hello(), 0x0301), record(20, b"\x01"), record(23, bytes(53)),
              APP]
    server = [record(22, server_hello()), record(20, b"\x01"), record(23, bytes(2000)),
              record(23, bytes(300))]
    conv.c(client[0])
    conv.s(server[0] + server[1] + server[2])      # 2
    conv.s(server[3])                              # 3: the end of the server's flight
    conv.c(client[1] + client[2])                  # 4: the client's Finished
    conv.c(client[3])
    conv.s(APP)                                    # 6
    return b"".join(client), b"".join(server) + APP


# -- detection ---------------------------------------------------------------------------

def test_detect_by_record_header_of_either_side():
    ch = record(22, client_hello(), 0x0301)
    sh = record(22, server_hello())
    assert detect(ch, b"") is Detect.MATCH
    assert detect(b"", sh) is Detect.MATCH
    assert detect(b"", record(21, b"\x02\x28")) is Detect.MATCH
    assert detect(APP, b"") is Detect.MATCH                     # mid-stream
    for n in range(1, 6):
        assert detect(ch[:n], b"") is Detect.MORE
    assert detect(b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n") is Detect.NO
    assert detect(b"\x16\x03\x03\xff\xff", b"x") is Detect.NO     # longer than any record
    assert detect(b"\x16\x02", b"x") is Detect.NO
    # A ServerHello from the "client" (roles guessed wrong) is not claimed that way round...
    assert detect(sh, b"") is Detect.NO
    assert detect(b"", ch) is Detect.NO


def test_guessed_roles_are_swapped_by_the_hellos():
    guessed = FlowInfo("tcp", FLOW.server_ip, 443, FLOW.client_ip, 40000, roles_guessed=True)
    out: list[Exchange] = []
    selector = open_session(guessed, out.append, [TlsDissector()])
    selector.on_data(C2S, record(22, server_hello()), 0, 1, (0, 1))
    assert selector.swapped and selector.dissector is not None
    selector.on_data(S2C, record(22, client_hello()), 0, 2, (0, 2))
    selector.on_close(3)
    (ex,) = out
    assert ex.request["sni"] == "example.internal" and ex.response["version"] == "TLS 1.3"


# -- whole connections -------------------------------------------------------------------

def test_tls13_connection_is_one_entry_with_both_hellos():
    conv = Conv()
    client, server = tls13(conv)
    (ex,) = conv.close()
    assert ex.protocol == "tls"
    assert ex.request == {"sni": "example.internal", "alpn": ["h2", "http/1.1"],
                          "version": "TLS 1.3", "legacy_version": "TLS 1.2",
                          "cipher_suites": 3}          # GREASE not counted
    assert ex.response == {"version": "TLS 1.3", "cipher": "TLS_AES_128_GCM_SHA256",
                           "alpn": None, "alert": None, "error": None}
    assert ex.summary == "TLS 1.3 example.internal (offered h2,http/1.1)"
    assert ex.status is None and ex.complete and ex.notes == []
    assert (ex.start_ns, ex.end_ns) == (1000, 3000)    # the server's flight ended at call 3
    assert (ex.request_size, ex.response_size) == (len(client), len(server))
    assert ex.first_ref == (7, 1) and ex.last_ref == (7, 6)
    assert (ex.client_offset, ex.server_offset) == (0, 0)


def test_tls12_with_alpn_ends_at_the_servers_finished():
    conv = Conv()
    conv.c(record(22, client_hello(versions=())))
    conv.s(record(22, server_hello(0x0303, 0xC02F, "h2") + handshake(11, bytes(900))
                  + handshake(14, b"")))
    conv.c(record(22, handshake(16, bytes(70))) + record(20, b"\x01")
           + record(22, bytes(40)))                    # encrypted Finished: not parsed
    conv.s(record(20, b"\x01"))
    finished = conv.s(record(22, b"\x01\x00\x00\xff" + bytes(36))).calls   # looks like garbage
    conv.s(APP)
    (ex,) = conv.close()
    assert ex.summary == "TLS 1.2 example.internal (h2)"
    assert ex.request["version"] == "TLS 1.2"
    assert ex.response["cipher"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert ex.end_ns == 1000 * finished and ex.complete and ex.notes == []


def test_hello_split_across_records_and_at_every_byte():
    hello = client_hello(sni="split.example")
    stream = record(22, hello[:7]) + record(22, hello[7:60]) + record(22, hello[60:])
    reference = Conv()
    reference.c(stream)
    reference.s(record(22, server_hello()))
    (whole,) = reference.close()
    assert whole.request["sni"] == "split.example"
    for cut in range(1, len(stream)):
        conv = Conv()
        conv.c(stream[:cut])
        conv.c(stream[cut:])
        conv.s(record(22, server_hello()))
        (ex,) = conv.close()
        assert ex.request == whole.request and ex.response == whole.response, cut


def test_server_fatal_alert_gives_status_and_error():
    conv = Conv()
    conv.c(record(22, client_hello(versions=(0x0303,))))
    conv.s(record(21, b"\x02\x46"))
    (ex,) = conv.close()
    assert ex.status == 70
    assert ex.response == {"version": None, "cipher": None, "alpn": None,
                           "alert": {"level": "fatal", "description": "protocol_version",
                                     "code": 70, "from": "server"},
                           "error": "fatal alert from server: protocol_version"}
    assert ex.summary == "TLS 1.2 example.internal (offered h2,http/1.1) alert protocol_version"
    assert ex.complete and ex.end_ns == 2000


def test_client_alert_and_encrypted_alerts():
    conv = Conv()
    conv.c(record(22, client_hello()))
    conv.s(record(22, server_hello(0x0303, 0xC030)) + record(22, handshake(11, bytes(50))))
    conv.c(record(21, b"\x02\x30"))                    # unknown_ca, cleartext
    (ex,) = conv.close()
    assert ex.status == 48 and ex.response["error"] == "fatal alert from client: unknown_ca"
    # After ChangeCipherSpec an alert is encrypted: counted, not read.
    conv = Conv()
    conv.c(record(22, client_hello()))
    conv.s(record(22, server_hello(0x0303)) + record(20, b"\x01"))
    conv.c(record(20, b"\x01"))
    conv.s(record(21, b"\x02\x28"))                    # 2 bytes, but encrypted
    (ex,) = conv.close()
    assert ex.status is None and ex.response["alert"] is None
    # A warning is shown but is no error.
    conv = Conv()
    conv.c(record(22, client_hello()))
    conv.s(record(21, b"\x01\x70") + record(22, server_hello()))
    (ex,) = conv.close()
    assert ex.response["alert"]["description"] == "unrecognized_name"
    assert ex.response["error"] is None and ex.status is None


def test_hello_retry_request_takes_the_second_server_hello():
    conv = Conv()
    conv.c(record(22, client_hello()))
    conv.s(record(22, server_hello(random=HRR_RANDOM)))
    conv.c(record(20, b"\x01") + record(22, client_hello(sni="second")))
    conv.s(record(22, server_hello(suite=0x1303)))
    (ex,) = conv.close()
    assert ex.request["sni"] == "example.internal"
    assert ex.response["cipher"] == "TLS_CHACHA20_POLY1305_SHA256"
    assert ex.response["hello_retry"] is True


def test_mid_stream_application_data_is_one_entry_noted():
    conv = Conv()
    conv.c(APP)
    conv.s(APP + APP)
    (ex,) = conv.close()
    assert ex.summary == "TLS (handshake not captured)"
    assert ex.notes == ["handshake not captured"] and not ex.complete
    assert ex.request_size == len(APP) and ex.response_size == 2 * len(APP)
    assert ex.end_ns == 2000                           # the server's first application data


def test_gap_inside_a_record_keeps_the_framing():
    conv = Conv()
    tls13(conv)
    conv.s(record(23, bytes(100))[:30])
    conv.gap(S2C, 50)
    conv.s(bytes(25) + record(21, b"\x02\x50"))        # the record's tail, then an alert
    (ex,) = conv.close()
    assert ex.status == 80 and ex.complete             # handshake was whole
    assert ex.notes == ["gap: 50 bytes not captured (client 0, server 50)"]


def test_gap_across_a_header_stops_parsing_that_side():
    conv = Conv()
    conv.c(record(22, client_hello()))
    conv.s(record(22, server_hello())[:10])
    conv.gap(S2C, 500)                                 # past the end of the ServerHello record
    conv.s(record(21, b"\x02\x28"))
    (ex,) = conv.close()
    assert ex.response is None and not ex.complete
    assert "record framing lost; later records only counted" in ex.notes
    assert ex.status is None


def test_gap_inside_a_hello_drops_it_but_not_the_connection():
    hello = record(22, client_hello())
    conv = Conv()
    conv.c(hello[:20])
    conv.gap(C2S, 30)
    conv.c(hello[50:] + record(20, b"\x01"))
    conv.s(record(22, server_hello()))
    (ex,) = conv.close()
    assert ex.request["sni"] is None and not ex.complete
    assert "gap inside a hello: not parsed" in ex.notes and "client hello not captured" in ex.notes


def test_malformed_record_header_is_noted_and_counted():
    conv = Conv()
    conv.c(record(22, client_hello()))
    conv.s(b"\x99\x03\x03\x00\x10" + bytes(40))
    conv.s(bytes(10))
    (ex,) = conv.close()
    assert any(n.startswith("malformed: record header 9903030010") for n in ex.notes)
    assert ex.response_size == 55


def test_truncated_hello_fields_are_malformed_not_errors():
    bad = handshake(1, b"\x03\x03" + bytes(32) + b"\x20")     # session id runs past the end
    conv = Conv()
    conv.c(record(22, bad))
    conv.s(record(22, server_hello()))
    (ex,) = conv.close()
    assert any(n.startswith("malformed: client hello") for n in ex.notes)


def test_nothing_seen_emits_nothing():
    conv = Conv()
    assert conv.close() == []


# -- property tests ----------------------------------------------------------------------

def _run(client: bytes, server: bytes, cuts: list[int]) -> list[dict]:
    conv = Conv()
    for stream, send in ((client, conv.c), (server, conv.s)):
        last = 0
        for cut in sorted({c % (len(stream) + 1) for c in cuts}) + [len(stream)]:
            if cut > last:
                send(stream[last:cut])
                last = cut
    out = conv.close()
    for ex in out:   # timestamps and refs depend on the chunking; content must not
        ex.end_ns = ex.start_ns = 0
        ex.first_ref = ex.last_ref = (0, 0)
    return [asdict(ex) for ex in out]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.binary(max_size=400), st.lists(st.integers(0, 500), max_size=6))
def test_random_bytes_never_raise(client, server, cuts):
    _run(client, server, cuts)
    _run(record(22, client_hello()) + client, record(22, server_hello()) + server, cuts)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 2000), max_size=8), st.integers(0, 6), st.integers(0, 255))
def test_splitting_and_mutations_do_not_change_the_result(cuts, where, value):
    client = record(22, client_hello(sni="prop.example")) + record(20, b"\x01") + APP
    server = record(22, server_hello(0x0303, 0xC02F, "h2")) + record(20, b"\x01") + APP
    mutated = bytearray(client)
    mutated[min(where * 37, len(mutated) - 1)] = value
    for c in (client, bytes(mutated)):
        assert _run(c, server, cuts) == _run(c, server, [])
