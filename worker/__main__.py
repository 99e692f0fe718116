"""python -m worker: capture on this node, store, dissect and serve the worker API."""

from __future__ import annotations

from contextlib import ExitStack
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import click

from shark import token as shark_token
from shark.auth import ListenRefused, check_listen
from shark.units import UnitError, format_size, parse_size
from shark.dissect_memory import check_dissect_memory
from worker.capture import CaptureProcess
from worker.options import (DEFAULT_LISTEN, DEFAULT_MAX_STREAM_CLIENTS, DEFAULT_SNAPLEN, MAX_DISSECT_SHARDS,
                            OptionError,
                            WorkerOptions, check_storage_dir, default_dissect_shards,
                            default_storage_dir, parse_listen)
from worker.shard_server import start_shard_server
from worker.sources.base import CaptureError
from worker.store.capacity import LimitRefused, check_limit
from worker.store.private import UMASK
from worker.store.segments import MIN_STORAGE_LIMIT, StoreError, list_segments
# The dissection, the API and uvicorn are imported in serve(), once the capture child
# and the shards' fork server run: their start overlaps this process's heaviest imports, and
# the capture child is forked from a process that has not loaded them (docs/BENCHMARKS.md,
# "Worker start").

log = logging.getLogger("shark.worker")


def _size(value: str, option: str) -> int:
    try:
        return parse_size(value, option)
    except UnitError as error:
        raise click.BadParameter(str(error)) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-i", "--iface", "ifaces", multiple=True, metavar="IFACE",
              help="Interface to capture on; repeat for several, or 'any'.")
@click.option("--pcap", "pcap_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Replay a pcap/pcapng file instead of capturing, then keep serving it.")
@click.option("--bpf", default="", help="BPF capture filter, e.g. 'tcp port 80'.")
@click.option("--source", type=click.Choice(["auto", "pcap", "af_packet"]), default="auto",
              show_default=True, help="Capture mechanism.")
@click.option("--snaplen", type=click.IntRange(64, 262144), default=DEFAULT_SNAPLEN, show_default=True)
@click.option("--buffer-size", default="32MiB", show_default=True, help="Kernel capture buffer.")
@click.option("--storage-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Where PCAP segments and the index live [default: {default_storage_dir()}].")
@click.option("--storage-limit", default="200MB", show_default=True,
              help="Cap on everything under --storage-dir: PCAP segments, index, WAL (200MB, 1GiB, 500Mi).")
@click.option("--max-storage-limit", default=None, metavar="SIZE",
              help="The most --storage-limit and PUT /config may ask for [default: what the "
                   "store's filesystem can hold].")
@click.option("--dissect-memory", default="64MiB", show_default=True, metavar="SIZE",
              help="What all dissection sessions may hold together (partial messages, kept "
                   "bodies, HPACK tables); over it the largest are cut (docs/OPERATIONS.md).")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT of the API.")
@click.option("--node", default=None, help="Node name in entry ids [default: hostname].")
@click.option("--tls", is_flag=True,
              help="Also capture TLS cleartext from libssl with eBPF uprobes (docs/TLS.md); "
                   "where eBPF cannot load, says what is missing and captures without it.")
@click.option("--no-redact", is_flag=True,
              help="Show credentials as captured (by default header values, query parameters and "
                   "body fields that hold them become [redacted:HASH]; docs/OPERATIONS.md).")
@click.option("--redact-header", "redact_headers", multiple=True, metavar="NAME",
              help="Also redact this header's value; repeat for several.")
@click.option("--redact-field", "redact_fields", multiple=True, metavar="NAME",
              help="Also redact query parameters and JSON/form body fields of this name; repeat for several.")
@click.option("--dissect-shards", type=click.IntRange(1, MAX_DISSECT_SHARDS), default=None,
              metavar="N",
              help="Dissect in N processes, each taking its share of the flows, behind one index "
                   "(1: in a thread of the API process) [default: the CPUs the worker may use].")
@click.option("--max-stream-clients", type=click.IntRange(1, 100_000), default=DEFAULT_MAX_STREAM_CLIENTS,
              show_default=True,
              help="/stream clients served at once (a hub holds one per distinct live query); more get a 503.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info")
def main(ifaces: tuple[str, ...], pcap_file: Path | None, bpf: str, source: str, snaplen: int,
         buffer_size: str, storage_dir: Path | None, storage_limit: str, max_storage_limit: str | None,
         dissect_memory: str, listen: str,
         node: str | None, tls: bool, no_redact: bool, redact_headers: tuple[str, ...],
         redact_fields: tuple[str, ...], dissect_shards: int | None, max_stream_clients: int,
         log_level: str) -> None:
    """Capture packets, store them in capped PCAP segments, dissect them, serve /api/v1."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    # Whatever the worker and its capture child write is theirs alone (worker/store/private.py).
    os.umask(UMASK)
    if bool(ifaces) == (pcap_file is not None):
        raise click.UsageError("give either --iface (live capture) or --pcap FILE (replay)")
    if tls and pcap_file is not None:
        raise click.UsageError("--tls captures live TLS cleartext; it cannot be used with --pcap")
    try:
        host, port = parse_listen(listen)
        options = WorkerOptions(
            ifaces=list(ifaces), pcap_file=pcap_file, bpf=bpf, source=source, snaplen=snaplen,
            buffer_size=_size(buffer_size, "--buffer-size"),
            storage_dir=storage_dir or default_storage_dir(),
            storage_limit=_size(storage_limit, "--storage-limit"),
            max_storage_limit=(_size(max_storage_limit, "--max-storage-limit")
                               if max_storage_limit is not None else None),
            host=host, port=port, node=node or socket.gethostname(), tls=tls,
            token=shark_token.from_env(), redact=not no_redact,
            redact_headers=_names(redact_headers, "--redact-header"),
            redact_fields=_names(redact_fields, "--redact-field"),
            dissect_shards=dissect_shards or default_dissect_shards(), max_stream_clients=max_stream_clients)
        check_listen(host, port, options.token)   # before anything is written
        if options.storage_limit < MIN_STORAGE_LIMIT:
            raise OptionError(f"--storage-limit: {storage_limit} is below the minimum of "
                              f"{format_size(MIN_STORAGE_LIMIT)}")
        try:
            options.dissect_memory = check_dissect_memory(dissect_memory)
        except ValueError as error:
            raise OptionError(str(error)) from None
        private_notes = check_storage_dir(options.storage_dir)
        check_limit(options.storage_limit, options.storage_dir, options.max_storage_limit,
                    "--storage-limit", storage_limit)
        if pcap_file is not None and not pcap_file.is_file():
            raise OptionError(f"--pcap: {pcap_file}: no such file")
    except (OptionError, StoreError, shark_token.TokenError, ListenRefused, LimitRefused) as error:
        fail(str(error))
    listener = _bind(options.host, options.port)
    # uvicorn restores this handler and re-raises SIGTERM once it has shut down: make that a
    # normal exit so serve() still stops dissection and capture and closes the index.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        code = serve(options, listener, private_notes)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down: a clean stop
        code = 0
    sys.exit(code)


def _names(values: tuple[str, ...], option: str) -> list[str]:
    for value in values:
        if not value.strip() or any(ch.isspace() or not ch.isprintable() for ch in value.strip()):
            raise OptionError(f"{option}: {value!r} is not a name")
    return [value.strip() for value in values]


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def fail(message: str) -> None:
    click.echo(f"worker: {message}", err=True)
    sys.exit(1)


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


def serve(options: WorkerOptions, listener: socket.socket, store_notes: list[str] | None = None) -> int:
    from worker.store.grant import IndexBudget, IndexGrant
    grant = IndexGrant()      # the index's share of the limit, agreed with the capture process
    capture = CaptureProcess(options, grant)
    capture.launch()          # a fork: first, while this process has no other thread
    if options.dissect_shards > 1:
        start_shard_server()  # its interpreter and imports run beside ours
    from worker.broadcast import Broadcaster
    from worker.dissection import MemoryBudget
    from worker.pipeline import Pipeline, read_batch_for
    from worker.redact import Redactor, key_for
    from worker.sharded import ShardedPipeline
    from worker.store.index import INDEX_NAME, open_index, wal_limit_for
    try:
        capture.wait_ready()
    except CaptureError as error:
        fail(str(error))
    # From here on, whatever stops us (SIGTERM included) stops capture and closes the index.
    with ExitStack() as cleanup:
        cleanup.callback(log.info, "worker stopped")
        cleanup.callback(capture.stop)
        log.info("%s", capture.note)
        if capture.tls_note:
            (log.info if capture.tls_ok else log.warning)("%s", capture.tls_note)
        for note in capture.repaired:
            log.warning("store: %s", note)
        index, index_note = open_index(options.storage_dir / INDEX_NAME,
                                       wal_limit_for(options.storage_limit))
        cleanup.callback(index.close)
        index.budget = IndexBudget(grant, options.storage_limit)
        notes = [capture.note, *([capture.tls_note] if capture.tls_note else []), *capture.repaired]
        for note in store_notes or []:
            log.warning("store: %s", note)
            notes.append(note)
        if index_note and list_segments(options.storage_dir):
            log.warning("index: %s", index_note)
            notes.append(index_note)
        broadcaster = Broadcaster()
        redactor = None
        if options.redact:
            try:
                key = key_for(options.token, options.storage_dir)
            except shark_token.TokenError as error:
                fail(f"--storage-dir: {error}")
            redactor = Redactor(key, options.redact_headers, options.redact_fields)
        from worker.api.runtime import WorkerRuntime, replay_finished
        finished = lambda: replay_finished(options, capture)   # noqa: E731
        pipeline: Pipeline | ShardedPipeline
        if options.dissect_shards > 1:   # each shard keeps to its share of --dissect-memory
            pipeline = ShardedPipeline(options.storage_dir, index, options.node, broadcaster,
                                       capture_finished=finished, redactor=redactor,
                                       shards=options.dissect_shards,
                                       memory_limit=options.dissect_memory,
                                       replay=options.pcap_file is not None,
                                       replay_ended=capture.replay_ended)
        else:
            pipeline = Pipeline(options.storage_dir, index, options.node, broadcaster,
                                capture_finished=finished, redactor=redactor,
                                memory=MemoryBudget(options.dissect_memory),
                                replay=options.pcap_file is not None)
        pipeline.read_batch = read_batch_for(options.storage_limit)
        runtime = WorkerRuntime(options, capture, index, pipeline, broadcaster, notes=notes,
                                redactor=redactor)
        sharded = isinstance(pipeline, ShardedPipeline)
        if sharded:   # the shards are processes: they dissect while the API loads
            pipeline.start()
            cleanup.callback(pipeline.stop)
        import uvicorn
        from worker.api.app import create_app
        app = create_app(runtime)
        if not sharded:   # a thread of this process: after the imports, which it would slow
            pipeline.start()
            cleanup.callback(pipeline.stop)
        host, port = listener.getsockname()[:2]
        log.info("worker %s serving on http://%s:%d/api/v1 (storage %s, limit %d bytes; %s; %s; "
                 "dissection in %s)",
                 options.node, host, port, options.storage_dir, options.storage_limit,
                 "the token is required" if options.token else "no token: loopback only",
                 "credentials redacted" if redactor else "redaction off (--no-redact)",
                 f"{options.dissect_shards} shard processes" if options.dissect_shards > 1
                 else "a thread")
        # ws="none": the worker's API has no WebSocket route, and uvicorn's default imports the
        # websockets package at start (~9 ms of CPU before the first answer). http="h11": what
        # "auto" picks without httptools (not a dependency), without probing for it, and the
        # wire format tests/bench/diff_worker_api.py compared.
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none", http="h11",
                                               log_config=None, access_log=False,
                                               timeout_graceful_shutdown=3))
        server.run(sockets=[listener])
    return 0


if __name__ == "__main__":
    main()
