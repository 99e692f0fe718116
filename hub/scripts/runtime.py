"""One script's quickjs context: load it, call its hooks and jobs, classify what went wrong.

Measured facts this follows (FACTS.md): a context may only ever be used by one thread (the
scripting thread owns every ScriptRuntime); dicts do not cross into JS, so everything goes in
and out as JSON text; JS cannot call into Python while a time limit is set, so the helpers
(prelude.js) queue actions that are drained after each call; a runaway loop is stopped by the
time limit and the context stays usable; a memory-limit failure can poison every later call
(a global holding the memory), so the context is thrown away and the script loaded afresh.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import quickjs

from hub.scripts import wire
from shark import kfl

HERE = Path(__file__).resolve().parent
# re2.js first: kfl.js runs its regexes with it
KFL_JS = "\n".join((HERE / name).read_text(encoding="utf-8") for name in ("re2.js", "kfl.js"))
PRELUDE_JS = (HERE / "prelude.js").read_text(encoding="utf-8")
HOOKS = ("onItemCaptured", "onItemQueried", "onHubAction")   # what the helpers may say a script defines
FailureKind = Literal["error", "timeout", "memory", "stack", "syntax"]

_SYNTAX_LINE = re.compile(r"^\s*at <input>:(\d+)\s*$", re.M)


@dataclass(frozen=True)
class Limits:
    time_s: float = 1.0                 # CPU seconds per call (quickjs measures with clock())
    memory_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str
    line: int | None = None             # for syntax errors, where quickjs stopped

    def describe(self, limits: Limits) -> str:
        if self.kind == "timeout":
            return f"stopped: ran longer than its time limit ({limits.time_s:g}s of CPU)"
        if self.kind == "memory":
            return f"stopped: needed more than its memory limit ({limits.memory_bytes // (1024 * 1024)} MiB)"
        if self.kind == "stack":
            return "stopped: stack overflow (too deep a recursion)"
        return self.message


@dataclass
class Outcome:
    """What one call did: the queued actions (carried out even when the call failed after
    queueing them), how many were dropped for being too many, the hook's result (onItemQueried),
    and the failure if any. `recreated`: the context was rebuilt (its state is gone)."""
    actions: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    result: str | None = None
    failure: Failure | None = None
    recreated: bool = False


def _kfl_config() -> dict[str, Any]:
    from shark.kfl.aliases import ABSENT, ALIASES, FUNCTIONS, PROTOCOL_ALIASES
    from shark.kfl.compiler import ENDPOINT_FIELDS
    return {"fields": list(kfl.FIELDS), "protocols": list(kfl.PROTOCOLS), "helpers": dict(kfl.HELPERS),
            "aliases": list(ALIASES), "protocol_aliases": dict(PROTOCOL_ALIASES), "functions": dict(FUNCTIONS),
            "endpoint_fields": list(ENDPOINT_FIELDS), "absent": dict(ABSENT)}


class ScriptRuntime:
    """A script loaded in its own quickjs context. Not thread-safe: one thread uses it."""

    def __init__(self, name: str, code: str, env: dict[str, str], limits: Limits) -> None:
        self.name = name
        self.code = code
        self.env = env
        self.limits = limits
        self.hooks: frozenset[str] = frozenset()
        self._context: quickjs.Context | None = None
        self._call: Any = None
        self._query: Any = None
        self._job: Any = None
        self._drain: Any = None
        self._unschedule: Any = None

    # -- loading --------------------------------------------------------------------------
    def load(self) -> Outcome:
        """A fresh context with the helpers and the script's top level run. A failure here
        (syntax, a throw, a runaway top level) leaves the runtime unusable."""
        context = quickjs.Context()
        context.eval(KFL_JS)
        context.eval(PRELUDE_JS)
        config = {"name": self.name, "env": self.env, "kfl": _kfl_config()}
        context.eval("__shark.init")(json.dumps(config))
        call, query, job = (context.eval(f"__shark.{n}") for n in ("call", "query", "job"))
        drain = context.eval("__shark.drain")
        self._unschedule = context.eval("__shark.unschedule")
        context.set_memory_limit(self.limits.memory_bytes)
        context.set_time_limit(self.limits.time_s)
        self._context = context
        self._drain = drain
        try:
            context.eval(self.code)
        except quickjs.JSException as error:
            outcome = self._failed(error, allow_recreate=False)
            self._context = None
            return outcome
        self._call, self._query, self._job = call, query, job
        # asked of the context directly: nothing the script may have replaced answers it
        try:
            self.hooks = frozenset(hook for hook in HOOKS
                                   if context.eval(f"typeof globalThis.{hook} === 'function'") is True)
        except quickjs.JSException as error:     # a getter named like a hook that throws or runs away
            outcome = self._failed(error, allow_recreate=False)
            self._context = None
            return outcome
        return self._decode(drain())

    @property
    def loaded(self) -> bool:
        return self._context is not None

    # -- calls ----------------------------------------------------------------------------
    def call(self, hook: str, args_json: str) -> Outcome:
        """hook(*args) where args_json is a JSON array text."""
        return self._run(self._call, hook, args_json)

    def query(self, entry_json: str) -> Outcome:
        """onItemQueried(entry): `result` is the entry as the hook left or returned it (an
        object with the entry's id: anything else is the call's failure)."""
        outcome = self._run(self._query, entry_json)
        if outcome.failure is None and outcome.result is not None:
            problem = wire.not_the_entry(outcome.result, entry_json)
            if problem is not None:
                return Outcome(failure=Failure("error", f"onItemQueried: {problem}"))
        return outcome

    def job(self, name: str) -> Outcome:
        return self._run(self._job, name)

    def unschedule(self, job: str) -> None:
        """Forget a job the hub refused (a cron expression croniter does not accept)."""
        if self._context is not None:
            self._unschedule(job)

    def memory_used(self) -> int:
        if self._context is None:
            return 0
        return int(self._context.memory()["memory_used_size"])

    def _run(self, function: Any, *args: str) -> Outcome:
        if self._context is None:
            return Outcome(failure=Failure("error", "the script is not loaded"))
        try:
            answer = function(*args)
        except quickjs.JSException as error:
            return self._failed(error, allow_recreate=True)
        return self._decode(answer)

    def _decode(self, answer: Any) -> Outcome:
        """The helpers' answer, checked (hub/scripts/wire.py): anything but what they make is
        this call's failure, with nothing of it carried out."""
        if answer is None:
            return Outcome()
        if not isinstance(answer, str):
            return Outcome(failure=Failure("error", f"the helpers' answer is {type(answer).__name__}, not their JSON"))
        try:
            actions, dropped, result = wire.decode(answer, self.name)
        except ValueError as error:
            return Outcome(failure=Failure("error", str(error)))
        return Outcome(actions=actions, dropped=dropped, result=result)

    def _failed(self, error: quickjs.JSException, allow_recreate: bool) -> Outcome:
        failure = classify(error, self._near_memory_limit())
        outcome = Outcome(failure=failure)
        if failure.kind == "memory":
            # What the call queued is lost with the context: it cannot be trusted to answer.
            if allow_recreate:
                reloaded = self.load()
                outcome.recreated = True
                if reloaded.failure is not None:
                    outcome.failure = Failure("memory", f"{failure.message}; loading it again failed: "
                                                        f"{reloaded.failure.describe(self.limits)}")
            return outcome
        try:
            drained = self._decode(self._drain())
        except quickjs.JSException:
            drained = Outcome()
        if drained.failure is None:
            outcome.actions, outcome.dropped = drained.actions, drained.dropped
        return outcome

    def _near_memory_limit(self) -> bool:
        try:
            used = self.memory_used()
        except Exception:  # noqa: BLE001 - a context this broken is out of memory
            return True
        return used > self.limits.memory_bytes * 0.9


def classify(error: quickjs.JSException, near_memory_limit: bool = False) -> Failure:
    """A quickjs exception as a Failure: what kind, and a message without quickjs noise."""
    text = str(error)
    first, _, stack = text.partition("\n")
    if isinstance(error, quickjs.StackOverflow) or "stack overflow" in first:
        return Failure("stack", first)
    if first == "InternalError: interrupted":
        return Failure("timeout", first)
    # An allocation that failed while the exception was built shows up as "null".
    if "out of memory" in first or first.strip() in ("null", "") or near_memory_limit:
        return Failure("memory", first.strip() or "out of memory")
    if first.startswith("SyntaxError"):
        found = _SYNTAX_LINE.search(stack)
        if found is not None:
            return Failure("syntax", first, int(found.group(1)))
    frames = [line.strip() for line in stack.splitlines() if line.strip() and line.strip() != "undefined"]
    message = first if not frames else f"{first} ({'; '.join(frames[:5])})"
    return Failure("error", message)
