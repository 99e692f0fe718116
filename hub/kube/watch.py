"""List then watch one kind of object, as client-go's reflector does, in a thread of its own.

The thread lists (in pages), then watches from the list's resourceVersion with bookmarks,
and hands what it learns to the hub's event loop; the loop keeps the objects in a `Store`
and tells the handlers about each change. The rules are the API's
(https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes):
- a watch ends when the server's timeout is up: watch again from the last resourceVersion
  seen (an event's object or a BOOKMARK);
- 410 Gone (as the answer, or as an ERROR event in the stream) means that version is too old
  to resume from: list again; the store turns the new list into ADDED / MODIFIED / DELETED
  changes against what it had, so a deletion missed meanwhile is still seen;
- any other failure (API unreachable, 403 until RBAC is fixed, a broken stream) is retried
  with exponential backoff, and the last error is kept for /targets to show.
The kubernetes client is blocking; nothing here runs on the event loop but `Watch._apply`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from hub.kube import objects
from hub.kube.store import Change, Store

log = logging.getLogger("shark.hub.kube")

GONE = 410
WATCH_TIMEOUT_S = 300           # the server ends a watch after this; we watch again
CONNECT_TIMEOUT_S = 10.0
READ_GRACE_S = 30.0             # a silent stream is dead once the server's timeout has passed by this
PAGE_SIZE = 500
BACKOFF_S = (0.5, 30.0)         # first and longest wait after a failure


class Gone(Exception):
    """The resourceVersion to resume from is too old: list again."""


@dataclass
class WatchStats:
    synced: bool = False         # the first list arrived
    ok: bool | None = None       # the last request to the API was answered
    lists: int = 0
    relists_gone: int = 0        # lists caused by 410 Gone
    events: int = 0
    errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    resource_version: str | None = None


@dataclass
class ListWatch:
    """The blocking loop, run by a thread: `list_call` is a kubernetes-client list function
    (bound to its namespace/selector with functools.partial); `deliver` gets
    ("list", items, at) and ("event", type, object, at) tuples, in order."""
    resource: str
    list_call: Callable[..., Any]
    deliver: Callable[[tuple[Any, ...]], None]
    watch_timeout_s: int = WATCH_TIMEOUT_S
    page_size: int = PAGE_SIZE
    backoff_s: tuple[float, float] = BACKOFF_S
    stats: WatchStats = field(default_factory=WatchStats)
    _stop: threading.Event = field(default_factory=threading.Event)
    _response: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        delay = self.backoff_s[0]
        resource_version: str | None = None
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list()
                    delay = self.backoff_s[0]
                started = time.monotonic()
                seen = 0
                for event_type, obj in self._watch(resource_version):
                    version = objects.resource_version(obj)
                    if version:
                        resource_version = version
                        self.stats.resource_version = version
                    if event_type != "BOOKMARK":
                        seen += 1
                        self.stats.events += 1
                        self.deliver(("event", event_type, obj, time.time()))
                    delay = self.backoff_s[0]
                if not seen and time.monotonic() - started < 1.0 and not self._stop.is_set():
                    # a server that ends every watch at once must not be asked in a tight loop
                    self._fail(f"watch ended after {time.monotonic() - started:.3f}s without events", delay)
                    delay = min(delay * 2, self.backoff_s[1])
            except Gone as gone:
                log.info("%s: %s; listing again", self.resource, gone)
                self.stats.relists_gone += 1
                resource_version = None
            except ApiException as error:
                if self._stop.is_set():
                    break
                if error.status == GONE:
                    log.info("%s: 410 Gone; listing again", self.resource)
                    self.stats.relists_gone += 1
                    resource_version = None
                    continue
                self._fail(_describe_api_error(self.resource, error), delay)
                delay = min(delay * 2, self.backoff_s[1])
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
                if self._stop.is_set():
                    break
                self._fail(f"{type(error).__name__}: {error}", delay)
                delay = min(delay * 2, self.backoff_s[1])
            except Exception as error:   # a bug must not end the watch for good: log it, go on
                if self._stop.is_set():
                    break
                log.exception("%s: unexpected error", self.resource)
                self._fail(f"{type(error).__name__}: {error}", delay)
                delay = min(delay * 2, self.backoff_s[1])

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            try:   # wakes the thread blocked reading the stream
                response.shutdown()
            except (OSError, ValueError, RuntimeError):
                pass

    def _fail(self, message: str, delay: float) -> None:
        self.stats.ok = False
        self.stats.errors += 1
        self.stats.last_error = message
        self.stats.last_error_at = time.time()
        log.warning("%s: %s; retrying in %.1fs", self.resource, message, delay)
        self._stop.wait(delay)

    def _open(self, **kwargs: Any) -> Any:
        response = self.list_call(_preload_content=False, **kwargs)
        self.stats.ok = True
        with self._lock:
            self._response = response
        if self._stop.is_set():
            self.stop()
        return response

    def _close(self, response: Any) -> None:
        with self._lock:
            self._response = None
        # closed, not returned to the pool: a watch left early still has bytes in flight
        response.close()
        response.release_conn()

    def _list(self) -> str:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size,
                                      "_request_timeout": (CONNECT_TIMEOUT_S, 60.0)}
            if token:
                kwargs["_continue"] = token
            response = self._open(**kwargs)
            try:
                body = json.loads(response.data)
            finally:
                self._close(response)
            if not isinstance(body, dict) or not isinstance(body.get("items", []), list):
                raise ValueError(f"list of {self.resource}: not a list object")
            items += [item for item in body.get("items") or [] if isinstance(item, dict)]
            metadata = body.get("metadata") or {}
            token = metadata.get("continue") or None
            if not token:
                version = metadata.get("resourceVersion")
                if not version:
                    raise ValueError(f"list of {self.resource}: no metadata.resourceVersion")
                break
        self.stats.lists += 1
        self.stats.synced = True
        self.stats.resource_version = str(version)
        self.deliver(("list", items, time.time()))
        return str(version)

    def _watch(self, resource_version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        response = self._open(watch=True, resource_version=resource_version, allow_watch_bookmarks=True,
                              timeout_seconds=self.watch_timeout_s,
                              _request_timeout=(CONNECT_TIMEOUT_S, self.watch_timeout_s + READ_GRACE_S))
        try:
            for line in iter_resp_lines(response):
                if self._stop.is_set():
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                event_type = event.get("type") if isinstance(event, dict) else None
                obj = event.get("object") if isinstance(event, dict) else None
                if not isinstance(event_type, str) or not isinstance(obj, dict):
                    raise ValueError(f"watch of {self.resource}: not a watch event: {line[:200]}")
                if event_type == "ERROR":
                    code = obj.get("code")
                    message = f"{obj.get('reason') or 'error'}: {obj.get('message') or ''}".strip()
                    if code == GONE:
                        raise Gone(f"410 {message}")
                    raise ApiException(status=code if isinstance(code, int) else 0, reason=message)
                if event_type not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
                    raise ValueError(f"watch of {self.resource}: unknown event type {event_type!r}")
                yield event_type, obj
        finally:
            self._close(response)


def _describe_api_error(resource: str, error: ApiException) -> str:
    reason = error.reason or ""
    try:
        body = json.loads(error.body) if error.body else None
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        reason = str(body["message"])
    text = f"HTTP {error.status}: {reason}".strip()
    if error.status in (401, 403):
        text += f" (the hub's service account needs get/list/watch on {resource}; see manifests/)"
    return text


class Watch:
    """One kind of object followed for the event loop: its `Store`, its handlers (plain
    functions called on the loop for every change, in order) and the thread that feeds them."""

    def __init__(self, resource: str, list_call: Callable[..., Any],
                 handlers: list[Callable[[Change], None]], **options: Any) -> None:
        self.resource = resource
        self.store = Store()
        self.handlers = list(handlers)
        self.synced = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.loop_runner = ListWatch(resource, list_call, self._deliver, **options)
        self._thread: threading.Thread | None = None

    @property
    def stats(self) -> WatchStats:
        return self.loop_runner.stats

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self.loop_runner.run, name=f"kube-watch-{self.resource}",
                                        daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self.loop_runner.stop()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 10.0)

    def _deliver(self, item: tuple[Any, ...]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._apply, item)
        except RuntimeError:   # the loop closed while we were delivering
            pass

    def _apply(self, item: tuple[Any, ...]) -> None:
        if item[0] == "list":
            changes = self.store.replace(item[1], item[2])
        else:
            changes = self.store.apply(item[1], item[2], item[3])
        for change in changes:
            for handler in self.handlers:
                try:
                    handler(change)
                except Exception:   # one handler's bug must not stop the others or the watch
                    log.exception("%s: handler %r failed on %s", self.resource, handler, change.type)
        if item[0] == "list":
            self.synced.set()
