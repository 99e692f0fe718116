"""python -m hub: serve the hub API over one or more workers."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import click
import uvicorn

from hub.app import HubSettings, create_app
from hub.edgemetrics import DEFAULT_MAX_EDGES
from hub.scripts.options import script_options, script_settings
from hub.params import MAX_LIMIT as MAX_QUERY_ROWS
from hub.rowbudget import DEFAULT_MAX_HELD_ROWS
from hub.stream import MAX_LIVE_CLIENTS, MAX_LIVE_QUERIES
from shark import token as shark_token
from shark.auth import ListenRefused, check_listen, host_name, is_loopback

log = logging.getLogger("shark.hub")
DEFAULT_LISTEN = "127.0.0.1:8899"


def fail(message: str) -> None:
    click.echo(f"hub: {message}", err=True)
    sys.exit(1)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        fail(f"--listen: {text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    try:
        port = int(port_text)
    except ValueError:
        fail(f"--listen: port {port_text!r} in {text!r} is not a number")
    if not 0 <= port <= 65535:
        fail(f"--listen: port {port} in {text!r} is outside 0-65535")
    return host.strip("[]"), port


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when proto says
    # TCP; without it Nagle + delayed ACK held the end of answers on kept-alive connections
    # for ~40 ms (docs/BENCHMARKS.md, hub).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        fail(f"--listen: cannot listen on {host}:{port}: {error.strerror or error}")
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _kube_settings(kubeconfig: str | None, context: str | None, workers_namespace: str | None,
                   worker_selector: str | None, worker_port: int, pod_regex: str | None,
                   target_namespaces: tuple[str, ...]):  # noqa: ANN202 - the kubernetes client loads only with --kube
    from hub.kube.cluster import DEFAULT_WORKER_SELECTOR, KubeConfigError, KubeSettings, api_client
    from hub.kube.targeter import SpecError, TargetSpec

    try:
        spec = TargetSpec.of(pod_regex, list(target_namespaces))
    except SpecError as error:
        field_name, _, problem = str(error).partition(": ")
        hint = "--pod-regex" if field_name == "regex" else "--target-namespace"
        raise click.BadParameter(problem, param_hint=hint) from None
    settings = KubeSettings(kubeconfig=kubeconfig, context=context, namespace=workers_namespace,
                            worker_selector=worker_selector or DEFAULT_WORKER_SELECTOR, worker_port=worker_port,
                            spec=spec)
    try:
        settings.api_client = api_client(settings)
    except KubeConfigError as error:
        fail(str(error))
    return settings


def _size(value: str, option: str) -> int:
    from shark.units import UnitError, parse_size
    try:
        return parse_size(value, option)
    except UnitError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--worker", "workers", multiple=True, metavar="URL",
              help="A worker's API URL (http://HOST:PORT); repeat for each worker. With --kube the "
                   "workers are found in the cluster.")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT of the hub API.")
@click.option("--poll-interval", type=click.FloatRange(0.1, 3600), default=2.0, show_default=True,
              help="Seconds between health checks of each worker.")
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Seconds to wait for a worker's answer.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info")
@click.option("--kube", is_flag=True,
              help="In a cluster: the workers are the DaemonSet's pods, and addresses are named after "
                   "pods, services and nodes (docs/CLUSTER.md).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), metavar="FILE",
              help="With --kube: the kubeconfig (default: the pod's service account when in a cluster, "
                   "else $KUBECONFIG or ~/.kube/config).")
@click.option("--context", metavar="NAME", help="With --kube: the kubeconfig context (default: its current one).")
@click.option("--namespace", "workers_namespace", metavar="NS", envvar="POD_NAMESPACE",
              help="With --kube: the namespace of the worker DaemonSet, the hub's own (default: $POD_NAMESPACE, "
                   "else the service account's, else shark). Its pods are never targets.")
@click.option("--worker-selector", metavar="LABELS", default=None,
              help="With --kube: the label selector of the worker pods "
                   "(default: app.kubernetes.io/name=shark,app.kubernetes.io/component=worker).")
@click.option("--worker-port", type=click.IntRange(1, 65535), default=8897, show_default=True,
              help="With --kube: the workers' API port when their pod has no port named 'api'.")
@click.option("--pod-regex", metavar="REGEX",
              help="With --kube: tap the pods whose name matches (searched anywhere in the name, as "
                   "`kubectl shark tap POD_REGEX`); default: every pod but the hub's namespace's. "
                   "PUT /api/v1/targets changes it.")
@click.option("--target-namespace", "target_namespaces", multiple=True, metavar="NS",
              help="With --kube: tap pods in this namespace; repeat for several (default: all).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Serve requests whose Host is NAME too (besides 127.0.0.1, localhost, ::1 and the --listen "
                   "address); repeat for several. Other names are refused (DNS rebinding).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the hub keeps what must survive a restart (scripts, pcap snapshots); "
                   "without it scripts live in memory only.")
@click.option("--metrics-edges", type=click.IntRange(0, 10_000), default=DEFAULT_MAX_EDGES, show_default=True,
              help="Service-map edges with /metrics series of their own; the rest are summed as src/dst "
                   "\"other\" (docs/API.md, GET /metrics).")
@click.option("--snapshot-limit", default="500MB", show_default=True,
              help="Bytes all traffic snapshots may use under --state-dir (500MB, 1GiB); a snapshot that "
                   "would pass it is refused.")
@click.option("--max-live-clients", type=click.IntRange(1, 100_000), default=MAX_LIVE_CLIENTS, show_default=True,
              help="Live clients (SSE /stream and /ws) served at once; more get a 503 (a WebSocket closes 1013).")
@click.option("--max-live-queries", type=click.IntRange(1, 10_000), default=MAX_LIVE_QUERIES, show_default=True,
              help="Distinct live queries followed at once (each holds a stream per worker); a client with "
                   "a new query past it gets a 503.")
@click.option("--max-query-rows", type=click.IntRange(1, 10_000_000), default=MAX_QUERY_ROWS, show_default=True,
              help="Rows one query may ask for (limit= on /entries, /servicemap, /har, snapshots), each held "
                   "at the hub while it answers; a larger limit is a 400.")
@click.option("--max-held-rows", type=click.IntRange(1, 100_000_000), default=DEFAULT_MAX_HELD_ROWS,
              show_default=True,
              help="Rows whole answers (/har, an opened snapshot's entries) hold at once, all requests together "
                   "(a /har line is ~0.85 KB); a request that would pass it waits 5 s, then gets a 503.")
@script_options
def main(workers: tuple[str, ...], listen: str, poll_interval: float, timeout: float, log_level: str,
         kube: bool, kubeconfig: str | None, context: str | None, workers_namespace: str | None,
         worker_selector: str | None, worker_port: int, pod_regex: str | None,
         target_namespaces: tuple[str, ...], allowed_hosts: tuple[str, ...], state_dir: Path | None,
         metrics_edges: int, snapshot_limit: str, max_live_clients: int, max_live_queries: int,
         max_query_rows: int, max_held_rows: int, **script_args: Any) -> None:
    """Fan queries out to the workers and merge their answers under /api/v1.

    The token comes from SHARK_TOKEN: clients must send it (docs/API.md) and the hub sends it to
    the workers. Without one the hub listens on loopback only."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    for url in workers:
        if not url.startswith(("http://", "https://")):
            raise click.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="--worker")
    if not workers and not kube:
        raise click.UsageError("give the workers with --worker URL, or find them in a cluster with --kube")
    kube_only = {"--kubeconfig": kubeconfig, "--context": context, "--worker-selector": worker_selector,
                 "--pod-regex": pod_regex, "--target-namespace": target_namespaces}
    given = [name for name, value in kube_only.items() if value]
    if given and not kube:
        raise click.UsageError(f"{given[0]} needs --kube (the hub is not in a cluster without it)")
    kube_settings = _kube_settings(kubeconfig, context, workers_namespace, worker_selector, worker_port,
                                   pod_regex, target_namespaces) if kube else None
    for name in allowed_hosts:
        try:
            host_name(name, "--allowed-host")
        except ValueError as error:
            raise click.BadParameter(str(error).removeprefix("--allowed-host: "), param_hint="--allowed-host") from None
    host, port = parse_listen(listen)
    try:
        token = shark_token.from_env()
        check_listen(host, port, token)
    except (shark_token.TokenError, ListenRefused) as error:
        fail(str(error))
    if host not in ("0.0.0.0", "::") and not is_loopback(host):
        allowed_hosts += (host,)          # the address it listens on is its own name
    pod_ip = os.environ.get("POD_IP", "").strip()
    if pod_ip:
        # in a cluster (the manifests set POD_IP from the downward API) the pod's own address is
        # its name too: Prometheus scrapes http://POD_IP:8899/metrics with that Host
        try:
            allowed_hosts += (host_name(pod_ip, "POD_IP"),)
        except ValueError as error:
            fail(str(error))
    listener = _bind(host, port)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    app = create_app(HubSettings(workers=list(workers), poll_interval=poll_interval, timeout=timeout,
                                 kube=kube, kube_settings=kube_settings, state_dir=state_dir,
                                 scripts=script_settings(**script_args), token=token,
                                 allowed_hosts=list(allowed_hosts), metrics_edges=metrics_edges,
                                 snapshot_limit=_size(snapshot_limit, "--snapshot-limit"),
                                 max_live_clients=max_live_clients, max_live_queries=max_live_queries,
                                 max_query_rows=max_query_rows, max_held_rows=max_held_rows))
    bound_host, bound_port = listener.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    access = "the token is required" if token else "no token: loopback only"
    if kube:
        log.info("hub serving on http://%s:%d (workers: pods of the DaemonSet in %s; %s)", shown, bound_port,
                 kube_settings.resolved_namespace(), access)
    else:
        log.info("hub serving on http://%s:%d (%d workers: %s; %s)", shown, bound_port, len(workers),
                 ", ".join(workers), access)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None, access_log=False,
                                           timeout_graceful_shutdown=3))
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass
    log.info("hub stopped")
    sys.exit(0)


if __name__ == "__main__":
    main()
