"""Cleartext chunks -> synthesized packets -> the real dissection: entries marked tls, gaps
where chunks were lost, one view of a connection whose two ends are both hooked, and the
encrypted packets of the same 5-tuple kept apart."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from factories import tcp_conversation

from worker.detail import entry_packets, load_detail
from worker.dissection import Dissection
from worker.packet import (ACK, FIN, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2,
                           SYN, RawPacket, decode)
from worker.sources.ebpf.events import TlsEvent, connection_of
from worker.sources.ebpf.program import (FLAG_READ_FAILED, FLAG_TUPLE, KIND_READ, KIND_WRITE,
                                         ROLE_CLIENT, ROLE_SERVER)
from worker.sources.ebpf import streams
from worker.sources.ebpf.pending import PendingChunks
from worker.sources.ebpf.streams import CLOSED_MEMORY_NS, IDLE_FORGET_NS, StreamSynthesizer
from worker.sources.ebpf.synth import is_synthesized, max_payload
from worker.store.segments import SegmentWriter, iter_segment, list_segments

START = 1_700_000_000_000_000_000
MS = 1_000_000
CLIENT = ("10.1.0.1", 40000)
SERVER = ("10.1.0.2", 443)
REQUEST = b"GET /orders?id=7 HTTP/1.1\r\nHost: shop\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


def mapped(ip: str) -> bytes:
    packed = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    return packed if len(packed) == 16 else b"\x00" * 10 + b"\xff\xff" + packed


def event(kind: int, data: bytes = b"", offset: int = 0, *, role: int = ROLE_CLIENT,
          tgid: int = 100, ssl: int = 0xA000, fd: int = 5, client=CLIENT, server=SERVER,
          length: int | None = None, failed: bool = False) -> TlsEvent:
    local, remote = (client, server) if role == ROLE_CLIENT else (server, client)
    flags = FLAG_TUPLE | (FLAG_READ_FAILED if failed else 0)
    size = len(data) if length is None else length
    return TlsEvent(0, ssl, tgid, tgid, fd, kind, role, 10 if ":" in client[0] else 2, flags,
                    size, size, offset, local[1], remote[1], mapped(local[0]), mapped(remote[0]),
                    b"" if failed else data)


class Story:
    """Feeds events to a synthesizer and its packets to the real dissection."""

    def __init__(self, linktype: int = LINKTYPE_ETHERNET, snaplen: int = 262144) -> None:
        self.synth = StreamSynthesizer(linktype, snaplen)
        self.linktype = linktype
        self.packets: list[RawPacket] = []
        self.clock = START

    def tick(self) -> int:
        self.clock += MS
        return self.clock

    def chunk(self, ev: TlsEvent) -> list[RawPacket]:
        key = connection_of(ev.role, ev.laddr, ev.lport, ev.raddr, ev.rport)
        assert key is not None
        out = self.synth.chunk(ev, key, ev.role == ROLE_CLIENT, self.tick())
        self.packets += out
        return out

    def close(self, tgid: int = 100, fd: int = 5) -> list[RawPacket]:
        out = self.synth.close(tgid, fd, None, self.tick())
        self.packets += out
        return out

    def exit(self, tgid: int = 100) -> list[RawPacket]:
        out = self.synth.exit(tgid, self.tick())
        self.packets += out
        return out

    def entries(self, extra: list[RawPacket] = ()) -> list[dict]:
        import msgspec
        dissection = Dissection("node-a")
        stored = sorted([*self.packets, *extra], key=lambda p: p[0])
        dissection.feed([((1, 24 + i), self.linktype, ts, frame, wirelen)
                         for i, (ts, frame, wirelen) in enumerate(stored)])
        dissection.close_all()
        return [msgspec.json.decode(row.entry_json) for row in dissection.take_rows()]


def exchange(story: Story, request: bytes = REQUEST, response: bytes = RESPONSE,
             offsets: tuple[int, int] = (0, 0), role: int = ROLE_CLIENT, **kw) -> None:
    """One request/response as the given end sees it: the client writes the request and
    reads the response; the server reads the request and writes the response."""
    first, second = (KIND_WRITE, KIND_READ) if role == ROLE_CLIENT else (KIND_READ, KIND_WRITE)
    story.chunk(event(first, request, offsets[0], role=role, **kw))
    story.chunk(event(second, response, offsets[1], role=role, **kw))


def test_a_clients_chunks_become_an_http_entry_marked_tls():
    story = Story()
    exchange(story)
    story.close()
    [entry] = story.entries()
    assert entry["protocol"] == "http"
    assert entry["tls"] is True
    assert entry["request"]["method"] == "GET"
    assert entry["request"]["path"] == "/orders"
    assert entry["status"] == 200
    assert entry["complete"] is True
    assert (entry["src"]["ip"], entry["src"]["port"]) == CLIENT
    assert (entry["dst"]["ip"], entry["dst"]["port"]) == SERVER
    assert entry["elapsed_ms"] == pytest.approx(1.0)


def test_the_servers_view_gives_the_same_connection():
    story = Story()
    exchange(story, role=ROLE_SERVER)
    story.close()
    [entry] = story.entries()
    assert (entry["src"]["ip"], entry["src"]["port"]) == CLIENT
    assert (entry["dst"]["ip"], entry["dst"]["port"]) == SERVER
    assert (entry["request"]["path"], entry["status"], entry["tls"]) == ("/orders", 200, True)


def test_handshake_data_and_fins_are_a_plain_tcp_stream():
    story = Story()
    exchange(story)
    story.close()
    decoded = [decode(LINKTYPE_ETHERNET, frame) for _ts, frame, _len in story.packets]
    assert all(is_synthesized(LINKTYPE_ETHERNET, frame) for _ts, frame, _len in story.packets)
    flags = [d.flags for d in decoded]
    assert flags[:3] == [SYN, SYN | ACK, ACK]
    assert [f & FIN for f in flags[-3:]] == [FIN, FIN, 0]
    client_isn, server_isn = decoded[0].seq, decoded[1].seq
    request, response = decoded[3], decoded[4]
    assert (request.seq, request.ack) == (client_isn + 1, server_isn + 1)
    assert request.payload == REQUEST
    assert (response.seq, response.ack) == (server_isn + 1, client_isn + 1 + len(REQUEST))
    assert decoded[-3].seq == client_isn + 1 + len(REQUEST)        # the client's FIN
    assert decoded[-2].seq == server_isn + 1 + len(RESPONSE)        # the server's FIN


def test_keep_alive_exchanges_share_the_connection():
    story = Story()
    exchange(story)
    second = REQUEST.replace(b"/orders?id=7", b"/cart")
    exchange(story, second, RESPONSE.replace(b"200 OK", b"404 Not Found"),
             offsets=(len(REQUEST), len(RESPONSE)))
    story.close()
    entries = sorted(story.entries(), key=lambda e: e["ts"])
    assert [(e["request"]["path"], e["status"]) for e in entries] == [("/orders", 200), ("/cart", 404)]
    assert entries[0]["src"]["port"] == entries[1]["src"]["port"] == CLIENT[1]
    assert story.synth.stats.connections == 1


def test_concurrent_connections_stay_apart():
    story = Story()
    ends = [(("10.1.0.1", 40000 + n), 0xB000 + n, 10 + n) for n in range(5)]
    for (client, ssl, fd) in ends:     # all requests first, then all responses
        story.chunk(event(KIND_WRITE, REQUEST.replace(b"7", str(fd).encode()), client=client,
                          ssl=ssl, fd=fd))
    for (client, ssl, fd) in reversed(ends):
        story.chunk(event(KIND_READ, RESPONSE, client=client, ssl=ssl, fd=fd))
    for (_client, _ssl, fd) in ends:
        story.close(fd=fd)
    entries = story.entries()
    assert sorted((e["src"]["port"], e["request"]["query"]["id"][0]) for e in entries) == [
        (40000 + n, str(10 + n)) for n in range(5)]
    assert all(e["complete"] and e["tls"] for e in entries)
    assert story.synth.stats.connections_active == 0


def test_both_ends_hooked_report_each_byte_once():
    story = Story()
    client = dict(role=ROLE_CLIENT, tgid=100, ssl=0xA000, fd=5)
    server = dict(role=ROLE_SERVER, tgid=200, ssl=0xC000, fd=9)
    story.chunk(event(KIND_WRITE, REQUEST, **client))
    story.chunk(event(KIND_READ, REQUEST, **server))        # the server's copy: dropped
    story.chunk(event(KIND_WRITE, RESPONSE, **server))
    story.chunk(event(KIND_READ, RESPONSE, **client))
    story.close(tgid=200, fd=9)      # the other end closing does not end the owner's view
    assert story.synth.stats.connections_active == 1
    story.close(tgid=100, fd=5)
    late = story.chunk(event(KIND_WRITE, b"late", len(RESPONSE), **server))
    assert late == []
    assert story.synth.stats.duplicate_chunks == 3
    [entry] = story.entries()
    assert (entry["request"]["path"], entry["status"], entry["complete"]) == ("/orders", 200, True)



def test_the_clients_end_takes_over_when_the_servers_chunks_come_first():
    """The racy order of a client preempted between its write and the probe on the write's
    return: the server's read of the request is seen first. The client's end takes over, so
    the body it read counts though the server's big write failed (a failed call reports
    nothing), and the client's exit ends the connection."""
    story = Story()
    client = dict(role=ROLE_CLIENT, tgid=100, ssl=0xA000, fd=5)
    server = dict(role=ROLE_SERVER, tgid=200, ssl=0xC000, fd=9)
    request = b"GET /bytes/3000000 HTTP/1.1\r\nHost: x\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n"
    story.chunk(event(KIND_READ, request, **server))
    story.chunk(event(KIND_WRITE, request, **client))
    story.chunk(event(KIND_WRITE, head, **server))
    offset = 0
    for size in (len(head), 16384, 16384, 7232):
        story.chunk(event(KIND_READ, (head + b"x" * 40000)[offset:offset + size], offset, **client))
        offset += size
    assert story.synth.stats.handovers == 1
    assert story.synth.stats.duplicate_chunks == 1          # the server's head, after the client's
    story.exit(100)
    assert story.synth.stats.connections_active == 0
    [entry] = story.entries()
    assert (entry["request"]["path"], entry["status"], entry["complete"]) == (
        "/bytes/3000000", 200, False)
    assert entry["size"]["response"] == len(head) + 40000
    assert (entry["src"]["ip"], entry["src"]["port"]) == CLIENT


def test_a_server_that_speaks_first_hands_over_to_the_client():
    story = Story()
    banner = b"* OK IMAP4rev1 ready\r\n"
    server = dict(role=ROLE_SERVER, tgid=200, ssl=0xC000, fd=9)
    story.chunk(event(KIND_WRITE, banner, **server))
    story.chunk(event(KIND_READ, banner[:4]))                # the client reads it in two
    story.chunk(event(KIND_READ, banner[4:], 4))
    story.chunk(event(KIND_READ, b"a1 LOGIN", **server))     # the client's copy comes next
    story.chunk(event(KIND_WRITE, b"a1 LOGIN"))
    assert story.synth.stats.handovers == 1
    assert not story.synth.owns(200) and story.synth.owns(100)
    payloads = [decode(LINKTYPE_ETHERNET, f).payload for _t, f, _l in story.packets]
    assert b"".join(p for p in payloads if p) == banner + b"a1 LOGIN"   # each byte once
    story.close(tgid=200, fd=9)                               # the server's close: a duplicate end
    assert story.synth.stats.connections_active == 1
    story.close()
    assert story.synth.stats.connections_active == 0


def test_a_client_end_with_other_bytes_at_the_same_offsets_stays_a_duplicate():
    """Ends hooked mid-connection count from their own first call: their offsets need not
    agree, and the bytes tell. The server keeps the connection."""
    story = Story()
    exchange(story, role=ROLE_SERVER, tgid=200, ssl=0xC000, fd=9)
    second = REQUEST.replace(b"/orders?id=7", b"/cart")      # the client's first hooked call
    assert not story.chunk(event(KIND_WRITE, second))
    assert not story.chunk(event(KIND_READ, b"x", 1, failed=True))
    assert story.synth.stats.handovers == 0
    assert story.synth.stats.duplicate_chunks == 2
    story.close(tgid=200, fd=9)
    [entry] = story.entries()
    assert (entry["request"]["path"], entry["status"], entry["complete"]) == ("/orders", 200, True)

def h2_conversation() -> tuple[bytes, list[bytes], bytes, bytes]:
    """Real HTTP/2 bytes (the h2 library at both ends): the server's SETTINGS, the client's
    writes (preface and SETTINGS, then one HEADERS per request), what the server reads up to
    its first HEADERS, and the server's answers."""
    import h2.config
    import h2.connection
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    server_settings = server.data_to_send()
    client.initiate_connection()
    writes = [client.data_to_send()]
    for stream, path in ((1, "/h2/a"), (3, "/h2/b")):
        client.send_headers(stream, [(":method", "GET"), (":path", path), (":scheme", "https"),
                                     (":authority", "shop")], end_stream=True)
        writes.append(client.data_to_send())
    server.receive_data(b"".join(writes))
    for stream in (1, 3):
        server.send_headers(stream, [(":status", "200"), ("content-length", "0")],
                            end_stream=True)
    answers = server.data_to_send()
    return server_settings, writes, writes[0], answers


def test_a_client_end_whose_writes_came_before_the_server_read_them_loses_none():
    """Go's HTTP/2 server writes its SETTINGS before it reads: its end owns the connection,
    and the client's first writes match nothing it has read yet. They wait; when the client's
    read of those SETTINGS hands it the connection, what they carry beyond the server's
    reads (here the HEADERS of both requests) is replayed, so no request is lost."""
    story = Story()
    client = dict(role=ROLE_CLIENT, tgid=100, ssl=0xA000, fd=5)
    server = dict(role=ROLE_SERVER, tgid=200, ssl=0xC000, fd=9)
    settings, writes, server_read, answers = h2_conversation()
    story.chunk(event(KIND_WRITE, settings, **server))                  # the server owns it
    offset = 0
    for write in writes:                                                # nothing to match yet
        assert story.chunk(event(KIND_WRITE, write, offset, **client)) == []
        offset += len(write)
    story.chunk(event(KIND_READ, server_read, **server))               # the preface only
    assert story.synth.stats.handovers == 0
    story.chunk(event(KIND_READ, settings, **client))                   # the match
    assert story.synth.stats.handovers == 1
    assert story.synth.stats.duplicate_chunks == 0
    story.chunk(event(KIND_WRITE, answers, len(settings), **server))    # now a duplicate
    story.chunk(event(KIND_READ, answers, len(settings), **client))
    story.close()
    assert story.synth.stats.gaps == 0
    payloads = [decode(LINKTYPE_ETHERNET, f) for _t, f, _l in story.packets]
    to_server = b"".join(p.payload for p in payloads if p.payload and p.dport == SERVER[1])
    assert to_server == b"".join(writes)                               # each byte once
    entries = story.entries()
    assert [(e["protocol"], e["request"].get("path"), e["status"], e["complete"])
            for e in entries] == [("http2", "/h2/a", 200, True), ("http2", "/h2/b", 200, True)]
    # the replayed HEADERS keep the times the client wrote them at (3 and 4 ms), not the
    # takeover's (6 ms)
    sent = [(ts - START) // MS for ts, frame, _l in story.packets
            if decode(LINKTYPE_ETHERNET, frame).dport == SERVER[1]
            and decode(LINKTYPE_ETHERNET, frame).payload]
    assert sent == [5, 3, 4]                       # the server's read of the preface, then them


def test_a_client_ends_waiting_chunks_are_bounded(monkeypatch):
    """Past WAITING_BYTES the oldest waiting chunks go: what they held is a gap after the
    takeover, as without the wait; the newer ones are still replayed."""
    monkeypatch.setattr(streams, "WAITING_BYTES", 120)
    monkeypatch.setattr(streams, "WAITING_OVERHEAD", 0)
    story = Story()
    client = dict(role=ROLE_CLIENT, tgid=100, ssl=0xA000, fd=5)
    server = dict(role=ROLE_SERVER, tgid=200, ssl=0xC000, fd=9)
    banner = b"220 ready\r\n"
    story.chunk(event(KIND_WRITE, banner, **server))
    pieces = [bytes([65 + i]) * 40 for i in range(4)]                 # 160 bytes: 40 too many
    for i, piece in enumerate(pieces):
        story.chunk(event(KIND_WRITE, piece, 40 * i, **client))
    story.chunk(event(KIND_READ, banner, **client))
    assert story.synth.stats.handovers == 1
    assert story.synth.stats.duplicate_chunks == 1                     # the one dropped
    assert (story.synth.stats.gaps, story.synth.stats.gap_bytes) == (1, 40)
    payloads = [decode(LINKTYPE_ETHERNET, f) for _t, f, _l in story.packets]
    to_server = b"".join(p.payload for p in payloads if p.payload and p.dport == SERVER[1])
    assert to_server == b"".join(pieces[1:])


def test_a_waiting_chunk_that_matches_what_the_server_read_later_hands_over():
    """The client writes before the server has read anything, and again beyond the bytes the
    server's first read holds: the later write matches nothing itself, but the first one now
    matches the server's read, so the client takes over and both are replayed."""
    story = Story()
    client = dict(role=ROLE_CLIENT, tgid=100, ssl=0xA000, fd=5)
    server = dict(role=ROLE_SERVER, tgid=200, ssl=0xC000, fd=9)
    story.chunk(event(KIND_WRITE, b"220 ready\r\n", **server))
    head, tail = b"H" * 300, b"T" * 50
    story.chunk(event(KIND_WRITE, head, **client))                      # nothing to match yet
    story.chunk(event(KIND_READ, head[:100], **server))
    assert story.synth.stats.handovers == 0
    story.chunk(event(KIND_WRITE, tail, 300, **client))                 # past the server's read
    assert story.synth.stats.handovers == 1
    payloads = [decode(LINKTYPE_ETHERNET, f) for _t, f, _l in story.packets]
    assert b"".join(p.payload for p in payloads if p.payload and p.dport == SERVER[1]) == head + tail


def test_a_client_end_that_never_matches_is_tried_once_per_direction(monkeypatch):
    """An end hooked mid-connection never matches: each new chunk is tried, and the waiting
    ones again only when the server's end has reported a new direction, not at every chunk."""
    story = Story()
    tried = []
    real = StreamSynthesizer._takes_over
    monkeypatch.setattr(StreamSynthesizer, "_takes_over",
                        staticmethod(lambda connection, ev: tried.append(ev) or real(connection, ev)))
    exchange(story, role=ROLE_SERVER, tgid=200, ssl=0xC000, fd=9)        # both directions seen
    for number in range(200):
        story.chunk(event(KIND_WRITE, b"y" * 10, 5000 + 10 * number))
    assert story.synth.stats.handovers == 0
    # each chunk once; the waiting ones never again, as the server's end reported both
    # directions before they came (tried at every chunk, they would be 200 * 201 / 2)
    assert len(tried) == 200


def test_waiting_chunks_are_bounded_in_all_and_freed_with_their_connection(monkeypatch):
    """Client ends hooked mid-connection never match: their chunks wait only within the
    bound over all connections (the connection that began to wait first loses first), and
    a connection's close frees what it held."""
    monkeypatch.setattr(streams, "WAITING_TOTAL_BYTES", 100)
    monkeypatch.setattr(streams, "WAITING_OVERHEAD", 0)
    story = Story()
    for number in range(3):
        client_port = (CLIENT[0], 41000 + number)
        exchange(story, role=ROLE_SERVER, tgid=200, ssl=0xC000 + number, fd=9 + number,
                 client=client_port)
        story.chunk(event(KIND_WRITE, b"x" * 40, 500, tgid=100, ssl=0xA000 + number,
                          fd=5 + number, client=client_port))
    held = {key: connection.waiting_bytes
            for key, connection in story.synth._connections.items()}
    assert sorted(held.values()) == [0, 40, 40]                       # the first one's went
    assert story.synth._waiting_bytes == 80
    for number in range(3):
        story.close(tgid=200, fd=9 + number)
    assert story.synth._waiting_bytes == 0 and not story.synth._waiting_in


def test_unreadable_waiting_chunks_count_against_the_bound():
    """A client end whose buffers cannot be read reports chunks without bytes: each still
    counts WAITING_OVERHEAD, so their number is bounded too."""
    story = Story()
    exchange(story, role=ROLE_SERVER, tgid=200, ssl=0xC000, fd=9)
    for number in range(5000):
        story.chunk(event(KIND_WRITE, b"", 5000 + 10 * number, length=10, failed=True))
    [connection] = story.synth._connections.values()
    held = sum(len(chunks) for chunks in connection.waiting.values())
    assert held == streams.WAITING_BYTES // streams.WAITING_OVERHEAD
    assert connection.waiting_bytes <= streams.WAITING_BYTES


def test_the_closed_memory_fades():
    story = Story()
    exchange(story)
    story.close()
    story.synth.expire(story.clock + CLOSED_MEMORY_NS + 1)
    other_end = story.chunk(event(KIND_READ, REQUEST, role=ROLE_SERVER, tgid=200, ssl=0xC000))
    assert other_end                 # a new connection on a reused 5-tuple is reported again
    assert story.synth.stats.connections == 2


def test_a_lost_chunk_is_a_gap_and_the_next_exchange_resyncs():
    story = Story()
    story.chunk(event(KIND_WRITE, REQUEST))
    # The response's chunk was lost in the ring buffer: the next one comes at a later offset.
    second = REQUEST.replace(b"/orders?id=7", b"/cart")
    story.chunk(event(KIND_WRITE, second, len(REQUEST)))
    story.chunk(event(KIND_READ, RESPONSE, len(RESPONSE)))
    story.close()
    entries = sorted(story.entries(), key=lambda e: e["ts"])
    assert story.synth.stats.gaps == 1
    assert story.synth.stats.gap_bytes == len(RESPONSE)
    assert [e["request"]["path"] for e in entries] == ["/orders", "/cart"]
    assert entries[0]["complete"] is False
    assert entries[1]["status"] == 200


@pytest.mark.parametrize("lost", [1, 2, 700])
def test_gaps_of_any_size_release_the_data_behind_them(lost):
    story = Story()
    body = b"x" * 1000
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    story.chunk(event(KIND_WRITE, REQUEST))
    story.chunk(event(KIND_READ, head))
    story.chunk(event(KIND_READ, body[lost:], len(head) + lost))   # `lost` bytes never came
    story.chunk(event(KIND_WRITE, REQUEST.replace(b"/orders?id=7", b"/next"), len(REQUEST)))
    story.chunk(event(KIND_READ, RESPONSE, len(head) + len(body)))
    story.close()
    entries = sorted(story.entries(), key=lambda e: e["ts"])
    assert [e["request"]["path"] for e in entries] == ["/orders", "/next"]
    assert entries[0]["complete"] is False
    assert entries[1]["status"] == 200 and entries[1]["complete"] is True


def test_chunks_in_order_across_directions_and_overlaps_trimmed():
    """One call's 16 KiB pieces come in order; a piece repeating bytes already given (never
    expected from the program, handled all the same) adds only what is new."""
    story = Story()
    story.chunk(event(KIND_WRITE, REQUEST[:10]))
    story.chunk(event(KIND_WRITE, REQUEST[5:20], 5))             # 5 bytes seen, 10 new
    story.chunk(event(KIND_WRITE, REQUEST[:20], 0))              # nothing new: no packet
    story.chunk(event(KIND_WRITE, REQUEST[20:], 20))
    story.chunk(event(KIND_READ, RESPONSE[:17]))
    story.chunk(event(KIND_READ, RESPONSE[17:], 17))
    story.close()
    payloads = [decode(LINKTYPE_ETHERNET, f).payload for _t, f, _l in story.packets]
    assert [p for p in payloads if p] == [REQUEST[:10], REQUEST[10:20], REQUEST[20:],
                                          RESPONSE[:17], RESPONSE[17:]]
    assert story.synth.stats.gaps == 0
    [entry] = story.entries()
    assert (entry["request"]["path"], entry["status"], entry["complete"]) == ("/orders", 200, True)


def test_an_unreadable_buffer_counts_up_to_the_fin():
    story = Story()
    story.chunk(event(KIND_WRITE, REQUEST))
    story.chunk(event(KIND_READ, length=len(RESPONSE), failed=True))
    story.close()
    [entry] = story.entries()
    assert entry["complete"] is False
    fins = [decode(LINKTYPE_ETHERNET, f) for _t, f, _l in story.packets
            if decode(LINKTYPE_ETHERNET, f).flags & FIN]
    server_fin = next(f for f in fins if f.sport == SERVER[1])
    syn_ack = decode(LINKTYPE_ETHERNET, story.packets[1][1])
    assert server_fin.seq == syn_ack.seq + 1 + len(RESPONSE)


def test_a_process_that_exits_mid_stream_ends_its_connections():
    story = Story()
    story.chunk(event(KIND_WRITE, REQUEST))
    story.chunk(event(KIND_READ, RESPONSE[:30]))     # the response is cut off by the exit
    second = dict(client=("10.1.0.1", 40001), ssl=0xA001, fd=6)
    story.chunk(event(KIND_WRITE, REQUEST, **second))
    story.chunk(event(KIND_READ, RESPONSE[:-2], **second))     # two bytes of body missing
    story.chunk(event(KIND_WRITE, REQUEST, tgid=300, ssl=0xD000, client=("10.1.0.3", 40002)))
    story.exit(100)
    assert story.synth.stats.connections_active == 1            # process 300's
    assert not story.synth.owns(100) and story.synth.owns(300)
    closed = [e for e in story.entries() if e["src"]["port"] in (40000, 40001)]
    assert sorted((e["src"]["port"], e["status"], e["complete"]) for e in closed) == [
        (40000, 200, False), (40001, 200, False)]


def test_big_chunks_are_cut_to_what_an_ip_packet_and_the_snaplen_hold():
    snaplen = 9000
    story = Story(snaplen=snaplen)
    body = bytes(range(256)) * 800      # 204800 bytes
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(body)
    exchange(story, response=head + body)
    story.close()
    limit = max_payload(LINKTYPE_ETHERNET, snaplen, ipv6=False)
    data_packets = [decode(LINKTYPE_ETHERNET, f) for _t, f, _l in story.packets]
    assert all(len(f) <= snaplen for _t, f, _l in story.packets)
    assert max(len(d.payload) for d in data_packets) == limit
    [entry] = story.entries()
    assert entry["response"]["content_length"] == len(body)
    assert entry["size"]["response"] == len(head) + len(body)
    assert entry["complete"] is True


def test_an_ssl_object_moved_to_another_socket_ends_the_old_connection():
    story = Story()
    exchange(story)
    story.chunk(event(KIND_WRITE, REQUEST, client=("10.1.0.1", 40009), fd=6))
    assert story.synth.stats.connections == 2
    assert story.synth.stats.connections_active == 1
    entries = story.entries()
    assert {e["src"]["port"] for e in entries} == {40000, 40009}


def test_idle_connections_are_forgotten():
    story = Story()
    story.chunk(event(KIND_WRITE, REQUEST))
    story.synth.expire(story.clock + IDLE_FORGET_NS + 1)
    assert story.synth.stats.forgotten == 1
    assert story.synth.stats.connections_active == 0


def test_ipv6_connections():
    client, server = ("fd00::1", 50000), ("fd00::2", 8443)
    story = Story()
    exchange(story, client=client, server=server)
    story.close()
    [entry] = story.entries()
    assert (entry["src"]["ip"], entry["dst"]["ip"], entry["dst"]["port"]) == ("fd00::1", "fd00::2", 8443)
    assert entry["status"] == 200 and entry["tls"] is True


@pytest.mark.parametrize("linktype", [LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2])
def test_every_markable_link_type_dissects(linktype):
    story = Story(linktype)
    exchange(story)
    story.close()
    [entry] = story.entries()
    assert (entry["request"]["path"], entry["tls"]) == ("/orders", True)


def test_the_encrypted_packets_of_the_same_connection_stay_apart():
    """The wire shows the connection encrypted (here: other bytes on the same 5-tuple); the
    probes show its cleartext. Each becomes its own entry, and only one is tls."""
    story = Story()
    exchange(story)
    story.close()
    wire = tcp_conversation([b"GET /wire HTTP/1.1\r\nHost: x\r\n\r\n"],
                            [b"HTTP/1.1 204 No Content\r\n\r\n"], client=CLIENT, server=SERVER,
                            start_ns=START)
    entries = story.entries(extra=wire)
    assert sorted((e["request"]["path"], e["status"], e["tls"]) for e in entries) == [
        ("/orders", 200, True), ("/wire", 204, False)]


def test_detail_and_entry_pcap_read_the_synthesized_packets(tmp_path: Path):
    story = Story()
    exchange(story)
    story.close()
    wire = tcp_conversation([b"GET /wire HTTP/1.1\r\nHost: x\r\n\r\n"],
                            [b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwire"],
                            client=CLIENT, server=SERVER, start_ns=START)
    with SegmentWriter(tmp_path, 4 * 1024 * 1024) as writer:
        for packet in sorted([*story.packets, *wire], key=lambda p: p[0]):
            writer.append(LINKTYPE_ETHERNET, [packet])
    dissection = Dissection("node-a")
    for segment in list_segments(tmp_path):
        dissection.feed(list(iter_segment(segment.path)))
    dissection.close_all()
    rows = {row.protocol + ("+tls" if b'"tls":true' in row.entry_json else ""): row
            for row in dissection.take_rows()}
    tls_row, wire_row = rows["http+tls"], rows["http"]
    detail = load_detail(tmp_path, tls_row, 1 << 20)
    assert detail.tls is True
    assert detail.response["body"].data == "hello"
    assert load_detail(tmp_path, wire_row, 1 << 20).response["body"].data == "wire"
    # From the SYN to the response's last byte: the synthesized packets, none of the wire's.
    tls_packets = [data for _linktype, _ts, data, _len in entry_packets(tmp_path, tls_row)]
    assert tls_packets == [frame for _ts, frame, _len in story.packets[:5]]
    wire_packets = [data for _linktype, _ts, data, _len in entry_packets(tmp_path, wire_row)]
    assert wire_packets == [frame for _ts, frame, _len in wire[:len(wire_packets)]]
    assert len(wire_packets) >= 5


# -- chunks of a socket not known yet (pending.py) -----------------------------------------

def unplaced(ev: TlsEvent) -> TlsEvent:
    """The same chunk as the program sends it when no syscall named the socket."""
    return ev._replace(fd=-1, flags=ev.flags & ~FLAG_TUPLE, role=0, lport=0, rport=0)


def test_a_first_request_served_from_a_buffer_is_placed_when_the_socket_is_named():
    """A server whose first read is served from the TLS library's buffer (no syscall, so no
    socket): the chunk is held, and the connection's next call places it before its own,
    at the offsets the program kept."""
    story, pending = Story(), PendingChunks()
    first = unplaced(event(KIND_READ, REQUEST, 0, role=ROLE_SERVER))
    assert pending.hold(first, story.tick()) == 0 and len(pending) == 1
    assert pending.take(100, 0xBEEF) == []            # another TLS object: nothing for it
    answer = event(KIND_WRITE, RESPONSE, 0, role=ROLE_SERVER)
    for held, held_ns in pending.take(answer.tgid, answer.ssl):
        key = connection_of(answer.role, answer.laddr, answer.lport, answer.raddr, answer.rport)
        story.packets += story.synth.chunk(held, key, False, held_ns)
    story.chunk(answer)
    story.close()
    [entry] = story.entries()
    assert (entry["request"]["path"], entry["status"], entry["complete"]) == ("/orders", 200, True)
    assert not pending and len(pending) == 0


def test_held_chunks_are_bounded_and_expire():
    pending = PendingChunks(max_per_owner=2, max_bytes=100, hold_ns=10)
    chunk = unplaced(event(KIND_READ, b"x" * 40))
    assert pending.hold(chunk, 0) == 0
    assert pending.hold(chunk, 1) == 0
    assert pending.hold(chunk, 2) == 1                  # a third for the same object: dropped
    other = chunk._replace(ssl=0xB000)
    assert pending.hold(other, 3) == 1                  # 120 bytes > 100: the oldest goes
    assert len(pending) == 2
    assert pending.expire(12) == 1                      # held since 1, 11 ns ago
    assert len(pending) == 1
    assert pending.forget_process(100) == 1 and not pending

