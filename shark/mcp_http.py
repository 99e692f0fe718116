"""What guards `kubectl shark mcp --http`: a bearer token, loopback unless asked, Host/Origin.

The MCP server reads the traffic with the hub's token and writes files where its user can
(export_pcap, export_har), so reaching its port must take more than reaching the machine:
- every request carries `Authorization: Bearer TOKEN` (what the MCP authorization spec has a
  streamable HTTP client send), checked by the SDK's bearer middleware through a TokenVerifier
  (401 without it). The token is `--http-token`/SHARK_MCP_TOKEN, else the state dir's
  `mcp-token` file, made (0600) the first time, so a configured client keeps working across
  restarts. It is not the hub's token: whoever holds it can also write files here.
- the server listens on loopback unless `--allow-remote` says otherwise;
- Host and Origin are checked (the SDK's transport security) so that a web page whose name
  was rebound to 127.0.0.1 cannot talk to it from a browser.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings

from shark import token as shark_token
from shark.errors import SharkError

TOKEN_ENV = "SHARK_MCP_TOKEN"
TOKEN_FILE = "mcp-token"          # in the local state dir, beside the hub's `token`
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class HttpGuard:
    """How the HTTP transport is guarded: the token (and where it came from), the Host names
    accepted besides loopback's."""
    token: str
    token_from: str
    hosts: tuple[str, ...] = ()


class StaticTokenVerifier:
    """The SDK's TokenVerifier for one shared token, compared in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def verify_token(self, token: str) -> AccessToken | None:
        if not shark_token.same(token, self._token):
            return None
        return AccessToken(token=token, client_id="kubectl-shark", scopes=[])


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False     # a name: where it resolves to is not ours to trust


def http_token(given: str | None, state_dir: Path) -> tuple[str, str]:
    """(token, where it came from): `given` (the flag or SHARK_MCP_TOKEN), else the state dir's
    file, created the first time."""
    try:
        if given is not None:
            return shark_token.check(given, f"--http-token/{TOKEN_ENV}"), f"--http-token/{TOKEN_ENV}"
        path = state_dir / TOKEN_FILE
        return shark_token.load_or_create(path), str(path)
    except shark_token.TokenError as error:
        raise SharkError(str(error), hint=f"set {TOKEN_ENV}, or remove the file to have a new token made") from None


def check_bind(host: str, allow_remote: bool) -> None:
    if not allow_remote and not is_loopback(host):
        raise SharkError(f"--host {host}: not a loopback address; the MCP server would serve the captured "
                         "traffic to the network", hint="add --allow-remote if that is what you want "
                         "(every request still needs the token)")


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def transport_security(host: str, extra_hosts: tuple[str, ...]) -> TransportSecuritySettings:
    """Host must name this server (loopback's names, the address it listens on, --allow-host);
    an Origin, when a browser sends one, must be one of those too."""
    names = list(dict.fromkeys([*LOOPBACK_NAMES, _bracketed(host), *(_bracketed(h) for h in extra_hosts)]))
    names = [name for name in names if name not in ("0.0.0.0", "[::]")]    # not a name a client uses
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[n for name in names for n in (name, f"{name}:*")],
        allowed_origins=[f"{scheme}://{name}{port}" for name in names for scheme in ("http", "https")
                         for port in ("", ":*")])


def auth_settings(host: str, port: int) -> AuthSettings:
    """The SDK's auth switch for a resource server with its own token: the issuer is required by
    the settings model but unused (no OAuth routes without a resource_server_url or a provider)."""
    return AuthSettings(issuer_url=f"http://{_bracketed(host)}:{port}", resource_server_url=None)
