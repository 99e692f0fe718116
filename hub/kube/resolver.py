"""IP -> who had it (pod, service, node) and when, from the cluster's objects as they change.

Every address an object holds is a *claim* over an interval [start, end): a pod's address from
its start until it is deleted or finishes, a service's cluster IP from its creation until it
is deleted, a node's addresses while it exists. Closed claims are kept (up to a cap), so an
entry at time t gets the identity its address had at t, though the pod is long gone and its
address now belongs to another.

When claims overlap the most specific wins: a pod over a node (hostNetwork pods are not
claimed: their address is the node's) over a service (an Endpoints address that is not a
pod's, e.g. the API server behind `default/kubernetes`); between equals, the newer claim.
An address nobody claimed at t is `external` — once every kind of object has been listed and
t is after that; before, the resolver does not know and says nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from hub.kube import objects
from hub.kube.store import Change

PRIORITY = {"pod": 3, "node": 2, "service": 1}
DEFAULT_HISTORY = 100_000


class Identity(msgspec.Struct, frozen=True):
    name: str
    namespace: str
    kind: str          # pod | service | node | external


EXTERNAL = Identity("", "", "external")


@dataclass(eq=False)
class Claim:
    identity: Identity
    owner: str                  # "pod:<uid>", "service:<uid>", ...
    start: float
    end: float | None = None    # None while the address is held

    def covers(self, ts: float) -> bool:
        return self.start <= ts and (self.end is None or ts < self.end)

    def rank(self) -> tuple[int, float]:
        return PRIORITY.get(self.identity.kind, 0), self.start


class Resolver:
    def __init__(self, max_history: int = DEFAULT_HISTORY) -> None:
        self.max_history = max_history
        self._claims: dict[str, list[Claim]] = {}          # ip -> every claim kept, by start
        self._open: dict[str, dict[str, Claim]] = {}       # owner -> ip -> open claim
        self._closed: deque[tuple[str, Claim]] = deque()   # (ip, claim) in closing order
        self.complete_since: float | None = None
        self._pod_nets: dict[str, list[str]] = {}           # node owner -> its pod CIDRs
        self.on_change: list[Callable[[], None]] = []      # the current names changed

    # -- claims ----------------------------------------------------------------------------
    def hold(self, owner: str, identity: Identity, ips: list[str], start: float | None, at: float) -> None:
        """`owner` holds exactly `ips` as `identity` as of `at`; `start` is when the object
        says it began (used for an address this owner never held before)."""
        held = self._open.setdefault(owner, {})
        changed = False
        for ip, claim in list(held.items()):
            if ip not in ips or claim.identity != identity:
                self._close(ip, claim, at)
                del held[ip]
                changed = True
        for ip in ips:
            if ip in held:
                continue
            claims = self._claims.setdefault(ip, [])
            before = any(c.owner == owner for c in claims)
            begin = at if before or start is None else min(start, at)
            claim = Claim(identity, owner, begin)
            claims.append(claim)
            claims.sort(key=lambda c: c.start)
            held[ip] = claim
            changed = True
        if not held:
            del self._open[owner]
        if changed:
            self._changed()

    def release(self, owner: str, at: float) -> None:
        held = self._open.pop(owner, None)
        if not held:
            return
        for ip, claim in held.items():
            self._close(ip, claim, at)
        self._changed()

    def _close(self, ip: str, claim: Claim, at: float) -> None:
        claim.end = max(at, claim.start)
        self._closed.append((ip, claim))
        while len(self._closed) > self.max_history:
            old_ip, old = self._closed.popleft()
            kept = self._claims.get(old_ip)
            if kept is not None:
                kept.remove(old)
                if not kept:
                    del self._claims[old_ip]

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()

    # -- answers ---------------------------------------------------------------------------
    def resolve(self, ip: str, ts: float) -> Identity | None:
        """Who had `ip` at `ts`: an Identity, EXTERNAL, or None when the resolver cannot know."""
        best: Claim | None = None
        for claim in self._claims.get(ip, ()):
            if claim.start > ts:
                break
            if claim.covers(ts) and (best is None or claim.rank() > best.rank()):
                best = claim
        if best is not None:
            return best.identity
        if self.complete_since is not None and ts >= self.complete_since:
            return EXTERNAL
        return None

    def current(self) -> dict[str, Identity]:
        """Every address held now, with its winning identity."""
        winners: dict[str, Claim] = {}
        for held in self._open.values():
            for ip, claim in held.items():
                other = winners.get(ip)
                if other is None or claim.rank() > other.rank():
                    winners[ip] = claim
        return {ip: claim.identity for ip, claim in winners.items()}

    def cluster_nets(self) -> list[str] | None:
        """Every node's pod networks, or None when some node has none (the plugin allocates
        addresses elsewhere) or no node is known: then which addresses are the cluster's is
        not known."""
        if not self._pod_nets or not all(self._pod_nets.values()):
            return None
        return sorted({net for nets in self._pod_nets.values() for net in nets})

    def history_size(self) -> int:
        return len(self._closed)

    # -- watch handlers --------------------------------------------------------------------
    def on_pod(self, change: Change) -> None:
        pod = change.obj
        owner = "pod:" + objects.uid(pod)
        if change.deleted or not objects.pod_holds_ips(pod):
            self.release(owner, change.at)
            return
        identity = Identity(objects.name(pod), objects.namespace(pod), "pod")
        self.hold(owner, identity, objects.pod_ips(pod), objects.pod_started(pod), change.at)

    def on_service(self, change: Change) -> None:
        service = change.obj
        owner = "service:" + objects.uid(service)
        if change.deleted:
            self.release(owner, change.at)
            return
        identity = Identity(objects.name(service), objects.namespace(service), "service")
        self.hold(owner, identity, objects.service_ips(service), objects.created(service), change.at)

    def on_endpoints(self, change: Change) -> None:
        endpoints = change.obj
        owner = "endpoints:" + objects.uid(endpoints)
        if change.deleted:
            self.release(owner, change.at)
            return
        identity = Identity(objects.name(endpoints), objects.namespace(endpoints), "service")
        self.hold(owner, identity, objects.endpoint_addresses_without_pod(endpoints),
                  objects.created(endpoints), change.at)

    def on_node(self, change: Change) -> None:
        node = change.obj
        owner = "node:" + objects.uid(node)
        nets = [] if change.deleted else objects.node_pod_cidrs(node)
        if self._pod_nets.get(owner) != nets or change.deleted:
            before = self.cluster_nets()
            if change.deleted:
                self._pod_nets.pop(owner, None)
            else:
                self._pod_nets[owner] = nets
            if self.cluster_nets() != before:
                self._changed()
        if change.deleted:
            self.release(owner, change.at)
            return
        self.hold(owner, Identity(objects.name(node), "", "node"), objects.node_ips(node),
                  objects.created(node), change.at)
