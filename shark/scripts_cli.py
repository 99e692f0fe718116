"""`kubectl shark scripts list|add FILE|rm NAME|enable NAME|disable NAME|logs [-f]`: the hub's
scripts (docs/SCRIPTS.md) from the terminal, over /api/v1/scripts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import httpx

from shark.errors import HubError, HubUnreachable, SharkError
from shark.hubclient import DEFAULT_HUB, HubClient, sse_events
from shark.terminal import printable

hub_option = click.option("--hub", "hub_url", default=DEFAULT_HUB, show_default=True, envvar="SHARK_HUB",
                          help="The hub's URL.")


def _call(hub: HubClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to the hub (HubClient.request: transport failures and 401 raised)."""
    return hub.request(method, path, **kwargs)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return response.text[:200].strip()


def _checked(response: httpx.Response, what: str) -> Any:
    if response.status_code == 404:
        raise HubError(f"{what}: {_detail(response)}", 404,
                       hint="`kubectl shark scripts list` shows the scripts; an older hub may have no scripting")
    if response.status_code >= 400:
        raise HubError(f"{what}: hub answered {response.status_code}: {_detail(response)}", response.status_code)
    return response.json() if response.content else None


@click.group("scripts")
def scripts() -> None:
    """The hub's JavaScript scripts: hooks on captured traffic, helpers, cron jobs."""


@scripts.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@hub_option
def list_scripts(output: str, hub_url: str) -> None:
    """Every script: state, hooks, jobs, calls, failures, and why one was disabled."""
    with HubClient(hub_url) as hub:
        answer = _checked(_call(hub, "GET", "/scripts"), "scripts")
    rows = answer.get("scripts") or []
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no scripts (kept in {answer.get('store')}); add one with `kubectl shark scripts add FILE`")
        return
    click.echo(f"{'NAME':<24} {'STATE':<9} {'HOOKS':<34} {'JOBS':>4} {'CALLS':>9} {'FAILED':>6}  PROBLEM")
    for row in rows:
        problem = row.get("disabled_reason") or ((row.get("last_error") or {}).get("message") or "")
        hooks = ",".join(row.get("hooks") or []) or "-"
        click.echo(f"{row['name']:<24} {row.get('state', '?'):<9} {hooks:<34} {len(row.get('jobs') or []):>4} "
                   f"{row.get('calls', 0):>9} {row.get('failures', 0):>6}  {problem}".rstrip())


@scripts.command("add")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--name", help="The script's name [default: the file name without .js].")
@click.option("--disabled", is_flag=True, help="Store it without running it.")
@hub_option
def add(file: Path, name: str | None, disabled: bool, hub_url: str) -> None:
    """Add a script from FILE, or replace the script of that name."""
    try:
        code = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SharkError(f"{file}: not UTF-8 text (a script is JavaScript source)") from None
    name = name or file.name.removesuffix(".js")
    with HubClient(hub_url) as hub:
        response = _call(hub, "PUT", f"/scripts/{name}", json={"code": code, "enabled": not disabled})
        if response.status_code == 400:
            body = response.json()
            line, column = body.get("line"), body.get("column")
            if line is not None:   # file:line:column: like a compiler, so editors can jump there
                where = f"{file}:{line}" + (f":{column}" if column is not None else "")
                message = str(body.get("detail", "")).removeprefix("code: ").split(": ", 1)[-1]
                raise SharkError(f"{where}: {message}")
            raise SharkError(f"{file}: {str(body.get('detail', '')).removeprefix('code: ')}")
        script = _checked(response, f"script {name}")
    verb = "added" if response.status_code == 201 else "replaced"
    hooks = ", ".join(script.get("hooks") or []) or "no hooks"
    jobs = len(script.get("jobs") or [])
    click.echo(f"{verb} {name} ({script.get('state')}; {hooks}; {jobs} jobs)")


@scripts.command("rm")
@click.argument("name")
@hub_option
def remove(name: str, hub_url: str) -> None:
    """Delete a script."""
    with HubClient(hub_url) as hub:
        _checked(_call(hub, "DELETE", f"/scripts/{name}"), f"script {name}")
    click.echo(f"deleted {name}")


def _set_enabled(name: str, enabled: bool, hub_url: str) -> None:
    with HubClient(hub_url) as hub:
        _checked(_call(hub, "GET", f"/scripts/{name}"), f"script {name}")   # a PUT would create it
        script = _checked(_call(hub, "PUT", f"/scripts/{name}", json={"enabled": enabled}), f"script {name}")
    click.echo(f"{name}: {script.get('state')}")


@scripts.command("enable")
@click.argument("name")
@hub_option
def enable(name: str, hub_url: str) -> None:
    """Run a disabled script again (its failure count starts over)."""
    _set_enabled(name, True, hub_url)


@scripts.command("disable")
@click.argument("name")
@hub_option
def disable(name: str, hub_url: str) -> None:
    """Stop running a script but keep it."""
    _set_enabled(name, False, hub_url)


def format_line(line: dict[str, Any]) -> str:
    ts = line.get("ts")
    when = (time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"
            if isinstance(ts, (int, float)) else "?")
    level = str(line.get("level", "info"))
    marker = {"error": "ERROR ", "warn": "WARN  "}.get(level, "")
    source = "hub: " if line.get("source") == "hub" else ""
    return printable(f"{when} [{line.get('script')}] {marker}{source}{line.get('text', '')}")


@scripts.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines as they come.")
@click.option("--script", "script", default=None, help="Only this script's lines.")
@click.option("--tail", type=click.IntRange(1, 2000), default=100, show_default=True,
              help="How many of the last lines to print first.")
@hub_option
def logs(follow: bool, script: str | None, tail: int, hub_url: str) -> None:
    """The scripts' console (console.log/error) and what the hub said about them."""
    params: dict[str, Any] = {"limit": tail}
    if script:
        params["script"] = script
    with HubClient(hub_url) as hub:
        if not follow:
            answer = _checked(_call(hub, "GET", "/scripts/logs", params=params), "script logs")
            for line in answer.get("lines") or []:
                click.echo(format_line(line))
            return
        try:
            with hub.http.stream("GET", "/scripts/logs", params={**params, "follow": "true"},
                                 timeout=httpx.Timeout(None, connect=5.0)) as response:
                if response.status_code >= 400:
                    response.read()
                    if response.status_code == 401:
                        raise hub.error(response)
                    _checked(response, "script logs")
                for event, data in sse_events(response):
                    if event == "log" and isinstance(data, dict):
                        click.echo(format_line(data))
                    elif event == "lost" and isinstance(data, dict):
                        click.echo(f"warning: {data.get('lost')} lines were lost (the terminal was too slow)",
                                   err=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise HubUnreachable(hub.url, str(error) or "connection refused") from error
        except httpx.TransportError as error:
            raise HubUnreachable(hub.url, f"connection lost: {error}") from error
        except KeyboardInterrupt:
            return
