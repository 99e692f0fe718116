"""python -m hub: serve the hub API over one or more workers."""

from __future__ import annotations

import logging
import signal
import socket
import sys

import click
import uvicorn

from hub.app import HubSettings, create_app

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
    sock = socket.socket(family, socket.SOCK_STREAM)
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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--worker", "workers", multiple=True, required=True, metavar="URL",
              help="A worker's API URL (http://HOST:PORT); repeat for each worker.")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT of the hub API.")
@click.option("--poll-interval", type=click.FloatRange(0.1, 3600), default=2.0, show_default=True,
              help="Seconds between health checks of each worker.")
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Seconds to wait for a worker's answer.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info")
def main(workers: tuple[str, ...], listen: str, poll_interval: float, timeout: float, log_level: str) -> None:
    """Fan queries out to the workers and merge their answers under /api/v1."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    for url in workers:
        if not url.startswith(("http://", "https://")):
            raise click.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="--worker")
    host, port = parse_listen(listen)
    listener = _bind(host, port)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    app = create_app(HubSettings(workers=list(workers), poll_interval=poll_interval, timeout=timeout))
    bound_host, bound_port = listener.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    log.info("hub serving on http://%s:%d (%d workers: %s)", shown, bound_port, len(workers), ", ".join(workers))
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
