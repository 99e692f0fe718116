"""The worker's side of the cluster contract (docs/API.md, worker `PUT /targets`): names
stamped into the entries it indexes, `cluster_nets` making unnamed outsiders external, `idle`
capturing nothing, and every mistake named."""

from __future__ import annotations

import httpx
import pytest

from support.processes import wait_for

pytestmark = pytest.mark.root


def put(worker, body: dict) -> httpx.Response:
    return httpx.put(f"{worker.url}/targets", json=body, timeout=10)


def test_names_are_stamped_at_index_time_and_mistakes_are_named(start_worker, http_server):
    worker = start_worker("--iface", "lo", "--bpf", f"tcp port {http_server}")
    for body, detail in [
        ({"ips": [], "pods": []}, "pods: unknown field; expected ips, idle, names, cluster_nets"),
        ({"ips": ["127.0.0.1"], "idle": True}, "idle: true captures nothing; it cannot come with ips"),
        ({"ips": [], "idle": "yes"}, "idle: expected true or false"),
        ({"ips": [], "names": {"10.0.0.300": {"name": "x"}}}, "names['10.0.0.300']: not an IP address"),
        ({"ips": [], "names": {"10.0.0.3": {"name": "x", "kind": "vm"}}},
         "names['10.0.0.3'].kind: 'vm' is not one of pod, service, node, external, process"),
        ({"ips": [], "names": {"10.0.0.3": {"name": 3, "kind": "pod"}}}, "names['10.0.0.3'].name: expected a string"),
        ({"ips": [], "names": {}, "cluster_nets": ["10.0.0.0/33"]}, "cluster_nets[0]: '10.0.0.0/33' is not a network"),
        ({"ips": [], "cluster_nets": ["10.0.0.0/8"]}, "cluster_nets: comes with names"),
    ]:
        answer = put(worker, body)
        assert answer.status_code == 400 and answer.json()["detail"].startswith(detail), (body, answer.text)

    names = {"127.0.0.1": {"name": "orders-1", "namespace": "shop", "kind": "pod"}}
    answer = put(worker, {"ips": [], "names": names, "cluster_nets": ["127.0.0.0/30"]})
    assert answer.status_code == 200 and answer.json()["names"] == names
    assert worker.status()["targets"] == {"ips": [], "idle": False, "names": 1}
    # 127.0.0.2 is inside the cluster's networks but unnamed: left for the hub to name;
    # 127.0.0.9 is outside them: external
    for source in ("127.0.0.2", "127.0.0.9"):
        with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10) as client:
            client.get(f"http://127.0.0.1:{http_server}/from/{source}")
    entries = wait_for(lambda: (e := worker.entries()) and len(e) == 2 and e, what="2 entries")
    by_path = {e["request"]["path"]: e for e in entries}
    inside, outside = by_path["/from/127.0.0.2"], by_path["/from/127.0.0.9"]
    assert (inside["dst"]["name"], inside["dst"]["namespace"], inside["dst"]["kind"]) == ("orders-1", "shop", "pod")
    assert (inside["src"]["name"], inside["src"]["kind"]) == ("", "")
    assert (outside["src"]["name"], outside["src"]["kind"]) == ("", "external")
    # KFL on names at the worker
    found = worker.entries(q='src.kind == "external" and dst.name == "orders-1"')
    assert [e["request"]["path"] for e in found] == ["/from/127.0.0.9"]
    # the names stay with the entries when the address changes hands; a PUT without names keeps them
    put(worker, {"ips": [], "names": {"127.0.0.1": {"name": "payments-1", "namespace": "billing", "kind": "pod"}}})
    assert put(worker, {"ips": []}).json()["names"]["127.0.0.1"]["name"] == "payments-1"
    httpx.get(f"http://127.0.0.1:{http_server}/after")
    after = wait_for(lambda: worker.entries(q='request.path == "/after"'), what="the entry after")
    assert after[0]["dst"]["name"] == "payments-1" and after[0]["src"]["name"] == "payments-1"
    assert worker.entries(q='dst.name == "orders-1"') and worker.get(f"/entries/{inside['id']}").json()["dst"]["name"] == "orders-1"

    # idle: nothing is captured until the targets change again
    assert put(worker, {"ips": [], "idle": True}).json()["bpf"] == "less 0"
    httpx.get(f"http://127.0.0.1:{http_server}/while-idle")
    put(worker, {"ips": []})
    httpx.get(f"http://127.0.0.1:{http_server}/after-idle")
    wait_for(lambda: worker.entries(q='request.path == "/after-idle"'), what="capture after idle")
    assert worker.entries(q='request.path == "/while-idle"') == []
