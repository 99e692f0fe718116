from __future__ import annotations

import asyncio

import pytest

from shark.model import Endpoint, Entry, encode
from worker.broadcast import Broadcaster
from worker.filters import FilterError, compile_filter, row_predicate
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


def test_field_filters() -> None:
    entries = [tentry(1, 500), tentry(2, 503, "POST", "/api/pay"), tentry(3, 404, path="/x"),
               tentry(4, None, complete=False)]

    def matching(**params: str) -> list[int]:
        test = compile_filter(params)
        assert test is not None
        return [int(e.id.split(":")[1]) for e in entries if test(e)]
    assert matching(status="5xx") == [1, 2]
    assert matching(status="404") == [3]
    assert matching(method="post") == [2]
    assert matching(path="/api") == [1, 2, 4]
    assert matching(complete="false") == [4]
    assert matching(port="40000", ip="10.0.0.2") == [1, 2, 3, 4]
    assert matching(host="other") == []
    assert compile_filter({}) is None
    assert row_predicate(None)(trow(entries[0]))


@pytest.mark.parametrize(("params", "field"), [
    ({"status": "abc"}, "status"), ({"status": "6xx"}, "status"), ({"port": "http"}, "port"),
    ({"complete": "yes"}, "complete"),
])
def test_bad_filter_names_the_field(params: dict[str, str], field: str) -> None:
    with pytest.raises(FilterError) as error:
        compile_filter(params)
    assert error.value.field == field and str(error.value).startswith(field)


def test_slow_subscriber_loses_oldest_and_is_told() -> None:
    async def run() -> tuple[list[int], int, int]:
        broadcaster = Broadcaster()
        slow = broadcaster.subscribe(lambda row: True, maxsize=3)
        only_5xx = broadcaster.subscribe(row_predicate(compile_filter({"status": "5xx"})), 10)
        broadcaster.publish([trow(tentry(n, 500 if n % 2 else 200)) for n in range(1, 11)])
        await asyncio.sleep(0)   # let the loop run the thread-safe callbacks
        got = [slow.queue.get_nowait().seq for _ in range(slow.queue.qsize())]
        lost = slow.take_lost()
        odd = only_5xx.queue.qsize()
        broadcaster.unsubscribe(slow)
        broadcaster.unsubscribe(only_5xx)
        return got, lost, odd
    got, lost, odd = asyncio.run(run())
    assert got == [8, 9, 10] and lost == 7 and odd == 5
