"""Stand-ins for the controller manager, the scheduler and the kubelets behind the API double.

The real API server only stores objects; controllers turn a Deployment into a ReplicaSet and
pods, a DaemonSet into a pod per node, pods into Endpoints, and kubelets report pod status.
Here one thread does all of that through the store's own write paths (so every change has a
resourceVersion and a watch event, as in a cluster), converging after each change:

- Deployment -> ReplicaSet `<name>-<template hash>` (old ones scaled to 0) -> pods;
- DaemonSet -> one pod per node whose taints it tolerates (`controller-revision-hash` and
  `pod-template-generation` labels); a changed template replaces the pods as a RollingUpdate
  does: at most `maxUnavailable` (default 1, int or percent) nodes unavailable at a time, so one
  node whose new pod never gets ready stalls the rollout with the rest on the old pods
  (OnDelete: old pods stay until deleted);
- scheduler: a pod without a node goes to the first schedulable node (Unschedulable if none);
- kubelet: a scheduled pod (the controllers', or a bare one created without a status) gets a
  status from the pod behaviour the test chose: "ready",
  "not-ready" (running, readiness failing), "creating" (ContainerCreating),
  "image-pull-backoff" (also when `pullable_images` is set and lacks the image),
  "err-image-pull", "crash-loop", "unschedulable"; a container whose env reads a Secret (or
  a key of one) that is not there waits in CreateContainerConfigError until it is, as a
  kubelet does; a pod with restartPolicy Never or OnFailure runs to completion: "ready"
  ends Succeeded (exit 0, Completed), "crash-loop" Failed (exit 1, Error);
- PersistentVolumeClaims of a StorageClass the cluster has (`Store.storage_classes`) are bound
  at once (Immediate binding: status Bound, capacity as requested); a pod whose claim is missing
  or unbound is not scheduled (Unschedulable, with the scheduler's message);
- Endpoints for every Service with a selector, from the ready and not-ready pods it selects;
- workload status: observedGeneration, replicas / desired / ready / updated / available.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

from support.kubeapi_model import BY_PATH, ApiError, Selector, parse_label_selector
from support.kubeapi_store import Store, now_rfc3339

PodBehavior = str | dict[str, str] | Callable[[dict[str, Any]], str]
BEHAVIORS = ("ready", "not-ready", "creating", "image-pull-backoff", "err-image-pull", "crash-loop",
             "unschedulable")

R = {plural: BY_PATH[(group, "v1", plural)] for group, plural in [
    ("", "pods"), ("", "nodes"), ("", "services"), ("", "endpoints"), ("", "namespaces"), ("", "secrets"),
    ("", "persistentvolumeclaims"),
    ("apps", "deployments"), ("apps", "daemonsets"), ("apps", "replicasets")]}


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def owner_ref(obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    return any(ref.get("uid") == owner["metadata"]["uid"] for ref in obj["metadata"].get("ownerReferences") or [])


def selector_from(match: dict[str, Any] | None) -> Selector:
    """A LabelSelector ({matchLabels, matchExpressions}) as a store Selector."""
    match = match or {}
    parts = [f"{k}={v}" for k, v in (match.get("matchLabels") or {}).items()]
    for expr in match.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin"}.get(expr.get("operator"))
        if op:
            parts.append(f"{expr['key']} {op} ({','.join(expr.get('values') or [])})")
        elif expr.get("operator") == "Exists":
            parts.append(expr["key"])
        elif expr.get("operator") == "DoesNotExist":
            parts.append("!" + expr["key"])
    return Selector(labels=parse_label_selector(",".join(parts)))


def tolerates(pod_spec: dict[str, Any], taint: dict[str, Any]) -> bool:
    if taint.get("effect") not in ("NoSchedule", "NoExecute"):
        return True
    for tol in pod_spec.get("tolerations") or []:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" and not tol.get("key"):
            return True
        if tol.get("key") == taint.get("key") and (tol.get("operator") == "Exists"
                                                    or tol.get("value", "") == taint.get("value", "")):
            return True
    return False


def scaled(value: int | str, total: int) -> int:
    """An int-or-percent field (maxUnavailable) against a total; percentages round up."""
    if isinstance(value, str) and value.endswith("%"):
        return -(-int(value[:-1]) * total // 100)
    return int(value)


def node_ip(node: dict[str, Any]) -> str:
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return address["address"]
    return ""


class Controllers:
    MANAGER = "kube-controller-manager"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.behavior: PodBehavior = "ready"
        self.pullable_images: set[str] | None = None
        self._stop = threading.Event()
        self._kick = False
        self._thread = threading.Thread(target=self._run, name="kubeapi-controllers", daemon=True)
        self._pod_ips: dict[str, str] = {}
        self._managed_endpoints: set[tuple[str, str]] = set()    # deleted with their Service
        self._kubelet_pods: set[str] = set()                        # uids of the pods it reports on
        self.errors: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.store.changed:
            self.store.changed.notify_all()
        self._thread.join(5)

    def kick(self) -> None:
        """Reconcile again (the pod behaviour changed, not an object)."""
        with self.store.changed:
            self._kick = True
            self.store.changed.notify_all()

    def _run(self) -> None:
        seen = -1
        while not self._stop.is_set():
            with self.store.changed:
                self.store.changed.wait_for(lambda: self._stop.is_set() or self._kick
                                            or self.store.revision != seen, timeout=1.0)
                if self._stop.is_set():
                    return
                self._kick = False
                seen = self.store.revision
                try:
                    self.reconcile()
                except ApiError as error:     # e.g. a namespace terminating under us: next round
                    self.errors.append(error.message)
                seen_after = self.store.revision
                if seen_after != seen:
                    seen = -1                 # our own writes: go round once more until quiet

    # ---- one pass of every controller -----------------------------------------------------------

    def reconcile(self) -> None:
        nodes, _ = self.store.list(R["nodes"], Selector())
        self._deployments()
        self._replicasets(nodes)
        self._daemonsets(nodes)
        self._claims()
        self._kubelets(nodes)
        self._workload_status(nodes)
        self._endpoints()

    def _all(self, plural: str) -> list[dict[str, Any]]:
        return self.store.list(R[plural], Selector())[0]

    def _terminating(self, namespace: str) -> bool:
        ns = self.store.find(R["namespaces"], None, namespace)
        return ns is None or (ns.get("status") or {}).get("phase") == "Terminating"

    def _deployments(self) -> None:
        replicasets = self._all("replicasets")
        for deploy in self._all("deployments"):
            ns, name = deploy["metadata"]["namespace"], deploy["metadata"]["name"]
            if self._terminating(ns):
                continue
            template = deploy["spec"].get("template") or {}
            digest = template_hash(template)
            current = f"{name}-{digest}"
            for rs in replicasets:
                if rs["metadata"]["namespace"] == ns and owned_by(rs, deploy) and rs["metadata"]["name"] != current \
                        and rs["spec"].get("replicas", 0) != 0:
                    rs["spec"]["replicas"] = 0
                    self.store.replace(R["replicasets"], ns, rs["metadata"]["name"], rs, self.MANAGER)
            if self.store.find(R["replicasets"], ns, current) is None:
                labels = {**(template.get("metadata") or {}).get("labels", {}), "pod-template-hash": digest}
                rs_template = copy.deepcopy(template)
                rs_template.setdefault("metadata", {})["labels"] = labels
                match = copy.deepcopy(deploy["spec"].get("selector") or {})
                match.setdefault("matchLabels", {})["pod-template-hash"] = digest
                self.store.create(R["replicasets"], ns, {
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": current, "namespace": ns, "labels": labels,
                                 "ownerReferences": [owner_ref(deploy)]},
                    "spec": {"replicas": deploy["spec"].get("replicas", 1), "selector": match,
                             "template": rs_template}}, self.MANAGER)
            else:
                rs = self.store.get(R["replicasets"], ns, current)
                if rs["spec"].get("replicas") != deploy["spec"].get("replicas", 1):
                    rs["spec"]["replicas"] = deploy["spec"].get("replicas", 1)
                    self.store.replace(R["replicasets"], ns, current, rs, self.MANAGER)

    def _new_pod(self, owner: dict[str, Any], template: dict[str, Any], labels: dict[str, str],
                 node: str | None) -> None:
        ns = owner["metadata"]["namespace"]
        spec = copy.deepcopy(template.get("spec") or {})
        annotations = (template.get("metadata") or {}).get("annotations")
        if node:
            spec["nodeName"] = node
            spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                        "values": [node]}]}]}}}
        self.store.create(R["pods"], ns, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{owner['metadata']['name']}-{uuid.uuid4().hex[:5]}", "namespace": ns,
                         "labels": labels, "ownerReferences": [owner_ref(owner)],
                         **({"annotations": annotations} if annotations else {})},
            "spec": spec}, self.MANAGER)

    def _replicasets(self, nodes: list[dict[str, Any]]) -> None:
        pods = self._all("pods")
        for rs in self._all("replicasets"):
            ns = rs["metadata"]["namespace"]
            if self._terminating(ns):
                continue
            mine = [p for p in pods if owned_by(p, rs)]
            want = rs["spec"].get("replicas", 1)
            for pod in mine[want:]:
                self.store.delete(R["pods"], ns, pod["metadata"]["name"])
            template = rs["spec"].get("template") or {}
            for _ in range(want - len(mine)):
                self._new_pod(rs, template, dict((template.get("metadata") or {}).get("labels") or {}), None)

    def _daemonsets(self, nodes: list[dict[str, Any]]) -> None:
        pods = self._all("pods")
        for ds in self._all("daemonsets"):
            ns = ds["metadata"]["namespace"]
            if self._terminating(ns):
                continue
            template = ds["spec"].get("template") or {}
            digest = template_hash(template)
            eligible = {n["metadata"]["name"] for n in nodes
                        if all(tolerates(template.get("spec") or {}, t) for t in n["spec"].get("taints") or [])}
            on_node: dict[str, dict[str, Any]] = {}
            for pod in sorted((p for p in pods if owned_by(p, ds)), key=lambda p: p["metadata"]["creationTimestamp"]):
                node = pod["spec"].get("nodeName")
                if node not in eligible or node in on_node:
                    self.store.delete(R["pods"], ns, pod["metadata"]["name"])
                else:
                    on_node[node] = pod
            for name in self._rolling_update(ds, digest, eligible, on_node):
                self.store.delete(R["pods"], ns, name)
                on_node.pop(next(n for n, p in on_node.items() if p["metadata"]["name"] == name))
            labels = {**((template.get("metadata") or {}).get("labels") or {}), "controller-revision-hash": digest,
                      "pod-template-generation": str(ds["metadata"].get("generation", 1))}
            for node in sorted(eligible - set(on_node)):
                self._new_pod(ds, template, labels, node)

    def _rolling_update(self, ds: dict[str, Any], digest: str, eligible: set[str],
                        on_node: dict[str, dict[str, Any]]) -> list[str]:
        """The old pods to delete now, as the DaemonSet controller's rolling update does with
        maxSurge 0 (pkg/controller/daemon/update.go): an old pod that is not available goes at
        once; an available one only while fewer than maxUnavailable nodes are unavailable (a
        node without a pod, or with a new pod not ready yet, counts). OnDelete: none."""
        strategy = ds["spec"].get("updateStrategy") or {}
        if strategy.get("type") == "OnDelete":
            return []
        budget = scaled((strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1), len(eligible))
        unavailable, replace, candidates = 0, [], []
        for node in sorted(eligible):
            pod = on_node.get(node)
            if pod is None:
                unavailable += 1
            elif pod["metadata"].get("labels", {}).get("controller-revision-hash") == digest:
                unavailable += not self._ready(pod)
            elif not self._ready(pod):
                replace.append(pod["metadata"]["name"])
            elif unavailable < budget:
                candidates.append(pod["metadata"]["name"])
        return replace + candidates[:max(budget - unavailable, 0)]

    # ---- scheduler and kubelets -----------------------------------------------------------------

    def behavior_of(self, pod: dict[str, Any]) -> str:
        behavior = self.behavior
        if callable(behavior):
            chosen = behavior(pod)
        elif isinstance(behavior, dict):
            chosen = behavior.get(pod["spec"].get("nodeName") or "", behavior.get("*", "ready"))
        else:
            chosen = behavior
        if chosen not in BEHAVIORS:
            raise ValueError(f"pod behaviour {chosen!r} is not one of {', '.join(BEHAVIORS)}")
        if chosen == "ready" and self.pullable_images is not None and any(
                c.get("image") not in self.pullable_images for c in pod["spec"].get("containers") or []):
            return "image-pull-backoff"
        return chosen

    def _pod_ip(self, pod: dict[str, Any], node: dict[str, Any], index: int) -> str:
        if pod["spec"].get("hostNetwork"):
            return node_ip(node)
        uid = pod["metadata"]["uid"]
        if uid not in self._pod_ips:
            self._pod_ips[uid] = f"10.244.{index}.{len(self._pod_ips) % 250 + 2}"
        return self._pod_ips[uid]

    def _kubelets(self, nodes: list[dict[str, Any]]) -> None:
        by_name = {n["metadata"]["name"]: (i, n) for i, n in enumerate(nodes)}
        schedulable = [n["metadata"]["name"] for n in nodes if not n["spec"].get("unschedulable")]
        for pod in self._all("pods"):
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            if not self._runs(pod):
                continue
            node_name = pod["spec"].get("nodeName")
            # the scheduler places no pod whose claim is missing or unbound
            unbound = None if node_name else self._unbound_claim(pod, len(nodes))
            if unbound is None and not node_name and schedulable and self.behavior_of(pod) != "unschedulable":
                pod["spec"]["nodeName"] = node_name = schedulable[len(name) % len(schedulable)]
                self.store.replace(R["pods"], ns, name, pod, "kube-scheduler")
                pod = self.store.get(R["pods"], ns, name)
            if unbound is not None:
                status = unbound
            elif node_name not in by_name:
                status = self._unschedulable(len(nodes))
            else:
                index, node = by_name[node_name]
                status = self._status(pod, self.behavior_of(pod), node, index)
            self._kubelet_pods.add(pod["metadata"]["uid"])
            if self._summary(pod.get("status") or {}) != self._summary(status):
                pod["status"] = status
                self.store.replace(R["pods"], ns, name, pod, "kubelet", subresource="status")

    def _runs(self, pod: dict[str, Any]) -> bool:
        """Pods this kubelet reports on: the controllers' and bare ones nobody gave a status;
        a pod a test created with its own status (KubeAPI.add_pod) keeps it."""
        if pod["metadata"]["uid"] in self._kubelet_pods or pod["metadata"].get("ownerReferences"):
            return True
        status = pod.get("status") or {}
        return not status.get("containerStatuses") and not status.get("podIP")

    @staticmethod
    def _summary(status: dict[str, Any]) -> Any:
        """What a status says, without its timestamps: unchanged statuses are not rewritten."""
        def strip(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items()
                        if k not in ("lastTransitionTime", "startedAt", "startTime", "lastProbeTime")}
            if isinstance(value, list):
                return [strip(v) for v in value]
            return value
        return strip(status)

    @staticmethod
    def _unschedulable(node_count: int) -> dict[str, Any]:
        return {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": now_rfc3339(),
            "message": f"0/{node_count} nodes are available: {node_count} node(s) didn't match Pod's node "
                       "affinity/selector. preemption: 0/{node_count} nodes are available."}]}

    def _claims(self) -> None:
        """The volume binder with a dynamic provisioner per known StorageClass (Immediate binding)."""
        for claim in self._all("persistentvolumeclaims"):
            if (claim.get("status") or {}).get("phase") == "Bound":
                continue
            if claim["spec"].get("storageClassName") not in self.store.storage_classes:
                continue      # no provisioner: Pending for ever, as with a class the cluster lacks
            requested = ((claim["spec"].get("resources") or {}).get("requests") or {}).get("storage")
            claim["status"] = {"phase": "Bound", "accessModes": claim["spec"].get("accessModes") or [],
                               "capacity": {"storage": requested}}
            self.store.replace(R["persistentvolumeclaims"], claim["metadata"]["namespace"], claim["metadata"]["name"],
                               claim, "persistentvolume-binder-controller", subresource="status")

    def _unbound_claim(self, pod: dict[str, Any], node_count: int) -> dict[str, Any] | None:
        """The scheduler's verdict on a pod whose PersistentVolumeClaim is missing or unbound."""
        for volume in pod["spec"].get("volumes") or []:
            name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if not name:
                continue
            claim = self.store.find(R["persistentvolumeclaims"], pod["metadata"]["namespace"], name)
            if claim is None:
                why = f'persistentvolumeclaim "{name}" not found'
            elif (claim.get("status") or {}).get("phase") != "Bound":
                why = "pod has unbound immediate PersistentVolumeClaims"
            else:
                continue
            return {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "lastTransitionTime": now_rfc3339(),
                "message": f"0/{node_count} nodes are available: {why}. preemption: 0/{node_count} nodes are "
                           f"available: {node_count} Preemption is not helpful for scheduling."}]}
        return None

    def _missing_secret(self, pod: dict[str, Any], container: dict[str, Any]) -> str | None:
        """Why the kubelet cannot make this container's environment (a Secret or key not there)."""
        namespace = pod["metadata"]["namespace"]
        for env in container.get("env") or []:
            ref = ((env.get("valueFrom") or {}).get("secretKeyRef")) or None
            if not ref or ref.get("optional"):
                continue
            secret = self.store.find(R["secrets"], namespace, ref.get("name", ""))
            if secret is None:
                return f'secret "{ref.get("name")}" not found'
            if ref.get("key") not in (secret.get("data") or {}):
                return f"couldn't find key {ref.get('key')} in Secret {namespace}/{ref.get('name')}"
        return None

    def _status(self, pod: dict[str, Any], behavior: str, node: dict[str, Any], index: int) -> dict[str, Any]:
        if behavior == "unschedulable":
            return self._unschedulable(1)
        now = now_rfc3339()
        started = any("running" in (c.get("state") or {}) or "terminated" in (c.get("state") or {})
                      for c in (pod.get("status") or {}).get("containerStatuses") or [])
        config_error = None if started else next(
            (why for c in pod["spec"].get("containers") or [] if (why := self._missing_secret(pod, c))), None)
        if config_error and behavior in ("ready", "not-ready", "crash-loop"):
            behavior = "config-error"
        once = pod["spec"].get("restartPolicy") in ("Never", "OnFailure")
        if once and behavior in ("ready", "not-ready", "crash-loop"):
            return self._completed(pod, node, index, now, behavior != "crash-loop")
        running = behavior in ("ready", "not-ready")
        ready = behavior == "ready"
        containers = []
        for c in pod["spec"].get("containers") or []:
            image = c.get("image", "")
            state: dict[str, Any]
            extra: dict[str, Any] = {}
            if behavior == "config-error":
                state = {"waiting": {"reason": "CreateContainerConfigError", "message": config_error}}
            elif running:
                state = {"running": {"startedAt": now}}
            elif behavior == "creating":
                state = {"waiting": {"reason": "ContainerCreating"}}
            elif behavior == "image-pull-backoff":
                state = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}
            elif behavior == "err-image-pull":
                state = {"waiting": {"reason": "ErrImagePull", "message": f'failed to pull and unpack image '
                                     f'"{image}": failed to resolve reference "{image}": not found'}}
            else:   # crash-loop
                state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off 40s restarting "
                                     f"failed container={c.get('name')} pod={pod['metadata']['name']}"}}
                extra = {"lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}, "restartCount": 3}
            containers.append({"name": c.get("name"), "image": image, "imageID": "", "ready": ready,
                               "started": running, "restartCount": 0, "state": state, **extra})
        phase = "Running" if running or behavior == "crash-loop" else "Pending"

        def cond(kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
            out = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
                   "lastTransitionTime": now}
            if reason:
                out["reason"] = reason
            return out
        not_ready = None if ready else "ContainersNotReady"
        ip = self._pod_ip(pod, node, index)
        return {"phase": phase, "hostIP": node_ip(node), "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
                "conditions": [cond("Initialized", True), cond("Ready", ready, not_ready),
                               cond("ContainersReady", ready, not_ready), cond("PodScheduled", True)],
                "containerStatuses": containers}

    def _completed(self, pod: dict[str, Any], node: dict[str, Any], index: int, now: str, ok: bool
                   ) -> dict[str, Any]:
        """A run-to-completion pod once its containers have exited."""
        terminated = {"exitCode": 0, "reason": "Completed"} if ok else {"exitCode": 1, "reason": "Error"}
        containers = [{"name": c.get("name"), "image": c.get("image", ""), "imageID": "", "ready": False,
                       "started": False, "restartCount": 0,
                       "state": {"terminated": {**terminated, "startedAt": now, "finishedAt": now}}}
                      for c in pod["spec"].get("containers") or []]
        conditions = [{"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": now,
                       **({"reason": "PodCompleted"} if status == "False" else {})}
                      for kind, status in (("Initialized", "True"), ("Ready", "False"), ("ContainersReady", "False"),
                                           ("PodScheduled", "True"))]
        ip = self._pod_ip(pod, node, index)
        return {"phase": "Succeeded" if ok else "Failed", "hostIP": node_ip(node), "podIP": ip,
                "podIPs": [{"ip": ip}], "startTime": now, "conditions": conditions, "containerStatuses": containers}

    # ---- workload status and endpoints ----------------------------------------------------------

    @staticmethod
    def _ready(pod: dict[str, Any]) -> bool:
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (pod.get("status") or {}).get("conditions") or [])

    def _set_status(self, plural: str, obj: dict[str, Any], status: dict[str, Any]) -> None:
        if (obj.get("status") or {}) != status:
            obj["status"] = status
            self.store.replace(R[plural], obj["metadata"]["namespace"], obj["metadata"]["name"], obj,
                               self.MANAGER, subresource="status")

    def _workload_status(self, nodes: list[dict[str, Any]]) -> None:
        pods = self._all("pods")
        for ds in self._all("daemonsets"):
            template = ds["spec"].get("template") or {}
            digest = template_hash(template)
            eligible = [n for n in nodes
                        if all(tolerates(template.get("spec") or {}, t) for t in n["spec"].get("taints") or [])]
            mine = [p for p in pods if owned_by(p, ds)]
            updated = [p for p in mine if p["metadata"].get("labels", {}).get("controller-revision-hash") == digest]
            ready = sum(self._ready(p) for p in mine)
            self._set_status("daemonsets", ds, {
                "currentNumberScheduled": len(mine), "desiredNumberScheduled": len(eligible),
                "numberMisscheduled": 0, "numberReady": ready, "numberAvailable": ready,
                **({"numberUnavailable": len(eligible) - ready} if len(eligible) > ready else {}),
                "updatedNumberScheduled": len(updated), "observedGeneration": ds["metadata"]["generation"]})
        for rs in self._all("replicasets"):
            mine = [p for p in pods if owned_by(p, rs)]
            ready = sum(self._ready(p) for p in mine)
            self._set_status("replicasets", rs, {
                "replicas": len(mine), "fullyLabeledReplicas": len(mine), "readyReplicas": ready,
                "availableReplicas": ready, "observedGeneration": rs["metadata"]["generation"]})
        replicasets = self._all("replicasets")
        for deploy in self._all("deployments"):
            current = f"{deploy['metadata']['name']}-{template_hash(deploy['spec'].get('template') or {})}"
            mine = [rs for rs in replicasets if owned_by(rs, deploy)]
            all_pods = [p for rs in mine for p in pods if owned_by(p, rs)]
            updated = [p for rs in mine if rs["metadata"]["name"] == current for p in pods if owned_by(p, rs)]
            ready = sum(self._ready(p) for p in all_pods)
            want = deploy["spec"].get("replicas", 1)
            available = ready >= want
            self._set_status("deployments", deploy, {
                "observedGeneration": deploy["metadata"]["generation"], "replicas": len(all_pods),
                "updatedReplicas": len(updated), "readyReplicas": ready, "availableReplicas": ready,
                **({"unavailableReplicas": max(want - ready, 0)} if want > ready else {}),
                "conditions": [
                    {"type": "Available", "status": "True" if available else "False",
                     "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                     "message": "Deployment has minimum availability." if available
                     else "Deployment does not have minimum availability."},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"
                     if available and len(updated) == want else "ReplicaSetUpdated",
                     "message": f'ReplicaSet "{current}" is progressing.'}]})

    def _endpoints(self) -> None:
        pods = self._all("pods")
        services = self._all("services")
        names = set()
        for svc in services:
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            selector = (svc.get("spec") or {}).get("selector")
            if not selector or self._terminating(ns):
                continue
            names.add((ns, name))
            match = Selector(labels=parse_label_selector(",".join(f"{k}={v}" for k, v in selector.items())),
                             namespace=ns)
            chosen = [p for p in pods if match.matches(p) and (p.get("status") or {}).get("podIP")]

            def address(pod: dict[str, Any]) -> dict[str, Any]:
                return {"ip": pod["status"]["podIP"], "nodeName": pod["spec"].get("nodeName"),
                        "targetRef": {"kind": "Pod", "namespace": ns, "name": pod["metadata"]["name"],
                                      "uid": pod["metadata"]["uid"]}}
            ready = [address(p) for p in chosen if self._ready(p)]
            not_ready = [address(p) for p in chosen if not self._ready(p)]
            ports = [{**({"name": p["name"]} if p.get("name") else {}), "protocol": p.get("protocol", "TCP"),
                      "port": self._target_port(p, chosen)} for p in svc["spec"].get("ports") or []]
            subsets = [] if not chosen else [{**({"addresses": ready} if ready else {}),
                                              **({"notReadyAddresses": not_ready} if not_ready else {}),
                                              "ports": ports}]
            body = {"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": name, "namespace": ns, "labels": svc["metadata"].get("labels") or {}},
                    **({"subsets": subsets} if subsets else {})}
            existing = self.store.find(R["endpoints"], ns, name)
            if existing is None:
                self.store.create(R["endpoints"], ns, body, "endpoint-controller")
            elif existing.get("subsets") != body.get("subsets") or \
                    existing["metadata"].get("labels") != body["metadata"]["labels"]:
                body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                self.store.replace(R["endpoints"], ns, name, body, "endpoint-controller")
        for ns, name in self._managed_endpoints - names:
            if self.store.find(R["endpoints"], ns, name) is not None:
                self.store.delete(R["endpoints"], ns, name)
        self._managed_endpoints = names

    @staticmethod
    def _target_port(port: dict[str, Any], pods: list[dict[str, Any]]) -> int:
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, int):
            return target
        for pod in pods:
            for container in pod["spec"].get("containers") or []:
                for cport in container.get("ports") or []:
                    if cport.get("name") == target:
                        return cport["containerPort"]
        return port.get("port", 0)
