"""One image name everywhere: what `make image` builds (and the release workflow pushes) is what
`tap` deploys by default and what manifests/ (`kubectl apply -k`) runs; --tls gets the -tls variant."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from shark import __version__
from shark.kube.render import DEFAULT_IMAGE, DEFAULT_TLS_IMAGE, DeployOptions, render
from support.podman import rendered

ROOT = Path(__file__).resolve().parents[2]


def make_variable(name: str, *overrides: str) -> str:
    done = subprocess.run(["make", "--no-print-directory", f"print-{name}", *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def images_of(objects: list[dict]) -> set[str]:
    return {c["image"] for o in objects if o["kind"] in ("Deployment", "DaemonSet")
            for c in o["spec"]["template"]["spec"]["containers"]}


def test_make_builds_what_tap_deploys_by_default():
    assert DEFAULT_IMAGE == f"ghcr.io/kubectl-shark/kubectl-shark:{__version__}"
    assert make_variable("IMAGE") == DEFAULT_IMAGE
    assert make_variable("IMAGE_TLS") == DEFAULT_TLS_IMAGE == f"{DEFAULT_IMAGE}-tls"
    # a fork's registry renames both
    assert make_variable("IMAGE_TLS", "REGISTRY=registry.example.com/team") == \
        f"registry.example.com/team/kubectl-shark:{__version__}-tls"


def test_the_manifests_as_they_are_name_the_default_image():
    base = [doc for name in ("hub.yaml", "worker.yaml")
            for doc in yaml.safe_load_all((ROOT / "manifests" / name).read_text()) if doc]
    assert images_of(base) == {DEFAULT_IMAGE}


def test_tap_deploys_the_tls_variant_with_tls_unless_told_otherwise():
    assert images_of(render(DeployOptions())) == {DEFAULT_IMAGE}
    assert images_of(render(DeployOptions(tls=True))) == {DEFAULT_TLS_IMAGE}
    assert images_of(render(DeployOptions(tls=True, image="r.example/shark:2"))) == {"r.example/shark:2"}
    assert images_of(rendered("--tls", "-n", "shop")) == {DEFAULT_TLS_IMAGE}
