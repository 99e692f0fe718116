"""Cluster mode end to end on one machine: `tap` deploys into the API double, and the hub and
workers it deployed run as real processes, started the way a kubelet would start them: with
the command, arguments and environment of the pod spec tap applied (the token read from the
Secret tap created, as a kubelet resolves secretKeyRef).

`tap` reaches the hub through the real `kubectl port-forward` (the double relays the hub pod's
port to the hub process). The hub gets the in-cluster configuration a kubelet gives its pod (KUBERNETES_SERVICE_HOST/PORT,
its ServiceAccount's token and the cluster CA in a directory) and acts as that account.
The nodes are loopback addresses (127.x.y.z, unique to this test run), so the workers' host
network addresses are real and local; the workers replay a pcap instead of capturing `any`
(the only argument changed besides paths and the listen address); the hub finds them through
the double as it would through a cluster's API. A pod turns ready in the double only when its
process answers the readiness probe path, as a kubelet probing it would see.
"""

from __future__ import annotations

import base64
import os
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from shark.kube.forward import KubectlForwarder
from shark.kube.render import DeployOptions
from shark.kube.runner import Access, ClusterRunner, Proxy
from shark.kube.view import LineView
from support.kubeapi import KubeAPI
from support.processes import Proc, free_port

ROOT = Path(__file__).resolve().parents[2]
PCAP = ROOT / "tests" / "golden" / "http1" / "basic.pcap"


def loopback_nodes() -> dict[str, str]:
    pid = os.getpid()
    base = f"127.{100 + pid % 100}.{pid // 100 % 250 + 1}"
    return {"node-a": f"{base}.2", "node-b": f"{base}.3"}


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def replace_arg(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def container(kube: KubeAPI, kind: str, name: str) -> dict[str, Any]:
    return kube.get(kind, name, "shark")["spec"]["template"]["spec"]["containers"][0]


def container_env(kube: KubeAPI, spec: dict[str, Any], node: str) -> dict[str, str]:
    """The environment a kubelet gives the container: values, the downward API, Secret keys."""
    env = {}
    for item in spec.get("env") or []:
        source = item.get("valueFrom") or {}
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "fieldRef" in source:
            # the pods run on this machine's loopback here: that is their address
            env[item["name"]] = {"metadata.namespace": "shark", "spec.nodeName": node,
                                 "status.podIP": "127.0.0.1"}[source["fieldRef"]["fieldPath"]]
        else:
            ref = source["secretKeyRef"]
            data = kube.get("Secret", ref["name"], "shark")["data"][ref["key"]]
            env[item["name"]] = base64.b64decode(data).decode()
    return env


def test_tap_deploys_a_hub_that_finds_its_workers_and_serves_their_entries(kube, tmp_path):
    nodes = loopback_nodes()
    for name, ip in nodes.items():
        kube.add_node(name, ip=ip)
    probes: dict[str, str] = {}     # pod kind -> readiness URL, once its process runs

    def kubelet(pod: dict[str, Any]) -> str:
        component = pod["metadata"]["labels"].get("app.kubernetes.io/component")
        key = component if component == "hub" else pod["spec"].get("nodeName", "")
        url = probes.get(key)
        return "ready" if url and answers(url) else "creating"
    kube.pod_behavior = kubelet
    # the real `kubectl port-forward` to the double, which relays the hub pod's port to the hub process
    forwarder = KubectlForwarder(str(kube.kubeconfig))
    said: list[str] = []
    runner = ClusterRunner(Access(str(kube.kubeconfig), None, "shark"), said.append, said.append,
                           forwarder=forwarder, opener=lambda url: None, view_factory=LineView, poll_interval=0.2)
    port = free_port()
    result: list[Any] = []

    def tap() -> None:
        try:
            result.append(runner.tap(DeployOptions(target_namespaces=("default",)), Proxy("127.0.0.1", port, False),
                                     60))
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            result.append(error)
    thread = threading.Thread(target=tap)
    thread.start()
    processes: list[Proc] = []
    try:
        kube.wait_for(lambda: kube.find("DaemonSet", "shark-worker", "shark"), 20, "the DaemonSet")
        worker = container(kube, "DaemonSet", "shark-worker")
        for name, ip in nodes.items():
            args = replace_arg(worker["args"], "--iface", "any")
            at = args.index("--iface")
            args[at:at + 2] = ["--pcap", str(PCAP)]                  # replay instead of capturing `any`
            args = replace_arg(args, "--storage-dir", str(tmp_path / name))
            args = replace_arg(args, "--listen", f"{ip}:8897")
            args = replace_arg(args, "--node", name)                 # $(NODE_NAME), from spec.nodeName
            assert worker["command"] == ["python", "-m", "worker"]
            processes.append(Proc([sys.executable, "-m", "worker", *args], env=container_env(kube, worker, name)))
            processes[-1].wait_line(r"serving on")
            probes[name] = f"http://{ip}:8897{worker['readinessProbe']['httpGet']['path']}"
        hub = container(kube, "Deployment", "shark-hub")
        assert hub["command"] == ["python", "-m", "hub"]
        args = replace_arg(hub["args"], "--listen", "127.0.0.1:0")
        args = replace_arg(args, "--state-dir", str(tmp_path / "hub"))
        # as in its pod: in-cluster config with the token of its ServiceAccount (the double
        # authorizes it by the RBAC tap applied) and the cluster's CA, mounted where the hub reads them
        account = tmp_path / "serviceaccount"
        pod_spec = kube.get("Deployment", "shark-hub", "shark")["spec"]["template"]["spec"]
        in_cluster = {**kube.write_service_account(account, "shark", pod_spec["serviceAccountName"]),
                      "SHARK_SERVICE_ACCOUNT_DIR": str(account)}
        hub_proc = Proc([sys.executable, "-m", "hub", *args], env={**container_env(kube, hub, "node-a"), **in_cluster})
        processes.append(hub_proc)
        hub_url = hub_proc.wait_line(r"hub serving on (http://\S+)").group(1)
        hub_address = ("127.0.0.1", int(hub_url.rsplit(":", 1)[1]))
        kube.port_forward_address = lambda pod, port: hub_address if port == 8899 else ("127.0.0.1", 1)
        probes["hub"] = hub_url + hub["readinessProbe"]["httpGet"]["path"]
        kube.wait_for(lambda: any(line.startswith("log in to the UI") for line in said), 60, "tap's forward")

        # the token: created once by tap as a Secret, read by the pods from it, never in their args
        token = base64.b64decode(kube.get("Secret", "shark-token", "shark")["data"]["token"]).decode()
        assert all(token not in arg for arg in [*worker["args"], *hub["args"]])
        ui = f"http://127.0.0.1:{port}/api/v1"
        assert httpx.get(f"{ui}/workers").status_code == 401
        assert httpx.get(f"http://{nodes['node-a']}:8897/api/v1/status").status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        workers = kube.wait_for(lambda: (w := httpx.get(f"{ui}/workers", headers=auth).json()) and len(w) == 2
                                and all(x["ok"] for x in w) and w, 30, "both workers up at the hub")
        assert sorted(w["url"] for w in workers) == sorted(f"http://{ip}:8897/api/v1" for ip in nodes.values())
        # the targets went to every worker with the token (a worker refusing them would say 401 here)
        sent = kube.wait_for(lambda: (t := httpx.get(f"{ui}/targets", headers=auth).json()["workers"]) and all(
            w["sent_at"] for w in t) and t, 30, "targets sent to both workers")
        assert [(w["ok"], w["error"]) for w in sent] == [(True, None), (True, None)]
        # a browser logs in with the address tap printed, then reads with its cookie alone
        login = next(line.removeprefix("log in to the UI at ") for line in said if line.startswith("log in"))
        assert login == f"http://127.0.0.1:{port}/?token={token}"
        with httpx.Client(follow_redirects=True) as browser:
            page = browser.get(login)
            assert page.status_code == 200 and str(page.url) == f"http://127.0.0.1:{port}/"
            entries = kube.wait_for(lambda: browser.get(f"{ui}/entries").json()["entries"], 30, "entries")
        assert {e["node"] for e in entries} == set(nodes)            # from both nodes, merged
        assert {e["protocol"] for e in entries} == {"http"}
    finally:
        runner.stop.set()
        thread.join(30)
        for proc in processes:
            proc.stop()
    assert result == [0], "\n".join(said)
    hub_requests = [r for r in kube.requests if r.user == "system:serviceaccount:shark:shark-hub"]
    assert hub_requests and not {r.status for r in hub_requests} & {401, 403}     # (the scripts' ConfigMap: 404)
    assert "kubectl-shark is ready: the hub and 2 workers" in said
