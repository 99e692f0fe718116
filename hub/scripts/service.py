"""Scripting in the hub, put together: the store, the scripting thread, the scripts' console,
the actions, and the hub task that feeds new entries to onItemCaptured.

The routes (routes.py) call this; hub/services.py creates one per hub and the app runs its lifespan.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from hub.events import Lost
from hub.scripts.actions import SNAPSHOT_LIMIT, Actions
from hub.scripts.engines import ScriptEngines
from hub.scripts.logs import ScriptLogs
from hub.scripts.model import MAX_CODE_BYTES, StoredScript, name_problem
from hub.scripts.runtime import Limits, ScriptRuntime
from hub.scripts.store import ConfigMapScriptStore, FileScriptStore, MemoryScriptStore, ScriptStore, StoreError
from hub.scripts.syntax import SyntaxProblem, locate
from hub.stream import Feed
from hub.workers import WorkerPool

if TYPE_CHECKING:
    from hub.kube.cluster import KubeSettings     # the kubernetes client only in cluster mode

log = logging.getLogger("shark.hub.scripts")


@dataclass
class ScriptSettings:
    env: dict[str, str] = field(default_factory=dict)          # `env` in every script
    allowed_hosts: list[str] = field(default_factory=list)     # for vendor.webhook / vendor.slack
    time_limit_s: float = 1.0                                  # CPU seconds per hook call or job run
    memory_limit: int = 64 * 1024 * 1024                       # bytes per script
    max_failures: int = 5                                      # failures within the window that disable
    max_scripts: int = 16                                      # scripts at once: memory_limit x 16 = 1 GiB at most
    snapshot_limit: int = SNAPSHOT_LIMIT                       # bytes all pcap.snapshot() files may take
    failure_window_s: float = 60.0
    outbound_timeout_s: float = 10.0
    store: ScriptStore | None = None     # None: <state_dir>/scripts, or memory without a state dir
    outbound_transport: httpx.AsyncBaseTransport | None = None  # tests inject faults here


class ScriptNotFound(LookupError):
    pass


class ScriptConflict(Exception):
    pass


class ScriptRejected(ValueError):
    """The script cannot be taken: `field` names what is wrong; a syntax error has its place."""

    def __init__(self, field_name: str, message: str, syntax: SyntaxProblem | None = None) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.syntax = syntax


def script_store(settings: ScriptSettings, state_dir: Path | None, kube: KubeSettings | None) -> ScriptStore:
    """Where scripts are kept: the settings' store, else a ConfigMap in a cluster (the pod's files
    do not outlive it), else files in the state directory, else memory."""
    if settings.store is not None:
        return settings.store
    if kube is not None and kube.api_client is not None:
        return ConfigMapScriptStore(kube.api_client, kube.resolved_namespace())
    if state_dir is not None:
        return FileScriptStore(state_dir / "scripts")
    return MemoryScriptStore()


class Scripting:
    def __init__(self, settings: ScriptSettings, pool: WorkerPool, feed: Feed, state_dir: Path | None,
                 store: ScriptStore) -> None:
        self.feed = feed
        self.settings = settings
        self.limits = Limits(settings.time_limit_s, settings.memory_limit)
        self.store = store
        self.logs = ScriptLogs()
        self.actions = Actions(pool, self.logs, settings.allowed_hosts,
                               state_dir / "snapshots" if state_dir is not None else None,
                               self._disabled_by_engine, settings.outbound_transport, settings.outbound_timeout_s,
                               on_tagged=feed.announce_tags, snapshot_limit=settings.snapshot_limit)
        self.engine = ScriptEngines(self.limits, dict(settings.env), self.actions.dispatch,
                                    max_failures=settings.max_failures, failure_window_s=settings.failure_window_s)
        self.scripts: dict[str, StoredScript] = {}
        self._feed_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = asyncio.Lock()      # one change to the set of scripts at a time
        self.feed_lost = 0

    # -- life -------------------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        self.engine.start(asyncio.get_running_loop())
        await self.actions.start()
        try:
            stored = await self.store.load_all()
        except StoreError as error:
            log.error("scripts: cannot read the stored scripts: %s", error)
            stored = []
        for script in stored:
            self.scripts[script.name] = script
            await self.engine.load(script.name, script.code, script.enabled, script.disabled_reason)
        if stored:
            log.info("scripts: %d loaded from %s", len(stored), self.store.description)
        self._sync_feed()

    async def stop(self) -> None:
        if self._feed_task is not None:
            self._feed_task.cancel()
            await asyncio.gather(self._feed_task, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.engine.stop)
        await self.actions.close()

    # -- onItemCaptured: the hub's own client of the feed ---------------------------------------
    def _sync_feed(self) -> None:
        """Follow the feed while some running script has onItemCaptured, and only then."""
        wanted = self.engine.wants("onItemCaptured")
        if wanted and self._feed_task is None:
            self._feed_task = asyncio.create_task(self._follow_feed(), name="hub-scripts-feed")
        elif not wanted and self._feed_task is not None:
            self._feed_task.cancel()
            self._feed_task = None

    async def _follow_feed(self) -> None:
        while True:
            try:
                async for event in self.feed.events(None, None):
                    if isinstance(event.data, Lost):
                        self.feed_lost += event.data.lost or 0
                    elif event.kind == "entry" and isinstance(event.data, bytes):
                        self.engine.captured(event.data.decode())
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - scripts must not lose the feed for good over one bug
                log.exception("scripts: following the feed failed; again in 1s")
            await asyncio.sleep(1.0)

    # -- onItemQueried, hub actions, jobs -------------------------------------------------------
    def wants_queried(self) -> bool:
        """Whether an enabled script has an onItemQueried hook."""
        return self.engine.wants("onItemQueried")

    async def on_queried(self, entries: list[dict[str, Any]],
                         spent: dict[str, float] | None = None) -> list[dict[str, Any]]:
        """onItemQueried over `entries`; `spent` carries each script's time over the batches
        of one answer (its time limit holds for the answer, not for each batch)."""
        if not entries or not self.engine.wants("onItemQueried"):
            return entries
        texts = await self.engine.queried([json.dumps(entry) for entry in entries], spent)
        return [json.loads(text) for text in texts]

    def hub_action(self, action: str, data: Any) -> None:
        self.engine.hub_action(action, json.dumps(data))

    async def run_job(self, name: str, job: str) -> str | None:
        """Run a job now; its failure as text, or None."""
        try:
            failure = await self.engine.run_job(name, job)
        except KeyError:
            raise ScriptNotFound(name) from None
        return failure.describe(self.limits) if failure is not None else None

    # -- managing scripts -----------------------------------------------------------------------
    def view(self, name: str, code: bool = True) -> dict[str, Any]:
        script = self.scripts.get(name)
        if script is None:
            raise ScriptNotFound(name)
        state = self.engine.states.get(name)
        status = state.view() if state is not None else {"state": "loading"}
        if script.enabled is False and script.disabled_reason and not status.get("disabled_reason"):
            status["disabled_reason"] = script.disabled_reason
        body: dict[str, Any] = {"name": name, **status, "created": script.created, "updated": script.updated}
        if code:
            body["code"] = script.code
        return body

    def views(self) -> list[dict[str, Any]]:
        return [self.view(name, code=False) for name in sorted(self.scripts)]

    def overview(self) -> dict[str, Any]:
        return {
            "scripts": self.views(),
            "store": self.store.description,
            "limits": {"time_s": self.limits.time_s, "memory_bytes": self.limits.memory_bytes,
                       "max_failures": self.settings.max_failures, "failure_window_s": self.settings.failure_window_s,
                       "max_scripts": self.settings.max_scripts},
            "env": sorted(self.settings.env),
            "allowed_hosts": self.actions.policy.patterns,
            "feed": {"following": self._feed_task is not None, "entries": self.engine.captured_seen,
                     "dropped": self.engine.captured_dropped, "lost": self.feed_lost,
                     "backlog": self.engine.backlog()},
            "outbound": dataclasses.asdict(self.actions.outbound),
            "tags": {"written": self.actions.tags_written, "failed": self.actions.tags_failed},
            "hub_actions": {"dropped": self.engine.actions_dropped},
        }

    def metrics(self) -> str:
        """Prometheus lines: the scripts and their snapshots against their limits."""
        rows = [("shark_hub_scripts", "gauge", "Scripts the hub holds (running or not).", len(self.scripts)),
                ("shark_hub_scripts_limit", "gauge", "Scripts the hub takes at once (--script-max-count).",
                 self.settings.max_scripts),
                ("shark_hub_script_snapshot_bytes", "gauge", "Bytes the scripts' pcap.snapshot() files take.",
                 self.actions.snapshot_bytes()),
                ("shark_hub_script_snapshot_limit_bytes", "gauge",
                 "Bytes the scripts' snapshots may take (--script-snapshot-limit).", self.settings.snapshot_limit)]
        return "".join(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n{name} {value}\n"
                       for name, kind, help_, value in rows)

    async def put(self, name: str, code: str | None, enabled: bool | None, *, create_only: bool = False) -> bool:
        """Create or update a script; True when it was created. Raises ScriptRejected
        (nothing changed), ScriptConflict (create_only and it exists), StoreError."""
        problem = name_problem(name)
        if problem is not None:
            raise ScriptRejected("name", problem)
        if code is not None:
            if not isinstance(code, str):
                raise ScriptRejected("code", "expected the script's JavaScript as a string")
            if not code.strip():
                raise ScriptRejected("code", "the script is empty")
            if len(code.encode("utf-8")) > MAX_CODE_BYTES:
                raise ScriptRejected("code", f"the script is larger than {MAX_CODE_BYTES // 1024} KiB")
        if enabled is not None and not isinstance(enabled, bool):
            raise ScriptRejected("enabled", "expected true or false")
        async with self._lock:
            existing = self.scripts.get(name)
            if existing is not None and create_only:
                raise ScriptConflict(name)
            if existing is None and code is None:
                raise ScriptRejected("code", "missing; a new script needs its code")
            if existing is None and len(self.scripts) >= self.settings.max_scripts:
                raise ScriptRejected("name", f"the hub runs {len(self.scripts)} scripts already, the most it takes "
                                             f"(--script-max-count {self.settings.max_scripts}: at most "
                                             f"{self.settings.max_scripts} x the memory limit); delete one first")
            new_code = code if code is not None else existing.code  # type: ignore[union-attr]
            new_enabled = enabled if enabled is not None else (existing.enabled if existing else True)
            if new_enabled:
                result = await self.engine.load(name, new_code, True, replace=False)
                if result.failure is not None:
                    raise self._rejection(new_code, result.failure)
            else:
                failure = await asyncio.to_thread(self._check, name, new_code)
                if failure is not None:
                    raise self._rejection(new_code, failure)
                await self.engine.load(name, new_code, False)
            now = round(time.time(), 3)
            script = StoredScript(name=name, code=new_code, enabled=new_enabled, disabled_reason=None,
                                  created=existing.created if existing else now, updated=now)
            await self.store.put(script)
            self.scripts[name] = script
            if existing is None:
                self.logs.add(name, "info", "created", "hub")
            self._sync_feed()
            return existing is None

    def _check(self, name: str, code: str) -> Any:
        """Load in a context of its own (thrown away) to find what is wrong with a script
        that is to be stored disabled."""
        return ScriptRuntime(name, code, dict(self.settings.env), self.limits).load().failure

    def _rejection(self, code: str, failure: Any) -> ScriptRejected:
        if failure.kind == "syntax" and failure.line is not None:
            problem = locate(code, failure.message, failure.line)
            return ScriptRejected("code", str(problem), problem)
        return ScriptRejected("code", f"the script failed when it was loaded: {failure.describe(self.limits)}")

    async def delete(self, name: str) -> None:
        async with self._lock:
            if name not in self.scripts:
                raise ScriptNotFound(name)
            await self.engine.unload(name)
            await self.store.delete(name)
            del self.scripts[name]
            self.logs.add(name, "info", "deleted", "hub")
            self._sync_feed()

    def _disabled_by_engine(self, name: str, reason: str) -> None:
        """The scripting thread disabled a script: remember it in the store too."""
        script = self.scripts.get(name)
        self._sync_feed()
        if script is None:
            return
        script = msgspec.structs.replace(script, enabled=False, disabled_reason=reason, updated=round(time.time(), 3))
        self.scripts[name] = script

        async def save() -> None:
            try:
                await self.store.put(script)
            except StoreError as error:
                self.logs.add(name, "error", f"could not store that it was disabled: {error}", "hub")
        task = asyncio.create_task(save())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
