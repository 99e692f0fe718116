"""support/pods.py: the rendered pod templates become `podman run` options with their meaning
kept, and a field it does not translate stops the image tests with that field's path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from shark.kube.render import DeployOptions, render
from support.pods import LocalImage, Placement, Untranslatable, expand, translate

IMAGE = "registry.example/shark:1"


def template(kind: str, **options: Any) -> dict[str, Any]:
    objects = render(DeployOptions(image=IMAGE, **options))
    return copy.deepcopy(next(o for o in objects if o["kind"] == kind)["spec"]["template"])


def placement(tmp_path: Path, user: str = "10001:10001", **changes: Any) -> Placement:
    accounts = {o["metadata"]["name"]: o for o in render(DeployOptions()) if o["kind"] == "ServiceAccount"}
    values = dict(pod_name="shark-worker-x1", namespace="shark", node_name="node-a", node_netns="node-ns",
                  node_ip="10.213.70.1", pod_netns="pod-ns", pod_ip="10.213.70.2", node_root=tmp_path / "node",
                  images={IMAGE: LocalImage("sha256:abc", user)}, secret=lambda name, key: f"{name}/{key}-value",
                  service_accounts=accounts, service_account_dir=tmp_path / "sa", api=("10.96.0.1", 443))
    values.update(changes)
    return Placement(**values)


def pairs(options: list[str]) -> list[tuple[str, str]]:
    return list(zip(options, options[1:]))


def test_the_tls_worker_keeps_every_setting_of_its_pod(tmp_path):
    t = translate(template("DaemonSet", tls=True), "worker", placement(tmp_path))
    options = t.options
    assert ("--network", "ns:/run/netns/node-ns") in pairs(options) and ("--pid", "host") in pairs(options)
    assert ("--user", "0") in pairs(options) and t.user == 0
    assert options.count("--cap-drop") == 1 and ("--cap-drop", "ALL") in pairs(options)
    assert set(t.capabilities) == {"NET_RAW", "SYS_ADMIN", "SYS_PTRACE"}
    assert [o for o in options if o.startswith("--cap-add=")] == [f"--cap-add={c}" for c in t.capabilities]
    assert not any(o.startswith("seccomp=") for o in options)             # RuntimeDefault: podman's own
    assert ("--security-opt", "no-new-privileges") in pairs(options)
    assert "--read-only" in options and "--read-only-tmpfs=false" in options
    assert ("--cpus", "1") in pairs(options) and ("--memory", str(1 << 30)) in pairs(options)
    assert ("--cpu-shares", "102") in pairs(options)                      # requests.cpu 100m
    mounts = [o for a, o in pairs(options) if a == "--mount"]
    storage = tmp_path / "node" / "var/lib/kubectl-shark/shark"
    assert f"type=bind,source={storage},destination=/var/lib/kubectl-shark" in mounts and storage.is_dir()
    assert "type=bind,source=/lib/modules,destination=/lib/modules,ro=true" in mounts
    assert "type=bind,source=/sys/kernel/tracing,destination=/sys/kernel/tracing" in mounts
    assert f"type=tmpfs,tmpfs-mode=1777,tmpfs-size={64 << 20},destination=/tmp" in mounts
    assert not any("serviceaccount" in m for m in mounts)                 # automountServiceAccountToken: false
    assert t.env["NODE_NAME"] == "node-a" and t.args[t.args.index("--node") + 1] == "node-a"
    assert t.args[-1] == "--tls" and t.image == "sha256:abc"
    assert ("--entrypoint", '["python", "-m", "worker"]') in pairs(options)
    assert t.probes["readinessProbe"].url == "http://10.213.70.1:8897" + t.probes["readinessProbe"].path


def test_the_hub_runs_as_its_user_with_its_service_account(tmp_path):
    t = translate(template("Deployment"), "hub", placement(tmp_path))
    options = t.options
    assert ("--network", "ns:/run/netns/pod-ns") in pairs(options) and "--pid" not in options
    assert ("--user", "10001:10001") in pairs(options) and t.user == 10001 and t.capabilities == ()
    assert not any(o.startswith("seccomp=") for o in options)             # RuntimeDefault: podman's own
    assert f"type=bind,source={tmp_path / 'sa'},destination=/var/run/secrets/kubernetes.io/serviceaccount,ro=true" \
        in options
    assert t.env["POD_NAMESPACE"] == "shark"
    assert (t.env["KUBERNETES_SERVICE_HOST"], t.env["KUBERNETES_SERVICE_PORT"]) == ("10.96.0.1", "443")
    assert t.ports == {"http": 8899} and t.probes["livenessProbe"].host == "10.213.70.2"


def test_secrets_reach_the_environment_and_never_the_command_line(tmp_path):
    tpl = template("DaemonSet")
    tpl["spec"]["containers"][0]["env"].append(
        {"name": "SHARK_TOKEN", "valueFrom": {"secretKeyRef": {"name": "shark-token", "key": "token"}}})
    t = translate(tpl, "worker", placement(tmp_path))
    assert t.env["SHARK_TOKEN"] == "shark-token/token-value"
    assert not any("token-value" in o for o in [*t.options, *t.args])


def test_variables_expand_as_kubernetes_does():
    env = {"A": "x", "B": "y"}
    assert expand("$(A)-$(B)", env) == "x-y"
    assert expand("$(NOPE)", env) == "$(NOPE)"
    assert expand("$$(A) costs $$5", env) == "$(A) costs $5"


@pytest.mark.parametrize("change, field", [
    (lambda t: t["spec"].update(shareProcessNamespace=True), "template.spec.shareProcessNamespace"),
    (lambda t: t["spec"]["containers"][0].update(envFrom=[{"configMapRef": {"name": "x"}}]), ".envFrom"),
    (lambda t: t["spec"]["containers"][0]["env"].append(
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}), "valueFrom.configMapKeyRef"),
    (lambda t: t["spec"]["containers"][0]["env"].append(
        {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}), "fieldRef.fieldPath"),
    (lambda t: t["spec"]["volumes"].append({"name": "cm", "configMap": {"name": "x"}}), "only hostPath and emptyDir"),
    (lambda t: t["spec"]["containers"][0]["securityContext"].update(seccompProfile={
        "type": "Localhost", "localhostProfile": "x.json"}), "seccompProfile.type"),
    (lambda t: t["spec"]["containers"][0]["readinessProbe"].update(
        httpGet=None, exec={"command": ["true"]}), "readinessProbe"),
    (lambda t: t["spec"]["containers"][0]["securityContext"].update(runAsUser=None, runAsNonRoot=True),
     "runAsNonRoot but it would run as root"),
    (lambda t: t["spec"]["containers"].append({"name": "sidecar", "image": IMAGE}), "2 containers"),
    (lambda t: t["metadata"].update(annotations={"container.apparmor.security.beta.kubernetes.io/worker": "x"}),
     "annotations"),
])
def test_what_is_not_translated_is_named(tmp_path, change, field):
    tpl = template("DaemonSet")
    change(tpl)
    with pytest.raises(Untranslatable) as refused:
        translate(tpl, "worker", placement(tmp_path, user="0"))
    assert field in str(refused.value)


def test_an_image_that_was_not_built_here_is_refused(tmp_path):
    with pytest.raises(Untranslatable, match=r"image: 'registry.example/shark:1' is not an image built here"):
        translate(template("DaemonSet"), "worker", placement(tmp_path, images={}))
