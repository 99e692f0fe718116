"""A Kubernetes API server double for tests: real HTTP that kubectl and the kubernetes client use.

No API server can run on this machine (FACTS.md), so tests talk to this one. It is purpose-built
and answers the calls the project makes the way the real API does; what it does not do, it
refuses (415/405) rather than pretend. KUBEAPI.md lists each behaviour with the Kubernetes
document it follows. Start it, point a kubeconfig at it, use any client:

    with KubeAPI(controllers=True) as kube:           # 127.0.0.1, a free port, a daemon thread
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")   # context "shark-test"
        kube.add_node("node-a", ip="127.213.0.2")
        subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "apply", "-k", "manifests/"])
        kube.wait_for(lambda: kube.find("DaemonSet", "shark-worker", "shark"))

(`kube` in tests/kube/conftest.py is that as a fixture.) Standing objects: the namespaces default,
kube-system, kube-public and kube-node-lease and the `kubernetes` Service, as in a new cluster.

## HTTP: what it serves
- Discovery: /version, /api, /api/v1, /apis, /apis/{group}, /apis/{group}/{version} (legacy
  discovery documents: kubectl and client-go fall back to them from aggregated discovery),
  /healthz, /livez, /readyz. /openapi/v2 and /openapi/v3 answer 404 (kubectl then validates on
  the server with fieldValidation and builds strategic merge patches from its built-in types).
- Resources (RESOURCES in kubeapi_model.py): core v1 namespaces, nodes, pods, services,
  endpoints, serviceaccounts, configmaps, secrets, persistentvolumeclaims, events; apps/v1 deployments, daemonsets,
  replicasets, statefulsets; rbac.authorization.k8s.io/v1 (cluster)roles(bindings);
  discovery.k8s.io/v1 endpointslices. Paths as the real API: /api/v1/namespaces/NS/pods/NAME,
  /apis/apps/v1/daemonsets (all namespaces), .../NAME/status, /api/v1/namespaces/NS/pods/NAME/log.
- GET (one object; with `Accept: ...;as=Table` the default Name/Created At table kubectl
  prints), list (labelSelector with =, ==, !=, in, notin, exists, !exists; fieldSelector
  metadata.name/namespace and per-resource fields like spec.nodeName, status.phase; items
  without kind/apiVersion as the real lists; `limit` pages with the real continue tokens
  (base64 {v, rv, start}) and remainingItemCount, each later page read from the first page's
  revision (a consistent snapshot, rebuilt from the event log); once `compact()` has forgotten
  that revision, a continue gets the real 410 Expired "The provided continue parameter is too
  old ..." with an inconsistent continue token in the Status's metadata), watch (?watch=1: chunked JSON
  lines {"type", "object"}; no resourceVersion or "0" starts with synthetic ADDED events; a
  resourceVersion resumes after it; one older than the last compaction gets an ERROR event with
  a 410 Expired Status; a selector seeing an object start or stop matching gets ADDED/DELETED;
  allowWatchBookmarks sends BOOKMARK events every `bookmark_interval` s when idle;
  timeoutSeconds ends the stream; sendInitialEvents=true ends the initial events with a
  BOOKMARK annotated k8s.io/initial-events-end).
- POST create (201; 409 AlreadyExists; 404 when the namespace does not exist; 403 while it is
  terminating; 422 Invalid for bad names), PUT replace (409 Conflict on a stale
  metadata.resourceVersion), PATCH with application/apply-patch+yaml (server-side apply:
  fieldManager required, creates when missing (201; the requester then needs create as well as
  patch, as in the real API), managedFields per manager, conflicts with
  other managers are 409 unless force=true, fields a manager stops applying are removed;
  associative lists merged and owned per item key as the built-in types declare them —
  containers/env/volumes by name, a container's ports by containerPort+protocol, a Service's
  by port+protocol, volumeMounts by mountPath; other lists atomic; kubeapi_merge.py),
  application/merge-patch+json and
  application/strategic-merge-patch+json (merge keys of the pod spec lists, $patch,
  $setElementOrder, $retainKeys, $deleteFromPrimitiveList) and application/json-patch+json
  (RFC 6902; kubectl uses it to move client-side apply's fields to server-side apply); other
  media types get 415, protobuf bodies too (`kubectl create secret` sends them; `kubectl create
  ... --dry-run=client -o yaml | kubectl apply -f -` sends JSON). fieldValidation=Strict (kubectl's default) refuses fields the schema of
  the served version does not declare, 400 "strict decoding error: unknown field ..." (schemas
  from kubernetes-validate; other schema errors are not checked). Secrets: `data` must be base64
  (400 as the real API otherwise), `stringData` is folded into `data` and never stored, `type`
  defaults to Opaque. dryRun=All computes and stores nothing. A write that changes nothing keeps
  the resourceVersion and sends no watch event. Main-resource writes keep .status; the status
  subresource writes only .status. metadata.generation (apps/v1 kinds) bumps on spec changes.
- DELETE one object (200 with a Success Status; dependents by ownerReferences are deleted
  unless propagationPolicy=Orphan), a namespace (200 with it Terminating; its contents and then
  itself are removed after `store.namespace_finalize_delay` s; a second DELETE meanwhile is the
  real 409), a collection (?labelSelector=: the deleted items as a List).
- Pod logs (text/plain; `container` is required for pods of several containers, 400 as the real
  API otherwise; a container that is waiting answers 400 "... is waiting to start: REASON";
  tailLines, timestamps, follow=true streams appended lines until the pod is deleted).
- Authentication by bearer token (401 Unauthorized for a token it did not issue, or a service
  account's whose ServiceAccount is gone; no token: system:anonymous). The user's token (user
  `user`, groups `user_groups`, by default system:masters: cluster-admin) is in the kubeconfig
  `write_kubeconfig` writes; `service_account_token(ns, name)` issues system:serviceaccount:NS:NAME's.
  Authorization is RBAC over the Roles, ClusterRoles and bindings stored in the double
  (kubeapi_rbac.py: what `tap` applied from manifests/rbac.yaml is what the hub may do); a
  refusal is the real 403 Status ("pods is forbidden: User \"system:serviceaccount:shark:shark-hub\"
  cannot list resource \"pods\" in API group \"\" at the cluster scope"); RBAC objects may only
  grant what their writer holds (or with escalate/bind). `forbid()` refuses a
  verb on a resource to everyone on top of that.
- pods/portforward (verb create, its WebSocket GET too): the real `kubectl port-forward` works
  against the double — SPDY/3.1 tunnelled in a WebSocket (kubectl 1.31+) or plain SPDY after an
  `Upgrade: SPDY/3.1` (kubeapi_portforward.py); each data stream is relayed to the pod's port
  (its podIP, or `.port_forward_address(pod, port)`); a refused connection is the kubelet's
  message on the error stream; deleting the pod ends the session (kubectl: "lost connection to
  pod"); without an upgrade: 400 "Upgrade request required".

## Python interface (for tests)
- `KubeAPI(controllers=False, user="tester", version=(1, 32), bookmark_interval=1.0,
  user_groups=("system:masters", "system:authenticated"))` (groups without system:masters: the
  user gets what bindings to User "tester" grant); `.start()/.stop()` or `with`; `.url`;
  `.write_kubeconfig(path, context="shark-test", namespace=None, token=None)` (token: whose
  identity; default the user's); `.service_account_token(ns, name)`; `.http` (an httpx.Client acting as the
  user); `.verify` (an SSL context trusting the server, for other clients);
  `.write_service_account(dir, ns, name)` (token, ca.crt, namespace as a kubelet mounts them; returns
  the KUBERNETES_SERVICE_HOST/PORT environment).
- Objects, through the same code as HTTP (resourceVersions, watch events): `.create(obj)`
  (a .status in obj is then written through the status subresource, as a kubelet would),
  `.apply(obj, manager="test")`, `.get(kind, name, namespace=None)` (raises ApiError 404),
  `.find(...)` (None when missing), `.list(kind, namespace=None, labels=None)`,
  `.delete(kind, name, namespace=None)`, `.patch_status(kind, name, namespace, status)` (merged
  into .status), `.add_node(name, ip, labels=None, taints=None)`, `.add_pod(name, namespace,
  ip=..., labels=..., node=..., ready=True, containers=...)` (a running pod in one call),
  `.add_service(name, namespace, cluster_ip, selector=None, ports=...)`. Kinds are names:
  "Pod", "Service", "Endpoints", "Node", "Namespace", "DaemonSet", ...
- `controllers=True` runs kubeapi_controllers.Controllers (ReplicaSets, DaemonSet pods per
  node, scheduling, pod status, Endpoints, workload status): `.pod_behavior = "ready" |
  "not-ready" | "creating" | "image-pull-backoff" | "err-image-pull" | "crash-loop" |
  "unschedulable"`, or {node: behavior, "*": default}, or a callable(pod) -> behavior;
  `.pullable_images = {"ref", ...}` (others back off).
- Faults: `.forbid(verb, resource, namespace=None, name=None)` (resource "pods", "daemonsets",
  "pods/log"; verb "*" for all), `.allow_all()`; `.close_watches()` ends every open watch
  cleanly (as a server-side timeout does), `.close_watches(abrupt=True)` cuts the connections;
  `.compact()` forgets the event log (old resourceVersions then get 410).
- Logs: `.append_log(namespace, pod, container, text)`.
- Observing: `.requests` ([Request(method, path, query, content_type, status, user)], newest last;
  `.on_request` hooks see each before it is served, e.g. to compact between two pages),
  `.writes()` (the mutating ones), `.store.revision`, `.wait_for(check, timeout)`.
"""

from __future__ import annotations

import base64
import copy
import json
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from support.kubeapi_controllers import Controllers, PodBehavior
from support.kubeapi_model import (BY_KIND, BY_PATH, RESOURCES, ApiError, Resource, Selector, discovery_resources,
                                   forbidden, group_versions, parse_field_selector, parse_label_selector,
                                   unknown_fields)
from support.kubeapi_portforward import (PROTOCOL, SPDY, TUNNEL, RawTransport, Session, WebSocketTransport,
                                         upgrade_kind, websocket_accept)
from support.kubeapi_rbac import (ANONYMOUS, MASTERS, Attributes, Identity, Policy, allows, authorize, escalation,
                                  not_held, service_account_identity, service_account_of, unauthorized)
from support.kubeapi_store import Event, Store
from support.kubeapi_tls import certificates

T = TypeVar("T")
RBAC_GROUP = "rbac.authorization.k8s.io"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    status: int = 0
    user: str = ""                # who it was authenticated as (resource requests)


@dataclass
class Rule:
    verb: str
    resource: str
    namespace: str | None
    name: str | None

    def matches(self, verb: str, resource: str, namespace: str | None, name: str | None) -> bool:
        return (self.verb in ("*", verb) and self.resource in ("*", resource)
                and (self.namespace is None or self.namespace == namespace)
                and (self.name is None or self.name == name))


@dataclass
class Target:
    """What a resource URL names."""
    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str | None


def kind_resource(kind: str) -> Resource:
    for resource in RESOURCES:
        if resource.kind == kind:
            return resource
    raise KeyError(f"the double serves no kind {kind!r}")


class KubeAPI:
    def __init__(self, controllers: bool = False, user: str = "tester", version: tuple[int, int] = (1, 32),
                 bookmark_interval: float = 1.0,
                 user_groups: tuple[str, ...] = (MASTERS, "system:authenticated"), tls: bool = True) -> None:
        self.store = Store()
        self.certificates = certificates() if tls else None
        self.user = user
        # bearer token -> who it is; the user's token goes into write_kubeconfig's kubeconfig
        self.tokens: dict[str, Identity] = {}
        self.user_token = self.token_for(Identity(user, user_groups))
        self.version = version
        self.bookmark_interval = bookmark_interval
        self.rules: list[Rule] = []
        self.requests: list[Request] = []
        self.on_request: list[Callable[[Request], None]] = []    # called before each request is served
        # pods/portforward: where a pod's port is reached (default: its podIP); the sessions
        self.port_forward_address: Callable[[dict[str, Any], int], tuple[str, int]] | None = None
        self.port_forwards: list[Session] = []
        self.logs: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
        self.watch_generation = 0          # bumped by close_watches()
        self.abrupt_generation = 0
        self.stopping = False
        self.controllers = Controllers(self.store) if controllers else None
        self._server: ThreadingHTTPServer | None = None
        self._http: httpx.Client | None = None
        self._thread: threading.Thread | None = None
        self._seed()

    # ---- lifecycle ------------------------------------------------------------------------------

    def _seed(self) -> None:
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self.create({"apiVersion": "v1", "kind": "Service", "metadata": {
            "name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}})

    def start(self) -> KubeAPI:
        api = self

        class Handler(ApiHandler):
            kube = api
        self._server = (TLSServer(self.certificates.server_context()) if self.certificates
                        else ThreadingHTTPServer)(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="kubeapi", daemon=True)
        self._thread.start()
        if self.controllers:
            self.controllers.start()
        return self

    def stop(self) -> None:
        self.stopping = True
        with self.store.changed:
            self.store.changed.notify_all()
        if self.controllers:
            self.controllers.stop()
        if self._http is not None:
            self._http.close()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            if self._thread:
                self._thread.join(5)
            self._server = None

    def __enter__(self) -> KubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server, "start() first"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.certificates else 'http'}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What a plain HTTP client verifies the server with (httpx's `verify=`)."""
        return self.certificates.client_context() if self.certificates else False

    @property
    def http(self) -> httpx.Client:
        """A plain HTTP client acting as the user (token, the server's CA), closed by stop()."""
        if self._http is None:
            self._http = httpx.Client(headers={"Authorization": f"Bearer {self.user_token}"}, verify=self.verify)
        return self._http

    def write_service_account(self, directory: Path, namespace: str, name: str) -> dict[str, str]:
        """What a kubelet gives a pod of the ServiceAccount NAMESPACE/NAME: `directory` gets its
        token, ca.crt and namespace (as /var/run/secrets/kubernetes.io/serviceaccount); returns the
        environment pointing at the API (KUBERNETES_SERVICE_HOST/PORT)."""
        assert self.certificates, "in-cluster clients need TLS: KubeAPI(tls=True)"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(self.service_account_token(namespace, name))
        (directory / "ca.crt").write_bytes(self.certificates.ca.read_bytes())
        (directory / "namespace").write_text(namespace)
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.port),
                "KUBERNETES_SERVICE_PORT_HTTPS": str(self.port)}

    def write_kubeconfig(self, path: Path, context: str = "shark-test", namespace: str | None = None,
                         token: str | None = None) -> Path:
        """A kubeconfig for the user (or for whoever `token` is, e.g. a service account's)."""
        token = token or self.user_token
        user = self.tokens[token].user
        ctx: dict[str, Any] = {"cluster": "double", "user": user}
        if namespace:
            ctx["namespace"] = namespace
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": context, "preferences": {},
            "clusters": [{"name": "double", "cluster": {"server": self.url, **({
                "certificate-authority-data": base64.b64encode(self.certificates.ca.read_bytes()).decode()}
                if self.certificates else {})}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": context, "context": ctx}]}))
        return path

    # ---- identities ------------------------------------------------------------------------------

    def token_for(self, identity: Identity) -> str:
        token = f"{identity.user.replace(':', '-')}-{uuid.uuid4().hex}"
        self.tokens[token] = identity
        return token

    def service_account_token(self, namespace: str, name: str) -> str:
        """A token of the ServiceAccount NAMESPACE/NAME (valid while it exists, as the real API
        checks): its requests are authorized by the RBAC objects bound to it."""
        return self.token_for(service_account_identity(namespace, name))

    def identity(self, authorization: str | None) -> Identity:
        """Who sends a request with this Authorization header (401 for a token nobody issued,
        or a service account's that no longer exists); none: system:anonymous."""
        if not authorization:
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        identity = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if identity is None:
            raise unauthorized()
        account = service_account_of(identity)
        if account and self.store.find(BY_PATH[("", "v1", "serviceaccounts")], account[0], account[1]) is None:
            raise unauthorized()
        return identity

    def policy(self) -> Policy:
        """The Roles, ClusterRoles and bindings stored now."""
        def objects(plural: str) -> list[dict[str, Any]]:
            return self.store.list(BY_PATH[(RBAC_GROUP, "v1", plural)], Selector())[0]
        return Policy(objects("roles"), objects("clusterroles"), objects("rolebindings"),
                      objects("clusterrolebindings"))

    def allowed(self, identity: Identity, request: Attributes) -> bool:
        """The RBAC authorizer over the Roles, ClusterRoles and bindings stored now."""
        policy = self.policy()
        return authorize(identity, request, policy.roles, policy.cluster_roles, policy.bindings,
                         policy.cluster_bindings)

    def check_escalation(self, identity: Identity, res: Resource, namespace: str | None, obj: Any) -> None:
        """RBAC's escalation prevention for a Role/ClusterRole or binding about to be written."""
        if res.group != RBAC_GROUP or identity.admin or not isinstance(obj, dict):
            return
        policy, name = self.policy(), (obj.get("metadata") or {}).get("name") or ""
        scope = namespace if res.namespaced else None
        if res.plural in ("roles", "clusterroles"):
            if allows(identity, policy, RBAC_GROUP, res.plural, "escalate", scope, name):
                return
            rules = obj.get("rules")
        else:
            ref = obj.get("roleRef") or {}
            kind = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
            if allows(identity, policy, RBAC_GROUP, kind, "bind", scope, ref.get("name")):
                return
            role = self.store.find(BY_PATH[(RBAC_GROUP, "v1", kind)], scope if kind == "roles" else None,
                                   ref.get("name") or "")
            rules = (role or {}).get("rules")
        missing = not_held(identity, policy, rules, scope)
        if missing:
            raise escalation(identity, res.plural, name, missing)

    # ---- objects (same paths as HTTP) ------------------------------------------------------------

    @staticmethod
    def _resource_of(obj: dict[str, Any]) -> Resource:
        return BY_KIND[(obj["apiVersion"], obj["kind"])]

    def create(self, obj: dict[str, Any], manager: str = "test") -> dict[str, Any]:
        resource = self._resource_of(obj)
        namespace = obj.get("metadata", {}).get("namespace") if resource.namespaced else None
        with self.store.lock:       # one step for the stand-in kubelet: it leaves pods with a status alone
            created = self.store.create(resource, namespace, obj, manager)
            if obj.get("status") and "status" in resource.subresources:
                created["status"] = copy.deepcopy(obj["status"])
                created = self.store.replace(resource, namespace, created["metadata"]["name"], created, manager,
                                             subresource="status")
        return created

    def apply(self, obj: dict[str, Any], manager: str = "test", force: bool = True) -> dict[str, Any]:
        resource = self._resource_of(obj)
        meta = obj["metadata"]
        return self.store.patch(resource, meta.get("namespace") if resource.namespaced else None, meta["name"],
                                "apply", obj, manager, force)[0]

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return self.store.get(kind_resource(kind), namespace, name)

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.store.find(kind_resource(kind), namespace, name)

    def list(self, kind: str, namespace: str | None = None, labels: str | None = None) -> list[dict[str, Any]]:
        return self.store.list(kind_resource(kind), Selector(parse_label_selector(labels), namespace=namespace))[0]

    def delete(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return self.store.delete(kind_resource(kind), namespace, name)

    def patch_status(self, kind: str, name: str, namespace: str | None, status: dict[str, Any]) -> dict[str, Any]:
        return self.store.patch(kind_resource(kind), namespace, name, "merge", {"status": status}, "test",
                                subresource="status")[0]

    def add_node(self, name: str, ip: str, labels: dict[str, str] | None = None,
                 taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
        return self.create({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **(labels or {})}},
            "spec": {"taints": taints} if taints else {},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                       "nodeInfo": {"kubeletVersion": f"v{self.version[0]}.{self.version[1]}.0",
                                    "architecture": "amd64", "operatingSystem": "linux"}}})

    def add_pod(self, name: str, namespace: str, ip: str, labels: dict[str, str] | None = None,
                node: str | None = None, ready: bool = True, host_network: bool = False,
                containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A pod that is already scheduled and running (what a kubelet would have reported)."""
        containers = containers or [{"name": "main", "image": "example/app:1"}]
        flag = "True" if ready else "False"
        return self.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"containers": containers, "hostNetwork": host_network, **({"nodeName": node} if node else {})},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": flag}, {"type": "ContainersReady", "status": flag}],
                       "containerStatuses": [{"name": c["name"], "image": c.get("image", ""), "ready": ready,
                                              "started": True, "restartCount": 0,
                                              "state": {"running": {"startedAt": _now()}}} for c in containers]}})

    def add_service(self, name: str, namespace: str, cluster_ip: str, selector: dict[str, str] | None = None,
                    ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return self.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
                            "spec": {"clusterIP": cluster_ip, "ports": ports or [{"port": 80}],
                                     **({"selector": selector} if selector else {})}})

    # ---- controllers, faults, logs ---------------------------------------------------------------

    @property
    def pod_behavior(self) -> PodBehavior:
        assert self.controllers, "KubeAPI(controllers=True) runs the pods"
        return self.controllers.behavior

    @pod_behavior.setter
    def pod_behavior(self, behavior: PodBehavior) -> None:
        assert self.controllers, "KubeAPI(controllers=True) runs the pods"
        self.controllers.behavior = behavior
        self.controllers.kick()

    @property
    def pullable_images(self) -> set[str] | None:
        assert self.controllers, "KubeAPI(controllers=True) runs the pods"
        return self.controllers.pullable_images

    @pullable_images.setter
    def pullable_images(self, images: set[str] | None) -> None:
        assert self.controllers, "KubeAPI(controllers=True) runs the pods"
        self.controllers.pullable_images = images
        self.controllers.kick()

    def forbid(self, verb: str, resource: str, namespace: str | None = None, name: str | None = None) -> None:
        self.rules.append(Rule(verb, resource, namespace, name))

    def allow_all(self) -> None:
        self.rules.clear()

    def close_watches(self, abrupt: bool = False) -> None:
        with self.store.changed:
            if abrupt:
                self.abrupt_generation += 1
            self.watch_generation += 1
            self.store.changed.notify_all()

    def compact(self) -> int:
        return self.store.compact()

    def append_log(self, namespace: str, pod: str, container: str, text: str) -> None:
        with self.store.changed:
            lines = self.logs.setdefault((namespace, pod, container), [])
            lines.extend((_now(nano=True), line) for line in text.splitlines())
            self.store.changed.notify_all()

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in MUTATING]

    @staticmethod
    def wait_for(check: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _now(nano: bool = False) -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if nano else now.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- HTTP ----------------------------------------------------------------------------------------

def openapi_v3(group_version_path: str, version: tuple[int, int]) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group/version, reduced to what kubectl reads from it: the
    PATCH operations with their x-kubernetes-group-version-kind and the fieldValidation query
    parameter, which tell kubectl to let the server validate fields (no component schemas:
    kubectl then computes strategic merge patches from its built-in types)."""
    parts = group_version_path.split("/")
    if parts[0] == "api" and len(parts) == 2:
        group, gv = "", parts[1]
    elif parts[0] == "apis" and len(parts) == 3:
        group, gv = parts[1], parts[2]
    else:
        return None
    resources = [r for r in RESOURCES if (r.group, r.version) == (group, gv)]
    if not resources:
        return None
    params = [{"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
              for name in ("dryRun", "fieldManager", "fieldValidation", "force")]
    paths = {}
    for r in resources:
        scope = "/namespaces/{namespace}" if r.namespaced else ""
        paths[f"{r.base_path}{scope}/{r.plural}/{{name}}"] = {"patch": {
            "operationId": f"patch{r.kind}", "parameters": params,
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind}}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": f"v{version[0]}.{version[1]}.0"},
            "paths": paths, "components": {"schemas": {}}}


TABLE_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name", "priority": 0,
     "description": "Name must be unique within a namespace."},
    {"name": "Created At", "type": "date", "format": "", "priority": 0,
     "description": "CreationTimestamp is a timestamp representing the server time when this object was created."},
]


def TLSServer(context: ssl.SSLContext) -> type[ThreadingHTTPServer]:
    """A ThreadingHTTPServer serving HTTPS; each handshake in its connection's thread."""
    class Server(ThreadingHTTPServer):
        def get_request(self) -> tuple[Any, Any]:
            connection, address = self.socket.accept()
            return context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False), address

        def handle_error(self, request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], (ssl.SSLError, OSError)):   # a failed handshake is the client's
                super().handle_error(request, client_address)
    return Server


class ApiHandler(BaseHTTPRequestHandler):
    kube: KubeAPI
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True     # headers and body go out as separate writes
    server_version = "kubeapi-double"

    def log_message(self, format: str, *args: Any) -> None:   # quiet: tests read .requests
        pass

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):    # a client that gives up (or probes with plain HTTP)
                self.request.close()
                raise
            self.request.settimeout(None)
        super().setup()

    # ---- plumbing -------------------------------------------------------------------------------

    def _query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query,
                                                           keep_blank_values=True).items()}

    def _send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self._record(code)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_text(self, code: int, text: str) -> None:
        data = text.encode()
        self._record(code)
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, code: int) -> None:
        if self._request is not None:
            self._request.status = code

    def _start_chunked(self, content_type: str) -> None:
        self._record(200)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if not raw:
            return None
        if content_type not in ("application/json", "application/yaml", "application/apply-patch+yaml",
                                "application/merge-patch+json", "application/strategic-merge-patch+json",
                                "application/json-patch+json"):
            # protobuf (kubectl create sends it for built-in kinds): the double speaks JSON only
            raise ApiError(415, "the body of the request was in an unknown format - accepted media types include: "
                                "application/json, application/yaml")
        try:
            if content_type.endswith("yaml"):
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as error:
            raise ApiError(400, f"the body of the request was in an unknown format: {error}") from None

    # ---- dispatch -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    _request: Request | None = None

    def _handle(self) -> None:
        self._body_read = False
        path = urllib.parse.urlsplit(self.path).path.rstrip("/") or "/"
        query = self._query()
        self._request = Request(self.command, path, query, self.headers.get("Content-Type") or "")
        self.kube.requests.append(self._request)
        for hook in list(self.kube.on_request):
            hook(self._request)
        try:
            if self.command == "GET" and self._discovery(path):
                return
            target = self._target(path)
            if target is None:
                raise ApiError(404, "the server could not find the requested resource",
                               details={"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})
            self._authorize(target, query)
            self._resource(target, query)
        except ApiError as error:
            self._body_if_unread()
            self._send_json(error.code, error.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    _body_read = False
    _identity: Identity = ANONYMOUS

    def _body_if_unread(self) -> None:
        """Drain a request body an early error left unread, so the connection stays usable."""
        if not self._body_read and self.command in MUTATING:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
        self._body_read = True

    def _read_body(self) -> Any:
        self._body_read = True
        return self._body()

    def _discovery(self, path: str) -> bool:
        kube = self.kube
        if path == "/version":
            major, minor = kube.version
            self._send_json(200, {"major": str(major), "minor": str(minor), "gitVersion": f"v{major}.{minor}.0",
                                  "gitCommit": "kubeapi-double", "gitTreeState": "clean",
                                  "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23",
                                  "compiler": "gc", "platform": "linux/amd64"})
        elif path in ("/healthz", "/livez", "/readyz"):
            self._send_text(200, "ok")
        elif path == "/openapi/v3":
            self._send_json(200, {"paths": {
                (f"apis/{g}/{v}" if g else f"api/{v}"): {"serverRelativeURL": f"/{'apis/' + g if g else 'api'}/{v}"
                                                                              .replace("/", "/openapi/v3/", 1)
                                                                              + "?hash=double"}
                for g, v in sorted({(r.group, r.version) for r in RESOURCES})}})
        elif path.startswith("/openapi/v3/"):
            document = openapi_v3(path.removeprefix("/openapi/v3/"), kube.version)
            if document is None:
                return False
            self._send_json(200, document)
        elif path == "/api":
            self._send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{kube.port}"}]})
        elif path == "/api/v1":
            self._send_json(200, {"kind": "APIResourceList", "groupVersion": "v1",
                                  "resources": discovery_resources("", "v1")})
        elif path == "/apis":
            self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                  "groups": [self._group(g) for g in group_versions() if g]})
        elif path.startswith("/apis/") and path.count("/") == 2 and path.split("/")[2] in group_versions():
            self._send_json(200, {"kind": "APIGroup", "apiVersion": "v1", **self._group(path.split("/")[2])})
        elif path.startswith("/apis/") and path.count("/") == 3:
            _, _, group, version = path.split("/")
            resources = discovery_resources(group, version)
            if not resources:
                return False
            self._send_json(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}",
                                  "resources": resources})
        else:
            return False
        return True

    @staticmethod
    def _group(group: str) -> dict[str, Any]:
        versions = sorted({r.version for r in group_versions()[group]})
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def _target(self, path: str) -> Target | None:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3 and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in BY_PATH:
            namespace, rest = rest[1], rest[2:]
        resource = BY_PATH.get((group, version, rest[0]))
        if resource is None or len(rest) > 3:
            return None
        if namespace is not None and not resource.namespaced:
            return None
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in resource.subresources:
            return None
        if name is not None and resource.namespaced and namespace is None:
            return None
        return Target(resource, namespace, name, sub)

    def _verb(self, target: Target, query: dict[str, str]) -> str:
        if target.subresource == "portforward":     # its WebSocket GET too (feature AuthorizePodWebsocketUpgrade...)
            return "create"
        if self.command in ("GET", "HEAD"):
            if target.name is None:
                return "watch" if query.get("watch") in ("1", "true") else "list"
            return "get"
        if self.command == "DELETE":
            return "delete" if target.name else "deletecollection"
        return {"POST": "create", "PUT": "update", "PATCH": "patch"}[self.command]

    def _authorize(self, target: Target, query: dict[str, str]) -> None:
        identity = self.kube.identity(self.headers.get("Authorization"))
        self._identity = identity
        if self._request is not None:
            self._request.user = identity.user
        verb = self._verb(target, query)
        resource = (f"{target.resource.plural}/{target.subresource}" if target.subresource
                    else target.resource.plural)
        refuse = forbidden(identity.user, verb, target.resource, target.subresource, target.namespace, target.name)
        for rule in self.kube.rules:
            if rule.matches(verb, resource, target.namespace, target.name):
                raise refuse
        name = target.name
        if name is None and verb in ("list", "watch"):     # RBAC's resourceNames see a metadata.name selector
            for requirement in parse_field_selector(query.get("fieldSelector"), target.resource):
                if requirement.path == ("metadata", "name") and requirement.equal:
                    name = requirement.value
        # a namespace is in itself: a RoleBinding there grants get on it
        namespace = name if target.resource.plural == "namespaces" and target.name else target.namespace
        if not self.kube.allowed(identity, Attributes(verb, target.resource, target.subresource, namespace, name)):
            raise refuse

    def _strict(self, res: Resource, body: Any, query: dict[str, str]) -> None:
        """fieldValidation=Strict (kubectl's default): unknown fields are a 400, as in the real API."""
        if query.get("fieldValidation") != "Strict" or not isinstance(body, dict):
            return

        def fields_only(value: Any) -> Any:     # a patch's directives ($patch, ...) are no fields
            if isinstance(value, dict):
                return {k: fields_only(v) for k, v in value.items() if not k.startswith("$")}
            if isinstance(value, list):
                return [fields_only(v) for v in value]
            return value
        body = {**fields_only(body), "apiVersion": res.api_version, "kind": res.kind}
        unknown = unknown_fields(body, self.kube.version)
        if unknown:
            raise ApiError(400, f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                           "strict decoding error: " + ", ".join(f'unknown field "{f}"' for f in unknown))

    def _resource(self, target: Target, query: dict[str, str]) -> None:
        store = self.kube.store
        res, ns, name, sub = target.resource, target.namespace, target.name, target.subresource
        dry_run = query.get("dryRun") == "All"
        manager = query.get("fieldManager") or (self.headers.get("User-Agent") or "unknown").split("/")[0]
        method = self.command
        if method in ("GET", "HEAD"):
            if name is None:
                selector = Selector(parse_label_selector(query.get("labelSelector")),
                                    parse_field_selector(query.get("fieldSelector"), res), ns)
                if query.get("watch") in ("1", "true"):
                    self._watch(res, selector, query)
                else:
                    self._list(res, selector, query)
            elif sub == "log":
                self._log(ns or "", name, query)
            elif sub == "portforward":
                self._port_forward(res, ns or "", name)
            else:
                obj = store.get(res, ns, name)
                self._send_json(200, self._table([obj], obj["metadata"]["resourceVersion"]) if self._wants_table()
                                else obj)
        elif method == "POST":
            if name is not None:
                if sub == "portforward":
                    self._port_forward(res, ns or "", name)
                    return
                raise ApiError(405, "the server does not allow this method on the requested resource")
            body = self._read_body()
            self._strict(res, body, query)
            self.kube.check_escalation(self._identity, res, ns, body)
            self._send_json(201, store.create(res, ns, body, manager, dry_run))
        elif method == "PUT":
            if name is None:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            body = self._read_body()
            self._strict(res, body, query)
            if sub not in (None, "status"):
                raise ApiError(405, f"the double does not update {res.plural}/{sub}")
            self.kube.check_escalation(self._identity, res, ns, body)
            self._send_json(200, store.replace(res, ns, name, body, manager, dry_run, sub))
        elif method == "PATCH":
            if name is None:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            kinds = {"application/apply-patch+yaml": "apply", "application/merge-patch+json": "merge",
                     "application/strategic-merge-patch+json": "strategic", "application/json-patch+json": "json"}
            if content_type not in kinds:
                self._body_if_unread()
                raise ApiError(415, f"the body of the request was in an unknown format - accepted media types "
                               f"include: {', '.join(kinds)}")
            body = self._read_body()
            if kinds[content_type] != "json":
                self._strict(res, body, query)
            patch_manager = query.get("fieldManager") or (None if kinds[content_type] == "apply" else manager)
            if kinds[content_type] == "apply" and store.find(res, ns, name) is None and not self.kube.allowed(
                    self._identity, Attributes("create", res, sub, ns, name)):
                # an apply that creates is authorized as a create too, as in the real API
                raise forbidden(self._identity.user, "create", res, sub, ns, name)
            if res.group == RBAC_GROUP and not self._identity.admin:     # what the patch would make
                would_be, _ = store.patch(res, ns, name, kinds[content_type], body, patch_manager,
                                          query.get("force") == "true", True, sub)
                self.kube.check_escalation(self._identity, res, ns, would_be)
            obj, created = store.patch(res, ns, name, kinds[content_type], body, patch_manager,
                                       query.get("force") == "true", dry_run, sub)
            self._send_json(201 if created else 200, obj)
        elif method == "DELETE":
            body = self._read_body() or {}
            policy = query.get("propagationPolicy") or (body.get("propagationPolicy") if isinstance(body, dict) else None)
            if name is None:
                selector = Selector(parse_label_selector(query.get("labelSelector")),
                                    parse_field_selector(query.get("fieldSelector"), res), ns)
                items, rv = store.list(res, selector)
                deleted = [store.delete(res, i["metadata"].get("namespace"), i["metadata"]["name"],
                                        policy or "Background", dry_run) for i in items]
                self._send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                                      "metadata": {"resourceVersion": str(store.revision)}, "items": deleted})
                return
            left = store.delete(res, ns, name, policy or "Background", dry_run)
            if res.plural == "namespaces":
                self._send_json(200, left)
            else:
                self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                      "details": {"name": name, "group": res.group, "kind": res.plural,
                                                  "uid": left["metadata"]["uid"]}})
        else:
            raise ApiError(405, "the server does not allow this method on the requested resource")

    def _port_forward(self, res: Resource, namespace: str, name: str) -> None:
        """Upgrade to SPDY (or SPDY in a WebSocket) and forward the pod's ports (kubeapi_portforward.py)."""
        kind = upgrade_kind(self.headers)
        if kind is None:
            raise ApiError(400, "Upgrade request required")
        kube, store = self.kube, self.kube.store
        pod = store.get(res, namespace, name)
        uid = pod["metadata"]["uid"]
        self._record(101)
        self.send_response(101)
        if kind == "websocket":
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", websocket_accept(self.headers.get("Sec-WebSocket-Key") or ""))
            self.send_header("Sec-WebSocket-Protocol", TUNNEL)
        else:
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", SPDY)
            self.send_header("X-Stream-Protocol-Version", PROTOCOL)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True

        def connect(port: int) -> socket.socket:
            current = store.find(res, namespace, name) or pod
            address = kube.port_forward_address(current, port) if kube.port_forward_address else \
                ((current.get("status") or {}).get("podIP") or "", port)
            connection = socket.create_connection(address, timeout=5)
            connection.settimeout(None)
            return connection

        def refuse(port: int, error: OSError) -> str:     # as a kubelet (containerd) words it
            return (f"error forwarding port {port} to pod {uid}, uid : failed to execute portforward in network "
                    f"namespace: failed to connect to localhost:{port} inside namespace \"{uid}\", IPv4: dial tcp4 "
                    f"127.0.0.1:{port}: connect: {(error.strerror or str(error)).lower()}")
        transport = (WebSocketTransport if kind == "websocket" else RawTransport)(self.rfile, self.wfile)
        session = Session(transport, connect, refuse)
        kube.port_forwards.append(session)

        def pod_gone() -> None:
            """The kubelet's side ends when the pod does."""
            with store.changed:
                store.changed.wait_for(lambda: kube.stopping or session.closed.is_set() or
                                       (store.find(res, namespace, name) or {}).get("metadata", {}).get("uid") != uid)
            if not session.closed.is_set():
                session.go_away()
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        threading.Thread(target=pod_gone, daemon=True, name="portforward-pod").start()
        session.serve()
        with store.changed:
            store.changed.notify_all()

    def _wants_table(self) -> bool:
        return "as=Table" in (self.headers.get("Accept") or "")

    def _table(self, items: list[dict[str, Any]], rv: str) -> dict[str, Any]:
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
                "columnDefinitions": TABLE_COLUMNS,
                "rows": [{"cells": [i["metadata"]["name"], i["metadata"].get("creationTimestamp")],
                          "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                     "metadata": {k: v for k, v in i["metadata"].items() if k != "managedFields"}}}
                         for i in items]}

    def _list(self, res: Resource, selector: Selector, query: dict[str, str]) -> None:
        store = self.kube.store
        after = ""
        if query.get("continue"):
            revision, after = decode_continue(query["continue"])
            try:
                items = store.list_at(res, selector, revision)
            except ApiError:
                # etcd compacted the list's revision: the real 410, with a token that goes on
                # from the current revision (inconsistent, as the message says)
                raise ApiError(410, CONTINUE_EXPIRED, "Expired",
                               metadata={"continue": encode_continue(store.revision, after)}) from None
        else:
            items, revision = store.list(res, selector)
        items = sorted((i for i in items if _key(i) > after), key=_key)
        limit = int(query.get("limit") or 0)
        page = items[:limit] if limit else items
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        if limit and limit < len(items):
            meta["continue"] = encode_continue(revision, _key(page[-1]))
            meta["remainingItemCount"] = len(items) - limit
        if self._wants_table():
            table = self._table(page, str(revision))
            table["metadata"] = meta
            self._send_json(200, table)
            return
        for item in page:       # the real API's list items carry no kind/apiVersion
            item.pop("kind", None)
            item.pop("apiVersion", None)
        self._send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta,
                              "items": page})

    # ---- watch ------------------------------------------------------------------------------------

    def _watch(self, res: Resource, selector: Selector, query: dict[str, str]) -> None:
        kube, store = self.kube, self.kube.store
        rv_param = query.get("resourceVersion") or ""
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") in ("1", "true")
        initial_events = query.get("sendInitialEvents") in ("1", "true")
        deadline = time.monotonic() + timeout
        self._start_chunked("application/json")
        generation, abrupt = kube.watch_generation, kube.abrupt_generation
        with store.lock:
            if rv_param not in ("", "0") and not initial_events:
                try:
                    cursor = int(rv_param)
                except ValueError:
                    cursor = -1
                if cursor < store.compacted or cursor < 0:
                    self._event("ERROR", ApiError(410, f"too old resource version: {rv_param} "
                                                        f"({store.compacted + 1})", "Expired").status())
                    self._end_chunked()
                    return
                initial: list[dict[str, Any]] = []
            else:
                initial, _ = store.list(res, selector)
                cursor = store.revision
        for obj in initial:
            self._event("ADDED", obj)
        if initial_events:
            self._event("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version, "metadata": {
                "resourceVersion": str(cursor), "annotations": {"k8s.io/initial-events-end": "true"}}})
        last_sent = time.monotonic()
        while True:
            with store.changed:
                def ready() -> bool:
                    return (kube.stopping or kube.watch_generation != generation
                            or (bool(store.events) and store.events[-1].rv > cursor))
                remaining = deadline - time.monotonic()
                wait = min(remaining, kube.bookmark_interval) if bookmarks else remaining
                store.changed.wait_for(ready, timeout=max(wait, 0))
                if kube.abrupt_generation != abrupt or kube.stopping:
                    self.close_connection = True
                    if kube.abrupt_generation != abrupt:
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                if kube.watch_generation != generation or kube.stopping:
                    break
                events = [e for e in store.events if e.rv > cursor]
                if events:
                    cursor = events[-1].rv
                revision = store.revision
            for event in events:
                sent = self._relay(event, res, selector)
                last_sent = time.monotonic() if sent else last_sent
            now = time.monotonic()
            if now >= deadline:
                break
            if bookmarks and now - last_sent >= kube.bookmark_interval:
                self._event("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                         "metadata": {"resourceVersion": str(revision)}})
                last_sent = now
        self._end_chunked()

    def _relay(self, event: Event, res: Resource, selector: Selector) -> bool:
        if event.resource != res:
            return False
        now_matches = selector.matches(event.object)
        was = event.old is not None and selector.matches(event.old)
        kind = event.type
        if kind == "MODIFIED":
            if now_matches and not was:
                kind = "ADDED"
            elif was and not now_matches:
                kind, now_matches = "DELETED", True
        if not now_matches:
            return False
        self._event(kind, event.object)
        return True

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        self._chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

    # ---- logs -------------------------------------------------------------------------------------

    def _log(self, namespace: str, name: str, query: dict[str, str]) -> None:
        kube, store = self.kube, self.kube.store
        pod = store.get(BY_PATH[("", "v1", "pods")], namespace, name)
        names = [c["name"] for c in pod["spec"].get("containers") or []]
        container = query.get("container")
        if not container:
            if len(names) != 1:
                raise ApiError(400, f"a container name must be specified for pod {name}, choose one of: "
                               f"[{' '.join(names)}]")
            container = names[0]
        elif container not in names:
            raise ApiError(400, f"container {container} is not valid for pod {name}")
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting")
            if status.get("name") == container and waiting and not (status.get("lastState") or {}).get("terminated"):
                raise ApiError(400, f'container "{container}" in pod "{name}" is waiting to start: '
                               f"{waiting.get('reason')}")
        if not pod.get("status", {}).get("containerStatuses"):
            raise ApiError(400, f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating')
        stamps = query.get("timestamps") in ("1", "true")

        def render(lines: list[tuple[str, str]]) -> str:
            return "".join(f"{ts} {text}\n" if stamps else f"{text}\n" for ts, text in lines)
        key = (namespace, name, container)
        with store.lock:
            lines = list(kube.logs.get(key, []))
        tail = query.get("tailLines")
        if tail:
            lines = lines[-int(tail):] if int(tail) else []
        if query.get("follow") not in ("1", "true"):
            self._send_text(200, render(lines))
            return
        self._start_chunked("text/plain")
        sent = len(kube.logs.get(key, []))
        if lines:
            self._chunk(render(lines).encode())
        generation = kube.watch_generation
        while True:
            with store.changed:
                store.changed.wait_for(lambda: kube.stopping or len(kube.logs.get(key, [])) > sent
                                       or kube.watch_generation != generation
                                       or store.find(BY_PATH[("", "v1", "pods")], namespace, name) is None,
                                       timeout=1.0)
                new = kube.logs.get(key, [])[sent:]
                sent += len(new)
                gone = store.find(BY_PATH[("", "v1", "pods")], namespace, name) is None
            if new:
                self._chunk(render(new).encode())
            if kube.stopping or gone or kube.watch_generation != generation:
                break
        self._end_chunked()


CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter, or use the continue token in this response to retrieve the remainder of the "
    "results. Continuing with the provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may show up in the list.")


def _key(obj: dict[str, Any]) -> str:
    """An object's place in a list: its storage key's order (namespace, then name)."""
    meta = obj["metadata"]
    return f"{meta.get('namespace') or ''}/{meta['name']}"


def encode_continue(revision: int, after: str) -> str:
    """A continue token as the real API makes one: base64 of {v, rv, start} (the key to start
    after, +\\x00), so a later page is read from the first page's revision."""
    body = json.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": after + "\x00"}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if body.get("v") != "meta.k8s.io/v1" or not isinstance(body.get("rv"), int) or body["rv"] <= 0:
            raise ValueError
        return body["rv"], str(body.get("start", "")).removesuffix("\x00")
    except (ValueError, TypeError, AttributeError):
        raise ApiError(400, f"continue key is not valid: {token!r}") from None


def iter_watch(lines: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """Watch events from the lines of a watch response (for tests reading one with httpx)."""
    for line in lines:
        if line.strip():
            yield json.loads(line)
