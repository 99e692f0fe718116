"""The hub's /metrics carries the service map (per edge counts by status class, a latency
histogram) from real traffic, and every query of the Grafana dashboard in docs/grafana names
metrics and labels that a real /metrics answer has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from support.processes import wait_for
from support.prometheus import parse_prometheus

pytestmark = pytest.mark.root

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "kubectl-shark.json"
METRIC = re.compile(r"\bshark_[a-z0-9_]+\b")
BY = re.compile(r"\bby \(([^)]*)\)")
MATCHER = re.compile(r"\b([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"")


def queries(dashboard: dict) -> list[str]:
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    found += [var["query"]["query"] for var in dashboard["templating"]["list"] if var["type"] == "query"]
    return found


def test_edge_metrics_from_real_traffic_back_every_dashboard_query(tap_local, http_server):
    hub, env = tap_local
    token = (Path(env["XDG_STATE_HOME"]) / "shark" / "token").read_text().strip()

    def scrape() -> dict[tuple[str, str], float]:
        response = httpx.get(f"{hub}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert response.status_code == 200, response.text
        return parse_prometheus(response.text)
    scrape()                     # the first scrape starts the counting
    for path in ("/json?n=0", "/json?n=1", "/status/503"):
        httpx.get(f"http://127.0.0.1:{http_server}{path}", timeout=10)
    wait_for(lambda: scrape()[("shark_edge_entries_total", "")] >= 3 or None, timeout=30, what="3 entries counted")
    # by that scrape at the latest our edge got its own series: what comes next is counted under
    # its name (what came before its first scrape is in "other")
    for path in ("/json?n=2", "/status/404", "/status/503"):
        httpx.get(f"http://127.0.0.1:{http_server}{path}", timeout=10)
    samples = wait_for(lambda: (s := scrape())[("shark_edge_entries_total", "")] == 6 and s or None,
                       timeout=30, what="6 entries counted")
    edge = f'src="127.0.0.1",dst="127.0.0.1:{http_server}",protocol="http"'
    other = 'src="other",dst="other",protocol="http"'
    own = {cls: samples.get(("shark_edge_requests_total", f'{edge},status_class="{cls}"'), 0)
           for cls in ("2xx", "4xx", "5xx")}
    assert own["2xx"] >= 1 and own["4xx"] == 1 and own["5xx"] >= 1
    assert {cls: own[cls] + samples.get(("shark_edge_requests_total", f'{other},status_class="{cls}"'), 0)
            for cls in own} == {"2xx": 3, "4xx": 1, "5xx": 2}      # nothing lost, nothing twice
    assert samples[("shark_edge_request_duration_seconds_count", edge)] == sum(own.values())
    assert samples[("shark_edge_request_duration_seconds_bucket", f'{edge},le="+Inf"')] == sum(own.values())
    assert samples[("shark_edge_series", "")] == 1 and samples[("shark_edge_lost_entries_total", "")] == 0

    # every name and label the dashboard asks for is in this real answer
    names = {name for name, _ in samples}
    labels_of: dict[str, set[str]] = {}
    for name, labels in samples:
        labels_of.setdefault(name, set()).update(re.findall(r'([a-z_]+)="', labels))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = queries(dashboard)
    assert len(exprs) >= 15
    for expr in exprs:
        metrics = METRIC.findall(expr)
        assert metrics, f"no kubectl-shark metric in {expr!r}"
        for metric in metrics:
            assert metric in names, f"{metric} (in {expr!r}) is not in /metrics"
        wanted = {label.strip() for group in BY.findall(expr) for label in group.split(",")}
        wanted |= set(MATCHER.findall(expr))
        wanted |= set(re.findall(r"label_values\(\w+, (\w+)\)", expr))
        have = set.union(*(labels_of[m] for m in metrics))
        assert wanted <= have, f"{expr!r} uses labels {wanted - have} that {metrics} lack"
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            legend = set(re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")))
            have = set.union(*(labels_of[m] for m in METRIC.findall(target["expr"])))
            assert legend <= have, (panel["title"], legend - have)


def test_the_hub_answers_prometheus_at_its_pod_ip():
    """In a cluster Prometheus scrapes http://POD_IP:8899/metrics with that Host; the manifests
    hand the hub POD_IP, and any other name is still refused."""
    import sys

    from support.processes import TEST_TOKEN, Proc

    def scrape(url: str, host: str) -> int:
        return httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TEST_TOKEN}", "Host": host},
                         timeout=10).status_code
    started = {pod_ip: Proc([sys.executable, "-m", "hub", "--worker", "http://127.0.0.1:9", "--listen", "127.0.0.1:0"],
                            env={"SHARK_TOKEN": TEST_TOKEN, "POD_IP": pod_ip}) for pod_ip in ("10.244.7.9", "")}
    try:
        hubs = {ip: (hub, hub.wait_line(r"hub serving on (http://\S+)").group(1)) for ip, hub in started.items()}
        with_ip, without = hubs["10.244.7.9"][1], hubs[""][1]
        assert scrape(with_ip, "10.244.7.9:8899") == 200
        assert scrape(with_ip, "evil.example:8899") == 403
        assert scrape(without, "10.244.7.9:8899") == 403
    finally:
        for hub in started.values():
            hub.stop()
