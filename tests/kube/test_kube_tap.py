"""tap, open, clean, status --cluster and logs against the Kubernetes API double.

The double (tests/support/kubeapi.py) answers as the real API does and runs stand-ins for the
controllers and kubelets, so pods appear per node and become ready, or not, as a test chooses.
The port-forward is injected (a TCP relay to a server on this machine); the real forwarder,
`kubectl port-forward`, is exercised against the double where it fails (the double does not
speak the streaming protocol) to test how its failures are reported.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from shark.cli import cli
from shark.errors import Forbidden, SharkError
from shark.kube import forward as forward_module
from shark.kube.forward import KubectlForwarder
from shark.kube.render import DEFAULT_IMAGE, DeployOptions
from shark.kube.rollout import RolloutFailed
from shark.kube.runner import Access, ClusterRunner, Proxy
from shark.kube.view import LineView
from support.kubeapi import KubeAPI
from support.kubeapi_rbac import Identity
from support.processes import free_port

OURS = "app.kubernetes.io/managed-by=kubectl-shark"
WORKERS = "app.kubernetes.io/component=worker"


class Run:
    """A ClusterRunner on the double, with what it printed."""

    def __init__(self, kube: KubeAPI, forwarder: Any = None, namespace: str = "shark") -> None:
        self.said: list[str] = []
        self.printed: list[str] = []
        self.opened: list[str] = []
        self.runner = ClusterRunner(Access(str(kube.kubeconfig), None, namespace), self.said.append,
                                    self.printed.append, forwarder=forwarder, opener=self.opened.append,
                                    view_factory=LineView, poll_interval=0.05)

    def tap(self, options: DeployOptions | None = None, timeout: float = 20, port: int | None = None) -> int:
        self.runner.stop.set()      # return as soon as the forward is up
        return self.runner.tap(options or DeployOptions(target_namespaces=("default",)),
                               Proxy("127.0.0.1", port or free_port(), True), timeout)

    @property
    def text(self) -> str:
        return "\n".join(self.said)


def secret_token(kube: KubeAPI, namespace: str = "shark") -> str:
    return base64.b64decode(kube.get("Secret", "shark-token", namespace)["data"]["token"]).decode()


def resource_versions(kube: KubeAPI) -> dict[str, str]:
    found = {}
    for kind, ns in [("Namespace", None), ("Secret", "shark"), ("ServiceAccount", "shark"), ("ClusterRole", None),
                     ("ClusterRoleBinding", None), ("Role", "shark"), ("RoleBinding", "shark"), ("Service", "shark"),
                     ("Deployment", "shark"),
                     ("DaemonSet", "shark")]:
        for obj in kube.list(kind, ns, OURS):
            found[f"{kind}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    return found


def pod_uids(kube: KubeAPI) -> set[str]:
    return {p["metadata"]["uid"] for p in kube.list("Pod", "shark")}


# ---- tap -------------------------------------------------------------------------------------------

def test_tap_deploys_waits_per_node_forwards_and_leaves_it_running(kube, nodes, forwarder):
    run = Run(kube, forwarder)
    run.runner.stop.clear()
    port = free_port()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run.runner.tap(
        DeployOptions(target_namespaces=("default",)), Proxy("127.0.0.1", port, True), 20)))
    thread.start()
    try:
        assert forwarder.started.wait(20), run.text
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "hub here"       # through the forward
        token = secret_token(kube)
        # the browser opens the address that logs it in; the terminal shows both
        assert run.opened == [f"http://127.0.0.1:{port}/?token={token}"]
        assert run.printed == [f"kubectl-shark UI and API at http://127.0.0.1:{port}",
                               f"log in to the UI at http://127.0.0.1:{port}/?token={token}"]
        assert forwarder.calls == [("shark", "shark-hub", 8899, "127.0.0.1", port)]
    finally:
        run.runner.stop.set()
        thread.join(10)
    assert result == [0]
    for line in ("namespace/shark created", "secret/shark-token created", "daemonset/shark-worker created",
                 "kubectl-shark is ready: the hub and 3 workers", "still running in the cluster"):
        assert line in run.text
    for node in nodes:
        assert any(line.split()[:1] == [node] and line.endswith("ready") for line in run.said), node
    assert len(kube.list("Pod", "shark", "app.kubernetes.io/component=worker")) == 3   # still deployed


def test_a_second_tap_with_the_same_options_changes_nothing(kube, nodes, forwarder):
    assert Run(kube, forwarder).tap() == 0
    before, uids = resource_versions(kube), pod_uids(kube)
    again = Run(kube, forwarder)
    assert again.tap() == 0
    assert [line for line in again.said if line.split()[0].count("/") == 1] == [
        "namespace/shark unchanged", "secret/shark-token unchanged", "serviceaccount/shark-hub unchanged", "serviceaccount/shark-worker unchanged",
        "clusterrole/shark-hub unchanged", "clusterrolebinding/shark-hub unchanged",
        "role/shark-hub-scripts unchanged", "rolebinding/shark-hub-scripts unchanged", "service/shark-hub unchanged",
        "deployment/shark-hub unchanged", "daemonset/shark-worker unchanged"]
    assert resource_versions(kube) == before and pod_uids(kube) == uids
    applies = [r for r in kube.writes() if r.content_type.startswith("application/apply-patch")]
    assert {r.query["fieldManager"] for r in applies} == {"kubectl-shark"}


def test_a_tap_with_other_options_reconfigures_only_the_workloads(kube, nodes, forwarder):
    Run(kube, forwarder).tap()
    before, uids = resource_versions(kube), pod_uids(kube)
    run = Run(kube, forwarder)
    assert run.tap(DeployOptions(pod_regex="^web", target_namespaces=("shop",), storage_limit="1GiB")) == 0
    assert "deployment/shark-hub configured" in run.said and "daemonset/shark-worker configured" in run.said
    after = resource_versions(kube)
    assert {k for k in after if after[k] != before[k]} == {"Deployment/shark-hub", "DaemonSet/shark-worker"}
    hub_args = kube.get("Deployment", "shark-hub", "shark")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert hub_args[-4:] == ["--pod-regex", "^web", "--target-namespace", "shop"]
    assert not (pod_uids(kube) & uids)          # rolled: every pod replaced, and waited for


def test_image_pull_errors_stop_the_wait_with_the_image_and_a_hint(kube, nodes, forwarder):
    kube.pullable_images = {DEFAULT_IMAGE}
    run = Run(kube, forwarder)
    with pytest.raises(RolloutFailed) as failed:
        run.tap(DeployOptions(image="registry.invalid/shark:9", target_namespaces=("default",)), timeout=30)
    assert "ImagePullBackOff: Back-off pulling image \"registry.invalid/shark:9\"" in failed.value.message
    assert "registry.invalid/shark:9" in failed.value.hint and "--image" in failed.value.hint
    assert forwarder.calls == []


def test_a_rollout_that_does_not_finish_lists_the_pods_not_ready_and_why(kube, nodes, forwarder):
    def behavior(pod: dict[str, Any]) -> str:
        if pod["metadata"]["labels"].get("app.kubernetes.io/component") != "worker":
            return "ready"
        return {"node-b": "not-ready", "node-c": "creating"}.get(pod["spec"].get("nodeName"), "ready")
    kube.pod_behavior = behavior
    with pytest.raises(RolloutFailed) as failed:
        Run(kube, forwarder).tap(timeout=5)
    assert failed.value.message == "the rollout did not finish within 5s: 2 pods not ready"
    details = "\n".join(failed.value.details)
    assert "on node-b: not ready: the readiness probe has not passed" in details
    assert "on node-c: ContainerCreating" in details


def test_a_stalled_worker_rollout_shows_the_node_not_ready_and_the_nodes_not_updated(kube, nodes, forwarder):
    """A changed DaemonSet rolls one node at a time (maxUnavailable 1, the manifests' default):
    node-a's new worker gets ready, node-b's never does, so node-c keeps its old one."""
    assert Run(kube, forwarder).tap() == 0
    old = {p["spec"]["nodeName"]: p["metadata"]["name"] for p in kube.list("Pod", "shark", WORKERS)}

    def behavior(pod: dict[str, Any]) -> str:
        new = pod["metadata"]["labels"].get("pod-template-generation") == "2"
        return "not-ready" if new and pod["spec"].get("nodeName") == "node-b" else "ready"
    kube.pod_behavior = behavior
    with pytest.raises(RolloutFailed) as failed:
        Run(kube, forwarder).tap(DeployOptions(target_namespaces=("default",), storage_limit="1GiB"), timeout=3)
    assert failed.value.message == ("the rollout did not finish within 3s: 1 pod not ready, "
                                    "1 of 3 workers still the previous version")
    details = failed.value.details
    assert any(line.endswith("on node-b: not ready: the readiness probe has not passed") for line in details)
    assert f"worker {old['node-c']} on node-c: still the previous version, waiting to be replaced (the DaemonSet " \
        "replaces workers with at most 1 node unavailable at a time)" in details
    assert not any("node-a" in line for line in details)
    status = kube.get("DaemonSet", "shark-worker", "shark")["status"]
    assert (status["updatedNumberScheduled"], status["numberReady"], status["desiredNumberScheduled"]) == (2, 2, 3)
    # node-b's worker gets ready: the rollout goes on to node-c
    kube.pod_behavior = "ready"
    assert Run(kube, forwarder).tap(DeployOptions(target_namespaces=("default",), storage_limit="1GiB")) == 0
    assert not set(old.values()) & {p["metadata"]["name"] for p in kube.list("Pod", "shark", WORKERS)}


def test_rbac_refusal_names_the_verb_the_resource_and_the_namespace(kube, nodes, forwarder):
    kube.forbid("patch", "daemonsets", namespace="shark")
    with pytest.raises(Forbidden) as refused:
        Run(kube, forwarder).tap()
    assert (refused.value.verb, refused.value.resource, refused.value.namespace) == ("patch", "daemonsets.apps",
                                                                                       "shark")
    assert 'cannot patch resource "daemonsets" in API group "apps"' in refused.value.message
    assert "kubectl auth can-i patch daemonsets.apps -n shark" in refused.value.hint


def test_tap_after_clean_waits_for_the_namespace_to_go(kube, nodes, forwarder):
    kube.store.namespace_finalize_delay = 1.0
    Run(kube, forwarder).tap()
    Run(kube, forwarder).runner.clean()
    run = Run(kube, forwarder)
    assert run.tap() == 0
    assert "namespace shark is still being deleted; waiting for it to go …" in run.said
    assert "namespace/shark created" in run.said


def test_a_namespace_kubectl_shark_did_not_create_is_used_and_never_deleted(kube, nodes, forwarder):
    run = Run(kube, forwarder, namespace="default")
    run.runner.stop.set()
    assert run.runner.tap(DeployOptions(release_namespace="default"), Proxy("127.0.0.1", free_port(), False), 20) == 0
    assert any("namespace/default exists and was not created by kubectl-shark" in line for line in run.said)
    assert "kubectl-shark" not in (kube.get("Namespace", "default")["metadata"].get("labels") or {}).values()
    clean = Run(kube, forwarder, namespace="default")
    clean.runner.clean()
    assert "namespace default was not created by kubectl-shark: left in place" in clean.said
    assert kube.find("Namespace", "default") is not None and kube.find("Service", "kubernetes", "default")
    assert kube.list("DaemonSet", "default") == [] and kube.find("ClusterRole", "shark-hub-default") is None


# ---- clean -----------------------------------------------------------------------------------------

def test_clean_removes_everything_by_label_and_twice_is_fine(kube, nodes, forwarder):
    Run(kube, forwarder).tap()
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {
        "name": "shark-hub-other", "labels": {"app.kubernetes.io/managed-by": "kubectl-shark"}}, "rules": []})
    run = Run(kube, forwarder)
    assert run.runner.clean() == 0
    # the nodes report as their cleanup pods finish, in any order
    node_lines = [line for line in run.said if line.startswith("node-")]
    said = [line for line in run.said if not line.startswith("node-")]
    assert sorted(node_lines) == [f"node-{n}: stored packets removed (/var/lib/kubectl-shark/shark)" for n in "abc"]
    assert said == ["daemonset/shark-worker deleted", "deployment/shark-hub deleted", "service/shark-hub deleted",
                        "secret/shark-token deleted",
                        "rolebinding/shark-hub-scripts deleted", "role/shark-hub-scripts deleted",
                        "serviceaccount/shark-hub deleted", "serviceaccount/shark-worker deleted",
                        "clusterrolebinding/shark-hub deleted", "clusterrole/shark-hub deleted",
                        "removing the stored packets on 3 nodes …",
                        "namespace/shark deleted"]
    deleted = [r for r in kube.requests if r.method == "DELETE" and r.path.startswith("/api/v1/namespaces/shark/")]
    assert "/api/v1/namespaces/shark/secrets/shark-token" in [r.path for r in deleted]
    assert kube.find("Secret", "shark-token", "shark") is None
    kube.wait_for(lambda: kube.find("Namespace", "shark") is None, what="the namespace to go")
    assert kube.list("Pod", "shark") == [] and kube.find("ClusterRoleBinding", "shark-hub") is None
    assert kube.find("ClusterRole", "shark-hub-other") is not None     # another release's: not ours to delete
    again = Run(kube, forwarder)
    assert again.runner.clean() == 0
    assert again.said == ["nothing to clean: kubectl-shark is not deployed in namespace shark"]


def test_hub_storage_is_a_bound_claim_the_hub_mounts_kept_by_keep_data_and_deleted_by_clean(kube, nodes, forwarder):
    run = Run(kube, forwarder)
    assert run.tap(DeployOptions(target_namespaces=("default",), hub_storage="5Gi")) == 0
    said = [line for line in run.said if line.split()[0].count("/") == 1]
    assert said.index("persistentvolumeclaim/shark-hub-state created") < said.index("deployment/shark-hub created")
    claim = kube.get("PersistentVolumeClaim", "shark-hub-state", "shark")
    assert claim["status"] == {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "5Gi"}}
    assert claim["spec"]["storageClassName"] == "standard"          # the cluster's default class
    [hub] = kube.list("Pod", "shark", "app.kubernetes.io/component=hub")
    assert {"name": "state", "persistentVolumeClaim": {"claimName": "shark-hub-state"}} in hub["spec"]["volumes"]

    kept = Run(kube, forwarder)
    assert kept.runner.clean(keep_data=True) == 0
    assert "persistentvolumeclaim/shark-hub-state deleted" not in kept.said
    assert kept.said[-2:] == [
        "persistentvolumeclaim/shark-hub-state kept (--keep-data): the hub's snapshots and scripts, mounted again by "
        "the next tap --hub-storage; clean without --keep-data deletes it",
        "namespace/shark kept: it holds the hub's volume"]
    assert kube.get("PersistentVolumeClaim", "shark-hub-state", "shark")["metadata"]["uid"] == claim["metadata"]["uid"]
    assert kube.list("Deployment", "shark") == [] and kube.find("Namespace", "shark") is not None

    again = Run(kube, forwarder)             # the next tap mounts the same claim: the snapshots are back
    assert again.tap(DeployOptions(target_namespaces=("default",), hub_storage="5Gi")) == 0
    assert "persistentvolumeclaim/shark-hub-state unchanged" in again.said
    assert kube.get("PersistentVolumeClaim", "shark-hub-state", "shark")["metadata"]["uid"] == claim["metadata"]["uid"]

    gone = Run(kube, forwarder)
    assert gone.runner.clean() == 0
    assert gone.said.index("deployment/shark-hub deleted") < gone.said.index(
        "persistentvolumeclaim/shark-hub-state deleted") < gone.said.index("namespace/shark deleted")
    assert kube.find("PersistentVolumeClaim", "shark-hub-state", "shark") is None


def test_a_hub_volume_that_cannot_change_so_is_said_with_what_can_be_done(kube, nodes, forwarder):
    assert Run(kube, forwarder).tap(DeployOptions(target_namespaces=("default",), hub_storage="5Gi")) == 0
    for options, why in [(DeployOptions(target_namespaces=("default",), hub_storage="1Gi"),
                          "field can not be less than status.capacity"),
                         (DeployOptions(target_namespaces=("default",), hub_storage="10Gi"),
                          "the storageclass that provisions the pvc must support resize"),
                         (DeployOptions(target_namespaces=("default",), hub_storage="5Gi", hub_storage_class="fast"),
                          "spec is immutable after creation")]:
        with pytest.raises(SharkError) as refused:
            Run(kube, forwarder).tap(options)
        assert refused.value.message.startswith("--hub-storage: persistentvolumeclaim/shark-hub-state (5Gi, "
                                                "StorageClass standard) cannot be changed so: "), refused.value.message
        assert why in refused.value.message
        assert "tap again with --hub-storage 5Gi --hub-storage-class standard" in refused.value.hint
    kube.store.expandable_storage_classes.add("standard")         # a class that expands: the claim grows
    run = Run(kube, forwarder)
    assert run.tap(DeployOptions(target_namespaces=("default",), hub_storage="10Gi")) == 0
    assert "persistentvolumeclaim/shark-hub-state configured" in run.said


def test_a_hub_storage_class_the_cluster_lacks_stops_the_rollout_saying_why(kube, nodes, forwarder):
    with pytest.raises(RolloutFailed) as failed:
        Run(kube, forwarder).tap(DeployOptions(target_namespaces=("default",), hub_storage="1Gi",
                                               hub_storage_class="nope"), timeout=3)
    assert kube.get("PersistentVolumeClaim", "shark-hub-state", "shark")["status"]["phase"] == "Pending"
    assert "pod has unbound immediate PersistentVolumeClaims" in "\n".join(failed.value.details)


# ---- open ------------------------------------------------------------------------------------------

def test_open_forwards_again_when_the_forward_drops(kube, nodes, forwarder):
    Run(kube, forwarder).tap()
    run = Run(kube, forwarder)
    port = free_port()
    thread = threading.Thread(target=run.runner.open, args=(Proxy("127.0.0.1", port, False), 10))
    thread.start()
    kube.wait_for(lambda: len(forwarder.forwards) == 2, what="open's forward")
    forwarder.forwards[-1].drop("lost connection to pod")
    kube.wait_for(lambda: len(forwarder.forwards) == 3, what="a second forward")
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "hub here"
    run.runner.stop.set()
    thread.join(10)
    assert "the port-forward ended: lost connection to pod; forwarding again once the hub is ready" in run.said
    assert run.opened == []


def test_open_without_a_deployment_says_to_tap_first(kube, forwarder):
    with pytest.raises(SharkError) as missing:
        Run(kube, forwarder).runner.open(Proxy("127.0.0.1", free_port(), False), 5)
    assert missing.value.message == "kubectl-shark is not deployed in namespace shark"
    assert "kubectl shark tap" in missing.value.hint


# ---- logs ------------------------------------------------------------------------------------------

def test_logs_prefix_each_line_with_where_it_came_from(kube, nodes, forwarder):
    Run(kube, forwarder).tap()
    for pod in kube.list("Pod", "shark"):
        container = pod["spec"]["containers"][0]["name"]
        where = pod["spec"]["nodeName"]
        kube.append_log("shark", pod["metadata"]["name"], container, f"{container} started on {where}\nserving")
    run = Run(kube, forwarder)
    assert run.runner.logs(("worker",), False, 1, "node-b") == 0
    assert run.printed == ["[worker node-b] serving"]
    worker_b = next(p for p in kube.list("Pod", "shark") if p["spec"]["nodeName"] == "node-b"
                    and p["spec"]["containers"][0]["name"] == "worker")["metadata"]["name"]
    kube.append_log("shark", worker_b, "worker", "bad request line '\x1b[2J\x07GET /'")   # captured bytes
    run = Run(kube, forwarder)
    assert run.runner.logs(("worker",), False, 1, "node-b") == 0
    assert run.printed == ["[worker node-b] bad request line '\\x1b[2J\\x07GET /'"]
    run = Run(kube, forwarder)
    assert run.runner.logs(("hub", "worker"), False, None, None) == 0
    assert len(run.printed) == 9 and run.printed[0].startswith("[hub] hub started on")
    follow = Run(kube, forwarder)
    thread = threading.Thread(target=follow.runner.logs, args=(("hub",), True, 0, None))
    thread.start()
    hub_pod = kube.list("Pod", "shark", "app.kubernetes.io/component=hub")[0]["metadata"]["name"]
    kube.wait_for(lambda: kube.append_log("shark", hub_pod, "hub", "a new request") or
                  "[hub] a new request" in follow.printed, what="a followed line")
    follow.runner.stop.set()
    thread.join(10)
    assert not thread.is_alive()


# ---- the real port-forward through kubectl ---------------------------------------------------------

def hub_pod(kube: KubeAPI) -> str | None:
    pods = kube.list("Pod", "shark", "app.kubernetes.io/component=hub")
    return pods[0]["metadata"]["name"] if pods else None


def forwards(kube: KubeAPI) -> list[tuple[str, str, int]]:
    """The port-forward upgrades the double answered: (method, pod, status)."""
    return [(r.method, r.path.split("/")[-2], r.status) for r in kube.requests if r.path.endswith("/portforward")]


def test_open_through_kubectl_port_forward_forwards_again_when_the_hub_pod_goes(kube, nodes, forwarder, kubectl,
                                                                                 web_server):
    """The real `kubectl port-forward` (SPDY in a WebSocket, as kubectl 1.31+ speaks it) to the
    double, which relays the hub pod's port to the stand-in hub; the pod is deleted mid-session:
    kubectl loses it, and `open` forwards again to the new pod once it is ready."""
    Run(kube, forwarder).tap()
    kube.port_forward_address = lambda pod, port: web_server
    real = KubectlForwarder(str(kube.kubeconfig), "shark-test")
    run = Run(kube, real)
    port = free_port()
    thread = threading.Thread(target=run.runner.open, args=(Proxy("127.0.0.1", port, False), 20))
    thread.start()
    try:
        first = hub_pod(kube)
        assert kube.wait_for(lambda: answers(f"http://127.0.0.1:{port}/"), 30, "the forward") == "hub here"
        assert forwards(kube) == [("GET", first, 101)]          # the WebSocket upgrade
        kube.delete("Pod", first, "shark")
        second = kube.wait_for(lambda: (name := hub_pod(kube)) != first and name, what="a new hub pod")
        kube.wait_for(lambda: ("GET", second, 101) in forwards(kube), 30, "a forward to the new pod")
        assert kube.wait_for(lambda: answers(f"http://127.0.0.1:{port}/"), 30, "the new forward") == "hub here"
    finally:
        run.runner.stop.set()
        thread.join(20)
    assert not thread.is_alive()
    assert "the port-forward ended: lost connection to pod; forwarding again once the hub is ready" in run.said


def answers(url: str) -> str | None:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None


TAP_RULES = [    # what docs/CLUSTER.md says `tap` needs
    {"apiGroups": [""], "resources": ["namespaces", "serviceaccounts", "services", "secrets"],
     "verbs": ["get", "create", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "daemonsets"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": ["rbac.authorization.k8s.io"],
     "resources": ["clusterroles", "clusterrolebindings", "roles", "rolebindings"], "verbs": ["get", "create", "patch"]},
    # RBAC lets one grant only what one holds: the hub's own permissions
    {"apiGroups": [""], "resources": ["pods", "services", "endpoints", "namespaces", "nodes"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update", "patch"]},
]
HUB_STORAGE_RULE = {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "create", "patch"]}


def test_tap_works_for_a_user_with_only_the_documented_rbac(kube, nodes, forwarder):
    """A user outside system:masters with exactly the ClusterRole docs/CLUSTER.md gives for `tap`
    deploys: the API's escalation check makes it hold what it grants the hub."""
    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "tapper"},
                 "rules": TAP_RULES})
    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": "tapper"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tapper"},
                 "subjects": [{"kind": "User", "name": "ops", "apiGroup": "rbac.authorization.k8s.io"}]})
    token = kube.token_for(Identity("ops", ("system:authenticated",)))
    kube.kubeconfig = kube.write_kubeconfig(kube.kubeconfig.with_name("ops"), token=token)
    assert Run(kube, forwarder).tap() == 0
    assert [r for r in kube.requests if r.user == "ops" and r.status >= 400 and r.status != 404] == []
    # --hub-storage: the claim too, refused until the documented rule for it is there
    with pytest.raises(Forbidden) as refused:
        Run(kube, forwarder).tap(DeployOptions(target_namespaces=("default",), hub_storage="1Gi"))
    assert (refused.value.verb, refused.value.resource) == ("get", "persistentvolumeclaims")
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "tapper"},
                "rules": [*TAP_RULES, HUB_STORAGE_RULE]})
    before = len(kube.requests)
    assert Run(kube, forwarder).tap(DeployOptions(target_namespaces=("default",), hub_storage="1Gi")) == 0
    assert [r for r in kube.requests[before:] if r.user == "ops" and r.status >= 400 and r.status != 404] == []
    # one permission less (the hub's endpoints): the escalation check names it
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "tapper"},
                "rules": [*TAP_RULES[:3], {**TAP_RULES[3], "resources": ["pods", "services", "namespaces", "nodes"]},
                          TAP_RULES[4]]})
    kube.delete("ClusterRole", "shark-hub")
    with pytest.raises(Forbidden) as refused:
        Run(kube, forwarder).tap()
    assert 'is attempting to grant RBAC permissions not currently held:\n{APIGroups:[""], Resources:["endpoints"], ' \
        'Verbs:["get" "list" "watch"]}' in refused.value.message


CLEAN_RULES = [  # what docs/CLUSTER.md says `clean` needs
    {"apiGroups": [""], "resources": ["namespaces", "serviceaccounts", "services", "secrets"],
     "verbs": ["get", "list", "delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "daemonsets"], "verbs": ["get", "list", "delete"]},
    {"apiGroups": ["rbac.authorization.k8s.io"],
     "resources": ["clusterroles", "clusterrolebindings", "roles", "rolebindings"], "verbs": ["get", "list", "delete"]},
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "create", "delete"]},   # the wipe pods
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
]


def test_clean_works_for_a_user_with_only_the_documented_rbac(kube, nodes, forwarder):
    assert Run(kube, forwarder).tap(DeployOptions(target_namespaces=("default",), hub_storage="1Gi")) == 0
    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "cleaner"},
                 "rules": CLEAN_RULES})
    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": "cleaner"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cleaner"},
                 "subjects": [{"kind": "User", "name": "ops", "apiGroup": "rbac.authorization.k8s.io"}]})
    token = kube.token_for(Identity("ops", ("system:authenticated",)))
    kube.kubeconfig = kube.write_kubeconfig(kube.kubeconfig.with_name("ops"), token=token)
    run = Run(kube, forwarder)
    assert run.runner.clean() == 0 and run.said[-1] == "namespace/shark deleted"
    assert [r for r in kube.requests if r.user == "ops" and r.status >= 400 and r.status != 404] == []


OPEN_RULES = [   # what docs/CLUSTER.md says `open` needs
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["services", "secrets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"]},
]


def test_open_works_for_a_user_with_only_the_documented_rbac(kube, nodes, forwarder, kubectl, web_server, tmp_path):
    """A user outside system:masters, bound in the release namespace to exactly the rules
    docs/CLUSTER.md lists for `open`, opens the UI through the real kubectl port-forward."""
    Run(kube, forwarder).tap()
    kube.port_forward_address = lambda pod, port: web_server
    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": {"name": "shark-open", "namespace": "shark"}, "rules": OPEN_RULES})
    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "shark-open", "namespace": "shark"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "shark-open"},
                 "subjects": [{"kind": "User", "name": "dev", "apiGroup": "rbac.authorization.k8s.io"}]})
    config = kube.write_kubeconfig(tmp_path / "dev", token=kube.token_for(Identity("dev", ("system:authenticated",))))
    said: list[str] = []
    runner = ClusterRunner(Access(str(config), None, "shark"), said.append, said.append,
                           forwarder=KubectlForwarder(str(config)), opener=lambda url: None, view_factory=LineView,
                           poll_interval=0.05)
    port = free_port()
    failed: list[BaseException] = []

    def open_ui() -> None:
        try:
            runner.open(Proxy("127.0.0.1", port, False), 20)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            failed.append(error)
    thread = threading.Thread(target=open_ui)
    thread.start()
    try:
        assert kube.wait_for(lambda: answers(f"http://127.0.0.1:{port}/") or failed, 30, "the forward") \
            == "hub here", failed
    finally:
        runner.stop.set()
        thread.join(20)
    refused = [(r.method, r.path) for r in kube.requests if r.user == "dev" and r.status == 403]
    assert refused == []


def test_kubectl_forwarder_reports_why_it_could_not_forward(kube, nodes, forwarder, kubectl, web_server,
                                                            monkeypatch):
    Run(kube, forwarder).tap()
    real = KubectlForwarder(str(kube.kubeconfig), "shark-test")
    assert real.command("shark", "shark-hub", 8899, "127.0.0.1", 9000) == [
        "kubectl", "--kubeconfig", str(kube.kubeconfig), "--context", "shark-test", "port-forward", "--namespace",
        "shark", "svc/shark-hub", "9000:8899", "--address", "127.0.0.1"]
    # RBAC: the upgrade needs create on pods/portforward
    kube.forbid("create", "pods/portforward")
    with pytest.raises(SharkError) as refused:
        real("shark", "shark-hub", 8899, "127.0.0.1", free_port())
    assert refused.value.message.startswith("the cluster refused the port-forward:")
    assert (f'pods "{hub_pod(kube)}" is forbidden: User "tester" cannot create resource "pods/portforward" in '
            'API group "" in the namespace "shark"') in refused.value.message
    assert "kubectl auth can-i create pods --subresource=portforward" in refused.value.hint
    kube.allow_all()
    # the pod's port refuses: the kubelet's message comes back on the error stream and the forward ends
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        kube.port_forward_address = lambda pod, port: closed.getsockname()
        local = free_port()
        forward = real("shark", "shark-hub", 8899, "127.0.0.1", local)
        try:
            assert answers(f"http://127.0.0.1:{local}/") is None
            reason = forward.wait(30)
        finally:
            forward.stop()
    assert reason is not None and "error forwarding port 8899 to pod" in "\n".join(forward.errors)
    assert "connect: connection refused" in "\n".join(forward.errors)
    # the local port taken after the check (another process won the race): kubectl's own refusal
    monkeypatch.setattr(forward_module, "check_port_free", lambda host, port: None)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(SharkError) as busy:
            real("shark", "shark-hub", 8899, "127.0.0.1", port)
    assert busy.value.message == (f"cannot listen on 127.0.0.1:{port}: unable to listen on any of the requested "
                                  f"ports: [{{{port} 8899}}]")
    assert "--proxy-port" in busy.value.hint


def test_a_taken_local_port_fails_before_anything_is_deployed(kube, nodes):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = Run(kube, forwarder=None)
        with pytest.raises(SharkError) as failed:
            run.tap(port=port)
    assert failed.value.message.startswith(f"cannot listen on 127.0.0.1:{port}")
    assert "--proxy-port" in failed.value.hint
    assert kube.writes() == []


# ---- the command line: exit codes and messages -----------------------------------------------------

def test_cli_tap_status_and_clean(kube, nodes, shark_cli):
    config = str(kube.kubeconfig)
    tapped = shark_cli("tap", "web", "-n", "default", "--kubeconfig", config, "--no-open", "--proxy-port",
                       str(free_port()))
    assert tapped.exit_code == 0, tapped.stderr
    assert "kubectl-shark UI and API at http://127.0.0.1:" in tapped.stdout
    status = shark_cli("status", "--kubeconfig", config)
    assert status.exit_code == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == f"kubectl-shark in namespace shark, context shark-test, server {kube.url}"
    assert sum(line.split()[0] in {"node-a", "node-b", "node-c"} and line.endswith("ready") for line in lines) == 3
    assert "targets: pods matching 'web' in namespace default" in status.stdout
    kube.pod_behavior = {"node-a": "crash-loop", "*": "ready"}
    kube.wait_for(lambda: "CrashLoopBackOff" in shark_cli("status", "--cluster", "--kubeconfig", config).stdout,
                  what="the crash loop in status")
    broken = shark_cli("status", "--cluster", "--kubeconfig", config)
    assert broken.exit_code == 1 and "kubectl-shark: 1 of 4 not ready" in broken.stderr
    hub_pod = kube.list("Pod", "shark", "app.kubernetes.io/component=hub")[0]["metadata"]["name"]
    kube.append_log("shark", hub_pod, "hub", "hub serving on http://0.0.0.0:8899")
    logs = shark_cli("logs", "--component", "hub", "--kubeconfig", config)
    assert logs.exit_code == 0 and logs.stdout == "[hub] hub serving on http://0.0.0.0:8899\n"
    opened = shark_cli("open", "--no-open", "--kubeconfig", config, "--proxy-port", str(free_port()))
    assert opened.exit_code == 0 and "kubectl-shark UI and API at http://127.0.0.1:" in opened.stdout
    cleaned = shark_cli("clean", "--kubeconfig", config)
    assert cleaned.exit_code == 0 and "namespace/shark deleted" in cleaned.stderr


def test_cli_failures_are_one_line_with_a_hint_and_exit_1(kube, shark_cli, tmp_path):
    missing = shark_cli("tap", "--kubeconfig", str(tmp_path / "nope"), "--no-open")
    assert missing.exit_code == 1
    assert missing.stderr.splitlines()[0] == f"kubectl-shark: no cluster to talk to: no kubeconfig at {tmp_path / 'nope'}"
    assert missing.stderr.splitlines()[1].startswith("hint: pass --kubeconfig FILE or set KUBECONFIG")
    closed = free_port()
    dead = tmp_path / "dead"
    dead.write_text(Path(kube.kubeconfig).read_text().replace(f":{kube.port}", f":{closed}"))
    unreachable = shark_cli("clean", "--kubeconfig", str(dead))
    assert unreachable.exit_code == 1
    assert unreachable.stderr.splitlines()[0] == (f"kubectl-shark: cannot reach the cluster at "
                                                  f"https://127.0.0.1:{closed}: connection refused")
    assert "kubectl cluster-info --context shark-test" in unreachable.stderr
    kube.forbid("list", "daemonsets")
    refused = shark_cli("clean", "--kubeconfig", str(kube.kubeconfig))
    assert refused.exit_code == 1 and "kubectl-shark: not allowed to list daemonsets.apps in namespace shark" \
        in refused.stderr
    assert "Traceback" not in refused.stderr + unreachable.stderr + missing.stderr


def test_cli_image_pull_failure_shows_each_pod_and_exits_1(kube, nodes, shark_cli):
    kube.pullable_images = set()
    failed = shark_cli("tap", "-A", "--kubeconfig", str(kube.kubeconfig), "--no-open", "--image", "nope/shark:1")
    assert failed.exit_code == 1
    lines = failed.stderr.splitlines()
    reason = next(n for n, line in enumerate(lines) if line.startswith("kubectl-shark: pod "))
    assert "cannot start: ImagePullBackOff: Back-off pulling image \"nope/shark:1\"" in lines[reason]
    assert sum("ImagePullBackOff" in line for line in lines[reason + 1:]) >= 1      # the pods, indented
    assert lines[-1].startswith("hint: the nodes cannot pull nope/shark:1")


def test_dry_run_needs_no_cluster_and_prints_valid_manifests(tmp_path, kube):
    kube.write_kubeconfig(tmp_path / "ctx", namespace="shop")
    done = CliRunner().invoke(cli, ["tap", "--dry-run", "--kubeconfig", str(tmp_path / "ctx"), "--tls"],
                              catch_exceptions=False)
    assert done.exit_code == 0, done.stderr
    objects = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert len(objects) == 10
    for obj in objects:
        kubernetes_validate.validate(obj, "1.33.0", strict=True)
    hub = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert hub["args"][-2:] == ["--target-namespace", "shop"]        # the context's namespace, as kubectl does
    assert kube.requests == []                                       # nothing was asked of the cluster
    nowhere = CliRunner().invoke(cli, ["tap", "--dry-run", "-A", "--kubeconfig", str(tmp_path / "none")],
                                 catch_exceptions=False)
    assert nowhere.exit_code == 0 and "--target-namespace" not in nowhere.stdout
    # tap's redaction options reach the workers' arguments
    redacting = CliRunner().invoke(cli, ["tap", "--dry-run", "-A", "--kubeconfig", str(tmp_path / "none"),
                                         "--redact-header", "X-Session", "--redact-field", "otp"],
                                   catch_exceptions=False)
    worker = next(o for o in yaml.safe_load_all(redacting.stdout) if o and o["kind"] == "DaemonSet")
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-4:] == ["--redact-header", "X-Session", "--redact-field", "otp"]
    assert "redact" not in nowhere.stdout                            # on by default, with the defaults
    # --hub-storage: the claim, and the hub on it
    stored = CliRunner().invoke(cli, ["tap", "--dry-run", "-A", "--kubeconfig", str(tmp_path / "none"),
                                      "--hub-storage", "5Gi", "--hub-storage-class", "fast"], catch_exceptions=False)
    assert stored.exit_code == 0, stored.stderr
    claim = next(o for o in yaml.safe_load_all(stored.stdout) if o and o["kind"] == "PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi" and claim["spec"]["storageClassName"] == "fast"
    for args, message in [(["--hub-storage", "10Mi"], "--hub-storage: 10Mi is too small"),
                          (["--local", "--hub-storage", "5Gi"], "--hub-storage is for a cluster")]:
        refused = CliRunner().invoke(cli, ["tap", "--dry-run", "--kubeconfig", str(tmp_path / "none"), *args]
                                     if "--local" not in args else ["tap", *args], catch_exceptions=False)
        assert refused.exit_code == 2 and message in refused.stderr, refused.stderr


# ---- kubectl plugin discovery -------------------------------------------------------------------

def test_kubectl_finds_the_plugin_on_path(kubectl, tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PATH": f"{root}{os.pathsep}{os.environ['PATH']}", "KUBECONFIG": str(kubectl.kubeconfig)}
    listed = subprocess.run(["kubectl", "plugin", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert f"{root}/kubectl-shark" in listed.stdout, listed.stdout + listed.stderr
    version = subprocess.run(["kubectl", "shark", "version"], env=env, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("kubectl-shark ")
    help_text = subprocess.run(["kubectl", "shark", "--help"], env=env, capture_output=True, text=True, timeout=60)
    for command in ("tap", "open", "clean", "status", "logs", "version"):
        assert f"  {command} " in help_text.stdout


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="needs make and git")
def test_make_krew_builds_the_archive_the_manifest_describes(tmp_path):
    root = Path(__file__).resolve().parents[2]
    manifest_path = tmp_path / "plugin.yaml"
    shutil.copy(root / "plugin.yaml", manifest_path)
    subprocess.run(["make", "-s", "krew", f"DIST={tmp_path}/dist", f"PLUGIN={manifest_path}"], cwd=root, check=True,
                   capture_output=True, timeout=120)
    manifest = yaml.safe_load(manifest_path.read_text())
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin" and manifest["metadata"]["name"] == "shark"
    archive = tmp_path / "dist" / "kubectl-shark-0.1.0.tar.gz"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert manifest["spec"]["version"] == "v0.1.0"
    for platform in manifest["spec"]["platforms"]:
        assert platform["sha256"] == digest and platform["uri"].endswith("/kubectl-shark-0.1.0.tar.gz")
        assert platform["bin"] == "kubectl-shark"
        top = platform["files"][0]["from"].removesuffix("/*")
        assert f"{top}/kubectl-shark" in names and f"{top}/manifests/kustomization.yaml" in names
    assert not any(name.endswith("/plugin.yaml") for name in names)
