"""Who may call the worker's and the hub's HTTP APIs (ARCHITECTURE.md, "Security model").

One ASGI guard wraps each app outside its routes, so a route added later is covered without a
line of its own. For every HTTP request and WebSocket, in this order:

1. `/healthz` passes: it holds no data, and kubelets probe it by pod IP without a token.
2. Host: where the policy names its hosts (the hub always; a worker without a token), a Host
   header naming another is refused (403): a page whose name was rebound to 127.0.0.1 must not
   read the API (DNS rebinding).
3. Origin: a WebSocket or a state-changing request (POST, PUT, PATCH, DELETE) from a page of
   another origin is refused (403): CORS holds back neither WebSockets nor form posts.
4. Browser login (the hub): `GET /?token=T` with the right T sets an HttpOnly, SameSite=Strict
   session cookie and redirects to the same address without the token in it.
5. The token, when there is one: `Authorization: Bearer T`, or the session cookie; else 401.
   The SPA's files are public (they hold no data) so that its login prompt can load.
6. A state-changing request with a body takes `application/json` only (415): a cross-site
   form can send nothing else but form encodings and text/plain.

Without a token a process may listen on loopback only (`check_listen`).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus, urlsplit

from shark.token import session_value, same

if TYPE_CHECKING:      # the CLI imports this module for host names: no web framework for that
    from litestar import Litestar
    from litestar.types import ASGIApp, Receive, Scope, Send

HEALTH_PATH = "/healthz"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READING = frozenset({"GET", "HEAD"})
SESSION_MAX_AGE_S = 7 * 24 * 3600
COOKIE_PREFIX = "shark_session_"
TOKEN_HINT = "`kubectl shark token` prints it"


class ListenRefused(ValueError):
    """Listening beyond loopback without a token; the message names the option."""


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(host: str, port: int, token: str | None, option: str = "--listen") -> None:
    """Refuse to serve captured traffic beyond this machine without a token."""
    if token is None and not is_loopback(host):
        shown = f"[{host}]" if ":" in host else host
        raise ListenRefused(f"{option}: {shown}:{port} is not a loopback address and no token is set; "
                            "set SHARK_TOKEN (`kubectl shark token` prints the installation's) or listen on "
                            "127.0.0.1")


def host_name(text: str, option: str) -> str:
    """A name given to serve under (--allowed-host): lower case, without brackets or port."""
    name = text.strip().lower().rstrip(".")
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if not bare or any(ch in bare for ch in "/:@[] \t") or not all(ch.isprintable() for ch in bare):
        raise ValueError(f"{option}: {text!r} is not a host name (e.g. shark.example.com, without "
                         "scheme or port)")
    return bare


def split_host(header: str, default_port: int) -> tuple[str, int]:
    """A Host header as (name in lower case without brackets, port)."""
    header = header.strip().lower()
    if header.startswith("["):
        name, _, rest = header[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        name, _, port_text = header.rpartition(":") if header.count(":") == 1 else (header, "", "")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        port = -1
    return name.rstrip("."), port


def static_files(directory: Path | None) -> Callable[[str], bool]:
    """Paths that are files of `directory` (and "/"): served without the token."""
    if directory is None:
        return _nothing
    root = directory.resolve()

    def public(path: str) -> bool:
        if path == "/":
            return True
        try:
            target = (root / path.lstrip("/")).resolve()
        except (OSError, ValueError):
            return False
        return target.is_relative_to(root) and target.is_file()
    return public


def _nothing(path: str) -> bool:
    return False


@dataclass(frozen=True)
class Policy:
    token: str | None                      # None: no token (allowed on loopback only)
    what: str = "hub"                      # "hub" or "worker", in the reasons given
    hosts: frozenset[str] | None = None    # Host names served (lower case, no port); None: any
    host_hint: str = ""                    # how to add a name, after a refused Host
    browser_login: bool = False            # /?token= and the session cookie (the hub's UI)
    public: Callable[[str], bool] = field(default=_nothing)   # GET paths without the token


@dataclass(frozen=True)
class Answer:
    """What the guard says instead of the app: an error, or the login redirect."""
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _error(status: int, error: str, detail: str, *headers: tuple[str, str]) -> Answer:
    body = json.dumps({"error": error, "detail": detail}).encode() + b"\n"
    return Answer(status, body, (("content-type", "application/json"), ("cache-control", "no-store"), *headers))


class Guard:
    """The ASGI app in front of another: answers what the policy refuses, passes the rest."""

    def __init__(self, app: ASGIApp, policy: Policy) -> None:
        self.app = app
        self.policy = policy
        self.session = session_value(policy.token) if policy.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        answer = self.decide(scope)
        if answer is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await _refuse_websocket(answer, scope, receive, send)
        else:
            await send({"type": "http.response.start", "status": answer.status, "headers": _raw(answer)})
            await send({"type": "http.response.body", "body": answer.body})

    def decide(self, scope: Scope) -> Answer | None:
        """None to pass the request on, else what to answer instead."""
        path: str = scope["path"]
        if path == HEALTH_PATH:
            return None
        policy = self.policy
        websocket = scope["type"] == "websocket"
        method = "GET" if websocket else scope["method"]
        headers = _headers(scope)
        secure = scope.get("scheme") in ("https", "wss")
        host_header = headers.get("host", "")
        host, port = split_host(host_header, 443 if secure else 80)
        if policy.hosts is not None and host not in policy.hosts:
            served = ", ".join(sorted(policy.hosts))
            return _error(403, "forbidden", f"Host: {host_header!r} is not a name this {policy.what} answers to "
                                            f"({served}){policy.host_hint}")
        origin = headers.get("origin")
        if (websocket or method in STATE_CHANGING) and origin is not None and not _same_origin(origin, host, port):
            return _error(403, "forbidden", f"Origin: {origin!r} is not this {policy.what}'s own; WebSockets and "
                                            "changes from other sites are refused")
        if policy.browser_login and not websocket and method in READING and not path.startswith("/api/"):
            login = self._login(scope, port)
            if login is not None:
                return login
        if policy.token is not None:
            refusal = self._unauthenticated(headers, port)
            # (public() looks at the disk: asked only of requests without credentials)
            if refusal is not None and not (method in READING and not websocket and policy.public(path)):
                return refusal
        if method in STATE_CHANGING and not websocket and not _json_or_empty(headers):
            given = repr(headers["content-type"]) if "content-type" in headers else "missing"
            return _error(415, "unsupported media type", f"Content-Type: {given}; changes take application/json")
        return None

    def _unauthenticated(self, headers: dict[str, str], port: int) -> Answer | None:
        assert self.policy.token is not None and self.session is not None
        scheme, _, given = headers.get("authorization", "").strip().partition(" ")
        given = given.strip()
        if scheme.lower() == "bearer" and given and same(given, self.policy.token):
            return None
        cookie = _cookie(headers.get("cookie", ""), COOKIE_PREFIX + str(port)) if self.policy.browser_login else None
        if cookie and same(cookie, self.session):
            return None
        problem = f"the token is not this {self.policy.what}'s" if given or cookie else "no token"
        detail = f"{problem}: send Authorization: Bearer TOKEN ({TOKEN_HINT})"
        if self.policy.browser_login:
            detail += "; a browser opens /?token=TOKEN once"
        return _error(401, "unauthorized", detail, ("www-authenticate", 'Bearer realm="kubectl-shark"'))

    def _login(self, scope: Scope, port: int) -> Answer | None:
        """`?token=T` in a page address: a session cookie and the same address without T."""
        pairs = [p for p in scope.get("query_string", b"").decode("latin-1").split("&") if p]
        tokens = [unquote_plus(p.partition("=")[2]) for p in pairs if unquote_plus(p.partition("=")[0]) == "token"]
        if not tokens:
            return None
        headers = [("cache-control", "no-store"), ("referrer-policy", "no-referrer")]
        if self.policy.token is not None:
            if not same(tokens[-1].strip(), self.policy.token):
                return Answer(401, f"401: the token in the address is not this {self.policy.what}'s; {TOKEN_HINT}, "
                                   "and `kubectl shark tap` or `open` print the address to log in with\n".encode(),
                              (("content-type", "text/plain; charset=utf-8"), *headers))
            cookie = (f"{COOKIE_PREFIX}{port}={self.session}; Path=/; Max-Age={SESSION_MAX_AGE_S}; HttpOnly; "
                      "SameSite=Strict" + ("; Secure" if scope.get("scheme") == "https" else ""))
            headers.append(("set-cookie", cookie))
        rest = "&".join(p for p in pairs if unquote_plus(p.partition("=")[0]) != "token")
        # relative, so that a hub behind a path prefix (kubectl proxy) keeps its prefix
        last = scope["path"].rpartition("/")[2]
        location = "./" + last + (f"?{rest}" if rest else "")
        return Answer(303, b"", (*headers, ("location", location)))


def protect(app: Litestar, policy: Policy) -> Litestar:
    """Put the guard in front of everything `app` serves (as Litestar's own CORS middleware sits)."""
    app.asgi_handler = Guard(app.asgi_handler, policy)
    return app


def _raw(answer: Answer) -> list[tuple[bytes, bytes]]:
    headers = [*answer.headers, ("content-length", str(len(answer.body)))]
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        found[name] = f"{found[name]}; {value}" if name == "cookie" and name in found else value
    return found


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def _same_origin(origin: str, host: str, port: int) -> bool:
    try:
        parts = urlsplit(origin.strip().lower())
        origin_port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and (parts.hostname or "").rstrip(".") == host and origin_port == port


def _json_or_empty(headers: dict[str, str]) -> bool:
    content_type = headers.get("content-type")
    if content_type is not None:
        return content_type.partition(";")[0].strip().lower() == "application/json"
    has_body = headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers
    return not has_body


async def _refuse_websocket(answer: Answer, scope: Scope, receive: Receive, send: Send) -> None:
    message: dict[str, Any] = await receive()          # websocket.connect
    if message.get("type") != "websocket.connect":
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": answer.status, "headers": _raw(answer)})
        await send({"type": "websocket.http.response.body", "body": answer.body})
    else:      # closing before accepting: the server answers the handshake with 403
        await send({"type": "websocket.close", "code": 1008})
