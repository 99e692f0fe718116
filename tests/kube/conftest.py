"""Fixtures for cluster-mode tests: the Kubernetes API double and the real kubectl against it."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from relay import RelayForwarder
from shark.cli import cli
from shark.kube import commands
from shark.kube.runner import Access, ClusterRunner
from shark.kube.view import LineView
from support.kubeapi import KubeAPI

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeAPI]:
    """An empty cluster (no nodes) with its controllers; `kube.kubeconfig` points at it."""
    with KubeAPI(controllers=True, bookmark_interval=0.2) as api:
        api.kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        yield api


@pytest.fixture
def nodes(kube: KubeAPI) -> list[str]:
    names = ["node-a", "node-b", "node-c"]
    for n, name in enumerate(names):
        kube.add_node(name, ip=f"127.213.0.{n + 2}")   # loopback: nothing ever leaves this machine
    return names


@dataclass
class Kubectl:
    kubeconfig: Path
    cache: Path

    def __call__(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        assert KUBECTL, "kubectl is not installed"
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBECACHEDIR": str(self.cache)}
        done = subprocess.run([KUBECTL, *args], env=env, capture_output=True, text=True, timeout=60, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done


@pytest.fixture
def kubectl(kube: KubeAPI, tmp_path: Path) -> Kubectl:
    """The real /usr/bin/kubectl, talking to the double (its discovery cache kept in tmp_path)."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    return Kubectl(kube.kubeconfig, tmp_path / "kube-cache")


@pytest.fixture
def web_server() -> Iterator[tuple[str, int]]:
    """A stand-in for the hub behind the forward: answers every GET with 'hub here'."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hub here"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ("127.0.0.1", server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def forwarder(web_server) -> RelayForwarder:
    return RelayForwarder(web_server)


@pytest.fixture
def shark_cli(monkeypatch, forwarder):
    """Runs `kubectl-shark ARGS` in-process with the relay as its port-forward."""
    def factory(kubeconfig: str | None, context: str | None, namespace: str) -> ClusterRunner:
        runner = ClusterRunner(Access(kubeconfig, context, namespace), commands._say, commands._out,
                               forwarder=forwarder, opener=lambda url: None, view_factory=LineView,
                               poll_interval=0.05)
        runner.stop.set()
        return runner
    monkeypatch.setattr(commands, "runner_factory", factory)

    def invoke(*args: str, env: dict[str, str] | None = None):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return invoke
