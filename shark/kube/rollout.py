"""Is kubectl-shark running? What the pods say, per node, and the wait until hub and workers are ready.

`pod_state` and `assess` are pure (objects in, a state out) so every case a cluster can show is
tested without one; `wait_rollout` polls the API once a second and hands each state to a view.
It stops early on failures that waiting does not heal (an image that cannot be pulled, a crash
loop) and at the deadline lists every pod that is not ready and why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from shark.errors import SharkError
from shark.kube.client import Cluster
from shark.kube.resources import HUB, HUB_SELECTOR, KINDS, WORKER, WORKER_SELECTOR

# Waiting reasons that do not go away by waiting: report them at once.
FATAL_REASONS = {"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CrashLoopBackOff",
                 "CreateContainerConfigError"}
IMAGE_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}


@dataclass(frozen=True)
class PodState:
    name: str
    node: str | None
    ready: bool
    reason: str            # "ready", "Pending", "ContainerCreating", "ImagePullBackOff", "not ready", ...
    message: str = ""
    image: str = ""
    outdated: bool = False   # a worker of the DaemonSet's previous template, not replaced yet

    @property
    def fatal(self) -> bool:
        return self.reason in FATAL_REASONS

    def describe(self) -> str:
        text = f"{self.reason}: {self.message}" if self.message else self.reason
        return f"{text}, previous version" if self.outdated else text


def _conditions(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or [] if isinstance(c, dict)}


def pod_state(pod: dict[str, Any]) -> PodState:
    """One pod in words: ready, or the most telling reason it is not."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    name, node = meta.get("name", "?"), spec.get("nodeName")
    images = {c.get("name"): c.get("image", "") for c in spec.get("containers") or []}
    conditions = _conditions(pod)
    if meta.get("deletionTimestamp"):
        return PodState(name, node, False, "Terminating")
    for container in status.get("initContainerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "PodInitializing"):
            return PodState(name, node, False, waiting["reason"], waiting.get("message", ""),
                            container.get("image", ""))
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        image = images.get(container.get("name"), container.get("image", ""))
        if "waiting" in state:
            waiting = state["waiting"] or {}
            message = waiting.get("message", "")
            last = (container.get("lastState") or {}).get("terminated") or {}
            if waiting.get("reason") == "CrashLoopBackOff" and last:
                message = (f"exited {last.get('exitCode')}" + (f" ({last['reason']})" if last.get("reason") else "")
                           + f", restarted {container.get('restartCount', 0)} times")
            return PodState(name, node, False, waiting.get("reason") or "Waiting", message, image)
        if "terminated" in state:
            term = state["terminated"] or {}
            return PodState(name, node, False, term.get("reason") or "Terminated",
                            f"exit code {term.get('exitCode')}", image)
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False":
        return PodState(name, node, False, scheduled.get("reason") or "Pending", scheduled.get("message", ""))
    ready = conditions.get("Ready") or {}
    if ready.get("status") == "True":
        return PodState(name, node, True, "ready")
    if status.get("phase") == "Running":
        return PodState(name, node, False, "not ready", ready.get("message") or "the readiness probe has not passed")
    return PodState(name, node, False, status.get("phase") or "Pending", status.get("message", ""))


@dataclass
class RolloutState:
    hub: list[PodState] = field(default_factory=list)
    workers: dict[str, PodState | None] = field(default_factory=dict)   # node -> its worker (None: none yet)
    hub_done: bool = False
    workers_done: bool = False
    missing: list[str] = field(default_factory=list)                    # objects not found
    max_unavailable: int | str = 1                                     # the DaemonSet's rolling update

    @property
    def done(self) -> bool:
        return self.hub_done and self.workers_done and not self.missing

    def pods(self) -> list[PodState]:
        return [*self.hub, *(p for p in self.workers.values() if p is not None)]

    def not_ready(self) -> list[str]:
        """One line per pod (or node without a worker) that is not ready, and why."""
        lines = [f"hub {p.name}: {p.describe()}" for p in self.hub if not p.ready]
        if not self.hub and not self.hub_done:
            lines.append("hub: no pod yet")
        for node, pod in sorted(self.workers.items()):
            if pod is None:
                lines.append(f"worker on {node}: no pod yet")
            elif not pod.ready:
                lines.append(f"worker {pod.name} on {node}: {pod.describe()}")
            elif pod.outdated:
                lines.append(f"worker {pod.name} on {node}: still the previous version, waiting to be replaced "
                             f"(the DaemonSet replaces workers with at most {self.max_unavailable} "
                             f"node{'s' * (str(self.max_unavailable) != '1')} unavailable at a time)")
        return lines + [f"{what}: not found" for what in self.missing]

    def outdated(self) -> list[PodState]:
        return [p for p in self.workers.values() if p is not None and p.outdated]


def _newest(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    return sorted(live, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)


def _generation_seen(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("observedGeneration", 0) >= (obj.get("metadata") or {}).get("generation", 1)


def assess(nodes: list[dict[str, Any]], deployment: dict[str, Any] | None, daemonset: dict[str, Any] | None,
           hub_pods: list[dict[str, Any]], worker_pods: list[dict[str, Any]]) -> RolloutState:
    """Where the rollout stands, from what the API shows."""
    state = RolloutState()
    if deployment is None:
        state.missing.append(f"Deployment {HUB}")
    else:
        want = (deployment.get("spec") or {}).get("replicas", 1)
        st = deployment.get("status") or {}
        state.hub = [pod_state(p) for p in _newest(hub_pods)][: max(want, 1)]
        state.hub_done = (_generation_seen(deployment) and st.get("updatedReplicas", 0) == want
                          and st.get("readyReplicas", 0) == want and st.get("replicas", 0) == want)
    if daemonset is None:
        state.missing.append(f"DaemonSet {WORKER}")
    else:
        st = daemonset.get("status") or {}
        desired = st.get("desiredNumberScheduled", 0)
        by_node: dict[str, list[dict[str, Any]]] = {}
        for pod in worker_pods:
            by_node.setdefault((pod.get("spec") or {}).get("nodeName") or "", []).append(pod)
        generation = str((daemonset.get("metadata") or {}).get("generation", 1))
        rolling = (daemonset.get("spec") or {}).get("updateStrategy") or {}
        state.max_unavailable = (rolling.get("rollingUpdate") or {}).get("maxUnavailable", 1)
        updating = st.get("updatedNumberScheduled", 0) < desired
        for node in nodes:
            name = (node.get("metadata") or {}).get("name", "?")
            newest = _newest(by_node.get(name, []))
            state.workers[name] = pod_state(newest[0]) if newest else None
            # the DaemonSet controller labels its pods with the template generation they were made from
            made_from = ((newest[0].get("metadata") or {}).get("labels") or {}).get("pod-template-generation") \
                if newest else None
            if updating and made_from is not None and made_from != generation:
                state.workers[name] = replace(state.workers[name], outdated=True)
        state.workers_done = (_generation_seen(daemonset) and st.get("updatedNumberScheduled", 0) == desired
                              and st.get("numberReady", 0) == desired and desired == len(
                                  [p for p in state.workers.values() if p is not None and p.ready]))
        if desired < len(nodes):   # nodes the DaemonSet does not run on: no worker expected there
            scheduled = {n for n, p in state.workers.items() if p is not None}
            for node in list(state.workers):
                if node not in scheduled and len(scheduled) >= desired:
                    del state.workers[node]
    return state


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if not tol.get("key") and tol.get("operator") == "Exists":
            return True
        if tol.get("key") == taint.get("key") and (tol.get("operator") == "Exists"
                                                    or tol.get("value", "") == taint.get("value", "")):
            return True
    return False


def untolerated(nodes: list[dict[str, Any]], tolerations: list[dict[str, Any]]) -> dict[str, str]:
    """Nodes a pod with these tolerations is kept off, each with the taint that does it
    (`key=value:Effect`, as `kubectl taint` spells it)."""
    kept: dict[str, str] = {}
    for node in nodes:
        for taint in (node.get("spec") or {}).get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(tolerations, taint):
                value = f"={taint['value']}" if taint.get("value") else ""
                kept[(node.get("metadata") or {}).get("name", "?")] = f"{taint.get('key')}{value}:{taint['effect']}"
                break
    return kept


def snapshot(cluster: Cluster, namespace: str) -> RolloutState:
    return assess(cluster.list(KINDS["Node"]),
                  cluster.get(KINDS["Deployment"], HUB, namespace),
                  cluster.get(KINDS["DaemonSet"], WORKER, namespace),
                  cluster.list(KINDS["Pod"], namespace, HUB_SELECTOR),
                  cluster.list(KINDS["Pod"], namespace, WORKER_SELECTOR))


class RolloutFailed(SharkError):
    """A pod cannot become ready, or the deadline passed: which pods, on which nodes, why."""


def _failure(state: RolloutState, headline: str, image: str | None) -> RolloutFailed:
    reasons = {p.reason for p in state.pods() if not p.ready}
    if reasons & IMAGE_REASONS:
        hint = (f"the nodes cannot pull {image or 'the image'}: build it with `make image`, push it to a registry "
                "the cluster can pull from and pass --image REGISTRY/kubectl-shark:TAG (on kind: "
                "`kind load docker-image`), then run tap again")
    elif "CreateContainerConfigError" in reasons:
        hint = ("the pods cannot read their token from the Secret shark-token: `kubectl get secret shark-token -n "
                "NAMESPACE` shows whether it is there; `kubectl shark tap` creates it when it is missing")
    elif "CrashLoopBackOff" in reasons:
        hint = "see why with `kubectl shark logs --component worker` (or --component hub)"
    elif reasons & {"Unschedulable", "Pending"}:
        hint = "the scheduler cannot place the pods: `kubectl describe pods -n NAMESPACE` shows why"
    else:
        hint = "`kubectl shark status --cluster` shows the pods; `kubectl shark logs` their output"
    return RolloutFailed(headline, hint=hint, details=state.not_ready())


def wait_rollout(cluster: Cluster, namespace: str, timeout: float, show: Callable[[RolloutState], None],
                 image: str | None = None, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> RolloutState:
    """Poll until the hub and every node's worker are ready; RolloutFailed otherwise."""
    deadline = clock() + timeout
    while True:
        state = snapshot(cluster, namespace)
        show(state)
        if state.done:
            return state
        fatal = [p for p in state.pods() if p.fatal]
        if fatal:
            first = fatal[0]
            where = f" on {first.node}" if first.node else ""
            raise _failure(state, f"pod {first.name}{where} cannot start: {first.describe()}", image or first.image)
        if clock() >= deadline:
            old = len(state.outdated())
            count = len(state.not_ready()) - old
            behind = f", {old} of {len(state.workers)} workers still the previous version" if old else ""
            raise _failure(state, f"the rollout did not finish within {timeout:g}s: {count} "
                                  f"pod{'s' * (count != 1)} not ready{behind}", image)
        sleep(min(interval, max(deadline - clock(), 0)))
