"""The Kubernetes API as the CLI uses it: a kubeconfig, a handful of REST calls, server-side apply.

The kubernetes client does what a kubeconfig may ask for (certificates, tokens, exec plugins);
requests go through its ApiClient as plain JSON (no generated models), because every object
here is a dict rendered from manifests/. Every failure becomes one of shark.errors' errors with
a hint: no kubeconfig, cluster unreachable, RBAC forbidden (which verb on which resource), or
the API's own Status message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import config as kconfig
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from shark.errors import ClusterUnreachable, Forbidden, KubeApiError, NoKubeconfig
from shark.kube.resources import MANAGER, Kind, kind_of

REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Action:
    """What a request does, for error messages: `create` `deployments.apps` in `shark`."""
    verb: str
    kind: Kind
    namespace: str | None = None
    name: str | None = None


def _kubeconfig_files(kubeconfig: str | None) -> str:
    if kubeconfig:
        return kubeconfig
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def context_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace the kubeconfig's context names ("default" if none or no kubeconfig), as
    kubectl takes it for commands without -n; reads the file only."""
    try:
        contexts, active = kconfig.list_kube_config_contexts(_kubeconfig_files(kubeconfig))
    except (ConfigException, OSError, ValueError):
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    return ((chosen or {}).get("context") or {}).get("namespace") or "default"


class Cluster:
    """One cluster, reached through a kubeconfig (and context)."""

    def __init__(self, api: ApiClient, context: str | None) -> None:
        self.api = api
        self.context = context
        self.server = api.configuration.host

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Cluster:
        files = _kubeconfig_files(kubeconfig)
        if not any(os.path.exists(f) for f in files.split(os.pathsep) if f):
            raise NoKubeconfig(f"no kubeconfig at {files}")
        try:
            api = kconfig.new_client_from_config(config_file=files, context=context, persist_config=False)
        except ConfigException as error:
            raise NoKubeconfig(f"{files}: {error}") from None
        except (OSError, ValueError) as error:
            raise NoKubeconfig(f"cannot read {files}: {error}") from None
        # urllib3 would retry a refused connection three times and log each retry on stderr:
        # an unreachable cluster is reported once, with a hint, instead.
        api.configuration.retries = False
        if context is None:
            try:
                context = kconfig.list_kube_config_contexts(files)[1].get("name")
            except (ConfigException, OSError, ValueError, AttributeError):
                context = None
        return cls(api, context)

    def close(self) -> None:
        self.api.close()

    # ---- requests --------------------------------------------------------------------------------

    def request(self, method: str, path: str, action: Action, *, query: dict[str, str] | None = None,
                body: Any = None, content_type: str = "application/json", stream: bool = False,
                timeout: float | None = REQUEST_TIMEOUT_S) -> Any:
        """One API call: the decoded JSON answer (or, with stream, the open urllib3 response)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            prepared = self.api.param_serialize(method=method, resource_path=path,
                                                query_params=list((query or {}).items()), header_params=headers,
                                                body=body, auth_settings=["BearerToken"])
            response = self.api.call_api(*prepared, _request_timeout=timeout)
        except ApiException as error:       # TLS failures come as status 0
            raise ClusterUnreachable(self.server, (error.reason or str(error)).splitlines()[-1],
                                     self.context) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ClusterUnreachable(self.server, _connection_reason(error), self.context) from None
        if response.status >= 400:
            raise self._error(response.status, response.read(), action)
        if stream:
            return response.response
        data = response.read()
        return json.loads(data) if data else None

    def _error(self, status: int, data: bytes, action: Action) -> Exception:
        try:
            body = json.loads(data)
            message = body.get("message") or data.decode(errors="replace")
        except (ValueError, AttributeError):
            message = data.decode(errors="replace").strip() or f"HTTP {status}"
        if status == 403:
            return Forbidden(action.verb, action.kind.resource, action.namespace if action.kind.namespaced else None,
                             message)
        if status == 401:
            return KubeApiError(f"the cluster at {self.server} refused our credentials: {message}", status,
                                hint="log in again (the kubeconfig's token or certificate may have expired); "
                                     "`kubectl get namespaces` shows whether kubectl gets in")
        return KubeApiError(f"{action.verb} {action.kind.resource}"
                            + (f" {action.name}" if action.name else "")
                            + (f" in {action.namespace}" if action.namespace and action.kind.namespaced else "")
                            + f": {message}", status)

    # ---- objects ----------------------------------------------------------------------------------

    def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", kind.path(namespace, name), Action("get", kind, namespace, name))
        except KubeApiError as error:
            if error.status == 404:
                return None
            raise

    def list(self, kind: Kind, namespace: str | None = None, labels: str | None = None) -> list[dict[str, Any]]:
        query = {"labelSelector": labels} if labels else {}
        answer = self.request("GET", kind.path(namespace), Action("list", kind, namespace), query=query)
        return list((answer or {}).get("items") or [])

    def apply(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply as `kubectl-shark`, taking over fields others changed (force)."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        namespace = meta.get("namespace") if kind.namespaced else None
        query = {"fieldManager": MANAGER, "force": "true", "fieldValidation": "Strict"}
        if dry_run:
            query["dryRun"] = "All"
        return self.request("PATCH", kind.path(namespace, meta["name"]), Action("patch", kind, namespace, meta["name"]),
                            query=query, body=obj, content_type="application/apply-patch+yaml")

    def delete(self, kind: Kind, name: str, namespace: str | None = None) -> bool:
        """Delete with background propagation (dependents go too); False if it was not there."""
        try:
            self.request("DELETE", kind.path(namespace, name), Action("delete", kind, namespace, name),
                         body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
        except KubeApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def pod_log(self, namespace: str, pod: str, container: str, *, follow: bool = False,
                tail: int | None = None) -> Iterator[str]:
        """The container's log lines; with follow, until the pod goes or the caller stops."""
        from shark.kube.resources import KINDS
        query = {"container": container}
        if follow:
            query["follow"] = "true"
        if tail is not None:
            query["tailLines"] = str(tail)
        path = KINDS["Pod"].path(namespace, pod) + "/log"
        response = self.request("GET", path, Action("get", _POD_LOG, namespace, pod), query=query, stream=True,
                                timeout=None if follow else REQUEST_TIMEOUT_S)
        try:
            pending = b""
            for chunk in response.stream(4096, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if pending:
                yield pending.decode(errors="replace")
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ClusterUnreachable(self.server, _connection_reason(error), self.context) from None
        finally:
            response.release_conn()


_POD_LOG = Kind("Pod", "v1", "pods/log", True)


def _connection_reason(error: BaseException) -> str:
    """The innermost reason of a urllib3 failure, in words ("Connection refused")."""
    reason: BaseException | None = error
    while reason is not None:
        inner = getattr(reason, "reason", None)
        if isinstance(inner, BaseException) and inner is not reason:
            reason = inner
            continue
        break
    text = str(reason or error)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return text.split(": ", 1)[-1] if ": " in text else text
