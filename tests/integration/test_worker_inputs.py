"""Bad input to `python -m worker`: one line naming the problem, a non-zero exit."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from support.processes import ROOT

pytestmark = pytest.mark.root


def run_worker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1]


def test_unknown_interface(tmp_path: Path) -> None:
    line = one_line_error(run_worker("--iface", "nosuch0", "--storage-dir", str(tmp_path)))
    assert "nosuch0" in line and "lo" in line  # names the interface and what exists


def test_bad_bpf(tmp_path: Path) -> None:
    line = one_line_error(run_worker("--iface", "lo", "--bpf", "tcp port banana",
                                     "--storage-dir", str(tmp_path)))
    assert "banana" in line


def test_unwritable_storage_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = one_line_error(run_worker("--iface", "lo", "--storage-dir", str(blocker / "sub")))
    assert "--storage-dir" in line and str(blocker / "sub") in line


def test_limit_below_minimum(tmp_path: Path) -> None:
    line = one_line_error(run_worker("--iface", "lo", "--storage-limit", "1MB",
                                     "--storage-dir", str(tmp_path)))
    assert "--storage-limit" in line and "minimum" in line


def test_bad_size_unit(tmp_path: Path) -> None:
    result = run_worker("--iface", "lo", "--storage-limit", "12XB", "--storage-dir", str(tmp_path))
    assert result.returncode == 2 and "XB" in result.stderr


def test_not_a_pcap_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"this is not a capture file at all" * 10)
    line = one_line_error(run_worker("--pcap", str(garbage), "--storage-dir", str(tmp_path / "s")))
    assert "garbage.pcap" in line


def test_missing_pcap_file(tmp_path: Path) -> None:
    line = one_line_error(run_worker("--pcap", str(tmp_path / "nope.pcap"),
                                     "--storage-dir", str(tmp_path / "s")))
    assert "nope.pcap" in line


def test_listen_port_taken(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        line = one_line_error(run_worker("--iface", "lo", "--listen", f"127.0.0.1:{port}",
                                         "--storage-dir", str(tmp_path)))
    assert "--listen" in line and str(port) in line


def test_iface_and_pcap_together(tmp_path: Path) -> None:
    result = run_worker("--iface", "lo", "--pcap", "x.pcap", "--storage-dir", str(tmp_path))
    assert result.returncode == 2 and "either --iface" in result.stderr
