"""Who may use the hub: its access policy for shark/auth.py's guard, and /healthz.

The hub serves the loopback names and the ones given with --allowed-host (a name a page was
rebound to is refused), asks for the token of `Authorization: Bearer` or of the session cookie a
browser gets from `/?token=`, and serves the SPA's files without it (they hold no data; the
page asks for the token when the API refuses it). The routes themselves know nothing of this.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from litestar import MediaType, get

from shark.auth import HEALTH_PATH, LOOPBACK_HOSTS, Policy, host_name, static_files


def hub_policy(token: str | None, allowed_hosts: Iterable[str], spa_dir: Path | None) -> Policy:
    hosts = LOOPBACK_HOSTS | {host_name(name, "--allowed-host") for name in allowed_hosts}
    return Policy(token, "hub", frozenset(hosts), host_hint="; start the hub with --allowed-host NAME to serve another",
                  browser_login=True, public=static_files(spa_dir))


@get(HEALTH_PATH, media_type=MediaType.TEXT, include_in_schema=False, sync_to_thread=False)
def healthz() -> str:
    """Data-free health for probes, without the token: 200 while the hub serves."""
    return "ok\n"
