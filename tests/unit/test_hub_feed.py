"""The hub's live feed (hub/stream.py) against in-process fake workers that speak the worker's
/stream contract: replay after Last-Event-ID from the index, then live entries.

What is checked: clients with the same query share one upstream per worker; ids are the
group's positions, also when a client resumes (from the ring of recent events or re-read from
the workers), on this hub or on one started since; what cannot be replayed is stated (a store
reset, evictions, a worker down); workers joining and leaving; entries sent without an id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx
import pytest
from sse_starlette import ServerSentEvent

from hub.events import entry_event, lost_event
from hub.stream import Feed
from hub.workers import WorkerPool


class FakeWorker:
    """A worker's /status and /stream: every connection says hello (node, store, head), replays
    what it has after Last-Event-ID (SEQ or STORE:SEQ) and says `live`, then gets what is
    published while it is open."""

    def __init__(self, node: str, store: str = "s1") -> None:
        self.node = node
        self.store = store
        self.seq = 0
        self.entries: list[tuple[int, str]] = []
        self.open: list[asyncio.Queue[tuple[int, str] | None]] = []
        self.connections: list[dict[str, Any]] = []
        self.with_ids = True
        self.refuse = 0              # /stream answers 503 with Retry-After this many more times
        self.asked: list[float] = []  # when /stream was asked (loop time)

    def publish(self, path: str) -> None:
        self.seq += 1
        data = json.dumps({"id": f"{self.node}:{self.seq}", "node": self.node, "ts": float(self.seq),
                           "request": {"path": path}})
        self.entries.append((self.seq, data))
        for queue in self.open:
            queue.put_nowait((self.seq, data))

    def lose(self, count: int) -> None:
        """As a worker whose queue for each open stream overflowed by `count` entries."""
        for queue in self.open:
            queue.put_nowait((0, json.dumps({"lost": count})))

    def reset(self, store: str) -> None:
        """As a worker restarted with an empty store: its streams end, seqs start again."""
        self.store, self.seq, self.entries = store, 0, []
        for queue in list(self.open):
            queue.put_nowait(None)

    def evict(self, upto: int) -> None:
        self.entries = [e for e in self.entries if e[0] > upto]

    def _id(self, seq: int) -> str:
        return f"id: {seq}\n" if self.with_ids else ""

    async def _body(self, last: str | None, queue: asyncio.Queue[tuple[int, str] | None]) -> AsyncIterator[bytes]:
        try:
            store, _, seq = (last or "").rpartition(":")
            after = int(seq) if last else None
            reset = after is not None and ((bool(store) and store != self.store) or after > self.seq)
            if reset:
                after = 0
            hello = {"node": self.node, "store": self.store, "head": self.seq, "reset": reset}
            yield f"event: hello\ndata: {json.dumps(hello)}\n\n".encode()
            newest = self.seq
            if after is not None:
                missed = [e for e in self.entries if e[0] > after]
                for seq_, data in missed:
                    yield f"event: entry\n{self._id(seq_)}data: {data}\n\n".encode()
                evicted = max(0, (missed[0][0] if missed else self.seq + 1) - after - 1)
                yield f"event: live\ndata: {json.dumps({'seq': newest, 'evicted': evicted})}\n\n".encode()
            while (item := await queue.get()) is not None:
                if item[0] == 0:
                    yield f"event: lost\ndata: {item[1]}\n\n".encode()
                elif item[0] > newest:
                    yield f"event: entry\n{self._id(item[0])}data: {item[1]}\n\n".encode()
        finally:
            self.open.remove(queue)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/status"):
            return httpx.Response(200, json={"node": self.node})
        if request.url.path.endswith("/stream"):
            self.asked.append(asyncio.get_running_loop().time())
            if self.refuse:
                self.refuse -= 1
                detail = "1 /stream clients are connected, the most this worker serves (--max-stream-clients)"
                return httpx.Response(503, headers={"Retry-After": "1"},
                                      json={"error": "unavailable", "detail": detail})
            last = request.headers.get("last-event-id")
            self.connections.append({"q": request.url.params.get("q"), "after": last})
            queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()
            self.open.append(queue)
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=self._body(last, queue))
        return httpx.Response(404, json={"error": "not found"})


class Transport(httpx.AsyncBaseTransport):
    def __init__(self, workers: dict[str, FakeWorker]) -> None:
        self.workers = workers

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.workers[request.url.host].handle(request)


def fake_pool(*names: str) -> tuple[WorkerPool, dict[str, FakeWorker]]:
    workers = {name: FakeWorker(name) for name in names}
    pool = WorkerPool([f"http://{name}:8897" for name in names], retries=0, timeout=2.0,
                      transport=Transport(workers))
    return pool, workers


class Client:
    """One consumer of Feed.events, collecting what it receives."""

    def __init__(self, feed: Feed, q: str | None, last_id: str | None = None) -> None:
        self.events: list[Any] = []
        self.task = asyncio.create_task(self._run(feed.events(q, last_id)))

    async def _run(self, events: AsyncIterator[Any]) -> None:
        async with aclosing(events):
            async for event in events:
                self.events.append(event)

    def entries(self) -> list[tuple[str, str]]:
        """(event id, entry id) of every entry event."""
        return [(e.id, json.loads(e.payload)["id"]) for e in self.events if e.kind == "entry"]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [json.loads(e.payload) for e in self.events if e.kind == kind]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def until(check, what: str, timeout: float = 5.0):  # noqa: ANN001, ANN201
    async with asyncio.timeout(timeout):
        while not (value := check()):
            await asyncio.sleep(0.01)
    assert value, what
    return value


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def test_clients_with_one_query_share_one_upstream_per_worker():
    async def go() -> None:
        pool, workers = fake_pool("w1", "w2")
        feed = Feed(pool)
        a, b, everything = Client(feed, "http"), Client(feed, "http"), Client(feed, None)
        await until(lambda: all(len(w.open) == 2 for w in workers.values()), "two upstreams per worker")
        workers["w1"].publish("/one")
        workers["w2"].publish("/two")
        await until(lambda: len(a.entries()) == 2 and len(b.entries()) == 2 and len(everything.entries()) == 2,
                    "every client got both entries")
        # one connection per worker and query, however many clients: 2 queries x 2 workers
        for worker in workers.values():
            assert sorted(c["q"] or "" for c in worker.connections) == ["", "http"]
        assert a.entries() == b.entries()                       # same events, same ids
        assert {e[1] for e in everything.entries()} == {"w1:1", "w2:1"}
        assert feed.upstreams() == 4 and len(feed.groups) == 2
        # each client was told both workers are up, a late joiner too
        late = Client(feed, "http")
        await until(lambda: len(late.of("status")) == 2, "status of both workers for a late joiner")
        assert all(s["ok"] for s in late.of("status"))
        for client in (a, b, everything, late):
            await client.close()
        await feed.close()
        await pool.close()
    run(go())


def test_resume_gives_the_groups_own_ids_from_the_ring_and_from_the_workers():
    async def go() -> None:
        pool, workers = fake_pool("w1", "w2")
        feed = Feed(pool, recent_size=2)        # the ring holds 2 events: the rest is re-read
        keeper = Client(feed, "http")           # keeps the group alive and sees everything
        first = Client(feed, "http")
        await until(lambda: all(len(w.open) == 1 for w in workers.values()), "upstreams")
        for n in range(2):
            workers["w1"].publish(f"/before{n}")
        await until(lambda: len(first.entries()) == 2, "two entries before leaving")
        last_id = first.entries()[-1][0]
        await first.close()
        for n in range(3):
            workers["w1"].publish(f"/away{n}")
            workers["w2"].publish(f"/away{n}")
        await until(lambda: len(keeper.entries()) == 8, "the keeper saw the 6 missed entries")
        resumed = Client(feed, "http", last_id)
        missed = keeper.entries()[2:]
        await until(lambda: len(resumed.entries()) >= 6, "the 6 missed entries replayed")
        assert resumed.entries()[:6] == missed                 # same ids, same order, none twice
        assert resumed.of("lost") == []
        # 4 of the 6 were older than the ring: re-read from the workers after the client's
        # position of each node (w1 after its entry 2, w2 after where the group started)
        replays = sorted(c["after"] for w in workers.values() for c in w.connections if c["after"])
        assert replays == ["s1:0", "s1:2"], replays
        workers["w2"].publish("/live")
        await until(lambda: len(resumed.entries()) == 7, "live again after catching up")
        assert resumed.entries()[-1] == ("w1@s1:5,w2@s1:4", "w2:4")
        for client in (keeper, resumed):
            await client.close()
        await feed.close()
        await pool.close()
    run(go())


def test_an_id_of_an_older_hub_version_is_stated():
    async def go() -> None:
        pool, workers = fake_pool("w1")
        feed = Feed(pool)
        stale = Client(feed, None, last_id="1764150000123456")    # the counter ids hubs sent before
        lost = await until(lambda: stale.of("lost"), "a lost notice")
        assert lost[0]["lost"] is None and "older hub version" in lost[0]["reason"]
        await until(lambda: workers["w1"].open, "then live")
        workers["w1"].publish("/after")
        await until(lambda: stale.entries(), "live entries after the notice")
        await stale.close()
        await feed.close()
        await pool.close()
    run(go())


def test_after_a_hub_restart_a_resume_gets_every_entry_captured_while_it_was_down():
    """The new hub knows nothing of the old one (nor its clock): the id alone says where the
    client was, and the workers still have what came since."""
    async def go() -> None:
        pool, workers = fake_pool("w1", "w2")
        old_hub = Feed(pool)
        client = Client(old_hub, "http")
        await until(lambda: all(w.open for w in workers.values()), "upstreams")
        workers["w1"].publish("/a")
        workers["w2"].publish("/b")
        await until(lambda: len(client.entries()) == 2, "two entries")
        last_id = client.entries()[-1][0]
        assert last_id == "w1@s1:1,w2@s1:1"
        await client.close()
        await old_hub.close()
        await pool.close()
        # while no hub runs, the workers go on capturing
        for n in range(3):
            workers["w1"].publish(f"/down{n}")
        workers["w2"].publish("/down")
        pool = WorkerPool(["http://w1:8897", "http://w2:8897"], retries=0, timeout=2.0, transport=Transport(workers))
        new_hub = Feed(pool)
        resumed = Client(new_hub, "http", last_id)
        await until(lambda: len(resumed.entries()) == 4, "the 4 entries captured while the hub was down")
        assert sorted(e[1] for e in resumed.entries()) == ["w1:2", "w1:3", "w1:4", "w2:2"]
        assert resumed.of("lost") == []
        assert resumed.entries()[-1][0] in ("w1@s1:4,w2@s1:2",)
        workers["w2"].publish("/live")
        await until(lambda: len(resumed.entries()) == 5, "then live, nothing twice")
        assert resumed.entries()[-1] == ("w1@s1:4,w2@s1:3", "w2:3")
        await resumed.close()
        await new_hub.close()
        await pool.close()
    run(go())


def test_what_a_resume_cannot_give_is_stated_per_node():
    async def go() -> None:
        pool, workers = fake_pool("w1", "w2", "w3")
        workers["gone"] = FakeWorker("gone")
        feed = Feed(pool)
        first = Client(feed, None)
        await until(lambda: all(len(w.open) == 1 for n, w in workers.items() if n != "gone"), "upstreams")
        for name in ("w1", "w2", "w3"):
            workers[name].publish("/x")
        await until(lambda: len(first.entries()) == 3, "three entries")
        await first.close()
        await feed.close()
        await pool.close()
        for name in ("w1", "w2", "w3"):
            for n in range(3):
                workers[name].publish(f"/away{n}")
        workers["w1"].reset("s2")           # w1 restarted with an empty store; has 1 new entry
        workers["w1"].publish("/new")
        workers["w2"].evict(3)              # w2 evicted entries 1-3 (2 and 3 unseen by the client)
        last_id = first.entries()[-1][0] + ",gone@s9:4"     # a node the new hub does not follow
        pool = WorkerPool([f"http://{n}:8897" for n in ("w1", "w2", "w3")], retries=0, timeout=2.0,
                          transport=Transport(workers))
        feed = Feed(pool)
        resumed = Client(feed, None, last_id)
        await until(lambda: len(resumed.entries()) == 1 + 1 + 3, "what the workers still have")
        by_node = {}
        for _, entry_id in resumed.entries():
            by_node.setdefault(entry_id.split(":")[0], []).append(entry_id)
        assert by_node == {"w1": ["w1:1"], "w2": ["w2:4"], "w3": ["w3:2", "w3:3", "w3:4"]}
        lost = await until(lambda: len(resumed.of("lost")) == 3 and resumed.of("lost"), "three notices")
        notices = {n["node"]: n for n in lost}
        assert "not answering" in notices["gone"]["reason"]
        assert "another store" in notices["w1"]["reason"]
        assert notices["w2"]["lost"] == 2 and "evicted" in notices["w2"]["reason"]
        await resumed.close()
        await feed.close()
        await pool.close()
    run(go())


def test_a_worker_reset_mid_feed_streams_its_new_entries_and_says_what_is_gone():
    async def go() -> None:
        pool, workers = fake_pool("w1")
        feed = Feed(pool)
        client = Client(feed, None)
        await until(lambda: workers["w1"].open, "upstream")
        for n in range(5):
            workers["w1"].publish(f"/old{n}")
        await until(lambda: len(client.entries()) == 5, "five entries")
        workers["w1"].reset("s2")           # the stream ends; the worker's seqs start over
        workers["w1"].publish("/new0")      # indexed before the hub reconnects
        await until(lambda: len(client.entries()) == 6, "the new store's first entry, though its seq is 1")
        workers["w1"].publish("/new1")
        await until(lambda: len(client.entries()) == 7, "and the next")
        assert [e[1] for e in client.entries()[5:]] == ["w1:1", "w1:2"]
        assert client.entries()[-1][0] == "w1@s2:2"
        assert "another store" in client.of("lost")[0]["reason"]
        await client.close()
        await feed.close()
        await pool.close()
    run(go())


def test_entries_without_an_id_are_passed_on_not_dropped():
    async def go() -> None:
        pool, workers = fake_pool("w1")
        workers["w1"].with_ids = False
        feed = Feed(pool)
        client = Client(feed, None)
        await until(lambda: workers["w1"].open, "upstream")
        workers["w1"].publish("/a")
        workers["w1"].publish("/b")
        await until(lambda: len(client.entries()) == 2, "both entries")
        # no position moves: the ids stay where the group started (a resume re-reads nothing)
        assert [e[0] for e in client.entries()] == ["w1@s1:0", "w1@s1:0"]
        await client.close()
        await feed.close()
        await pool.close()
    run(go())


def test_workers_joining_and_leaving_and_idle_groups_closing():
    async def go() -> None:
        pool, workers = fake_pool("w1", "w2")
        workers["w3"] = FakeWorker("w3")
        feed = Feed(pool, linger_s=0.05)
        client = Client(feed, "http")
        await until(lambda: len(client.of("status")) == 2, "two workers up")
        await pool.add("http://w3:8897")
        await until(lambda: workers["w3"].open, "the group follows the new worker")
        workers["w3"].publish("/new")
        await until(lambda: client.entries(), "an entry from the new worker")
        await pool.remove("http://w1:8897")
        gone = await until(lambda: [s for s in client.of("status") if s["ok"] is False], "w1 left")
        assert gone[0]["url"] == "http://w1:8897/api/v1" and "left" in gone[0]["error"]
        await until(lambda: not workers["w1"].open, "its upstream closed")
        await client.close()
        # the last client gone: the group lingers, then its upstreams close
        await until(lambda: not feed.groups and not workers["w2"].open and not workers["w3"].open,
                    "idle group closed")
        await feed.close()
        await pool.close()
    run(go())


def test_a_worker_refusing_the_stream_is_busy_not_down_and_asked_again_after_retry_after():
    """A worker at its --max-stream-clients answers 503 with Retry-After: it is up, only busy.
    The hub kept it down until the next poll and asked again 0.2 s later; now /workers keeps it
    up with state busy and the reason, live clients are told, and the hub asks again after the
    Retry-After, twice as long after each refusal in a row, until it streams."""
    async def go() -> None:
        pool, workers = fake_pool("w1", "w2")
        await pool.refresh_all()
        workers["w1"].refuse = 2
        feed = Feed(pool)
        client = Client(feed, "http")
        busy = await until(lambda: [s for s in client.of("status") if s.get("state") == "busy"], "told busy")
        assert busy[0]["node"] == "w1" and busy[0]["ok"] is False and busy[0]["retry_s"] == 1
        assert "--max-stream-clients" in busy[0]["error"] and "asks again in 1 s" in busy[0]["error"]
        [w1, w2] = pool.health()
        assert w1["ok"] is True and w1["state"] == "busy" and "--max-stream-clients" in w1["busy"], w1
        assert w2["state"] == "up" and w2["busy"] is None
        workers["w1"].publish("/late")
        up = await until(lambda: [s for s in client.of("status") if s["node"] == "w1" and s["state"] == "up"],
                         "w1 streams", timeout=10)
        assert up[0]["ok"] is True and up[0]["error"] is None
        asked = workers["w1"].asked
        assert len(asked) == 3 and asked[1] - asked[0] >= 0.95 and asked[2] - asked[1] >= 1.95, asked
        assert pool.health()[0]["state"] == "up" and pool.clients[0].health.ok is True
        workers["w1"].publish("/streamed")
        await until(lambda: any(e == "w1:2" for _, e in client.entries()), "its entries")
        await client.close()
        await feed.close()
        await pool.close()
    run(go())


def test_entries_a_worker_could_not_stream_are_reported_with_its_name():
    async def go() -> None:
        pool, workers = fake_pool("w1", "w2")
        await pool.refresh_all()                # the workers' node names, from their /status
        feed = Feed(pool)
        a, b = Client(feed, "http"), Client(feed, "http")
        await until(lambda: all(len(w.open) == 1 for w in workers.values()), "upstreams")
        await until(lambda: len(a.of("status")) == 2, "workers up")
        workers["w2"].lose(40)
        workers["w2"].publish("/after")
        await until(lambda: b.entries() and a.entries(), "the stream goes on")
        for client in (a, b):
            assert client.of("lost") == [{"lost": 40, "node": "w2", "reason": client.of("lost")[0]["reason"]}]
            assert "worker w2" in client.of("lost")[0]["reason"]
        for client in (a, b):
            await client.close()
        await feed.close()
        await pool.close()
    run(go())


def test_tags_set_after_an_entry_was_streamed_reach_every_live_client():
    async def go() -> None:
        pool, workers = fake_pool("w1")
        feed = Feed(pool)
        a, b = Client(feed, "http"), Client(feed, None)
        await until(lambda: len(workers["w1"].open) == 2, "upstreams")
        feed.announce_tags("w1:1", ["test.fail"])
        for client in (a, b):
            told = await until(lambda c=client: [e for e in c.events if e.kind == "tags"], "a tags event")
            assert json.loads(told[0].payload) == {"id": "w1:1", "tags": ["test.fail"]}
            assert told[0].id is None        # not a resume point
        for client in (a, b):
            await client.close()
        await feed.close()
        await pool.close()
    run(go())


def test_an_entry_is_rewritten_and_encoded_once_for_every_client():
    """The group makes one event per entry: the feed's rewrite (naming, in a cluster) runs once,
    and every client gets the same event, so its SSE and WebSocket texts are encoded once."""
    rewrites: list[bytes] = []

    def rewrite(data: bytes) -> bytes:
        rewrites.append(data)
        return data.replace(b'"/one"', b'"/named"')

    async def go() -> None:
        pool, workers = fake_pool("w1")
        feed = Feed(pool, rewrite=rewrite)
        clients = [Client(feed, None) for _ in range(3)]
        await until(lambda: len(workers["w1"].open) == 1, "one upstream")
        workers["w1"].publish("/one")
        await until(lambda: all(c.entries() for c in clients), "every client got the entry")
        events = [next(e for e in c.events if e.kind == "entry") for c in clients]
        assert len(rewrites) == 1
        assert all(event is events[0] for event in events)
        event = events[0]
        assert b'"path": "/named"' in event.sse and event.sse.startswith(b"id: w1@s1:1\r\nevent: entry\r\n")
        message = json.loads(event.ws)
        assert (message["type"], message["payload"]["request"], message["payload"]["seq"]) == \
            ("entry", {"path": "/named"}, "w1@s1:1")
        for client in clients:
            await client.close()
        await feed.close()
        await pool.close()
    run(go())


@pytest.mark.parametrize(("data", "id"), [
    (b'{"id": "w1:1", "summary": "GET /caf\xc3\xa9"}', "w1@s1:1"),
    (b'{"id": "w1:2"}', "w1@s1:2,w%402@s2:9"),
    (b'{"id": "w1:3"}', None),
    (b"", ""),
    (b'{"a":\n"two lines"}', "w1@s1:4"),       # not one line: sse_starlette's data lines
    (b'{"a": "cr"}\r', "w1@s1:5"),
])
def test_an_entry_event_is_the_sse_sse_starlette_writes(data: bytes, id: str | None) -> None:
    """An entry's SSE is joined from its bytes, and is what sse_starlette encodes for it."""
    expected = ServerSentEvent(data=data.decode(), event="entry", id=id).encode()
    assert entry_event(data, id).sse == expected


def test_the_hubs_own_events_keep_their_json_spacing() -> None:
    assert lost_event(3).sse == b'event: lost\r\ndata: {"lost": 3}\r\n\r\n'
