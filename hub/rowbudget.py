"""Rows the hub's whole-answer requests hold at once, across requests (--max-held-rows).

One answer's rows are bounded by --max-query-rows, but not how many such answers run at once: a
/har at limit=100000 keeps its ~85 MB of lines until the last one is written, so a few at once
passed the hub pod's 512Mi. A request takes its `limit` from this budget before it reads from
the workers, waiting at most `wait_s` (first come, first served) and then refused with a 503
naming the option; what it took is given back when its answer has been sent, or the client
left, or it failed before a byte was written. That last guarantee is the ASGI wrapper
`releasing`: it gives back whatever the request took once the app is done with it, whether
the body started or not (a Stream's generator that never ran never runs its `finally`).
"""

from __future__ import annotations

import asyncio
from collections import deque

from litestar.types import ASGIApp, Receive, Scope, Send

from hub.errors import Unavailable

DEFAULT_MAX_HELD_ROWS = 200_000   # two /har answers at limit=100000 (~170 MB of lines) at once
WAIT_S = 5.0                      # a request waits this long for rows before a 503
RETRY_AFTER_S = 5
SCOPE_KEY = "shark.held_rows"     # the request's holds, in its ASGI scope, given back by `releasing`


class Held:
    """Rows one request took; given back once (later calls do nothing)."""

    def __init__(self, budget: RowBudget, rows: int) -> None:
        self.budget = budget
        self.rows = rows

    def release(self) -> None:
        if self.rows:
            rows, self.rows = self.rows, 0
            self.budget._give_back(rows)


class RowBudget:
    def __init__(self, limit: int = DEFAULT_MAX_HELD_ROWS, wait_s: float = WAIT_S) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.held = 0           # rows taken and not given back (for /metrics)
        self.refused = 0        # requests turned away after waiting (for /metrics)
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def take(self, rows: int, scope: Scope) -> Held:
        """Take `rows` (a request for more than the whole budget takes all of it), waiting
        behind earlier requests at most wait_s; the hold is given back when the request ends
        (`releasing`), or earlier by Held.release. Unavailable (503) when the wait is over."""
        holds: list[Held] | None = scope.get(SCOPE_KEY)
        if holds is None:
            raise RuntimeError("RowBudget.take outside `releasing`: the rows would never be given back")
        rows = max(1, min(rows, self.limit))
        if not self._waiting and self.held + rows <= self.limit:
            self.held += rows
        else:
            await self._wait(rows)
        held = Held(self, rows)
        holds.append(held)
        return held

    async def _wait(self, rows: int) -> None:
        waiter = (rows, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(self.wait_s):
                await asyncio.shield(waiter[1])
        except TimeoutError:
            if waiter[1].done():          # granted as the wait ran out: it is ours
                return
            self._drop(waiter)
            self.refused += 1
            raise Unavailable(f"the hub holds {self.held} rows for other answers, {self.limit} at most "
                              f"(--max-held-rows); this one needs {rows}: try again later or ask for fewer "
                              "(limit)", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        except asyncio.CancelledError:    # the client left while waiting
            if waiter[1].done():
                self._give_back(rows)
            else:
                self._drop(waiter)
            raise

    def _drop(self, waiter: tuple[int, asyncio.Future[None]]) -> None:
        self._waiting.remove(waiter)
        waiter[1].cancel()
        self._grant()                     # those behind it may fit now

    def _give_back(self, rows: int) -> None:
        self.held -= rows
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.held + self._waiting[0][0] <= self.limit:
            rows, future = self._waiting.popleft()
            self.held += rows
            future.set_result(None)

    def metrics(self) -> str:
        return "\n".join([
            "# HELP shark_hub_held_rows Rows the hub's whole answers (/har, opened snapshots) hold now.",
            "# TYPE shark_hub_held_rows gauge",
            f"shark_hub_held_rows {self.held}",
            "# HELP shark_hub_held_rows_limit Rows those answers may hold at once (--max-held-rows).",
            "# TYPE shark_hub_held_rows_limit gauge",
            f"shark_hub_held_rows_limit {self.limit}",
            "# HELP shark_hub_held_rows_refused_total Requests turned away: the rows they needed stayed taken.",
            "# TYPE shark_hub_held_rows_refused_total counter",
            f"shark_hub_held_rows_refused_total {self.refused}",
        ]) + "\n"


def releasing(app: ASGIApp) -> ASGIApp:
    """`app`, giving back the rows each HTTP request took once the app is done with it."""
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        holds: list[Held] = []
        scope[SCOPE_KEY] = holds  # type: ignore[literal-required]
        try:
            await app(scope, receive, send)
        finally:
            for held in holds:
                held.release()
    return wrapped
