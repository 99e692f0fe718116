"""The kubectl-shark command line: thin click commands over shark.local, shark.kube and shark.hubclient.

Errors become exit statuses in one place (shark.errors.report): 0 ok, 1 failure with a
one-line reason on stderr, 2 usage error; a traceback only with --debug.
"""

from __future__ import annotations

import json
import sys
import time
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from shark import __version__
from shark.errors import ExitStatus, SharkError, report
from shark.hubclient import DEFAULT_HUB, HubClient
from shark.kube.commands import cluster_options, status_cluster, tap_cluster, timeout_option
from shark.kube.render import DEFAULT_IMAGE, DEFAULT_TLS_IMAGE, PULL_POLICIES
from shark.dissect_memory import check_dissect_memory
from shark.redaction import Redaction
from shark.terminal import printable
from shark.units import UnitError, format_size, parse_duration, parse_size


class SharkGroup(click.Group):
    """Runs a command and maps whatever it raises to an exit status (shark.errors)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv[: argv.index("--")] if "--" in argv else "--debug" in argv
        try:
            code = super().main(argv, prog_name or "kubectl-shark", complete_var,
                                standalone_mode=False, **extra)
        except BaseException as error:  # noqa: BLE001 - the one mapping to exit statuses
            if isinstance(error, SystemExit):
                raise
            code = report(error, debug)
        sys.exit(code if isinstance(code, int) else ExitStatus.OK)


def _check_output(out: Path) -> None:
    if str(out) != "-" and not out.parent.is_dir():
        raise SharkError(f"cannot write {out}: no directory {out.parent}")


@click.group(cls=SharkGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
def cli(debug: bool) -> None:
    """kubectl-shark: packet capture and API-traffic inspection for Kubernetes."""


@cli.command()
def version() -> None:
    """Print the version."""
    click.echo(f"kubectl-shark {__version__}")


def _say(message: str) -> None:
    click.echo(message, err=True)


def _size(value: str, option: str) -> str:
    try:
        parse_size(value, option)
    except UnitError as error:
        raise click.UsageError(str(error)) from None
    return value


# ---- tap -------------------------------------------------------------------------------------

@cli.command()
@click.argument("pod_regex", required=False, metavar="[POD_REGEX]")
@click.option("--local", "local", is_flag=True, help="Capture on this machine: a worker and the hub "
              "as child processes, no cluster.")
@click.option("-n", "--namespace", "namespaces", multiple=True, metavar="NS",
              help="In a cluster: tap pods in this namespace; repeat for several [default: the context's].")
@click.option("-A", "--all-namespaces", is_flag=True, help="In a cluster: tap pods in every namespace.")
@cluster_options
@click.option("--image", default=None, metavar="REF", help=f"In a cluster: the image of hub and workers "
              f"[default: {DEFAULT_IMAGE}; with --tls, {DEFAULT_TLS_IMAGE}].")
@click.option("--image-pull-policy", type=click.Choice(PULL_POLICIES), default="IfNotPresent", show_default=True,
              help="In a cluster: when nodes pull the image.")
@click.option("--dry-run", is_flag=True, help="In a cluster: print the manifests tap would apply; touch nothing.")
@timeout_option
@click.option("-i", "--iface", "ifaces", multiple=True, metavar="IFACE",
              help="Interface to capture on (with --local); repeat for several [default: lo].")
@click.option("--pcap", "pcap_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Browse a pcap file instead of capturing (with --local).")
@click.option("--bpf", default="", metavar="EXPR",
              help="With --local: capture only what this filter (tcpdump syntax) keeps, e.g. 'tcp port 8080'.")
@click.option("--dissect-shards", type=click.IntRange(1, 64), default=None, metavar="N",
              help="With --local: the worker dissects in N processes, by flow [default: the CPUs it may use].")
@click.option("--no-open", is_flag=True, help="Do not open the browser.")
@click.option("--storage-limit", default="200MB", show_default=True,
              help="Cap on the stored packets (200MB, 1GiB, 500Mi).")
@click.option("--dissect-memory", default=None, metavar="SIZE",
              help="What each worker's dissection sessions may hold together (partial messages, HPACK "
                   "tables); over it the largest are cut, counted and noted [default: the worker's, 64MiB].")
@click.option("--hub-storage", default=None, metavar="SIZE",
              help="In a cluster: keep the hub's state (snapshots, scripts) on a PersistentVolumeClaim of this "
                   "size (5Gi), so it outlives the hub's pod; the snapshot limit follows it [default: an "
                   "emptyDir of 1Gi, lost with the pod].")
@click.option("--hub-storage-class", default=None, metavar="NAME",
              help="In a cluster: the StorageClass of --hub-storage [default: the cluster's default class].")
@click.option("--proxy-host", default="127.0.0.1", show_default=True, help="Address of the UI and API.")
@click.option("--proxy-port", type=click.IntRange(1, 65535), default=8899, show_default=True,
              help="Port of the UI and API.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where local mode keeps packets and logs [default: $XDG_STATE_HOME/shark].")
@click.option("--tls", is_flag=True, help="Also show TLS traffic decrypted: cleartext from libssl "
              "through eBPF probes (docs/TLS.md). In a cluster this makes the workers node-root equivalent.")
@click.option("--tolerate-control-plane", is_flag=True,
              help="In a cluster: run workers on control-plane nodes too (their NoSchedule taint).")
@click.option("--toleration", "tolerations", multiple=True, metavar="KEY[=VALUE][:EFFECT]",
              help="In a cluster: run workers on nodes with this taint too (e.g. dedicated=capture:NoSchedule); "
                   "repeat for several.")
@click.option("--no-redact", is_flag=True, help="Show credentials as captured (by default the workers show "
              "credential headers, query parameters and body fields as [redacted:HASH]).")
@click.option("--redact-header", "redact_headers", multiple=True, metavar="NAME",
              help="Also redact this header's value; repeat for several.")
@click.option("--redact-field", "redact_fields", multiple=True, metavar="NAME",
              help="Also redact query parameters and JSON/form body fields of this name; repeat for several.")
def tap(pod_regex: str | None, local: bool, namespaces: tuple[str, ...], all_namespaces: bool,
        kubeconfig: str | None, context: str | None, release_namespace: str, image: str | None, image_pull_policy: str,
        dry_run: bool, timeout: float, ifaces: tuple[str, ...], pcap_file: Path | None, bpf: str,
        dissect_shards: int | None, no_open: bool,
        storage_limit: str, dissect_memory: str | None, hub_storage: str | None, hub_storage_class: str | None, proxy_host: str,
        proxy_port: int, state_dir: Path | None, tls: bool, tolerate_control_plane: bool, tolerations: tuple[str, ...], no_redact: bool,
        redact_headers: tuple[str, ...], redact_fields: tuple[str, ...]) -> None:
    """Capture traffic and serve it at http://PROXY-HOST:PROXY-PORT until Ctrl-C.

    In a cluster (without --local): deploy a hub and a worker per node, tapping the pods whose
    name matches POD_REGEX (default: all) in the given namespaces, and port-forward to the hub;
    they keep running after Ctrl-C (`open` reconnects, `clean` removes them). docs/CLUSTER.md.
    """
    from shark.local import LocalOptions, LocalTap, default_state_dir, login_url

    ctx = click.get_current_context()
    redaction = Redaction(not no_redact, tuple(h.strip() for h in redact_headers),
                          tuple(f.strip() for f in redact_fields))
    try:
        redaction.check()
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    if no_redact and (redact_headers or redact_fields):
        raise click.UsageError("--no-redact turns redaction off; it cannot be used with --redact-header/--redact-field")
    if dissect_memory is not None:
        try:
            check_dissect_memory(dissect_memory)
        except ValueError as error:
            raise click.UsageError(str(error)) from None

    def given(flags: dict[str, str]) -> list[str]:
        return [flag for name, flag in flags.items()
                if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if not local:
        if given({"dissect_shards": "--dissect-shards"}):
            raise click.UsageError("--dissect-shards needs --local (in a cluster each worker uses "
                                   "the CPUs of its limit, docs/CLUSTER.md)")
        local_only = given({"ifaces": "-i/--iface", "pcap_file": "--pcap", "bpf": "--bpf", "state_dir": "--state-dir"})
        if local_only:
            raise click.UsageError(f"{local_only[0]} needs --local (in a cluster every node's interfaces "
                                   "are captured)")
        sys.exit(tap_cluster(pod_regex=pod_regex, namespaces=namespaces, all_namespaces=all_namespaces,
                             kubeconfig=kubeconfig, context=context, release_namespace=release_namespace,
                             image=image, image_pull_policy=image_pull_policy,
                             storage_limit=_size(storage_limit, "--storage-limit"), proxy_host=proxy_host,
                             proxy_port=proxy_port, no_open=no_open, dry_run=dry_run, timeout=timeout, tls=tls,
                             tolerate_control_plane=tolerate_control_plane, tolerations=tolerations,
                             redaction=redaction, hub_storage=hub_storage, hub_storage_class=hub_storage_class,
                             dissect_memory=dissect_memory))
    cluster_only = given({"pod_regex": "POD_REGEX", "namespaces": "-n/--namespace",
                          "all_namespaces": "-A/--all-namespaces", "kubeconfig": "--kubeconfig",
                          "context": "--context", "release_namespace": "-s/--release-namespace",
                          "image": "--image", "image_pull_policy": "--image-pull-policy", "dry_run": "--dry-run",
                          "timeout": "--timeout", "tolerate_control_plane": "--tolerate-control-plane",
                          "tolerations": "--toleration", "hub_storage": "--hub-storage",
                          "hub_storage_class": "--hub-storage-class"})
    if cluster_only:
        raise click.UsageError(f"{cluster_only[0]} is for a cluster; it cannot be used with --local")
    if ifaces and pcap_file:
        raise click.UsageError("give either -i/--iface or --pcap, not both")
    if tls and pcap_file:
        raise click.UsageError("--tls captures live TLS cleartext; it cannot be used with --pcap")
    if bpf and pcap_file:
        raise click.UsageError("--bpf filters live capture; it cannot be used with --pcap")
    options = LocalOptions(ifaces=list(ifaces), pcap_file=pcap_file, tls=tls, bpf=bpf,
                           state_dir=state_dir or default_state_dir(),
                           storage_limit=_size(storage_limit, "--storage-limit"),
                           proxy_host=proxy_host, proxy_port=proxy_port, redaction=redaction,
                           dissect_memory=dissect_memory, dissect_shards=dissect_shards)
    what = f"replaying {pcap_file}" if pcap_file else f"capturing on {', '.join(ifaces or ['lo'])}"

    def ready(url: str, token: str) -> None:
        login = login_url(url, token)
        click.echo(f"kubectl-shark is {what}; UI and API at {url}")
        click.echo(f"log in to the UI at {login}")
        _say("press Ctrl-C to stop")
        if not no_open:
            try:
                webbrowser.open(login)
            except Exception:  # noqa: BLE001 - no browser is not an error
                pass
    code = LocalTap(options, _say).run(ready)
    sys.exit(code)


# ---- token -------------------------------------------------------------------------------------

@cli.command("token")
@click.option("--local", "local", is_flag=True, help="The token of `tap --local` (in the state dir) instead of "
              "the cluster's.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --local: where tap --local keeps its state [default: $XDG_STATE_HOME/shark].")
@cluster_options
def token_command(local: bool, state_dir: Path | None, kubeconfig: str | None, context: str | None,
                  release_namespace: str) -> None:
    """Print the token the hub and the workers ask for: curl sends it as
    `Authorization: Bearer TOKEN`, a browser logs in once at http://HUB/?token=TOKEN.

    In a cluster it is the Secret shark-token that tap created in the release namespace; with
    --local the file that tap --local created. (SHARK_TOKEN, when set, is what the CLI sends
    instead; this prints what is stored.)
    """
    from shark.local import default_state_dir, token_file
    from shark.token import TokenError, read_file

    ctx = click.get_current_context()
    if local:
        given = [flag for name, flag in (("kubeconfig", "--kubeconfig"), ("context", "--context"),
                                         ("release_namespace", "-s/--release-namespace"))
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{given[0]} is for a cluster; it cannot be used with --local")
        path = token_file(state_dir or default_state_dir())
        if not path.exists():
            raise SharkError(f"no token at {path}", hint="`kubectl shark tap --local` creates it (with the same "
                             "--state-dir)")
        try:
            click.echo(read_file(path))
        except TokenError as error:
            raise SharkError(str(error)) from None
        return
    if state_dir is not None:
        raise click.UsageError("--state-dir needs --local (in a cluster the token is a Secret)")
    from shark.kube.commands import runner_factory
    sys.exit(runner_factory(kubeconfig, context, release_namespace).token())


# ---- hub-facing commands ---------------------------------------------------------------------

hub_option = click.option("--hub", "hub_url", default=DEFAULT_HUB, show_default=True,
                          envvar="SHARK_HUB", help="The hub's URL.")


def _since(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return time.time() - parse_duration(value, "--since")
    except UnitError as error:
        raise click.UsageError(str(error)) from None


def _endpoint(point: Any) -> str:
    if not isinstance(point, dict):
        return "?"
    name = point.get("name")
    if name:
        ns = point.get("namespace")
        return f"{ns}/{name}" if ns else str(name)
    ip, port = point.get("ip") or "?", point.get("port")
    ip = f"[{ip}]" if ":" in str(ip) else ip
    return f"{ip}:{port}" if port is not None else str(ip)


COLUMNS = (("TIME", 12), ("PROTO", 9), ("SRC → DST", 44), ("SUMMARY", 0), ("STATUS", 6), ("ELAPSED", 9))


def format_row(entry: dict[str, Any]) -> str:
    ts = entry.get("ts")
    when = (time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"
            if isinstance(ts, (int, float)) else "?")
    flow = f"{_endpoint(entry.get('src'))} → {_endpoint(entry.get('dst'))}"
    status = entry.get("status")
    elapsed = entry.get("elapsed_ms")
    summary = printable(str(entry.get("summary") or ""))    # captured bytes: escaped before cut
    if len(summary) > 60:
        summary = summary[:59] + "…"
    return printable(f"{when:<12} {str(entry.get('protocol') or '?'):<9} {flow:<44} {summary:<60} "
                     f"{'' if status is None else status!s:>6} "
                     f"{'' if elapsed is None else f'{elapsed:.1f}ms':>9}").rstrip()


def format_header() -> str:
    return f"{'TIME':<12} {'PROTO':<9} {'SRC → DST':<44} {'SUMMARY':<60} {'STATUS':>6} {'ELAPSED':>9}"


def _warn_workers(workers: Any) -> None:
    for worker in workers or []:
        if isinstance(worker, dict) and worker.get("ok") is False:
            _say(f"warning: worker {worker.get('node') or worker.get('url')} did not answer: "
                 f"{worker.get('error')} (results are partial)")


@cli.command()
@click.argument("kfl", default="", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new entries as they arrive.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table, or json: one entry per line.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="How many of the newest entries to list.")
@click.option("--since", default=None, help="Only entries newer than this, e.g. 5m.")
@hub_option
def query(kfl: str, follow: bool, output: str, limit: int, since: str | None, hub_url: str) -> None:
    """List the entries matching a KFL query (empty: all), e.g. 'http and status >= 500'."""
    def emit(entry: dict[str, Any]) -> None:
        click.echo(json.dumps(entry, separators=(",", ":")) if output == "json" else format_row(entry))

    with HubClient(hub_url) as hub:
        if follow:
            if output == "table":
                click.echo(format_header())
            try:
                for event, data in hub.stream(kfl):
                    if event == "entry" and isinstance(data, dict):
                        emit(data)
                    elif event == "lost" and isinstance(data, dict):
                        _say(f"warning: {data.get('lost')} entries were lost (the terminal was too slow)")
                    elif event == "status" and isinstance(data, dict) and data.get("ok") is False:
                        _say(f"warning: worker {data.get('node') or data.get('url')}: {data.get('error')}")
            except KeyboardInterrupt:
                return
            return
        answer = hub.entries(kfl, limit=limit, since=_since(since))
        entries = answer.get("entries") or []
        _warn_workers(answer.get("workers"))
        if output == "table":
            click.echo(format_header())
        for entry in reversed(entries):   # the hub answers newest first; print as a log
            emit(entry)


class _Progress:
    """Bytes downloaded so far, on one updating stderr line when stderr is a terminal."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.live = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, total: int) -> None:
        now = time.monotonic()
        if self.live and now - self.last > 0.1:
            self.last = now
            click.echo(f"\r{self.what} {_bytes(total)} …", err=True, nl=False)

    def done(self) -> None:
        if self.live:
            click.echo("\r\033[K", err=True, nl=False)


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


@cli.command()
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The pcap file to write ('-' for stdout).")
@click.option("-q", "--query", "kfl", default="", help="KFL: only the streams of matching entries.")
@click.option("--since", default=None, help="Only packets newer than this, e.g. 5m.")
@hub_option
def pcapdump(out: Path, kfl: str, since: str | None, hub_url: str) -> None:
    """Write the captured packets (merged from every worker) to a pcap file."""
    since_ts = _since(since)
    _check_output(out)
    progress = _Progress("downloading")
    with HubClient(hub_url) as hub:
        if str(out) == "-":
            total, partial = hub.pcap(sys.stdout.buffer, kfl, since_ts)
        else:
            part = out.with_name(out.name + ".part")
            try:
                with open(part, "wb") as file:
                    total, partial = hub.pcap(file, kfl, since_ts, progress)
                part.replace(out)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            finally:
                progress.done()
            _say(f"wrote {_bytes(total)} to {out}")
    if partial:
        _say(f"warning: partial capture: no answer from {partial}")


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["har"]), default="har", show_default=True)
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write ('-' for stdout).")
@click.option("-q", "--query", "kfl", default="", help="KFL: only matching HTTP entries.")
@hub_option
def export(fmt: str, out: Path, kfl: str, hub_url: str) -> None:
    """Export the HTTP entries as HAR 1.2."""
    _check_output(out)
    with HubClient(hub_url) as hub:
        har = hub.har(kfl)
    text = json.dumps(har, indent=2)
    count = len(har.get("log", {}).get("entries", [])) if isinstance(har, dict) else 0
    if str(out) == "-":
        click.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        _say(f"wrote {count} HAR entries to {out}")


@cli.command()
@hub_option
@click.option("--cluster", is_flag=True, help="The deployment in the cluster instead: the hub and each "
              "node's worker, ready or why not (implied by the cluster options below).")
@cluster_options
def status(hub_url: str, cluster: bool, kubeconfig: str | None, context: str | None,
           release_namespace: str) -> None:
    """Health of the hub and every worker: capture drops, storage, dissection."""
    ctx = click.get_current_context()
    if cluster or any(ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
                      for name in ("kubeconfig", "context", "release_namespace")):
        sys.exit(status_cluster(kubeconfig, context, release_namespace))
    with HubClient(hub_url) as hub:
        answer = hub.status()
    info = answer.get("hub", {})
    workers = answer.get("workers", [])
    click.echo(f"hub {hub.url}: version {info.get('version', '?')}, up {info.get('uptime_s', 0):.0f}s, "
               f"workers {info.get('workers_ok', '?')}/{info.get('workers', len(workers))} ok")
    failed = 0
    for worker in workers:
        name = worker.get("node") or worker.get("url")
        if worker.get("ok") is False:
            failed += 1
            click.echo(f"  worker {name}: DOWN: {worker.get('error')}")
            continue
        if worker.get("ok") is None:
            click.echo(f"  worker {name}: not polled yet")
            continue
        st = worker.get("status") or {}
        cap, store = st.get("capture") or {}, st.get("store") or {}
        dis, index = st.get("dissection") or {}, st.get("index") or {}
        storage = (f"{format_size(store.get('bytes', 0))} of {format_size(store.get('limit', 0))}"
                   if store else "?")
        click.echo(f"  worker {name}: ok; packets {cap.get('received', 0)}, dropped "
                   f"{cap.get('dropped', 0)} (interface {cap.get('if_dropped', 0)}); storage {storage}; "
                   f"entries {index.get('entries', 0)}; dissection lag {dis.get('lag_seconds', 0):.1f}s, "
                   f"shed {dis.get('shed_bytes', 0)} bytes"
                   + "".join(_shard_trouble(shard) for shard in dis.get("shards") or [])
                   + ("; credentials NOT redacted (--no-redact)"
                      if (st.get("redaction") or {}).get("enabled") is False else ""))
    if failed:
        raise SharkError(f"{failed} of {len(workers)} workers are down")


def _shard_trouble(shard: dict) -> str:
    """What `status` says of a dissection shard that failed (nothing for a sound one)."""
    if shard.get("running") and not shard.get("restarts"):
        return ""
    state = f"restarted {shard.get('restarts', 0)}x" if shard.get("running") else "DOWN"
    return f"; dissection shard {shard.get('shard')} {state}: {shard.get('last_failure', '')}"


@cli.command("mcp")
@hub_option
@click.option("--http", "http", is_flag=True, help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio.")
@click.option("--host", default="127.0.0.1", show_default=True, help="With --http: the address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8898, show_default=True,
              help="With --http: the port to listen on.")
@click.option("--http-token", envvar="SHARK_MCP_TOKEN", show_envvar=True, default=None,
              help="With --http: the bearer token clients must send [default: the state dir's mcp-token "
                   "file, made the first time].")
@click.option("--allow-remote", is_flag=True,
              help="With --http: allow --host to be an address other than loopback.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="With --http: also accept this Host (and Origin) name, e.g. the name remote clients "
                   "use; repeatable.")
def mcp_command(hub_url: str, http: bool, host: str, port: int, http_token: str | None, allow_remote: bool,
                allow_hosts: tuple[str, ...]) -> None:
    """Serve the hub's traffic to AI assistants over the Model Context Protocol (docs/MCP.md):
    stdio by default, for a client that starts this command itself."""
    ctx = click.get_current_context()
    if not http:
        given = [name for name in ("host", "port", "http_token", "allow_remote", "allow_hosts")
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            flags = ", ".join("--" + name.replace("_", "-").removesuffix("s") for name in given)
            raise click.UsageError(f"{flags} need --http (stdio has no address)")
    from shark.mcp_server import serve
    if not http:
        serve(hub_url)
        return
    from shark.local import default_state_dir
    from shark.mcp_http import HttpGuard, check_bind, http_token as resolve_token
    check_bind(host, allow_remote)
    token, token_from = resolve_token(http_token, default_state_dir())
    serve(hub_url, HttpGuard(token, token_from, allow_hosts), host, port)


from shark.scripts_cli import scripts as scripts_group  # noqa: E402 - a command group of its own module
cli.add_command(scripts_group)
from shark.snapshot_cli import snapshot as snapshot_group  # noqa: E402 - a command group of its own module
cli.add_command(snapshot_group)
from shark.kube.commands import clean, logs, open_command  # noqa: E402 - cluster commands of their own module
cli.add_command(open_command)
cli.add_command(clean)
cli.add_command(logs)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
