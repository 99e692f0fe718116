"""Where the hub-facing commands find the token, so that the user never has to pass it:

1. SHARK_TOKEN, when set (and then nothing else);
2. the token file of the local state dir, which `tap --local` made;
3. no token, when neither exists (a hub started by hand on loopback asks for none);
4. in a cluster, the Secret `tap` made, read through the user's kubeconfig (its current
   context, release namespace `shark`).

A source is looked at only once the hub has refused (401) what the ones before gave, so a
local tap never waits on a cluster, and the client keeps the token that worked.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import httpx

from shark import token as shark_token
from shark.errors import SharkError
from shark.kube.resources import DEFAULT_RELEASE_NAMESPACE
from shark.local import default_state_dir, token_file

CLUSTER_TIMEOUT_S = 5.0


def cluster_token(namespace: str = DEFAULT_RELEASE_NAMESPACE) -> tuple[str | None, str]:
    """The deployment's token through the kubeconfig, and where it was looked for."""
    from shark.kube.client import Cluster       # the kubernetes client only when it is needed
    from shark.kube.secret import NAME, read_token
    try:
        cluster = Cluster.connect()
    except SharkError as error:
        return None, f"a cluster ({error.message})"
    where = f"Secret {NAME} in namespace {namespace}" + (f" of context {cluster.context}" if cluster.context else "")
    try:
        token = read_token(cluster, namespace, timeout=CLUSTER_TIMEOUT_S)
    except SharkError as error:
        return None, f"{where} ({error.message})"
    finally:
        cluster.close()
    return token, where if token else f"{where} (none)"


class TokenFinder:
    """The tokens to try, in order; `looked` says where it looked, for the user."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir or default_state_dir()
        self.looked: list[str] = []

    def candidates(self) -> Iterator[str | None]:
        try:
            from_env = shark_token.from_env()
        except shark_token.TokenError as error:
            raise SharkError(str(error), hint=f"unset {shark_token.ENV} or set it to the token") from None
        if from_env is not None:
            self.looked.append(shark_token.ENV)
            yield from_env
            return
        self.looked.append(f"{shark_token.ENV} (not set)")
        path = token_file(self.state_dir)
        local = None
        try:
            local = shark_token.read_file(path) if path.exists() else None
        except shark_token.TokenError as error:
            self.looked.append(str(error))
        else:
            self.looked.append(str(path) if local else f"{path} (none)")
        yield local
        token, where = cluster_token()
        self.looked.append(where)
        if token is not None and token != local:
            yield token

    def hint(self) -> str:
        return (f"looked for the token in: {'; '.join(self.looked)}; set {shark_token.ENV} "
                "(`kubectl shark token` prints the cluster's, `kubectl shark token --local` the local one)")


_END = object()


class TokenAuth(httpx.Auth):
    """httpx auth that sends the finder's first token and moves on to the next on a 401."""

    def __init__(self, finder: TokenFinder) -> None:
        self.finder = finder
        self._candidates = finder.candidates()
        self._current: object = next(self._candidates, _END)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        while True:
            token = self._current
            if isinstance(token, str):
                request.headers["Authorization"] = f"Bearer {token}"
            else:
                request.headers.pop("Authorization", None)
            response = yield request
            if response.status_code != 401 or token is _END:
                return
            self._current = next(self._candidates, _END)
            if self._current is _END:
                return
