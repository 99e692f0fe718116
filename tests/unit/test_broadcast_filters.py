from __future__ import annotations

import asyncio

import pytest

from shark.model import Endpoint, Entry, encode
from worker.broadcast import Broadcaster
from worker.filters import KflError, compile_query, row_predicate
from worker.store.index import IndexRow


def tentry(seq: int = 1, status: int | None = 200, method: str = "GET", path: str = "/api/orders",
           complete: bool = True) -> Entry:
    return Entry(id=f"n:{seq}", node="n", protocol="http", ts=1000.0 + seq,
                 src=Endpoint("10.0.0.1", 40000), dst=Endpoint("10.0.0.2", 8080),
                 summary=f"{method} {path}", status=status,
                 request={"method": method, "path": path, "host": "shop"},
                 response=None if status is None else {"status": status}, complete=complete)


def trow(entry: Entry) -> IndexRow:
    seq = int(entry.id.split(":")[1])
    return IndexRow(seq=seq, ts=entry.ts, protocol=entry.protocol, entry_json=encode(entry),
                    first_seg=1, first_off=24, last_seg=1, last_off=24, transport="tcp",
                    client_ip="10.0.0.1", client_port=40000, server_ip="10.0.0.2",
                    server_port=8080, client_offset=0, server_offset=0, client_seq=1,
                    server_seq=1)


def test_query_filters_rows() -> None:
    entries = [tentry(1, 500), tentry(2, 503, "POST", "/api/pay"), tentry(3, 404, path="/x"),
               tentry(4, None, complete=False)]

    def matching(q: str) -> list[int]:
        predicate = row_predicate(compile_query(q))
        return [row.seq for row in map(trow, entries) if predicate(row)]
    assert matching("status >= 500 and status < 600") == [1, 2]
    assert matching("status == 404") == [3]
    assert matching('request.method.lower() == "post"') == [2]
    assert matching('request.path.startsWith("/api")') == [1, 2, 4]
    assert matching("not complete") == [4]
    assert matching('src.port == 40000 and dst.ip == "10.0.0.2"') == [1, 2, 3, 4]
    assert matching('request.host == "other"') == []
    assert matching("dns") == []
    assert matching("") == [1, 2, 3, 4]
    assert compile_query(None).matches_all
    assert row_predicate(None)(trow(entries[0]))


def test_protocol_queries_skip_other_rows_without_decoding() -> None:
    row = trow(tentry(1))
    broken = IndexRow(**{**{f: getattr(row, f) for f in row.__struct_fields__},
                         "entry_json": b"not json"})
    assert row_predicate(compile_query("http"))(row)
    assert not row_predicate(compile_query("http"))(broken)     # undecodable: no match, no error
    # The row's protocol column decides before its JSON is decoded.
    relabelled = IndexRow(**{**{f: getattr(row, f) for f in row.__struct_fields__}, "protocol": "redis"})
    assert not row_predicate(compile_query("http and status == 200"))(relabelled)
    assert row_predicate(compile_query("status == 200"))(relabelled)


@pytest.mark.parametrize(("q", "column"), [
    ("status ==", 10), ("status = 5", 8), ("request.path.startswith('/')", 14), ("(http", 6),
])
def test_bad_query_says_where(q: str, column: int) -> None:
    with pytest.raises(KflError) as error:
        compile_query(q)
    assert error.value.column == column and str(error.value).startswith(f"column {column}: ")


def test_slow_subscriber_loses_oldest_and_is_told() -> None:
    async def run() -> tuple[list[int], int, int, int, int]:
        broadcaster = Broadcaster()
        slow = broadcaster.subscribe(lambda row: True, maxsize=3)
        only_5xx = broadcaster.subscribe(row_predicate(compile_query("status >= 500")), 10)
        broadcaster.publish([trow(tentry(n, 500 if n % 2 else 200)) for n in range(1, 11)])
        await asyncio.sleep(0)   # let the loop run the thread-safe callbacks
        rows, lost = await slow.queue.get_batch(100)
        odd, _ = await only_5xx.queue.get_batch(100)
        counted = broadcaster.lost_total
        broadcaster.unsubscribe(slow)
        broadcaster.unsubscribe(only_5xx)
        return [row.seq for row in rows], lost, len(odd), counted, broadcaster.lost_total
    got, lost, odd, counted, after = asyncio.run(run())
    assert got == [8, 9, 10] and lost == 7 and odd == 5
    assert counted == after == 7      # in /status, whether the reader is still there or gone
