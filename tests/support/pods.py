"""A pod template of the rendered manifests as `podman run` arguments, the way a kubelet would run it.

`translate(template, container, placement)` reads the pod template exactly as `tap --dry-run`
printed it and returns what podman needs to run that container on this machine with the same
user, groups, capabilities, seccomp, root filesystem, namespaces, command, arguments,
environment, volumes and resource limits, plus its probes. What it cannot give the same
meaning here raises Untranslatable naming the field: a manifest that grows a field nobody
translated fails the image tests loudly instead of being run without it.

The machine stands in for the cluster as follows (Placement says where):
- the node is a network namespace (hostNetwork pods join it); other pods get one of their own;
- hostPaths the pod creates (type DirectoryOrCreate/FileOrCreate: its state on the node) live
  under a directory of the test's; any other hostPath is this machine's own path (kernel
  headers, tracefs: the node's files the manifests expect to find);
- emptyDir is a tmpfs of its sizeLimit, writable by every user as an emptyDir is;
- env: `value`, `fieldRef` (metadata.name/namespace, spec.nodeName, spec.serviceAccountName,
  status.podIP/hostIP) and `secretKeyRef` (values the test supplies), with $(VAR) expanded in
  env, command and args as Kubernetes does; KUBERNETES_SERVICE_HOST/PORT as a kubelet sets them;
- a service account token, when the pod mounts one, is a directory the test supplies;
- no seccompProfile means Unconfined, Kubernetes' default (the kubelet's SeccompDefault is off
  unless a cluster turns it on); RuntimeDefault is podman's default profile;
- capabilities start from containerd's default set, then `drop` and `add` apply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# containerd's (and CRI-O's) default capabilities for a container, before drop/add
RUNTIME_DEFAULT_CAPABILITIES = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                                "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
                                "SYS_CHROOT")
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
# Fields that place or restart pods, which one machine has no use for: accepted, with why.
NOTHING_TO_DO = {
    "tolerations": "scheduling: one node here",
    "nodeSelector": "scheduling: one node here",
    "affinity": "scheduling: one node here",
    "priorityClassName": "scheduling: one node here",
    "topologySpreadConstraints": "scheduling: one node here",
    "schedulerName": "scheduling: one node here",
}
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default")   # no cluster DNS here: the node's resolver
VARIABLE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class Untranslatable(AssertionError):
    """A field of the pod template that this translation cannot run with the same meaning."""


@dataclass(frozen=True)
class LocalImage:
    id: str
    user: str                     # the image's USER ("" for root)


@dataclass
class Placement:
    """Where and how the pod runs on this machine."""

    pod_name: str
    namespace: str
    node_name: str
    node_netns: str               # the node's network namespace: hostNetwork pods join it
    node_ip: str
    pod_netns: str                # the pod's own network namespace (pods without hostNetwork)
    pod_ip: str
    node_root: Path               # the node's filesystem, for the hostPaths a pod creates
    images: Mapping[str, LocalImage]                         # image reference -> the image here
    secret: Callable[[str, str], str]                        # (Secret name, key) -> value
    service_accounts: Mapping[str, dict[str, Any]]           # the rendered ServiceAccounts by name
    service_account_dir: Path | None = None                  # token, ca.crt, namespace
    api: tuple[str, int] | None = None                       # the API server as pods see it


@dataclass(frozen=True)
class Probe:
    kind: str                     # readinessProbe, livenessProbe, startupProbe
    scheme: str
    host: str
    port: int
    path: str

    @property
    def url(self) -> str:
        return f"{self.scheme.lower()}://{self.host}:{self.port}{self.path}"


@dataclass
class Translation:
    """`podman run` options and the image; the environment goes in a file (no secret in argv)."""

    options: list[str]
    image: str
    args: list[str]               # after the image: the container's args ($(VAR) expanded)
    env: dict[str, str]
    probes: dict[str, Probe] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)     # the container's named ports
    netns: str = ""               # the network namespace the container runs in
    user: int | None = None       # the uid it runs as
    capabilities: tuple[str, ...] = ()


class Fields:
    """A mapping whose keys must all be read: `done()` raises Untranslatable for the rest."""

    def __init__(self, obj: Mapping[str, Any] | None, where: str) -> None:
        if obj is not None and not isinstance(obj, Mapping):
            raise Untranslatable(f"{where}: expected a mapping, got {obj!r}")
        self.obj = dict(obj or {})
        self.where = where
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self.obj[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self.obj.get(key, default)

    def sub(self, key: str) -> Fields:
        return Fields(self.get(key), f"{self.where}.{key}")

    def done(self) -> None:
        left = sorted(set(self.obj) - self.read)
        if left:
            raise Untranslatable(f"{self.where}.{left[0]}: not translated to podman (value {self.obj[left[0]]!r}); "
                                 "teach tests/support/pods.py what it means rather than run the pod without it")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: a defined variable is replaced, an undefined one is kept
    as written, $$ is one $."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return VARIABLE.sub(one, text)


def cpu_quantity(value: Any, where: str) -> float:
    text = str(value)
    try:
        return int(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise Untranslatable(f"{where}: {value!r} is not a CPU quantity") from None


MEMORY_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9,
                "T": 10**12, "": 1}


def memory_quantity(value: Any, where: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T|)", str(value))
    if not match:
        raise Untranslatable(f"{where}: {value!r} is not a memory quantity this translation reads")
    return int(match.group(1)) * MEMORY_UNITS[match.group(2)]


def translate(template: Mapping[str, Any], container_name: str, placement: Placement) -> Translation:
    """The `podman run` of one container of a pod template (Deployment/DaemonSet .spec.template)."""
    tpl = Fields(template, "template")
    meta = tpl.sub("metadata")
    labels = meta.get("labels") or {}
    if meta.get("annotations"):
        raise Untranslatable("template.metadata.annotations: not translated (they can carry security settings)")
    meta.done()
    spec = tpl.sub("spec")
    tpl.done()

    containers = spec.get("containers") or []
    if len(containers) != 1:
        raise Untranslatable(f"template.spec.containers: {len(containers)} containers; this translation runs "
                             "pods of exactly one")
    for key in ("initContainers", "ephemeralContainers"):
        if spec.get(key):
            raise Untranslatable(f"template.spec.{key}: not translated")
    raw = containers[0]
    if raw.get("name") != container_name:
        raise Untranslatable(f"template.spec.containers[0].name: {raw.get('name')!r}, expected {container_name!r}")
    c = Fields(raw, f"template.spec.containers[{container_name}]")
    c.get("name")

    options: list[str] = ["--pull", "never"]
    options += [f"--label=io.kubernetes.{k}={v}" for k, v in sorted(labels.items())]
    for key in NOTHING_TO_DO:
        spec.get(key)
    if spec.get("restartPolicy", "Always") != "Always":
        raise Untranslatable(f"template.spec.restartPolicy: {spec.get('restartPolicy')!r}")
    # restartPolicy Always: the tests fail on an exit instead of restarting the container
    if (grace := spec.get("terminationGracePeriodSeconds")) is not None:
        options += ["--stop-timeout", str(int(grace))]

    # -- namespaces ------------------------------------------------------------------------
    host_network = bool(spec.get("hostNetwork", False))
    netns = placement.node_netns if host_network else placement.pod_netns
    options += ["--network", f"ns:/run/netns/{netns}",
                "--hostname", placement.node_name if host_network else placement.pod_name]
    if spec.get("hostPID", False):
        options += ["--pid", "host"]
    if spec.get("hostIPC", False):
        options += ["--ipc", "host"]
    dns = spec.get("dnsPolicy", "ClusterFirst")
    if dns not in DNS_POLICIES:
        raise Untranslatable(f"template.spec.dnsPolicy: {dns!r}")
    pod_ip = placement.node_ip if host_network else placement.pod_ip

    # -- image -----------------------------------------------------------------------------
    reference = c.get("image")
    image = placement.images.get(reference)
    if image is None:
        raise Untranslatable(f"{c.where}.image: {reference!r} is not an image built here ({sorted(placement.images)})")
    policy = c.get("imagePullPolicy", "IfNotPresent")
    if policy not in ("IfNotPresent", "Never"):
        raise Untranslatable(f"{c.where}.imagePullPolicy: {policy!r}: nothing can be pulled here")

    # -- environment: the kubelet's, then the container's in order --------------------------
    env: dict[str, str] = {}
    if placement.api is not None:
        host, port = placement.api
        env.update({"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
                    "KUBERNETES_SERVICE_PORT_HTTPS": str(port), "KUBERNETES_PORT": f"tcp://{host}:{port}",
                    f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
                    f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp", f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
                    f"KUBERNETES_PORT_{port}_TCP_ADDR": host})
    service_account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    fields = {"metadata.name": placement.pod_name, "metadata.namespace": placement.namespace,
              "spec.nodeName": placement.node_name, "spec.serviceAccountName": service_account,
              "status.podIP": pod_ip, "status.hostIP": placement.node_ip}
    for n, item in enumerate(c.get("env") or []):
        e = Fields(item, f"{c.where}.env[{n}]")
        name = e["name"]
        if "value" in item:
            env[name] = expand(str(e["value"]), env)
        else:
            source = e.sub("valueFrom")
            if "fieldRef" in source.obj:
                ref = source.sub("fieldRef")
                path = ref["fieldPath"]
                ref.get("apiVersion")
                ref.done()
                if path not in fields:
                    raise Untranslatable(f"{ref.where}.fieldPath: {path!r} not translated")
                env[name] = fields[path]
            elif "secretKeyRef" in source.obj:
                ref = source.sub("secretKeyRef")
                env[name] = placement.secret(ref["name"], ref["key"])
                ref.get("optional")
                ref.done()
            source.done()
        e.done()
    if c.get("envFrom"):
        raise Untranslatable(f"{c.where}.envFrom: not translated")

    # -- command and arguments ---------------------------------------------------------------
    command = [expand(str(a), env) for a in c.get("command") or []]
    args = [expand(str(a), env) for a in c.get("args") or []]
    if not command:
        raise Untranslatable(f"{c.where}.command: none; the manifests name the program to run")
    if not args:
        raise Untranslatable(f"{c.where}: a command without args (podman would append the image's CMD)")
    options += ["--entrypoint", json.dumps(command)]
    if (workdir := c.get("workingDir")) is not None:
        options += ["--workdir", workdir]

    # -- security --------------------------------------------------------------------------
    pod_security = spec.sub("securityContext")
    security = c.sub("securityContext")

    def either(key: str) -> Any:
        from_pod = pod_security.get(key)      # read (and so checked) even where the container's own wins
        own = security.get(key)
        return own if own is not None else from_pod
    uid, gid = either("runAsUser"), either("runAsGroup")
    image_user = image.user.split(":")[0] if image.user else "0"
    if uid is not None:
        options += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
    elif gid is not None:
        options += ["--user", f"{image_user}:{gid}"]
    effective_uid = uid if uid is not None else (int(image_user) if image_user.isdigit() else None)
    if either("runAsNonRoot"):
        if effective_uid is None:
            raise Untranslatable(f"{c.where}: runAsNonRoot with the image's non-numeric user {image.user!r}: "
                                 "the kubelet refuses to start it")
        if effective_uid == 0:
            raise Untranslatable(f"{c.where}: runAsNonRoot but it would run as root: the kubelet refuses to start it")
    for group in pod_security.get("supplementalGroups") or []:
        options += ["--group-add", str(group)]
    if pod_security.get("fsGroup") is not None:
        raise Untranslatable(f"{pod_security.where}.fsGroup: not translated")
    for sysctl in pod_security.get("sysctls") or []:
        options += ["--sysctl", f"{sysctl['name']}={sysctl['value']}"]

    seccomp = Fields(either("seccompProfile"), f"{c.where}.securityContext.seccompProfile")
    kind = seccomp.get("type")
    if kind is None or kind == "Unconfined":
        options += ["--security-opt", "seccomp=unconfined"]
    elif kind != "RuntimeDefault":
        raise Untranslatable(f"{seccomp.where}.type: {kind!r} not translated")
    seccomp.done()
    apparmor = Fields(either("appArmorProfile"), f"{c.where}.securityContext.appArmorProfile")
    if apparmor.get("type") == "Unconfined":
        options += ["--security-opt", "apparmor=unconfined"]
    elif apparmor.get("type") not in (None, "RuntimeDefault"):
        raise Untranslatable(f"{apparmor.where}.type: {apparmor.get('type')!r} not translated")
    apparmor.done()
    for key in ("seLinuxOptions", "windowsOptions"):
        if either(key) is not None:
            raise Untranslatable(f"{c.where}.securityContext.{key}: not translated")
    pod_security.get("fsGroupChangePolicy")
    pod_security.done()

    if security.get("privileged", False):
        options.append("--privileged")
    if security.get("allowPrivilegeEscalation", True) is False:
        options += ["--security-opt", "no-new-privileges"]
    if security.get("readOnlyRootFilesystem", False):
        options += ["--read-only", "--read-only-tmpfs=false"]
    if security.get("procMount", "Default") != "Default":
        raise Untranslatable(f"{security.where}.procMount: {security.get('procMount')!r}")
    caps = security.sub("capabilities")
    drop = {str(x).upper().removeprefix("CAP_") for x in caps.get("drop") or []}
    add = [str(x).upper().removeprefix("CAP_") for x in caps.get("add") or []]
    caps.done()
    kept = [] if "ALL" in drop else [x for x in RUNTIME_DEFAULT_CAPABILITIES if x not in drop]
    capabilities = tuple(dict.fromkeys([*kept, *add]))
    options += ["--cap-drop", "ALL"] + [f"--cap-add={x}" for x in capabilities]
    security.done()

    # -- resources ---------------------------------------------------------------------------
    resources = c.sub("resources")
    limits, requests = resources.sub("limits"), resources.sub("requests")
    if (cpu := limits.get("cpu")) is not None:
        options += ["--cpus", f"{cpu_quantity(cpu, limits.where + '.cpu'):g}"]
    if (memory := limits.get("memory")) is not None:
        options += ["--memory", str(memory_quantity(memory, limits.where + ".memory"))]
    if (cpu := requests.get("cpu")) is not None:    # the kubelet turns the request into cpu shares
        options += ["--cpu-shares", str(max(2, int(cpu_quantity(cpu, requests.where + ".cpu") * 1024)))]
    if (memory := requests.get("memory")) is not None:
        memory_quantity(memory, requests.where + ".memory")  # scheduling only: no cgroup setting
    for part in (limits, requests, resources):
        part.done()

    # -- volumes -----------------------------------------------------------------------------
    volumes: dict[str, list[str]] = {}               # name -> --mount option minus its target
    for n, item in enumerate(spec.get("volumes") or []):
        v = Fields(item, f"template.spec.volumes[{n}]")
        name = v["name"]
        if "hostPath" in item:
            host = v.sub("hostPath")
            path, kind = host["path"], host.get("type", "")
            host.done()
            if kind in ("DirectoryOrCreate", "FileOrCreate"):
                source = placement.node_root / path.lstrip("/")
                if kind == "DirectoryOrCreate":
                    source.mkdir(parents=True, exist_ok=True)
                else:
                    source.parent.mkdir(parents=True, exist_ok=True)
                    source.touch()
            elif kind in ("", "Directory", "File"):
                source = Path(path)
                if kind and not source.exists():
                    raise Untranslatable(f"{host.where}: {path} (type {kind}) does not exist on this machine")
            else:
                raise Untranslatable(f"{host.where}.type: {kind!r} not translated")
            volumes[name] = ["type=bind", f"source={source}"]
        elif "emptyDir" in item:
            empty = v.sub("emptyDir")
            size = empty.get("sizeLimit")
            if empty.get("medium", "") not in ("", "Memory"):
                raise Untranslatable(f"{empty.where}.medium: {empty.get('medium')!r}")
            empty.done()
            volumes[name] = ["type=tmpfs", "tmpfs-mode=1777"]
            if size is not None:
                volumes[name].append(f"tmpfs-size={memory_quantity(size, empty.where + '.sizeLimit')}")
        else:
            raise Untranslatable(f"{v.where}: only hostPath and emptyDir volumes are translated, not "
                                 f"{sorted(set(item) - {'name'})}")
        v.done()
    for n, item in enumerate(c.get("volumeMounts") or []):
        m = Fields(item, f"{c.where}.volumeMounts[{n}]")
        name = m["name"]
        if name not in volumes:
            raise Untranslatable(f"{m.where}.name: no volume {name!r} in the pod")
        if m.get("subPath") or m.get("subPathExpr"):
            raise Untranslatable(f"{m.where}.subPath: not translated")
        if m.get("mountPropagation", "None") != "None":
            raise Untranslatable(f"{m.where}.mountPropagation: {m.get('mountPropagation')!r}")
        mount = [*volumes[name], f"destination={m['mountPath']}"]
        if m.get("readOnly", False):
            mount.append("ro=true")
        options += ["--mount", ",".join(mount)]
        m.done()
    automount = spec.get("automountServiceAccountToken")
    if service_account not in placement.service_accounts:
        raise Untranslatable(f"template.spec.serviceAccountName: {service_account!r} is not among the rendered "
                             "ServiceAccounts: the API would refuse the pod")
    if automount is None:
        automount = placement.service_accounts[service_account].get("automountServiceAccountToken", True)
    if automount:
        if placement.service_account_dir is None:
            raise Untranslatable("template.spec: the pod mounts a service account token and the test gave none")
        options += ["--mount", f"type=bind,source={placement.service_account_dir},"
                               f"destination={SERVICE_ACCOUNT_MOUNT},ro=true"]

    # -- ports and probes ----------------------------------------------------------------------
    ports: dict[str, int] = {}
    for n, item in enumerate(c.get("ports") or []):
        p = Fields(item, f"{c.where}.ports[{n}]")
        if p.get("name"):
            ports[p["name"]] = int(p["containerPort"])
        p.get("containerPort")
        if p.get("protocol", "TCP") != "TCP" or p.get("hostPort") not in (None, p.get("containerPort")):
            raise Untranslatable(f"{p.where}: only TCP ports without a separate hostPort are translated")
        p.done()
    probes: dict[str, Probe] = {}
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        if kind not in raw:
            continue
        probe = c.sub(kind)
        http = probe.sub("httpGet")
        if not http.obj:
            raise Untranslatable(f"{probe.where}: only httpGet probes are translated")
        port = http["port"]
        number = ports.get(port) if isinstance(port, str) else int(port)
        if number is None:
            raise Untranslatable(f"{http.where}.port: no container port named {port!r}")
        probes[kind] = Probe(kind, http.get("scheme", "HTTP"), http.get("host") or pod_ip, number,
                             http.get("path", "/"))
        if http.get("httpHeaders"):
            raise Untranslatable(f"{http.where}.httpHeaders: not translated")
        http.done()
        for timing in ("periodSeconds", "timeoutSeconds", "initialDelaySeconds", "failureThreshold",
                       "successThreshold", "terminationGracePeriodSeconds"):
            probe.get(timing)         # the tests probe until ready within their own deadline
        probe.done()

    for key in ("terminationMessagePath", "terminationMessagePolicy"):
        c.get(key)                    # where a kubelet keeps the last words: podman logs has them
    c.done()
    spec.done()
    return Translation(options=options, image=image.id, args=args, env=env, probes=probes, ports=ports, netns=netns,
                       user=effective_uid, capabilities=capabilities)
