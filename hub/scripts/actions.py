"""What the helpers asked for, carried out on the event loop: tags written to the owning
workers in batches, webhooks and Slack messages sent with httpx to allowed hosts only, pcap
snapshots written under the state dir. Nothing here waits on the feed or the scripting
thread; every failure goes to the log of the script that asked.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from hub.scripts.logs import ScriptLogs
from hub.workers import WorkerError, WorkerPool, describe
from shark.model import TagChange, TagChanges

log = logging.getLogger("shark.hub.scripts")

TAG_FLUSH_S = 0.2
TAG_BATCH = 500                  # changes per request to one worker
OUTBOUND_CONCURRENCY = 8
OUTBOUND_PENDING = 500           # webhooks/Slack messages waiting; more are dropped and logged
SNAPSHOT_CONCURRENCY = 1        # one at a time: each one's budget is what the others left
SNAPSHOT_LIMIT = 200 * 1000 * 1000   # bytes all scripts' snapshots may take (--script-snapshot-limit)
MAX_SNAPSHOTS = 100              # files kept; more are refused until some are deleted


class _OverBudget(Exception):
    pass


class HostPolicy:
    """Outbound hosts scripts may reach: none unless configured. A pattern is a host name or
    address ("hooks.slack.com", "127.0.0.1"), optionally with a port ("127.0.0.1:8080"), and
    may use shell wildcards ("*.example.com")."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = [p.strip().lower() for p in patterns if p.strip()]

    def allows(self, url: str) -> str | None:
        """None when `url` may be reached, else why not."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as error:
            return f"not a valid URL ({error})"
        if parsed.scheme not in ("http", "https") or not parsed.host:
            return "not an http:// or https:// URL"
        host = parsed.host.lower()
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        for pattern in self.patterns:
            if fnmatch.fnmatchcase(host, pattern) or fnmatch.fnmatchcase(f"{host}:{port}", pattern):
                return None
        allowed = ", ".join(self.patterns) or "none"
        return (f"host {host} is not allowed (allowed: {allowed}; the hub's --script-allow-host "
                "option adds one)")


@dataclass
class OutboundCounters:
    sent: int = 0
    failed: int = 0
    refused: int = 0
    dropped: int = 0


@dataclass
class _Change:
    tags: dict[str, bool] = field(default_factory=dict)    # tag -> True (add) / False (remove)
    scripts: set[str] = field(default_factory=set)


class Actions:
    def __init__(self, pool: WorkerPool, logs: ScriptLogs, allowed_hosts: list[str],
                 snapshots_dir: Path | None, on_disabled: Callable[[str, str], None],
                 transport: httpx.AsyncBaseTransport | None = None, timeout: float = 10.0,
                 on_tagged: Callable[[str, list[str]], None] | None = None,
                 snapshot_limit: int = SNAPSHOT_LIMIT) -> None:
        self.pool = pool
        self.snapshot_limit = snapshot_limit
        self.on_tagged = on_tagged     # (entry id, its tags now): live clients are told
        self.logs = logs
        self.policy = HostPolicy(allowed_hosts)
        self.snapshots_dir = snapshots_dir
        self.on_disabled = on_disabled
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
                                      follow_redirects=False, transport=transport)
        self.outbound = OutboundCounters()
        self.tags_written = 0
        self.tags_failed = 0
        self._pending_tags: dict[str, dict[str, _Change]] = {}   # node -> entry id -> change
        self._tag_ready = asyncio.Event()
        self._outbound_slots = asyncio.Semaphore(OUTBOUND_CONCURRENCY)
        self._outbound_pending = 0
        self._snapshot_slots = asyncio.Semaphore(SNAPSHOT_CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()
        self._tag_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._tag_task = asyncio.create_task(self._write_tags(), name="hub-scripts-tags")

    async def close(self) -> None:
        if self._tag_task is not None:
            self._tag_task.cancel()
            await asyncio.gather(self._tag_task, return_exceptions=True)
        await self._flush_tags()   # what scripts tagged last is not lost on a clean stop
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.aclose()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the batch from the scripting thread ------------------------------------------------
    def dispatch(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        for script, action in batch:
            kind = action.get("t")
            try:
                if kind == "log":
                    self.logs.add(script, action.get("level", "info"), str(action.get("text", "")),
                                  action.get("source", "console"))
                elif kind == "tag":
                    self._tag(script, action)
                elif kind == "webhook":
                    self._send(script, "vendor.webhook", action["method"], action["url"], action.get("body", ""),
                               action.get("type") or "")
                elif kind == "slack":
                    self._send(script, "vendor.slack", "POST", action["url"], None, "", {"text": action["text"]})
                elif kind == "snapshot":
                    self._snapshot(script, str(action.get("query", "")), str(action["name"]))
                elif kind == "disabled":
                    self.on_disabled(script, str(action.get("reason")))
                else:
                    self.logs.add(script, "error", f"unknown helper action {kind!r} (ignored)", "hub")
            except (KeyError, TypeError) as error:   # a hand-made action that lacks a field
                self.logs.add(script, "error", f"a {kind} action was malformed ({error}); ignored", "hub")

    # -- tags -------------------------------------------------------------------------------
    def _tag(self, script: str, action: dict[str, Any]) -> None:
        entry_id = str(action["id"])
        node, _, _ = entry_id.rpartition(":")
        change = self._pending_tags.setdefault(node, {}).setdefault(entry_id, _Change())
        for tag in action.get("remove") or []:
            change.tags[str(tag)] = False
        for tag in action.get("add") or []:
            change.tags[str(tag)] = True
        change.scripts.add(script)
        self._tag_ready.set()

    async def _write_tags(self) -> None:
        while True:
            await self._tag_ready.wait()
            await asyncio.sleep(TAG_FLUSH_S)   # gather what comes in meanwhile into one batch
            self._tag_ready.clear()
            await self._flush_tags()

    async def _flush_tags(self) -> None:
        pending, self._pending_tags = self._pending_tags, {}
        await asyncio.gather(*(self._write_node(node, changes) for node, changes in pending.items()))

    async def _write_node(self, node: str, changes: dict[str, _Change]) -> None:
        items = list(changes.items())
        client = await self.pool.owner(node)
        if client is None:
            self._tag_failure(items, f"no worker named {node!r}")
            return
        for start in range(0, len(items), TAG_BATCH):
            chunk = items[start:start + TAG_BATCH]
            body = TagChanges([TagChange(entry_id, add=[t for t, on in change.tags.items() if on],
                                         remove=[t for t, on in change.tags.items() if not on])
                               for entry_id, change in chunk])
            try:
                response = await client.http.post("/tags", content=msgspec.json.encode(body),
                                                  headers={"Content-Type": "application/json"})
            except httpx.HTTPError as error:
                self._tag_failure(chunk, f"worker {node}: {describe(error)}")
                continue
            if response.status_code >= 400:
                self._tag_failure(chunk, f"worker {node} answered {response.status_code}: {response.text[:200]}")
                continue
            answer = response.json()
            missing = set(answer.get("missing") or [])
            if self.on_tagged is not None:
                for entry_id, tags in (answer.get("tags") or {}).items():
                    self.on_tagged(entry_id, tags)
            self.tags_written += len(chunk) - len(missing)
            if missing:
                self._tag_failure([item for item in chunk if item[0] in missing],
                                  f"worker {node} no longer has them (evicted)")

    def _tag_failure(self, items: list[tuple[str, _Change]], why: str) -> None:
        self.tags_failed += len(items)
        by_script: dict[str, list[str]] = {}
        for entry_id, change in items:
            for script in change.scripts:
                by_script.setdefault(script, []).append(entry_id)
        for script, ids in by_script.items():
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            self.logs.add(script, "error", f"tags of {len(ids)} entries were not written ({shown}): {why}", "hub")

    # -- webhooks and Slack ---------------------------------------------------------------
    def _send(self, script: str, helper: str, method: str, url: str, body: str | None, content_type: str,
              json_body: dict[str, Any] | None = None) -> None:
        refused = self.policy.allows(url)
        if refused is not None:
            self.outbound.refused += 1
            self.logs.add(script, "error", f"{helper} {method} {url}: refused: {refused}", "hub")
            return
        if self._outbound_pending >= OUTBOUND_PENDING:
            self.outbound.dropped += 1
            self.logs.add(script, "error", f"{helper} {method} {url}: dropped: {OUTBOUND_PENDING} requests "
                                           "are already waiting", "hub")
            return
        self._outbound_pending += 1
        self._spawn(self._deliver(script, helper, method, url, body, content_type, json_body))

    async def _deliver(self, script: str, helper: str, method: str, url: str, body: str | None,
                       content_type: str, json_body: dict[str, Any] | None) -> None:
        try:
            async with self._outbound_slots:
                headers = {"Content-Type": content_type} if content_type else {}
                try:
                    if json_body is not None:
                        response = await self.http.request(method, url, json=json_body)
                    else:
                        response = await self.http.request(method, url, content=(body or "").encode(),
                                                           headers=headers)
                except httpx.HTTPError as error:
                    self.outbound.failed += 1
                    self.logs.add(script, "error", f"{helper} {method} {url}: {describe(error)}", "hub")
                    return
                if response.status_code >= 400:
                    self.outbound.failed += 1
                    self.logs.add(script, "error", f"{helper} {method} {url}: HTTP {response.status_code}: "
                                                   f"{response.text[:200]}", "hub")
                    return
                self.outbound.sent += 1
        finally:
            self._outbound_pending -= 1

    # -- pcap snapshots ---------------------------------------------------------------------
    def snapshots(self) -> list[dict[str, Any]]:
        if self.snapshots_dir is None or not self.snapshots_dir.is_dir():
            return []
        rows = []
        for path in sorted(self.snapshots_dir.glob("*.pcap")):
            stat = path.stat()
            rows.append({"name": path.name, "bytes": stat.st_size, "created": round(stat.st_mtime, 3)})
        return rows

    def snapshot_bytes(self) -> int:
        return sum(row["bytes"] for row in self.snapshots())

    def _snapshot(self, script: str, query: str, name: str) -> None:
        if self.snapshots_dir is None:
            self.logs.add(script, "error", f"pcap.snapshot: {name} not written: the hub keeps no files "
                                           "(start it with --state-dir)", "hub")
            return
        if len(self.snapshots()) >= MAX_SNAPSHOTS:
            self.logs.add(script, "error", f"pcap.snapshot: {name} not written: {MAX_SNAPSHOTS} snapshots "
                                           "are kept already; delete some (DELETE /api/v1/scripts/snapshots/NAME)",
                          "hub")
            return
        self._spawn(self._write_snapshot(script, query, name))

    async def _write_snapshot(self, script: str, query: str, name: str) -> None:
        assert self.snapshots_dir is not None
        target = self.snapshots_dir / name
        part = target.with_name(f".{name}.part")
        async with self._snapshot_slots:
            try:
                answer = await self.pool.pcap({"q": query} if query else {})
            except (WorkerError, httpx.HTTPError) as error:
                self.logs.add(script, "error", f"pcap.snapshot: {name} not written: {describe(error)}", "hub")
                return
            failed = [part.failure for part in answer.workers if not part.ok]
            if len(failed) == len(answer.workers):
                self.logs.add(script, "error", f"pcap.snapshot: {name} not written: no worker answered "
                                               f"({'; '.join(failed)})", "hub")
                return   # the pool closed what it opened: no worker stream is left open
            size = 0
            budget = self.snapshot_limit - self.snapshot_bytes()
            try:
                self.snapshots_dir.mkdir(parents=True, exist_ok=True)
                with open(part, "wb") as file:
                    async with aclosing(answer.chunks()) as chunks:   # closed early too: workers' streams end
                        async for chunk in chunks:
                            size += len(chunk)
                            if size > budget:
                                raise _OverBudget(budget)
                            file.write(chunk)
                os.replace(part, target)
            except _OverBudget:
                part.unlink(missing_ok=True)
                self.logs.add(script, "error", f"pcap.snapshot: {name} not written: it would pass the "
                                               f"{self.snapshot_limit:,}-byte limit of scripts' snapshots "
                                               f"({max(budget, 0):,} bytes left; --script-snapshot-limit); "
                                               "delete some (DELETE /api/v1/scripts/snapshots/NAME)", "hub")
                return
            except OSError as error:
                part.unlink(missing_ok=True)
                self.logs.add(script, "error", f"pcap.snapshot: {name} not written: {error.strerror or error}", "hub")
                return
            partial = f"; partial, no answer from {'; '.join(failed)}" if failed else ""
            self.logs.add(script, "info", f"pcap.snapshot: wrote {name} ({size} bytes{partial})", "hub")
