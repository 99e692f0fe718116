"""The tap's targets (a pod-name regex and namespaces) turned into each worker's capture.

`PUT /api/v1/targets {regex, namespaces}` on the hub (or `--pod-regex`/`--target-namespace`)
says which pods to tap. A worker captures on one node, so each worker is sent the addresses
of the matching pods on *its* node (`PUT /targets {ips, idle, names}` on the worker): `idle`
when none match there, so it captures nothing rather than everything; and `names`, every
address the cluster knows now with its pod/service/node, so that the worker names the entries it
indexes (KFL on `src.name` works at the worker, and an entry keeps the name its address had
when it was captured); with `cluster_nets`, the nodes' pod networks when every node has them,
so the worker calls an unnamed address outside them `external` (inside them it stays unnamed:
a pod the worker has no name for yet, which the hub names when it reads the entry). Without a
regex or namespaces every pod is a target: workers capture the traffic of pods (to and from
anything), not their node's own (kubelet, host-network pods), as Kubeshark does.

What a worker is sent is kept current: pods starting, stopping or moving, names changing, a
worker joining or restarting (it lost what it was sent) lead to a new PUT for the workers whose
share changed, gathered over `debounce_s`; new names go out at most every `names_interval_s`
(every worker gets all of them: under heavy churn of a big cluster that is what costs). Each
worker's last answer is kept for
`GET /targets`; a failed PUT is tried again on the next check (every `verify_s`), which also
compares what each worker reports in its /status with what it was sent.

Pods of the hub's own namespace are never targets: the workers' traffic with the hub would
be captured, streamed to the hub, captured again, and so on. Host-network pods have their
node's address, so they are not targets either (their node's whole traffic would be).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from hub.kube import objects
from hub.kube.resolver import Identity, Resolver
from hub.workers import WorkerClient, WorkerPool, api_base, describe
from shark.clip import clip
from shark.model import TargetsUpdate
from shark.regex import RegexError, compile_linear

log = logging.getLogger("shark.hub.kube")

NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
SPEC_FIELDS = ("regex", "namespaces")


class SpecError(ValueError):
    """A target spec the hub cannot use; the message starts with the field at fault."""


@dataclass(frozen=True)
class TargetSpec:
    regex: str | None = None              # matched anywhere in the pod name (RE2 search); None: every pod
    namespaces: tuple[str, ...] = ()      # empty: every namespace

    def __post_init__(self) -> None:
        # RE2: the regex runs on the hub's event loop for every pod event; linear time
        object.__setattr__(self, "_compiled", compile_linear(self.regex) if self.regex is not None else None)

    def matches(self, namespace: str, name: str) -> bool:
        if self.namespaces and namespace not in self.namespaces:
            return False
        compiled = getattr(self, "_compiled")
        return compiled is None or compiled.search(name) is not None

    def to_json(self) -> dict[str, Any]:
        return {"regex": self.regex, "namespaces": list(self.namespaces)}

    @classmethod
    def of(cls, regex: Any, namespaces: Any) -> TargetSpec:
        """A checked spec: every mistake named with its field (and position)."""
        if regex is not None and not isinstance(regex, str):
            raise SpecError(f"regex: expected a string (a pod-name regex) or null, got {type(regex).__name__}")
        if regex is not None:
            try:
                compile_linear(regex)
            except RegexError as error:
                raise SpecError(f"regex: {regex!r} is not a valid regular expression: {error.message} "
                                f"at position {error.position}") from None
        if namespaces is None:
            namespaces = []
        if not isinstance(namespaces, (list, tuple)):
            raise SpecError(f"namespaces: expected a list of namespace names, got {type(namespaces).__name__}")
        checked: list[str] = []
        for position, namespace in enumerate(namespaces):
            if not isinstance(namespace, str) or len(namespace) > 63 or not NAMESPACE_NAME.fullmatch(namespace):
                raise SpecError(f"namespaces[{position}]: {namespace!r} is not a namespace name "
                                "(lowercase letters, digits and '-', at most 63, e.g. \"default\")")
            if namespace not in checked:
                checked.append(namespace)
        return cls(regex, tuple(checked))

    @classmethod
    def parse(cls, body: Any) -> TargetSpec:
        """The JSON body of `PUT /targets`: {"regex": "...", "namespaces": [...]}."""
        if not isinstance(body, dict):
            raise SpecError('body: expected a JSON object, e.g. {"regex": "^front", "namespaces": ["shop"]}')
        for name in body:
            if name not in SPEC_FIELDS:
                raise SpecError(f"{name}: unknown field; expected regex and namespaces")
        return cls.of(body.get("regex"), body.get("namespaces"))


@dataclass(frozen=True)
class PodTarget:
    namespace: str
    name: str
    node: str
    ips: tuple[str, ...]


@dataclass(frozen=True)
class NodeTargets:
    ips: tuple[str, ...] = ()
    idle: bool = False


def targeted_pods(spec: TargetSpec, pods: Iterable[dict[str, Any]], exclude_namespaces: Iterable[str] = ()) -> list[PodTarget]:
    """The pods the spec selects that hold addresses now, by namespace and name."""
    excluded = set(exclude_namespaces)
    found = []
    for pod in pods:
        namespace, name = objects.namespace(pod), objects.name(pod)
        if namespace in excluded or not spec.matches(namespace, name) or not objects.pod_holds_ips(pod):
            continue
        ips = objects.pod_ips(pod)
        node = objects.pod_node(pod)
        if ips and node:
            found.append(PodTarget(namespace, name, node, tuple(ips)))
    return sorted(found, key=lambda p: (p.namespace, p.name))


def node_targets(targets: list[PodTarget], node: str) -> NodeTargets:
    """What the worker on `node` captures: its targeted pods' traffic, nothing when none."""
    ips = sorted({ip for pod in targets if pod.node == node for ip in pod.ips})
    return NodeTargets(tuple(ips), idle=not ips)


def names_payload(names: dict[str, Identity]) -> dict[str, dict[str, str]]:
    return {ip: {"name": i.name, "namespace": i.namespace, "kind": i.kind} for ip, i in sorted(names.items())}


@dataclass
class WorkerTargets:
    """What one worker was last sent, and how that went."""
    url: str
    node: str | None
    ips: tuple[str, ...] = ()
    idle: bool = False
    names: int = 0
    names_version: int = -1
    sent_at: float | None = None
    ok: bool | None = None          # None: not sent yet
    error: str | None = None
    retry: bool = True              # a transient failure: try again on the next check

    def view(self) -> dict[str, Any]:
        return {"node": self.node, "url": self.url, "ips": list(self.ips), "idle": self.idle,
                "names": self.names, "sent_at": self.sent_at, "ok": self.ok, "error": self.error}


@dataclass
class Targeter:
    pool: WorkerPool
    resolver: Resolver
    pods: Any                                     # the all-namespaces pod Watch's Store
    node_of: Any                                  # url (as the pool has it) -> node, from discovery
    spec: TargetSpec = field(default_factory=TargetSpec)
    exclude_namespaces: tuple[str, ...] = ()
    debounce_s: float = 0.3
    verify_s: float = 2.0
    names_interval_s: float = 1.0
    workers: dict[str, WorkerTargets] = field(default_factory=dict)
    _dirty: asyncio.Event = field(default_factory=asyncio.Event)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _names: dict[str, Identity] = field(default_factory=dict)
    _nets: list[str] | None = None
    _names_json: msgspec.Raw = field(default_factory=lambda: msgspec.Raw(b"{}"))   # encoded once per version
    _names_count: int = 0
    _names_version: int = 0
    _names_at: float = float("-inf")
    _names_later: asyncio.TimerHandle | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    rounds: int = 0

    # -- inputs ----------------------------------------------------------------------------
    def mark(self, *_: Any) -> None:
        """Something that may change a worker's share happened."""
        self._dirty.set()

    def worker_restarted(self, urls: set[str]) -> None:
        for url in urls:
            state = self.workers.get(api_base(url))
            if state is not None:
                state.names_version = -1      # whatever it had is gone: send again
        self.mark()

    def worker_changed(self, client: WorkerClient) -> None:
        """The pool's health listener: a worker that comes back up may have restarted."""
        if client.health.ok:
            self.worker_restarted({client.url})

    def membership(self, client: WorkerClient, joined: bool) -> None:
        if not joined:
            self.workers.pop(client.url, None)
        self.mark()

    async def set_spec(self, spec: TargetSpec) -> None:
        """New targets: sent to every worker before this returns (each answer is in view())."""
        self.spec = spec
        await self.reconcile()

    # -- the loop --------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name="kube-targeter"),
                       asyncio.create_task(self._verify(), name="kube-targeter-verify")]

    async def close(self) -> None:
        if self._names_later is not None:
            self._names_later.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.debounce_s)    # a burst of pod changes becomes one round
            try:
                await self.reconcile()
            except Exception:
                log.exception("targets: a round failed")

    async def _verify(self) -> None:
        while True:
            await asyncio.sleep(self.verify_s)
            if self.check_reported():
                self.mark()

    def check_reported(self) -> bool:
        """True when some worker needs its targets again: never sent, a transient failure,
        or its /status (polled after our last PUT) says otherwise (it restarted)."""
        again = False
        for client in self.pool.clients:
            state = self.workers.get(client.url)
            if state is None or (state.ok is not True and state.retry):
                again = True
                continue
            health = client.health
            if not state.ok or not health.ok or not isinstance(health.status, dict) or state.sent_at is None:
                continue
            if health.last_seen is None or health.last_seen <= state.sent_at:
                continue
            reported = health.status.get("targets")
            if not isinstance(reported, dict):
                continue
            if (tuple(sorted(reported.get("ips") or [])) != state.ips or bool(reported.get("idle")) != state.idle
                    or reported.get("names", state.names) != state.names):
                log.info("worker %s reports other targets than it was sent (restarted?); sending again",
                         client.node or client.url)
                state.names_version = -1
                again = True
        return again

    def _refresh_names(self) -> None:
        names = self.resolver.current()
        nets = self.resolver.cluster_nets()
        if names == self._names and nets == self._nets:
            return
        wait = self._names_at + self.names_interval_s - time.monotonic()
        if wait > 0:   # too soon after the last names: a later round takes them
            if self._names_later is None:
                def later() -> None:
                    self._names_later = None
                    self.mark()
                self._names_later = asyncio.get_running_loop().call_later(wait, later)
            return
        self._names, self._nets = names, nets
        self._names_json = msgspec.Raw(msgspec.json.encode(names_payload(names)))
        self._names_count = len(names)
        self._names_version += 1
        self._names_at = time.monotonic()

    async def reconcile(self) -> None:
        async with self._lock:
            self._dirty.clear()
            self.rounds += 1
            self._refresh_names()
            targets = targeted_pods(self.spec, self.pods.objects.values(), self.exclude_namespaces)
            sends = []
            for client in self.pool.clients:
                node = self.node_of(client.url) or client.node
                wanted = node_targets(targets, node) if node else None
                state = self.workers.get(client.url)
                if state is None:
                    state = self.workers[client.url] = WorkerTargets(client.url, node)
                state.node = node
                if wanted is None:
                    state.ok, state.error, state.retry = False, "its node is not known yet", True
                    continue
                if client.health.ok is False:   # sent when it is back up (worker_changed)
                    state.ok, state.error, state.retry = False, f"worker down: {client.health.error}", False
                    continue
                if (state.ok and state.ips == wanted.ips and state.idle == wanted.idle
                        and state.names_version == self._names_version):
                    continue
                if state.ok is False and not state.retry and state.ips == wanted.ips \
                        and state.idle == wanted.idle and state.names_version == self._names_version:
                    continue   # the worker refused exactly this: wait for something to change
                sends.append(self._send(client, state, wanted))
            if sends:
                await asyncio.gather(*sends)

    async def _send(self, client: WorkerClient, state: WorkerTargets, wanted: NodeTargets) -> None:
        version = self._names_version
        body = msgspec.json.encode(TargetsUpdate(ips=list(wanted.ips), idle=wanted.idle, names=self._names_json,
                                                 cluster_nets=self._nets))
        state.ips, state.idle, state.names, state.names_version = wanted.ips, wanted.idle, self._names_count, version
        try:
            response = await client.http.put("/targets", content=body, headers={"Content-Type": "application/json"})
        except (httpx.HTTPError, RuntimeError) as error:   # RuntimeError: the client was closed (worker left)
            state.ok, state.error, state.retry = False, describe(error) if isinstance(error, httpx.HTTPError) else str(error), True
            log.warning("targets for %s: %s", client.node or client.url, state.error)
            return
        state.sent_at = time.time()
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except (ValueError, AttributeError):
                detail = None
            state.ok = False
            state.error = f"HTTP {response.status_code}: {clip(detail) if isinstance(detail, str) else response.text[:200]}"
            state.retry = response.status_code >= 500
            log.warning("targets for %s refused: %s", client.node or client.url, state.error)
            return
        state.ok, state.error, state.retry = True, None, False
        log.info("targets for %s: %s, %d names", client.node or client.url,
                 "idle" if wanted.idle else f"{len(wanted.ips)} pod addresses",
                 state.names)

    # -- what GET /targets shows ----------------------------------------------------------
    def view(self) -> dict[str, Any]:
        targets = targeted_pods(self.spec, self.pods.objects.values(), self.exclude_namespaces)
        worker_nodes = set()
        rows = []
        for client in self.pool.clients:
            state = self.workers.get(client.url) or WorkerTargets(client.url, self.node_of(client.url) or client.node)
            if state.node:
                worker_nodes.add(state.node)
            rows.append(state.view())
        return {
            "mode": "kube", **self.spec.to_json(),
            "pods": [{"namespace": p.namespace, "name": p.name, "node": p.node, "ips": list(p.ips)} for p in targets],
            "nodes_without_worker": sorted({p.node for p in targets} - worker_nodes),
            "names": len(self._names),
            "cluster_nets": self._nets,
            "workers": rows,
        }
