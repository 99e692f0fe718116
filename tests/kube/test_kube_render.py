"""manifests/ and what tap renders from them: valid for Kubernetes 1.28-1.33, options in place.

Validation uses the OpenAPI schemas that kubernetes-validate ships (strict: unknown fields are
errors), offline. `kubectl kustomize` reads manifests/ the way `kubectl apply -k` does.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from shark.kube.render import (DEFAULT_IMAGE, DeployOptions, OptionError, cluster_scoped_name, load_base, render,
                               to_yaml)
from shark.kube.resources import APPLY_ORDER, MANAGED_BY
from shark.redaction import Redaction

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ["1.28.0", "1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]
VARIANTS = {
    "defaults": DeployOptions(),
    "targets": DeployOptions(pod_regex="^(checkout|payments)-", target_namespaces=("shop", "billing")),
    "tls": DeployOptions(tls=True, storage_limit="1GiB", image="registry.example.com/shark:1.2"),
    "elsewhere": DeployOptions(release_namespace="tools", image_pull_policy="Always"),
    "hub-storage": DeployOptions(hub_storage="5Gi", hub_storage_class="fast-ssd"),
}


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def container(objects: list[dict], kind: str, name: str) -> dict:
    workload = next(o for o in objects if o["kind"] == kind)
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_manifests_are_valid_for_each_kubernetes_version(variant, version):
    for obj in render(VARIANTS[variant]):
        kubernetes_validate.validate(obj, version, strict=True)


def test_a_schema_error_would_be_caught():
    broken = render(DeployOptions())
    ds = next(o for o in broken if o["kind"] == "DaemonSet")
    ds["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, "1.33.0", strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_reads_the_same_objects_tap_renders_by_default():
    built = subprocess.run(["kubectl", "kustomize", str(ROOT / "manifests")], capture_output=True, text=True,
                           check=True).stdout
    from_kustomize = by_kind([d for d in yaml.safe_load_all(built) if d])
    assert from_kustomize == by_kind(render(DeployOptions()))


def test_defaults_and_what_the_manifests_promise():
    objects = render(DeployOptions())
    # the hub's state is an emptyDir unless --hub-storage asks for a claim
    assert [o["kind"] for o in objects] == list(APPLY_ORDER[:2]) + ["ServiceAccount"] + [
        k for k in APPLY_ORDER[2:] if k != "PersistentVolumeClaim"]
    assert all(o["metadata"]["labels"][MANAGED_BY] == "kubectl-shark" for o in objects)
    role = by_kind(objects)["ClusterRole/shark-hub"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods", "services", "endpoints", "namespaces", "nodes"],
                              "verbs": ["get", "list", "watch"]}]
    worker_set = by_kind(objects)["DaemonSet/shark-worker"]
    pod = worker_set["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and "hostPID" not in pod
    assert "tolerations" not in pod                  # tainted nodes (the control plane) only when asked
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    worker = container(objects, "DaemonSet", "worker")
    # NET_RAW opens packet sockets; NET_ADMIN was measured unneeded (docs/CLUSTER.md)
    assert worker["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    assert worker["securityContext"]["allowPrivilegeEscalation"] is False
    assert worker["image"] == DEFAULT_IMAGE and worker["resources"]["limits"] and worker["resources"]["requests"]
    hub = container(objects, "Deployment", "hub")
    for probe in ("readinessProbe", "livenessProbe"):      # the one route without the token
        assert worker[probe]["httpGet"]["path"] == "/healthz"
        assert hub[probe]["httpGet"]["path"] == "/healthz"
    # /healthz fails once capture is dead: the kubelet restarts such a worker within a minute
    liveness = worker["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] <= 60
    hub_pod = by_kind(objects)["Deployment/shark-hub"]["spec"]["template"]["spec"]
    assert hub_pod["securityContext"]["runAsNonRoot"] is True
    assert hub_pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert by_kind(objects)["Service/shark-hub"]["spec"]["type"] == "ClusterIP"
    assert "--allowed-host" not in hub["args"]
    assert {"name": "state", "emptyDir": {"sizeLimit": "1Gi"}} in hub_pod["volumes"]
    assert "--snapshot-limit" not in hub["args"] and "strategy" not in by_kind(objects)["Deployment/shark-hub"]["spec"]


def test_hub_storage_is_a_claim_the_hub_mounts_with_a_snapshot_limit_inside_it():
    objects = by_kind(render(DeployOptions(hub_storage="5Gi", hub_storage_class="fast-ssd", release_namespace="tools")))
    claim = objects["PersistentVolumeClaim/shark-hub-state"]
    assert claim["metadata"]["namespace"] == "tools" and claim["metadata"]["labels"][MANAGED_BY] == "kubectl-shark"
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}},
                             "storageClassName": "fast-ssd"}
    deployment = objects["Deployment/shark-hub"]
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "state", "persistentVolumeClaim": {"claimName": "shark-hub-state"}} in pod["volumes"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}     # one node mounts a ReadWriteOnce volume
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 10001
    args = container(list(objects.values()), "Deployment", "hub")["args"]
    limit = int(args[args.index("--snapshot-limit") + 1])
    volume = 5 * 2**30
    # traffic snapshots + the scripts' snapshots (200MB) leave a tenth of the volume free
    assert limit + 200_000_000 == volume - volume // 10
    # no class: the cluster's default; sizes in other units become quantities
    claim = by_kind(render(DeployOptions(hub_storage="2GB")))["PersistentVolumeClaim/shark-hub-state"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2G" and "storageClassName" not in claim["spec"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_token_comes_from_the_secret_and_is_in_no_manifest(variant, monkeypatch):
    monkeypatch.setenv("SHARK_TOKEN", "sentinel-token-value")
    objects = render(VARIANTS[variant])
    assert "sentinel-token-value" not in to_yaml(objects)
    assert not [o for o in objects if o["kind"] == "Secret"]      # tap creates it once, outside the manifests
    for kind, name in (("Deployment", "hub"), ("DaemonSet", "worker")):
        spec = container(objects, kind, name)
        token_env = [e for e in spec["env"] if e["name"] == "SHARK_TOKEN"]
        assert token_env == [{"name": "SHARK_TOKEN", "valueFrom": {"secretKeyRef": {"name": "shark-token",
                                                                                        "key": "token"}}}]
        assert not any("TOKEN" in arg.upper() for arg in [*spec.get("command", []), *spec["args"]])


def test_tolerations_are_opt_in():
    pod = by_kind(render(DeployOptions(tolerate_control_plane=True, tolerations=(
        "dedicated=capture:NoSchedule", "gpu", "example.com/pool:NoExecute"))))["DaemonSet/shark-worker"]
    assert pod["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "capture", "effect": "NoSchedule"},
        {"key": "gpu", "operator": "Exists"},
        {"key": "example.com/pool", "operator": "Exists", "effect": "NoExecute"}]
    for version in VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


def test_a_proxy_host_other_than_loopback_is_a_name_the_hub_serves():
    hub = container(render(DeployOptions(allowed_hosts=("shark.example.com",))), "Deployment", "hub")
    assert hub["args"][-2:] == ["--allowed-host", "shark.example.com"]


def test_targets_storage_and_image_reach_the_containers():
    objects = render(DeployOptions(pod_regex="web", target_namespaces=("shop", "billing"), storage_limit="1GiB",
                                   image="r.example/shark:2", image_pull_policy="Always"))
    hub = container(objects, "Deployment", "hub")
    assert hub["args"][-6:] == ["--pod-regex", "web", "--target-namespace", "shop", "--target-namespace", "billing"]
    worker = container(objects, "DaemonSet", "worker")
    assert worker["args"][worker["args"].index("--storage-limit") + 1] == "1GiB"
    assert {(c["image"], c["imagePullPolicy"]) for c in (hub, worker)} == {("r.example/shark:2", "Always")}
    everywhere = container(render(DeployOptions()), "Deployment", "hub")["args"]
    assert "--pod-regex" not in everywhere and "--target-namespace" not in everywhere


def test_tls_adds_only_what_ebpf_needs():
    objects = render(DeployOptions(tls=True))
    pod = by_kind(objects)["DaemonSet/shark-worker"]["spec"]["template"]["spec"]
    worker = container(objects, "DaemonSet", "worker")
    assert pod["hostPID"] is True and worker["args"][-1] == "--tls"
    assert worker["securityContext"]["capabilities"]["add"] == ["NET_RAW", "SYS_ADMIN", "SYS_PTRACE"]
    # the pod's RuntimeDefault holds for --tls too (its bpf() and perf_event_open() are allowed with
    # SYS_ADMIN: tests/image runs the tls worker with these settings)
    assert "seccompProfile" not in worker["securityContext"]
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    mounts = {m["mountPath"]: m.get("readOnly") for m in worker["volumeMounts"]}
    assert mounts["/lib/modules"] is True and mounts["/usr/src"] is True and "/sys/kernel/tracing" in mounts


def test_redaction_options_reach_the_workers():
    def worker_args(redaction: Redaction) -> list[str]:
        return container(render(DeployOptions(redaction=redaction)), "DaemonSet", "worker")["args"]
    default = worker_args(Redaction())
    assert not any("redact" in arg for arg in default)          # on, with the worker's defaults
    assert worker_args(Redaction(headers=("X-Session",), fields=("otp", "pin")))[len(default):] == [
        "--redact-header", "X-Session", "--redact-field", "otp", "--redact-field", "pin"]
    assert worker_args(Redaction(enabled=False))[len(default):] == ["--no-redact"]


def test_the_dissect_memory_budget_reaches_the_workers_only_when_given():
    def worker_args(**given: str) -> list[str]:
        return container(render(DeployOptions(**given)), "DaemonSet", "worker")["args"]
    default = worker_args()
    assert not any("dissect-memory" in arg for arg in default)   # the worker's default, 64MiB
    assert worker_args(dissect_memory="128MiB")[len(default):] == ["--dissect-memory", "128MiB"]


def test_another_release_namespace_moves_everything_and_renames_cluster_objects():
    objects = render(DeployOptions(release_namespace="tools"))
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] not in (
        "Namespace", "ClusterRole", "ClusterRoleBinding")} == {"tools"}
    binding = by_kind(objects)["ClusterRoleBinding/shark-hub-tools"]
    assert binding["roleRef"]["name"] == "shark-hub-tools" and binding["subjects"][0]["namespace"] == "tools"
    assert "Namespace/tools" in by_kind(objects) and cluster_scoped_name("shark") == "shark-hub"
    volumes = by_kind(objects)["DaemonSet/shark-worker"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "storage", "hostPath": {"path": "/var/lib/kubectl-shark/tools", "type": "DirectoryOrCreate"}} \
        in volumes


@pytest.mark.parametrize(("options", "message"), [
    (DeployOptions(release_namespace="Shark"), "--release-namespace: 'Shark' is not a namespace name"),
    (DeployOptions(target_namespaces=("ok", "not_ok")), "-n/--namespace: 'not_ok'"),
    (DeployOptions(pod_regex="web("), "POD_REGEX: 'web(' is not a regular expression: missing ), unterminated "
                                      "subpattern at position 3"),
    (DeployOptions(storage_limit="lots"), "--storage-limit"),
    (DeployOptions(image="a b"), "--image: 'a b'"),
    (DeployOptions(image_pull_policy="Sometimes"), "--image-pull-policy"),
    (DeployOptions(tolerations=("bad key",)), "--toleration: 'bad key': 'bad key' is not a taint key"),
    (DeployOptions(tolerations=("k=v:Sometimes",)), "--toleration: 'k=v:Sometimes': the effect 'Sometimes' is not "
                                                     "one of NoSchedule, PreferNoSchedule, NoExecute"),
    (DeployOptions(tolerations=("k=a b",)), "--toleration: 'k=a b': 'a b' is not a taint value"),
    (DeployOptions(allowed_hosts=("http://x",)), "--proxy-host: 'http://x' is not a host name"),
    (DeployOptions(redaction=Redaction(headers=("X Bad",))), "--redact-header: 'X Bad' is not a name"),
    (DeployOptions(hub_storage="lots"), "--hub-storage: 'lots' is not a size"),
    (DeployOptions(dissect_memory="lots"), "--dissect-memory"),
    (DeployOptions(dissect_memory="64KiB"), "--dissect-memory: 64KiB is below the minimum of 256KiB"),
    (DeployOptions(hub_storage="100Mi"), "--hub-storage: 100Mi is too small; the hub's state needs at least 512Mi"),
    (DeployOptions(hub_storage_class="fast"), "--hub-storage-class: give --hub-storage SIZE too"),
    (DeployOptions(hub_storage="1Gi", hub_storage_class="Fast SSD"), "--hub-storage-class: 'Fast SSD' is not a "
                                                                      "StorageClass name"),
])
def test_bad_options_say_which_and_why(options, message):
    with pytest.raises(OptionError) as error:
        render(options)
    assert str(error.value).startswith(message)


def test_manifests_without_the_clean_label_are_refused(tmp_path):
    base = load_base()
    del base[0]["metadata"]["labels"][MANAGED_BY]
    with pytest.raises(OptionError, match="lacks the label app.kubernetes.io/managed-by=kubectl-shark"):
        render(DeployOptions(), base)


def test_dry_run_yaml_is_one_stream_of_the_rendered_objects():
    objects = render(DeployOptions(tls=True))
    assert list(yaml.safe_load_all(to_yaml(objects))) == objects
