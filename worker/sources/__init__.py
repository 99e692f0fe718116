"""Capture sources: choosing and opening one, and the interfaces there are to capture on."""

from __future__ import annotations

import os
import socket

from worker.sources.base import CaptureError, Source

SOURCE_KINDS = ("auto", "pcap", "af_packet")


def list_interfaces() -> list[str]:
    """Interface names of this process's network namespace (sysfs may show another one)."""
    try:
        return sorted(name for _index, name in socket.if_nameindex())
    except OSError:
        return sorted(os.listdir("/sys/class/net"))


def check_interfaces(ifaces: list[str]) -> None:
    """Raise CaptureError for a list that names no interface, an unknown one, or mixes `any`."""
    if not ifaces:
        raise CaptureError("no interface to capture on (give one, or 'any')")
    if "any" in ifaces and len(ifaces) > 1:
        raise CaptureError("'any' already captures every interface: give it alone")
    available = list_interfaces()
    for iface in ifaces:
        if iface != "any" and iface not in available:
            raise CaptureError(f"unknown interface {iface!r} "
                               f"(available: {', '.join(available)}, any)")


def open_source(kind: str, ifaces: list[str], bpf: str = "", snaplen: int = 262144,
                buffer_size: int = 32 << 20) -> tuple[Source, str]:
    """Open a live source; returns it with one line saying which capture was chosen and why.

    `auto` prefers af_packet (faster) and falls back to pcap when af_packet cannot open. Errors
    that would fail both the same way (unknown interface, bad BPF, no permission) are raised.
    """
    if kind not in SOURCE_KINDS:
        raise CaptureError(f"unknown source {kind!r} (expected one of: {', '.join(SOURCE_KINDS)})")
    check_interfaces(ifaces)
    where = ", ".join(ifaces)
    if kind in ("auto", "af_packet"):
        from worker.sources.af_packet import AfPacketSource
        from worker.sources.base import BpfError
        try:
            source = AfPacketSource(ifaces, bpf, snaplen, buffer_size)
            return source, f"capture: af_packet (TPACKET_V3 ring) on {where}"
        except BpfError:
            raise
        except CaptureError as error:
            if kind == "af_packet" or "needs root" in str(error):
                raise
            reason = str(error)
    from worker.sources.pcap import PcapSource
    source = PcapSource(ifaces, bpf, snaplen, buffer_size)
    if kind == "pcap":
        return source, f"capture: pcap on {where}"
    return source, f"capture: pcap on {where} (af_packet unavailable: {reason})"


def open_file_source(path: str) -> Source:
    """A source replaying a pcap or pcapng file; CaptureError if it is not one."""
    from worker.sources.file import FileSource
    return FileSource(path)


__all__ = ["CaptureError", "Source", "check_interfaces", "list_interfaces", "open_file_source",
           "open_source"]
