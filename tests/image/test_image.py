"""The image a cluster would pull, built and run here: `make image` / `make image-tls`, then the
worker and hub containers with exactly the pod settings `kubectl shark tap --dry-run` renders
(read from its YAML, translated by support/pods.py), on a one-node "cluster":

- the node is a network namespace: the worker pod (hostNetwork) joins it and captures `any`
  there, the app pods' addresses are on its `lo`;
- the hub pod has a namespace of its own, joined to the node's by a veth, and reaches the
  Kubernetes API double (tests/support/kubeapi.py) at 10.96.0.1:443 over TLS, with the service
  account token and CA a kubelet would mount: `python -m hub --kube` finds the worker as the
  DaemonSet's pod and names the app pods' addresses;
- the test reaches the hub as `kubectl port-forward` does, and probes each pod as its kubelet
  would, from the node to the pod's address.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.kubeapi import KubeAPI
from support.netns import VethPair, in_netns, ip
from support.podman import ROOT, Container, Forwards, Images, Secrets, find, podman, rendered, wait_ready
from support.pods import LocalImage, Placement, translate
from support.processes import Proc, free_port, wait_for
from support.relay import Relay

# building both images cold takes about 5 min on 2 cores, in the first test's fixture
pytestmark = [pytest.mark.root, pytest.mark.timeout(1500)]

TESTS = ROOT / "tests"
SHOP = "shop"
NODE = "node-a"
FRONTEND, ORDERS = "127.0.0.2", "127.0.0.3"       # app pods: addresses on the node's lo
API = ("10.96.0.1", 443)                          # the `kubernetes` Service, as pods reach it


def pod_name(workload: dict[str, Any]) -> str:
    suffix = uuid.uuid4().hex[:5]
    return f"{workload['metadata']['name']}-{suffix}" if workload["kind"] == "DaemonSet" else \
        f"{workload['metadata']['name']}-{uuid.uuid4().hex[:10]}-{suffix}"


class OneNode:
    """A one-node cluster on this machine (see the module's docstring)."""

    def __init__(self, tmp: Path, forwards: Forwards) -> None:
        self.tmp = tmp
        self.forwards = forwards
        self.net = VethPair(subnet=70, tag=f"i{uuid.uuid4().hex[:6]}")
        self.node_netns, self.node_ip = self.net.a.name, self.net.a.address
        self.hub_netns, self.hub_ip = self.net.b.name, self.net.b.address
        self.secrets = Secrets()
        self.containers: list[Container] = []
        self.procs: list[Proc] = []
        self.kube: KubeAPI | None = None
        self.api_relay: Relay | None = None
        self.service_account_dir: Path | None = None

    def __enter__(self) -> OneNode:
        self.net.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for container in self.containers:
            container.stop()
        for proc in self.procs:
            proc.stop()
        if self.api_relay:
            self.api_relay.close()
        if self.kube:
            self.kube.stop()
        self.net.__exit__(*exc)

    # -- the API, as the hub pod sees it ---------------------------------------------------------
    def start_api(self) -> KubeAPI:
        self.kube = KubeAPI(tls=False).start()      # the relay below is the TLS the pods see
        certs = self.tmp / "apiserver"
        certs.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=kubernetes", "-addext", f"subjectAltName=IP:{API[0]},DNS:kubernetes.default",
                        "-keyout", str(certs / "key.pem"), "-out", str(certs / "cert.pem")],
                       check=True, capture_output=True)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(certs / "cert.pem", certs / "key.pem")
        ip("-n", self.hub_netns, "addr", "add", f"{API[0]}/32", "dev", "lo")
        listener = in_netns(self.hub_netns, lambda: socket.create_server(API))
        port = self.kube.port
        self.api_relay = Relay(listener, lambda: socket.create_connection(("127.0.0.1", port)), tls=tls)
        # what a kubelet mounts for the pod's service account
        account = self.tmp / "serviceaccount"
        account.mkdir()
        # the hub's service account: the double authorizes it by the RBAC the manifests bind to it
        (account / "token").write_text(self.kube.service_account_token("shark", "shark-hub"))
        (account / "ca.crt").write_text((certs / "cert.pem").read_text())
        (account / "namespace").write_text("shark")
        for path in (account, *account.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.service_account_dir = account
        return self.kube

    # -- pods ------------------------------------------------------------------------------------
    def run(self, objects: list[dict[str, Any]], kind: str, name: str, container: str,
            images: Mapping[str, LocalImage]) -> tuple[Container, Placement, dict[str, Any]]:
        """Schedule the workload's pod on the node: record it in the API (as its controller and
        kubelet would) and run its container with the template's settings."""
        workload = find(objects, kind, name)
        template = workload["spec"]["template"]
        host_network = bool(template["spec"].get("hostNetwork"))
        placement = Placement(
            pod_name=pod_name(workload), namespace=workload["metadata"]["namespace"], node_name=NODE,
            node_netns=self.node_netns, node_ip=self.node_ip, pod_netns=self.hub_netns, pod_ip=self.hub_ip,
            node_root=self.tmp / "node", images=images, secret=self.secrets,
            service_accounts={o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"},
            service_account_dir=self.service_account_dir,
            api=API if self.kube else None)
        translation = translate(template, container, placement)
        if self.kube:
            address = self.node_ip if host_network else self.hub_ip
            self.kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": placement.pod_name, "namespace": placement.namespace,
                "labels": template["metadata"]["labels"]},
                "spec": {**template["spec"], "nodeName": NODE},
                "status": {"phase": "Running", "podIP": address, "podIPs": [{"ip": address}],
                           "hostIP": self.node_ip,
                           "conditions": [{"type": "Ready", "status": "True"}],
                           "containerStatuses": [{"name": container, "ready": True, "started": True,
                                                  "restartCount": 0, "image": template["spec"]["containers"][0]["image"],
                                                  "state": {"running": {}}}]}})
        started = Container(placement.pod_name, translation, self.tmp)
        self.containers.append(started)
        for probe in ("startupProbe", "readinessProbe"):
            if probe in translation.probes:
                wait_ready(started, translation.probes[probe], self.node_netns, self.forwards)
        if "livenessProbe" in translation.probes:
            wait_ready(started, translation.probes["livenessProbe"], self.node_netns, self.forwards, timeout=10)
        return started, placement, template

    def in_node(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.node_netns, *argv], capture_output=True, text=True,
                              timeout=30)


@pytest.fixture
def one_node(tmp_path: Path, forwards: Forwards) -> Iterator[OneNode]:
    with OneNode(tmp_path, forwards) as cluster:
        yield cluster


def status_of(proc_status: str, field: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in proc_status.splitlines() if line.startswith(field + ":"))


def capability_names(mask: str) -> set[str]:
    numbers = {"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
               "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11,
               "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "SYS_CHROOT": 18, "SYS_PTRACE": 19,
               "SYS_ADMIN": 21, "SYS_RESOURCE": 24, "MKNOD": 27, "AUDIT_WRITE": 29, "SETFCAP": 31,
               "SYSLOG": 34, "PERFMON": 38, "BPF": 39}
    value = int(mask, 16)
    names = {name for name, bit in numbers.items() if value >> bit & 1}
    assert value == sum(1 << numbers[n] for n in names), f"a capability outside the table in {mask}"
    return names


def test_worker_and_hub_images_run_with_the_manifests_pod_settings(images: Images, one_node: OneNode):
    reference, image = images.get("lean")
    objects = rendered("--image", reference, "-n", SHOP)
    kube = one_node.start_api()
    for obj in objects:
        kube.apply(obj, manager="kubectl-shark")
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SHOP}})
    kube.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
                 "spec": {"podCIDR": "127.0.0.0/29", "podCIDRs": ["127.0.0.0/29"]},
                 "status": {"addresses": [{"type": "InternalIP", "address": one_node.node_ip}]}})
    kube.add_pod("frontend-1", SHOP, ip=FRONTEND, node=NODE)
    kube.add_pod("orders-1", SHOP, ip=ORDERS, node=NODE)

    worker, _, worker_template = one_node.run(objects, "DaemonSet", "shark-worker", "worker",
                                                             {reference: image})
    hub, _, _ = one_node.run(objects, "Deployment", "shark-hub", "hub", {reference: image})

    # the containers run as the manifests say: users, capabilities, root filesystem
    worker_status = worker.process_status()
    expected = worker_template["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
    assert status_of(worker_status, "Uid").split()[0] == "0"
    assert capability_names(status_of(worker_status, "CapEff")) == set(expected)
    assert capability_names(status_of(worker_status, "CapBnd")) == set(expected)
    hub_status = hub.process_status()
    assert status_of(hub_status, "Uid").split()[0] == "10001"
    assert capability_names(status_of(hub_status, "CapBnd")) == set()
    assert status_of(hub_status, "NoNewPrivs") == "1"
    touched = hub.exec("touch", "/opt/kubectl-shark/x")
    assert touched.returncode != 0 and "Read-only file system" in touched.stderr
    # the image's wheel carries this tree's mypyc build (`./dev` made it; pure Python here only
    # where the build failed, and then in the image too)
    here = subprocess.run([sys.executable, "-m", "shark.build_native", "status"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    in_image = worker.exec("python", "-m", "shark.build_native", "status")
    assert (in_image.returncode, in_image.stdout) == (0, here), in_image.stderr

    # kubectl port-forward to the hub pod: its API, its UI, the worker it found as a pod
    service_port = find(objects, "Service", "shark-hub")["spec"]["ports"][0]["targetPort"]
    url = one_node.forwards(one_node.hub_netns, ("127.0.0.1", hub.translation.ports[service_port]))
    headers = one_node.secrets.headers()

    def get(path: str, **params: Any) -> httpx.Response:
        return httpx.get(url + path, params=params, headers=headers, timeout=30)
    page = get("/")
    assert page.status_code == 200 and "<title>kubectl-shark</title>" in page.text
    workers = wait_for(lambda: [w for w in get("/api/v1/workers").json() if w["ok"]], timeout=60,
                       what="the hub's worker", interval=0.3)
    assert [(w["node"], w["url"]) for w in workers] == [(NODE, f"http://{one_node.node_ip}:8897/api/v1")]

    def worker_targets() -> dict[str, Any] | None:
        rows = get("/api/v1/targets").json()["workers"]
        return rows[0] if rows and rows[0]["ok"] and sorted(rows[0]["ips"]) == [FRONTEND, ORDERS] else None
    wait_for(worker_targets, timeout=60, what="the app pods' addresses sent to the worker", interval=0.3)

    # an app pod calls another on the node's lo: it shows up through the hub, named
    app_port = free_port()
    server = Proc([sys.executable, "-m", "support.http_server", str(app_port), ORDERS],
                  env={"PYTHONPATH": str(TESTS)}, prefix=["ip", "netns", "exec", one_node.node_netns])
    one_node.procs.append(server)
    server.wait_line("listening")
    path = f"/image-{uuid.uuid4().hex[:8]}"
    call = one_node.in_node(["curl", "-sf", "--interface", FRONTEND, f"http://{ORDERS}:{app_port}{path}"])
    assert call.returncode == 0, call.stderr
    entries = wait_for(lambda: get("/api/v1/entries", q=f'request.path == "{path}"').json()["entries"],
                       timeout=60, what=f"the entry of {path} at the hub", interval=0.3)
    [entry] = entries
    assert (entry["node"], entry["status"]) == (NODE, 200)
    assert (entry["src"]["name"], entry["src"]["namespace"], entry["src"]["kind"]) == ("frontend-1", SHOP, "pod")
    assert (entry["dst"]["name"], entry["dst"]["namespace"], entry["dst"]["kind"]) == ("orders-1", SHOP, "pod")
    detail = get(f"/api/v1/entries/{entry['id']}")
    assert detail.status_code == 200 and detail.json()["request"]["path"] == path
    pcap = get(f"/api/v1/entries/{entry['id']}/pcap")
    assert pcap.status_code == 200 and len(pcap.content) > 24
    # the worker kept its store on the node (the hostPath), under the storage limit
    stored = list((one_node.tmp / "node").rglob("*.pcap*"))
    assert stored, f"no pcap segments under the node's hostPath: {list((one_node.tmp / 'node').rglob('*'))}"
    assert worker.running() and hub.running()


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[int]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port = free_port()
    server = Proc([sys.executable, "-m", "support.http_server", str(port), "127.0.0.1", "--tls", str(cert), str(key)],
                  env={"PYTHONPATH": str(TESTS)})
    server.wait_line("listening")
    yield port
    server.stop()


def test_tls_image_worker_decrypts_https_made_on_the_host(images: Images, one_node: OneNode, https_server: int):
    reference, image = images.get("tls")
    objects = rendered("--tls", "--image", reference, "-n", SHOP)
    worker, _, template = one_node.run(objects, "DaemonSet", "shark-worker", "worker", {reference: image})
    added = template["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
    assert capability_names(status_of(worker.process_status(), "CapEff")) == set(added)
    port = worker.translation.probes["readinessProbe"].port
    url = one_node.forwards(one_node.node_netns, ("127.0.0.1", port)) + "/api/v1"
    headers = one_node.secrets.headers()

    def ebpf() -> dict[str, Any] | None:
        block = httpx.get(f"{url}/status", headers=headers, timeout=30).json().get("ebpf") or {}
        return block if block.get("loaded") or block.get("error") else None
    status = wait_for(ebpf, timeout=120, what="the worker's eBPF status", interval=0.5)
    assert status["loaded"] and not status["error"], \
        f"eBPF TLS capture is off in the image: {status['error']}\n{worker.logs()}"
    assert status["probes_attached"] > 0 and status["kernel_headers"], status

    path = f"/image-tls-{uuid.uuid4().hex[:8]}"

    def decrypted() -> list[dict[str, Any]]:
        # new libraries are hooked within about a second: ask again until this request is seen
        done = subprocess.run(["curl", "-sfk", f"https://127.0.0.1:{https_server}{path}"], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        response = httpx.get(f"{url}/entries", params={"q": f'tls and request.path == "{path}"'}, headers=headers,
                             timeout=30)
        return [json.loads(line) for line in response.text.splitlines() if line]
    try:
        entries = wait_for(decrypted, timeout=90, what=f"the decrypted {path}", interval=1.0)
    except AssertionError as error:
        ebpf_now = httpx.get(f"{url}/status", headers=headers, timeout=30).json()["ebpf"]
        raise AssertionError(f"{error}\nebpf: {ebpf_now}\nworker log:\n{worker.logs()}") from None
    assert all(e["tls"] and e["protocol"] == "http" and e["status"] == 200 for e in entries), entries
    assert entries[0]["node"] == NODE
    assert podman("inspect", "--format", "{{.HostConfig.PidMode}}", worker.name).stdout.strip() == "host"
