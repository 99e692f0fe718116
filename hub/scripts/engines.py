"""One ScriptEngine (so one thread) per script, behind the interface of one engine.

A runaway call holds its thread until its time limit; with every script on one thread, every
other script's hooks waited behind it (up to max_failures x the time limit before it was
disabled). Here each script runs on its own thread: captured entries and hub actions are fanned
out to each script's own bounded queue, onItemQueried runs the scripts one after the other (each
one's output is the next one's input), and a script's load, jobs and status are its engine's.
quickjs releases the GIL while it runs, so the threads do run side by side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from hub.scripts.engine import Dispatch, LoadResult, ScriptEngine, ScriptState
from hub.scripts.runtime import Failure, Limits


class ScriptEngines:
    """Every public method may be called from the event loop, as ScriptEngine's."""

    def __init__(self, limits: Limits, env: dict[str, str], dispatch: Dispatch, *, max_failures: int = 5,
                 failure_window_s: float = 60.0) -> None:
        self._make: Callable[[], ScriptEngine] = lambda: ScriptEngine(
            limits, env, dispatch, max_failures=max_failures, failure_window_s=failure_window_s,
            relay_action=self.hub_action)
        self._engines: dict[str, ScriptEngine] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.captured_seen = 0            # entries offered to the scripts
        self._gone_dropped = 0            # drops counted by engines of scripts since deleted
        self._gone_actions_dropped = 0

    # -- life -------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def stop(self, timeout: float = 5.0) -> None:
        for engine in list(self._engines.values()):
            engine.stop(timeout)

    def _engine(self, name: str) -> ScriptEngine:
        engine = self._engines.get(name)
        if engine is None:
            assert self._loop is not None, "start() first"
            engine = self._engines[name] = self._make()
            engine.start(self._loop, thread_name=f"hub-script {name}")
        return engine

    async def _retire(self, name: str) -> None:
        engine = self._engines.pop(name, None)
        if engine is not None:
            self._gone_dropped += engine.captured_dropped
            self._gone_actions_dropped += engine.actions_dropped
            await asyncio.to_thread(engine.stop)

    # -- what the event loop asks -----------------------------------------------------------
    async def load(self, name: str, code: str, enabled: bool, disabled_reason: str | None = None,
                   *, replace: bool = True) -> LoadResult:
        new = name not in self._engines
        result = await self._engine(name).load(name, code, enabled, disabled_reason, replace=replace)
        if new and result.failure is not None and not replace:
            await self._retire(name)      # a create that failed leaves nothing running
        return result

    async def unload(self, name: str) -> None:
        if name in self._engines:
            await self._engines[name].unload(name)
            await self._retire(name)

    async def queried(self, entries: list[str], spent: dict[str, float] | None = None) -> list[str]:
        spent = {} if spent is None else spent
        for name in sorted(self._engines):
            engine = self._engines.get(name)
            if engine is not None and engine.wants("onItemQueried"):
                entries = await engine.queried(entries, spent)
        return entries

    async def run_job(self, name: str, job: str) -> Failure | None:
        engine = self._engines.get(name)
        if engine is None:
            raise KeyError(name)
        return await engine.run_job(name, job)

    def captured(self, entry_json: str) -> None:
        self.captured_seen += 1
        for engine in list(self._engines.values()):
            if engine.wants("onItemCaptured"):
                engine.captured(entry_json)

    def hub_action(self, action: str, data_json: str, depth: int = 0) -> None:
        """To every script (a hook's hub.action() comes back here, one level deeper)."""
        for engine in list(self._engines.values()):
            engine.hub_action(action, data_json, depth)

    # -- what the API reads -----------------------------------------------------------------
    @property
    def states(self) -> Mapping[str, ScriptState]:
        return {name: state for engine in list(self._engines.values()) for name, state in list(engine.states.items())}

    def wants(self, hook: str) -> bool:
        return any(engine.wants(hook) for engine in list(self._engines.values()))

    def backlog(self) -> int:
        """Entries waiting, in the script that has the most."""
        return max((engine.backlog() for engine in list(self._engines.values())), default=0)

    @property
    def captured_dropped(self) -> int:
        """Entries a script did not see because it fell behind (counted per script)."""
        return self._gone_dropped + sum(engine.captured_dropped for engine in list(self._engines.values()))

    @property
    def actions_dropped(self) -> int:
        return self._gone_actions_dropped + sum(engine.actions_dropped for engine in list(self._engines.values()))
