"""The pure parts at both ends of the eBPF source: ring-buffer records decoded, and the frames
synthesized from them (marked, decodable, valid for Wireshark)."""

from __future__ import annotations

import struct

import dpkt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.packet import (ACK, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2,
                           LINKTYPE_RAW, PSH, decode)
from worker.sources.ebpf.events import (EventError, connection_of, event_connection, parse_event,
                                        unmap_address)
from worker.sources.ebpf.program import (EVENT_HEADER_FORMAT, EVENT_HEADER_SIZE, FLAG_READ_FAILED,
                                         FLAG_TUPLE, KIND_CLOSE, KIND_READ, KIND_WRITE, ROLE_CLIENT,
                                         ROLE_SERVER, ROLE_UNKNOWN, SOURCE, render)
from worker.sources.ebpf.synth import (MARK, MAX_PAYLOAD_V4, ipv4_checksum, is_synthesized,
                                       mark_offset, max_payload, tcp_frame)

V4_LOCAL = b"\x00" * 10 + b"\xff\xff" + bytes([10, 0, 0, 1])
V4_REMOTE = b"\x00" * 10 + b"\xff\xff" + bytes([10, 0, 0, 2])


def record(kind: int = KIND_WRITE, data: bytes = b"GET / HTTP/1.1\r\n\r\n", *, flags: int = FLAG_TUPLE,
           length: int | None = None, role: int = ROLE_CLIENT, offset: int = 0) -> bytes:
    size = len(data) if length is None else length
    header = struct.pack(EVENT_HEADER_FORMAT, 123, 0xABC, 7, 8, 5, kind, role, 2, flags, size,
                         size, offset, 40000, 443, V4_LOCAL, V4_REMOTE)
    return header + data


# -- records ---------------------------------------------------------------------------------

def test_header_format_matches_the_c_struct():
    assert struct.calcsize(EVENT_HEADER_FORMAT) == EVENT_HEADER_SIZE
    # The C struct's fields, in order, with the sizes the format gives them.
    fields = ["u64 ts_ns", "u64 ssl", "u32 tgid", "u32 tid", "s32 fd", "u8 kind", "u8 role",
              "u8 family", "u8 flags", "u32 len", "u32 total", "u64 offset", "u16 lport",
              "u16 rport", "u8 laddr[16]", "u8 raddr[16]", "char data[CHUNK_SIZE]"]
    body = SOURCE.split("struct event_t {")[1].split("}")[0]
    declared = [" ".join(line.split(";")[0].split()) for line in body.splitlines()
                if ";" in line]
    assert declared == fields


def test_a_record_decodes():
    event = parse_event(record(offset=4096))
    assert (event.tgid, event.tid, event.fd, event.kind, event.offset) == (7, 8, 5, KIND_WRITE, 4096)
    assert event.data == b"GET / HTTP/1.1\r\n\r\n"
    assert event.has_tuple and not event.read_failed
    assert event_connection(event) == (bytes([10, 0, 0, 1]), 40000, bytes([10, 0, 0, 2]), 443)


def test_an_unreadable_chunk_carries_no_bytes():
    event = parse_event(record(KIND_READ, b"", flags=FLAG_TUPLE | FLAG_READ_FAILED, length=300))
    assert event.read_failed and event.length == 300 and event.data == b""


@pytest.mark.parametrize(("raw", "message"), [
    (b"\x00" * 10, f"event of 10 bytes is shorter than its {EVENT_HEADER_SIZE}-byte header"),
    (record(kind=9), "event kind 9 is unknown"),
    (record(data=b"abc", length=10), "event says 10 bytes of data but carries 3"),
    (record(KIND_READ, b"abc", flags=FLAG_READ_FAILED, length=3), "event marked unreadable carries 3 bytes"),
])
def test_damaged_records_are_refused_with_the_reason(raw, message):
    with pytest.raises(EventError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_event(raw)


@given(st.binary(max_size=EVENT_HEADER_SIZE + 64))
def test_any_bytes_decode_or_raise_event_error(raw):
    try:
        parse_event(raw)
    except EventError:
        pass


def test_close_records_without_a_tuple_name_no_connection():
    event = parse_event(record(KIND_CLOSE, b"", flags=0))
    assert event_connection(event) is None


def test_roles_decide_which_end_is_the_client():
    local, remote = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    assert connection_of(ROLE_CLIENT, V4_LOCAL, 40000, V4_REMOTE, 443) == (local, 40000, remote, 443)
    assert connection_of(ROLE_SERVER, V4_LOCAL, 443, V4_REMOTE, 40000) == (remote, 40000, local, 443)
    assert connection_of(ROLE_UNKNOWN, V4_LOCAL, 1, V4_REMOTE, 2) is None


def test_v4_mapped_addresses_become_ipv4():
    assert unmap_address(V4_LOCAL) == bytes([10, 0, 0, 1])
    v6 = bytes.fromhex("fd000000000000000000000000000001")
    assert unmap_address(v6) == v6


def test_the_program_text_has_its_sizes_filled_in():
    text = render(chunks_per_call=4, ringbuf_pages=256)
    assert "#define CHUNKS_PER_CALL 4" in text and "BPF_RINGBUF_OUTPUT(events, 256)" in text
    assert "__" + "CHUNK_SIZE__" not in text
    with pytest.raises(ValueError, match="power of two"):
        render(ringbuf_pages=1000)
    with pytest.raises(ValueError, match="at least 1"):
        render(chunks_per_call=0)


# -- frames ----------------------------------------------------------------------------------

@pytest.mark.parametrize("linktype", [LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2])
@pytest.mark.parametrize("ipv6", [False, True])
def test_frames_decode_as_the_connection_and_carry_the_mark(linktype, ipv6):
    src = bytes.fromhex("fd000000000000000000000000000001") if ipv6 else bytes([10, 0, 0, 1])
    dst = bytes.fromhex("fd000000000000000000000000000002") if ipv6 else bytes([10, 0, 0, 2])
    frame = tcp_frame(linktype, src, 40000, dst, 443, 2**32 + 5, 77, PSH | ACK, b"hello")
    decoded = decode(linktype, frame)
    assert decoded is not None
    assert (decoded.src, decoded.sport, decoded.dst, decoded.dport) == (src, 40000, dst, 443)
    assert (decoded.seq, decoded.ack, decoded.flags, decoded.payload) == (5, 77, PSH | ACK, b"hello")
    assert is_synthesized(linktype, frame)
    assert frame[mark_offset(linktype):mark_offset(linktype) + 6] == MARK


def test_ethernet_frames_are_valid_for_a_packet_library():
    frame = tcp_frame(LINKTYPE_ETHERNET, bytes([10, 0, 0, 1]), 40000, bytes([10, 0, 0, 2]), 443,
                      1, 2, PSH | ACK, b"payload")
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    assert isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP)
    assert ip.len == len(frame) - 14 and ip.df == 1
    assert ipv4_checksum(bytes(frame[14:34])) == 0      # the header checksum is right
    assert ip.data.data == b"payload"


def test_captured_frames_are_not_taken_for_synthesized_ones():
    from factories import tcp_packet
    assert not is_synthesized(LINKTYPE_ETHERNET, tcp_packet(payload=b"x"))
    assert not is_synthesized(LINKTYPE_RAW, b"\x45" + b"\x00" * 40)
    assert mark_offset(LINKTYPE_RAW) is None
    with pytest.raises(ValueError, match="no hardware address"):
        tcp_frame(LINKTYPE_RAW, bytes(4), 1, bytes(4), 2, 0, 0, ACK)


def test_payload_per_packet_is_bounded_by_ip_and_snaplen():
    assert max_payload(LINKTYPE_ETHERNET, 262144, ipv6=False) == MAX_PAYLOAD_V4
    assert max_payload(LINKTYPE_ETHERNET, 1500, ipv6=False) == 1500 - 14 - 20 - 20
    assert max_payload(LINKTYPE_LINUX_SLL2, 1500, ipv6=True) == 1500 - 20 - 40 - 20
