"""`kubectl shark mcp`: the hub's traffic as Model Context Protocol tools for AI assistants.

A thin layer over shark.hubclient, so it reaches the hub exactly as the other hub-facing
commands do (`--hub`/SHARK_HUB, the token from SHARK_TOKEN, the local state dir or the
cluster's Secret). Answers are compact on purpose: a model pays for every token it reads, so
lists carry one short row per entry and the full entry is a separate tool. Every failure is a
ToolError with the hub's one-line reason and the CLI's hint, which the client shows the model.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from pydantic import Field

from shark.errors import SharkError
from shark.hubclient import DEFAULT_HUB, HubClient
from shark.mcp_http import TOKEN_FILE, HttpGuard

T = TypeVar("T")

INSTRUCTIONS = """\
kubectl-shark captures a Kubernetes cluster's (or this machine's) network traffic and dissects
it into entries: HTTP/1, HTTP/2, gRPC, WebSocket, DNS, Redis, Kafka, AMQP, PostgreSQL, MySQL,
MQTT, TLS. Filters are KFL: `http and status >= 500`, `dst.name == "orders"`,
`request.path.startsWith("/api")`, `elapsed_ms > 200`, `redis and request.command == "GET"`.
Start with service_map or status for an overview, narrow with list_entries, read one with
get_entry. Check a filter you are unsure of with validate_query."""

Query = Annotated[str, Field(description="KFL filter, e.g. 'http and status >= 500'; empty matches everything")]
Since = Annotated[str | float | None, Field(
    description="only entries from this time on: a duration ago ('10m', '1h30m') or epoch seconds")]
Until = Annotated[str | float | None, Field(
    description="only entries up to this time: a duration ago ('5m') or epoch seconds")]
OutPath = Annotated[str, Field(description="file to write; a relative path is taken from the server's "
                                            "working directory; its directory must exist")]

MAX_LIST = 1000


def endpoint_label(point: Any) -> str:
    """`namespace/name` when the hub knows a name, else `ip:port`."""
    if not isinstance(point, dict):
        return "?"
    if point.get("name"):
        return f"{point['namespace']}/{point['name']}" if point.get("namespace") else str(point["name"])
    ip, port = point.get("ip") or "?", point.get("port")
    ip = f"[{ip}]" if ":" in str(ip) else ip
    return f"{ip}:{port}" if port is not None else str(ip)


def compact(entry: dict[str, Any]) -> dict[str, Any]:
    ts = entry.get("ts")
    when = (datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")
            if isinstance(ts, (int, float)) else None)
    row = {"id": entry.get("id"), "time": when, "protocol": entry.get("protocol"),
           "src": endpoint_label(entry.get("src")), "dst": endpoint_label(entry.get("dst")),
           "summary": entry.get("summary"), "status": entry.get("status"), "elapsed_ms": entry.get("elapsed_ms")}
    if entry.get("tags"):
        row["tags"] = entry["tags"]
    return row


def failed_workers(workers: Any) -> list[str]:
    return [f"{w.get('node') or w.get('url')}: {w.get('error')}" for w in workers or []
            if isinstance(w, dict) and w.get("ok") is False]


def worker_health(row: dict[str, Any]) -> dict[str, Any]:
    """A worker's capture health from the hub's /status, the numbers that say whether traffic
    is missing: drops (buffer and interface), storage, dissection lag and shedding."""
    out: dict[str, Any] = {"node": row.get("node") or row.get("url"), "ok": row.get("ok"), "error": row.get("error")}
    status = row.get("status") or {}
    capture, store = status.get("capture") or {}, status.get("store") or {}
    dissection, index = status.get("dissection") or {}, status.get("index") or {}
    if status:
        out.update({"packets_received": capture.get("received"), "packets_dropped": capture.get("dropped"),
                    "interface_dropped": capture.get("if_dropped"), "store_bytes": store.get("bytes"),
                    "store_limit_bytes": store.get("limit"), "oldest_ts": store.get("oldest_ts"),
                    "entries": index.get("entries"), "dissection_lag_seconds": dissection.get("lag_seconds"),
                    "shed_bytes": dissection.get("shed_bytes")})
    return out


def _cannot_write(path: Path, error: OSError) -> ToolError:
    """A file the server cannot write (no permission, a read-only or full disk, /proc): the
    model gets the reason instead of the SDK's bare 'Error executing tool'."""
    return ToolError(f"path: cannot write {path}: {error.strerror or error}")


def _out_path(path: str) -> Path:
    if not path.strip():
        raise ToolError("path: give the file to write")
    out = Path(path).expanduser()
    out = out if out.is_absolute() else Path.cwd() / out
    if not out.parent.is_dir():
        raise ToolError(f"path: no directory {out.parent}")
    if out.is_dir():
        raise ToolError(f"path: {out} is a directory")
    return out


class SharkTools:
    """The tools' bodies over one HubClient (calls are serialised: the client's token search
    is not thread-safe, and the SDK runs sync tools in worker threads)."""

    def __init__(self, hub_url: str = DEFAULT_HUB, client: HubClient | None = None) -> None:
        self.hub = client or HubClient(hub_url)
        self._lock = threading.Lock()

    @contextmanager
    def _call(self) -> Iterator[HubClient]:
        with self._lock:
            try:
                yield self.hub
            except SharkError as error:
                text = error.message + (f" (hint: {error.hint})" if error.hint else "")
                raise ToolError(text) from None

    def _run(self, fn: Callable[[HubClient], T]) -> T:
        with self._call() as hub:
            return fn(hub)

    def list_entries(self, query: Query = "", limit: Annotated[int, Field(
            ge=1, le=MAX_LIST, description="newest entries to return")] = 50,
            since: Since = None, until: Until = None) -> dict[str, Any]:
        """List captured entries (API calls, queries, messages) matching a KFL filter, newest first,
        one compact row each: id, time, protocol, src, dst, summary, status, elapsed_ms. Use
        get_entry with an id for headers and bodies."""
        answer = self._run(lambda hub: hub.entries(query, limit=limit, since=since, until=until))
        rows = [compact(e) for e in answer.get("entries") or [] if isinstance(e, dict)]
        out: dict[str, Any] = {"count": len(rows), "entries": rows}
        if failed := failed_workers(answer.get("workers")):
            out["partial"] = failed
        return out

    def get_entry(self, id: Annotated[str, Field(description="entry id from list_entries, e.g. 'node-a:42'")]
                  ) -> dict[str, Any]:
        """One entry in full: request and response with headers and bodies (bodies truncated at
        the hub's limit, `truncated: true`; binary bodies base64 with `encoding`)."""
        if ":" not in id:
            raise ToolError(f"id: {id!r} is not an entry id (they look like 'node-a:42'; list_entries gives them)")
        return self._run(lambda hub: hub.entry(id))

    def service_map(self, query: Query = "", since: Since = None, until: Until = None,
                    limit: Annotated[int, Field(ge=1, le=100_000, description="entries to build the map from")]
                    = 10_000) -> dict[str, Any]:
        """Who talks to whom: endpoints and src -> dst edges with per-edge count, protocols,
        errors, error_rate, unanswered requests and p50/p99 latency in ms."""
        answer = self._run(lambda hub: hub.servicemap(query, limit=limit, since=since, until=until))
        out = {"entries": answer.get("entries"), "nodes": [n.get("id") for n in answer.get("nodes") or []],
               "edges": answer.get("edges") or []}
        if failed := failed_workers(answer.get("workers")):
            out["partial"] = failed
        return out

    def status(self) -> dict[str, Any]:
        """Health of the capture: the hub and every worker (up or why not, packets received and
        dropped, storage used of its limit, entries, dissection lag and shed bytes). Drops or
        shedding mean some traffic is missing from the answers."""
        answer = self._run(lambda hub: hub.status())
        hub_info = answer.get("hub") or {}
        workers = [worker_health(row) for row in answer.get("workers") or [] if isinstance(row, dict)]
        dropped = sum((w.get("packets_dropped") or 0) + (w.get("interface_dropped") or 0) for w in workers)
        return {"hub": {"url": self.hub.url, **hub_info}, "workers": workers, "packets_dropped_total": dropped,
                "shed_bytes_total": sum(w.get("shed_bytes") or 0 for w in workers)}

    def validate_query(self, query: Annotated[str, Field(description="the KFL filter to check")]) -> dict[str, Any]:
        """Check a KFL filter without running it: valid, or the error with its column (1-based)."""
        return self._run(lambda hub: hub.validate(query))

    def export_pcap(self, path: OutPath, query: Query = "", since: Since = None, until: Until = None
                    ) -> dict[str, Any]:
        """Write the packets of the matching entries' streams (all packets without a query),
        merged from every worker in time order, to a pcap file for Wireshark/tshark."""
        out = _out_path(path)
        part = out.with_name(out.name + ".part")
        try:
            try:
                with open(part, "wb") as file:
                    total, partial = self._run(lambda hub: hub.pcap(file, query, since, until=until))
                part.replace(out)
            except OSError as error:
                raise _cannot_write(out, error) from None
        finally:
            try:
                part.unlink(missing_ok=True)
            except OSError:
                pass                   # never made (its directory refused it): nothing to clean
        answer: dict[str, Any] = {"path": str(out), "bytes": total}
        if partial:
            answer["partial"] = f"no answer from {partial}"
        return answer

    def export_har(self, path: OutPath, query: Query = "", since: Since = None, until: Until = None,
                   limit: Annotated[int, Field(ge=1, le=100_000, description="at most this many entries")]
                   = 10_000) -> dict[str, Any]:
        """Write the matching HTTP entries as a HAR 1.2 file (oldest first, without bodies)."""
        out = _out_path(path)
        har = self._run(lambda hub: hub.har(query, since=since, until=until, limit=limit))
        try:
            out.write_text(json.dumps(har, indent=2) + "\n", encoding="utf-8")
        except OSError as error:
            raise _cannot_write(out, error) from None
        log = har.get("log") or {}
        answer: dict[str, Any] = {"path": str(out), "entries": len(log.get("entries") or [])}
        if log.get("comment"):
            answer["comment"] = log["comment"]
        return answer

    def create_snapshot(self, name: Annotated[str | None, Field(
            description="1-63 letters, digits, '.', '_', '-'; default snapshot-DATE-TIME")] = None,
            query: Query = "", since: Since = "15m", until: Until = None) -> dict[str, Any]:
        """Save the packets of a time window (all, or the streams of the query's matches) and its
        entries in the hub, kept across restarts: evidence that outlives the capture ring.
        Download later with `kubectl shark snapshot download NAME`."""
        body = {"name": name, "q": query or None, "since": since, "until": until}
        return self._run(lambda hub: hub.post_json("/snapshots", {k: v for k, v in body.items() if v is not None},
                                                   timeout=300.0))

    def list_snapshots(self) -> dict[str, Any]:
        """The snapshots the hub keeps (name, created, query, window, entries, bytes) and the
        bytes they use of its limit."""
        return self._run(lambda hub: hub.json_get("/snapshots"))


def why_failing(service: Annotated[str, Field(description="service or pod name, as in the service map")],
                since: Annotated[str, Field(description="how far back to look, e.g. 15m")] = "15m") -> str:
    """Find out why a service is failing: its failing calls, slow edges and capture health."""
    return (f"Service {service!r} is failing. Investigate with the kubectl-shark tools, over the last {since}:\n"
            f"1. status: is the capture healthy (workers up, no drops)? If not, say what may be missing.\n"
            f"2. service_map with since={since!r}: find edges where {service!r} is the source or the "
            f"target; note error_rate, unanswered and p99_ms.\n"
            f"3. list_entries with query '(dst.name == \"{service}\" or src.name == \"{service}\") and "
            f"(status >= 500 or elapsed_ms > 1000)' and since={since!r} (if names are not resolved, "
            f"use the IP:port from the service map: dst.ip / dst.port).\n"
            f"4. get_entry on two or three of the failures: read the error bodies and headers.\n"
            f"Conclude with the likely cause (the callee that fails, a timeout, a bad request) and the "
            f"entry ids that show it.")


def slow_endpoints(since: Annotated[str, Field(description="how far back to look, e.g. 15m")] = "15m") -> str:
    """Find the slowest calls and the edges with the worst p99 latency."""
    return (f"Find what is slow over the last {since}:\n"
            f"1. service_map with since={since!r}: rank edges by p99_ms.\n"
            f"2. For the worst three, list_entries with 'elapsed_ms > 500' and that edge's "
            f"dst (dst.name or dst.ip/dst.port), since={since!r}.\n"
            f"3. get_entry on the slowest: which path or command, and how big the answer was.\n"
            f"Report a table: edge, p50, p99, the slowest calls with ids.")


def what_talks_to(service: Annotated[str, Field(description="service or pod name")]) -> str:
    """List the callers and callees of one service, with their protocols and error rates."""
    return (f"Using service_map, list every edge into and out of {service!r} with protocol, count, "
            f"error_rate and p99_ms; then list_entries 'dst.name == \"{service}\"' (limit 20) to show "
            f"typical requests.")


TOOLS = ("list_entries", "get_entry", "service_map", "status", "validate_query", "export_pcap", "export_har",
         "create_snapshot", "list_snapshots")
READ_ONLY = frozenset(TOOLS) - {"export_pcap", "export_har", "create_snapshot"}


class _Server(MCPServer):
    """The SDK's server, but a prompt asked for by a wrong name or without its arguments is the
    client's mistake, said as such (invalid params, with the SDK's reason: "Missing required
    arguments: {'service'}"), not "Internal server error" and a logged traceback; and a tool
    called with an argument it does not take is refused naming it (the SDK drops it silently:
    `list_entries(filter=...)` answered every entry as if unfiltered)."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        tool = self._tool_manager.get_tool(name)
        if tool is not None:
            known = list(tool.parameters.get("properties") or {})
            unknown = sorted(set(arguments) - set(known))
            if unknown:
                raise ToolError(f"{name}: unknown argument{'s' if len(unknown) > 1 else ''} "
                                f"{', '.join(map(repr, unknown))}; it takes "
                                f"{', '.join(known) if known else 'no arguments'}")
        return await super().call_tool(name, arguments, context)

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None,
                         context: Any = None) -> Any:
        from mcp_types import INVALID_PARAMS
        try:
            return await super().get_prompt(name, arguments, context)
        except ValueError as error:    # our prompts only format text: only their arguments fail
            raise MCPError(INVALID_PARAMS, f"prompt {name!r}: {error}") from None


def build_server(hub_url: str = DEFAULT_HUB, client: HubClient | None = None, **settings: Any) -> MCPServer:
    from mcp_types import ToolAnnotations

    tools = SharkTools(hub_url, client)
    server = _Server("kubectl-shark", instructions=INSTRUCTIONS, version=_version(), **settings)
    for name in TOOLS:
        server.add_tool(getattr(tools, name), name=name,
                        annotations=ToolAnnotations(read_only_hint=name in READ_ONLY, open_world_hint=False))
        added = server._tool_manager.get_tool(name)
        assert added is not None
        added.parameters["additionalProperties"] = False   # the schema says what call_tool refuses
    for prompt in (why_failing, slow_endpoints, what_talks_to):
        server.prompt()(prompt)
    return server


def _version() -> str:
    from shark import __version__
    return __version__


def serve(hub_url: str, http: HttpGuard | None = None, host: str = "127.0.0.1", port: int = 8898) -> None:
    """Serve until stdin closes (stdio) or the process is stopped (HTTP, guarded by `http`:
    shark/mcp_http.py)."""
    if http is None:
        build_server(hub_url, log_level="WARNING").run("stdio")
        return
    import sys

    from shark.mcp_http import StaticTokenVerifier, auth_settings, transport_security

    server = build_server(hub_url, log_level="WARNING", auth=auth_settings(host, port),
                          token_verifier=StaticTokenVerifier(http.token))
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/mcp"
    shown = http.token if http.token_from.endswith(TOKEN_FILE) else f"(the one in {http.token_from})"
    # stderr: a client started by hand reads it there; stdout stays clean as on stdio
    print(f"kubectl-shark MCP server at {url}\nclients send the header: Authorization: Bearer {shown}\n"
          f"(token from {http.token_from})", file=sys.stderr, flush=True)
    server.run("streamable-http", host=host, port=port, transport_security=transport_security(host, http.hosts))
