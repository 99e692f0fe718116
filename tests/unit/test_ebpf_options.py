"""`--tls` on the worker and on `tap`: refused where it cannot mean anything, with the reason;
and what the capture process reports when eBPF is off or cannot load."""

from __future__ import annotations

from pathlib import Path

import msgspec
from click.testing import CliRunner

from shark.cli import cli
from worker.__main__ import main as worker_main
from worker.capture import _open_tls
from worker.options import WorkerOptions
from worker.packet import LINKTYPE_ETHERNET, LINKTYPE_RAW


class _Live:
    """The one attribute _open_tls reads from the live source."""

    def __init__(self, linktype: int) -> None:
        self.linktype = linktype


def test_the_worker_refuses_tls_with_a_replayed_file(tmp_path: Path):
    capture = tmp_path / "x.pcap"
    capture.write_bytes(b"")
    result = CliRunner().invoke(worker_main, ["--pcap", str(capture), "--tls"])
    assert result.exit_code == 2
    assert "--tls captures live TLS cleartext; it cannot be used with --pcap" in result.output


def test_tap_refuses_tls_with_a_replayed_file(tmp_path: Path):
    capture = tmp_path / "x.pcap"
    capture.write_bytes(b"")
    result = CliRunner().invoke(cli, ["tap", "--local", "--pcap", str(capture), "--tls", "--no-open"])
    assert result.exit_code == 2
    assert "--tls captures live TLS cleartext; it cannot be used with --pcap" in result.output


def test_tap_documents_tls():
    result = CliRunner().invoke(cli, ["tap", "--help"])
    assert result.exit_code == 0
    assert "--tls" in result.output and "eBPF" in result.output


def test_without_tls_the_status_block_says_off():
    source, status, note = _open_tls(WorkerOptions(tls=False), _Live(LINKTYPE_ETHERNET))
    assert source is None and note == ""
    assert msgspec.to_builtins(status)["enabled"] is False


def test_a_link_type_without_hardware_addresses_is_refused_with_the_reason():
    source, status, note = _open_tls(WorkerOptions(tls=True), _Live(LINKTYPE_RAW))
    assert source is None
    assert status.enabled and not status.loaded
    assert note == status.error
    assert "link type 101 has no hardware address" in note and "Ethernet interface or on 'any'" in note


def test_a_tiny_snaplen_is_refused_with_the_smallest_that_works():
    source, status, note = _open_tls(WorkerOptions(tls=True, snaplen=256), _Live(LINKTYPE_ETHERNET))
    assert source is None
    assert "--snaplen 256 leaves 182 bytes of cleartext per packet; give at least 586" in note
