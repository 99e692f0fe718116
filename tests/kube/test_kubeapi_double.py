"""The Kubernetes API double answers as the real API does for the calls this project makes.

Every expectation here is the real API server's behaviour (status codes and Status bodies,
resourceVersion, watch events, server-side apply), checked through three clients: the real
kubectl, the kubernetes Python client and plain HTTP. If the double drifted from the real API,
tests built on it would prove nothing; these keep it honest.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes import watch as kwatch
from kubernetes.client.rest import ApiException

from support.kubeapi import KubeAPI, iter_watch
from support.kubeapi_model import ApiError
from support.processes import free_port
from support.kubeapi_rbac import Identity

ROOT = Path(__file__).resolve().parents[2]


def api(kube: KubeAPI) -> kclient.ApiClient:
    return kconfig.new_client_from_config(config_file=str(kube.kubeconfig), persist_config=False)


def configmap(name: str, ns: str = "default", **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data}


def status_of(error: ApiException) -> dict[str, Any]:
    return json.loads(error.body)


# ---- kubectl -----------------------------------------------------------------------------------

def test_kubectl_applies_the_manifests_then_finds_nothing_to_change(kube, kubectl, nodes):
    first = kubectl("apply", "-k", str(ROOT / "manifests"))
    assert "namespace/shark created" in first.stdout
    assert "daemonset.apps/shark-worker created" in first.stdout
    # the pods read the token from a Secret the manifests do not hold: they wait for it, as a
    # kubelet makes them, until it is created the way docs/CLUSTER.md says
    reasons = "jsonpath={.items[*].status.containerStatuses[*].state.waiting.reason}"
    kube.wait_for(lambda: kubectl("get", "pods", "-n", "shark", "-o", reasons).stdout.split()
                  == ["CreateContainerConfigError"] * 4, what="the pods to wait for their Secret")
    secret = kubectl("create", "secret", "generic", "shark-token", "-n", "shark", "--from-literal=token=s3cret-t0ken",
                     "--dry-run=client", "-o", "yaml").stdout
    kubectl("apply", "-f", "-", input=secret)
    encoded = kubectl("get", "secret", "shark-token", "-n", "shark", "-o", "jsonpath={.data.token}").stdout
    assert encoded == "czNjcmV0LXQwa2Vu"                          # base64, as the API stores it
    kube.wait_for(lambda: (kube.get("DaemonSet", "shark-worker", "shark").get("status") or {}).get("numberReady") == 3
                  and (kube.get("Deployment", "shark-hub", "shark").get("status") or {}).get("readyReplicas") == 1,
                  what="the controllers to settle")
    settled = {(o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
               for kind in ("DaemonSet", "Deployment", "Service", "ServiceAccount") for o in kube.list(kind, "shark")}
    again = kubectl("apply", "-k", str(ROOT / "manifests"))
    assert again.stdout.count("unchanged") == 10, again.stdout
    assert {(o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for kind in ("DaemonSet", "Deployment", "Service", "ServiceAccount") for o in kube.list(kind, "shark")} \
        == settled
    listing = kubectl("get", "daemonsets,deployments,services", "-n", "shark", "-o", "name").stdout.split()
    assert sorted(listing) == ["daemonset.apps/shark-worker", "deployment.apps/shark-hub", "service/shark-hub"]


def test_kubectl_server_side_apply_and_delete_by_label(kube, kubectl, nodes):
    out = kubectl("apply", "--server-side", "--field-manager", "kubectl-shark", "-k", str(ROOT / "manifests"))
    assert out.stdout.count("serverside-applied") == 10
    kube.wait_for(lambda: len(kube.list("Pod", "shark", "app.kubernetes.io/component=worker")) == 3,
                  what="a worker pod per node")
    gone = kubectl("delete", "daemonsets,deployments,services,serviceaccounts", "-n", "shark",
                   "-l", "app.kubernetes.io/managed-by=kubectl-shark")
    assert 'daemonset.apps "shark-worker" deleted' in gone.stdout
    assert kube.list("DaemonSet", "shark") == [] and kube.list("ServiceAccount", "shark") == []
    # the garbage collector takes the DaemonSet's pods and the Deployment's ReplicaSet with them
    kube.wait_for(lambda: kube.list("Pod", "shark") == [] and kube.list("ReplicaSet", "shark") == [],
                  what="dependents deleted")
    missing = kubectl("get", "daemonset", "shark-worker", "-n", "shark", check=False)
    assert missing.returncode == 1
    assert 'daemonsets.apps "shark-worker" not found' in missing.stderr


def test_kubectl_refuses_unknown_fields_through_strict_server_validation(kube, kubectl, tmp_path):
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(json.dumps({**configmap("c"), "spec": {"replicas": 1}}))
    out = kubectl("apply", "-f", str(manifest), check=False)
    assert out.returncode == 1
    assert 'strict decoding error: unknown field "spec"' in out.stderr
    assert kube.find("ConfigMap", "c", "default") is None


def test_kubectl_reports_forbidden_as_the_real_api_words_it(kube, kubectl):
    kube.forbid("list", "pods", namespace="kube-system")
    out = kubectl("get", "pods", "-n", "kube-system", check=False)
    assert out.returncode == 1
    assert ('pods is forbidden: User "tester" cannot list resource "pods" in API group "" in the namespace '
            '"kube-system"') in out.stderr


def test_rbac_authorizes_a_service_account_by_its_bindings(kube, kubectl, tmp_path):
    """RBAC as the real authorizer: ClusterRoleBinding everywhere, RoleBinding in its namespace,
    resourceNames only for named requests; tokens nobody issued are 401, no token is anonymous."""
    kubectl("apply", "-f", str(ROOT / "manifests" / "namespace.yaml"), "-f", str(ROOT / "manifests" / "rbac.yaml"))
    token = kube.service_account_token("shark", "shark-hub")
    hub = httpx.Client(base_url=kube.url, verify=kube.verify, headers={"Authorization": f"Bearer {token}"})
    with hub:
        assert hub.get("/api/v1/pods").status_code == 200                         # ClusterRole: all namespaces
        assert hub.get("/api/v1/namespaces/kube-system/services").status_code == 200
        assert hub.get("/api/v1/namespaces/shark/configmaps/shark-scripts").status_code == 404   # allowed: missing
        made = hub.post("/api/v1/namespaces/shark/configmaps", json=configmap("shark-scripts", "shark"))
        assert made.status_code == 201
        assert hub.put("/api/v1/namespaces/shark/configmaps/shark-scripts", json=made.json()).status_code == 200
        refusals = {
            ("get", "/api/v1/namespaces/shark/configmaps/other"):
                'configmaps "other" is forbidden: User "system:serviceaccount:shark:shark-hub" cannot get resource '
                '"configmaps" in API group "" in the namespace "shark"',
            ("post", "/api/v1/namespaces/default/configmaps"):        # the Role is bound in shark only
                'configmaps is forbidden: User "system:serviceaccount:shark:shark-hub" cannot create resource '
                '"configmaps" in API group "" in the namespace "default"',
            ("get", "/api/v1/namespaces/shark/configmaps"):           # a list has no name: resourceNames miss
                'configmaps is forbidden: User "system:serviceaccount:shark:shark-hub" cannot list resource '
                '"configmaps" in API group "" in the namespace "shark"',
            ("delete", "/api/v1/namespaces/default/pods/x"):
                'pods "x" is forbidden: User "system:serviceaccount:shark:shark-hub" cannot delete resource "pods" '
                'in API group "" in the namespace "default"',
            ("get", "/apis/apps/v1/daemonsets"):
                'daemonsets.apps is forbidden: User "system:serviceaccount:shark:shark-hub" cannot list resource '
                '"daemonsets" in API group "apps" at the cluster scope',
            ("get", "/api/v1/namespaces/default/pods/x/log"):
                'pods "x" is forbidden: User "system:serviceaccount:shark:shark-hub" cannot get resource "pods/log" '
                'in API group "" in the namespace "default"',
        }
        for (method, path), message in refusals.items():
            answer = hub.request(method.upper(), path, json=configmap("c") if method == "post" else None)
            assert (answer.status_code, answer.json()["reason"], answer.json()["message"]) == (
                403, "Forbidden", message), path
        kube.delete("ServiceAccount", "shark-hub", "shark")       # its tokens die with it
        assert hub.get("/api/v1/pods").json() == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                                   "status": "Failure", "message": "Unauthorized",
                                                   "reason": "Unauthorized", "code": 401}
    assert httpx.get(f"{kube.url}/api/v1/pods", verify=kube.verify,
                     headers={"Authorization": "Bearer made-up"}).status_code == 401
    anonymous = httpx.get(f"{kube.url}/api/v1/pods", verify=kube.verify)
    assert anonymous.status_code == 403 and 'User "system:anonymous" cannot list' in anonymous.json()["message"]
    # a user outside system:masters gets what a RoleBinding to it grants, as kubectl shows
    user = kube.token_for(Identity("dev", ("system:authenticated",)))
    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "dev-view", "namespace": "default"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "shark-hub"},
                 "subjects": [{"kind": "User", "name": "dev", "apiGroup": "rbac.authorization.k8s.io"}]})
    dev = type(kubectl)(kube.write_kubeconfig(tmp_path / "dev", token=user), tmp_path / "dev-cache")
    assert dev("get", "pods", "-n", "default").returncode == 0
    denied = dev("get", "pods", "-n", "kube-system", check=False)
    assert denied.returncode == 1 and ('pods is forbidden: User "dev" cannot list resource "pods" in API group "" in '
                                       'the namespace "kube-system"') in denied.stderr


def test_rbac_refuses_to_grant_what_the_granter_does_not_hold(kube):
    """Privilege escalation prevention: a Role/ClusterRole (or a binding to one) can only carry
    permissions its creator holds, unless it has escalate (roles) or bind (bindings)."""
    def cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
                "rules": rules}

    def binding(name: str, role: str, user: str) -> dict[str, Any]:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]}
    rbac = {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "clusterrolebindings"],
            "verbs": ["create"]}
    kube.create(cluster_role("rbac-writer", [rbac]))
    kube.create(binding("dev-rbac", "rbac-writer", "dev"))
    token = kube.token_for(Identity("dev", ("system:authenticated",)))
    hub_role = next(o for o in yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text())
                    if o["kind"] == "ClusterRole")
    url = f"{kube.url}/apis/rbac.authorization.k8s.io/v1/clusterroles"
    with httpx.Client(verify=kube.verify, headers={"Authorization": f"Bearer {token}"}) as dev:
        refused = dev.post(url, json=hub_role)
        assert refused.status_code == 403
        message = refused.json()["message"]
        assert message.startswith('clusterroles.rbac.authorization.k8s.io "shark-hub" is forbidden: user "dev" '
                                  '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not '
                                  'currently held:\n'
                                  '{APIGroups:[""], Resources:["pods"], Verbs:["get" "list" "watch"]}\n')
        assert message.count("\n") == 5                      # one line per resource, none held
        # holding them, dev may grant them, and bind them
        kube.create(cluster_role("viewer", hub_role["rules"]))
        kube.create(binding("dev-view", "viewer", "dev"))
        assert dev.post(url, json=hub_role).status_code == 201
        assert dev.post(f"{url.replace('clusterroles', 'clusterrolebindings')}",
                        json=binding("hub", "shark-hub", "someone")).status_code == 201
        # a binding to a role with more than dev holds is refused too, unless dev may bind it
        kube.create(cluster_role("admin-ish", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]))
        bindings = url.replace("clusterroles", "clusterrolebindings")
        assert dev.post(bindings, json=binding("promote", "admin-ish", "dev")).status_code == 403
        kube.create(cluster_role("binder", [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                                             "verbs": ["bind"], "resourceNames": ["admin-ish"]}]))
        kube.create(binding("dev-binder", "binder", "dev"))
        assert dev.post(bindings, json=binding("promote", "admin-ish", "dev")).status_code == 201


# ---- status codes and objects ------------------------------------------------------------------

def test_errors_are_status_objects_with_the_real_codes(kube):
    core = kclient.CoreV1Api(api(kube))
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("nope", "default")
    assert missing.value.status == 404
    assert status_of(missing.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'configmaps "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "group": "", "kind": "configmaps"}, "code": 404}
    core.create_namespaced_config_map("default", configmap("c", a="1"))
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map("default", configmap("c"))
    assert (exists.value.status, status_of(exists.value)["reason"]) == (409, "AlreadyExists")
    with pytest.raises(ApiException) as bad_name:
        core.create_namespaced_config_map("default", configmap("Not_Valid"))
    assert bad_name.value.status == 422 and status_of(bad_name.value)["reason"] == "Invalid"
    assert status_of(bad_name.value)["details"]["causes"][0]["field"] == "metadata.name"
    with pytest.raises(ApiException) as no_ns:
        core.create_namespaced_config_map("nowhere", configmap("c", "nowhere"))
    assert no_ns.value.status == 404 and status_of(no_ns.value)["message"] == 'namespaces "nowhere" not found'
    stale = core.read_namespaced_config_map("c", "default").to_dict()
    core.patch_namespaced_config_map("c", "default", {"data": {"a": "2"}})
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("c", "default", {**configmap("c", a="3"),
                                                            "metadata": {**stale["metadata"]}})
    assert conflict.value.status == 409 and "the object has been modified" in status_of(conflict.value)["message"]


def test_resource_versions_generation_and_status_subresource(kube):
    kube.add_node("node-a", "127.213.0.2")
    apps = kclient.AppsV1Api(api(kube))
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}}},
            "status": {"replicas": 99}}
    created = apps.create_namespaced_deployment("default", body)
    assert created.metadata.generation == 1 and created.spec.replicas == 1      # defaulted
    assert created.status is None or created.status.replicas != 99             # status is not writable here
    rv = int(created.metadata.resource_version)
    labelled = apps.patch_namespaced_deployment("web", "default", {"metadata": {"labels": {"team": "a"}}})
    assert labelled.metadata.generation == 1 and int(labelled.metadata.resource_version) > rv
    scaled = apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    assert scaled.metadata.generation == 2
    kube.wait_for(lambda: (kube.get("Deployment", "web", "default").get("status") or {}).get("readyReplicas") == 2,
                  what="the controllers to run two ready pods")
    status = kube.get("Deployment", "web", "default")["status"]
    assert status["observedGeneration"] == 2 and status["updatedReplicas"] == 2


def test_list_pages_and_selectors(kube):
    for i in range(5):
        kube.create({**configmap(f"c{i}"), "metadata": {"name": f"c{i}", "namespace": "default",
                                                          "labels": {"tier": "a" if i < 3 else "b"}}})
    core = kclient.CoreV1Api(api(kube))
    page = core.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in page.items] == ["c0", "c1"] and page.metadata._continue
    rest = core.list_namespaced_config_map("default", limit=10, _continue=page.metadata._continue)
    assert [c.metadata.name for c in rest.items] == ["c2", "c3", "c4"] and not rest.metadata._continue
    assert len(core.list_namespaced_config_map("default", label_selector="tier in (b)").items) == 2
    assert len(core.list_namespaced_config_map("default", label_selector="tier!=b,tier").items) == 3
    assert [c.metadata.name for c in core.list_namespaced_config_map(
        "default", field_selector="metadata.name=c4").items] == ["c4"]
    with pytest.raises(ApiException) as bad:
        core.list_namespaced_config_map("default", label_selector="tier in (")
    assert bad.value.status == 400


# ---- watch -------------------------------------------------------------------------------------

def test_watch_from_a_resource_version_sees_every_change_in_order(kube):
    core = kclient.CoreV1Api(api(kube))
    start = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", configmap("w", a="1"))
    core.patch_namespaced_config_map("w", "default", {"data": {"a": "2"}})
    core.delete_namespaced_config_map("w", "default")
    events = [(e["type"], e["object"].metadata.name, (e["object"].data or {}).get("a"))
              for e in kwatch.Watch().stream(core.list_namespaced_config_map, "default",
                                             resource_version=start, timeout_seconds=1)]
    assert events == [("ADDED", "w", "1"), ("MODIFIED", "w", "2"), ("DELETED", "w", "2")]


def test_list_pages_are_one_snapshot_until_the_revision_is_compacted(kube):
    for name in ("a", "b", "c", "d"):
        kube.create(configmap(name))
    url = f"{kube.url}/api/v1/namespaces/default/configmaps"
    first = kube.http.get(url, params={"limit": "2"}).json()
    assert [i["metadata"]["name"] for i in first["items"]] == ["a", "b"]
    assert first["metadata"]["remainingItemCount"] == 2
    token = first["metadata"]["continue"]
    assert json.loads(base64.urlsafe_b64decode(token + "==")) == {
        "v": "meta.k8s.io/v1", "rv": int(first["metadata"]["resourceVersion"]), "start": "default/b\x00"}
    # changes after the first page do not show in the next: it is read at the first's revision
    kube.delete("ConfigMap", "c", "default")
    kube.create(configmap("e"))
    kube.create(configmap("bb"))
    second = kube.http.get(url, params={"limit": "2", "continue": token}).json()
    assert [i["metadata"]["name"] for i in second["items"]] == ["c", "d"]
    assert "continue" not in second["metadata"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    # once compacted, the token is too old: 410 Expired with a token that goes on inconsistently
    kube.compact()
    expired = kube.http.get(url, params={"limit": "2", "continue": token})
    assert expired.status_code == 410 and expired.json()["reason"] == "Expired"
    assert expired.json()["message"].startswith("The provided continue parameter is too old to display a "
                                                "consistent list result.")
    rest = kube.http.get(url, params={"continue": expired.json()["metadata"]["continue"]}).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["bb", "d", "e"]
    assert kube.http.get(url, params={"continue": "nonsense"}).status_code == 400


def test_watch_without_resource_version_starts_with_what_exists(kube):
    kube.create(configmap("old"))
    with kube.http.stream("GET", f"{kube.url}/api/v1/namespaces/default/configmaps",
                      params={"watch": "1", "timeoutSeconds": "1"}) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        events = list(iter_watch(response.iter_lines()))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "old")]
    assert events[0]["object"]["kind"] == "ConfigMap"


def test_watch_from_a_compacted_resource_version_gets_410_expired(kube):
    kube.create(configmap("a"))
    old = str(kube.store.revision)
    kube.create(configmap("b"))
    kube.compact()
    with kube.http.stream("GET", f"{kube.url}/api/v1/configmaps",
                          params={"watch": "true", "resourceVersion": old}) as r:
        assert r.status_code == 200
        events = list(iter_watch(r.iter_lines()))
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


def test_watch_with_a_selector_sees_objects_enter_and_leave_it(kube):
    kube.create(configmap("x"))
    start = str(kube.store.revision)
    core = kclient.CoreV1Api(api(kube))
    core.patch_namespaced_config_map("x", "default", {"metadata": {"labels": {"app": "shark"}}})
    core.patch_namespaced_config_map("x", "default", {"data": {"k": "v"}})
    core.patch_namespaced_config_map("x", "default", {"metadata": {"labels": {"app": None}}})
    with kube.http.stream("GET", f"{kube.url}/api/v1/configmaps", params={
            "watch": "1", "resourceVersion": start, "labelSelector": "app=shark", "timeoutSeconds": "1"}) as r:
        kinds = [e["type"] for e in iter_watch(r.iter_lines())]
    assert kinds == ["ADDED", "MODIFIED", "DELETED"]


def test_watch_bookmarks_and_server_side_close(kube):
    got: list[str] = []

    def read() -> None:
        with kube.http.stream("GET", f"{kube.url}/api/v1/pods", params={
                "watch": "1", "resourceVersion": str(kube.store.revision), "allowWatchBookmarks": "true"},
                timeout=10) as r:
            for event in iter_watch(r.iter_lines()):
                got.append(event["type"])
    reader = threading.Thread(target=read)
    reader.start()
    kube.wait_for(lambda: "BOOKMARK" in got, what="a bookmark on an idle watch")
    kube.close_watches()
    reader.join(5)
    assert not reader.is_alive(), "the watch stream did not end"


# ---- server-side apply ---------------------------------------------------------------------------

def apply(kube: KubeAPI, obj: dict[str, Any], manager: str = "kubectl-shark", force: bool = False) -> httpx.Response:
    meta = obj["metadata"]
    return kube.http.patch(f"{kube.url}/api/v1/namespaces/{meta['namespace']}/configmaps/{meta['name']}",
                       params={"fieldManager": manager, **({"force": "true"} if force else {})},
                       content=json.dumps(obj), headers={"Content-Type": "application/apply-patch+yaml"})


def test_server_side_apply_creates_then_changes_only_what_differs(kube):
    first = apply(kube, configmap("s", a="1", b="2"))
    assert first.status_code == 201
    rv = first.json()["metadata"]["resourceVersion"]
    same = apply(kube, configmap("s", a="1", b="2"))
    assert same.status_code == 200 and same.json()["metadata"]["resourceVersion"] == rv
    fewer = apply(kube, configmap("s", a="1")).json()
    assert fewer["data"] == {"a": "1"} and fewer["metadata"]["resourceVersion"] != rv   # b is no longer applied
    managers = [m["manager"] for m in fewer["metadata"]["managedFields"]]
    assert managers == ["kubectl-shark"]


def test_server_side_apply_conflicts_with_another_manager_unless_forced(kube):
    apply(kube, configmap("s", a="1"), manager="someone")
    clash = apply(kube, configmap("s", a="2"))
    assert clash.status_code == 409 and clash.json()["reason"] == "Conflict"
    assert clash.json()["details"]["causes"][0]["field"] == ".data.a"
    forced = apply(kube, configmap("s", a="2"), force=True)
    assert forced.status_code == 200 and forced.json()["data"] == {"a": "2"}
    no_manager = kube.http.patch(f"{kube.url}/api/v1/namespaces/default/configmaps/s",
                                 content=json.dumps(configmap("s")),
                                 headers={"Content-Type": "application/apply-patch+yaml"})
    assert no_manager.status_code == 422


def deployment(*containers: dict[str, Any], name: str = "app") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
                "metadata": {"labels": {"app": name}}, "spec": {"containers": list(containers)}}}}


def test_server_side_apply_merges_associative_lists_per_key(kube):
    """Containers by name, env by name, a container's ports by containerPort+protocol: two
    managers own different items of one list, and each apply changes only its own
    (https://kubernetes.io/docs/reference/using-api/server-side-apply/#merge-strategy)."""
    def containers() -> dict[str, dict[str, Any]]:
        spec = kube.get("Deployment", "app", "default")["spec"]["template"]["spec"]
        return {c["name"]: c for c in spec["containers"]}
    kube.apply(deployment({"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}],
                           "ports": [{"containerPort": 53, "protocol": "UDP"}]}), manager="tap")
    kube.apply(deployment({"name": "app", "env": [{"name": "B", "value": "2"}],
                           "ports": [{"containerPort": 53, "protocol": "TCP"}]},
                          {"name": "sidecar", "image": "proxy:1"}), manager="mesh", force=False)
    merged = containers()
    assert list(merged) == ["app", "sidecar"] and merged["app"]["image"] == "app:1"
    assert merged["app"]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert merged["app"]["ports"] == [{"containerPort": 53, "protocol": "UDP"},
                                      {"containerPort": 53, "protocol": "TCP"}]
    managed = {m["manager"]: m["fieldsV1"]
               for m in kube.get("Deployment", "app", "default")["metadata"]["managedFields"]}
    mesh = managed["mesh"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert set(mesh) == {'k:{"name":"app"}', 'k:{"name":"sidecar"}'}
    assert mesh['k:{"name":"app"}']["f:ports"] == {'k:{"containerPort":53,"protocol":"TCP"}': {
        ".": {}, "f:containerPort": {}, "f:protocol": {}}}
    # tap stops applying env A and changes its image: mesh's items are left alone
    kube.apply(deployment({"name": "app", "image": "app:2", "ports": [{"containerPort": 53, "protocol": "UDP"}]}),
               manager="tap", force=False)
    merged = containers()
    assert merged["app"]["image"] == "app:2" and merged["app"]["env"] == [{"name": "B", "value": "2"}]
    assert [p["protocol"] for p in merged["app"]["ports"]] == ["UDP", "TCP"] and "sidecar" in merged
    # changing a field of mesh's item is a conflict named by the item's keys
    with pytest.raises(ApiError) as clash:
        kube.apply(deployment({"name": "app", "image": "app:2"}, {"name": "sidecar", "image": "proxy:2"}),
                   manager="tap", force=False)
    assert clash.value.code == 409
    assert '- .spec.template.spec.containers[name="sidecar"].image' in clash.value.message
    # mesh stops applying: its items go; the app container stays, tap owns fields of it
    kube.apply(deployment({"name": "app", "env": [{"name": "B", "value": "2"}]}), manager="mesh", force=False)
    kube.apply(deployment(), manager="mesh", force=False)
    merged = containers()
    assert list(merged) == ["app"] and "env" not in merged["app"]
    assert merged["app"]["ports"] == [{"containerPort": 53, "protocol": "UDP"}]
    # mesh, having applied an empty list, stops applying the field: tap's items stay
    empty = deployment()
    del empty["spec"]["template"]["spec"]["containers"]
    kube.apply(empty, manager="mesh", force=False)
    assert list(containers()) == ["app"]


def test_namespace_deletion_terminates_then_removes_its_contents(kube):
    kube.store.namespace_finalize_delay = 2.0     # long enough to look at it while it terminates
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gone"}})
    kube.create(configmap("c", "gone"))
    deleted = kube.http.delete(f"{kube.url}/api/v1/namespaces/gone")
    assert deleted.status_code == 200 and deleted.json()["status"]["phase"] == "Terminating"
    again = kube.http.delete(f"{kube.url}/api/v1/namespaces/gone")
    assert again.status_code == 409
    refused = kube.http.post(f"{kube.url}/api/v1/namespaces/gone/configmaps", json=configmap("d", "gone"))
    assert refused.status_code == 403 and "is being terminated" in refused.json()["message"]
    kube.wait_for(lambda: kube.find("Namespace", "gone") is None, what="the namespace to go")
    assert kube.list("ConfigMap", "gone") == []


# ---- controllers and kubelets ----------------------------------------------------------------------

def daemonset(image: str = "app:1") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"hostNetwork": True, "containers": [{"name": "agent", "image": image}]}}}}


def test_a_daemonset_runs_a_pod_per_node_with_the_behaviour_the_test_chose(kube, nodes):
    kube.pod_behavior = {"node-c": "image-pull-backoff", "*": "ready"}
    kube.apply(daemonset())
    status = kube.wait_for(lambda: (s := kube.get("DaemonSet", "agent", "default").get("status") or {})
                           .get("currentNumberScheduled") == 3 and s, what="three pods")
    assert status["desiredNumberScheduled"] == 3
    kube.wait_for(lambda: kube.get("DaemonSet", "agent", "default")["status"]["numberReady"] == 2, what="2 ready")
    pods = {p["spec"]["nodeName"]: p for p in kube.list("Pod", "default", "app=agent")}
    assert pods["node-a"]["status"]["podIP"] == "127.213.0.2"      # host network: the node's address
    waiting = pods["node-c"]["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "app:1"'}
    kube.pod_behavior = "ready"
    kube.wait_for(lambda: kube.get("DaemonSet", "agent", "default")["status"]["numberReady"] == 3, what="3 ready")


def test_endpoints_follow_the_ready_pods_of_a_service(kube, nodes):
    kube.add_pod("web-1", "default", ip="10.244.0.5", labels={"app": "web"}, node="node-a")
    kube.add_pod("web-2", "default", ip="10.244.0.6", labels={"app": "web"}, node="node-b", ready=False)
    kube.add_service("web", "default", "10.96.5.5", selector={"app": "web"}, ports=[{"port": 80, "targetPort": 8080}])
    endpoints = kube.wait_for(lambda: (kube.find("Endpoints", "web", "default") or {}).get("subsets"),
                              what="endpoints")
    assert [a["ip"] for a in endpoints[0]["addresses"]] == ["10.244.0.5"]
    assert [a["ip"] for a in endpoints[0]["notReadyAddresses"]] == ["10.244.0.6"]
    assert endpoints[0]["ports"] == [{"protocol": "TCP", "port": 8080}]
    kube.delete("Service", "web", "default")
    kube.wait_for(lambda: kube.find("Endpoints", "web", "default") is None, what="endpoints removed")


def test_pod_logs_as_the_real_api_serves_them(kube, nodes):
    kube.add_pod("two", "default", ip="10.244.0.7", node="node-a",
                 containers=[{"name": "a", "image": "x"}, {"name": "b", "image": "y"}])
    kube.append_log("default", "two", "a", "first\nsecond\nthird")
    base = f"{kube.url}/api/v1/namespaces/default/pods/two/log"
    assert kube.http.get(base).status_code == 400
    assert "choose one of: [a b]" in kube.http.get(base).json()["message"]
    assert kube.http.get(base, params={"container": "a", "tailLines": "2"}).text == "second\nthird\n"
    lines: list[str] = []

    def follow() -> None:
        with kube.http.stream("GET", base, params={"container": "a", "follow": "true"}, timeout=10) as r:
            for line in r.iter_lines():
                lines.append(line)
    reader = threading.Thread(target=follow)
    reader.start()
    kube.wait_for(lambda: len(lines) == 3, what="the existing lines")
    kube.append_log("default", "two", "a", "fourth")
    kube.wait_for(lambda: lines[-1:] == ["fourth"], what="a followed line")
    kube.delete("Pod", "two", "default")
    reader.join(5)
    assert not reader.is_alive(), "following stops when the pod is gone"


@pytest.mark.parametrize("websockets", ["true", "false"])
def test_kubectl_port_forward_over_a_websocket_or_spdy(kube, kubectl, web_server, websockets, tmp_path):
    """kubectl 1.31+ tunnels SPDY in a WebSocket (GET); with KUBECTL_PORT_FORWARD_WEBSOCKETS=false it
    upgrades to SPDY itself (POST). Bytes go both ways; the session ends with the pod."""
    kube.add_pod("web-1", "default", ip="10.244.0.9", containers=[{"name": "web", "image": "x"}])
    kube.port_forward_address = lambda pod, port: web_server
    local = free_port()
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "KUBECACHEDIR": str(tmp_path / "cache"),
           "KUBECTL_PORT_FORWARD_WEBSOCKETS": websockets}
    with subprocess.Popen(["kubectl", "port-forward", "pod/web-1", f"{local}:8080", "--address", "127.0.0.1"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as forward:
        try:
            assert forward.stdout is not None and forward.stdout.readline().startswith("Forwarding from 127.0.0.1")
            for _ in range(2):       # a stream pair per connection, in one session
                assert httpx.get(f"http://127.0.0.1:{local}/").text == "hub here"
            method = "GET" if websockets == "true" else "POST"
            upgrades = [(r.method, r.status) for r in kube.requests if r.path.endswith("/web-1/portforward")]
            assert upgrades == [(method, 101)]
            kube.delete("Pod", "web-1", "default")
            assert forward.wait(30) == 1
            assert forward.stderr is not None and "lost connection to pod" in forward.stderr.read()
        finally:
            forward.kill()


def test_the_pod_closing_a_forwarded_connection_closes_the_local_one(kube, tmp_path):
    """A pod that answers and closes (an HTTP/1.0 response, an idle keep-alive timeout): the
    local end gets EOF, not a connection kubectl holds open."""
    server = socket.create_server(("127.0.0.1", 0))

    def greet_and_close() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"bye")
    greeter = threading.Thread(target=greet_and_close)
    greeter.start()
    kube.add_pod("greeter", "default", ip="10.244.0.10", containers=[{"name": "g", "image": "x"}])
    kube.port_forward_address = lambda pod, port: server.getsockname()[:2]
    local = free_port()
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "KUBECACHEDIR": str(tmp_path / "cache")}
    with subprocess.Popen(["kubectl", "port-forward", "pod/greeter", f"{local}:8080", "--address", "127.0.0.1"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as forward:
        try:
            assert forward.stdout is not None and forward.stdout.readline().startswith("Forwarding from 127.0.0.1")
            with socket.create_connection(("127.0.0.1", local), timeout=15) as sock:
                received = bytearray()
                while chunk := sock.recv(100):        # EOF, not the socket's timeout
                    received += chunk
            assert received == b"bye"
        finally:
            forward.kill()
            greeter.join(10)
            server.close()


def test_secrets_as_the_real_api_stores_them(kube):
    base = f"{kube.url}/api/v1/namespaces/default/secrets"
    made = kube.http.post(base, json={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                                  "stringData": {"token": "abc"}, "data": {"other": "eHl6"}})
    assert made.status_code == 201
    body = made.json()
    assert body["data"] == {"other": "eHl6", "token": "YWJj"} and "stringData" not in body and body["type"] == "Opaque"
    bad = kube.http.post(base, json={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"},
                                 "data": {"token": "not base64!"}})
    assert bad.status_code == 400 and "illegal base64 data" in bad.json()["message"]
    assert kube.http.get(f"{base}/s").json()["data"]["token"] == "YWJj"
    assert kclient.CoreV1Api(api(kube)).read_namespaced_secret("s", "default").data["token"] == "YWJj"
    assert kube.http.delete(f"{base}/s").status_code == 200
    assert kube.http.get(f"{base}/s").status_code == 404


def test_a_pod_reading_a_missing_secret_waits_then_a_run_to_completion_pod_ends(kube, nodes):
    def pod(name: str, restart: str, command: str | None = None) -> dict[str, Any]:
        container = {"name": "main", "image": "example/app:1",
                     "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": "node-a", "restartPolicy": restart, "containers": [container]}}
    kube.create(pod("waits", "Always"))
    kube.create(pod("once", "Never"))

    def waiting(name: str) -> dict[str, Any] | None:
        statuses = (kube.get("Pod", name, "default").get("status") or {}).get("containerStatuses") or []
        return statuses and statuses[0]["state"].get("waiting")
    assert kube.wait_for(lambda: waiting("waits"), what="a config error") == {
        "reason": "CreateContainerConfigError", "message": 'secret "later" not found'}
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "later", "namespace": "default"},
                 "stringData": {"token": "x"}})
    kube.wait_for(lambda: (kube.get("Pod", "waits", "default")["status"]["phase"] == "Running"), what="it to start")
    done = kube.wait_for(lambda: (p := kube.get("Pod", "once", "default"))["status"]["phase"] == "Succeeded" and p,
                         what="the run-to-completion pod to end")
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
