"""The installation's token in a cluster: the Secret `shark-token` in the release namespace.

`tap` creates it once (from SHARK_TOKEN when set, else a fresh token) and later taps reuse it;
the hub and the workers read it through `env.valueFrom.secretKeyRef` (manifests/), so it is in
no command line and no rendered manifest; `clean` deletes it with the rest (it carries the label
clean finds things by); `kubectl shark token` and the hub-facing commands read it through the
user's kubeconfig.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from shark import token as shark_token
from shark.errors import KubeApiError, SharkError
from shark.kube.client import Action, Cluster
from shark.kube.resources import KINDS, MANAGED_BY, MANAGER

NAME = "shark-token"
KEY = "token"
LOOKUP_TIMEOUT_S = 5.0


def secret_object(namespace: str, token: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": NAME, "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "shark", "app.kubernetes.io/part-of": "kubectl-shark",
                                    MANAGED_BY: MANAGER}},
            "data": {KEY: base64.b64encode(token.encode()).decode()}}


def token_of(secret: dict[str, Any], namespace: str) -> str:
    """The token a Secret holds; SharkError when it holds none that can be used."""
    where = f"Secret {NAME} in namespace {namespace}"
    encoded = (secret.get("data") or {}).get(KEY)
    if not isinstance(encoded, str):
        raise SharkError(f"{where} has no key {KEY!r}",
                         hint="`kubectl shark clean` and tap again create a new one")
    try:
        return shark_token.check(base64.b64decode(encoded, validate=True).decode("utf-8"), where)
    except (binascii.Error, UnicodeDecodeError):
        raise SharkError(f"{where}: {KEY!r} is not base64 of UTF-8 text") from None
    except shark_token.TokenError as error:
        raise SharkError(str(error)) from None


def read_token(cluster: Cluster, namespace: str, timeout: float | None = None) -> str | None:
    """The deployment's token, or None when there is no Secret (not deployed)."""
    kind = KINDS["Secret"]
    try:
        secret = cluster.request("GET", kind.path(namespace, NAME), Action("get", kind, namespace, NAME),
                                 **({"timeout": timeout} if timeout else {}))
    except KubeApiError as error:
        if error.status == 404:
            return None
        raise
    return token_of(secret, namespace)


def ensure_token(cluster: Cluster, namespace: str) -> tuple[str, bool]:
    """The deployment's token, creating its Secret when there is none; (token, created)."""
    existing = read_token(cluster, namespace)
    if existing is not None:
        return existing, False
    token = shark_token.from_env() or shark_token.generate()
    kind = KINDS["Secret"]
    try:
        cluster.request("POST", kind.path(namespace), Action("create", kind, namespace, NAME),
                        body=secret_object(namespace, token))
    except KubeApiError as error:
        if error.status != 409:      # 409: another tap created it a moment ago; use that one
            raise
        found = read_token(cluster, namespace)
        if found is None:
            raise
        return found, False
    return token, True
