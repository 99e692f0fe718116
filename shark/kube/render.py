"""manifests/ filled in with tap's options, in apply order.

The YAML files listed in manifests/kustomization.yaml are the base (`kubectl apply -k
manifests/` deploys them as they are); this module changes only what an option says:
the release namespace (and the names of cluster-scoped objects and the hostPath that depend
on it), the image, the workers' storage limit, the hub's targets and the names it serves, the
taints the workers tolerate, with --hub-storage a PersistentVolumeClaim for the hub's state
(manifests/hub-storage.yaml) and, with --tls, what eBPF capture needs. The token is in none of
them: the pods read it from the Secret tap creates (shark/kube/secret.py). No I/O besides
reading manifests/.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shark import __version__
from shark.auth import host_name
from shark.regex import RegexError, compile_linear
from shark.kube.resources import APPLY_ORDER, DEFAULT_RELEASE_NAMESPACE, HUB, HUB_STATE, MANAGED_BY, MANAGER, WORKER
from shark.dissect_memory import check_dissect_memory
from shark.dissect_memory import worker_args as dissect_memory_args
from shark.redaction import Redaction
from shark.units import UnitError, parse_size

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
# What `make image` and `make image-tls` build and the release workflow pushes (docs/CLUSTER.md):
# REGISTRY/kubectl-shark:VERSION, and the variant with bcc for --tls under the same tag + "-tls".
DEFAULT_REGISTRY = "ghcr.io/kubectl-shark"
DEFAULT_IMAGE = f"{DEFAULT_REGISTRY}/kubectl-shark:{__version__}"
DEFAULT_TLS_IMAGE = f"{DEFAULT_IMAGE}-tls"
PULL_POLICIES = ("IfNotPresent", "Always", "Never")
# SYS_ADMIN, not just BPF and PERFMON: in a container, attaching a uprobe to another container's
# libssl through /proc/PID/root is refused without it (EACCES; tests/image measures it).
TLS_CAPABILITIES = ["SYS_ADMIN", "SYS_PTRACE"]
# What bcc needs from the node for eBPF TLS capture: kernel headers and tracefs.
TLS_HOST_PATHS = (("lib-modules", "/lib/modules", True), ("usr-src", "/usr/src", True),
                  ("tracefs", "/sys/kernel/tracing", False))
NAMESPACE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A taint's key (a qualified name, optionally prefixed by a DNS subdomain) and value.
TAINT_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
TAINT_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
CONTROL_PLANE_TAINTS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
HUB_STORAGE_FILE = "hub-storage.yaml"
STORAGE_CLASS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
HUB_UID = 10001                      # the hub's runAsUser/runAsGroup (manifests/hub.yaml)
# What else lives on the hub's volume besides traffic snapshots: the scripts' pcap snapshots
# (the hub's --script-snapshot-limit default, hub/scripts/options.py) and a tenth of the volume
# for scripts, their logs and the filesystem's own overhead.
SCRIPT_SNAPSHOTS = 200 * 1000 * 1000
MIN_HUB_STORAGE = 512 * 1024 * 1024


class OptionError(ValueError):
    """An option the manifests cannot be rendered with; the message starts with the option."""


@dataclass(frozen=True)
class DeployOptions:
    release_namespace: str = DEFAULT_RELEASE_NAMESPACE
    image: str | None = None                     # None: DEFAULT_IMAGE, or DEFAULT_TLS_IMAGE with tls
    image_pull_policy: str = "IfNotPresent"
    storage_limit: str = "200MB"
    pod_regex: str | None = None                 # None: every pod
    target_namespaces: tuple[str, ...] = ()      # empty: every namespace
    tls: bool = False
    tolerate_control_plane: bool = False         # workers on control-plane nodes too
    tolerations: tuple[str, ...] = ()            # KEY[=VALUE][:EFFECT], as `kubectl taint` spells them
    allowed_hosts: tuple[str, ...] = ()          # Host names the hub serves besides loopback's
    redaction: Redaction = Redaction()           # the workers' --no-redact / --redact-header / --redact-field
    hub_storage: str | None = None               # a PVC of this size for the hub's state; None: emptyDir
    hub_storage_class: str | None = None         # its StorageClass; None: the cluster's default
    dissect_memory: str | None = None            # the workers' --dissect-memory; None: its default

    @property
    def image_ref(self) -> str:
        if self.image is not None:
            return self.image
        return DEFAULT_TLS_IMAGE if self.tls else DEFAULT_IMAGE

    def check(self) -> None:
        for spec in self.tolerations:
            toleration(spec)
        try:
            self.redaction.check()
        except ValueError as error:
            raise OptionError(str(error)) from None
        for name in self.allowed_hosts:
            try:
                host_name(name, "--proxy-host")
            except ValueError as error:
                raise OptionError(str(error)) from None
        for option, name in [("--release-namespace", self.release_namespace),
                             *(("-n/--namespace", ns) for ns in self.target_namespaces)]:
            if len(name) > 63 or not NAMESPACE_NAME.match(name):
                raise OptionError(f"{option}: {name!r} is not a namespace name (lower case letters, digits "
                                  "and '-', at most 63 characters)")
        if not self.image_ref or any(c.isspace() for c in self.image_ref):
            raise OptionError(f"--image: {self.image_ref!r} is not an image reference")
        if self.image_pull_policy not in PULL_POLICIES:
            raise OptionError(f"--image-pull-policy: {self.image_pull_policy!r} is not one of "
                              f"{', '.join(PULL_POLICIES)}")
        try:
            parse_size(self.storage_limit, "--storage-limit")
        except UnitError as error:
            raise OptionError(str(error)) from None
        if self.hub_storage is not None:
            hub_storage_bytes(self.hub_storage)
        if self.dissect_memory is not None:
            try:
                check_dissect_memory(self.dissect_memory)
            except ValueError as error:
                raise OptionError(str(error)) from None
        if self.hub_storage_class is not None:
            if self.hub_storage is None:
                raise OptionError("--hub-storage-class: give --hub-storage SIZE too (the class of the hub's volume)")
            if len(self.hub_storage_class) > 253 or not STORAGE_CLASS_NAME.match(self.hub_storage_class):
                raise OptionError(f"--hub-storage-class: {self.hub_storage_class!r} is not a StorageClass name "
                                  "(lower case letters, digits, '-' and '.', at most 253 characters)")
        if self.pod_regex is not None:
            try:
                compile_linear(self.pod_regex)   # as the hub will run it (RE2)
            except RegexError as error:
                raise OptionError(f"POD_REGEX: {self.pod_regex!r} is not a regular expression: {error.message} "
                                  f"at position {error.position}") from None


def toleration(spec: str) -> dict[str, str]:
    """`KEY[=VALUE][:EFFECT]` (`dedicated=capture:NoSchedule`, `gpu`) as a pod toleration; no
    VALUE tolerates any value, no EFFECT any effect."""
    rest, colon, effect = spec.rpartition(":") if ":" in spec else (spec, "", "")
    key, equals, value = rest.partition("=")
    where = f"--toleration: {spec!r}"
    if not TAINT_KEY.match(key) or len(key) > 316:
        raise OptionError(f"{where}: {key!r} is not a taint key (e.g. dedicated or example.com/pool)")
    if equals and not TAINT_VALUE.match(value):
        raise OptionError(f"{where}: {value!r} is not a taint value (letters, digits, '-', '_', '.', at most 63)")
    if colon and effect not in TAINT_EFFECTS:
        raise OptionError(f"{where}: the effect {effect!r} is not one of {', '.join(TAINT_EFFECTS)}")
    found: dict[str, str] = {"key": key, "operator": "Equal" if equals else "Exists"}
    if equals:
        found["value"] = value
    if effect:
        found["effect"] = effect
    return found


def hub_storage_bytes(size: str) -> int:
    """--hub-storage in bytes; at least MIN_HUB_STORAGE (the scripts' snapshots and room for traffic ones)."""
    try:
        found = parse_size(size, "--hub-storage")
    except UnitError as error:
        raise OptionError(str(error)) from None
    if found < MIN_HUB_STORAGE:
        raise OptionError(f"--hub-storage: {size} is too small; the hub's state needs at least 512Mi "
                          f"({SCRIPT_SNAPSHOTS // 1000_000}MB for scripts' pcap snapshots, the rest for traffic snapshots)")
    return found


def snapshot_limit_for(volume: int) -> int:
    """The hub's --snapshot-limit on a volume of `volume` bytes: what the scripts' snapshots and
    a tenth for the rest leave, so a full set of snapshots never fills the volume."""
    return volume - volume // 10 - SCRIPT_SNAPSHOTS


def quantity(size: int) -> str:
    """Bytes as a Kubernetes quantity, in the largest unit that divides them (5Gi, 500M)."""
    for unit, factor in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("T", 10**12), ("G", 10**9),
                         ("M", 10**6), ("Ki", 1 << 10), ("k", 1000)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def cluster_scoped_name(release_namespace: str) -> str:
    """ClusterRole and ClusterRoleBinding names: one pair per release namespace."""
    return HUB if release_namespace == DEFAULT_RELEASE_NAMESPACE else f"{HUB}-{release_namespace}"


def storage_path(release_namespace: str) -> str:
    return f"/var/lib/kubectl-shark/{release_namespace}"


def load_base(directory: Path = MANIFESTS) -> list[dict[str, Any]]:
    """The objects of the kustomization's resources, in the order it lists them."""
    kustomization = directory / "kustomization.yaml"
    try:
        listed = (yaml.safe_load(kustomization.read_text(encoding="utf-8")) or {}).get("resources") or []
    except OSError as error:
        raise OptionError(f"cannot read the manifests: {kustomization}: {error.strerror or error}") from None
    objects = []
    for name in listed:
        path = directory / name
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                objects.append(doc)
    return objects


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
            return obj
    raise OptionError(f"the manifests have no {kind} {name!r}")


def _container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    for container in workload["spec"]["template"]["spec"].get("containers") or []:
        if container.get("name") == name:
            return container
    raise OptionError(f"the manifests' {workload['kind']} {workload['metadata']['name']!r} has no container {name!r}")


def _set_arg(args: list[str], flag: str, value: str) -> None:
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]


def load_hub_storage(directory: Path = MANIFESTS) -> dict[str, Any]:
    path = directory / HUB_STORAGE_FILE
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise OptionError(f"cannot read the manifests: {path}: {error.strerror or error}") from None


def render(options: DeployOptions, base: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The objects to apply for these options, dependencies first."""
    options.check()
    objects = copy.deepcopy(base if base is not None else load_base())
    if options.hub_storage is not None:
        objects.append(load_hub_storage())
    ns = options.release_namespace
    cluster_name = cluster_scoped_name(ns)
    for obj in objects:
        meta = obj.setdefault("metadata", {})
        if meta.get("labels", {}).get(MANAGED_BY) != MANAGER:
            raise OptionError(f"the manifests' {obj.get('kind')} {meta.get('name')!r} lacks the label "
                              f"{MANAGED_BY}={MANAGER} that clean finds it by")
        if obj["kind"] == "Namespace":
            meta["name"] = ns
        elif obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] = cluster_name
        else:
            meta["namespace"] = ns
        if obj["kind"] == "ClusterRoleBinding":
            obj["roleRef"]["name"] = cluster_name
        if obj["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            for subject in obj.get("subjects") or []:
                subject["namespace"] = ns

    hub = _container(_find(objects, "Deployment", HUB), "hub")
    worker_set = _find(objects, "DaemonSet", WORKER)
    worker = _container(worker_set, "worker")
    for container in (hub, worker):
        container["image"] = options.image_ref
        container["imagePullPolicy"] = options.image_pull_policy
    if options.pod_regex is not None:
        hub["args"] += ["--pod-regex", options.pod_regex]
    for target in options.target_namespaces:
        hub["args"] += ["--target-namespace", target]
    for name in options.allowed_hosts:
        hub["args"] += ["--allowed-host", name]
    if options.hub_storage is not None:
        _hub_volume(objects, options)
    _set_arg(worker["args"], "--storage-limit", options.storage_limit)
    worker["args"] += options.redaction.worker_args()
    worker["args"] += dissect_memory_args(options.dissect_memory)
    pod_spec = worker_set["spec"]["template"]["spec"]
    tolerations = [{"key": key, "operator": "Exists", "effect": "NoSchedule"}
                   for key in CONTROL_PLANE_TAINTS if options.tolerate_control_plane]
    tolerations += [toleration(spec) for spec in options.tolerations]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    for volume in pod_spec.get("volumes") or []:
        if volume.get("name") == "storage" and "hostPath" in volume:
            volume["hostPath"]["path"] = storage_path(ns)
    if options.tls:
        worker["args"].append("--tls")
        # The pod's seccomp RuntimeDefault stays: the runtimes' default profiles allow bcc's bpf()
        # and perf_event_open() to a process with SYS_ADMIN (measured with podman's, tests/image).
        caps = worker.setdefault("securityContext", {}).setdefault("capabilities", {}).setdefault("add", [])
        caps += [c for c in TLS_CAPABILITIES if c not in caps]
        pod_spec["hostPID"] = True       # uprobes on the libssl of processes in other pods
        for name, path, read_only in TLS_HOST_PATHS:
            pod_spec.setdefault("volumes", []).append({"name": name, "hostPath": {"path": path}})
            worker.setdefault("volumeMounts", []).append({"name": name, "mountPath": path, "readOnly": read_only})
    return sorted(objects, key=lambda o: APPLY_ORDER.index(o["kind"]) if o["kind"] in APPLY_ORDER else len(APPLY_ORDER))


def _hub_volume(objects: list[dict[str, Any]], options: DeployOptions) -> None:
    """The hub's state on the claim: its `state` volume, a Recreate rollout (a ReadWriteOnce
    volume is mounted by one node at a time: a surge pod elsewhere would wait for it forever),
    the volume group-writable by the hub's uid (a fresh volume is root's), and the hub's
    snapshot limit within the volume."""
    assert options.hub_storage is not None
    size = hub_storage_bytes(options.hub_storage)
    claim = _find(objects, "PersistentVolumeClaim", HUB_STATE)
    claim["spec"]["resources"]["requests"]["storage"] = quantity(size)
    if options.hub_storage_class is not None:
        claim["spec"]["storageClassName"] = options.hub_storage_class
    deployment = _find(objects, "Deployment", HUB)
    deployment["spec"]["strategy"] = {"type": "Recreate"}
    pod_spec = deployment["spec"]["template"]["spec"]
    state = next((v for v in pod_spec.get("volumes") or [] if v.get("name") == "state"), None)
    if state is None:
        raise OptionError(f"the manifests' Deployment {HUB!r} has no volume 'state'")
    state.clear()
    state.update({"name": "state", "persistentVolumeClaim": {"claimName": HUB_STATE}})
    security = pod_spec.setdefault("securityContext", {})
    security["fsGroup"] = HUB_UID
    security["fsGroupChangePolicy"] = "OnRootMismatch"   # not a walk over every snapshot at each start
    _set_arg(_container(deployment, "hub")["args"], "--snapshot-limit", str(snapshot_limit_for(size)))


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """One YAML stream, as `kubectl apply -f -` reads it."""
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)
