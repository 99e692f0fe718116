"""The token and the node data in a cluster, against the Kubernetes API double: tap creates the
Secret once, the pods wait for it, `token` prints it, the hub-facing commands find it through the
kubeconfig, and `clean` deletes it and the packets stored on the nodes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shark.errors import SharkError
from shark.kube.render import DEFAULT_IMAGE, DeployOptions, render
from shark.kube.rollout import pod_state
from shark.kube.runner import Proxy
from support.kubeapi import KubeAPI
from support.processes import free_port
from test_kube_tap import Run, secret_token

WORKERS = "app.kubernetes.io/component=worker"


def test_tap_creates_the_token_once_and_later_taps_keep_it(kube, nodes, forwarder, monkeypatch):
    monkeypatch.setenv("SHARK_TOKEN", "chosen-by-the-user")
    first = Run(kube, forwarder)
    assert first.tap() == 0
    assert "secret/shark-token created" in first.said and secret_token(kube) == "chosen-by-the-user"
    secret = kube.get("Secret", "shark-token", "shark")
    assert secret["type"] == "Opaque" and secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubectl-shark"
    monkeypatch.setenv("SHARK_TOKEN", "another-one")
    again = Run(kube, forwarder)
    assert again.tap() == 0
    assert "secret/shark-token unchanged" in again.said and secret_token(kube) == "chosen-by-the-user"
    monkeypatch.delenv("SHARK_TOKEN")
    kube.delete("Secret", "shark-token", "shark")
    third = Run(kube, forwarder)
    assert third.tap() == 0
    made = secret_token(kube)
    assert "secret/shark-token created" in third.said and len(made) >= 40 and made != "chosen-by-the-user"


def test_pods_wait_for_the_secret_and_start_once_tap_made_it(kube, nodes, forwarder):
    for obj in render(DeployOptions()):          # the manifests applied by hand, without the Secret
        kube.apply(obj)
    waiting = kube.wait_for(lambda: [s for p in kube.list("Pod", "shark", WORKERS)
                                     if (s := pod_state(p)).reason == "CreateContainerConfigError"], 20,
                            what="workers waiting for their Secret")
    assert waiting[0].message == 'secret "shark-token" not found'
    run = Run(kube, forwarder)
    assert run.tap() == 0                         # creates the Secret; the same pods start
    assert "kubectl-shark is ready: the hub and 3 workers" in run.said


def test_a_secret_without_the_key_is_named(kube, nodes, forwarder):
    for obj in render(DeployOptions()):
        if obj["kind"] == "Namespace":
            kube.apply(obj)
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shark-token", "namespace": "shark"},
                 "stringData": {"other": "x"}})
    for obj in render(DeployOptions()):
        kube.apply(obj)
    waiting = kube.wait_for(lambda: [s for p in kube.list("Pod", "shark", WORKERS)
                                     if (s := pod_state(p)).reason == "CreateContainerConfigError"], 20,
                            what="workers waiting for their key")
    assert waiting[0].message == "couldn't find key token in Secret shark/shark-token"
    with pytest.raises(SharkError) as refused:
        Run(kube, forwarder).tap()
    assert refused.value.message == "Secret shark-token in namespace shark has no key 'token'"


def test_the_token_command_prints_the_clusters_and_the_local_one(kube, nodes, shark_cli, tmp_path):
    config = str(kube.kubeconfig)
    missing = shark_cli("token", "--kubeconfig", config)
    assert missing.exit_code == 1
    assert missing.stderr.splitlines()[0] == ("kubectl-shark: kubectl-shark has no token in namespace shark "
                                              "(no Secret shark-token)")
    assert shark_cli("tap", "-A", "--kubeconfig", config, "--no-open").exit_code == 0
    printed = shark_cli("token", "--kubeconfig", config)
    assert printed.exit_code == 0 and printed.stdout == secret_token(kube) + "\n"
    local = shark_cli("token", "--local", "--state-dir", str(tmp_path))
    assert local.exit_code == 1 and f"no token at {tmp_path / 'token'}" in local.stderr
    (tmp_path / "token").write_text("local-token\n")
    assert shark_cli("token", "--local", "--state-dir", str(tmp_path)).stdout == "local-token\n"
    mixed = shark_cli("token", "--local", "--kubeconfig", config)
    assert mixed.exit_code == 2 and "--kubeconfig is for a cluster" in mixed.stderr


def test_open_logs_the_browser_in_with_the_secrets_token(kube, nodes, forwarder):
    Run(kube, forwarder).tap()
    run = Run(kube, forwarder)
    run.runner.stop.set()
    port = free_port()
    assert run.runner.open(Proxy("127.0.0.1", port, True), 10) == 0
    assert run.opened == [f"http://127.0.0.1:{port}/?token={secret_token(kube)}"]
    kube.delete("Secret", "shark-token", "shark")
    with pytest.raises(SharkError) as missing:
        Run(kube, forwarder).runner.open(Proxy("127.0.0.1", free_port(), False), 10)
    assert missing.value.message == "the hub's token (Secret shark-token in namespace shark) is missing"


@pytest.fixture
def hub_needing(kube: KubeAPI) -> Iterator[tuple[str, list[str | None]]]:
    """A stand-in hub on a real socket that answers /api/v1/status only with the Secret's token;
    yields its URL and the Authorization headers it saw."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            given = self.headers.get("Authorization")
            seen.append(given)
            found = kube.find("Secret", "shark-token", "shark")
            token = base64.b64decode(found["data"]["token"]).decode() if found else None
            if token and given == f"Bearer {token}":
                status, body = 200, {"hub": {"version": "t", "uptime_s": 1, "workers": 0, "workers_ok": 0},
                                     "workers": []}
            else:
                status, body = 401, {"error": "unauthorized", "detail": "no token: send Authorization: Bearer TOKEN"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_hub_commands_find_the_token_through_the_kubeconfig(kube, nodes, forwarder, hub_needing, tmp_path):
    url, seen = hub_needing
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("SHARK_TOKEN", None)

    def status() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shark.cli", "status", "--hub", url], env=env,
                              capture_output=True, text=True, timeout=60)
    refused = status()                  # nothing deployed yet: nowhere to find it
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[0] == ("kubectl-shark: the hub refused the token: no token: send "
                                              "Authorization: Bearer TOKEN")
    hint = refused.stderr.splitlines()[1]
    assert f"SHARK_TOKEN (not set); {tmp_path / 'state' / 'shark' / 'token'} (none); Secret shark-token in " \
           "namespace shark of context shark-test (none)" in hint
    assert "`kubectl shark token`" in hint
    Run(kube, forwarder).tap()
    seen.clear()
    found = status()
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith(f"hub {url}: version t")
    assert seen == [None, f"Bearer {secret_token(kube)}"]      # first without, then the Secret's


def run_cleanup_command(pod: dict[str, Any], node_root: Path) -> subprocess.CompletedProcess[str]:
    """Run a cleanup pod's command as its node would, its hostPath volume under `node_root`."""
    spec = pod["spec"]
    container = spec["containers"][0]
    volume = next(v for v in spec["volumes"] if v["name"] == container["volumeMounts"][0]["name"])
    mount = container["volumeMounts"][0]["mountPath"]
    host = node_root / volume["hostPath"]["path"].lstrip("/")
    argv = [arg.replace(mount, str(host), 1) if arg.startswith(mount) else arg for arg in container["command"]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def test_clean_removes_the_stores_on_the_nodes_with_a_pod_per_node(kube, nodes, forwarder, tmp_path):
    Run(kube, forwarder).tap()
    cleanup_pods: dict[str, dict[str, Any]] = {}

    def kubelet(pod: dict[str, Any]) -> str:
        if pod["metadata"]["labels"].get("app.kubernetes.io/component") != "cleanup":
            return "ready"
        node = pod["spec"]["nodeName"]
        cleanup_pods[node] = pod
        return "crash-loop" if node == "node-c" else "ready"      # node-c's pod fails
    kube.pod_behavior = kubelet
    run = Run(kube, forwarder)
    assert run.runner.clean(timeout=20) == 0
    assert "node-a: stored packets removed (/var/lib/kubectl-shark/shark)" in run.said
    assert "node-b: stored packets removed (/var/lib/kubectl-shark/shark)" in run.said
    assert ("warning: node-c: the cleanup pod failed (Error: exit code 1); the stored packets stay in "
            "/var/lib/kubectl-shark/shark there") in run.said
    assert sorted(cleanup_pods) == nodes
    pod = cleanup_pods["node-a"]
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["tolerations"] == [{"operator": "Exists"}]                # wherever a worker ran
    assert container["image"] == DEFAULT_IMAGE                            # the workers' own image
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["volumes"][0]["hostPath"] == {"path": "/var/lib/kubectl-shark", "type": "Directory"}
    assert kube.list("Pod", "shark", "app.kubernetes.io/component=cleanup") == []     # deleted when done
    # the command, run for real against a node's directory tree
    store = tmp_path / "node" / "var" / "lib" / "kubectl-shark" / "shark"
    (store / "pcap").mkdir(parents=True)
    (store / "pcap" / "00000001.pcap").write_bytes(b"\xd4\xc3\xb2\xa1" + b"\0" * 20)
    (store / "index.sqlite").write_bytes(b"x")
    other = tmp_path / "node" / "var" / "lib" / "kubectl-shark" / "other-release"
    other.mkdir()
    done = run_cleanup_command(pod, tmp_path / "node")
    assert done.returncode == 0, done.stderr
    assert not store.exists() and other.is_dir()                          # only this release's store


def test_clean_can_keep_the_data_and_twice_runs_no_pod(kube, nodes, forwarder):
    Run(kube, forwarder).tap()
    run = Run(kube, forwarder)
    assert run.runner.clean(keep_data=True) == 0
    assert not [line for line in run.said if "stored packets" in line]
    assert not [r for r in kube.requests if r.method == "POST" and r.path.endswith("/pods")]


def test_a_cleanup_pod_that_never_runs_is_reported_with_where_the_data_stays(kube, nodes, forwarder):
    Run(kube, forwarder).tap()
    kube.pod_behavior = lambda pod: "creating" if pod["metadata"]["labels"].get(
        "app.kubernetes.io/component") == "cleanup" else "ready"
    run = Run(kube, forwarder)
    assert run.runner.clean(timeout=1) == 0
    stuck = [line for line in run.said if line.startswith("warning: ")]
    assert len(stuck) == 3 and stuck[0] == ("warning: node-a: the cleanup pod did not finish within 1s "
                                            "(ContainerCreating); the stored packets may stay in "
                                            "/var/lib/kubectl-shark/shark there")
    assert "namespace/shark deleted" in run.said


def test_workers_skip_tainted_nodes_unless_told_and_tap_says_so(kube, forwarder):
    kube.add_node("worker-1", ip="127.213.1.2")
    kube.add_node("control-1", ip="127.213.1.3", taints=[
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
    run = Run(kube, forwarder)
    assert run.tap() == 0
    assert {p["spec"]["nodeName"] for p in kube.list("Pod", "shark", WORKERS)} == {"worker-1"}
    assert ("warning: no worker on node control-1 (taint node-role.kubernetes.io/control-plane:NoSchedule): its "
            "pods' traffic is not captured; tap with --tolerate-control-plane or --toleration KEY[=VALUE][:EFFECT] "
            "to run one there") in run.said
    again = Run(kube, forwarder)
    assert again.tap(DeployOptions(target_namespaces=("default",), tolerate_control_plane=True)) == 0
    kube.wait_for(lambda: {p["spec"]["nodeName"] for p in kube.list("Pod", "shark", WORKERS)}
                  == {"worker-1", "control-1"}, what="a worker on the control plane too")
    assert not [line for line in again.said if line.startswith("warning: no worker")]
