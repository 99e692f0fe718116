"""A scripting thread: owns its scripts' quickjs contexts (a context must stay on one thread),
runs the hooks and the cron jobs, keeps each script's status, and hands the actions the helpers
queued to the event loop in batches. The hub gives each script an engine of its own
(engines.py), so that one script's runaway call holds only its own thread.

Isolation: every call has a CPU time limit and every context a memory limit; a call that
fails is reported in the script's log and status and nothing else is affected; a memory
failure rebuilds the context; a script that fails `max_failures` times within
`failure_window_s` seconds is disabled with the reason (a window, not "in a row": a script that
fails on every 5xx entry still succeeds on the entries in between). Work comes in through two queues: control (API commands, onItemQueried,
hub actions: small and urgent) before captured entries (bounded: when scripts fall behind,
the oldest entries are dropped and counted, the feed is never held back).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from croniter import croniter

from hub.scripts.runtime import Failure, Limits, Outcome, ScriptRuntime

log = logging.getLogger("shark.hub.scripts")
T = TypeVar("T")

CAPTURED_QUEUE = 10_000
MAX_ACTION_DEPTH = 8          # hub.action() from onHubAction, and so on, at most this deep
FLUSH_EVERY_S = 0.05          # how often queued actions go to the event loop
ERROR_LINES_PER_S = 5         # per script; the rest are counted and said once


@dataclass
class Job:
    name: str
    cron: str
    schedule: croniter
    next_ts: float
    runs: int = 0
    failures: int = 0
    last_run: float | None = None
    last_error: str | None = None

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "cron": self.cron, "next_run": round(self.next_ts, 3), "runs": self.runs,
                "failures": self.failures, "last_run": self.last_run, "last_error": self.last_error}


@dataclass
class ScriptState:
    """One script's status, kept by the scripting thread and read by the API."""
    name: str
    enabled: bool
    disabled_reason: str | None = None
    loaded: bool = False
    hooks: frozenset[str] = frozenset()
    jobs: dict[str, Job] = field(default_factory=dict)
    calls: int = 0
    failures: int = 0
    failures_in_a_row: int = 0
    recent_failures: deque[float] = field(default_factory=deque)   # monotonic times, in the window
    restarts: int = 0             # contexts rebuilt after a memory failure
    last_error: dict[str, Any] | None = None
    busy_s: float = 0.0           # wall time spent in calls
    memory_bytes: int = 0
    dropped_actions: int = 0
    errors_this_second: int = 0
    error_second: int = 0
    errors_unsaid: int = 0

    def view(self) -> dict[str, Any]:
        state = "running" if self.enabled and self.loaded else ("disabled" if not self.enabled else "failed")
        return {
            "state": state, "enabled": self.enabled, "disabled_reason": self.disabled_reason,
            "hooks": sorted(self.hooks), "jobs": [job.view() for job in sorted(self.jobs.values(), key=lambda j: j.name)],
            "calls": self.calls, "failures": self.failures, "failures_in_a_row": self.failures_in_a_row,
            "restarts": self.restarts, "last_error": self.last_error,
            "avg_call_us": round(self.busy_s / self.calls * 1e6, 1) if self.calls else None,
            "memory_bytes": self.memory_bytes, "dropped_actions": self.dropped_actions,
        }


@dataclass
class LoadResult:
    failure: Failure | None
    hooks: frozenset[str]


Dispatch = Callable[[list[tuple[str, dict[str, Any]]]], None]


class ScriptEngine:
    """Runs on its own thread; every public method may be called from the event loop."""

    def __init__(self, limits: Limits, env: dict[str, str], dispatch: Dispatch, *, max_failures: int = 5,
                 failure_window_s: float = 60.0,
                 relay_action: Callable[[str, str, int], None] | None = None) -> None:
        self.limits = limits
        self.env = env
        self.max_failures = max_failures
        self.failure_window_s = failure_window_s
        self._dispatch = dispatch          # called on the event loop with [(script, action), ...]
        # where a hook's hub.action() goes: this engine's scripts, or every engine's (engines.py)
        self._relay_action = relay_action or self.hub_action
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runtimes: dict[str, ScriptRuntime] = {}
        self.states: dict[str, ScriptState] = {}
        self._control: deque[Callable[[], None]] = deque()
        self._captured: deque[str] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._outbox: list[tuple[str, dict[str, Any]]] = []
        self._last_flush = 0.0
        self.captured_dropped = 0          # entries dropped because the scripts fell behind
        self.captured_seen = 0
        self.actions_dropped = 0           # hub actions dropped (too deep, queue full)

    # -- life -----------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop, thread_name: str = "hub-scripts") -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._main, name=thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- what the event loop asks ---------------------------------------------------------
    async def _ask(self, work: Callable[[], T]) -> T:
        """Run `work` on the scripting thread before any captured entry; await its answer."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(work())
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                future.set_exception(error)
        with self._wake:
            self._control.append(run)
            self._wake.notify()
        return await asyncio.wrap_future(future)

    async def load(self, name: str, code: str, enabled: bool, disabled_reason: str | None = None,
                   *, replace: bool = True) -> LoadResult:
        """Load (or reload) a script. With replace=False a failed load leaves the running
        version in place (an API update that fails changes nothing)."""
        return await self._ask(lambda: self._load(name, code, enabled, disabled_reason, replace))

    async def unload(self, name: str) -> None:
        await self._ask(lambda: self._unload(name))

    async def queried(self, entries: list[str], spent: dict[str, float] | None = None) -> list[str]:
        """onItemQueried over every entry (JSON texts), each script's output the next one's input.
        `spent`: seconds each script has taken for this answer so far (an answer sent in batches
        passes the same dict each time)."""
        return await self._ask(lambda: self._queried(entries, {} if spent is None else spent))

    async def run_job(self, name: str, job: str) -> Failure | None:
        return await self._ask(lambda: self._run_job_now(name, job))

    def captured(self, entry_json: str) -> None:
        """A new entry for onItemCaptured; never blocks (the oldest is dropped when full)."""
        with self._wake:
            self.captured_seen += 1
            if len(self._captured) >= CAPTURED_QUEUE:
                self._captured.popleft()
                self.captured_dropped += 1
            self._captured.append(entry_json)
            self._wake.notify()

    def hub_action(self, action: str, data_json: str, depth: int = 0) -> None:
        with self._wake:
            self._control.append(lambda: self._hub_action(action, data_json, depth))
            self._wake.notify()

    def wants(self, hook: str) -> bool:
        return any(state.enabled and state.loaded and hook in state.hooks for state in list(self.states.values()))

    def backlog(self) -> int:
        return len(self._captured)

    # -- the thread -----------------------------------------------------------------------
    def _main(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._control and not self._captured:
                    self._wake.wait(self._until_next_job())
                    if self._due_jobs() or self._outbox:
                        break
                if self._stopping:
                    break
                control = self._control.popleft() if self._control else None
                entry = self._captured.popleft() if control is None and self._captured else None
            try:
                if control is not None:
                    control()
                elif entry is not None:
                    self._hook_all("onItemCaptured", f"[{entry}]")
                self._run_due_jobs()
            except Exception:  # noqa: BLE001 - the scripting thread must outlive any bug
                log.exception("scripting thread: unexpected error")
            self._flush(force=False)
        self._flush(force=True)

    def _until_next_job(self) -> float:
        due = [job.next_ts for state in self.states.values() if state.enabled and state.loaded
               for job in state.jobs.values()]
        wait = min(due) - time.time() if due else 1.0
        if self._outbox:
            wait = min(wait, FLUSH_EVERY_S)
        return max(0.0, min(wait, 1.0))

    def _due_jobs(self) -> bool:
        now = time.time()
        return any(job.next_ts <= now for state in self.states.values() if state.enabled and state.loaded
                   for job in state.jobs.values())

    def _flush(self, force: bool) -> None:
        now = time.monotonic()
        if not self._outbox or (not force and now - self._last_flush < FLUSH_EVERY_S and len(self._outbox) < 500):
            return
        batch, self._outbox = self._outbox, []
        self._last_flush = now
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._dispatch, batch)
            except RuntimeError:   # the loop closed under us: the hub is stopping
                pass

    def _say(self, name: str, level: str, text: str) -> None:
        """A line from the hub about a script, in that script's log."""
        self._outbox.append((name, {"t": "log", "level": level, "text": text, "source": "hub"}))

    # -- loading ----------------------------------------------------------------------------
    def _load(self, name: str, code: str, enabled: bool, disabled_reason: str | None, replace: bool) -> LoadResult:
        state = self.states.get(name)
        if not enabled:
            self._runtimes.pop(name, None)
            state = self.states[name] = ScriptState(name, False, disabled_reason)
            return LoadResult(None, frozenset())
        runtime = ScriptRuntime(name, code, self.env, self.limits)
        outcome = runtime.load()
        if outcome.failure is not None:
            if not replace:   # an update that fails changes nothing
                return LoadResult(outcome.failure, frozenset())
            self._runtimes.pop(name, None)
            state = self.states[name] = ScriptState(name, True, None)
            state.last_error = self._error_view("load", outcome.failure)
            self._say(name, "error", f"failed to load: {outcome.failure.describe(self.limits)}")
            return LoadResult(outcome.failure, frozenset())
        self._runtimes[name] = runtime
        fresh = ScriptState(name, True, None, loaded=True, hooks=runtime.hooks)
        fresh.memory_bytes = runtime.memory_used()
        self.states[name] = fresh
        self._apply(name, fresh, outcome.actions, depth=0)
        self._note_dropped(name, fresh, outcome)
        hooks = ", ".join(sorted(runtime.hooks)) or "no hooks"
        self._say(name, "info", f"loaded ({hooks}; {len(fresh.jobs)} jobs)")
        return LoadResult(None, runtime.hooks)

    def _unload(self, name: str) -> None:
        self._runtimes.pop(name, None)
        self.states.pop(name, None)

    # -- calls ------------------------------------------------------------------------------
    def _hook_all(self, hook: str, args_json: str, depth: int = 0) -> None:
        for name, runtime in list(self._runtimes.items()):
            state = self.states.get(name)
            if state is None or not state.enabled or hook not in runtime.hooks:
                continue
            started = time.perf_counter()
            outcome = runtime.call(hook, args_json)
            self._account(name, state, runtime, hook, outcome, time.perf_counter() - started, depth)

    def _hub_action(self, action: str, data_json: str, depth: int) -> None:
        self._hook_all("onHubAction", f"[{json.dumps(action)},{data_json}]", depth)

    def _queried(self, entries: list[str], spent: dict[str, float]) -> list[str]:
        names = sorted(name for name, runtime in self._runtimes.items()
                       if "onItemQueried" in runtime.hooks and self.states[name].enabled)
        # Each call keeps to the time limit, but a hook just under it (0.8 s) made every
        # /entries answer take 0.8 s x its limit, and the scripts after it waited as long: for
        # one answer a script's calls together get the time limit, the rest pass it unchanged.
        for name in names:
            spent.setdefault(name, 0.0)
        out = []
        for position, entry in enumerate(entries):
            for name in names:
                runtime, state = self._runtimes.get(name), self.states.get(name)
                if runtime is None or state is None or not state.enabled:
                    continue   # disabled by an earlier entry of this query
                if spent[name] >= self.limits.time_s:
                    continue   # its share of this answer is used up (counted below, once)
                started = time.perf_counter()
                outcome = runtime.query(entry)
                elapsed = time.perf_counter() - started
                spent[name] += elapsed
                if outcome.failure is None:
                    if outcome.result is not None:
                        entry = outcome.result     # this call itself succeeded: its result stands
                    if spent[name] >= self.limits.time_s and position + 1 < len(entries):
                        outcome.failure = Failure("error", (
                            f"took {spent[name]:.2f}s for {position + 1} of this answer's {len(entries)} entries, "
                            f"more than its time limit ({self.limits.time_s:g}s) for one answer; the other "
                            f"{len(entries) - position - 1} were answered without it"))
                self._account(name, state, runtime, "onItemQueried", outcome, elapsed, 0)
            out.append(entry)
        return out

    def _run_due_jobs(self) -> None:
        now = time.time()
        for name, state in list(self.states.items()):
            runtime = self._runtimes.get(name)
            if runtime is None or not state.enabled:
                continue
            for job in list(state.jobs.values()):
                if job.next_ts <= now and self._runtimes.get(name) is runtime:
                    # from now, not from the last run: runs missed while the thread was busy
                    # are skipped, not made up in a burst
                    job.schedule = croniter(job.cron, datetime.now().astimezone())
                    job.next_ts = job.schedule.get_next(float)
                    self._run_job(name, state, runtime, job)

    def _run_job(self, name: str, state: ScriptState, runtime: ScriptRuntime, job: Job) -> Failure | None:
        started = time.perf_counter()
        job.runs += 1
        job.last_run = time.time()
        outcome = runtime.job(job.name)
        if outcome.failure is not None:
            job.failures += 1
            job.last_error = outcome.failure.describe(self.limits)
        self._account(name, state, runtime, f"job {job.name!r}", outcome, time.perf_counter() - started, 0)
        return outcome.failure

    def _run_job_now(self, name: str, job_name: str) -> Failure | None:
        state, runtime = self.states.get(name), self._runtimes.get(name)
        if state is None or runtime is None or not state.enabled:
            raise KeyError(name)
        job = state.jobs.get(job_name)
        if job is None:
            raise LookupError(job_name)
        return self._run_job(name, state, runtime, job)

    # -- accounting -------------------------------------------------------------------------
    def _account(self, name: str, state: ScriptState, runtime: ScriptRuntime, what: str,
                 outcome: Outcome, elapsed: float, depth: int) -> None:
        state.calls += 1
        state.busy_s += elapsed
        if outcome.recreated:
            state.restarts += 1
            state.jobs.clear()
            state.hooks = runtime.hooks if runtime.loaded else frozenset()
            state.loaded = runtime.loaded
        self._apply(name, state, outcome.actions, depth)
        self._note_dropped(name, state, outcome)
        if state.calls % 1000 == 1 or outcome.recreated:
            state.memory_bytes = runtime.memory_used()
        if outcome.failure is None:
            state.failures_in_a_row = 0
            return
        failure = outcome.failure
        state.failures += 1
        state.failures_in_a_row += 1
        now = time.monotonic()
        state.recent_failures.append(now)
        while state.recent_failures and state.recent_failures[0] < now - self.failure_window_s:
            state.recent_failures.popleft()
        state.last_error = self._error_view(what, failure)
        text = f"{what}: {failure.describe(self.limits)}"
        if outcome.recreated:
            text += ("; its context was created anew (its variables and jobs were reset)" if runtime.loaded
                     else "; it could not be loaded again")
        self._error_line(name, state, text)
        if not runtime.loaded or len(state.recent_failures) >= self.max_failures:
            reason = (f"failed {len(state.recent_failures)} times within {self.failure_window_s:g}s; the last: {text}"
                      if runtime.loaded else f"could not be loaded again after {text}")
            self._disable(name, reason)

    def _error_view(self, what: str, failure: Failure) -> dict[str, Any]:
        return {"ts": round(time.time(), 3), "in": what, "kind": failure.kind,
                "message": failure.describe(self.limits)}

    def _error_line(self, name: str, state: ScriptState, text: str) -> None:
        second = int(time.monotonic())
        if second != state.error_second:
            state.error_second, state.errors_this_second = second, 0
        state.errors_this_second += 1
        if state.errors_this_second > ERROR_LINES_PER_S:
            state.errors_unsaid += 1
            return
        if state.errors_unsaid:
            text += f" ({state.errors_unsaid} more errors were not logged)"
            state.errors_unsaid = 0
        self._say(name, "error", text)

    def _disable(self, name: str, reason: str) -> None:
        self._runtimes.pop(name, None)
        old = self.states.get(name)
        state = self.states[name] = ScriptState(name, False, reason)
        if old is not None:
            state.calls, state.failures, state.last_error = old.calls, old.failures, old.last_error
            state.restarts, state.busy_s = old.restarts, old.busy_s
            state.failures_in_a_row = old.failures_in_a_row
        self._say(name, "error", f"disabled: {reason}")
        self._outbox.append((name, {"t": "disabled", "reason": reason}))

    def _note_dropped(self, name: str, state: ScriptState, outcome: Outcome) -> None:
        if outcome.dropped:
            state.dropped_actions += outcome.dropped
            self._error_line(name, state, f"{outcome.dropped} helper calls were dropped: at most 1000 per call")

    def _apply(self, name: str, state: ScriptState, actions: list[dict[str, Any]], depth: int) -> None:
        """Job and hub actions stay on this thread; the rest go to the event loop."""
        runtime = self._runtimes.get(name)
        for action in actions:
            kind = action.get("t")
            if kind == "job":
                if action.get("op") == "schedule":
                    self._schedule(name, state, runtime, str(action.get("name")), str(action.get("cron")))
                else:
                    state.jobs.pop(str(action.get("name")), None)
            elif kind == "action":
                if depth + 1 > MAX_ACTION_DEPTH:
                    self.actions_dropped += 1
                    self._error_line(name, state, f"hub.action({action.get('action')!r}): dropped: actions "
                                                  f"triggered one another more than {MAX_ACTION_DEPTH} levels deep")
                    continue
                self._relay_action(str(action.get("action")), str(action.get("data")), depth + 1)
            else:
                self._outbox.append((name, action))

    def _schedule(self, name: str, state: ScriptState, runtime: ScriptRuntime | None, job: str, cron: str) -> None:
        try:
            schedule = croniter(cron, datetime.now().astimezone())
        except (ValueError, KeyError) as error:
            self._error_line(name, state, f"jobs.schedule({job!r}): cron {cron!r}: {error}; the job was not scheduled")
            if runtime is not None and runtime.loaded:
                runtime.unschedule(job)
            return
        state.jobs[job] = Job(job, cron, schedule, schedule.get_next(float))
