"""The hub's cluster mode wired together: an API client, five watches, and the parts they feed.

  pods in the hub's namespace matching the worker selector -> Discovery -> WorkerPool
  pods (all namespaces)                                     -> Resolver, Targeter
  services, endpoints (all namespaces), nodes               -> Resolver
  Resolver changes, pool membership and health              -> Targeter -> PUT /targets

`Cluster.lifespan` starts them with the hub and stops them (threads joined) when it stops.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes.config.incluster_config import InClusterConfigLoader

from hub.kube.discovery import Discovery
from hub.kube.names import Fill, filler
from hub.kube.resolver import DEFAULT_HISTORY, Resolver
from hub.kube.targeter import TargetSpec, Targeter
from hub.kube.watch import BACKOFF_S, WATCH_TIMEOUT_S, Watch
from hub.workers import WorkerPool, api_base

log = logging.getLogger("shark.hub.kube")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_NAMESPACE = "shark"
DEFAULT_WORKER_SELECTOR = "app.kubernetes.io/name=shark,app.kubernetes.io/component=worker"


def service_account_dir() -> Path:
    """Where the kubelet mounts the pod's service account (token, ca.crt, namespace);
    $SHARK_SERVICE_ACCOUNT_DIR moves it, so tests start the hub as a pod is started, outside one."""
    return Path(os.environ.get("SHARK_SERVICE_ACCOUNT_DIR") or SERVICE_ACCOUNT_DIR)


class KubeConfigError(Exception):
    """No usable way to reach the API server; the message says what was tried."""


@dataclass
class KubeSettings:
    kubeconfig: str | None = None          # None: in cluster when the service account is mounted, else ~/.kube/config
    context: str | None = None
    namespace: str | None = None           # the workers' DaemonSet; None: the hub's own (service account), else "shark"
    worker_selector: str = DEFAULT_WORKER_SELECTOR
    worker_port_name: str = "api"
    worker_port: int = 8897
    worker_scheme: str = "http"
    spec: TargetSpec = TargetSpec()
    watch_timeout_s: int = WATCH_TIMEOUT_S
    backoff_s: tuple[float, float] = BACKOFF_S
    debounce_s: float = 0.3
    verify_s: float | None = None          # None: the pool's poll interval (the check reads polled /status)
    history: int = DEFAULT_HISTORY
    api_client: Any = None                 # a ready kubernetes ApiClient (tests); None: made from the above

    def resolved_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        try:
            return (service_account_dir() / "namespace").read_text().strip() or DEFAULT_NAMESPACE
        except OSError:
            return DEFAULT_NAMESPACE


def api_client(settings: KubeSettings) -> kclient.ApiClient:
    """An API client from --kubeconfig/--context, else the pod's service account when in a
    cluster, else the default kubeconfig. Raises KubeConfigError saying what failed."""
    configuration = kclient.Configuration()
    try:
        if settings.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            account = service_account_dir()
            InClusterConfigLoader(token_filename=str(account / "token"),
                                  cert_filename=str(account / "ca.crt")).load_and_set(configuration)
        else:
            kconfig.load_kube_config(config_file=settings.kubeconfig, context=settings.context,
                                     client_configuration=configuration, persist_config=False)
    except (kconfig.ConfigException, OSError, ValueError, TypeError) as error:
        where = settings.kubeconfig or (f"the service account in {service_account_dir()}"
                                        if os.environ.get("KUBERNETES_SERVICE_HOST") else None) \
            or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise KubeConfigError(f"cannot load the cluster's configuration ({where}"
                              f"{', context ' + settings.context if settings.context else ''}): {error}") from None
    return kclient.ApiClient(configuration)


class Cluster:
    def __init__(self, pool: WorkerPool, settings: KubeSettings, client: kclient.ApiClient | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.namespace = settings.resolved_namespace()
        self._client = client or settings.api_client
        self.resolver = Resolver(settings.history)
        self.fill: Fill = filler(self.resolver)
        self.discovery = Discovery(pool, port_name=settings.worker_port_name, default_port=settings.worker_port,
                                   scheme=settings.worker_scheme)
        self.watches: list[Watch] = []
        self.targeter: Targeter | None = None
        self.started_at: float | None = None

    def _node_of(self, url: str) -> str | None:
        return {api_base(u): node for u, node in self.discovery.nodes().items()}.get(url)

    def _build(self, api: kclient.ApiClient) -> None:
        core = kclient.CoreV1Api(api)
        options: dict[str, Any] = {"watch_timeout_s": self.settings.watch_timeout_s, "backoff_s": self.settings.backoff_s}
        resolver = self.resolver
        pods = Watch("pods", core.list_pod_for_all_namespaces, [resolver.on_pod], **options)
        self.targeter = Targeter(self.pool, resolver, pods.store, self._node_of, spec=self.settings.spec,
                                 exclude_namespaces=(self.namespace,), debounce_s=self.settings.debounce_s,
                                 verify_s=self.settings.verify_s or self.pool.poll_interval)
        targeter = self.targeter
        pods.handlers.append(targeter.mark)
        workers = Watch("worker pods", functools.partial(core.list_namespaced_pod, self.namespace,
                                                         label_selector=self.settings.worker_selector),
                        [self.discovery.on_pod], **options)
        self.watches = [
            workers, pods,
            Watch("services", core.list_service_for_all_namespaces, [resolver.on_service], **options),
            Watch("endpoints", core.list_endpoints_for_all_namespaces, [resolver.on_endpoints], **options),
            Watch("nodes", core.list_node, [resolver.on_node], **options),
        ]
        resolver.on_change.append(targeter.mark)
        self.discovery.on_workers.append(targeter.worker_restarted)
        self.pool.on_membership.append(targeter.membership)
        self.pool.on_change.append(targeter.worker_changed)

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        api = self._client or await asyncio.to_thread(api_client, self.settings)
        self._build(api)
        assert self.targeter is not None
        self.started_at = time.time()
        for watch in self.watches:
            watch.start()
        complete = asyncio.create_task(self._mark_complete(), name="kube-resolver-complete")
        log.info("cluster mode: workers are pods in %s matching %s; targets %s", self.namespace,
                 self.settings.worker_selector, self.settings.spec.to_json())
        try:
            yield
        finally:
            complete.cancel()
            await asyncio.gather(complete, return_exceptions=True)
            await self.targeter.close()
            await asyncio.gather(*(watch.stop() for watch in self.watches))
            await self.discovery.close()
            if self._client is None:
                await asyncio.to_thread(api.close)

    async def _mark_complete(self) -> None:
        """Once pods, services, endpoints and nodes have all been listed: from then on an
        address nobody claims is external, and the workers are sent their targets (not before:
        a worker would be sent a part of the pods, or idle, and capture too little meanwhile)."""
        await asyncio.gather(*(watch.synced.wait() for watch in self.watches))
        self.resolver.complete_since = time.time()
        assert self.targeter is not None
        self.targeter.start()
        self.targeter.mark()

    async def synced(self) -> None:
        await asyncio.gather(*(watch.synced.wait() for watch in self.watches))

    def watches_view(self) -> dict[str, Any]:
        return {watch.resource: {"synced": watch.stats.synced, "ok": watch.stats.ok,
                                 "objects": len(watch.store.objects),
                                 "events": watch.stats.events, "lists": watch.stats.lists,
                                 "relists_gone": watch.stats.relists_gone, "errors": watch.stats.errors,
                                 "last_error": watch.stats.last_error}
                for watch in self.watches}

    def view(self) -> dict[str, Any]:
        assert self.targeter is not None
        return {**self.targeter.view(), "workers_namespace": self.namespace,
                "worker_selector": self.settings.worker_selector, "watches": self.watches_view()}
