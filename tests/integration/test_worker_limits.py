"""The storage limit cannot be set beyond the store's filesystem or the operator's maximum:
at start (--storage-limit) and while running (PUT /config), each refusal naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.processes import ROOT

pytestmark = pytest.mark.root
MiB = 1024 * 1024


def run_worker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", "--iface", "lo", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def put_limit(worker, value: str) -> httpx.Response:
    return httpx.put(f"{worker.url}/config", json={"storage_limit": value}, timeout=30)


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 16 MiB tmpfs: a filesystem whose free space is known and far below the root's."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_start_refuses_a_limit_beyond_the_disk_or_the_maximum(tmp_path):
    beyond = run_worker("--storage-dir", str(tmp_path), "--storage-limit", "100000TB")
    assert beyond.returncode == 1 and "Traceback" not in beyond.stderr
    assert beyond.stderr.strip().splitlines()[-1].startswith(
        f"worker: --storage-limit: 100000TB is more than {tmp_path} can hold (")
    over = run_worker("--storage-dir", str(tmp_path), "--storage-limit", "300MB", "--max-storage-limit", "250MB")
    assert over.returncode == 1
    assert over.stderr.strip().splitlines()[-1] == \
        "worker: --storage-limit: 300MB is above the maximum of 250MB (--max-storage-limit)"


def test_put_config_refuses_beyond_the_maximum_and_the_disk(start_worker):
    worker = start_worker("--iface", "lo", "--bpf", "tcp port 9", "--max-storage-limit", "1GB")
    huge = put_limit(worker, "100000TB")
    assert huge.status_code == 400
    assert huge.json()["detail"].startswith("storage_limit: 100000TB is above the maximum of 1GB")
    over = put_limit(worker, "1000000001B")
    assert over.status_code == 400
    assert over.json() == {"error": "bad request", "detail": "storage_limit: 1000000001B is above the "
                           "maximum of 1GB (--max-storage-limit)"}
    assert put_limit(worker, "1GB").json() == {"storage_limit": 1_000_000_000}
    config = worker.get("/config").json()
    assert (config["storage_limit"], config["max_storage_limit"]) == (1_000_000_000, 1_000_000_000)


def test_put_config_measures_the_stores_own_filesystem(start_worker, small_fs):
    worker = start_worker("--iface", "lo", "--bpf", "tcp port 9", "--storage-limit", "4MiB",
                          storage_dir=small_fs / "store")
    refused = put_limit(worker, "64MiB")       # fits the machine's disk, not the store's tmpfs
    assert refused.status_code == 400
    detail = refused.json()["detail"]
    assert detail.startswith(f"storage_limit: 64MiB is more than {small_fs / 'store'} can hold (")
    assert "free on its filesystem" in detail
    assert worker.get("/config").json()["storage_limit"] == 4 * MiB        # unchanged
    assert put_limit(worker, "8MiB").json() == {"storage_limit": 8 * MiB}
    assert worker.status()["store"]["limit"] == 8 * MiB
    # the same rule at start, on the same filesystem
    line = run_worker("--storage-dir", str(small_fs / "other"), "--storage-limit", "64MiB").stderr
    assert f"--storage-limit: 64MiB is more than {small_fs / 'other'} can hold" in line
