"""What the cluster-facing commands do: tap, open, clean, status --cluster, logs.

The click commands in shark/cli.py only parse options and call these. Everything outside the
process is injected (how to connect, the port-forwarder, the browser, the rollout view, the
stop event), so tests run them against the API double with a forwarder of their own.
"""

from __future__ import annotations

import queue
import threading
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shark.errors import Forbidden, KubeApiError, SharkError
from shark.kube.client import Cluster
from shark.kube.forward import Forward, Forwarder, KubectlForwarder
from shark.kube.render import DeployOptions, cluster_scoped_name, render, to_yaml
from shark.kube.resources import (CLEAN_ORDER, HUB, HUB_PORT, HUB_SELECTOR, KINDS, MANAGED_BY, MANAGER, OURS,
                                  WORKER, WORKER_SELECTOR, kind_of)
from shark.kube.rollout import RolloutFailed, RolloutState, pod_state, snapshot, untolerated, wait_rollout
from shark.kube.secret import NAME as SECRET, ensure_token, read_token
from shark.kube.view import make_view
from shark.kube.wipe import stores_of, wipe_stores
from shark.terminal import printable
from shark.local import check_port_free, login_url

Say = Callable[[str], None]


@dataclass(frozen=True)
class Access:
    """How to reach the cluster and where kubectl-shark lives in it."""
    kubeconfig: str | None = None
    context: str | None = None
    release_namespace: str = "shark"


@dataclass(frozen=True)
class Proxy:
    host: str = "127.0.0.1"
    port: int = 8899
    open_browser: bool = True


def ours(obj: dict[str, Any] | None) -> bool:
    return bool(obj) and ((obj or {}).get("metadata") or {}).get("labels", {}).get(MANAGED_BY) == MANAGER


def terminating(obj: dict[str, Any] | None) -> bool:
    return bool(obj) and ((obj or {}).get("status") or {}).get("phase") == "Terminating"


@dataclass
class ClusterRunner:
    access: Access
    say: Say                                          # progress and notes, stderr
    out: Say                                          # results, stdout
    connect: Callable[[str | None, str | None], Cluster] = Cluster.connect
    forwarder: Forwarder | None = None                # None: kubectl port-forward
    opener: Callable[[str], Any] = webbrowser.open
    view_factory: Callable[[Say], Any] = make_view
    stop: threading.Event = field(default_factory=threading.Event)   # set: stop serving (tests; Ctrl-C raises)
    poll_interval: float = 1.0
    sleep: Callable[[float], Any] = time.sleep

    @property
    def namespace(self) -> str:
        return self.access.release_namespace

    def _connect(self) -> Cluster:
        return self.connect(self.access.kubeconfig, self.access.context)

    def _forwarder(self) -> Forwarder:
        return self.forwarder or KubectlForwarder(self.access.kubeconfig, self.access.context)

    # ---- tap ----------------------------------------------------------------------------------------

    def tap(self, deploy: DeployOptions, proxy: Proxy, timeout: float, dry_run: bool = False) -> int:
        objects = render(deploy)
        if dry_run:
            self.out(to_yaml(objects).rstrip("\n"))
            return 0
        if self.forwarder is None:
            check_port_free(proxy.host, proxy.port)   # before deploying anything, not after the wait
        cluster = self._connect()
        try:
            self._wait_namespace_gone(cluster, timeout)
            # the Secret before the pods that read it (and after the namespace it lives in)
            self.apply(cluster, [o for o in objects if o["kind"] == "Namespace"])
            token, created = ensure_token(cluster, self.namespace)
            self.say(f"secret/{SECRET} {'created' if created else 'unchanged'}")
            self.apply(cluster, [o for o in objects if o["kind"] != "Namespace"])
            self._rollout(cluster, timeout, deploy.image_ref)
            worker_spec = next(o for o in objects if o["kind"] == "DaemonSet")["spec"]["template"]["spec"]
            for node, taint in untolerated(cluster.list(KINDS["Node"]), worker_spec.get("tolerations") or []).items():
                self.say(f"warning: no worker on node {node} (taint {taint}): its pods' traffic is not captured; "
                         "tap with --tolerate-control-plane or --toleration KEY[=VALUE][:EFFECT] to run one there")
            return self._serve(cluster, proxy, timeout, token)
        finally:
            cluster.close()

    def apply(self, cluster: Cluster, objects: list[dict[str, Any]]) -> dict[str, str]:
        """Server-side apply of each object; returns kind/name -> created | configured | unchanged."""
        verdicts: dict[str, str] = {}
        for obj in objects:
            kind = kind_of(obj)
            name = obj["metadata"]["name"]
            namespace = obj["metadata"].get("namespace")
            label = f"{kind.kind.lower()}/{name}"
            before = cluster.get(kind, name, namespace)
            if kind.kind == "Namespace" and before is not None and not ours(before):
                verdicts[label] = "kept"
                self.say(f"{label} exists and was not created by kubectl-shark: using it as it is "
                         "(clean will leave it in place)")
                continue
            try:
                after = cluster.apply(obj)
            except (Forbidden, KubeApiError) as error:
                if kind.kind != "PersistentVolumeClaim" or before is None or "cannot patch resource" in error.message:
                    raise
                raise _claim_unchanged(before, error) from None
            if before is None:
                verdict = "created"
            elif before["metadata"].get("resourceVersion") == after["metadata"].get("resourceVersion"):
                verdict = "unchanged"
            else:
                verdict = "configured"
            verdicts[label] = verdict
            self.say(f"{label} {verdict}")
        return verdicts

    def _wait_namespace_gone(self, cluster: Cluster, timeout: float) -> None:
        """A namespace still terminating after `clean` refuses new objects: wait until it is gone."""
        deadline = time.monotonic() + timeout
        told = False
        while terminating(cluster.get(KINDS["Namespace"], self.namespace)):
            if not told:
                self.say(f"namespace {self.namespace} is still being deleted; waiting for it to go …")
                told = True
            if time.monotonic() > deadline:
                raise SharkError(f"namespace {self.namespace} is still terminating after {timeout:g}s",
                                 hint=f"`kubectl get namespace {self.namespace} -o yaml` shows what it waits for; "
                                      "or deploy into another one with -s/--release-namespace")
            self.sleep(min(self.poll_interval, 0.5))

    def _rollout(self, cluster: Cluster, timeout: float, image: str | None) -> RolloutState:
        self.say(f"waiting for the hub and a worker on every node (up to {timeout:.0f}s) …")
        view = self.view_factory(self.say)
        try:
            state = wait_rollout(cluster, self.namespace, timeout, view, image=image, interval=self.poll_interval,
                                 sleep=self.sleep)
        finally:
            view.close()
        workers = sum(p is not None and p.ready for p in state.workers.values())
        if not state.workers:
            self.say("warning: the cluster has no node a worker could run on: nothing will be captured")
        self.say(f"kubectl-shark is ready: the hub and {workers} worker{'s' * (workers != 1)}")
        return state

    # ---- open: port-forward to the hub until Ctrl-C ----------------------------------------------------

    def open(self, proxy: Proxy, timeout: float) -> int:
        cluster = self._connect()
        try:
            if cluster.get(KINDS["Deployment"], HUB, self.namespace) is None:
                raise SharkError(f"kubectl-shark is not deployed in namespace {self.namespace}",
                                 hint="deploy it with `kubectl shark tap` (or name its namespace with "
                                      "-s/--release-namespace)")
            self._wait_hub(cluster, timeout)
            token = read_token(cluster, self.namespace)
            if token is None:
                raise SharkError(f"the hub's token (Secret {SECRET} in namespace {self.namespace}) is missing",
                                 hint="`kubectl shark tap` creates it again (and restarts nothing else)")
            return self._serve(cluster, proxy, timeout, token)
        finally:
            cluster.close()

    def _wait_hub(self, cluster: Cluster, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pods = [pod_state(p) for p in cluster.list(KINDS["Pod"], self.namespace, HUB_SELECTOR)]
            if any(p.ready for p in pods):
                return
            fatal = [p for p in pods if p.fatal]
            if fatal or time.monotonic() > deadline:
                details = [f"hub {p.name}: {p.describe()}" for p in pods] or ["no hub pod"]
                raise RolloutFailed(f"the hub is not ready{'' if fatal else f' after {timeout:g}s'}",
                                    hint="`kubectl shark status --cluster` shows the pods; "
                                         "`kubectl shark logs --component hub` the hub's output",
                                    details=details)
            self.sleep(self.poll_interval)

    def _forward(self, proxy: Proxy) -> Forward:
        return self._forwarder()(self.namespace, HUB, HUB_PORT, proxy.host, proxy.port)

    def _serve(self, cluster: Cluster, proxy: Proxy, timeout: float, token: str) -> int:
        forward = self._forward(proxy)
        login = login_url(forward.url, token)
        self.out(f"kubectl-shark UI and API at {forward.url}")
        self.out(f"log in to the UI at {login}")
        if proxy.open_browser:
            try:
                self.opener(login)
            except Exception:  # noqa: BLE001 - no browser is not an error
                pass
        self.say("press Ctrl-C to stop forwarding (kubectl-shark keeps running in the cluster)")
        try:
            while not self.stop.is_set():
                reason = forward.wait(0.25)
                if reason is None:
                    continue
                self.say(f"the port-forward ended: {reason}; forwarding again once the hub is ready")
                self._wait_hub(cluster, timeout)
                forward = self._forward(proxy)
                self.say(f"forwarding again: {forward.url}")
        except KeyboardInterrupt:
            pass
        finally:
            forward.stop()
        self.say("stopped forwarding; kubectl-shark is still running in the cluster: `kubectl shark open` "
                 "reconnects, `kubectl shark clean` removes it")
        return 0

    # ---- clean ---------------------------------------------------------------------------------------

    def clean(self, timeout: float = 120.0, keep_data: bool = False) -> int:
        cluster = self._connect()
        try:
            deleted = []
            cluster_name = cluster_scoped_name(self.namespace)
            # where the workers stored packets, read before their DaemonSet goes
            stores = None if keep_data else stores_of(
                cluster.get(KINDS["DaemonSet"], WORKER, self.namespace),
                cluster.list(KINDS["Pod"], self.namespace, WORKER_SELECTOR))
            kept = []
            for kind_name in CLEAN_ORDER:
                kind = KINDS[kind_name]
                if kind.namespaced:
                    found = cluster.list(kind, self.namespace, OURS)
                else:   # another release namespace's ClusterRole carries the same label: match the name
                    found = [o for o in cluster.list(kind, None, OURS) if o["metadata"]["name"] == cluster_name]
                if kind_name == "PersistentVolumeClaim" and keep_data:
                    # the hub's snapshots and scripts, for the next tap --hub-storage to mount again
                    kept += [f"persistentvolumeclaim/{o['metadata']['name']}" for o in found]
                    continue
                for obj in found:
                    if cluster.delete(kind, obj["metadata"]["name"], self.namespace if kind.namespaced else None):
                        deleted.append(f"{kind_name.lower()}/{obj['metadata']['name']}")
            for what in deleted:
                self.say(f"{what} deleted")
            if stores is not None and stores.nodes:
                self.say(f"removing the stored packets on {len(stores.nodes)} node{'s' * (len(stores.nodes) != 1)} …")
                for problem in wipe_stores(cluster, self.namespace, stores, timeout, self.say,
                                           poll=min(self.poll_interval, 1.0), sleep=self.sleep):
                    self.say(f"warning: {problem}")
            for what in kept:
                self.say(f"{what} kept (--keep-data): the hub's snapshots and scripts, mounted again by the next "
                         "tap --hub-storage; clean without --keep-data deletes it")
            namespace = cluster.get(KINDS["Namespace"], self.namespace)
            if kept and ours(namespace) and not terminating(namespace):
                self.say(f"namespace/{self.namespace} kept: it holds the hub's volume")
            elif ours(namespace) and not terminating(namespace):
                try:
                    cluster.delete(KINDS["Namespace"], self.namespace)
                    deleted.append(f"namespace/{self.namespace}")
                    self.say(f"namespace/{self.namespace} deleted")
                except KubeApiError as error:
                    if error.status != 409:     # 409: already being deleted
                        raise
            elif namespace is not None and not ours(namespace):
                self.say(f"namespace {self.namespace} was not created by kubectl-shark: left in place")
            if not deleted:
                self.say(f"nothing to clean: kubectl-shark is not deployed in namespace {self.namespace}"
                         + (" (its deletion is still finishing)" if terminating(namespace) else ""))
            return 0
        finally:
            cluster.close()

    # ---- token ---------------------------------------------------------------------------------------

    def token(self) -> int:
        cluster = self._connect()
        try:
            token = read_token(cluster, self.namespace)
        finally:
            cluster.close()
        if token is None:
            raise SharkError(f"kubectl-shark has no token in namespace {self.namespace} (no Secret {SECRET})",
                             hint="`kubectl shark tap` creates it; `kubectl shark token --local` prints the token "
                                  "of `tap --local`")
        self.out(token)
        return 0

    # ---- status --------------------------------------------------------------------------------------

    def status(self) -> int:
        cluster = self._connect()
        try:
            namespace = cluster.get(KINDS["Namespace"], self.namespace)
            where = f"namespace {self.namespace}" + (f", context {cluster.context}" if cluster.context else "") \
                + f", server {cluster.server}"
            if namespace is None:
                raise SharkError(f"kubectl-shark is not deployed ({where})", hint="deploy it with `kubectl shark tap`")
            state = snapshot(cluster, self.namespace)
            deployment = cluster.get(KINDS["Deployment"], HUB, self.namespace)
            self.out(f"kubectl-shark in {where}" + (" (terminating)" if terminating(namespace) else ""))
            for line in describe(state, deployment):
                self.out(line)
            bad = state.not_ready()
            if bad:
                raise SharkError(f"{len(bad)} of {len(state.pods()) + len(state.missing)} not ready",
                                 hint="`kubectl shark logs` shows their output")
            return 0
        finally:
            cluster.close()

    # ---- logs ----------------------------------------------------------------------------------------

    def logs(self, components: tuple[str, ...], follow: bool, tail: int | None, node: str | None) -> int:
        cluster = self._connect()
        try:
            pods: list[tuple[str, str, str]] = []     # (label, pod, container)
            for component in components:
                selector, container = (HUB_SELECTOR, "hub") if component == "hub" else (WORKER_SELECTOR, "worker")
                for pod in cluster.list(KINDS["Pod"], self.namespace, selector):
                    where = (pod.get("spec") or {}).get("nodeName") or ""
                    if node and where != node:
                        continue
                    label = "hub" if component == "hub" else f"worker {where or pod['metadata']['name']}"
                    pods.append((label, pod["metadata"]["name"], container))
            if not pods:
                what = " or ".join(components) + (f" on node {node}" if node else "")
                raise SharkError(f"no {what} pods in namespace {self.namespace}",
                                 hint="is kubectl-shark deployed? `kubectl shark status --cluster`")
            if follow:
                return self._follow(cluster, pods, tail)
            failures = 0
            for label, pod, container in pods:
                try:
                    for line in cluster.pod_log(self.namespace, pod, container, tail=tail):
                        self.out(f"[{label}] {printable(line)}")
                except KubeApiError as error:
                    failures += 1
                    self.say(f"warning: no log from {label} ({pod}): {error.message}")
            if failures == len(pods):
                raise SharkError("no pod had a log to show yet")
            return 0
        finally:
            cluster.close()

    def _follow(self, cluster: Cluster, pods: list[tuple[str, str, str]], tail: int | None) -> int:
        lines: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=10_000)

        def read(label: str, pod: str, container: str) -> None:
            try:
                for line in cluster.pod_log(self.namespace, pod, container, follow=True, tail=tail):
                    lines.put((label, line))
                    if self.stop.is_set():
                        break
                lines.put((label, "\0log ended"))
            except SharkError as error:
                lines.put((label, f"\0{error.message}"))
            finally:
                lines.put(None)
        for args in pods:
            threading.Thread(target=read, args=args, daemon=True).start()
        running = len(pods)
        try:
            while running and not self.stop.is_set():
                try:
                    item = lines.get(timeout=0.2)
                except queue.Empty:
                    continue
                if item is None:
                    running -= 1
                elif item[1].startswith("\0"):
                    self.say(f"[{item[0]}] {printable(item[1][1:])}")
                else:
                    self.out(f"[{item[0]}] {printable(item[1])}")
        except KeyboardInterrupt:
            pass
        return 0


def _claim_unchanged(before: dict[str, Any], error: SharkError) -> SharkError:
    """The API refused to change the hub's volume: say what it is and what can be done."""
    spec = before.get("spec") or {}
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "?")
    name = before["metadata"]["name"]
    return SharkError(f"--hub-storage: persistentvolumeclaim/{name} ({size}, StorageClass "
                      f"{spec.get('storageClassName') or 'none'}) cannot be changed so: {error.message}",
                      hint=f"a claim never changes its class and only grows, where its StorageClass allows "
                           f"expansion: tap again with --hub-storage {size}"
                           + (f" --hub-storage-class {spec['storageClassName']}" if spec.get("storageClassName") else "")
                           + ", or `kubectl shark clean` first (the hub's snapshots go with it)")


def describe(state: RolloutState, deployment: dict[str, Any] | None) -> list[str]:
    """The status lines: the hub with its targets, then one line per node."""
    lines = []
    hub_args: list[str] = []
    if deployment:
        containers = deployment["spec"]["template"]["spec"].get("containers") or []
        hub = next((c for c in containers if c.get("name") == "hub"), {})
        hub_args = hub.get("args") or []
        lines.append(f"  image {hub.get('image', '?')}")
    for pod in state.hub:
        lines.append(f"  {'hub':<20} {pod.name:<32} {pod.describe()}")
    if not state.hub:
        lines.append(f"  {'hub':<20} {'—':<32} no pod")
    for node, pod in sorted(state.workers.items()):
        lines.append(f"  {node:<20} {(pod.name if pod else '—'):<32} {pod.describe() if pod else 'no worker pod'}")
    for what in state.missing:
        lines.append(f"  {what}: not found")
    if deployment:
        regex = hub_args[hub_args.index("--pod-regex") + 1] if "--pod-regex" in hub_args else None
        namespaces = [hub_args[i + 1] for i, a in enumerate(hub_args) if a == "--target-namespace"]
        where = (f"namespace{'s' * (len(namespaces) > 1)} {', '.join(namespaces)}" if namespaces
                 else "every namespace")
        lines.append(f"  targets: {'pods matching ' + repr(regex) if regex else 'every pod'} in {where} "
                     "(as deployed; PUT /api/v1/targets may have changed them since)")
    return lines

