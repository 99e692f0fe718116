"""`kubectl shark tap --local`: one worker and the hub as child processes on this machine.

The children talk over the same HTTP API as in a cluster. Their logs go to files under
<state-dir>/logs; the runner watches them for the "serving on" lines to know they are ready.
Both get the installation's token (SHARK_TOKEN, else <state-dir>/token, created once, 0600) in
their environment, never on a command line.
"""

from __future__ import annotations

import errno
import os
import shutil
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from shark import token as shark_token
from shark.errors import SharkError
from shark.process import die_with_parent
from shark.dissect_memory import worker_args as dissect_memory_args
from shark.redaction import Redaction

ROOT = Path(__file__).resolve().parents[1]   # the directory that holds shark/, hub/, worker/
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def default_state_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "shark"


def token_file(state_dir: Path) -> Path:
    return state_dir / shark_token.FILE_NAME


def local_token(state_dir: Path) -> str:
    """SHARK_TOKEN, else the state dir's token, created (0600) the first time."""
    try:
        return shark_token.from_env() or shark_token.load_or_create(token_file(state_dir))
    except shark_token.TokenError as error:
        raise SharkError(str(error), hint="remove the file to have a new token made, or set SHARK_TOKEN") from None


def login_url(url: str, token: str) -> str:
    """The address that logs a browser in once (the hub trades the token for a cookie)."""
    return f"{url.rstrip('/')}/?token={quote(token, safe='')}"


@dataclass
class LocalOptions:
    ifaces: list[str] = field(default_factory=list)
    pcap_file: Path | None = None
    tls: bool = False             # eBPF TLS cleartext (the worker's --tls)
    bpf: str = ""                 # the user's capture filter, besides leaving our own ports out
    state_dir: Path = field(default_factory=default_state_dir)
    storage_limit: str = "200MB"
    proxy_host: str = "127.0.0.1"
    proxy_port: int = 8899
    redaction: Redaction = field(default_factory=Redaction)
    dissect_memory: str | None = None   # the worker's --dissect-memory; None: its default
    dissect_shards: int | None = None   # the worker's --dissect-shards (None: its default)


class Child:
    """A child process whose output goes to a log file while we look for one line in it."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, token: str | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self.lines: list[str] = []
        self._changed = threading.Condition()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p), "PYTHONUNBUFFERED": "1"}
        if token is not None:
            env[shark_token.ENV] = token     # the environment, not argv: `ps` shows argv to everyone
        # A session of its own: Ctrl-C reaches only us, and we stop the children in order;
        # and if we are killed outright, the kernel stops them (die_with_parent).
        self.process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env,
                                        start_new_session=True, preexec_fn=die_with_parent)
        self._reader = threading.Thread(target=self._read, name=f"{name}-log", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as log, self.process.stdout:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_line(self, pattern: str, timeout: float, stop: threading.Event) -> re.Match[str]:
        """The first line matching `pattern`; a SharkError if the child exits or is too slow."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            with self._changed:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                if not self._reader.is_alive():
                    self.process.wait()
                    raise SharkError(f"{self.name} failed to start: {self.last_error()}",
                                     hint=f"its log is {self.log_path}")
                if stop.is_set():
                    raise KeyboardInterrupt
                if time.monotonic() > deadline:
                    raise SharkError(f"{self.name} did not start within {timeout:.0f}s",
                                     hint=f"its log is {self.log_path}")
                self._changed.wait(0.1)

    def last_error(self) -> str:
        """The child's one-line error ("worker: ..."), else its last line."""
        for prefix in (f"{self.name}: ", "Error: "):
            for line in reversed(self.lines):
                if line.startswith(prefix):
                    return line.removeprefix(f"{self.name}: ")
        last = next((line for line in reversed(self.lines) if line.strip()), None)
        return last or f"exited with status {self.process.returncode}"

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(2)
        return self.process.returncode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            hints = {
                errno.EADDRINUSE: "another `kubectl shark tap` may be running (try `kubectl shark "
                                  "status`); stop it or choose another port with --proxy-port",
                errno.EACCES: "ports below 1024 need root; choose another port with --proxy-port",
                errno.EADDRNOTAVAIL: f"no interface of this machine has the address {host}; "
                                     "try --proxy-host 127.0.0.1",
            }
            hint = hints.get(error.errno or 0, "check --proxy-host and --proxy-port")
            if isinstance(error, socket.gaierror):
                hint = f"{host!r} is not an address of this machine; try --proxy-host 127.0.0.1"
            raise SharkError(f"cannot listen on {host}:{port}: {error.strerror or error}",
                             hint=hint) from None


class LocalTap:
    """Starts the worker, then the hub; `run` waits for a signal and stops both."""

    def __init__(self, options: LocalOptions, say: Callable[[str], None]) -> None:
        self.options = options
        self.say = say
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self.url = ""
        self.token = ""

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_requested.set()

    def run(self, ready: Callable[[str, str], None]) -> int:
        """Start both children, hand (URL, token) to `ready`, serve until a signal."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                self.start()
            except KeyboardInterrupt:
                return 0
            ready(self.url, self.token)
            return self.watch()
        finally:
            stopped = self.stop()
            if stopped:
                self.say(f"stopped {' and '.join(stopped)}")
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self) -> None:
        o = self.options
        check_port_free(o.proxy_host, o.proxy_port)
        logs = o.state_dir / "logs"
        try:
            logs.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SharkError(f"cannot create {logs}: {error.strerror or error}",
                             hint="choose another place with --state-dir or XDG_STATE_HOME") from None
        self.token = local_token(o.state_dir)
        worker_port = 0
        storage = o.state_dir / "worker"
        if o.pcap_file:
            # A replay gets a store of its own, fresh each time: mixed with live traffic or
            # replayed twice into one store, the same packets would show up twice.
            storage = o.state_dir / "replay"
            shutil.rmtree(storage, ignore_errors=True)
            source = ["--pcap", str(o.pcap_file)]
        else:
            # Leave our own traffic out of the capture: the hub polls the worker every few
            # seconds and the UI talks to the hub, and neither is what the user came to see.
            worker_port = free_port()
            source = [arg for iface in (o.ifaces or ["lo"]) for arg in ("--iface", iface)]
            own = f"not (tcp port {worker_port} or tcp port {o.proxy_port})"
            source += ["--bpf", f"({o.bpf}) and {own}" if o.bpf else own]
            source += ["--tls"] if o.tls else []
        self.say("starting worker …")
        worker = Child("worker", [sys.executable, "-m", "worker", *source,
                                  "--listen", f"127.0.0.1:{worker_port}",
                                  "--storage-dir", str(storage),
                                  "--storage-limit", o.storage_limit, *o.redaction.worker_args(),
                                  *dissect_memory_args(o.dissect_memory),
                                  *(["--dissect-shards", str(o.dissect_shards)] if o.dissect_shards else [])],
                           logs / "worker.log", self.token)
        self.children.append(worker)
        worker_url = worker.wait_line(r"serving on (http://\S+?)(/api/v1)?\s", START_TIMEOUT_S,
                                      self.stop_requested).group(1)
        if o.tls:   # loaded, or the one line saying what is missing
            self.say(worker.wait_line(r"(tls: eBPF probes loaded.*|eBPF TLS capture is off.*)",
                                      1.0, self.stop_requested).group(1))
        self.say(f"worker ready at {worker_url}; starting hub …")
        host = f"[{o.proxy_host}]" if ":" in o.proxy_host else o.proxy_host
        # The hub keeps scripts and pcap snapshots under <state>/hub across restarts.
        hub = Child("hub", [sys.executable, "-m", "hub", "--worker", worker_url,
                            "--state-dir", str(o.state_dir / "hub"),
                            "--listen", f"{host}:{o.proxy_port}"], logs / "hub.log", self.token)
        self.children.append(hub)
        self.url = hub.wait_line(r"hub serving on (http://\S+)", START_TIMEOUT_S,
                                 self.stop_requested).group(1)

    def watch(self) -> int:
        """Until a signal: 0. A child that exits on its own: say which, 1."""
        while not self.stop_requested.wait(0.25):
            for child in self.children:
                if child.process.poll() is not None:
                    child._reader.join(2)
                    self.say(f"kubectl-shark: {child.name} exited unexpectedly "
                             f"(status {child.process.returncode}): {child.last_error()}")
                    self.say(f"hint: its log is {child.log_path}")
                    return 1
        return 0

    def stop(self) -> list[str]:
        """Stop the hub first (it talks to the worker), then the worker."""
        stopped = []
        for child in reversed(self.children):
            running = child.process.poll() is None
            child.stop()
            if running:
                stopped.append(child.name)
        self.children.clear()
        return stopped
