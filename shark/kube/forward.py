"""The port-forward from this machine to the hub's Service, behind a small interface.

The real forwarder runs `kubectl port-forward` (it speaks the API's streaming protocols, which
the kubernetes client's Python port-forward does not do for Services); tests inject their own.
A forward is started for one Service port; `wait` tells when it ended and why (the hub pod
went away, kubectl was refused), so the caller can forward again.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import deque
from typing import Protocol, TextIO

from shark.errors import SharkError
from shark.local import check_port_free

START_TIMEOUT_S = 30.0


class Forward(Protocol):
    url: str

    def wait(self, timeout: float | None = None) -> str | None:
        """Block until the forward ends (its reason) or the timeout passes (None)."""

    def stop(self) -> None:
        ...


class Forwarder(Protocol):
    def __call__(self, namespace: str, service: str, port: int, local_host: str, local_port: int) -> Forward:
        """Start forwarding local_host:local_port to the Service's port; raise SharkError if it cannot."""


def url_for(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class KubectlForward:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url
        self.errors: deque[str] = deque(maxlen=20)
        self.forwarding = threading.Event()
        self._readers = [threading.Thread(target=self._read, args=(stream,), daemon=True)
                         for stream in (process.stdout, process.stderr)]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: TextIO) -> None:
        with stream:
            for line in stream:
                line = line.rstrip()
                if line.startswith("Forwarding from"):
                    self.forwarding.set()
                elif line and not line.startswith("Handling connection"):
                    self.errors.append(line)

    def reason(self) -> str:
        """kubectl's last useful line, without its "error: " (as in "error: lost connection to pod")."""
        useful = [e for e in self.errors if e.lower().startswith(("error", "e1", "e0", "unable", "f"))]
        last = (useful or list(self.errors) or [f"kubectl exited with status {self.process.returncode}"])[-1]
        return last.removeprefix("error: ")

    def wait(self, timeout: float | None = None) -> str | None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for reader in self._readers:
            reader.join(2)
        return self.reason()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class KubectlForwarder:
    """`kubectl port-forward -n NS svc/NAME LOCAL:PORT --address HOST` with our kubeconfig/context."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None,
                 kubectl: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.kubectl = kubectl

    def command(self, namespace: str, service: str, port: int, local_host: str, local_port: int) -> list[str]:
        argv = [self.kubectl or "kubectl"]
        if self.kubeconfig:
            argv += ["--kubeconfig", self.kubeconfig]
        if self.context:
            argv += ["--context", self.context]
        return argv + ["port-forward", "--namespace", namespace, f"svc/{service}", f"{local_port}:{port}",
                       "--address", local_host]

    def __call__(self, namespace: str, service: str, port: int, local_host: str, local_port: int) -> KubectlForward:
        check_port_free(local_host, local_port)
        kubectl = self.kubectl or shutil.which("kubectl")
        if kubectl is None:
            raise SharkError("cannot forward a port to the hub: kubectl is not on PATH",
                             hint="install kubectl (the port-forward goes through it)")
        self.kubectl = kubectl
        argv = self.command(namespace, service, port, local_host, local_port)
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        forward = KubectlForward(process, url_for(local_host, local_port))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not forward.forwarding.wait(0.05):
            if process.poll() is not None or time.monotonic() > deadline:
                forward.stop()
                forward.wait(2)
                raise _refusal(forward.reason(), local_host, local_port)
        return forward


def _refusal(reason: str, host: str, port: int) -> SharkError:
    text = reason.removeprefix("error: ")
    if "unable to listen" in text or "address already in use" in text:
        return SharkError(f"cannot listen on {host}:{port}: {text}",
                          hint="another `kubectl shark tap` or `open` may be running; choose another port "
                               "with --proxy-port")
    if "forbidden" in text:
        return SharkError(f"the cluster refused the port-forward: {text}",
                          hint="port-forwarding needs RBAC permission to get services and pods, list pods and to "
                               "create pods/portforward; check with `kubectl auth can-i create pods --subresource=portforward "
                               "-n NAMESPACE`")
    return SharkError(f"kubectl port-forward to the hub failed: {text}",
                      hint="`kubectl shark status --cluster` shows whether the hub is ready")
