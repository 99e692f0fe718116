"""hub.stream._sse_batches: a worker's SSE cut into events from raw chunks, however the chunks
fall (a CRLF, an event or a field split between two reads)."""

from __future__ import annotations

import asyncio

import pytest

from hub.stream import _sse_batches


class Chunks:
    """What _sse_batches reads of an httpx response: its body as these chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def aiter_bytes(self):
        for chunk in self.chunks:
            yield chunk


def events(chunks: list[bytes]) -> list[list[tuple[str, str, bytes]]]:
    async def go():
        return [batch async for batch in _sse_batches(Chunks(chunks))]
    return asyncio.run(go())


STREAM = (b'event: hello\r\ndata: {"node": "a"}\r\n\r\n'
          b": ping - 2026-12-06\r\n\r\n"
          b'id: 7\r\nevent: entry\r\ndata: {"id": "a:7"}\r\n\r\n'
          b"event: lost\r\ndata: first line\r\ndata: second line\r\n\r\n"
          b"event: empty\r\n\r\n"
          b'id: 8\r\nevent: entry\r\ndata: {"id": "a:8"}\r\n\r\n')
EXPECTED = [("hello", "", b'{"node": "a"}'), ("entry", "7", b'{"id": "a:7"}'),
            ("lost", "", b"first line\nsecond line"), ("entry", "8", b'{"id": "a:8"}')]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 61, len(STREAM)])
def test_events_are_the_same_however_the_chunks_fall(size: int) -> None:
    chunks = [STREAM[i:i + size] for i in range(0, len(STREAM), size)]
    got = [event for batch in events(chunks) for event in batch]
    assert got == EXPECTED


def test_line_feeds_alone_and_lone_carriage_returns_end_lines_too() -> None:
    lf = STREAM.replace(b"\r\n", b"\n")
    cr = STREAM.replace(b"\r\n", b"\r")
    assert [e for batch in events([lf]) for e in batch] == EXPECTED
    assert [e for batch in events([cr[:40], cr[40:]]) for e in batch] == EXPECTED


def test_a_read_gives_one_batch_of_its_whole_events_and_an_unfinished_one_waits() -> None:
    first, second = STREAM[:100], STREAM[100:]       # the entry a:7 ends at byte 104
    batches = events([first, second, b'id: 9\r\nevent: entry\r\ndata: {"id": "a:9"}'])   # the last never ends
    assert [len(batch) for batch in batches] == [1, 3]
    assert batches[1][-1] == ("entry", "8", b'{"id": "a:8"}')


def test_entry_events_in_another_shape_than_the_workers_are_cut_as_any_event() -> None:
    """The worker's own `id / event: entry / data` shape is cut on a shortcut; anything else
    (fields in another order, no space after the colon, a comment or a retry inside, data on
    two lines) by the field parser, with the same result it always had."""
    stream = (b'event: entry\r\nid: 1\r\ndata: {"id": "a:1"}\r\n\r\n'
              b'id:2\r\nevent: entry\r\ndata:{"id": "a:2"}\r\n\r\n'
              b'id: 3\r\nevent: entry\r\n: note\r\ndata: {"id": "a:3"}\r\n\r\n'
              b'id: 4\r\nevent: entry\r\ndata: {"id":\r\ndata: "a:4"}\r\n\r\n'
              b'id: 5\r\nevent: entry\r\nretry: 10\r\n\r\n'
              b'id: 6\r\nevent: entryx\r\ndata: {"id": "a:6"}\r\n\r\n'
              b'id: 7\nevent: entry\ndata: {"id": "a:7", "s": "caf\xc3\xa9"}\n\n')
    assert [e for batch in events([stream]) for e in batch] == [
        ("entry", "1", b'{"id": "a:1"}'), ("entry", "2", b'{"id": "a:2"}'), ("entry", "3", b'{"id": "a:3"}'),
        ("entry", "4", b'{"id":\n"a:4"}'), ("entryx", "6", b'{"id": "a:6"}'),
        ("entry", "7", b'{"id": "a:7", "s": "caf\xc3\xa9"}')]
