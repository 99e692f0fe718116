"""`kubectl shark snapshot create|list|download|delete`: traffic snapshots the hub keeps
(docs/API.md, /snapshots), from the terminal."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from shark.errors import HubError, SharkError
from shark.hubclient import DEFAULT_HUB, HubClient
from shark.terminal import printable
from shark.units import UnitError, format_size, parse_duration, parse_time

hub_option = click.option("--hub", "hub_url", default=DEFAULT_HUB, show_default=True, envvar="SHARK_HUB",
                          help="The hub's URL.")


def _call(hub: HubClient, method: str, path: str, what: str, **kwargs: Any) -> Any:
    response = hub.request(method, path, **kwargs)
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        hint = "`kubectl shark snapshot list` shows the snapshots" if response.status_code == 404 else None
        raise HubError(f"{what}: hub answered {response.status_code}: {printable(str(detail or response.text[:200]))}",
                       response.status_code, hint=hint)
    return response.json() if response.content else None


def _when(value: str | None, option: str) -> float | None:
    """--from/--to: epoch seconds or ISO 8601 (UTC without an offset)."""
    if not value:
        return None
    try:
        float(value)
    except ValueError:
        pass
    else:
        try:
            return parse_time(value, option, time.time())   # finite and in range, or a UsageError
        except UnitError as error:
            raise click.UsageError(str(error)) from None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.UsageError(f"{option}: {value!r} is neither epoch seconds nor an ISO 8601 time "
                               "(2026-03-14T22:00:00Z)") from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


@click.group("snapshot")
def snapshot() -> None:
    """Traffic snapshots: the packets and entries of a time window, kept by the hub across restarts."""


@snapshot.command("create")
@click.option("--since", default=None, help="The window starts this long ago, e.g. 10m.")
@click.option("--from", "from_", default=None, help="The window starts here (epoch seconds or ISO 8601).")
@click.option("--to", default=None, help="The window ends here (epoch seconds or ISO 8601) [default: now].")
@click.option("-q", "--query", "kfl", default="", help="KFL: only the streams of matching entries [default: all].")
@click.option("--name", default=None, help="The snapshot's name [default: snapshot-DATE-TIME].")
@hub_option
def create(since: str | None, from_: str | None, to: str | None, kfl: str, name: str | None, hub_url: str) -> None:
    """Save the packets of a window (all, or the flows of a query's matches) with its entries."""
    if since and from_:
        raise click.UsageError("give --since or --from, not both")
    start = _when(from_, "--from")
    if since:
        try:
            start = time.time() - parse_duration(since, "--since")
        except UnitError as error:
            raise click.UsageError(str(error)) from None
    body = {"name": name, "q": kfl or None, "since": start, "until": _when(to, "--to")}
    with HubClient(hub_url, timeout=300.0) as hub:
        meta = _call(hub, "POST", "/snapshots", "snapshot", json={k: v for k, v in body.items() if v is not None})
    partial = f"; partial: no answer from {', '.join(meta['partial'])}" if meta.get("partial") else ""
    click.echo(f"saved snapshot {meta['name']}: {meta['entries']} entries, {format_size(meta['bytes'])}{partial}")


@snapshot.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@hub_option
def list_(output: str, hub_url: str) -> None:
    """Every snapshot, and what they use of the hub's limit."""
    with HubClient(hub_url) as hub:
        answer = _call(hub, "GET", "/snapshots", "snapshots")
    if output == "json":
        click.echo(json.dumps(answer, indent=2))
        return
    rows = answer.get("snapshots") or []
    click.echo(f"{'NAME':<32} {'CREATED':<20} {'ENTRIES':>8} {'SIZE':>10}  QUERY")
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.get("created") or 0))
        click.echo(f"{row['name']:<32} {created:<20} {row.get('entries', 0):>8} "
                   f"{format_size(row.get('bytes', 0)):>10}  {printable(row.get('q') or '')}".rstrip())
    click.echo(f"{len(rows)} snapshots, {format_size(answer.get('bytes', 0))} of {format_size(answer.get('limit', 0))}",
               err=True)


@snapshot.command("download")
@click.argument("name")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The pcap file to write [default: NAME.pcap].")
@click.option("--entries", is_flag=True, help="Write the snapshot's entries (JSON) instead of its packets.")
@hub_option
def download(name: str, out: Path | None, entries: bool, hub_url: str) -> None:
    """Write a snapshot's packets (pcap; open with `tap --local --pcap FILE` or Wireshark) or entries."""
    out = out or Path(f"{name}.{'json' if entries else 'pcap'}")
    if not out.parent.is_dir():
        raise SharkError(f"cannot write {out}: no directory {out.parent}")
    with HubClient(hub_url, timeout=300.0) as hub:
        total = hub.download(f"/snapshots/{name}/{'entries' if entries else 'pcap'}", out)
    click.echo(f"wrote {format_size(total)} to {out}", err=True)


@snapshot.command("delete")
@click.argument("name")
@hub_option
def delete(name: str, hub_url: str) -> None:
    """Delete a snapshot."""
    with HubClient(hub_url) as hub:
        _call(hub, "DELETE", f"/snapshots/{name}", "snapshot")
    click.echo(f"deleted snapshot {name}", err=True)
