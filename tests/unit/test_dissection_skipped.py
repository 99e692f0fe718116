"""Bytes a session passes over while resyncing are counted per protocol when the flow ends."""

from __future__ import annotations

import json

from factories import LINKTYPE_ETHERNET, tcp_conversation
from worker.dissection import Dissection

GARBAGE = b"\x00\x01 not a request line\r\n"


def request(n: int) -> bytes:
    return b"GET /item/%d HTTP/1.1\r\nHost: shop\r\n\r\n" % n


def response(n: int) -> bytes:
    body = b'{"n": %d}' % n
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def run(client: list[bytes], server: list[bytes], close: str | None = "fin"
        ) -> tuple[Dissection, list[dict]]:
    dissection = Dissection("n")
    packets = tcp_conversation(client, server, server=("10.0.0.2", 8080), close=close)
    dissection.feed([((0, i), LINKTYPE_ETHERNET, ts, frame, wirelen)
                     for i, (ts, frame, wirelen) in enumerate(packets)])
    if close is None:
        dissection.close_all()
    return dissection, [json.loads(row.entry_json) for row in dissection.take_rows()]


def test_garbage_between_requests_is_counted_as_skipped_http_bytes():
    dissection, entries = run([request(1), GARBAGE + request(2)], [response(1), response(2)])
    # the garbage stood where a request should: resynced at the next request line
    assert [e["request"].get("path") for e in entries] == ["/item/1", None, "/item/2"]
    assert dissection.skipped == {"http": len(GARBAGE)}


def test_a_flow_still_open_counts_when_it_is_closed():
    dissection, _ = run([request(1), GARBAGE + GARBAGE + request(2)],
                        [response(1), response(2)], close=None)
    assert dissection.skipped == {"http": 2 * len(GARBAGE)}


def test_clean_traffic_skips_nothing():
    dissection, entries = run([request(1), request(2)], [response(1), response(2)])
    assert len(entries) == 2
    assert dissection.skipped == {}
