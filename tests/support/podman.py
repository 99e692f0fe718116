"""podman for the image tests (tests/image/): as root, pointed at the repo's containers.conf; the
images built with `make image` / `make image-tls`; pod templates of `tap --dry-run` run as
containers (support/pods.py translates them); forwards into network namespaces.

Builds share podman's layer cache and the debootstrap base (Makefile, BASE_CACHE) with every
other run on this machine; a lock serializes concurrent builds, each run tags its images with
its own name and runs containers by image ID, so runs never use each other's images.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from support.netns import connect_in
from support.pods import LocalImage, Probe, Translation
from support.processes import wait_for
from support.relay import Relay

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "containers.conf"
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
BUILD_LOCK = Path(tempfile.gettempdir()) / "kubectl-shark-image-build.lock"
TITLE = "org.opencontainers.image.title=kubectl-shark"     # the Dockerfile's label on its images
RUN_TAG = f"test-{os.getpid()}"
CACHE_TAG = "test-cache"          # the last run's images, kept so that an unchanged tree builds in seconds


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], env=PODMAN_ENV, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def podman_problem() -> str | None:
    """What keeps podman from running containers here, in one line, or None."""
    if os.geteuid() != 0:
        return "the image tests run podman as root (network namespaces, capture capabilities)"
    for tool, package in (("podman", "podman"), ("runc", "runc"), ("make", "make")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package}; ./dev test installs it)"
    info = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], env=PODMAN_ENV,
                          capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return f"podman cannot run: {(info.stderr.strip().splitlines() or ['podman info failed'])[-1]}"
    return None


class Images:
    """`make image` and `make image-tls` as docs/CLUSTER.md says, once each per session."""

    def __init__(self) -> None:
        self.reference = f"localhost/kubectl-shark:{RUN_TAG}"
        self.built: dict[str, LocalImage] = {}
        self.seconds: dict[str, float] = {}

    def get(self, variant: str) -> tuple[str, LocalImage]:
        """(the reference tap is given, the image built for it) of `lean` or `tls`."""
        reference = self.reference + ("-tls" if variant == "tls" else "")
        if variant not in self.built:
            target = "image-tls" if variant == "tls" else "image"
            started = time.monotonic()
            with open(BUILD_LOCK, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                done = subprocess.run(["make", "--no-print-directory", target, f"IMAGE={self.reference}",
                                       "ENGINE=podman"], cwd=ROOT, env=PODMAN_ENV, capture_output=True,
                                      text=True, timeout=1200)
                if done.returncode != 0:
                    raise AssertionError(f"make {target} exited {done.returncode}:\n{done.stdout[-6000:]}"
                                         f"{done.stderr[-6000:]}")
                inspected = json.loads(podman("image", "inspect", reference).stdout)[0]
                self.built[variant] = LocalImage(inspected["Id"], inspected["Config"].get("User") or "")
                self._remove_old_images()
            self.seconds[variant] = time.monotonic() - started
        return reference, self.built[variant]

    @staticmethod
    def _remove_old_images() -> None:
        """Images of earlier builds that lost their tag and that no container uses, with the
        steps of their last stage: each holds a copy of the project's venv. The layer cache of
        the other stages (no label, and children of their own) stays."""
        old = podman("images", "-q", "--no-trunc", "--filter", "dangling=true", "--filter", f"label={TITLE}").stdout
        for image in old.split():
            podman("rmi", image, check=False)

    def remove(self) -> None:
        """This run's names go; its images stay under CACHE_TAG until a later run replaces them."""
        for variant in self.built:
            suffix = "-tls" if variant == "tls" else ""
            podman("tag", self.reference + suffix, self.reference.replace(RUN_TAG, CACHE_TAG) + suffix, check=False)
            podman("rmi", self.reference + suffix, check=False)


def rendered(*tap_args: str) -> list[dict[str, Any]]:
    """What `kubectl shark tap --dry-run …` prints, as objects."""
    done = subprocess.run([sys.executable, "-m", "shark.cli", "tap", "--dry-run", *tap_args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind} {name} in the rendered manifests: {len(matches)}"
    return matches[0]


class Secrets:
    """The values of secretKeyRefs: one generated token per (Secret, key), as tap would create it."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}

    def __call__(self, name: str, key: str) -> str:
        return self.values.setdefault((name, key), secrets.token_urlsafe(32))

    def headers(self) -> dict[str, str]:
        """The Authorization header for the installation's token, once a pod was given one."""
        tokens = set(self.values.values())
        assert len(tokens) <= 1, f"more than one secret handed to pods: {sorted(self.values)}"
        return {"Authorization": f"Bearer {tokens.pop()}"} if tokens else {}


class Container:
    """One translated container, started detached; failures carry its log; `stop()` removes it."""

    def __init__(self, name: str, translation: Translation, workdir: Path) -> None:
        self.name = f"shark-{RUN_TAG}-{name}"
        self.translation = translation
        env_file = workdir / f"{name}.env"
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"{k}={v}\n" for k, v in translation.env.items()))
        podman("rm", "-f", self.name, check=False)
        podman("run", "-d", "--name", self.name, "--env-file", str(env_file), *translation.options,
               translation.image, *translation.args)

    def state(self) -> dict[str, Any]:
        return json.loads(podman("inspect", "--format", "{{json .State}}", self.name).stdout)

    def process_status(self) -> str:
        """/proc/PID/status of the container's main process, read from this machine."""
        return Path(f"/proc/{self.state()['Pid']}/status").read_text()

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *argv, check=False)

    def running(self) -> bool:
        state = self.state()
        if not state["Running"]:
            raise AssertionError(f"container {self.name} exited {state.get('ExitCode')}:\n{self.logs()}")
        return True

    def stop(self) -> None:
        podman("rm", "-f", "-t", "5", self.name, check=False)


class Forwards:
    """TCP forwards from 127.0.0.1 into network namespaces: `kubectl port-forward` to a pod,
    or the way a kubelet on the node reaches a pod's probe."""

    def __init__(self) -> None:
        self.relays: list[Relay] = []

    def __call__(self, netns: str, target: tuple[str, int]) -> str:
        relay = Relay(socket.create_server(("127.0.0.1", 0)), lambda: connect_in(netns, target))
        self.relays.append(relay)
        return f"http://127.0.0.1:{relay.address[1]}"

    def close(self) -> None:
        for relay in self.relays:
            relay.close()


def wait_ready(container: Container, probe: Probe, node_netns: str, forwards: Forwards,
               timeout: float = 90) -> None:
    """Probe as the kubelet does: from the node, to the pod's address, with its Host header."""
    url = forwards(node_netns, (probe.host, probe.port)) + probe.path
    last: list[str] = []

    def answered() -> bool:
        container.running()
        try:
            response = httpx.get(url, headers={"Host": f"{probe.host}:{probe.port}"}, timeout=3)
        except httpx.HTTPError as error:
            last[:] = [f"{type(error).__name__}: {error}"]
            return False
        last[:] = [f"{response.status_code} {response.text[:200]}"]
        return 200 <= response.status_code < 400
    try:
        wait_for(answered, timeout=timeout, what=f"{probe.kind} of {container.name} at {probe.url}", interval=0.3)
    except AssertionError as error:
        raise AssertionError(f"{error}\nlast answer: {last}\nits log:\n{container.logs()}") from None
