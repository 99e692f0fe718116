"""The hub in cluster mode end to end: `python -m hub --kube` against the Kubernetes API double,
started as its Deployment starts it in a pod (in-cluster config: KUBERNETES_SERVICE_HOST/PORT,
the ServiceAccount's token and CA in a mounted directory, HTTPS), acting as the hub's
ServiceAccount with the RBAC tap applies; real workers capture real HTTP traffic on lo.

The "cluster": two nodes; the worker DaemonSet's pods (host network, port named `api`) point at
two real worker processes on 127.0.0.1 (a real worker pod's address is its node's; here both
workers listen on 127.0.0.1, told apart by port). App pods have addresses in 127.0.0.0/8, which
all lie on lo without any configuration: servers bind their pod's address, the client binds
its own, so every packet carries the addresses the API says the pods have. Both workers see
all of lo; what each keeps is what the hub's targets let through.

What the double does as the real API server for these calls, and what the hub relies on, is
listed in test_hub_kube_watch.py; pod status is written through the status subresource (as a
kubelet does) by the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

from support.hub_rbac import HUB_ACCOUNT, apply_hub_rbac
from support.kubeapi import KubeAPI
from support.processes import Proc, free_port, wait_for

pytestmark = pytest.mark.root
TESTS = str(Path(__file__).resolve().parents[1])
SHOP = "shop"
FRONTEND, ORDERS_1, ORDERS_2, ORDERS_SVC = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.10"
WORKER_LABELS = {"app.kubernetes.io/name": "shark", "app.kubernetes.io/component": "worker"}


class Cluster:
    def __init__(self, kube: KubeAPI, tmp: Path) -> None:
        self.kube = kube
        self.tmp = tmp
        self.pod_env: dict[str, str] | None = None      # the hub pod's service account (rbac())
        self.app_port = free_port()
        self.procs: list[Proc] = []
        self.workers: dict[str, tuple[Proc, int]] = {}
        self.hub: Proc | None = None
        self.hub_url = ""

    # -- processes ----------------------------------------------------------------------------
    def start(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def server(self, address: str) -> None:
        self.start(Proc([sys.executable, "-m", "support.http_server", str(self.app_port), address],
                        env={"PYTHONPATH": TESTS})).wait_line("listening")

    def worker(self, node: str, port: int | None = None) -> int:
        port = port or free_port()
        proc = self.start(Proc([sys.executable, "-m", "worker", "--iface", "lo", "--bpf", f"tcp port {self.app_port}",
                                "--storage-dir", str(self.tmp / f"store-{node}"), "--listen", f"127.0.0.1:{port}",
                                "--node", node]))
        proc.wait_line(r"serving on http://")
        self.workers[node] = (proc, port)
        return port

    def rbac(self, edit=None) -> None:
        """Applies the ServiceAccount and RBAC tap applies (changed by `edit`, as a later apply
        of changed manifests would): the hub runs as that account."""
        apply_hub_rbac(self.kube, edit=edit)
        account = self.tmp / "serviceaccount"
        self.pod_env = {**self.kube.write_service_account(account, "shark", HUB_ACCOUNT),
                        "SHARK_SERVICE_ACCOUNT_DIR": str(account)}

    def start_hub(self, *args: str) -> None:
        assert self.pod_env, "rbac() first: the hub acts as its ServiceAccount"
        self.hub = self.start(Proc([sys.executable, "-m", "hub", "--kube", "--listen", "127.0.0.1:0",
                                    "--poll-interval", "0.3", *args], env=self.pod_env))
        self.hub_url = self.hub.wait_line(r"hub serving on (http://\S+)").group(1)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception:   # keep cleaning up
                pass

    # -- the API's objects --------------------------------------------------------------------
    def worker_pod(self, node: str, port: int, name: str | None = None) -> dict:
        return self.kube.add_pod(name or f"shark-worker-{node}", "shark", ip="127.0.0.1", node=node,
                                 labels=WORKER_LABELS, host_network=True, containers=[{
                                     "name": "worker", "image": "kubectl-shark:0.1.0",
                                     "ports": [{"name": "api", "containerPort": port, "protocol": "TCP"}]}])

    # -- the hub's API ------------------------------------------------------------------------
    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(f"{self.hub_url}/api/v1{path}", params=params, timeout=30)

    def put_targets(self, body: object) -> httpx.Response:
        return httpx.put(f"{self.hub_url}/api/v1/targets", content=json.dumps(body), timeout=30,
                         headers={"Content-Type": "application/json"})

    def worker_targets(self, node: str) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.workers[node][1]}/api/v1/targets", timeout=10).json()

    def entries(self, q: str = "", count: int = 1) -> list[dict]:
        def enough() -> list[dict] | None:
            found = self.get("/entries", q=q, limit=1000).json()["entries"]
            return found if len(found) >= count else None
        return wait_for(enough, timeout=30, what=f"{count} entries for {q!r}")


def call(source: str, target: str, port: int, path: str) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10) as client:
        assert client.get(f"http://{target}:{port}{path}").status_code == 200


@pytest.fixture
def cluster(tmp_path: Path):
    with KubeAPI() as kube:
        c = Cluster(kube, tmp_path)
        try:
            # the nodes' pod networks: addresses outside them that nobody holds are external
            for name, ip, pod_cidr in (("node-a", "10.213.60.1", "127.0.0.0/29"),
                                       ("node-b", "10.213.60.2", "127.0.0.8/29")):
                kube.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                             "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
                             "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shark"}})
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SHOP}})
            c.rbac()
            kube.add_pod("frontend-1", SHOP, ip=FRONTEND, node="node-a")
            kube.add_pod("orders-1", SHOP, ip=ORDERS_1, node="node-a")
            kube.add_pod("orders-2", SHOP, ip=ORDERS_2, node="node-b")
            kube.add_service("orders", SHOP, cluster_ip=ORDERS_SVC)
            for address in (ORDERS_1, ORDERS_2, ORDERS_SVC):
                c.server(address)
            yield c
        finally:
            c.stop()


def test_workers_are_the_daemonsets_pods(cluster):
    port_a, port_b = cluster.worker("node-a"), cluster.worker("node-b")
    cluster.start_hub()
    assert cluster.get("/workers").json() == []
    # a worker pod without an address yet is not a worker
    cluster.kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "shark-worker-node-a", "namespace": "shark", "labels": WORKER_LABELS},
        "spec": {"nodeName": "node-a", "hostNetwork": True, "containers": [{
            "name": "worker", "image": "kubectl-shark:0.1.0",
            "ports": [{"name": "api", "containerPort": port_a}]}]},
        "status": {"phase": "Pending"}})
    cluster.worker_pod("node-b", port_b)
    # a pod that only looks like one (other labels) is not either
    cluster.kube.add_pod("imposter", "shark", ip="127.0.0.1", node="node-a")
    rows = wait_for(lambda: (r := cluster.get("/workers").json()) and r[0]["ok"] and r, what="node-b's worker")
    assert [(r["node"], r["url"]) for r in rows] == [("node-b", f"http://127.0.0.1:{port_b}/api/v1")]
    # the kubelet reports it running: it joins
    cluster.kube.patch_status("Pod", "shark-worker-node-a", "shark",
                              {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]})
    wait_for(lambda: sorted(r["node"] for r in cluster.get("/workers").json() if r["ok"]) == ["node-a", "node-b"],
             what="both workers")
    # the DaemonSet's pod on node-b goes: so does the worker
    cluster.kube.delete("Pod", "shark-worker-node-b", "shark")
    wait_for(lambda: [r["node"] for r in cluster.get("/workers").json()] == ["node-a"], what="node-b gone")
    status = cluster.get("/status").json()
    assert status["hub"]["workers"] == 1
    watches = cluster.get("/targets").json()["watches"]
    assert all(w["synced"] and w["errors"] == 0 for w in watches.values()), watches
    # in-cluster config: every request reached the API as the hub's ServiceAccount
    assert {r.user for r in cluster.kube.requests} == {"system:serviceaccount:shark:shark-hub"}


def test_the_hub_can_do_only_what_its_rbac_allows(cluster):
    """The hub acts as its ServiceAccount; the double authorizes it by the RBAC tap applied. A
    resource missing from manifests/rbac.yaml is the API's 403 for the hub, shown in /targets,
    and fixing the RBAC is picked up without a restart."""
    def without_endpoints(objects: list[dict]) -> None:
        role = next(o for o in objects if o["kind"] == "ClusterRole")
        role["rules"][0]["resources"].remove("endpoints")
    cluster.rbac(edit=without_endpoints)
    cluster.start_hub()
    refusal = ('endpoints is forbidden: User "system:serviceaccount:shark:shark-hub" cannot list resource '
               '"endpoints" in API group "" at the cluster scope')
    watches = wait_for(lambda: (w := cluster.get("/targets").json()["watches"]) and w["endpoints"]["last_error"] and w,
                       what="the endpoints watch refused")
    assert watches["endpoints"]["last_error"].startswith(f"HTTP 403: {refusal}"), watches["endpoints"]
    assert not watches["endpoints"]["synced"]
    refused = [r for r in cluster.kube.requests if r.path == "/api/v1/endpoints"]
    assert refused and {r.status for r in refused} == {403}
    # what the rules do grant works, as that account: pods, services, nodes
    granted = ("pods", "services", "nodes", "worker pods")
    watches = wait_for(lambda: (w := cluster.get("/targets").json()["watches"]) and all(
        w[name]["synced"] for name in granted) and w, what="the granted watches synced")
    assert all(watches[name]["errors"] == 0 for name in granted), watches
    cluster.rbac()
    wait_for(lambda: cluster.get("/targets").json()["watches"]["endpoints"]["synced"], what="endpoints listed")


def test_targets_follow_the_spec_and_the_pods(cluster):
    port_a, port_b = cluster.worker("node-a"), cluster.worker("node-b")
    cluster.worker_pod("node-a", port_a)
    cluster.worker_pod("node-b", port_b)
    cluster.start_hub("--pod-regex", "^orders", "--target-namespace", SHOP)
    # from the command line: each worker gets its node's orders pods, and everyone's names
    wait_for(lambda: cluster.worker_targets("node-a")["ips"] == [ORDERS_1], what="node-a's targets")
    wait_for(lambda: cluster.worker_targets("node-b")["ips"] == [ORDERS_2], what="node-b's targets")
    names = cluster.worker_targets("node-a")["names"]
    assert names[FRONTEND] == {"name": "frontend-1", "namespace": SHOP, "kind": "pod"}
    assert names[ORDERS_SVC] == {"name": "orders", "namespace": SHOP, "kind": "service"}
    assert names["10.213.60.2"] == {"name": "node-b", "namespace": "", "kind": "node"}
    assert names["10.96.0.1"] == {"name": "kubernetes", "namespace": "default", "kind": "service"}

    # PUT changes them; the answer comes once the workers have answered
    view = cluster.put_targets({"regex": "front", "namespaces": [SHOP]}).json()
    assert [p["name"] for p in view["pods"]] == ["frontend-1"]
    rows = {w["node"]: w for w in view["workers"]}
    assert rows["node-a"]["ips"] == [FRONTEND] and rows["node-a"]["ok"]
    assert rows["node-b"]["idle"] and rows["node-b"]["ok"]          # no frontend there: captures nothing
    at_b = cluster.worker_targets("node-b")
    assert (at_b["ips"], at_b["idle"], at_b["cluster_nets"]) == ([], True, ["127.0.0.0/29", "127.0.0.8/29"])
    assert cluster.get("/targets").json()["regex"] == "front"
    # and capture follows: node-a keeps the frontend's traffic, idle node-b keeps nothing
    call(FRONTEND, ORDERS_2, cluster.app_port, "/while-idle")
    assert [e["node"] for e in cluster.entries('request.path == "/while-idle"')] == ["node-a"]

    # pods come and go: the workers' shares follow
    cluster.kube.add_pod("frontend-2", SHOP, ip="127.0.0.5", node="node-b")
    wait_for(lambda: cluster.worker_targets("node-b")["ips"] == ["127.0.0.5"], what="frontend-2 targeted")
    assert cluster.worker_targets("node-b")["idle"] is False
    # node-b captures in packet order: once it has indexed a later request, it would have had
    # /while-idle before it had it captured that one while idle
    call("127.0.0.5", ORDERS_2, cluster.app_port, "/after-idle")

    def b_paths() -> list[str] | None:
        text = httpx.get(f"http://127.0.0.1:{port_b}/api/v1/entries", timeout=10).text
        paths = [json.loads(line)["request"]["path"] for line in text.splitlines()]
        return paths if "/after-idle" in paths else None
    assert wait_for(b_paths, what="node-b's entry for /after-idle") == ["/after-idle"]
    cluster.kube.delete("Pod", "frontend-1", SHOP)
    wait_for(lambda: cluster.worker_targets("node-a")["idle"], what="node-a idle")
    # new names follow (at most once a second)
    wait_for(lambda: FRONTEND not in cluster.worker_targets("node-a")["names"], what="frontend-1's name gone")

    # a restarted worker has lost its targets: the hub sees it in /status and sends them again
    proc, _ = cluster.workers["node-b"]
    proc.stop()
    cluster.worker("node-b", port_b)
    wait_for(lambda: cluster.worker_targets("node-b")["ips"] == ["127.0.0.5"], what="targets after restart")

    # mistakes are named; nothing changes
    bad = cluster.put_targets({"regex": "front(", "namespaces": [SHOP]})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("regex: 'front(' is not a valid regular")
    bad = cluster.put_targets({"regex": "x", "namespaces": ["ok", "Not_OK"]})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("namespaces[1]: 'Not_OK'")
    assert cluster.put_targets({"regex": "x", "pods": []}).status_code == 400
    assert cluster.get("/targets").json()["regex"] == "front"

    # neither regex nor namespaces: every pod (but the workers themselves, host network)
    view = cluster.put_targets({"regex": None, "namespaces": []}).json()
    assert {(p["namespace"], p["name"]) for p in view["pods"]} == {
        (SHOP, "orders-1"), (SHOP, "orders-2"), (SHOP, "frontend-2")}
    assert {w["node"]: w["ips"] for w in view["workers"]} == {"node-a": [ORDERS_1], "node-b": [ORDERS_2, "127.0.0.5"]}

    # the targets examples of docs/API.md, in a cluster
    text = (Path(TESTS).parent / "docs" / "API.md").read_text().split("## Hub API", 1)[1]
    commands = [line for block in re.findall(r"```shell\n(.*?)```", text, re.S) for line in block.splitlines()
                if line.startswith("curl ") and "/targets" in line]
    assert len(commands) == 2
    for command in commands:
        result = subprocess.run(["bash", "-c", command], env={**os.environ, "HUB": cluster.hub_url},
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and json.loads(result.stdout)["mode"] == "kube", (command, result)
    assert json.loads(result.stdout)["pods"] == [
        {"namespace": SHOP, "name": "frontend-2", "node": "node-b", "ips": ["127.0.0.5"]}]


def test_entries_are_named_at_the_worker_and_keep_their_names(cluster):
    port_a, port_b = cluster.worker("node-a"), cluster.worker("node-b")
    cluster.worker_pod("node-a", port_a)
    cluster.worker_pod("node-b", port_b)
    cluster.start_hub("--target-namespace", SHOP)
    wait_for(lambda: cluster.worker_targets("node-a")["ips"] == [FRONTEND, ORDERS_1], what="node-a's targets")
    wait_for(lambda: cluster.worker_targets("node-b")["ips"] == [ORDERS_2], what="node-b's targets")

    call(FRONTEND, ORDERS_1, cluster.app_port, "/api/orders")     # node-a's pods
    call(FRONTEND, ORDERS_SVC, cluster.app_port, "/api/via-service")
    call("127.0.0.99", ORDERS_2, cluster.app_port, "/api/from-outside")   # captured by node-b only
    # KFL on names runs at the workers: the names were stamped when the entries were indexed
    found = cluster.entries('dst.name == "orders-1"')
    assert {(e["node"], e["src"]["name"], e["src"]["kind"], e["dst"]["namespace"]) for e in found} == \
        {("node-a", "frontend-1", "pod", SHOP)}
    via = cluster.entries('dst.kind == "service"')
    assert [(e["dst"]["name"], e["request"]["path"]) for e in via] == [("orders", "/api/via-service")]
    outside = cluster.entries('src.kind == "external"')
    assert [(e["node"], e["dst"]["name"]) for e in outside] == [("node-b", "orders-2")]

    # orders-1 goes; its address is given to payments-1 in another namespace
    cluster.kube.delete("Pod", "orders-1", SHOP)
    cluster.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "billing"}})
    cluster.kube.add_pod("payments-1", "billing", ip=ORDERS_1, node="node-a")
    cluster.put_targets({"regex": None, "namespaces": [SHOP, "billing"]})
    wait_for(lambda: cluster.worker_targets("node-a")["names"].get(ORDERS_1, {}).get("name") == "payments-1",
             what="the new name at node-a")
    call(FRONTEND, ORDERS_1, cluster.app_port, "/api/pay")
    new = cluster.entries('request.path == "/api/pay"')
    assert [(e["dst"]["name"], e["dst"]["namespace"]) for e in new] == [("payments-1", "billing")]
    old = cluster.entries('request.path == "/api/orders"')
    assert [(e["dst"]["name"], e["dst"]["namespace"]) for e in old] == [("orders-1", SHOP)]
    # the service map is by name
    graph = cluster.get("/servicemap").json()
    edges = {(e["source"], e["target"]) for e in graph["edges"]}
    assert {("shop/frontend-1", "shop/orders-1"), ("shop/frontend-1", "billing/payments-1"),
            ("shop/frontend-1", "shop/orders")} <= edges


def test_the_hub_names_what_the_workers_did_not(cluster):
    """Traffic captured before the hub ran (so before any worker had names) is named by the
    hub's resolver at read time, with the identity each address had then: in /entries, the
    detail, /stream, the service map and HAR."""
    port_a = cluster.worker("node-a")
    cluster.worker_pod("node-a", port_a)
    time.sleep(1.1)   # the pods' creationTimestamp (whole seconds) is before the traffic
    call(FRONTEND, ORDERS_1, cluster.app_port, "/early")
    call("127.0.0.99", ORDERS_1, cluster.app_port, "/early-outside")
    worker_url = f"http://127.0.0.1:{port_a}/api/v1"
    early = wait_for(lambda: (e := [json.loads(line) for line in httpx.get(f"{worker_url}/entries").text.splitlines()])
                     and len(e) == 2 and e, what="the early entries")
    assert {(e["src"]["kind"], e["dst"]["kind"]) for e in early} == {("", "")}   # the worker had no names
    cluster.start_hub("--state-dir", str(cluster.tmp / "hub-state"))
    wait_for(lambda: cluster.worker_targets("node-a")["names"], what="names at node-a")

    entry = cluster.entries('request.path == "/early"')[0]
    assert (entry["src"]["name"], entry["dst"]["name"], entry["dst"]["kind"]) == ("frontend-1", "orders-1", "pod")
    # an address nobody held when the hub listed the cluster, seen before that, stays unnamed
    # rather than being called external: it may have been a pod deleted before the hub started
    outside = cluster.entries('request.path == "/early-outside"')[0]
    assert outside["src"]["kind"] == "" and outside["dst"]["name"] == "orders-1"
    detail = cluster.get(f"/entries/{entry['id']}").json()
    assert detail["dst"]["name"] == "orders-1" and detail["request"]["path"] == "/early"
    har = cluster.get("/har", q='request.path == "/early"').json()["log"]["entries"]
    assert har[0]["_dst"]["name"] == "orders-1" and har[0]["_src"]["namespace"] == SHOP
    nodes = {n["id"]: n for n in cluster.get("/servicemap").json()["nodes"]}
    assert nodes["shop/orders-1"]["kind"] == "pod" and nodes["shop/frontend-1"]["kind"] == "pod"
    # a snapshot keeps these names: the pods may be gone when it is opened
    made = httpx.post(f"{cluster.hub_url}/api/v1/snapshots", json={"name": "early", "q": 'request.path == "/early"'},
                      timeout=60)
    assert made.status_code == 201 and made.json()["details"] == 1, made.text
    [saved] = cluster.get("/snapshots/early/entries", q="dst.kind == \"pod\"").json()["entries"]
    full = cluster.get(f"/snapshots/early/entries/{saved['id']}").json()
    for named in (saved, full):
        assert (named["src"]["name"], named["dst"]["name"], named["dst"]["namespace"]) == ("frontend-1", "orders-1", SHOP)
    assert full["request"]["path"] == "/early"

    # from now on the worker names what it indexes: outside the pod networks is external
    call("127.0.0.77", ORDERS_1, cluster.app_port, "/later")
    later = cluster.entries('src.kind == "external" and dst.name == "orders-1"')
    assert [e["request"]["path"] for e in later] == ["/later"]

    # the live feed carries the names (this entry was named by the worker; how the hub names
    # live events a worker did not: test_hub_kube_names.py)
    with httpx.stream("GET", f"{cluster.hub_url}/api/v1/stream", params={"q": "http"}, timeout=30) as response:
        call(FRONTEND, ORDERS_1, cluster.app_port, "/live")
        for line in response.iter_lines():
            if line.startswith("data:") and "/live" in line:
                live = json.loads(line[5:])
                break
    assert (live["src"]["name"], live["dst"]["name"]) == ("frontend-1", "orders-1")

    # and over the WebSocket (the hub's own naming of live events: test_hub_kube_names.py)
    async def first_ws_entry() -> dict:
        ws_url = cluster.hub_url.replace("http://", "ws://") + "/api/v1/ws"
        async with websockets.connect(ws_url) as ws:
            await ws.send('request.path == "/ws"')
            await asyncio.sleep(0.5)
            await asyncio.to_thread(call, "127.0.0.2", ORDERS_1, cluster.app_port, "/ws")
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if message["type"] == "entry":
                    return message["payload"]
    ws_entry = asyncio.run(first_ws_entry())
    assert (ws_entry["src"]["name"], ws_entry["dst"]["name"]) == ("frontend-1", "orders-1")


def test_without_kube_targets_are_refused_with_the_reason(start_worker, http_server):
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}")
    hub = Proc([sys.executable, "-m", "hub", "--worker", worker.url, "--listen", "127.0.0.1:0",
                "--poll-interval", "0.3"])
    try:
        url = hub.wait_line(r"hub serving on (http://\S+)").group(1)
        httpx.put(f"{worker.url}/targets", json={"ips": ["127.0.0.1"]}, timeout=10).raise_for_status()
        shown = wait_for(lambda: (v := httpx.get(f"{url}/api/v1/targets").json())["workers"][0]["ips"] and v,
                         what="the worker's targets at the hub")
        assert shown["mode"] == "local" and shown["workers"][0]["ips"] == ["127.0.0.1"]
        refused = httpx.put(f"{url}/api/v1/targets", json={"regex": "web", "namespaces": []})
        assert refused.status_code == 409 and "not in a cluster" in refused.json()["detail"]
        bad = httpx.put(f"{url}/api/v1/targets", json={"regex": "("})
        assert bad.status_code == 400 and bad.json()["detail"].startswith("regex:")
    finally:
        hub.stop()
